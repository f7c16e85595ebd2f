"""Timestamp oracle throughput: timestamps/s served by a 3-process ``tso`` cluster.

Starts ``pnyx cluster up --protocol tso`` (Raft with WAL + fsync; the leader persists a
high-water window of 1,000,000 timestamps through the log and confirms leadership with a
ReadIndex round per group of waiting requests) in a temporary directory, then runs
``--clients`` asyncio clients in one process, each asking for batches of ``--batch``
timestamps in a closed loop for ``--seconds``, and reports timestamps/s, requests/s and
p50/p99 request latency.  Client-side batching is how a TSO client (TiDB's PD client) works:
``AsyncTsoClient.next()`` hands timestamps out of the last batch.  Usage:

    python bench/bench_tso.py [--clients 1,8,32] [--batch 1000] [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PNYX = [sys.executable, "-m", "pnyx"]
MAX_REQUESTS_PER_WORKER = 10_000_000
"""Upper bound of requests per worker (the run is also bounded in time)."""


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) of sorted ``values``; 0 when empty."""
    if not values:
        return 0.0
    return values[min(len(values) - 1, int(q * len(values)))]


async def measure(
    members: dict[int, Any], clients: int, batch: int, seconds: float
) -> dict[str, Any]:
    """``clients`` closed-loop batch requesters for ``seconds``."""
    from pnyx.services.tso import AsyncTsoClient

    workers = [AsyncTsoClient(members, batch=batch) for _ in range(clients)]
    latencies: list[float] = []
    failures = [0]
    highest = [0]
    try:
        for tso in workers:  # connect and find the leader before the clock starts
            await tso.get_batch(1)
        stop_at = time.monotonic() + seconds

        async def work(tso: AsyncTsoClient) -> None:
            for _ in range(MAX_REQUESTS_PER_WORKER):
                started = time.monotonic()
                if started >= stop_at:
                    return
                try:
                    got = await tso.get_batch(batch)
                except Exception:
                    failures[0] += 1
                    continue
                latencies.append(time.monotonic() - started)
                highest[0] = max(highest[0], got.stop - 1)

        began = time.monotonic()
        await asyncio.gather(*(work(tso) for tso in workers))
        elapsed = time.monotonic() - began
    finally:
        for tso in workers:
            await tso.close()
    latencies.sort()
    return {
        "clients": clients,
        "batch": batch,
        "timestamps_per_s": len(latencies) * batch / elapsed,
        "requests_per_s": len(latencies) / elapsed,
        "failed": failures[0],
        "p50_ms": percentile(latencies, 0.5) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "highest": highest[0],
    }


def _kill_leftovers(data_dir: Path) -> None:
    from pnyx.cli.cluster_cmd import is_our_process, load_state, pid_alive

    state = load_state(data_dir)
    for node in (state or {}).get("nodes", []):
        pid = node["pid"]
        if pid_alive(pid) and is_our_process(pid, data_dir):
            os.kill(pid, signal.SIGKILL)


def main() -> None:
    from pnyx.cli.cluster_cmd import load_state
    from pnyx.cli.serve_cmd import parse_peers
    from pnyx.runtime import run_event_loop

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", default="1,8,32")
    parser.add_argument("--batch", type=int, default=1_000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--tick-ms", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pnyx-tso-bench-") as tmp:
        data_dir = Path(tmp) / "cluster"
        up = subprocess.run(
            [*PNYX, "cluster", "up", "--protocol", "tso", "--nodes", "3",
             "--data-dir", str(data_dir), "--detach", "--tick-ms", str(args.tick_ms)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        try:
            if up.returncode != 0:
                print(f"  cluster up failed: {up.stderr.strip()}")
                return
            state = load_state(data_dir)
            assert state is not None, f"no cluster state in {data_dir}"
            members = parse_peers(state["peers"])
            print(f"tso, 3 local processes (pnyx cluster), fsync on, batches of {args.batch}")
            for clients in (int(c) for c in args.clients.split(",")):
                row = run_event_loop(measure(members, clients, args.batch, args.seconds))
                text = (
                    f"  {clients:>3} clients  {row['timestamps_per_s']:>12,.0f} timestamps/s  "
                    f"{row['requests_per_s']:>8,.0f} requests/s  failed {row['failed']:>3}  "
                    f"p50 {row['p50_ms']:6.2f} ms  p99 {row['p99_ms']:6.2f} ms"
                )
                print(json.dumps(row) if os.environ.get("PNYX_BENCH_JSON") else text, flush=True)
        finally:
            subprocess.run([*PNYX, "cluster", "down", "--data-dir", str(data_dir)],
                           capture_output=True, timeout=60, check=False)  # fmt: skip
            _kill_leftovers(data_dir)


if __name__ == "__main__":
    main()

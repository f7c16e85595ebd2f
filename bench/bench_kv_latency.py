"""Raft KV write throughput and latency with fsync on, at 1, 16 and 64 concurrent clients.

Starts a 3-node ``pnyx cluster up --protocol raft`` (or ``--protocol P``; WAL + fdatasync
per batch) in a temporary directory, then for each concurrency runs that many
``AsyncKvClient`` workers (one session each, one write at a time: closed loop) doing ``put``
for a fixed time, and
reports ops/s and p50/p99 latency.  The cluster is stopped with ``pnyx cluster down``
(and any process it started that is still alive is killed).  Usage:

    python bench/bench_kv_latency.py [--protocol raft] [--clients 1,16,64] [--seconds 5]
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
MAX_OPS_PER_WORKER = 1_000_000
"""Upper bound of writes per worker (the run is also bounded in time)."""


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) of sorted ``values``; 0 when empty."""
    if not values:
        return 0.0
    return values[min(len(values) - 1, int(q * len(values)))]


async def measure(members: dict[int, Any], clients: int, seconds: float) -> dict[str, Any]:
    """``clients`` closed-loop writers for ``seconds``: ops/s, failures, p50/p99 latency."""
    from pnyx.services.kv import AsyncKvClient

    workers = [AsyncKvClient(members) for _ in range(clients)]
    latencies: list[float] = []
    failures = [0]
    try:
        for index, kv in enumerate(workers):  # open sessions before the clock starts
            await kv.put(f"warm{index}", "x")
        stop_at = time.monotonic() + seconds

        async def work(index: int, kv: AsyncKvClient) -> None:
            for n in range(MAX_OPS_PER_WORKER):
                started = time.monotonic()
                if started >= stop_at:
                    return
                try:
                    await kv.put(f"k{index}", str(n))
                except Exception:
                    failures[0] += 1
                    continue
                latencies.append(time.monotonic() - started)

        began = time.monotonic()
        await asyncio.gather(*(work(i, kv) for i, kv in enumerate(workers)))
        elapsed = time.monotonic() - began
    finally:
        for kv in workers:
            await kv.close()
    latencies.sort()
    return {
        "clients": clients,
        "ops_per_s": len(latencies) / elapsed,
        "failed": failures[0],
        "p50_ms": percentile(latencies, 0.5) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
    }


def _kill_leftovers(data_dir: Path) -> None:
    from pnyx.cli.cluster_cmd import is_our_process, load_state, pid_alive

    state = load_state(data_dir)
    for node in (state or {}).get("nodes", []):
        pid = node["pid"]
        if pid_alive(pid) and is_our_process(pid, data_dir):
            os.kill(pid, signal.SIGKILL)


def run_cluster_clients(
    protocol: str, clients: list[int], seconds: float, tick_ms: int = 10
) -> list[dict[str, Any]]:
    """Start a 3-process ``protocol`` cluster (fsync on), measure each concurrency of
    ``clients`` for ``seconds``, stop the cluster; one row per concurrency (none if the
    cluster did not come up, with the reason printed)."""
    from pnyx.cli.cluster_cmd import load_state
    from pnyx.cli.serve_cmd import parse_peers
    from pnyx.runtime import run_event_loop

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="pnyx-kv-bench-") as tmp:
        data_dir = Path(tmp) / "cluster"
        up = subprocess.run(
            [*PNYX, "cluster", "up", "--protocol", protocol, "--nodes", "3",
             "--data-dir", str(data_dir), "--detach", "--tick-ms", str(tick_ms)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        try:
            if up.returncode != 0:
                print(f"  {protocol}: cluster up failed: {up.stderr.strip()}")
                return rows
            state = load_state(data_dir)
            assert state is not None, f"no cluster state in {data_dir}"
            members = parse_peers(state["peers"])
            for count in clients:
                rows.append(run_event_loop(measure(members, count, seconds)))
        finally:
            subprocess.run([*PNYX, "cluster", "down", "--data-dir", str(data_dir)],
                           capture_output=True, timeout=60, check=False)  # fmt: skip
            _kill_leftovers(data_dir)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--protocol", default="raft")
    parser.add_argument("--clients", default="1,16,64")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--tick-ms", type=int, default=10)
    args = parser.parse_args()
    clients = [int(c) for c in args.clients.split(",")]
    print(f"{args.protocol} KV put, 3 local processes (pnyx cluster), fsync on, closed loop")
    for row in run_cluster_clients(args.protocol, clients, args.seconds, args.tick_ms):
        text = (
            f"  {row['clients']:>3} clients  {row['ops_per_s']:>8,.0f} ops/s  failed "
            f"{row['failed']:>4}  p50 {row['p50_ms']:7.2f} ms"
            f"  p99 {row['p99_ms']:7.2f} ms"
        )
        print(json.dumps(row) if os.environ.get("PNYX_BENCH_JSON") else text, flush=True)


if __name__ == "__main__":
    main()

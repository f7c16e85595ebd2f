"""Timestamp oracle throughput: timestamps/s served by a 3-process ``tso`` cluster.

    python bench/bench_tso.py [--clients 1,8,32] [--batch 1000] [--callers 64,256,1024]
        [--seconds 5] [--json bench/results/tso.json (default)] [--write-doc docs/TRANSACTIONS.md]

Starts ``pnyx cluster up --protocol tso`` (Raft with WAL + fsync; the leader persists a
high-water window of 1,000,000 timestamps through the log and confirms leadership with a
ReadIndex round per group of waiting requests) in a temporary directory, then measures
two ways of getting timestamps, each for ``--seconds``, clients in this one process:

- **explicit batches** (``--clients`` x ``--batch``): each of ``--clients`` asyncio clients
  (one connection each) calls ``AsyncTsoClient.get_batch(--batch)`` in a closed loop: a
  caller that wants many timestamps at once.  Timestamps/s counts every timestamp of every
  batch; latency is per request.
- **concurrent next()** (``--callers``): that many closed-loop callers of
  ``AsyncTsoClient.next()`` over ONE client connection, each wanting one timestamp at a
  time (a transaction's start or commit timestamp).  The client coalesces the callers
  waiting while a request is in flight into the next request, as TiDB's PD client does;
  no timestamp is served from a request sent before its caller asked.  Timestamps/s counts
  timestamps handed to callers; latency is per ``next()``; ``per_request`` is the mean
  number of callers one request served.

The issue's target is >= 100,000 timestamps/s served.  Load averages before and after each
row are recorded (the machine may be shared).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

from benchlib import kill_leftovers, percentile, replace_section

from pnyx.services.tso import AsyncTsoClient

PNYX = [sys.executable, "-m", "pnyx"]
MAX_CALLS_PER_WORKER = 10_000_000
"""Upper bound of calls per worker (the run is also bounded in time)."""


async def _closed_loop(
    workers: int, seconds: float, call: Callable[[int], Awaitable[int]]
) -> tuple[list[float], dict[str, int], float]:
    """``workers`` loops of ``call(worker)`` (returning timestamps got) for ``seconds``:
    latencies, counts (timestamps, failed calls), wall seconds."""
    latencies: list[float] = []
    totals = {"timestamps": 0, "failed": 0}
    stop_at = time.monotonic() + seconds

    async def work(index: int) -> None:
        for _ in range(MAX_CALLS_PER_WORKER):
            started = time.monotonic()
            if started >= stop_at:
                return
            try:
                got = await call(index)
            except Exception:
                totals["failed"] += 1
                continue
            totals["timestamps"] += got  # after the await: no update lost between tasks
            latencies.append(time.monotonic() - started)

    began = time.monotonic()
    await asyncio.gather(*(work(i) for i in range(workers)))
    latencies.sort()
    return latencies, totals, time.monotonic() - began


def _row(
    kind: str, latencies: list[float], totals: dict[str, int], elapsed: float
) -> dict[str, Any]:
    return {
        "mode": kind,
        "timestamps_per_s": round(totals["timestamps"] / elapsed),
        "failed": totals["failed"],
        "calls": len(latencies),
        "p50_ms": round(percentile(latencies, 0.5) * 1000, 2),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
    }


async def measure_batches(
    members: dict[int, Any], clients: int, batch: int, seconds: float
) -> dict[str, Any]:
    """``clients`` closed-loop ``get_batch(batch)`` callers, one connection each."""
    workers = [AsyncTsoClient(members) for _ in range(clients)]
    try:
        for tso in workers:  # connect and find the leader before the clock starts
            await tso.get_batch(1)

        async def call(index: int) -> int:
            return len(await workers[index].get_batch(batch))

        cpu = time.process_time()
        latencies, totals, elapsed = await _closed_loop(clients, seconds, call)
    finally:
        for tso in workers:
            await tso.close()
    row = _row("batch", latencies, totals, elapsed)
    row.update(clients=clients, batch=batch, requests_per_s=round(len(latencies) / elapsed))
    row["client_cpu_s"] = round(time.process_time() - cpu, 1)
    return row


async def measure_next(members: dict[int, Any], callers: int, seconds: float) -> dict[str, Any]:
    """``callers`` closed-loop ``next()`` callers over one client connection."""
    tso = AsyncTsoClient(members)
    try:
        await tso.get_batch(1)
        before = tso.requests_sent

        async def call(_index: int) -> int:
            await tso.next()
            return 1

        cpu = time.process_time()
        latencies, totals, elapsed = await _closed_loop(callers, seconds, call)
        requests = tso.requests_sent - before
    finally:
        await tso.close()
    row = _row("next", latencies, totals, elapsed)
    row.update(
        callers=callers,
        requests_per_s=round(requests / elapsed),
        per_request=round(totals["timestamps"] / max(1, requests), 1),
        client_cpu_s=round(time.process_time() - cpu, 1),
    )
    return row


def _print(row: dict[str, Any]) -> None:
    if row["mode"] == "batch":
        who = f"batch {row['clients']:>4} clients x {row['batch']}"
    else:
        who = f"next() {row['callers']:>4} callers, 1 conn"
    print(
        f"  {who:<28} {row['timestamps_per_s']:>11,} ts/s  {row['requests_per_s']:>7,} req/s  "
        f"p50 {row['p50_ms']:6.2f} ms  p99 {row['p99_ms']:6.2f} ms  "
        f"failed {row['failed']}  load {row['load_before']}-{row['load_after']}",
        flush=True,
    )


def run_all(args: argparse.Namespace, members: dict[int, Any]) -> list[dict[str, Any]]:
    """Every row: explicit batches per ``--clients``, then next() per ``--callers``."""
    jobs: list[Callable[[], Coroutine[Any, Any, dict[str, Any]]]] = []
    for clients in (int(c) for c in args.clients.split(",") if c):
        jobs.append(functools.partial(measure_batches, members, clients, args.batch, args.seconds))
    for callers in (int(c) for c in args.callers.split(",") if c):
        jobs.append(functools.partial(measure_next, members, callers, args.seconds))
    rows = []
    for job in jobs:
        load_before = os.getloadavg()[0]
        row = asyncio.run(job())
        row.update(load_before=round(load_before, 2), load_after=round(os.getloadavg()[0], 2))
        rows.append(row)
        _print(row)
    return rows


BEGIN_MARK = "<!-- bench_tso: begin -->"
END_MARK = "<!-- bench_tso: end -->"


def table(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table."""
    lines = [
        "| how | concurrency | timestamps/s | requests/s | timestamps / request | "
        "p50 ms | p99 ms | failed | load |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        batch = r["mode"] == "batch"
        how = f"get_batch({r['batch']})" if batch else "next(), 1 connection"
        who = f"{r['clients']} clients" if batch else f"{r['callers']} callers"
        per = r["batch"] if batch else r["per_request"]
        lines.append(
            f"| {how} | {who} | {r['timestamps_per_s']:,} | {r['requests_per_s']:,} | {per:,} | "
            f"{r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['failed']} | "
            f"{r['load_before']:.1f}-{r['load_after']:.1f} |"
        )
    return "\n".join(lines)


def write_doc(doc: Path, meta: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    """Replace the part of ``doc`` between the markers with the date and the table."""
    body = f"`{meta['command']}` on {meta['date']}, {meta['cores']} cores.\n\n{table(rows)}\n"
    replace_section(doc, BEGIN_MARK, END_MARK, body)


def main() -> None:
    from pnyx.cli.cluster_cmd import load_state
    from pnyx.cli.serve_cmd import parse_peers

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", default="1,8,32")
    parser.add_argument("--batch", type=int, default=1_000)
    parser.add_argument("--callers", default="64,256,1024")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--tick-ms", type=int, default=10)
    parser.add_argument(
        "--json", type=Path, default=Path(__file__).resolve().parent / "results" / "tso.json"
    )
    parser.add_argument("--write-doc", type=Path, default=None, help="e.g. docs/TRANSACTIONS.md")
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
                raise SystemExit(f"cluster up failed: {up.stderr.strip()}")
            state = load_state(data_dir)
            if state is None:
                raise SystemExit(f"no cluster state in {data_dir}")
            members = parse_peers(state["peers"])
            print("tso, 3 local processes (pnyx cluster), fsync on")
            rows = run_all(args, members)
        finally:
            subprocess.run([*PNYX, "cluster", "down", "--data-dir", str(data_dir)],
                           capture_output=True, timeout=60, check=False)  # fmt: skip
            kill_leftovers(data_dir)
    meta = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "command": " ".join(["python", "bench/bench_tso.py", *sys.argv[1:]]),
            "cores": os.cpu_count(), "seconds": args.seconds}  # fmt: skip
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    if args.write_doc is not None:
        write_doc(args.write_doc, meta, rows)


if __name__ == "__main__":
    main()

"""Read/write latency and throughput of the replication schemes on real processes.

Run: ``python bench/bench_schemes.py [--duration-s 5] [--clients 16,64] [--protocols ...]``.

For each protocol (Raft as the reference, then primary-backup, chain, CRAQ, Dynamo) it
starts a local cluster of 3 data nodes (``pnyx cluster up``, WAL with fsync; chain, CRAQ
and primary-backup add their configuration process), runs ``clients`` concurrent KV
clients (:mod:`pnyx.services.schemes_workload`: half gets, half puts of unique small
values on 32 keys) for ``--duration-s`` each, and stops the cluster.  Latency is per
operation as the client sees it (p50/p99 of successful ones, in ms); throughput counts
successful operations per second.  Every run is bounded: the workload by its duration plus
the operations' deadlines, the cluster start by ``pnyx cluster up``'s own bound.

Writes ``bench/results/schemes.json`` and prints a markdown table, with the load average
before and after (the clients share the machine with the servers, so a loaded machine
shows in every figure).

What "durable" means differs by scheme, as in the papers: Raft and Dynamo fsync every write
on a quorum before answering; the chain/CRAQ replicas and primary-backup servers keep data
in memory (fail-stop replicas; only incarnation/view records are fsynced), so their writes
cost no fsync.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pnyx.cli.cluster_cmd import cluster_command, local_cluster_up, members_of
from pnyx.services.schemes_workload import Sample, WorkloadPlan, run_scheme_workload

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "schemes.json"
PROTOCOLS = ("raft", "primary-backup", "chain", "craq", "dynamo")
BENCH_KEYS = tuple(f"k{i}" for i in range(32))
FSYNC_PER_WRITE = {"raft": True, "dynamo": True}
REQUEST_TIMEOUT_S = 1.0
"""A client retries an operation after this long without a reply.  On a loaded machine a
chain/CRAQ replica's 100 ms lease can lapse for a moment; a CRAQ read whose version query
is answered in such a moment gets no reply, and the client's retry after this timeout is
what shows in the p99."""


def _percentile_ms(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return round(ordered[index] * 1000.0, 2)


def summarize(samples: list[Sample], duration_s: float) -> dict[str, Any]:
    """p50/p99 of successful reads and writes (ms), throughput (ok ops/s), failures."""
    reads = [s.latency_s for s in samples if s.ok and s.f == "get"]
    writes = [s.latency_s for s in samples if s.ok and s.f != "get"]
    return {
        "read_p50_ms": _percentile_ms(reads, 0.50),
        "read_p99_ms": _percentile_ms(reads, 0.99),
        "write_p50_ms": _percentile_ms(writes, 0.50),
        "write_p99_ms": _percentile_ms(writes, 0.99),
        "ops_per_s": round((len(reads) + len(writes)) / duration_s, 1) if duration_s else 0.0,
        "ok_ops": len(reads) + len(writes),
        "failed_ops": sum(1 for s in samples if not s.ok),
    }


def bench_protocol(protocol: str, clients: list[int], duration_s: float) -> list[dict[str, Any]]:
    """Start a cluster of ``protocol``, run the workload at each client count, stop it."""
    rows = []
    with tempfile.TemporaryDirectory(prefix=f"pnyx-bench-{protocol}-") as tmp:
        data_dir = Path(tmp) / "cluster"
        local_cluster_up(data_dir, nodes=3, protocol=protocol)
        try:
            members = members_of(data_dir)
            for count in clients:
                plan = WorkloadPlan(
                    protocol, members, workers=count, duration_s=duration_s, seed=count,
                    keys=BENCH_KEYS, write="put", request_timeout_s=REQUEST_TIMEOUT_S,
                    deadline_s=10.0,
                )  # fmt: skip
                run = asyncio.run(run_scheme_workload(plan))
                row = {"protocol": protocol, "clients": count, "duration_s": duration_s}
                row.update(summarize(run.samples, duration_s))
                row["fsync_per_write"] = FSYNC_PER_WRITE.get(protocol, False)
                rows.append(row)
                print(_markdown_row(row), file=sys.stderr, flush=True)
        finally:
            down = cluster_command("down", "--data-dir", str(data_dir))
            if down.returncode != 0:
                print(f"cluster down failed: {down.stderr.strip()}", file=sys.stderr)
    return rows


COLUMNS = (
    "protocol", "clients", "read_p50_ms", "read_p99_ms", "write_p50_ms", "write_p99_ms",
    "ops_per_s", "failed_ops", "fsync_per_write",
)  # fmt: skip


def _markdown_row(row: dict[str, Any]) -> str:
    return "| " + " | ".join("-" if row[c] is None else str(row[c]) for c in COLUMNS) + " |"


def markdown(rows: list[dict[str, Any]]) -> str:
    """The table of every row."""
    head = "| " + " | ".join(COLUMNS) + " |\n|" + "---|" * len(COLUMNS)
    return "\n".join([head, *(_markdown_row(r) for r in rows)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration-s", type=float, default=5.0)
    parser.add_argument("--clients", default="16,64", help="Comma-separated client counts.")
    parser.add_argument("--protocols", default=",".join(PROTOCOLS))
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.duration_s <= 0:
        parser.error(f"--duration-s must be positive, got {args.duration_s}")
    clients = [int(c) for c in args.clients.split(",") if c]
    protocols = [p for p in args.protocols.split(",") if p]
    unknown = [p for p in protocols if p not in PROTOCOLS]
    if unknown:
        parser.error(f"unknown protocols {unknown}; choose from {', '.join(PROTOCOLS)}")
    load_before = os.getloadavg()
    started = time.monotonic()
    rows = [row for p in protocols for row in bench_protocol(p, clients, args.duration_s)]
    result: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version()},
        "load_avg_before": [round(x, 2) for x in load_before],
        "load_avg_after": [round(x, 2) for x in os.getloadavg()],
        "wall_s": round(time.monotonic() - started, 1),
        "rows": rows,
    }  # fmt: skip
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=1) + "\n")
    print(markdown(rows))
    print(f"\nload average before {result['load_avg_before']}, after {result['load_avg_after']};"
          f" {result['machine']['cpus']} CPUs; wrote {args.output}")  # fmt: skip


if __name__ == "__main__":
    main()

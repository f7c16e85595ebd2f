"""Simulator throughput: Raft and 5-node broadcast, every fault on, serial and ``--jobs N``.

Usage: python bench/bench_sim.py [--raft-seeds 200] [--broadcast-seeds 300] [--runs 3]
       [--jobs 1,2] [--markdown]

Each measurement is one ``pnyx sim PROTOCOL --seeds 0..N-1 --json [--jobs J]`` process,
timed from start to exit (Python start-up and worker start-up included); deliveries are
summed from its JSON lines.  The median of ``--runs`` runs is reported, with the load
average (``/proc/loadavg``) before the first and after the last run: other work on the
machine lowers every figure, ``--jobs 2`` most of all.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

TARGET_DELIVERIES_PER_S = 100_000
"""The broadcast target (one core)."""


@dataclass(frozen=True)
class Run:
    wall_s: float
    seeds: int
    deliveries: int
    events: int


@dataclass(frozen=True)
class Row:
    protocol: str
    jobs: int
    seeds: int
    runs: list[Run]
    load_before: str
    load_after: str

    def median(self, attr: str) -> float:
        return statistics.median(getattr(self, attr + "_of")(r) for r in self.runs)

    @staticmethod
    def seeds_per_min_of(run: Run) -> float:
        return run.seeds / run.wall_s * 60

    @staticmethod
    def deliveries_per_s_of(run: Run) -> float:
        return run.deliveries / run.wall_s

    @staticmethod
    def events_per_s_of(run: Run) -> float:
        return run.events / run.wall_s


def _load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def _pnyx() -> list[str]:
    script = Path(sys.executable).with_name("pnyx")
    return [str(script)] if script.exists() else [sys.executable, "-m", "pnyx.cli.main"]


def run_once(protocol: str, seeds: int, jobs: int, extra: list[str]) -> Run:
    """One timed ``pnyx sim`` process; raises when a seed fails or the command does."""
    command = [*_pnyx(), "sim", protocol, "--seeds", f"0..{seeds - 1}", "--json", "--no-shrink"]
    command += ["--jobs", str(jobs), *extra]
    started = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, check=False, timeout=3600)
    wall_s = time.perf_counter() - started
    records = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    per_seed = [r for r in records if "seed" in r]
    failed = [r["seed"] for r in per_seed if not r["ok"]]
    if proc.returncode != 0 or failed or len(per_seed) != seeds:
        raise SystemExit(
            f"{' '.join(command)}: exit {proc.returncode}, failing seeds {failed[:10]}, "
            f"{len(per_seed)} results\n{proc.stderr[-2000:]}"
        )
    deliveries = sum(r["deliveries"] for r in per_seed)
    events = sum(r["events"] for r in per_seed)
    return Run(wall_s, seeds, deliveries, events)


def measure(protocol: str, seeds: int, jobs: int, runs: int, extra: list[str]) -> Row:
    before = _load()
    results = [run_once(protocol, seeds, jobs, extra) for _ in range(runs)]
    return Row(protocol, jobs, seeds, results, before, _load())


def _print_text(rows: list[Row]) -> None:
    for row in rows:
        walls = ", ".join(f"{r.wall_s:.2f}" for r in row.runs)
        print(
            f"sim {row.protocol} --jobs {row.jobs}, {row.seeds} seeds, all faults: "
            f"{row.median('seeds_per_min'):,.0f} seeds/min, "
            f"{row.median('deliveries_per_s'):,.0f} deliveries/s, "
            f"{row.median('events_per_s'):,.0f} events/s (median of {len(row.runs)}; "
            f"wall s: {walls}; load {row.load_before} -> {row.load_after})"
        )


def _print_markdown(rows: list[Row]) -> None:
    print(
        "| date | protocol | seeds | --jobs | seeds/min | deliveries/s | events/s "
        "| load before → after |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---|")
    today = date.today().isoformat()
    for row in rows:
        print(
            f"| {today} | {row.protocol} | {row.seeds} | {row.jobs} | "
            f"{row.median('seeds_per_min'):,.0f} | {row.median('deliveries_per_s'):,.0f} | "
            f"{row.median('events_per_s'):,.0f} | {row.load_before} → {row.load_after} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--raft-seeds", type=int, default=200)
    parser.add_argument("--broadcast-seeds", type=int, default=300)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--jobs", default="1,2", help="comma-separated --jobs values")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    jobs = [int(j) for j in args.jobs.split(",")]
    print(f"cpus: {os.cpu_count()}, load average at start: {_load()}", flush=True)
    rows = []
    for protocol, seeds, extra in (
        ("raft", args.raft_seeds, []),
        ("broadcast", args.broadcast_seeds, ["--nodes", "5"]),
    ):
        if seeds <= 0:
            continue
        for j in jobs:
            rows.append(measure(protocol, seeds, j, args.runs, extra))
            _print_text(rows[-1:])
    broadcast = [r for r in rows if r.protocol == "broadcast" and r.jobs == 1]
    if broadcast:
        rate = broadcast[0].median("deliveries_per_s")
        print(f"broadcast target {TARGET_DELIVERIES_PER_S:,} deliveries/s (one core): "
              f"ratio {rate / TARGET_DELIVERIES_PER_S:.2f}")
    if args.markdown:
        _print_markdown(rows)


if __name__ == "__main__":
    main()

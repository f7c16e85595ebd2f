"""Transactions on real processes: Percolator vs async commit vs 1PC, one range vs several.

    python bench/bench_txn.py [--modes percolator,async-commit,1pc] [--shapes 1,2,4]
        [--clients 16,64] [--seconds 8] [--runs 3] [--ranges 8] [--keys-per-range 100]
        [--client-procs 1] [--json bench/results/txn.json] [--write-doc docs/TRANSACTIONS.md]

Each run starts a fresh ``pnyx cluster up --protocol txn --nodes 3 --ranges R`` (WAL with
fsync) in a temporary directory and waits until every range has a leader; then, for every
shape, clients and mode (modes interleaved, so a change of machine load hits all of them
alike), runs a closed loop for ``--seconds``:

- ``--clients`` concurrent sessions over ONE :class:`pnyx.services.txn.TxnStore` of that
  mode per client process (as the sessions of one application server share its store;
  ``--client-procs P`` splits them over P processes when the client side is the limit);
- each session runs transfers: read every key of the transaction, take one unit from the
  first and add one to each other key.  Shape ``1``: two keys of the same range; shape
  ``N`` (N >= 2): one key in each of N different ranges.  Keys are drawn uniformly from
  ``--keys-per-range`` keys in each initial range (kept below the split threshold of 128
  keys, so the layout stays put);
- a conflict (:class:`~pnyx.services.txn.TxnConflict`) is retried after a jittered
  exponential back-off, as :meth:`TxnStore.run` does, at most ``MAX_RETRIES`` times.

Per cell: committed transactions/s; **commit latency** p50/p99 (the commit phase of the
attempt that committed: from the end of the transaction's body to the commit acknowledged)
and **transaction latency** p50/p99 (from asking for the start timestamp of the first
attempt to the commit acknowledged: retries and back-off included); conflicts (attempts
rolled back) per committed transaction, transactions that gave up, indeterminate and
failed ones; the client process CPU time over the wall time (near 1.0 per process: the
client is the bottleneck); the load average before and after.  With ``--runs N`` every
figure is the median of the N runs (the per-run throughputs are kept too).
``--write-doc`` replaces the generated table of the doc (between its marker comments).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import concurrent.futures
import json
import multiprocessing
import os
import random
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchlib import kill_leftovers, percentile, replace_section, settle_ranges

from pnyx.cli.cluster_cmd import cluster_command, members_of
from pnyx.protocols.multiraft.runtime_def import split_keys
from pnyx.services.multiraft import RangeClient, spread_key
from pnyx.services.txn import MODES, TxnConflict, TxnError, TxnIndeterminate, TxnStore

DEFAULT_MODES = ("percolator", "async-commit", "1pc")
"""What ``make bench`` compares (the issue's plain Percolator vs async commit vs 1PC);
``--modes`` adds ``2pc``."""

SETTLE_S = 90.0
"""Longest wait for every range to have a leader."""
SPLIT_THRESHOLD_KEYS = 128
"""Multi-Raft's runtime split threshold: a range above it splits (the layout would move)."""
MAX_RETRIES = 10
BACKOFF_FIRST_S = 0.01
BACKOFF_MAX_S = 0.5
MAX_TXNS_PER_SESSION = 1_000_000
"""Upper bound of transactions per session (the cell is also bounded in time)."""
CELL_END_BOUND_S = 120.0
"""Longest a cell may run past ``--seconds`` (sessions finishing their last transaction)."""
ROOT = Path(__file__).resolve().parent.parent


def keys_by_range(ranges: int, per_range: int) -> list[list[str]]:
    """``per_range`` keys (``spread_key`` workload keys) in each of the ``ranges`` initial
    ranges that ``pnyx cluster up --ranges`` makes."""
    if not 1 <= per_range < SPLIT_THRESHOLD_KEYS:
        raise ValueError(f"keys per range must be in [1, {SPLIT_THRESHOLD_KEYS}), got {per_range}")
    cuts = split_keys(ranges)
    buckets: list[list[str]] = [[] for _ in range(ranges)]
    for n in range(ranges * per_range * 50):  # bounded: spread_key spreads evenly
        key = f"{spread_key(n)}.t"
        bucket = buckets[bisect.bisect_right(cuts, key)]
        if len(bucket) < per_range:
            bucket.append(key)
        if all(len(b) == per_range for b in buckets):
            return buckets
    raise RuntimeError(f"could not find {per_range} keys in each of {ranges} ranges")


def pick_keys(rng: random.Random, layout: list[list[str]], shape: int) -> list[str]:
    """The keys of one transaction: two in one range (shape 1) or one in each of ``shape``
    ranges."""
    if shape == 1:
        return rng.sample(rng.choice(layout), 2)
    return [rng.choice(layout[r]) for r in rng.sample(range(len(layout)), shape)]


@dataclass
class CellSpec:
    """One measurement: ``sessions`` closed-loop sessions of ``mode`` transactions of
    ``shape`` for ``seconds`` (picklable: it may run in another process)."""

    members: dict[int, tuple[str, int]]
    mode: str
    shape: int
    sessions: int
    seconds: float
    layout: list[list[str]]
    seed: int


@dataclass
class CellRaw:
    """What one client process measured in a cell."""

    commit_s: list[float]
    whole_s: list[float]
    wall_s: float
    cpu_s: float
    conflicts: int = 0
    gave_up: int = 0
    indeterminate: int = 0
    failed: int = 0


async def _transfer_once(store: TxnStore, keys: list[str]) -> tuple[float, float]:
    """One attempt: (start monotonic, end of body monotonic); returns once committed."""
    started = time.monotonic()
    async with store.transaction() as tx:
        values = await asyncio.gather(*(tx.get(k) for k in keys))
        balances = [v if type(v) is int else 0 for v in values]
        tx.put(keys[0], balances[0] - (len(keys) - 1))
        for key, balance in zip(keys[1:], balances[1:], strict=True):
            tx.put(key, balance + 1)
        body_end = time.monotonic()
    return started, body_end


async def _session(
    store: TxnStore, spec: CellSpec, index: int, out: CellRaw, stop_at: float
) -> None:
    """Closed-loop transfers until ``stop_at``, retrying conflicts; figures into ``out``."""
    rng = random.Random(spec.seed * 100_003 + index)
    for _ in range(MAX_TXNS_PER_SESSION):
        if time.monotonic() >= stop_at:
            return
        keys = pick_keys(rng, spec.layout, spec.shape)
        first_start = time.monotonic()
        for attempt in range(MAX_RETRIES + 1):
            try:
                _, body_end = await _transfer_once(store, keys)
            except TxnConflict:
                out.conflicts += 1
                if attempt == MAX_RETRIES:
                    out.gave_up += 1
                    break
                cap_s = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2**attempt)
                await asyncio.sleep(rng.uniform(0, cap_s))
                continue
            except TxnIndeterminate:
                out.indeterminate += 1
                break
            except TxnError:
                out.failed += 1
                break
            done = time.monotonic()
            out.commit_s.append(done - body_end)
            out.whole_s.append(done - first_start)
            break


async def _run_cell(spec: CellSpec) -> CellRaw:
    store = TxnStore(spec.members, mode=spec.mode, deadline_s=15.0)
    out = CellRaw([], [], 0.0, 0.0)
    try:
        await store.ranges.refresh()  # the range map before the clock starts
        cpu = time.process_time()
        began = time.monotonic()
        stop_at = began + spec.seconds
        sessions = (_session(store, spec, i, out, stop_at) for i in range(spec.sessions))
        await asyncio.wait_for(asyncio.gather(*sessions), spec.seconds + CELL_END_BOUND_S)
        out.wall_s = time.monotonic() - began
        out.cpu_s = time.process_time() - cpu
    finally:
        await store.close()
    return out


def run_cell_here(spec: CellSpec) -> CellRaw:
    """One client process's part of a cell (also the entry point of client processes)."""
    return asyncio.run(_run_cell(spec))


def measure(spec: CellSpec, procs: int) -> dict[str, Any]:
    """A cell's figures, its sessions split over ``procs`` client processes."""
    load_before = os.getloadavg()[0]
    if procs == 1:
        parts = [run_cell_here(spec)]
    else:
        specs = [
            CellSpec(**{**asdict(spec), "sessions": n, "seed": spec.seed * 10 + p})
            for p, n in enumerate(_split(spec.sessions, procs))
        ]
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(procs, mp_context=context) as pool:
            parts = list(pool.map(run_cell_here, specs))
    commit = [x for p in parts for x in p.commit_s]
    whole = [x for p in parts for x in p.whole_s]
    committed = len(commit)
    return {
        "mode": spec.mode,
        "shape": spec.shape,
        "clients": spec.sessions,
        "client_procs": procs,
        "txn_per_s": round(sum(len(p.commit_s) / p.wall_s for p in parts if p.wall_s), 1),
        "commit_p50_ms": round(1000 * percentile(commit, 0.5), 1),
        "commit_p99_ms": round(1000 * percentile(commit, 0.99), 1),
        "txn_p50_ms": round(1000 * percentile(whole, 0.5), 1),
        "txn_p99_ms": round(1000 * percentile(whole, 0.99), 1),
        "committed": committed,
        "conflicts": sum(p.conflicts for p in parts),
        "conflicts_per_txn": round(sum(p.conflicts for p in parts) / max(1, committed), 3),
        "gave_up": sum(p.gave_up for p in parts),
        "indeterminate": sum(p.indeterminate for p in parts),
        "failed": sum(p.failed for p in parts),
        "client_cpu_per_wall": round(sum(p.cpu_s / p.wall_s for p in parts if p.wall_s), 2),
        "load_before": round(load_before, 2),
        "load_after": round(os.getloadavg()[0], 2),
    }


def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (i < total % parts) for i in range(parts)]


async def _range_count(members: dict[int, tuple[str, int]]) -> int:
    """Data ranges in the range map now."""
    client = RangeClient(members, deadline_s=30.0)
    try:
        return len(await client.ranges())
    finally:
        await client.close()


def one_run(args: argparse.Namespace, run: int) -> list[dict[str, Any]]:
    """Every cell once, on a fresh cluster (removed afterwards, even on failure)."""
    layout = keys_by_range(args.ranges, args.keys_per_range)
    rows = []
    with tempfile.TemporaryDirectory(prefix="pnyx-bench-txn-") as tmp:
        data_dir = Path(tmp) / "cluster"
        up = cluster_command(
            *("up", "--protocol", "txn", "--nodes", "3", "--ranges", str(args.ranges)),
            *("--data-dir", str(data_dir), "--detach"),
        )
        try:
            if up.returncode != 0:
                raise RuntimeError(f"cluster did not start: {up.stderr.strip()}")
            members = members_of(data_dir)
            asyncio.run(settle_ranges(members, args.ranges, SETTLE_S))
            for shape in args.shapes:
                for clients in args.clients:
                    for mode in args.modes:
                        seed = run * 1_000 + shape * 100 + clients
                        spec = CellSpec(members, mode, shape, clients, args.seconds, layout, seed)
                        row = measure(spec, args.client_procs)
                        row["run"] = run
                        row["ranges_after"] = asyncio.run(_range_count(members))
                        if row["ranges_after"] != args.ranges:  # a split moved the layout
                            print(f"warning: {row['ranges_after']} ranges now", flush=True)
                        rows.append(row)
                        print(json.dumps(row), flush=True)
        finally:
            cluster_command("down", "--data-dir", str(data_dir))
            kill_leftovers(data_dir)
    return rows


MEDIAN_FIELDS = (
    "txn_per_s",
    "commit_p50_ms",
    "commit_p99_ms",
    "txn_p50_ms",
    "txn_p99_ms",
    "conflicts_per_txn",
    "client_cpu_per_wall",
)
SUM_FIELDS = ("committed", "conflicts", "gave_up", "indeterminate", "failed")


def merge_runs(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (shape, clients, mode): the median of each figure over the runs; counts summed;
    the per-run throughputs and the lowest/highest load kept."""
    cells: dict[tuple[int, int, str], list[dict[str, Any]]] = {}
    for row in rows:
        cells.setdefault((row["shape"], row["clients"], row["mode"]), []).append(row)
    merged = []
    for (shape, clients, mode), runs in cells.items():
        out: dict[str, Any] = {"mode": mode, "shape": shape, "clients": clients}
        out["runs"] = len(runs)
        out["client_procs"] = runs[0]["client_procs"]
        for name in MEDIAN_FIELDS:
            out[name] = round(statistics.median(r[name] for r in runs), 3)
        for name in SUM_FIELDS:
            out[name] = sum(r[name] for r in runs)
        out["txn_per_s_runs"] = [r["txn_per_s"] for r in runs]
        out["ranges_after"] = max(r.get("ranges_after", 0) for r in runs)
        out["load_min"] = min(r["load_before"] for r in runs)
        out["load_max"] = max(max(r["load_before"], r["load_after"]) for r in runs)
        merged.append(out)
    return merged


def table(merged: list[dict[str, Any]]) -> str:
    """The figures as a Markdown table."""
    lines = [
        "| shape | clients | mode | txn/s | commit p50 / p99 ms | txn p50 / p99 ms | "
        "conflicts / txn | indet. | failed | client CPU/wall | load |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in merged:
        shape = "1 range" if r["shape"] == 1 else f"{r['shape']} ranges"
        lines.append(
            f"| {shape} | {r['clients']} | {r['mode']} | {r['txn_per_s']:,.0f} | "
            f"{r['commit_p50_ms']:.1f} / {r['commit_p99_ms']:.1f} | "
            f"{r['txn_p50_ms']:.1f} / {r['txn_p99_ms']:.1f} | {r['conflicts_per_txn']:.3f} | "
            f"{r['indeterminate']} | {r['failed'] + r['gave_up']} | "
            f"{r['client_cpu_per_wall']:.2f} | {r['load_min']:.1f}-{r['load_max']:.1f} |"
        )
    return "\n".join(lines)


BEGIN_MARK = "<!-- bench_txn: begin -->"
END_MARK = "<!-- bench_txn: end -->"


def write_doc(doc: Path, meta: dict[str, Any], merged: list[dict[str, Any]]) -> None:
    """Replace the part of ``doc`` between the markers with the command, date, load and
    the table."""
    loads = [r["load_min"] for r in merged] + [r["load_max"] for r in merged]
    body = (
        f"`{meta['command']}` on {meta['date']} ({_source_text(meta['git_head'])}), "
        f"{meta['cores']} cores, load average {min(loads):.1f}-{max(loads):.1f} during the "
        f"cells; {meta['ranges']} ranges, {meta['keys_per_range']} keys per range, "
        f"{meta['seconds']:g} s per cell, median of {merged[0]['runs']} runs.\n\n"
        + table(merged)
        + "\n"
    )
    replace_section(doc, BEGIN_MARK, END_MARK, body)


def _source_text(git_head: str) -> str:
    snapshot = git_head.removeprefix("pnyx from ")
    if snapshot != git_head:
        return f"pnyx imported from {snapshot} on PYTHONPATH"
    return f"tree {git_head}"


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line, checked (a clear error naming the bad value)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--modes",
        default=",".join(DEFAULT_MODES),
        help=f"of {', '.join(MODES)} (default: the three Percolator modes)",
    )
    parser.add_argument("--shapes", default="1,2,4", help="1: two keys of one range; N: N ranges")
    parser.add_argument("--clients", default="16,64")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--ranges", type=int, default=8)
    parser.add_argument("--keys-per-range", type=int, default=100)
    parser.add_argument("--client-procs", type=int, default=1)
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "txn.json")
    parser.add_argument("--write-doc", type=Path, default=None, help="e.g. docs/TRANSACTIONS.md")
    args = parser.parse_args(argv)
    args.modes = [m for m in args.modes.split(",") if m]
    bad = [m for m in args.modes if m not in MODES]
    if bad or not args.modes:
        parser.error(f"--modes: {bad or args.modes} not in {', '.join(MODES)}")
    args.shapes, args.clients = _ints(args.shapes), _ints(args.clients)
    if not args.shapes or any(not 1 <= s <= args.ranges for s in args.shapes):
        parser.error(f"--shapes must be in [1, {args.ranges}] (the ranges), got {args.shapes}")
    if not args.clients or min(args.clients) < 1:
        parser.error(f"--clients must be >= 1, got {args.clients}")
    if args.runs < 1 or args.seconds <= 0 or args.client_procs < 1:
        parser.error(
            f"--runs and --client-procs must be >= 1 and --seconds > 0, got {args.runs}, "
            f"{args.client_procs}, {args.seconds}"
        )
    if not 1 <= args.keys_per_range < SPLIT_THRESHOLD_KEYS:
        parser.error(f"--keys-per-range must be in [1, 127], got {args.keys_per_range}")
    return args


def _git_head() -> str:
    """The tree's commit (``+dirty`` if the store's sources differ from it), or where pnyx
    was imported from when that is not this tree (e.g. a ``git archive`` on PYTHONPATH,
    which keeps other people's uncommitted edits out of the measurement)."""
    import subprocess

    import pnyx

    source = Path(pnyx.__file__).resolve().parent.parent
    if source != ROOT / "src":
        return f"pnyx from {source}"

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30, check=False
        )
        return done.stdout.strip()

    dirty = git("status", "--porcelain", "--", "src/pnyx/services/txn.py", "src/pnyx/protocols")
    return git("rev-parse", "--short", "HEAD") + ("+dirty" if dirty else "")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rows: list[dict[str, Any]] = []
    for run in range(args.runs):
        rows += one_run(args, run)
        print(f"run {run + 1}/{args.runs} done", flush=True)
    merged = merge_runs(rows)
    print(table(merged))
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": " ".join(["python", "bench/bench_txn.py", *(argv or sys.argv[1:])]),
        "cores": os.cpu_count(),
        "git_head": _git_head(),
        "ranges": args.ranges,
        "keys_per_range": args.keys_per_range,
        "seconds": args.seconds,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"meta": meta, "cells": merged, "runs": rows}, indent=1) + "\n")
    if args.write_doc is not None:
        write_doc(args.write_doc, meta, merged)
    return 0


if __name__ == "__main__":
    sys.exit(main())

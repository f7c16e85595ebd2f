"""Benchmark pnyx.check against the reference Go checker's figures (Porcupine).

Run: ``python bench/bench_check.py [--repeat N] [--markdown]``. Every figure includes parsing
the file. The reference is a Go module that cannot be fetched here, so its figures are the
ones measured on this kind of machine and written in the issue and in
``shared/testdata/histories/README.md``; the ratio is pnyx / reference (below 1: faster).
Figures are medians of ``--repeat`` runs; the load average before and after is printed.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from pnyx.check import check_linearizable, get_model, read_history

ROOT = Path(__file__).resolve().parents[1]
HISTORIES = ROOT / ".." / "shared" / "testdata" / "histories"
GO_ETCD_ALL_102_S = 0.34  # reference, all 102 etcd logs (histories README)
GO_ETCD_LOGS = 102
GO_C10_OK_UNSPLIT_S = 1.58  # reference, c10-ok without per-key splitting
GO_KV_SPLIT_S = {  # reference, per-file medians, parse + check, split per key (the issue)
    "c01-bad": 0.0010, "c01-ok": 0.0014, "c10-bad": 0.0051, "c10-ok": 0.0052,
}
GENERATED = [  # (operations, clients, keys, anomaly) of generated multi-key KV histories
    (1000, 10, 10, None), (1000, 10, 10, "stale-read"),
    (2000, 20, 20, None), (5000, 20, 50, None),
    (10000, 50, 100, None), (10000, 50, 100, "stale-read"), (10000, 50, 100, "lost-append"),
]
GENERATED_TIMEOUT_S = 120.0
Row = tuple[str, float, str]


def median_of(repeat: int, fn: Callable[[], object]) -> float:
    """The median of ``repeat`` runs of ``fn``, in seconds."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _ratio(seconds: float, reference: float) -> str:
    return f"{seconds / reference:.2f}x of {reference:.4f} s"


def _cli(*args: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "from pnyx.cli.main import main; main()", *args],
                   check=False, capture_output=True)
    return time.perf_counter() - started


def kv_rows(repeat: int) -> list[Row]:
    """Each shared KV file, split per key, in-process and as a whole ``pnyx check``."""
    rows: list[Row] = []
    total_s = 0.0
    model = get_model("kv")
    for stem, reference in GO_KV_SPLIT_S.items():
        path = HISTORIES / "kv" / f"{stem}.txt"
        seconds = median_of(repeat, lambda p=path: check_linearizable(  # type: ignore[misc]
            read_history(p, "edn"), model))
        total_s += seconds
        rows.append((f"kv {stem}, split, in-process", seconds, _ratio(seconds, reference)))
    reference_total = sum(GO_KV_SPLIT_S.values())
    rows.append(("kv: the 4 files, split, in-process", total_s,
                 _ratio(total_s, reference_total)))
    for stem, reference in GO_KV_SPLIT_S.items():
        path = HISTORIES / "kv" / f"{stem}.txt"
        seconds = statistics.median(
            _cli("check", str(path), "--model", "kv", "--format", "edn")
            for _ in range(max(3, repeat // 4)))
        rows.append((f"kv {stem}, one `pnyx check` process", seconds, _ratio(seconds, reference)))
    unsplit = median_of(max(1, repeat // 10), lambda: check_linearizable(
        read_history(HISTORIES / "kv" / "c10-ok.txt", "edn"), model, partition=False))
    rows.append(("kv c10-ok, unsplit, in-process", unsplit,
                 _ratio(unsplit, GO_C10_OK_UNSPLIT_S)))
    return rows


def etcd_rows(repeat: int) -> list[Row]:
    files = sorted((HISTORIES / "etcd-jepsen").glob("*.log"))
    model = get_model("cas-register")

    def all_logs() -> None:
        for path in files:
            check_linearizable(read_history(path, "jepsen"), model)

    seconds = median_of(repeat, all_logs)
    reference = GO_ETCD_ALL_102_S * len(files) / GO_ETCD_LOGS
    rows: list[Row] = [(f"{len(files)} etcd logs, in-process", seconds,
                        _ratio(seconds, reference) + f" (0.34 s x {len(files)}/102)")]
    cli_s = statistics.median(
        _cli("check", *map(str, files), "--model", "cas-register", "--format", "jepsen")
        for _ in range(max(3, repeat // 4)))
    rows.append((f"{len(files)} etcd logs, one `pnyx check` process", cli_s,
                 _ratio(cli_s, reference)))
    return rows


def startup_rows() -> list[Row]:
    """What a ``pnyx check`` process costs before it reads anything."""
    python_s = statistics.median(
        _timed([sys.executable, "-c", "pass"]) for _ in range(5))
    imports_s = statistics.median(_timed(
        [sys.executable, "-c", "from pnyx.cli.main import main; import pnyx.cli.check_cmd"])
        for _ in range(5))
    return [("start-up: Python interpreter alone", python_s, ""),
            ("start-up: interpreter + pnyx check's imports", imports_s, "")]


def _timed(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, check=False, capture_output=True)
    return time.perf_counter() - started


def generated_rows(repeat: int) -> list[Row]:
    """Generated multi-key KV histories (tests/check/generate.py: seed = operations, 5 %
    info, 5 % fail), parse included (JSONL); no reference figure (Go cannot run here)."""
    sys.path.insert(0, str(ROOT))
    import tempfile

    from tests.check.generate import generate

    from pnyx.check import write_jsonl

    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        for ops, clients, keys, anomaly in GENERATED:
            gen = generate(ops, kind="kv", ops=ops, clients=clients, keys=keys, p_info=0.05,
                           p_fail=0.05, anomaly=anomaly)  # seed = ops
            path = Path(tmp) / f"gen-{ops}.jsonl"
            write_jsonl(gen.events(), path)
            verdicts: list[str] = []
            seconds = median_of(max(3, repeat // 4), lambda p=path, v=verdicts: v.append(
                check_linearizable(read_history(p, "jsonl"), get_model("kv"),
                                   timeout_s=GENERATED_TIMEOUT_S).verdict))
            rows.append((f"generated kv, {ops:,} ops, {clients} clients, {keys} keys, "
                         f"{anomaly or 'clean'}", seconds, verdicts[-1]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=21, help="runs per figure (median kept)")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    args = parser.parse_args()
    load_before = os.getloadavg()
    rows = (kv_rows(args.repeat) + etcd_rows(args.repeat) + startup_rows()
            + generated_rows(args.repeat))
    _print(rows, args.markdown, load_before, os.getloadavg())


def _print(rows: list[Row], markdown: bool, before: tuple[float, ...],
           after: tuple[float, ...]) -> None:
    machine = f"{platform.python_implementation()} {platform.python_version()}, " \
              f"{platform.machine()}, {os.cpu_count()} cores"
    load = f"load average {' '.join(f'{x:.2f}' for x in before)} -> " \
           f"{' '.join(f'{x:.2f}' for x in after)}"
    if markdown:
        print(f"{machine}; medians; {load}\n")
        print("| what | seconds | vs reference (Go) |")
        print("| --- | ---: | --- |")
        for name, seconds, note in rows:
            print(f"| {name} | {seconds:.4f} | {note} |")
        return
    print(f"pnyx.check benchmark ({machine}; medians, parse + check; {load})")
    for name, seconds, note in rows:
        print(f"  {name:<62} {seconds:8.4f} s  {note}")


if __name__ == "__main__":
    main()

"""Benchmark pnyx.check on the shared reference histories against the Go reference figures.

Run: ``python bench/bench_check.py [--repeat N] [--markdown]``. Times include parsing.
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from pnyx.check import check_linearizable, get_model, read_history

ROOT = Path(__file__).resolve().parents[1]
HISTORIES = ROOT / ".." / "shared" / "testdata" / "histories"
GO_ETCD_ALL_102_S = 0.34  # reference Go checker, all 102 etcd logs (histories README)
GO_C10_OK_UNSPLIT_S = 1.58  # reference Go checker, c10-ok without per-key splitting
GO_ETCD_LOGS = 102


def best_of(repeat: int, fn: Callable[[], object]) -> float:
    """The fastest of ``repeat`` runs, in seconds."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def etcd_total(files: list[Path]) -> None:
    model = get_model("cas-register")
    for path in files:
        check_linearizable(read_history(path, "jepsen"), model)


def kv_one(path: Path, split: bool) -> None:
    check_linearizable(read_history(path, "edn"), get_model("kv"), partition=split)


def cli_wall_clock(files: list[Path]) -> float:
    """One ``pnyx check`` process over all files: includes interpreter start and imports."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "from pnyx.cli.main import main; main()",
                    "check", *map(str, files),
                    "--model", "cas-register", "--format", "jepsen", "--json"],
                   check=False, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5, help="runs per figure (best is kept)")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    args = parser.parse_args()
    etcd = sorted((HISTORIES / "etcd-jepsen").glob("*.log"))
    kv = sorted((HISTORIES / "kv").glob("*.txt"))
    rows: list[tuple[str, float, str]] = []

    etcd_s = best_of(args.repeat, lambda: etcd_total(etcd))
    go_scaled = GO_ETCD_ALL_102_S * len(etcd) / GO_ETCD_LOGS
    rows.append((f"{len(etcd)} etcd logs, in-process (parse + check)", etcd_s,
                 f"{etcd_s / go_scaled:.2f}x of Go {GO_ETCD_ALL_102_S} s x {len(etcd)}/102 "
                 f"= {go_scaled:.3f} s"))
    cli_s = min(cli_wall_clock(etcd) for _ in range(max(1, args.repeat // 2)))
    rows.append((f"{len(etcd)} etcd logs, `pnyx check` process wall clock", cli_s,
                 "includes Python start-up and imports"))
    for split in (True, False):
        for path in kv:
            seconds = best_of(args.repeat if split else max(1, args.repeat // 2),
                              lambda p=path, s=split: kv_one(p, s))  # type: ignore[misc]
            note = ""
            if path.stem == "c10-ok" and not split:
                note = f"{seconds / GO_C10_OK_UNSPLIT_S:.2f}x of Go {GO_C10_OK_UNSPLIT_S} s"
            rows.append((f"kv {path.name} {'split per key' if split else 'unsplit'}",
                         seconds, note))
    kv_total = sum(s for name, s, _ in rows if name.startswith("kv "))
    rows.append(("kv: all 4 files, split + unsplit", kv_total, ""))
    _print(rows, args.markdown)


def _print(rows: list[tuple[str, float, str]], markdown: bool) -> None:
    machine = f"{platform.python_implementation()} {platform.python_version()}, " \
              f"{platform.machine()}"
    if markdown:
        print(f"Measured with {machine} (best of runs):\n")
        print("| what | seconds | vs reference |")
        print("| --- | ---: | --- |")
        for name, seconds, note in rows:
            print(f"| {name} | {seconds:.4f} | {note} |")
        return
    print(f"pnyx.check benchmark ({machine}; best of runs, parse + check)")
    for name, seconds, note in rows:
        print(f"  {name:<52} {seconds:8.4f} s  {note}")


if __name__ == "__main__":
    main()

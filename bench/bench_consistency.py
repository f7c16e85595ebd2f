"""Benchmark the consistency checkers on generated 10,000-operation register histories.

Run: ``python bench/bench_consistency.py [--ops N] [--repeat R]``. Histories come from the
store simulations in ``tests/check/consistency_generate.py`` (loaded by path): an atomic
(linearizable) store and a causal replicated store, 8 processes (``--processes``) over 20
keys, unique values. Figures are medians of ``--repeat`` runs of the checker alone (the
history is built once); the load average before and after is printed. Target: causal and
sequential under 10 s each on 10,000 operations (docs/CONSISTENCY.md records the figures).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pnyx.check.causal import check_causal
from pnyx.check.sequential import check_sequential
from pnyx.check.session import check_session

ROOT = Path(__file__).resolve().parents[1]


def _generator() -> Any:
    path = ROOT / "tests" / "check" / "consistency_generate.py"
    spec = importlib.util.spec_from_file_location("consistency_generate", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["consistency_generate"] = module
    spec.loader.exec_module(module)
    return module


def median_of(repeat: int, fn: Callable[[], Any]) -> tuple[float, Any]:
    """Median seconds of ``repeat`` runs of ``fn``, and its last result."""
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ops", type=int, default=10_000)
    parser.add_argument("--processes", type=int, default=8)
    parser.add_argument("--keys", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    gen = _generator()
    print(f"load before: {os.getloadavg()}")
    histories = {
        "atomic": gen.atomic_history(1, args.ops, args.processes, args.keys),
        "causal-store": gen.replicated_history(1, args.ops, args.processes, args.keys,
                                               causal=True),
    }
    checkers: list[tuple[str, Callable[[Any], Any]]] = [
        ("causal", check_causal),
        ("sequential", lambda h: check_sequential(h, timeout_s=120.0)),
        ("session", check_session),
    ]
    print(f"{'history':<14} {'ops':>6} {'checker':<11} {'verdict':<16} {'median s':>9}")
    for hname, history in histories.items():
        for cname, check in checkers:
            elapsed_s, result = median_of(args.repeat, lambda c=check, h=history: c(h))
            print(f"{hname:<14} {len(history):>6} {cname:<11} {result.verdict:<16} "
                  f"{elapsed_s:>9.3f}")
    print(f"load after: {os.getloadavg()}")


if __name__ == "__main__":
    main()

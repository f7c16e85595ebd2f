"""Simulator figures of the transaction modes (for the package README).

Run: ``.venv/bin/python -m tests.txn.figures [SEEDS] [FAULTS]`` (default 50 seeds, all faults).
Per mode: transactions recorded ok / fail / info per seed, aborted attempts, lock
resolutions (rolled forward / back), coordinator crashes, and the mean and p99 latency of
committed transfers and list-append transactions in virtual milliseconds.
"""

from __future__ import annotations

import sys
from collections import Counter

from pnyx.catalog import get_protocol
from pnyx.sim.runner import SimConfig, Simulation
from pnyx.sim.schedule import parse_faults

MODES = ("percolator", "percolator-async", "percolator-1pc", "txn-2pc")


def _latencies_ms(history: list) -> list[float]:  # type: ignore[type-arg]
    open_at: dict[int, int] = {}
    out: list[float] = []
    for ev in history:
        if ev.f not in ("transfer", "txn"):
            continue
        if ev.type == "invoke":
            open_at[ev.process] = ev.time
        elif ev.process in open_at:
            start = open_at.pop(ev.process)
            if ev.type == "ok" and not (ev.f == "txn" and _read_only(ev.value)):
                out.append((ev.time - start) / 1e6)
    return out


def _read_only(mops: list) -> bool:  # type: ignore[type-arg]
    return all(m[0] == "r" for m in mops)


def main(seeds: int, faults: str) -> None:
    for name in MODES:
        outcomes: Counter[str] = Counter()
        stats: Counter[str] = Counter()
        lat: list[float] = []
        for seed in range(1, seeds + 1):
            sim = Simulation(get_protocol(name), SimConfig(seed=seed, faults=parse_faults(faults)))
            result = sim.run()
            if not result.ok:
                print(f"{name} seed {seed}: {result.violation}")
            outcomes.update(e.type for e in result.history if e.type != "invoke")
            for s in getattr(sim.monitor, "client_stats", {}).values():
                stats.update(s)
            lat.extend(_latencies_ms(result.history))
        lat.sort()
        p50 = lat[len(lat) // 2] if lat else 0.0
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else 0.0
        crashes = sum(v for k, v in stats.items() if k.startswith("crash_"))
        print(
            f"{name}: per seed ok {outcomes['ok'] / seeds:.1f} fail {outcomes['fail'] / seeds:.1f} "
            f"info {outcomes['info'] / seeds:.1f}; "
            f"aborted attempts {stats['aborted_attempts'] / seeds:.1f}, "
            f"resolutions {stats['resolutions'] / seeds:.1f} (forward {stats['rolled_forward']}, "
            f"back {stats['rolled_back']} in all), committed by a resolver first "
            f"{stats['committed_by_resolver']}, coordinator crashes {crashes / seeds:.1f}; "
            f"write-txn latency p50 {p50:.0f} ms p99 {p99:.0f} ms (n={len(lat)})"
        )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 50, sys.argv[2] if len(sys.argv) > 2 else "all")

"""Simulator throughput: 5-node reliable broadcast with every fault on, one core.

Usage: python bench/bench_sim.py [--seeds N]
"""

from __future__ import annotations

import argparse
import time

from pnyx.sim.catalog import get_spec
from pnyx.sim.runner import SimConfig, run_sim
from pnyx.sim.schedule import parse_faults

TARGET_DELIVERIES_PER_S = 100_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=300)
    args = parser.parse_args()
    spec = get_spec("broadcast")
    faults = parse_faults("all")
    deliveries = events = 0
    started = time.perf_counter()
    for seed in range(1, args.seeds + 1):
        result = run_sim(spec, SimConfig(seed=seed, nodes=5, faults=faults))
        assert result.ok, f"seed {seed}: {result.violation}"
        deliveries += result.stats.deliveries
        events += result.stats.events
    wall_s = time.perf_counter() - started
    rate = deliveries / wall_s
    print(f"sim broadcast 5 nodes, all faults, {args.seeds} seeds: {wall_s:.2f} s wall")
    print(f"  message deliveries: {deliveries} -> {rate:,.0f} deliveries/s")
    print(f"  simulator events:   {events} -> {events / wall_s:,.0f} events/s")
    print(f"  seeds per minute:   {args.seeds / wall_s * 60:,.0f}")
    print(f"  target {TARGET_DELIVERIES_PER_S:,} deliveries/s: ratio {rate / TARGET_DELIVERIES_PER_S:.2f}")


if __name__ == "__main__":
    main()

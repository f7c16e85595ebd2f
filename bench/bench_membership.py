"""Failure detectors measured in the simulator, on the same seeds: fixed timeout, phi-accrual,
SWIM and SWIM + Lifeguard.

Usage: python bench/bench_membership.py [--quick] [--out docs] [--json FILE] [--parts ...]

Measures (see docs/FAILURE_DETECTION.md for the results and how to read them):

1. detection time of a crashed member, p50/p99 over (observer, crashed member) pairs and
   over crashes for "every live member knows", without loss and with 10 % loss;
2. false positives (incidents: a live, healthy member declared dead while no one else had
   it dead) per healthy member-hour under 0, 5, 10 and 20 % loss and with slow members
   (a slow member's own false positives are counted apart);
3. dissemination time of a join (the seed member learns of the newcomer, to every member
   knowing it) against group size 8 ... 1,000 for SWIM, in gossip rounds of 200 ms; and
   the spread of a death (first to last member declaring a crashed member dead);
4. messages sent per member per second (loss-free runs);
5. a plot of detection time against false-positive rate (10 % loss), each detector a curve
   over its tuning parameter: the fixed timeout, the phi threshold, SWIM's suspicion
   multiplier.  Written as ``fd-tradeoff.png`` into ``--out``;
6. (``--parts scale`` only) simulator speed: 1,000 SWIM members for 64 virtual seconds.

Every run is one deterministic simulation (``pnyx sim`` specs of
:mod:`pnyx.protocols.membership.spec`, with the loss rate set exactly); the figures depend only on
the seeds, never on the machine.  The CPU time of each part is printed for reference.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import date
from pathlib import Path
from typing import Any

from pnyx.protocols.membership.spec import (
    Detector,
    MembershipMonitor,
    MembershipSpec,
    fixed_detector,
    membership_spec,
    phi_detector,
    swim_detector,
)
from pnyx.sim.runner import SimConfig, Simulation
from pnyx.sim.schedule import FaultEvent, NetworkFaults, Schedule

GOSSIP_ROUND_S = 0.2
"""memberlist's gossip interval: the unit of dissemination rounds."""


def detectors() -> dict[str, Detector]:
    """The four detectors with their default settings."""
    return {
        "fixed": fixed_detector(),
        "phi": phi_detector(),
        "swim": swim_detector(lifeguard=False),
        "swim-lifeguard": swim_detector(lifeguard=True),
    }


@dataclass
class Outcome:
    """What one simulated run showed."""

    detector: str
    nodes: int
    seed: int
    loss: float
    ok: bool
    violation: str | None
    virtual_s: float
    cpu_s: float
    detect_s: list[float] = field(default_factory=list)
    """Per (observer, crashed member): crash to that observer's declaration."""
    first_s: list[float] = field(default_factory=list)
    all_s: list[float] = field(default_factory=list)
    """Per crash: crash to the first declaration / to the last live member's."""
    join_s: float | None = None
    """Join runs: the seed learning of the newcomer to the last member learning of it."""
    undetected: int = 0
    fp_healthy: int = 0
    fp_unhealthy: int = 0
    healthy_member_h: float = 0.0
    messages: int = 0


def run(
    detector: Detector,
    nodes: int,
    seed: int,
    faults: str,
    fault_ms: int,
    loss: float = 0.0,
    crash_at_ms: int | None = None,
) -> Outcome:
    """One run: the spec's own schedule for ``faults`` with exactly ``loss``; with
    ``crash_at_ms`` a single crash of member 2 at that time instead of drawn crashes."""
    spec: MembershipSpec = membership_spec(detector, "bench")
    kinds = frozenset(k for k in faults.split(",") if k)
    schedule = spec.draw_schedule(seed, nodes, fault_ms, kinds)
    schedule = replace(schedule, network=NetworkFaults(drop_p=loss))
    if crash_at_ms is not None:
        schedule = _single_crash(schedule, crash_at_ms)
    sim = Simulation(spec, SimConfig(seed=seed, nodes=nodes, schedule=schedule))
    started = time.process_time()
    result = sim.run()
    cpu_s = time.process_time() - started
    monitor = sim.monitor
    if not isinstance(monitor, MembershipMonitor):
        raise TypeError("membership runs have a MembershipMonitor")
    stats = result.stats
    outcome = Outcome(
        detector.name,
        nodes,
        seed,
        loss,
        result.ok,
        str(result.violation) if result.violation else None,
        stats.virtual_us / 1e6,
        cpu_s,
        messages=stats.deliveries + stats.dropped,
    )
    _collect(outcome, monitor, stats.virtual_us)
    return outcome


def _single_crash(schedule: Schedule, crash_at_ms: int) -> Schedule:
    end_us = schedule.fault_ms * 1000 + 1
    crash = FaultEvent("crash", crash_at_ms * 1000, end_us, node=2)
    others = tuple(e for e in schedule.events if e.kind != "crash")
    return replace(schedule, events=(crash, *others))


def _collect(outcome: Outcome, monitor: MembershipMonitor, virtual_us: int) -> None:
    crashed = set(monitor.crashes)
    observers = [n for n in monitor.node_ids if n not in crashed]
    for crash in monitor.crashes.values():
        times = [crash.declared_us.get(o) for o in observers]
        seen = [t for t in times if t is not None]
        outcome.undetected += len(times) - len(seen)
        outcome.detect_s += [(t - crash.at_us) / 1e6 for t in seen]
        if seen:
            outcome.first_s.append((min(seen) - crash.at_us) / 1e6)
        if seen and len(seen) == len(times):
            outcome.all_s.append((max(seen) - crash.at_us) / 1e6)
    for _, _, _, healthy in monitor.false_positives:
        if healthy:
            outcome.fp_healthy += 1
        else:
            outcome.fp_unhealthy += 1
    joiner = max(monitor.node_ids)
    alive = monitor.alive_seen.get(joiner, {})
    others = [n for n in monitor.node_ids if n != joiner and n not in crashed]
    if 1 in alive and all(n in alive for n in others):
        outcome.join_s = (max(alive[n] for n in others) - alive[1]) / 1e6
    healthy_members = len(monitor.node_ids) - len(monitor.unhealthy)
    outcome.healthy_member_h = healthy_members * virtual_us / 1e6 / 3600


# -- statistics -------------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (NaN for no values)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def _flat(outcomes: Iterable[Outcome], attr: str) -> list[float]:
    return [v for o in outcomes for v in getattr(o, attr)]


def fp_rate(outcomes: Sequence[Outcome]) -> float:
    """Healthy false-positive incidents per healthy member-hour."""
    hours = sum(o.healthy_member_h for o in outcomes)
    return sum(o.fp_healthy for o in outcomes) / hours if hours else float("nan")


def _check(outcomes: Sequence[Outcome]) -> None:
    """A measurement over runs that violated completeness would be meaningless."""
    for o in outcomes:
        if not o.ok and o.violation and not o.violation.startswith("accuracy"):
            raise SystemExit(f"{o.detector} n={o.nodes} seed {o.seed}: {o.violation}")


# -- the parts --------------------------------------------------------------------------


@dataclass
class Settings:
    """Sizes of the measurements (``--quick`` shrinks them)."""

    seeds: int = 10
    nodes: int = 32
    fp_seeds: int = 3
    fp_window_ms: int = 300_000
    sizes: tuple[int, ...] = (8, 32, 128, 512, 1000)
    size_seeds: int = 3
    trade_seeds: int = 2
    trade_window_ms: int = 300_000


QUICK = Settings(
    seeds=4,
    nodes=16,
    fp_seeds=1,
    fp_window_ms=120_000,
    sizes=(8, 32, 128),
    size_seeds=1,
    trade_seeds=1,
    trade_window_ms=120_000,
)


def detection(s: Settings) -> list[dict[str, Any]]:
    """Crash detection times without and with 10 % loss."""
    rows = []
    for loss in (0.0, 0.1):
        for name, det in detectors().items():
            runs = [run(det, s.nodes, seed, "crash", 10_000, loss) for seed in range(s.seeds)]
            _check(runs)
            detect, full = _flat(runs, "detect_s"), _flat(runs, "all_s")
            rows.append(
                {
                    "detector": name,
                    "loss": loss,
                    "crashes": sum(len(o.first_s) for o in runs),
                    "p50_s": percentile(detect, 50),
                    "p99_s": percentile(detect, 99),
                    "all_p50_s": percentile(full, 50),
                    "all_p99_s": percentile(full, 99),
                    "undetected": sum(o.undetected for o in runs),
                    "cpu_s": sum(o.cpu_s for o in runs),
                }
            )
            _progress("detection", rows[-1])
    return rows


def false_positives(s: Settings) -> list[dict[str, Any]]:
    """False-positive rates under loss and with slow members (no crashes)."""
    rows = []
    conditions = [("0 % loss", "", 0.0), ("5 % loss", "", 0.05), ("10 % loss", "", 0.1)]
    conditions += [("20 % loss", "", 0.2), ("slow members", "slow", 0.0)]
    for label, faults, loss in conditions:
        for name, det in detectors().items():
            runs = [
                run(det, s.nodes, seed, faults, s.fp_window_ms, loss) for seed in range(s.fp_seeds)
            ]
            _check(runs)
            virtual_s = sum(o.virtual_s for o in runs)
            rows.append(
                {
                    "detector": name,
                    "condition": label,
                    "fp_per_member_hour": fp_rate(runs),
                    "fp_healthy": sum(o.fp_healthy for o in runs),
                    "fp_slow_members": sum(o.fp_unhealthy for o in runs),
                    "member_hours": sum(o.healthy_member_h for o in runs),
                    "messages_per_member_s": sum(o.messages for o in runs) / (s.nodes * virtual_s),
                    "cpu_s": sum(o.cpu_s for o in runs),
                }
            )
            _progress("false positives", rows[-1])
    return rows


def dissemination(s: Settings) -> list[dict[str, Any]]:
    """How fast a join and a death spread, by group size (SWIM variants): the last member
    joins through member 1 at the start, member 2 crashes at 6 s."""
    rows = []
    for size in s.sizes:
        for name in ("swim", "swim-lifeguard"):
            det = replace(detectors()[name], join_last=True)
            seeds = range(s.size_seeds)
            runs = [run(det, size, seed, "", 10_000, 0.0, crash_at_ms=6_000) for seed in seeds]
            _check(runs)
            joins = [o.join_s for o in runs if o.join_s is not None]
            spread = [a - f for o in runs for f, a in zip(o.first_s, o.all_s, strict=True)]
            virtual_s = sum(o.virtual_s for o in runs)
            rows.append(
                {
                    "detector": name,
                    "nodes": size,
                    "runs": len(runs),
                    "join_s": statistics.fmean(joins) if joins else float("nan"),
                    "join_rounds": statistics.fmean(joins) / GOSSIP_ROUND_S
                    if joins
                    else float("nan"),
                    "first_dead_s": statistics.fmean(_flat(runs, "first_s")),
                    "death_spread_s": statistics.fmean(spread) if spread else float("nan"),
                    "messages_per_member_s": sum(o.messages for o in runs) / (size * virtual_s),
                    "cpu_s": sum(o.cpu_s for o in runs),
                }
            )
            _progress("dissemination", rows[-1])
    return rows


def scale(nodes: int = 1000, fault_ms: int = 60_000) -> list[dict[str, Any]]:
    """Simulator speed on a large group: CPU and wall time of one run per SWIM variant."""
    rows = []
    for name in ("swim", "swim-lifeguard"):
        spec = membership_spec(detectors()[name], "bench")
        config = SimConfig(seed=1, nodes=nodes, faults=frozenset({"crash"}), fault_ms=fault_ms)
        cpu_started, wall_started = time.process_time(), time.perf_counter()
        result = Simulation(spec, config).run()
        cpu_s = time.process_time() - cpu_started
        stats = result.stats
        rows.append(
            {
                "detector": name,
                "nodes": nodes,
                "ok": result.ok,
                "virtual_s": stats.virtual_us / 1e6,
                "events": stats.events,
                "ticks": stats.ticks,
                "deliveries": stats.deliveries,
                "cpu_s": cpu_s,
                "wall_s": time.perf_counter() - wall_started,
                "events_per_cpu_s": stats.events / cpu_s if cpu_s else float("nan"),
            }
        )
        _progress("scale", rows[-1])
    return rows


TUNING: dict[str, tuple[str, list[float]]] = {
    "fixed": ("timeout s", [1.5, 2.0, 3.0, 5.0, 8.0]),
    "phi": ("threshold", [1.0, 2.0, 4.0, 8.0, 12.0]),
    "swim": ("suspicion mult", [1, 2, 3, 4, 6]),
    "swim-lifeguard": ("suspicion mult", [1, 2, 3, 4, 6]),
}
"""Each detector's tuning parameter and the values swept for the trade-off plot."""


def tuned(name: str, value: float) -> Detector:
    """``name`` with its tuning parameter set to ``value``."""
    if name == "fixed":
        return fixed_detector(timeout_ms=int(value * 1000))
    if name == "phi":
        return phi_detector(threshold=value)
    return swim_detector(lifeguard=name == "swim-lifeguard", suspicion_mult=int(value))


def tradeoff(s: Settings) -> list[dict[str, Any]]:
    """Detection time and false-positive rate at 10 % loss, per tuning value."""
    rows = []
    for name, (param, values) in TUNING.items():
        for value in values:
            det = tuned(name, value)
            runs = [
                run(det, s.nodes, seed, "crash", s.trade_window_ms, 0.1)
                for seed in range(s.trade_seeds)
            ]
            _check(runs)
            detect = _flat(runs, "detect_s")
            rows.append(
                {
                    "detector": name,
                    "param": param,
                    "value": value,
                    "p50_s": percentile(detect, 50),
                    "p99_s": percentile(detect, 99),
                    "fp_per_member_hour": fp_rate(runs),
                    "fp_healthy": sum(o.fp_healthy for o in runs),
                    "cpu_s": sum(o.cpu_s for o in runs),
                }
            )
            _progress("trade-off", rows[-1])
    return rows


def plot(rows: list[dict[str, Any]], path: Path, nodes: int) -> None:
    """Detection time p50 (x) against false positives per member-hour (y)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5))
    floor = 0.01
    for name, (param, _) in TUNING.items():
        mine = [r for r in rows if r["detector"] == name]
        xs = [r["p50_s"] for r in mine]
        ys = [max(r["fp_per_member_hour"], floor) for r in mine]
        ax.plot(xs, ys, marker="o", label=f"{name} ({param})")
        for r, x, y in zip(mine, xs, ys, strict=True):
            ax.annotate(f"{r['value']:g}", (x, y), textcoords="offset points", xytext=(4, 4))
    ax.set_yscale("log")
    ax.set_xlabel("detection time of a crash, p50 over observers (s)")
    ax.set_ylabel(f"false positives per healthy member-hour (none plotted at {floor})")
    ax.set_title(f"Detection time vs false positives, {nodes} members, 10 % message loss")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- output -----------------------------------------------------------------------------


def _progress(part: str, row: dict[str, Any]) -> None:
    shown = ", ".join(f"{k}={_fmt(v)}" for k, v in row.items())
    print(f"  [{part}] {shown}", file=sys.stderr, flush=True)


def _fmt(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _table(title: str, rows: list[dict[str, Any]], columns: list[str]) -> str:
    lines = [f"### {title}", "", "| " + " | ".join(columns) + " |"]
    lines.append("|" + "---|" * len(columns))
    for row in rows:
        lines.append("| " + " | ".join(_fmt(row[c]) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def _load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer seeds, shorter runs")
    parser.add_argument("--out", type=Path, default=Path("docs"), help="folder for the PNG")
    parser.add_argument("--json", type=Path, default=None, help="write all rows as JSON")
    parser.add_argument(
        "--parts",
        default="detection,fp,dissemination,tradeoff",
        help="comma-separated parts to run (also: scale)",
    )
    args = parser.parse_args()
    s = QUICK if args.quick else Settings()
    parts = set(args.parts.split(","))
    started = time.perf_counter()
    print(f"# bench_membership {date.today().isoformat()}, cpus {os.cpu_count()}, load {_load()}")
    results: dict[str, Any] = {"settings": asdict(s), "date": date.today().isoformat()}
    if "detection" in parts:
        results["detection"] = rows = detection(s)
        cols = ["detector", "loss", "crashes", "p50_s", "p99_s", "all_p50_s", "all_p99_s"]
        print(_table(f"Detection time of a crash ({s.nodes} members)", rows, cols))
    if "fp" in parts:
        results["false_positives"] = rows = false_positives(s)
        cols = ["detector", "condition", "fp_per_member_hour", "fp_healthy", "fp_slow_members"]
        cols += ["member_hours", "messages_per_member_s"]
        print(_table(f"False positives ({s.nodes} members, no crashes)", rows, cols))
    if "dissemination" in parts:
        results["dissemination"] = rows = dissemination(s)
        cols = ["detector", "nodes", "runs", "join_s", "join_rounds", "first_dead_s"]
        cols += ["death_spread_s", "messages_per_member_s"]
        print(_table("Dissemination of a join and of a death", rows, cols))
    if "tradeoff" in parts:
        results["tradeoff"] = rows = tradeoff(s)
        cols = ["detector", "param", "value", "p50_s", "p99_s", "fp_per_member_hour"]
        print(_table(f"Trade-off at 10 % loss ({s.nodes} members)", rows, cols))
        png = args.out / "fd-tradeoff.png"
        plot(rows, png, s.nodes)
        print(f"plot: {png}")
    if "scale" in parts:
        results["scale"] = rows = scale()
        cols = ["detector", "nodes", "virtual_s", "events", "ticks", "deliveries", "cpu_s"]
        print(_table("Simulator speed", rows, [*cols, "wall_s", "events_per_cpu_s"]))
    results["wall_s"] = time.perf_counter() - started
    results["load_end"] = _load()
    print(f"wall {results['wall_s']:.0f} s, load at end {results['load_end']}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

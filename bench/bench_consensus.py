"""Consensus side by side: Raft, Multi-Paxos and Viewstamped Replication on the same footing.

    python bench/bench_consensus.py [--protocols raft,paxos,vr] [--seeds 10]
        [--fault-seeds 60] [--clients 1,16,64] [--seconds 5] [--runs 3] [--no-real]
        [--json bench/results/consensus.json] [--write-doc docs/CONSENSUS.md]

Every protocol serves the same KV state machine to the same simulated client (Raft's
``KvClient``, no membership changes), so the figures differ only by protocol:

- **Simulator, no faults** (5 nodes, 4 clients, ``--seeds`` seeds): peer messages and
  bytes (msgpack, as on the wire) per committed write, and commit latency in ticks
  (invoke to ok of each write, p50/p99).
- **Leader crash** (same seeds): the leader at 2 s of virtual time crashes (restarted 3 s
  later); the time from the crash to the first write acknowledged after it, in ms of
  virtual time (p50/max over seeds).
- **Seeds per minute** with every fault on (``--fault-seeds`` seeds, wall clock).
- **Lines of code** of the pure core (the package without its simulator spec, simulated
  client and tests; non-blank, non-comment lines).
- **Real processes** (unless ``--no-real``): ``pnyx cluster up --protocol P --nodes 3`` with
  fsync, closed-loop ``put`` at each ``--clients`` concurrency for ``--seconds``: ops/s and
  p50/p99 latency (``bench/bench_kv_latency.py`` does the measuring).

``--write-doc`` replaces the generated part of the doc (between its marker comments) with
the tables and writes the plots beside it (``docs/consensus-*.png``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_kv_latency import percentile, run_cluster_clients

from pnyx.catalog import get_protocol
from pnyx.core import DurableState, Node, Rng, encode
from pnyx.protocols.raft.client import KvClient
from pnyx.sim.runner import SimConfig, SimResult, run_sim
from pnyx.sim.schedule import FaultEvent, Schedule, parse_faults
from pnyx.sim.spec import ProtocolDef

ROOT = Path(__file__).resolve().parent.parent
NODES = 5
CLIENTS = 4
CRASH_AT_US = 2_000_000
CRASH_FOR_US = 3_000_000
WRITES = frozenset({"put", "append", "cas"})
BEGIN_MARK = "<!-- bench_consensus: begin -->"
END_MARK = "<!-- bench_consensus: end -->"
CORE_EXCLUDED = ("spec.py", "spec_", "client.py", "sim_client.py")
"""Files of a protocol package that are not its pure core (simulator glue, test clients)."""


@dataclasses.dataclass
class _Wire:
    """Peer messages and their encoded bytes, counted as nodes emit them."""

    messages: int = 0
    bytes: int = 0


def _counting(make_node: Callable[..., Node], wire: _Wire) -> Callable[..., Node]:
    """``make_node`` whose nodes count every message they send (to peers: clients are not
    nodes here) and its msgpack size."""

    def make(node_id: int, peers: tuple[int, ...], rng: Rng, durable: DurableState) -> Node:
        node = make_node(node_id, peers, rng, durable)
        ready = node.ready

        def counted() -> Any:
            batch = ready()
            for send in batch.send:
                wire.messages += 1
                wire.bytes += len(encode(send.msg))
            return batch

        node.ready = counted  # type: ignore[method-assign]
        return node

    return make


def _plain_client(client_id: int, node_ids: tuple[int, ...], rng: Rng) -> Node:
    return KvClient(client_id, node_ids, rng)


def _writes(result: SimResult) -> list[tuple[int, int]]:
    """(invoke ns, ok ns) of every acknowledged write of the run's history."""
    started: dict[int, int] = {}
    done: list[tuple[int, int]] = []
    for event in result.history:
        if event.f not in WRITES:
            continue
        if event.type == "invoke":
            started[event.process] = event.time
        elif event.type == "ok" and event.process in started:
            done.append((started.pop(event.process), event.time))
    return done


def sim_figures(definition: ProtocolDef, seeds: int) -> dict[str, Any]:
    """Messages, bytes and latency per committed write without faults, over ``seeds``."""
    wire = _Wire()
    counted = dataclasses.replace(
        definition, make_node=_counting(definition.make_node, wire), make_client=_plain_client
    )
    latencies_ticks: list[float] = []
    writes = 0
    violations = 0
    for seed in range(seeds):
        result = run_sim(counted, SimConfig(seed=seed, nodes=NODES, clients=CLIENTS))
        violations += result.violation is not None
        tick_ns = 1000 * (definition.sim_tick_us or SimConfig(seed=0).tick_us)
        spans = _writes(result)
        writes += len(spans)
        latencies_ticks.extend((ok - invoke) / tick_ns for invoke, ok in spans)
    latencies_ticks.sort()
    return {
        "writes": writes,
        "violations": violations,
        "messages_per_write": wire.messages / max(1, writes),
        "bytes_per_write": wire.bytes / max(1, writes),
        "latency_p50_ticks": percentile(latencies_ticks, 0.5),
        "latency_p99_ticks": percentile(latencies_ticks, 0.99),
    }


def crash_figures(definition: ProtocolDef, seeds: int) -> dict[str, Any]:
    """Virtual ms from a leader crash to the next acknowledged write, over ``seeds``."""
    plain = dataclasses.replace(definition, make_client=_plain_client)
    crash = FaultEvent("crash", CRASH_AT_US, CRASH_AT_US + CRASH_FOR_US, node=1, target="leader")
    recoveries_ms: list[float] = []
    for seed in range(seeds):
        schedule = Schedule(NODES, CLIENTS, 8_000, frozenset({"crash"}), events=(crash,))
        result = run_sim(plain, SimConfig(seed=seed, schedule=schedule))
        crash_ns = CRASH_AT_US * 1000
        after = [ok for invoke, ok in _writes(result) if invoke >= crash_ns]
        if after:
            recoveries_ms.append((min(after) - crash_ns) / 1e6)
    recoveries_ms.sort()
    return {
        "crash_seeds": seeds,
        "recovered": len(recoveries_ms),
        "crash_to_commit_p50_ms": percentile(recoveries_ms, 0.5),
        "crash_to_commit_max_ms": recoveries_ms[-1] if recoveries_ms else None,
    }


def seeds_per_minute(definition: ProtocolDef, seeds: int) -> dict[str, Any]:
    """Wall-clock rate of seeds with every fault on (and how many of them failed)."""
    faults = parse_faults("all")
    started = time.perf_counter()
    failed = [s for s in range(seeds) if not run_sim(definition, SimConfig(s, faults=faults)).ok]
    elapsed = time.perf_counter() - started
    return {"seeds_per_min": 60 * seeds / elapsed, "fault_seeds": seeds, "failed_seeds": failed}


def core_lines(name: str) -> int:
    """Non-blank, non-comment lines of ``src/pnyx/protocols/<package>/`` minus simulator glue
    (``vr-durable`` counts the ``vr`` package)."""
    package = ROOT / "src" / "pnyx" / "protocols" / name.split("-")[0]
    total = 0
    for path in sorted(package.rglob("*.py")):
        if path.name.startswith(CORE_EXCLUDED):
            continue
        for line in path.read_text().splitlines():
            stripped = line.strip()
            total += bool(stripped) and not stripped.startswith("#")
    return total


def real_figures(name: str, clients: list[int], seconds: float) -> list[dict[str, Any]]:
    """Closed-loop puts on a 3-process cluster of ``name`` with fsync, per concurrency."""
    return run_cluster_clients(name, clients, seconds)


def _table(rows: dict[str, dict[str, Any]], real: bool) -> str:
    head = (
        "| protocol | msgs / write | bytes / write | commit p50 / p99 (ticks) | leader crash → "
        "next commit p50 / max (ms) | sim seeds / min (all faults) | core LOC |\n"
        "|---|---:|---:|---:|---:|---:|---:|\n"
    )
    lines = []
    for name, row in rows.items():
        worst = row["crash_to_commit_max_ms"]
        lines.append(
            f"| {name} | {row['messages_per_write']:.1f} | {row['bytes_per_write']:,.0f} | "
            f"{row['latency_p50_ticks']:.1f} / {row['latency_p99_ticks']:.1f} | "
            f"{row['crash_to_commit_p50_ms']:.0f} / {'—' if worst is None else f'{worst:.0f}'}"
            f" | {row['seeds_per_min']:,.0f} | {row['core_loc']:,} |"
        )
    text = head + "\n".join(lines) + "\n"
    if real:
        text += "\n| protocol | clients | ops/s | p50 ms | p99 ms | failed |\n"
        text += "|---|---:|---:|---:|---:|---:|\n"
        for name, row in rows.items():
            for r in row.get("real", []):
                text += (
                    f"| {name} | {r['clients']} | {r['ops_per_s']:,.0f} | {r['p50_ms']:.1f} | "
                    f"{r['p99_ms']:.1f} | {r['failed']} |\n"
                )
    return text


def _plots(rows: dict[str, dict[str, Any]], doc_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(rows)
    written = []
    panels = [
        ("messages_per_write", "peer messages per committed write"),
        ("latency_p50_ticks", "commit latency p50 (ticks)"),
        ("crash_to_commit_p50_ms", "leader crash → next commit p50 (ms)"),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2))
    for ax, (key, title) in zip(axes, panels, strict=True):
        ax.bar(names, [rows[n][key] for n in names], color="#4c72b0")
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path = doc_dir / "consensus-sim.png"
    fig.savefig(path, dpi=110)
    written.append(path.name)
    if any(rows[n].get("real") for n in names):
        fig, ax = plt.subplots(figsize=(5, 3.2))
        for n in names:
            real = rows[n].get("real", [])
            ax.plot([r["clients"] for r in real], [r["ops_per_s"] for r in real], "o-", label=n)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel("puts/s (3 processes, fsync)")
        ax.legend()
        fig.tight_layout()
        path = doc_dir / "consensus-real.png"
        fig.savefig(path, dpi=110)
        written.append(path.name)
    return written


def write_doc(doc: Path, rows: dict[str, dict[str, Any]], real: bool, command: str) -> None:
    """Replace the generated part of ``doc`` (between the markers) with the tables."""
    text = doc.read_text() if doc.exists() else f"# Consensus\n\n{BEGIN_MARK}\n{END_MARK}\n"
    if BEGIN_MARK not in text or END_MARK not in text:
        raise SystemExit(f"{doc}: no {BEGIN_MARK} ... {END_MARK} section to replace")
    plots = _plots(rows, doc.parent)
    load = os.getloadavg()
    body = (
        f"Generated by `{command}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
        f"wall-clock figures (sim seeds / min, real processes) are the median of "
        f"{next(iter(rows.values())).get('runs', 1)} runs, protocols interleaved; "
        f"load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} "
        f"on {os.cpu_count()} cores.\n\n"
        + _table(rows, real)
        + "\n"
        + "".join(f"![{p}]({p})\n" for p in plots)
    )
    before, rest = text.split(BEGIN_MARK, 1)
    after = rest.split(END_MARK, 1)[1]
    doc.write_text(f"{before}{BEGIN_MARK}\n{body}{END_MARK}{after}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--protocols", default="raft,paxos,vr,vr-durable")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--fault-seeds", type=int, default=60)
    parser.add_argument("--clients", default="1,16,64")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-real", action="store_true")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "consensus.json")
    parser.add_argument("--write-doc", type=Path, default=None)
    args = parser.parse_args()
    if args.runs < 1:
        parser.error(f"--runs must be at least 1, got {args.runs}")
    names = args.protocols.split(",")
    rows: dict[str, dict[str, Any]] = {}
    for name in names:
        definition = get_protocol(name)
        row = {**sim_figures(definition, args.seeds), **crash_figures(definition, args.seeds)}
        row["core_loc"] = core_lines(name)
        rows[name] = row
    clients = [] if args.no_real else [int(c) for c in args.clients.split(",")]
    timed = _timed_runs(names, args.runs, args.fault_seeds, clients, args.seconds)
    for name in names:
        rows[name].update(timed[name])
        print(f"{name}: {json.dumps(rows[name])}", flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(rows, indent=1) + "\n")
    print(_table(rows, not args.no_real))
    if args.write_doc is not None:
        write_doc(args.write_doc, rows, not args.no_real, " ".join(["python", *sys.argv]))


def _timed_runs(
    names: list[str], runs: int, fault_seeds: int, clients: list[int], seconds: float
) -> dict[str, dict[str, Any]]:
    """The wall-clock figures (sim seeds/min, real-process puts), ``runs`` times with the
    protocols interleaved in each run, as the median of the runs per figure."""
    rates: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    reals: dict[str, list[list[dict[str, Any]]]] = {name: [] for name in names}
    for run in range(runs):
        for name in names:
            rates[name].append(seeds_per_minute(get_protocol(name), fault_seeds))
            if clients:
                reals[name].append(real_figures(name, clients, seconds))
            print(f"run {run + 1}/{runs} {name} done", flush=True)
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        samples = rates[name]
        out[name] = {
            "runs": runs,
            "seeds_per_min": statistics.median(r["seeds_per_min"] for r in samples),
            "seeds_per_min_runs": [round(r["seeds_per_min"]) for r in samples],
            "fault_seeds": fault_seeds,
            "failed_seeds": sorted({s for r in samples for s in r["failed_seeds"]}),
        }
        if clients:
            out[name]["real"] = _median_real(reals[name])
    return out


def _median_real(runs: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per concurrency, the median of each figure over the runs (failed: the sum)."""
    merged = []
    for cells in zip(*runs, strict=True):
        merged.append(
            {
                "clients": cells[0]["clients"],
                "ops_per_s": statistics.median(c["ops_per_s"] for c in cells),
                "ops_per_s_runs": [round(c["ops_per_s"]) for c in cells],
                "p50_ms": statistics.median(c["p50_ms"] for c in cells),
                "p99_ms": statistics.median(c["p99_ms"] for c in cells),
                "failed": sum(c["failed"] for c in cells),
            }
        )
    return merged


if __name__ == "__main__":
    main()

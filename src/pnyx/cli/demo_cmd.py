"""``pnyx demo`` (what ``make run`` shows): a protocol under faults, a caught bug, its replay."""

from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from pnyx.catalog import get_protocol
from pnyx.cli.sim_cmd import replay_command
from pnyx.sim.runner import SimConfig, SimResult, run_sim
from pnyx.sim.schedule import parse_faults
from pnyx.sim.shrink import shrink

TRACE_TAIL_LINES = 25
"""How many trace lines before the violation the report shows."""


@click.command()
@click.option(
    "--seeds",
    type=click.IntRange(1, 10_000),
    default=100,
    show_default=True,
    help="Seeds to run the correct protocol for.",
)
@click.option("--nodes", type=click.IntRange(2, 16), default=5, show_default=True)
@click.option(
    "--report",
    type=click.Path(path_type=Path),
    default=None,
    help="Also write the report to this file (plain text).",
)
@click.option("--raft-seeds", type=click.IntRange(0, 10_000), default=50, show_default=True)
@click.option(
    "--kills",
    type=click.IntRange(0, 1_000),
    default=8,
    show_default=True,
    help="kill -9 faults injected into the real cluster.",
)
def demo(seeds: int, nodes: int, report: Path | None, raft_seeds: int, kills: int) -> None:
    """Simulate protocols under every fault, catch and shrink a bug, attack a real cluster."""
    console = Console(record=True, highlight=False, soft_wrap=True)
    faults = parse_faults("all")
    console.rule("[bold]pnyx demo: deterministic simulation under faults")
    ok = _run_correct(console, "broadcast", seeds, nodes, faults)
    caught = _catch_broken(console, nodes, faults)
    raft_ok = raft_seeds == 0 or _run_correct(console, "raft", raft_seeds, nodes, faults)
    console.rule("[bold]a real 3-process Raft cluster under kill -9")
    real_ok = _attack_real_cluster(console, kills)
    if report is not None:
        report.write_text(console.export_text(), encoding="utf-8")
        click.echo(f"report written to {report}")
    sys.exit(0 if ok and caught and raft_ok and real_ok else 1)


def _run_correct(
    console: Console, name: str, seeds: int, nodes: int, faults: frozenset[str]
) -> bool:
    spec = get_protocol(name)
    console.print(f"\n[bold]{spec.name}[/bold] — {spec.summary}")
    console.print(f"   {nodes} nodes, faults: {', '.join(sorted(faults))}; seeds 1..{seeds}")
    results = [
        run_sim(spec, SimConfig(seed=s, nodes=nodes, faults=faults)) for s in range(1, seeds + 1)
    ]
    failed = [r for r in results if not r.ok]
    deliveries = sum(r.stats.deliveries for r in results)
    wall_s = sum(r.stats.wall_s for r in results)
    table = Table()
    for column in ("seeds", "passed", "crashes", "dropped", "deliveries", "deliveries/s"):
        table.add_column(column, justify="right")
    table.add_row(
        str(seeds),
        str(seeds - len(failed)),
        str(sum(r.stats.crashes for r in results)),
        str(sum(r.stats.dropped for r in results)),
        str(deliveries),
        f"{deliveries / wall_s:,.0f}" if wall_s else "-",
    )
    console.print(table)
    for result in failed:
        console.print(f"[red]seed {result.seed} failed: {result.violation}[/red]")
    return not failed


def _catch_broken(console: Console, nodes: int, faults: frozenset[str]) -> bool:
    spec = get_protocol("broadcast-broken")
    console.print(f"\n[bold]{spec.name}[/bold] — {spec.summary}")
    found: tuple[SimConfig, SimResult] | None = None
    for seed in range(1, 51):
        config = SimConfig(seed=seed, nodes=nodes, faults=faults)
        result = run_sim(spec, config)
        if not result.ok:
            found = (config, result)
            break
    if found is None:
        console.print("[red]the broken variant survived 50 seeds: the simulator missed it[/red]")
        return False
    config, result = found
    console.print(f"   caught at seed {config.seed}: [red]{result.violation}[/red]")
    console.print(f"   reproduce: {replay_command(spec.name, config)}")
    outcome = shrink(spec, config, result)
    path = Path(f"pnyx-{spec.name}-seed{config.seed}.schedule.json")
    outcome.schedule.save(path)
    console.print(
        f"\n[bold]shrunk[/bold] in {outcome.runs} runs: "
        f"{result.schedule.fault_count()} faults → {outcome.schedule.fault_count()}"
    )
    for line in outcome.schedule.describe():
        console.print(f"   {line}")
    replay = run_sim(spec, replace(config, schedule=outcome.schedule, trace=True))
    console.print(
        f"\n[bold]replay of the minimal schedule[/bold] "
        f"({replay_command(spec.name, config, path)} --replay), last events:"
    )
    interesting = [r for r in replay.trace if r[1] != "tick"]
    for t_us, kind, *fields in interesting[-TRACE_TAIL_LINES:]:
        shown = "  ".join(str(f) for f in fields)
        console.print(f"   {t_us / 1000:9.3f} ms  {kind:<10} {shown}")
    return replay.violation is not None


def _attack_real_cluster(console: Console, kills: int) -> bool:
    """Start 3 `pnyx serve` processes, run a KV workload while killing them, check it."""
    from pnyx.check import History, KVModel, check_linearizable
    from pnyx.cli.cluster_cmd import (
        KillRestartNemesis,
        cluster_command,
        local_cluster_up,
        members_of,
    )
    from pnyx.services.workload import run_kv_workload

    with tempfile.TemporaryDirectory(prefix="pnyx-demo-") as tmp:
        data_dir = Path(tmp) / "cluster"
        try:
            local_cluster_up(data_dir)
        except RuntimeError as exc:
            console.print(f"[red]{exc}[/red]")
            return False
        try:
            nemesis = KillRestartNemesis(data_dir)
            result = run_kv_workload(
                members_of(data_dir),
                workers=3,
                nemesis=nemesis,
                nemesis_interval_s=0.8,
                nemesis_rounds=kills,
            )
        finally:
            cluster_command("down", "--data-dir", str(data_dir))
    for fault in result.faults:
        console.print(f"   nemesis: {fault}")
    ops = sum(1 for e in result.history if e.type == "invoke")
    started = time.perf_counter()
    verdict = check_linearizable(History.from_events(result.history), KVModel(), timeout_s=120)
    check_s = time.perf_counter() - started
    lost = result.lost_writes()
    console.print(
        f"   {ops} operations in {result.duration_s:.1f} s, {len(result.acked)} acknowledged "
        f"appends, {len(lost)} lost; history {verdict.verdict} (checked in {check_s:.2f} s)"
    )
    if verdict.verdict == "not-linearizable":
        console.print(verdict.explain())
    return not lost and verdict.verdict == "linearizable"

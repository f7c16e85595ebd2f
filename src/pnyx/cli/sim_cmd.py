"""``pnyx sim``: run a protocol in the deterministic simulator, replay and shrink failures."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import click
import msgspec
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from pnyx.catalog import get_protocol, protocol_names
from pnyx.cli.errors import fail
from pnyx.protocols.paxos.spec import QUORUM_PROTOCOLS, takes_quorums, with_quorums
from pnyx.sim.parallel import MAX_JOBS, PoolError, SeedError, run_seeds, validate_jobs
from pnyx.sim.runner import SimConfig, SimResult, run_sim
from pnyx.sim.schedule import FaultSpecError, Schedule, format_faults, parse_faults
from pnyx.sim.shrink import shrink
from pnyx.sim.spec import OUTSIDE_FAULT_MODEL, ProtocolDef

DEFAULT_FAULT_MS = SimConfig(seed=0).fault_ms
DEFAULT_HEAL_MS = SimConfig(seed=0).heal_ms


def parse_seed_range(text: str) -> range:
    """``A..B`` (inclusive) → range; raises ValueError with the offending text."""
    parts = text.split("..")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise ValueError(
            f"bad seed range {text!r}; expected A..B with integers A <= B, e.g. 1..200"
        )
    low, high = int(parts[0]), int(parts[1])
    if low > high:
        raise ValueError(f"bad seed range {text!r}: start {low} is after end {high}")
    return range(low, high + 1)


def replay_command(
    name: str,
    config: SimConfig,
    schedule_file: Path | None = None,
    options: tuple[str, ...] = (),
) -> str:
    """The one command that reproduces a run (``options``: further arguments it was given,
    e.g. ``--phase1-quorum 4``)."""
    parts = ["pnyx", "sim", name, "--seed", str(config.seed), *options]
    if schedule_file is not None:
        parts += ["--schedule", str(schedule_file)]
    else:
        parts += ["--faults", format_faults(config.faults)]
        if config.nodes is not None:
            parts += ["--nodes", str(config.nodes)]
        if config.clients is not None:
            parts += ["--clients", str(config.clients)]
        if config.fault_ms != DEFAULT_FAULT_MS:
            parts += ["--fault-ms", str(config.fault_ms)]
    if config.swarm:
        parts.append("--swarm")
    if config.heal_ms != DEFAULT_HEAL_MS:
        parts += ["--heal-ms", str(config.heal_ms)]
    return " ".join(parts)


@click.command()
@click.argument("protocol")
@click.option("--seed", type=int, default=None, help="Run one seed.")
@click.option("--seeds", "seed_range", default=None, help="Run seeds A..B (inclusive).")
@click.option("--nodes", type=click.IntRange(1, 10_000), default=None, help="Number of nodes.")
@click.option("--clients", type=click.IntRange(0, 64), default=None, help="Number of clients.")
@click.option(
    "--faults",
    "faults_text",
    default="all",
    show_default=True,
    help="Comma-separated fault kinds, or all / none; 'all' leaves out the lying disk kinds "
    "(lost-write, lying-fsync): name them, e.g. all,lying-fsync.",
)
@click.option(
    "--fault-ms",
    type=click.IntRange(1),
    default=DEFAULT_FAULT_MS,
    show_default=True,
    help="Virtual length of the fault phase.",
)
@click.option(
    "--heal-ms",
    type=click.IntRange(1),
    default=DEFAULT_HEAL_MS,
    show_default=True,
    help="Virtual time allowed for liveness after healing.",
)
@click.option(
    "--schedule",
    "schedule_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Replay an explicit fault schedule file (as printed after shrinking).",
)
@click.option("--replay", is_flag=True, help="Print the full event trace of the run.")
@click.option("--json", "as_json", is_flag=True, help="JSON lines instead of rich output.")
@click.option("--trace-hash", is_flag=True, help="Print the run's trace digest as the last line.")
@click.option("--no-shrink", is_flag=True, help="Do not shrink a failing schedule.")
@click.option(
    "--jobs",
    type=int,
    default=1,
    show_default=True,
    help=f"Run the seeds of --seeds in this many worker processes (1..{MAX_JOBS}); "
    "per-seed results, output order and exit status are those of a serial run.",
)
@click.option(
    "--swarm",
    is_flag=True,
    help="Swarm testing: each seed draws its fault mix (within --faults), intensity, cluster "
    "size, protocol settings and nemesis rules.",
)
@click.option(
    "--max-unknown",
    type=click.IntRange(0),
    default=0,
    show_default=True,
    help="Fail a seed range when more seeds than this end with an undecided check "
    "(e.g. the linearizability checker timed out).",
)
@click.option(
    "--phase1-quorum",
    type=int,
    default=None,
    help=f"Flexible Paxos ({', '.join(QUORUM_PROTOCOLS)}): promises a leader needs in "
    "phase 1 (default: majority, or N - Q2 + 1 with --phase2-quorum); Q1 + Q2 must exceed N.",
)
@click.option(
    "--phase2-quorum",
    type=int,
    default=None,
    help="Flexible Paxos: accepts that choose a value (default: majority, or N - Q1 + 1 "
    "with --phase1-quorum).",
)
def sim(
    protocol: str,
    seed: int | None,
    seed_range: str | None,
    nodes: int | None,
    clients: int | None,
    faults_text: str,
    fault_ms: int,
    heal_ms: int,
    schedule_path: Path | None,
    replay: bool,
    as_json: bool,
    trace_hash: bool,
    no_shrink: bool,
    jobs: int,
    swarm: bool,
    max_unknown: int,
    phase1_quorum: int | None,
    phase2_quorum: int | None,
) -> None:
    """Simulate PROTOCOL deterministically under faults (one seed or a range of seeds)."""
    spec = _resolve_spec(protocol)
    _check_jobs(jobs, seed_range)
    faults = _resolve_faults(faults_text)
    schedule = _load_schedule(schedule_path)
    quorums = (phase1_quorum, phase2_quorum)
    spec, replay_args = _with_quorums(spec, quorums, nodes, schedule, swarm, jobs)
    base = SimConfig(
        seed=0,
        nodes=nodes,
        clients=clients,
        faults=faults,
        fault_ms=fault_ms,
        heal_ms=heal_ms,
        schedule=schedule,
        swarm=swarm,
    )
    if seed_range is not None:
        if seed is not None or replay:
            fail("--seeds cannot be combined with --seed or --replay; pick one seed to replay")
        try:
            seeds = parse_seed_range(seed_range)
        except ValueError as exc:
            fail(str(exc))
        code = _run_many(
            spec,
            replace(base, hash_trace=trace_hash),
            seeds,
            as_json,
            no_shrink,
            schedule_path,
            max_unknown,
            jobs=jobs,
            replay_args=replay_args,
        )
        sys.exit(code)
    config = replace(
        base, seed=seed if seed is not None else 1, trace=replay, hash_trace=trace_hash or replay
    )
    sys.exit(
        _run_one(
            spec, config, as_json, trace_hash, no_shrink, schedule_path, replay_args=replay_args
        )
    )


def _resolve_spec(name: str) -> ProtocolDef:
    try:
        return get_protocol(name)
    except KeyError as exc:
        if "+" in name:
            fail(str(exc.args[0]))
        fail(f"unknown protocol {name!r}; valid: {', '.join(protocol_names())}")


def _with_quorums(
    spec: ProtocolDef,
    quorums: tuple[int | None, int | None],
    nodes: int | None,
    schedule: Schedule | None,
    swarm: bool,
    jobs: int,
) -> tuple[ProtocolDef, tuple[str, ...]]:
    """``--phase1-quorum`` / ``--phase2-quorum``: the spec with those Flexible Paxos quorum
    sizes and the arguments a replay command repeats (usage errors for an invalid pair, a
    protocol without quorums, or options that would not keep them)."""
    phase1, phase2 = quorums
    if phase1 is None and phase2 is None:
        return spec, ()
    given = [f"--phase{i}-quorum {q}" for i, q in enumerate(quorums, 1) if q is not None]
    shown = " ".join(given)
    if not takes_quorums(spec.name):
        fail(f"{shown}: protocol {spec.name!r} has no Flexible Paxos quorums; only for "
             f"{', '.join(QUORUM_PROTOCOLS)} (and their +MUTANT variants)")  # fmt: skip
    if swarm:
        fail(f"{shown} cannot be combined with --swarm (a swarm seed draws its cluster size "
             "and quorums)")  # fmt: skip
    if jobs > 1:
        fail(f"{shown} cannot be combined with --jobs {jobs} (workers rebuild the protocol "
             "by name); run the seeds in one process")  # fmt: skip
    if schedule is not None:
        count = schedule.nodes
    else:
        count = nodes if nodes is not None else spec.default_nodes
    try:
        configured = with_quorums(spec, count, phase1, phase2)
    except ValueError as exc:
        fail(f"{shown}: {exc}")
    return configured, tuple(" ".join(given).split())


def _check_jobs(jobs: int, seed_range: str | None) -> None:
    try:
        validate_jobs(jobs)
    except ValueError as exc:
        fail(str(exc))
    if jobs > 1 and seed_range is None:
        fail("--jobs runs the seeds of --seeds in parallel; give --seeds A..B (or drop --jobs)")


def _seed_results(
    spec: ProtocolDef, base: SimConfig, seeds: range, jobs: int
) -> Iterator[SimResult]:
    """Each seed's result in seed order: in this process, or from ``jobs`` workers."""
    if jobs == 1:
        for seed in seeds:
            yield run_sim(spec, replace(base, seed=seed))
        return
    try:
        yield from run_seeds(spec.name, base, seeds, jobs)
    except SeedError as exc:
        click.echo(exc.worker_traceback, err=True, nl=False)
        fail(str(exc), status=1)
    except PoolError as exc:
        fail(str(exc), status=1)


def _resolve_faults(text: str) -> frozenset[str]:
    try:
        return parse_faults(text)
    except FaultSpecError as exc:
        fail(str(exc))


def _load_schedule(path: Path | None) -> Schedule | None:
    if path is None:
        return None
    try:
        return Schedule.load(path)
    except ValueError as exc:
        fail(str(exc))


def _run_one(
    spec: ProtocolDef,
    config: SimConfig,
    as_json: bool,
    trace_hash: bool,
    no_shrink: bool,
    schedule_path: Path | None,
    *,
    replay_args: tuple[str, ...] = (),
) -> int:
    console = Console(highlight=False, soft_wrap=True)
    result = run_sim(spec, config)
    if config.trace:
        _print_trace(console, result, as_json)
    if as_json:
        summary = _summary(spec, config, result, replay_args=replay_args)
        click.echo(msgspec.json.encode(summary).decode())
    else:
        _print_result(console, spec, config, result, schedule_path, replay_args=replay_args)
    if not result.ok and not no_shrink and schedule_path is None:
        _shrink_and_report(console, spec, config, result, as_json, replay_args=replay_args)
    if trace_hash:
        click.echo(result.trace_hash)
    return 0 if result.ok else 1


def _summary(
    spec: ProtocolDef, config: SimConfig, result: SimResult, *, replay_args: tuple[str, ...] = ()
) -> dict[str, Any]:
    stats = result.stats
    return {
        "protocol": spec.name,
        "seed": result.seed,
        "ok": result.ok,
        "violation": str(result.violation) if result.violation else None,
        "deliveries": stats.deliveries,
        "events": stats.events,
        "crashes": stats.crashes,
        "virtual_ms": stats.virtual_us // 1000,
        "wall_s": round(stats.wall_s, 4),
        "unknown": result.unknown,
        "swarm": result.swarm.as_dict() if result.swarm is not None else None,
        "replay": replay_command(spec.name, config, options=replay_args),
    }


def _print_result(
    console: Console,
    spec: ProtocolDef,
    config: SimConfig,
    result: SimResult,
    schedule_path: Path | None,
    *,
    replay_args: tuple[str, ...] = (),
) -> None:
    stats = result.stats
    verdict = "[green]ok[/green]" if result.ok else "[red]FAILED[/red]"
    console.print(
        f"{spec.name} seed {result.seed}: {verdict} — {stats.deliveries} deliveries, "
        f"{stats.events} events, {stats.crashes} crashes, {stats.virtual_us / 1e6:.2f} s virtual "
        f"in {stats.wall_s:.2f} s"
    )
    for note in result.unknown:
        console.print(f"  [yellow]unknown[/yellow]: {note}")
    if result.violation is not None:
        console.print(f"  violated [bold]{result.violation.prop}[/bold]: {result.violation.detail}")
        _print_swarm(console, result)
        replay = replay_command(spec.name, config, schedule_path, replay_args)
        console.print(f"  replay: {replay} --replay")


def _print_swarm(console: Console, result: SimResult, indent: str = "  ") -> None:
    """What a swarm seed drew (its replay command reproduces the same draw)."""
    if result.swarm is not None:
        for line in result.swarm.describe():
            console.print(f"{indent}{line}")


def _shrink_and_report(
    console: Console,
    spec: ProtocolDef,
    config: SimConfig,
    result: SimResult,
    as_json: bool,
    *,
    replay_args: tuple[str, ...] = (),
) -> None:
    outcome = shrink(spec, replace(config, trace=False, hash_trace=False), result)
    path = Path(f"pnyx-{spec.name}-seed{config.seed}.schedule.json")
    outcome.schedule.save(path)
    command = replay_command(spec.name, config, path, replay_args)
    if as_json:
        record = {
            "shrunk": True,
            "runs": outcome.runs,
            "faults": sorted(outcome.schedule.kinds_used()),
            "fault_count": outcome.schedule.fault_count(),
            "schedule_file": str(path),
            "violation": str(outcome.result.violation),
            "replay": command,
        }
        click.echo(msgspec.json.encode(record).decode())
        return
    original = result.schedule.fault_count()
    console.print(
        f"shrunk in {outcome.runs} runs: {original} faults → {outcome.schedule.fault_count()}"
    )
    for line in outcome.schedule.describe():
        console.print(f"  {line}")
    console.print(f"  still violates: {outcome.result.violation}")
    console.print(f"  replay minimal: {command} --replay")


def _print_trace(console: Console, result: SimResult, as_json: bool) -> None:
    if as_json:
        for t_us, kind, *fields in result.trace:
            click.echo(
                msgspec.json.encode({"t_us": t_us, "event": kind, "fields": fields}).decode()
            )
        return
    for t_us, kind, *fields in result.trace:
        console.print(
            f"{t_us / 1000:10.3f} ms  [bold]{kind:<10}[/bold] {_fmt_fields(kind, fields)}"
        )


def _fmt_fields(kind: str, fields: list[Any]) -> str:
    if kind == "deliver":
        src, dst, msg = fields
        return f"{src} → {dst}  {msg!r}"
    return "  ".join(repr(f) if not isinstance(f, str) else f for f in fields)


def _run_many(
    spec: ProtocolDef,
    base: SimConfig,
    seeds: range,
    as_json: bool,
    no_shrink: bool,
    schedule_path: Path | None,
    max_unknown: int = 0,
    *,
    jobs: int = 1,
    replay_args: tuple[str, ...] = (),
) -> int:
    console = Console(stderr=as_json, highlight=False, soft_wrap=True)
    failures: list[tuple[SimConfig, SimResult]] = []
    unknown: list[tuple[int, str]] = []
    hashes: list[tuple[int, str]] = []
    deliveries = events = 0
    wall_s = 0.0
    with Progress(
        TextColumn(f"{spec.name}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[failed]} failed"),
        console=console,
        transient=True,
        disable=as_json or not console.is_terminal,
    ) as progress:
        task = progress.add_task("seeds", total=len(seeds), failed=0)
        for result in _seed_results(spec, base, seeds, jobs):
            seed = result.seed
            config = replace(base, seed=seed)
            deliveries += result.stats.deliveries
            events += result.stats.events
            wall_s += result.stats.wall_s
            if as_json:
                summary = _seed_summary(spec, config, result, replay_args=replay_args)
                click.echo(msgspec.json.encode(summary).decode())
            elif base.hash_trace:
                hashes.append((seed, result.trace_hash))
            if not result.ok:
                failures.append((config, result))
            unknown.extend((seed, note) for note in result.unknown)
            progress.update(task, advance=1, failed=len(failures))
    if not as_json:
        _print_table(
            console,
            spec,
            seeds,
            failures,
            deliveries,
            events,
            wall_s,
            schedule_path,
            replay_args=replay_args,
        )
        for seed, digest in hashes:
            console.print(f"seed {seed} trace hash {digest}")
    too_many_unknown = _report_unknown(console, unknown, max_unknown)
    if failures and not no_shrink and schedule_path is None:
        config, result = failures[0]
        _shrink_and_report(console, spec, config, result, as_json, replay_args=replay_args)
    return 1 if failures or too_many_unknown else 0


def _seed_summary(
    spec: ProtocolDef, config: SimConfig, result: SimResult, *, replay_args: tuple[str, ...] = ()
) -> dict[str, Any]:
    """One JSON line of a seed range (with the trace hash when it was asked for)."""
    summary = _summary(spec, config, result, replay_args=replay_args)
    if config.hash_trace:
        summary["trace_hash"] = result.trace_hash
    return summary


def _report_unknown(console: Console, unknown: list[tuple[int, str]], max_unknown: int) -> bool:
    """Print undecided checks; True when more seeds than ``max_unknown`` had one.  Runs that
    left the protocol's fault model are listed apart and not counted (safety was checked)."""
    outside = sorted({seed for seed, note in unknown if note.startswith(OUTSIDE_FAULT_MODEL)})
    if outside:
        console.print(
            f"{len(outside)} seed(s) left the fault model (safety checked, liveness not "
            f"required): {' '.join(map(str, outside[:20]))}"
        )
    unknown = [(seed, note) for seed, note in unknown if not note.startswith(OUTSIDE_FAULT_MODEL)]
    seeds = sorted({seed for seed, _ in unknown})
    if not seeds:
        return False
    over = len(seeds) > max_unknown
    style = "red" if over else "yellow"
    console.print(
        f"[{style}]{len(seeds)} seed(s) with an undecided check[/{style}] "
        f"(bound --max-unknown {max_unknown}): {' '.join(map(str, seeds[:20]))}"
    )
    for seed, note in unknown[:5]:
        console.print(f"  seed {seed}: {note}")
    return over


def _print_table(
    console: Console,
    spec: ProtocolDef,
    seeds: range,
    failures: list[tuple[SimConfig, SimResult]],
    deliveries: int,
    events: int,
    wall_s: float,
    schedule_path: Path | None,
    *,
    replay_args: tuple[str, ...] = (),
) -> None:
    table = Table(title=f"pnyx sim {spec.name}: seeds {seeds.start}..{seeds.stop - 1}")
    for column in ("seeds", "passed", "failed", "deliveries", "events", "deliveries/s"):
        table.add_column(column, justify="right")
    rate = deliveries / wall_s if wall_s > 0 else 0.0
    table.add_row(
        str(len(seeds)),
        str(len(seeds) - len(failures)),
        str(len(failures)),
        str(deliveries),
        str(events),
        f"{rate:,.0f}",
    )
    console.print(table)
    if failures:
        console.print(f"[red]failing seeds:[/red] {' '.join(str(c.seed) for c, _ in failures)}")
        for config, result in failures[:10]:
            console.print(f"  seed {config.seed}: {result.violation}")
            _print_swarm(console, result, "    ")
            console.print(
                f"    replay: {replay_command(spec.name, config, schedule_path, replay_args)} "
                "--replay"
            )

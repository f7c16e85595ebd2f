"""``pnyx test``: a Jepsen-style fault test of pnyx or real etcd on real processes.

Runs a cluster of ``--nodes`` processes of ``--system`` (one per network namespace as
root, else on loopback), drives ``--workload`` through the etcd v3 API while the
``--nemesis`` faults come and go, heals, checks the history and writes a report directory
(see :mod:`pnyx.harness.run` and :mod:`pnyx.harness.report`).

Exit status: 0 every check passed; 1 a violation was found; 2 bad usage; 3 no verdict (a
checker could not decide, or the run itself failed or was interrupted).
"""

from __future__ import annotations

import datetime
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from rich.console import Console

EXIT_VALID, EXIT_INVALID, EXIT_USAGE, EXIT_UNKNOWN = 0, 1, 2, 3

_WORKLOADS = ("register", "kv", "list-append", "bank", "set", "lock", "lock-fenced", "watch")


def _nemesis_names() -> list[str]:
    from pnyx.harness.nemeses import NEMESES

    return list(NEMESES)


def _parse_nemeses(value: str) -> list[str]:
    names = [n.strip() for n in value.split(",") if n.strip() and n.strip() != "none"]
    valid = _nemesis_names()
    bad = [n for n in names if n not in valid]
    if bad:
        raise click.BadParameter(f"unknown nemesis {', '.join(bad)}; valid: "
                                 f"{', '.join(valid)} (comma-separated), or none")  # fmt: skip
    return list(dict.fromkeys(names))


def _parse_mutants(system_name: str, mutants: tuple[str, ...]) -> tuple[str, ...]:
    """The ``--mutant`` names, checked: known ones, and only with ``--system pnyx``."""
    if not mutants:
        return ()
    if system_name != "pnyx":
        raise click.BadParameter(f"--mutant is for --system pnyx only (pnyx's deliberately "
                                 f"broken builds), not {system_name}")  # fmt: skip
    from pnyx.cli.serve_cmd import TEST_MUTANTS

    bad = [m for m in mutants if m not in TEST_MUTANTS]
    if bad:
        raise click.BadParameter(f"--mutant: unknown {', '.join(bad)}; valid: "
                                 f"{', '.join(sorted(TEST_MUTANTS))}")  # fmt: skip
    return tuple(dict.fromkeys(mutants))


@dataclass(frozen=True)
class Broken:
    """The deliberately broken build pnyx's nodes run (fault testing only)."""

    mutants: tuple[str, ...] = ()
    lose_unsynced: bool = False

    def describe(self) -> str:
        parts = list(self.mutants) + (["lose-unsynced WAL"] if self.lose_unsynced else [])
        return "; ".join(parts)


@click.command(name="test")
@click.option("--system", "system_name", type=click.Choice(["pnyx", "etcd"]), default="pnyx",
              show_default=True, help="The system under test.")
@click.option("--workload", type=click.Choice(_WORKLOADS), default="register",
              show_default=True)
@click.option("--nemesis", "nemesis", default="none", show_default=True,
              help="Comma-separated faults, e.g. partition,kill,pause (see docs/HARNESS.md).")
@click.option("--time-limit", "time_limit_s", type=click.FloatRange(1, 86400), default=30.0,
              show_default=True, help="Seconds of workload.")
@click.option("--nodes", type=click.IntRange(1, 9), default=3, show_default=True)
@click.option("--rate", type=click.FloatRange(0.1, 100000), default=50.0, show_default=True,
              help="Operations per second, all clients together.")
@click.option("--concurrency", type=click.IntRange(1, 256), default=5, show_default=True,
              help="Concurrent clients.")
@click.option("--keys", type=click.IntRange(1, 1000), default=None,
              help="Keys (accounts, lists, sets) the workload uses [workload's default].")
@click.option("--seed", type=int, default=None, help="Random seed [random].")
@click.option("--dir", "directory", type=click.Path(path_type=Path), default=None,
              help="The report directory [pnyx-test/<time>-<system>-<workload>].")
@click.option("--nemesis-interval", "interval_s", type=click.FloatRange(0.1, 3600),
              default=5.0, show_default=True, help="Seconds between faults.")
@click.option("--nemesis-duration", "duration_s", type=click.FloatRange(0.1, 3600),
              default=5.0, show_default=True, help="Seconds each fault lasts.")
@click.option("--loopback", is_flag=True,
              help="Hosts on 127.0.0.1 even as root (no partitions).")
@click.option("--mutant", "mutants", multiple=True, metavar="NAME",
              help="pnyx only, fault testing: every node runs this deliberately broken "
                   "variant (repeatable; docs/HARNESS.md, 'Broken builds').")
@click.option("--consensus", type=click.Choice(["raft", "paxos", "vr", "vr-durable"]),
              default=None, help="pnyx only: the consensus under pnyx's etcd service "
                                 "(pnyx serve --consensus) [raft].")
@click.option("--lose-unsynced", is_flag=True,
              help="A crash (kill-all, kill-majority) loses what the nodes had not "
                   "fsynced, as a power failure would: pnyx keeps WAL writes in memory "
                   "until fsynced; etcd's data dirs are on a lazyfs-like FUSE layer.")
def test(system_name: str, workload: str, nemesis: str, time_limit_s: float, nodes: int,
         rate: float, concurrency: int, keys: int | None, seed: int | None,
         directory: Path | None, interval_s: float, duration_s: float,
         loopback: bool, mutants: tuple[str, ...], consensus: str | None,
         lose_unsynced: bool) -> None:  # fmt: skip
    """Run a fault test against a real cluster and check the history."""
    console = Console(highlight=False, soft_wrap=True)
    try:
        names = _parse_nemeses(nemesis)
        broken = Broken(_parse_mutants(system_name, mutants), lose_unsynced)
        if consensus is not None and system_name != "pnyx":
            raise click.BadParameter(f"--consensus is for --system pnyx only, not {system_name}")
    except click.BadParameter as exc:
        console.print(f"[red]error: {exc.message}[/red]")
        sys.exit(EXIT_USAGE)
    sys.exit(run_cli(console, system_name, workload, names, time_limit_s, nodes, rate,
                     concurrency, keys, seed, directory, interval_s, duration_s, loopback,
                     broken, consensus=consensus))


def run_cli(console: Console, system_name: str, workload_name: str, names: list[str],
            time_limit_s: float, nodes: int, rate: float, concurrency: int,
            keys: int | None, seed: int | None, directory: Path | None, interval_s: float,
            duration_s: float, loopback: bool, broken: Broken | None = None,
            *, consensus: str | None = None) -> int:  # fmt: skip
    """Build the net, system, workload and nemeses, run, print; the exit status.
    ``consensus``: pnyx's nodes run ``--consensus`` (None: Raft, their default)."""
    import random

    from pnyx.harness.api import NemesisUnavailable
    from pnyx.harness.nemeses import make_nemesis
    from pnyx.harness.net import namespace_support, new_run_id, open_net
    from pnyx.harness.run import run_test
    from pnyx.harness.systems import EtcdSystem, PnyxSystem
    from pnyx.harness.workloads import make_workload

    seed = random.randrange(1 << 31) if seed is None else seed
    if directory is None:
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S")
        directory = Path("pnyx-test") / f"{stamp}-{system_name}-{workload_name}"
    reason = None if loopback else namespace_support()
    if reason is not None:
        console.print(f"[yellow]no network namespaces: {reason}.[/yellow]\n"
                      "[yellow]Running in loopback mode: every node on 127.0.0.1, only the "
                      "faults that need no namespaces.[/yellow]")  # fmt: skip
    broken = broken or Broken()
    try:
        lose = broken.lose_unsynced
        extra = ("--consensus", consensus) if consensus else ()
        system = (PnyxSystem(mutants=broken.mutants, lose_unsynced=lose, extra_args=extra)
                  if system_name == "pnyx" else EtcdSystem(lazyfs=lose))  # fmt: skip
    except RuntimeError as exc:
        console.print(f"[red]error: {exc}[/red]")
        return EXIT_USAGE
    run_id = new_run_id()
    try:
        net = open_net(nodes, run_id, loopback=loopback)
    except (RuntimeError, OSError, ValueError) as exc:
        console.print(f"[red]error: cannot set up the hosts: {exc}[/red]")
        return EXIT_UNKNOWN
    try:
        nemeses: list[Any] = []
        for name in names:
            try:
                nemeses.append(make_nemesis(name, net, system, seed))
            except NemesisUnavailable as exc:
                console.print(f"[yellow]skipping nemesis {name}: {exc}[/yellow]")
        workload = make_workload(workload_name, keys=keys, seed=seed)
    except BaseException:
        net.close()
        raise
    mode = "network namespaces" if net.isolated else "loopback"
    over = f" over {consensus}" if consensus else ""
    console.print(f"pnyx test: {system_name}{over}, {nodes} nodes ({mode}, run {run_id}), workload "
                  f"{workload_name}, nemeses {', '.join(n.name for n in nemeses) or 'none'}, "
                  f"{time_limit_s:g} s at {rate:g} ops/s x {concurrency} clients, seed {seed}")
    if broken.mutants:
        console.print(f"[red]broken build (fault testing): {broken.describe()}[/red]")
    elif broken.lose_unsynced:
        console.print("[yellow]a crash loses what the nodes had not fsynced ("
                      + ("lose-unsynced WAL" if system_name == "pnyx" else "lazyfs")
                      + ")[/yellow]")
    result = _run_with_progress(console, lambda progress: run_test(
        system, net, workload, nemeses, time_limit_s, rate, concurrency, seed, directory,
        nemesis_interval_s=interval_s, nemesis_duration_s=duration_s, progress=progress),
        time_limit_s)  # fmt: skip
    colour = {"valid": "green", "invalid": "red"}.get(result.verdict, "yellow")
    for check in result.checks:
        c = {"valid": "green", "invalid": "red"}.get(check.verdict, "yellow")
        console.print(f"  [{c}]{check.verdict:8}[/{c}] {check.name}: {check.summary}")
        if check.verdict == "invalid" and check.counterexample:
            console.print(check.counterexample[:3000], markup=False)
    for interval in result.intervals:
        console.print(f"  nemesis {interval.name} at {interval.start_ns / 1e9:.1f} s: "
                      f"{interval.start}; {interval.stop}", markup=False)
    if result.error:
        console.print(f"[yellow]run: {result.error}[/yellow]")
    for problem in result.cleanup_errors:
        console.print(f"[yellow]clean-up: {problem}[/yellow]")
    console.print(f"[bold {colour}]VERDICT: {result.verdict.upper()}[/bold {colour}] "
                  f"in {result.phases.get('total', 0):.1f} s")
    if result.report is not None:
        console.print(f"report: {result.report}")
    return {"valid": EXIT_VALID, "invalid": EXIT_INVALID}.get(result.verdict, EXIT_UNKNOWN)


def _run_with_progress(console: Console, run: Any, time_limit_s: float) -> Any:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description:<10}"), BarColumn(),
                  TextColumn("{task.fields[ops]} events"), TimeElapsedColumn(),
                  console=console, transient=False) as bar:  # fmt: skip
        task = bar.add_task("start", total=time_limit_s, ops=0)

        def progress(phase: str, elapsed: float, ops: int) -> None:
            if phase == "workload":
                bar.update(task, description=phase, completed=min(elapsed, time_limit_s),
                           ops=ops)  # fmt: skip
            else:
                done = time_limit_s if phase not in ("start",) else 0.0
                bar.update(task, description=phase, completed=done, ops=ops)

        return run(progress)

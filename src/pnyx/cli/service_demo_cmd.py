"""``pnyx service-demo`` (what ``make run`` shows): the etcd service under a leader kill.

A preset of the fault harness (``pnyx test``, docs/HARNESS.md), with a story told on the
console:

1. the system: a 3-node :class:`~pnyx.harness.systems.PnyxSystem` (``pnyx serve
   --protocol etcd``, fsync on) on a :class:`~pnyx.harness.net.LoopbackNet`: every node on
   127.0.0.1, so it needs no root (also as root: a leader kill needs no namespaces);
2. the workload, three harness workloads side by side
   (:class:`~pnyx.harness.composite.CompositeWorkload`): ``kv`` clients (linearizable
   get, put, compare-and-swap, delete), ``watch`` writers with one watcher per member, and
   ``lock-fenced`` clients (etcd's mutex, a write fenced by the lock's token);
3. the fault: the harness's ``kill-leader`` nemesis once, a third of the way in (SIGKILL),
   stopped :data:`DOWN_S` later (the node restarted from its data);
4. the harness's run loop, checks and report directory (``index.html`` with the latency
   and throughput plots, ``history.jsonl``, ``results.json``, the nodes' logs); every
   process it started is stopped by pid, also on failure, Ctrl-C and SIGTERM.

Exit status as ``pnyx test``: 0 every check passed, 1 a violation, 3 no verdict.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.console import Console

if TYPE_CHECKING:
    from pnyx.harness.api import Nemesis
    from pnyx.harness.composite import CompositeWorkload
    from pnyx.harness.run import RunResult
    from pnyx.harness.systems import ProcessSystem

EXIT_VALID, EXIT_INVALID, EXIT_UNKNOWN = 0, 1, 3
NODES = 3
DOWN_S = 2.0
"""How long the killed leader stays down."""
RATE_OPS_S = 120.0
"""Operations per second, all clients together (lock clients take far fewer)."""
KV_KEYS = 3
WATCH_WRITERS = 2
LOCK_CLIENTS = 2
LOCK_HOLD_S = (0.2, 1.5)
"""Seconds a lock client holds the lock (random in this range)."""
QUIESCE_S = 1.0
STALE_FILES = ("counterexample.html", "error.txt")
"""Report files a previous run may have left that this run might not overwrite."""


@click.command(name="service-demo")
@click.option("--duration", "duration_s", type=click.FloatRange(3, 600), default=20.0,
              show_default=True, help="Seconds of workload.")
@click.option("--workers", type=click.IntRange(1, 32), default=4, show_default=True,
              help="Concurrent kv (get/put/cas/delete) clients.")
@click.option("--report", type=click.Path(path_type=Path),
              default=Path("pnyx-service-report.html"), show_default=True,
              help="The report: NAME.html gives the directory NAME/ (index.html, plots, "
                   "history, logs) and NAME.html, a page that opens it; any other path is "
                   "the directory.")  # fmt: skip
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--no-kill", is_flag=True, help="Skip the leader kill (a baseline run).")
def service_demo(duration_s: float, workers: int, report: Path, seed: int,
                 no_kill: bool) -> None:  # fmt: skip
    """Run the etcd service demonstration (a 3-node cluster, a leader kill, checks)."""
    console = Console(highlight=False, soft_wrap=True)
    sys.exit(run_demo(console, duration_s, workers, report, seed, kill=not no_kill))


def run_demo(console: Console, duration_s: float, workers: int, report: Path, seed: int,
             *, kill: bool = True) -> int:  # fmt: skip
    """Build the preset, run it through the harness, tell the story; the exit status."""
    from pnyx.harness.nemeses import make_nemesis
    from pnyx.harness.net import LoopbackNet
    from pnyx.harness.run import run_test
    from pnyx.harness.systems import PnyxSystem

    started = time.monotonic()
    directory, page = _report_paths(report)
    for name in STALE_FILES:
        (directory / name).unlink(missing_ok=True)
    try:
        net = LoopbackNet(NODES)
    except RuntimeError as exc:  # no free ports
        console.print(f"[red]cannot set up the hosts: {exc}[/red]")
        return EXIT_UNKNOWN
    system = PnyxSystem()
    workload = demo_workload(workers, seed)
    what = (f"{workers} kv clients (get/put/cas/delete on {KV_KEYS} keys), {WATCH_WRITERS} "
            f"watch writers and a watcher per member, {LOCK_CLIENTS} fenced-lock clients; "
            f"{RATE_OPS_S:g} ops/s in all")
    story = _Story(console, system, directory, what, duration_s, kill)
    nemeses: list[Nemesis] = []
    if kill:
        nemeses.append(_Announced(make_nemesis("kill-leader", net, system, seed), system, story))
    fault = "leader killed mid-run" if kill else "no fault"
    console.rule(f"[bold]pnyx service demo: etcd v3 API on pnyx Raft, {fault}")
    try:
        result = run_test(system, net, workload, nemeses, duration_s, RATE_OPS_S,
                          workload.concurrency, seed, directory,
                          nemesis_interval_s=duration_s / 3, nemesis_duration_s=DOWN_S,
                          nemesis_limit=1, quiesce_s=QUIESCE_S,
                          progress=story.progress)  # fmt: skip
    except KeyboardInterrupt:  # during the checks: every process is stopped by then
        console.print("[red]interrupted while checking: no verdict[/red]")
        return EXIT_UNKNOWN
    if page is not None and result.report is not None:
        _write_link_page(page, result.report)
    _print_outcome(console, result, page, time.monotonic() - started)
    return {"valid": EXIT_VALID, "invalid": EXIT_INVALID}.get(result.verdict, EXIT_UNKNOWN)


def demo_workload(workers: int, seed: int) -> CompositeWorkload:
    """The demo's workloads side by side: ``kv`` (``workers`` clients), ``watch`` and
    ``lock-fenced`` (holding the lock shorter than the harness's default: more critical
    sections in a short run, and a quick end)."""
    from pnyx.harness.composite import CompositeWorkload
    from pnyx.harness.workloads import FencedLockWorkload, KVWorkload, WatchWorkload

    return CompositeWorkload([(KVWorkload(keys=KV_KEYS, seed=seed), workers),
                              (WatchWorkload(seed=seed), WATCH_WRITERS),
                              (FencedLockWorkload(seed=seed, hold_s=LOCK_HOLD_S),
                               LOCK_CLIENTS)])  # fmt: skip


def _report_paths(report: Path) -> tuple[Path, Path | None]:
    """The report directory, and the page linking to it (for a ``.html`` path)."""
    if report.suffix.lower() in (".html", ".htm"):
        return report.with_suffix(""), report
    return report, None


def _write_link_page(page: Path, index: Path) -> None:
    """A page that opens the report directory's ``index.html`` (``make run``'s path)."""
    target = index.relative_to(page.parent) if index.is_relative_to(page.parent) else index
    page.write_text(f"<!doctype html><meta charset='utf-8'>"
                    f"<meta http-equiv='refresh' content='0; url={target}'>"
                    f"<title>pnyx service demo</title>"
                    f"<p>The report is <a href='{target}'>{target}</a>.</p>\n",
                    encoding="utf-8")  # fmt: skip


class _Story:
    """What the console says while the harness runs (its progress callback)."""

    def __init__(self, console: Console, system: ProcessSystem, directory: Path,
                 workload: str, duration_s: float, kill: bool) -> None:  # fmt: skip
        self.console, self.system, self.directory = console, system, directory
        self.workload = workload
        self.duration_s, self.kill = duration_s, kill
        self.phase = ""
        self.workload_t0 = 0.0

    def say(self, line: str) -> None:
        self.console.print(line, markup=False)

    def at(self) -> str:
        """Seconds since the workload began, for a line of the story."""
        return f"t={time.monotonic() - self.workload_t0:4.1f} s"

    def progress(self, phase: str, elapsed_s: float, events: int) -> None:
        if phase == self.phase:
            return
        self.phase = phase
        if phase == "workload":
            self.workload_t0 = time.monotonic() - elapsed_s
        tell = getattr(self, f"_{phase}", None)
        if tell is not None:
            tell(events)

    def _start(self, events: int) -> None:
        self.say(f"starting {NODES} `pnyx serve --protocol etcd` nodes on 127.0.0.1 "
                 f"(loopback: no root needed), data in {self.directory / 'nodes'}")

    def _workload(self, events: int) -> None:
        pids = ", ".join(f"{h} pid {p}" for h, p in self.system.pids().items())
        self.say(f"   up: {pids}; ETCDCTL_ENDPOINTS={','.join(self.system.endpoints())}")
        fault = (f"the leader killed at {self.duration_s / 3:.1f} s, restarted {DOWN_S:g} s "
                 "later" if self.kill else "no fault (--no-kill)")
        self.say(f"workload for {self.duration_s:g} s ({fault}): {self.workload}")

    def _heal(self, events: int) -> None:
        self.say(f"workload done ({events} events); healing: every node running, the "
                 "cluster serving a write")

    def _final(self, events: int) -> None:
        self.say("final: a last write, every watcher catching up, the write history replayed")

    def _check(self, events: int) -> None:
        left = self.system.pids()
        self.say("cluster stopped: every node process ended" if not left else
                 f"cluster NOT fully stopped: {left}")  # fmt: skip
        self.say(f"checking {events} events")


class _Announced:
    """A nemesis that also tells the story (with the pids) of what it did."""

    def __init__(self, inner: Nemesis, system: ProcessSystem, story: _Story) -> None:
        self.inner, self.system, self.story = inner, system, story
        self.name = inner.name

    def start(self) -> str:
        before = self.system.pids()
        what = self.inner.start()
        after = self.system.pids()
        gone = ", ".join(f"pid {p}" for h, p in before.items() if after.get(h) != p)
        what = f"{what}, {gone}" if gone else what
        self.story.say(f"   {self.story.at()}  SIGKILL: {what}")
        return what

    def stop(self) -> str:
        before = self.system.pids()
        what = self.inner.stop()
        new = ", ".join(f"pid {p}" for h, p in self.system.pids().items() if before.get(h) != p)
        what = f"{what}, {new}" if new else what
        self.story.say(f"   {self.story.at()}  {what}")
        return what


def _print_outcome(console: Console, result: RunResult, page: Path | None,
                   wall_s: float) -> None:  # fmt: skip
    """The checks, the faults, the report's path, the verdict."""
    console.rule("[bold]checks")
    for check in result.checks:
        colour = {"valid": "green", "invalid": "red"}.get(check.verdict, "yellow")
        console.print(f"   [{colour}]{check.verdict:8}[/{colour}] {check.name}: "
                      f"{check.summary}", soft_wrap=True)  # fmt: skip
        if check.verdict == "invalid" and check.counterexample:
            console.print(check.counterexample[:3000], markup=False)
    for interval in result.intervals:
        console.print(f"   nemesis {interval.name} at {interval.start_ns / 1e9:.1f} s: "
                      f"{interval.start}; {interval.stop}", markup=False)  # fmt: skip
    if result.interrupted:
        console.print("[red]interrupted: every process was stopped; no verdict[/red]")
    elif result.error:
        console.print(f"[yellow]run: {result.error}[/yellow]")
    for problem in result.cleanup_errors:
        console.print(f"[yellow]clean-up: {problem}[/yellow]")
    if result.report is not None:
        also = f" (opened by {page})" if page is not None else ""
        console.print(f"report: {result.report}{also}: latency and throughput plots, "
                      "history.jsonl, results.json, logs/")
    console.print(f"total wall time {wall_s:.1f} s")
    colour = {"valid": "green", "invalid": "red"}.get(result.verdict, "yellow")
    console.print(f"[bold {colour}]VERDICT: {result.verdict.upper()}[/bold {colour}]")

"""``pnyx service-demo`` (what ``make run`` shows): the etcd service under a leader kill.

1. starts a local 3-node pnyx etcd cluster (``pnyx cluster up --protocol etcd``: real
   processes, fsync on, in a temporary directory);
2. runs a mixed workload through the etcd v3 API (:mod:`pnyx.etcdclient`), each client
   preferring another member: concurrent linearizable gets, puts and compare-and-swap txns
   on a few keys; watchers on the keys' prefix, one per member, recording every event; and
   workers taking a distributed lock (etcd's mutex) around a read-increment-write of a
   counter, fenced by the lock's token (a txn comparing the lock key's create revision);
3. kills the Raft leader with SIGKILL a third of the way in, and restarts it from its data
   a few seconds later;
4. checks: the recorded history is linearizable per key (:func:`pnyx.check.check_linearizable`);
   every watcher saw exactly the cluster's write history on the prefix — every acknowledged
   write, in revision order, each once (compared with a replay of the history from the
   first revision); no two lock holders overlapped and the counter counts every fenced
   increment;
5. prints the verdict, writes an HTML report (the checker's timeline plus these checks),
   and stops every process it started (by pid, via ``pnyx cluster down``), also on Ctrl-C,
   SIGTERM and failure.  Exit status 0 only when every check passed.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import itertools
import random
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from pnyx.core import HistoryEvent
from pnyx.etcdclient import (
    AsyncEtcdClient,
    Compare,
    EtcdError,
    Get,
    Put,
    RangeResult,
    WatchEvent,
    hold_lock,
)
from pnyx.etcdclient.recipes import cancel_and_wait

PREFIX = "demo/"
KEYS = tuple(f"{PREFIX}k{i}" for i in range(3))
COUNTER = f"{PREFIX}counter"
LOCK = "demo-lock"
CALL_TIMEOUT_S = 3.0
DOWN_S = 2.0
"""How long the killed leader stays down."""
SETTLE_S = 15.0
"""Bound on waiting for watchers to catch up after the workload."""


@dataclass
class Run:
    """What the workload recorded."""

    history: list[HistoryEvent] = field(default_factory=list)
    acked: list[tuple[str, str, int]] = field(default_factory=list)
    """Acknowledged writes on the prefix: (key, value, revision)."""
    watched: dict[int, list[tuple[int, str, str, str]]] = field(default_factory=dict)
    """Watcher → its events (revision, type, key, value)."""
    reconnects: dict[int, int] = field(default_factory=dict)
    sections: list[tuple[float, float, int]] = field(default_factory=list)
    """Lock critical sections that incremented the counter: (enter, exit, token)."""
    fenced_refusals: int = 0
    uncertain_increments: int = 0
    """Fenced writes whose outcome is unknown (the request failed; it may have applied)."""
    lock_errors: int = 0
    faults: list[str] = field(default_factory=list)
    start_revision: int = 0
    final_revision: int = 0
    final_counter: int = 0
    duration_s: float = 0.0
    reference: list[tuple[int, str, str, str]] = field(default_factory=list)
    """The cluster's write history on the prefix, replayed from the start revision."""

    def record(self, process: int, kind: str, f: str, value: Any, key: str) -> None:
        self.history.append(HistoryEvent(process, kind, f, value, key,  # type: ignore[arg-type]
                                         time.monotonic_ns()))  # fmt: skip


@click.command(name="service-demo")
@click.option("--duration", "duration_s", type=click.FloatRange(3, 600), default=20.0,
              show_default=True, help="Seconds of workload.")
@click.option("--workers", type=click.IntRange(1, 32), default=4, show_default=True,
              help="Concurrent get/put/cas clients.")
@click.option("--report", type=click.Path(path_type=Path),
              default=Path("pnyx-service-report.html"), show_default=True,
              help="Where to write the HTML report.")
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--no-kill", is_flag=True, help="Skip the leader kill (a baseline run).")
def service_demo(duration_s: float, workers: int, report: Path, seed: int,
                 no_kill: bool) -> None:  # fmt: skip
    """Run the etcd service demonstration (a 3-node cluster, a leader kill, checks)."""
    from pnyx.cli.cluster_cmd import cluster_command, load_state, local_cluster_up

    console = Console(highlight=False, soft_wrap=True)
    started = time.monotonic()
    console.rule("[bold]pnyx service demo: etcd v3 API on pnyx Raft, leader killed mid-run")
    previous = signal.signal(signal.SIGTERM, _interrupt)
    ok = False
    with tempfile.TemporaryDirectory(prefix="pnyx-service-demo-") as tmp:
        data_dir = Path(tmp) / "cluster"
        try:
            console.print(f"starting 3 `pnyx serve --protocol etcd` processes in {data_dir}")
            local_cluster_up(data_dir, protocol="etcd")
            state = load_state(data_dir)
            assert state is not None
            endpoints = [n["client_address"] for n in state["nodes"]]
            pids = ", ".join(str(n["pid"]) for n in state["nodes"])
            console.print(f"   up in {time.monotonic() - started:.1f} s; pids {pids}; "
                          f"ETCDCTL_ENDPOINTS={','.join(endpoints)}")  # fmt: skip
            nemesis = None if no_kill else _LeaderKiller(data_dir, console)
            run = asyncio.run(_workload(endpoints, workers, duration_s, seed, nemesis, console))
            ok = _verdict(run, console, report)
        except KeyboardInterrupt:
            console.print("[red]interrupted: stopping the cluster[/red]")
        except (RuntimeError, EtcdError, OSError) as exc:
            console.print(f"[red]demo failed: {exc}[/red]")
        finally:
            # a second Ctrl-C must not cut the clean-up short (nor reach `down`: inherited)
            interrupt = signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            if (data_dir / "cluster.json").exists():
                down = cluster_command("down", "--data-dir", str(data_dir))
                console.print(f"   {down.stdout.strip() or down.stderr.strip()}")
            signal.signal(signal.SIGINT, interrupt)
            signal.signal(signal.SIGTERM, previous)
    console.print(f"total wall time {time.monotonic() - started:.1f} s")
    console.print("[bold green]VERDICT: OK[/bold green]" if ok
                  else "[bold red]VERDICT: FAILED[/bold red]")  # fmt: skip
    sys.exit(0 if ok else 1)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


class _LeaderKiller:
    """SIGKILL the leader (by its recorded pid), restart it after ``DOWN_S``."""

    def __init__(self, data_dir: Path, console: Console) -> None:
        self.data_dir = data_dir
        self.console = console

    async def leader(self) -> int | None:
        """The node that reports itself leader (asked over the etcd Maintenance API)."""
        from pnyx.cli.cluster_cmd import load_state

        state = load_state(self.data_dir)
        assert state is not None
        async with AsyncEtcdClient([n["client_address"] for n in state["nodes"]],
                                   timeout_s=CALL_TIMEOUT_S) as client:  # fmt: skip
            for _ in range(50):
                for node in state["nodes"]:
                    with contextlib.suppress(EtcdError):
                        if (await client.status(node["client_address"])).is_leader:
                            return int(node["id"])
                await asyncio.sleep(0.1)
        return None

    def kill(self, node_id: int) -> int:
        from pnyx.cli.cluster_cmd import signal_node

        return signal_node(self.data_dir, node_id, "KILL")

    def restart(self, node_id: int) -> str:
        """Start the node again with its recorded command line (``pnyx cluster start``)."""
        from pnyx.cli.cluster_cmd import start_node

        pid, started = start_node(self.data_dir, node_id)
        return f"started node {node_id} (pid {pid})" if started else f"node {node_id} ran"


# -- the workload ----------------------------------------------------------------------------


def _rotated(endpoints: list[str], i: int) -> list[str]:
    i %= len(endpoints)
    return endpoints[i:] + endpoints[:i]


async def _workload(endpoints: list[str], workers: int, duration_s: float, seed: int,
                    nemesis: _LeaderKiller | None, console: Console) -> Run:  # fmt: skip
    run = Run()
    stop = asyncio.Event()
    async with AsyncEtcdClient(endpoints, timeout_s=CALL_TIMEOUT_S) as admin:
        setup = await admin.put(COUNTER, "0")
        run.start_revision = setup.revision + 1
        run.acked.append((COUNTER, "0", setup.revision))
        run.record(998, "invoke", "put", "0", COUNTER)
        run.record(998, "ok", "put", "0", COUNTER)
        watchers = [asyncio.create_task(_watcher(run, _rotated(endpoints, i), i))
                    for i in range(len(endpoints))]  # fmt: skip
        await asyncio.sleep(0.3)  # let the watches be created before the first writes
        began = time.monotonic()
        tasks = [asyncio.create_task(_worker(run, _rotated(endpoints, p), p, seed, stop))
                 for p in range(workers)]  # fmt: skip
        tasks += [asyncio.create_task(_locker(run, _rotated(endpoints, i), i, stop))
                  for i in range(2)]  # fmt: skip
        await _drive(run, nemesis, duration_s, console)
        stop.set()
        _, late = await asyncio.wait(tasks, timeout=CALL_TIMEOUT_S * 4)
        for task in late:
            task.cancel()
        for task in tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise RuntimeError(f"a workload task failed: {task.exception()!r}")
        run.duration_s = time.monotonic() - began
        end = await _retry_put(admin, f"{PREFIX}end", "end")  # the last write on the prefix
        run.final_revision = end
        run.acked.append((f"{PREFIX}end", "end", end))
        counter = await _retry(lambda: admin.range(COUNTER))
        run.final_counter = int(counter.kvs[0].value) if counter.kvs else -1
        await _settle(run, watchers)
        try:
            run.reference = await asyncio.wait_for(_reference(endpoints, run), SETTLE_S)
        except TimeoutError:
            raise RuntimeError("the write history could not be replayed in time") from None
    return run


async def _retry(call: Callable[[], Any], attempts: int = 10) -> RangeResult:
    for attempt in range(attempts):
        try:
            result: RangeResult = await call()
            return result
        except EtcdError:
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(0.5)
    raise AssertionError("unreachable")


async def _retry_put(client: AsyncEtcdClient, key: str, value: str, attempts: int = 10) -> int:
    for attempt in range(attempts):
        try:
            return (await client.put(key, value)).revision
        except EtcdError:
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(0.5)
    raise AssertionError("unreachable")


async def _drive(run: Run, nemesis: _LeaderKiller | None, duration_s: float,
                 console: Console) -> None:  # fmt: skip
    began = time.monotonic()
    if nemesis is not None:
        await asyncio.sleep(duration_s / 3)
        leader = await nemesis.leader()
        if leader is None:
            run.faults.append("no leader found to kill")
        else:
            pid = await asyncio.to_thread(nemesis.kill, leader)
            at = time.monotonic() - began
            line = f"t={at:4.1f} s  SIGKILL the leader, node {leader} (pid {pid})"
            run.faults.append(line)
            console.print(f"   {line}")
            await asyncio.sleep(DOWN_S)
            out = await asyncio.to_thread(nemesis.restart, leader)
            line = f"t={time.monotonic() - began:4.1f} s  restarted node {leader}: {out}"
            run.faults.append(line)
            console.print(f"   {line}")
    await asyncio.sleep(max(0.0, duration_s - (time.monotonic() - began)))


async def _worker(run: Run, endpoints: list[str], p: int, seed: int, stop: asyncio.Event) -> None:
    rng = random.Random(f"{seed}:{p}")
    process = p
    last: dict[str, str | None] = {}
    n = 0
    async with AsyncEtcdClient(endpoints, timeout_s=CALL_TIMEOUT_S, connect_timeout_s=1.0) as c:
        while not stop.is_set():
            n += 1
            key = rng.choice(KEYS)
            roll = rng.random()
            value = f"{p}.{n}"
            if roll < 0.4:
                run.record(process, "invoke", "get", None, key)
                try:
                    kv = await c.get(key)
                except EtcdError:
                    run.record(process, "fail", "get", None, key)
                    await asyncio.sleep(0.1)
                    continue
                last[key] = None if kv is None else kv.value.decode()
                run.record(process, "ok", "get", last[key], key)
            elif roll < 0.7:
                run.record(process, "invoke", "put", value, key)
                try:
                    put = await c.put(key, value)
                except EtcdError:
                    run.record(process, "info", "put", value, key)
                    process += 1000  # an open operation: this process is done
                    await asyncio.sleep(0.1)
                    continue
                run.record(process, "ok", "put", value, key)
                run.acked.append((key, value, put.revision))
            else:
                expected = last.get(key)
                guard = (Compare(key, "create", "=", 0) if expected is None
                         else Compare(key, "value", "=", expected))  # fmt: skip
                run.record(process, "invoke", "cas", [expected, value], key)
                try:
                    txn = await c.txn([guard], [Put(key, value)], [Get(key)])
                except EtcdError:
                    run.record(process, "info", "cas", [expected, value], key)
                    process += 1000
                    await asyncio.sleep(0.1)
                    continue
                run.record(process, "ok", "cas", txn.succeeded, key)
                if txn.succeeded:
                    run.acked.append((key, value, txn.revision))
                    last[key] = value
            await asyncio.sleep(rng.uniform(0, 0.01))


async def _locker(run: Run, endpoints: list[str], i: int, stop: asyncio.Event) -> None:
    """Take the lock, read the counter, write counter+1 fenced by the lock's token.

    The read and the fenced write go into the history (a refused fenced write certainly
    did not happen: ``fail``)."""
    process = 500 + i
    async with AsyncEtcdClient(endpoints, timeout_s=CALL_TIMEOUT_S, connect_timeout_s=1.0) as c:
        while not stop.is_set():
            try:
                async with hold_lock(c, LOCK, ttl=5) as lock:
                    entered = time.monotonic()
                    run.record(process, "invoke", "get", None, COUNTER)
                    try:
                        current = await c.get(COUNTER)
                    except EtcdError:
                        run.record(process, "fail", "get", None, COUNTER)
                        raise
                    value = None if current is None else current.value.decode()
                    run.record(process, "ok", "get", value, COUNTER)
                    new = str(int(value or 0) + 1)
                    run.record(process, "invoke", "put", new, COUNTER)
                    try:
                        fenced = await c.txn(
                            [Compare(lock.key, "create", "=", lock.revision),
                             Compare(COUNTER, "value", "=", value or "")],
                            [Put(COUNTER, new)],
                        )  # fmt: skip
                    except EtcdError:
                        run.record(process, "info", "put", new, COUNTER)
                        run.uncertain_increments += 1  # it may have applied, or not
                        process += 1000
                        raise
                    if fenced.succeeded:
                        run.record(process, "ok", "put", new, COUNTER)
                        run.acked.append((COUNTER, new, fenced.revision))
                        run.sections.append((entered, time.monotonic(), lock.revision))
                    else:
                        run.record(process, "fail", "put", new, COUNTER)
                        run.fenced_refusals += 1
                await asyncio.sleep(0.05)
            except EtcdError:
                run.lock_errors += 1
                await asyncio.sleep(0.2)


async def _watcher(run: Run, endpoints: list[str], i: int) -> None:
    events: list[tuple[int, str, str, str]] = []
    run.watched[i] = events
    async with AsyncEtcdClient(endpoints, timeout_s=CALL_TIMEOUT_S, connect_timeout_s=1.0) as c:
        watch = c.watch(PREFIX, prefix=True, start_revision=run.start_revision - 1)
        async with watch:
            async for event in watch:
                events.append(_event(event))
                run.reconnects[i] = watch.reconnects


def _event(event: WatchEvent) -> tuple[int, str, str, str]:
    return (event.revision, event.type, event.kv.key.decode(), event.kv.value.decode())


async def _settle(run: Run, watchers: list[asyncio.Task[None]]) -> None:
    """Until every watcher has seen the final revision (bounded), then stop them."""
    deadline = time.monotonic() + SETTLE_S
    while time.monotonic() < deadline:
        if all(ev and ev[-1][0] >= run.final_revision for ev in run.watched.values()):
            break
        if any(w.done() for w in watchers):
            break
        await asyncio.sleep(0.1)
    await cancel_and_wait(watchers)


async def _reference(endpoints: list[str], run: Run) -> list[tuple[int, str, str, str]]:
    """The cluster's write history on the prefix, replayed by a fresh watch."""
    out: list[tuple[int, str, str, str]] = []
    async with (
        AsyncEtcdClient(endpoints, timeout_s=CALL_TIMEOUT_S) as c,
        c.watch(PREFIX, prefix=True, start_revision=run.start_revision - 1) as w,
    ):
        async for event in w:
            out.append(_event(event))
            if event.revision >= run.final_revision:
                break
    return out


# -- checks and report -----------------------------------------------------------------------


@dataclass
class _Check:
    name: str
    ok: bool
    detail: str


def _watch_checks(run: Run, reference: list[tuple[int, str, str, str]]) -> list[_Check]:
    checks = []
    revisions = [e[0] for e in reference]
    ordered = all(a < b for a, b in itertools.pairwise(revisions))
    by_rev = {e[0]: e for e in reference}
    missing = [w for w in run.acked if by_rev.get(w[2], (0, "", "", ""))[2:] != (w[0], w[1])]
    checks.append(_Check(
        "write history", ordered and not missing,
        f"{len(reference)} events on {PREFIX!r}, revisions "
        f"{'strictly increasing' if ordered else 'OUT OF ORDER'}; "
        f"{len(run.acked)} acknowledged writes, {len(missing)} missing or different"
        + (f": {missing[:3]}" if missing else "")))  # fmt: skip
    for i, seen in sorted(run.watched.items()):
        seen_revs = [e[0] for e in seen]
        dups = len(seen_revs) - len(set(seen_revs))
        same = seen == reference
        verdict = "in order, equal to" if same else "DIFFERS from"
        detail = (f"{len(seen)} events, {dups} duplicates, {verdict} the write history"
                  f"; stream re-created {run.reconnects.get(i, 0)}x")  # fmt: skip
        if not same:
            first = next((k for k, (a, b) in enumerate(zip(seen, reference, strict=False))
                          if a != b), min(len(seen), len(reference)))
            detail += f" (first difference at event {first + 1})"
        checks.append(_Check(f"watcher {i + 1}", same, detail))
    return checks


def _lock_checks(run: Run) -> list[_Check]:
    sections = sorted(run.sections)
    overlaps = sum(1 for a, b in itertools.pairwise(sections) if b[0] < a[1])
    tokens = [s[2] for s in sections]
    increasing = tokens == sorted(tokens) and len(set(tokens)) == len(tokens)
    uncertain = run.uncertain_increments
    counted = len(sections) <= run.final_counter <= len(sections) + uncertain
    if uncertain:
        expected = (f"{'within' if counted else 'NOT within'} {len(sections)} acknowledged "
                    f"increments + up to {uncertain} of unknown outcome")  # fmt: skip
    else:
        expected = f"{'=' if counted else '!='} {len(sections)} acknowledged increments"
    return [_Check(
        "lock", overlaps == 0 and counted and increasing,
        f"{len(sections)} critical sections, {overlaps} overlapping; fencing tokens "
        f"{'increasing' if increasing else 'NOT increasing'}; counter = {run.final_counter} "
        f"({expected}); "
        f"{run.fenced_refusals} fenced writes refused, {run.lock_errors} lock attempts "
        f"interrupted by errors")]  # fmt: skip


def _verdict(run: Run, console: Console, report: Path) -> bool:
    from pnyx.check import History, KVModel, check_linearizable, render_html

    console.rule("[bold]checks")
    history = History.from_events(run.history)
    ops = history.operations
    counts = {k: sum(1 for o in ops if o.outcome == k) for k in ("ok", "fail", "info")}
    began = time.perf_counter()
    result = check_linearizable(history, KVModel(initial=None), timeout_s=60)
    check_s = time.perf_counter() - began
    checks = [_Check("linearizability", result.verdict == "linearizable",
                     f"{len(ops)} operations ({counts['ok']} ok, {counts['fail']} failed, "
                     f"{counts['info']} indeterminate) on {len(KEYS) + 1} keys in "
                     f"{run.duration_s:.1f} s: {result.verdict} per key "
                     f"(checked in {check_s:.2f} s)")]  # fmt: skip
    checks += _watch_checks(run, run.reference)
    checks += _lock_checks(run)
    for fault in run.faults:
        console.print(f"   nemesis: {fault}")
    for check in checks:
        mark = "[green]ok  [/green]" if check.ok else "[red]FAIL[/red]"
        console.print(f"   {mark} {check.name}: {check.detail}")
    if result.verdict == "not-linearizable":
        console.print(result.explain())
    ok = all(c.ok for c in checks)
    page = render_html(result, ops, "pnyx service demo: etcd API under a leader kill")
    summary = "".join(
        f"<li class='{'pass' if c.ok else 'fail'}'><b>{html.escape(c.name)}</b>: "
        f"{html.escape(c.detail)}</li>" for c in checks)  # fmt: skip
    faults = "".join(f"<li>{html.escape(f)}</li>" for f in run.faults)
    extra = (f"<h2>Verdict: {'OK' if ok else 'FAILED'}</h2><ul class='checks'>{summary}</ul>"
             f"<h2>Faults</h2><ul>{faults or '<li>none</li>'}</ul>"
             "<style>.checks .pass{color:#2e7d32}.checks .fail{color:#c0392b}</style>")
    page = page.replace("<p class='legend'>", extra + "<p class='legend'>", 1)
    try:
        report.write_text(page, encoding="utf-8")
        console.print(f"report written to {report}")
    except OSError as exc:
        console.print(f"[red]cannot write the report {report}: {exc}[/red]")
        ok = False
    return ok


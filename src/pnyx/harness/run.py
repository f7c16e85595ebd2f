"""The run loop of ``pnyx test``: start, drive, break, heal, read, stop, check, report.

:func:`run_test` runs one test:

1. starts ``system`` on the hosts of ``net`` (data under ``DIR/nodes``);
2. runs ``concurrency`` clients of ``workload`` for ``time_limit_s`` seconds at ``rate``
   operations per second in all, each preferring another member; meanwhile a scheduler
   starts one of ``nemeses`` every ``nemesis_interval_s`` seconds and stops it
   ``nemesis_duration_s`` later (each start and stop is a history event, process -1);
3. heals everything: stops the active nemesis, removes every cut, resumes every node;
   waits until the cluster serves again (bounded) and ``quiesce_s`` more; runs the
   workload's final reads;
4. stops the system, copies the node logs into ``DIR/logs``, closes the net — on every
   path: failure, Ctrl-C, SIGTERM/SIGHUP (turned into ``KeyboardInterrupt`` while the run
   is in progress; a second signal during the clean-up is ignored);
5. checks the history and writes the report (:mod:`pnyx.harness.report`).

Every wait is bounded (a time-out per call, per phase and per clean-up step).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import random
import shutil
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from pnyx.etcdclient import AsyncEtcdClient, EtcdError
from pnyx.etcdclient.recipes import cancel_and_wait
from pnyx.harness.api import Host, Nemesis, Net, System
from pnyx.harness.workloads import (
    CALL_TIMEOUT_S,
    CheckResult,
    CheckVerdict,
    Client,
    Recorder,
    Workload,
    retried,
)

NEMESIS_CALL_TIMEOUT_S = 30.0
"""Bound on one nemesis start or stop (it runs in a thread; past this the run goes on)."""
HEAL_TIMEOUT_S = 30.0
SERVE_TIMEOUT_S = 30.0
"""After healing: how long the cluster may take to serve a write again."""
SETUP_TIMEOUT_S = 30.0
FINAL_TIMEOUT_S = 60.0
CLIENT_DRAIN_S = 15.0
"""After the time limit: how long clients may take to finish their operation."""
CLEANUP_STEP_S = 30.0

Progress = Callable[[str, float, int], None]
"""``progress(phase, elapsed seconds, operations so far)``."""


@dataclass
class NemesisInterval:
    """One fault: when it was asked for and when it ended (ns since the run began)."""

    name: str
    start_ns: int
    end_ns: int | None = None
    start: str = ""
    stop: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "start_s": self.start_ns / 1e9,
                "end_s": None if self.end_ns is None else self.end_ns / 1e9,
                "start": self.start, "stop": self.stop}  # fmt: skip


@dataclass
class RunResult:
    """What one run did and found; ``verdict`` is ``valid`` only when every check is."""

    directory: Path
    system: str
    workload: str
    nemeses: list[str]
    nodes: int
    isolated: bool
    time_limit_s: float
    rate: float
    concurrency: int
    seed: int
    started_at: str = ""
    verdict: CheckVerdict = "unknown"
    checks: list[CheckResult] = field(default_factory=list)
    intervals: list[NemesisInterval] = field(default_factory=list)
    phases: dict[str, float] = field(default_factory=dict)
    """Phase name -> seconds it took."""
    error: str = ""
    interrupted: bool = False
    cleanup_errors: list[str] = field(default_factory=list)
    recorder: Recorder = field(default_factory=Recorder)
    logs: dict[str, Path] = field(default_factory=dict)
    report: Path | None = None

    @property
    def valid(self) -> bool:
        return self.verdict == "valid"

    def to_json(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict, "system": self.system, "workload": self.workload,
            "nemeses": self.nemeses, "nodes": self.nodes, "isolated": self.isolated,
            "time_limit_s": self.time_limit_s, "rate": self.rate,
            "concurrency": self.concurrency, "seed": self.seed,
            "started_at": self.started_at, "phases_s": self.phases, "error": self.error,
            "interrupted": self.interrupted, "cleanup_errors": self.cleanup_errors,
            "checks": [c.to_json() for c in self.checks],
            "nemesis": [i.to_json() for i in self.intervals],
            "logs": {k: str(v) for k, v in self.logs.items()},
        }  # fmt: skip


def overall(checks: Sequence[CheckResult], error: str = "") -> CheckVerdict:
    """``invalid`` if any check is, else ``unknown`` if any is (or the run failed, or
    nothing was checked), else ``valid``."""
    if any(c.verdict == "invalid" for c in checks):
        return "invalid"
    if error or not checks or any(c.verdict == "unknown" for c in checks):
        return "unknown"
    return "valid"


class _Interrupted(KeyboardInterrupt):
    """SIGTERM / SIGHUP during a run."""


class _Interrupt:
    """Where a SIGTERM / SIGHUP goes during a run.

    Outside the event loop the handler raises :class:`_Interrupted` (like Ctrl-C).  While
    the driver's loop runs, raising from the handler is unsafe: the signal may land inside a
    C callback (gRPC's), which prints "Exception ignored" and drops it.  So then the handler
    only records the signal and asks the loop, thread-safely, to cancel the driver's task.
    """

    def __init__(self) -> None:
        self.signalled = False
        self._target: tuple[asyncio.AbstractEventLoop, asyncio.Task[Any]] | None = None

    def handler(self, signum: int, frame: FrameType | None) -> None:
        self.signalled = True
        target = self._target
        if target is None:
            raise _Interrupted()
        loop, task = target
        loop.call_soon_threadsafe(task.cancel)

    async def run(self, main: Callable[[], Any]) -> None:
        """Await ``main()`` as the task a signal cancels; raise :class:`_Interrupted` if one
        came (even if the task finished anyway)."""
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("_Interrupt.run must run inside a task")
        self._target = (asyncio.get_running_loop(), task)
        try:
            await main()
        except asyncio.CancelledError:
            if not self.signalled:
                raise
        finally:
            self._target = None
        if self.signalled:
            raise _Interrupted()


@contextlib.contextmanager
def _signals_interrupt(interrupt: _Interrupt) -> Iterator[None]:
    """SIGTERM and SIGHUP interrupt the run in the main thread (like Ctrl-C)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    signals = (signal.SIGTERM, signal.SIGHUP)
    previous = {s: signal.signal(s, interrupt.handler) for s in signals}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


@contextlib.contextmanager
def _signals_ignored() -> Iterator[None]:
    """A clean-up that a second Ctrl-C or SIGTERM must not cut short."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    wanted = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in wanted}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


class _Phases:
    def __init__(self, result: RunResult) -> None:
        self.result = result

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        began = time.monotonic()
        try:
            yield
        finally:
            self.result.phases[name] = round(time.monotonic() - began, 3)


def run_test(
    system: System,
    net: Net,
    workload: Workload,
    nemeses: Sequence[Nemesis],
    time_limit_s: float,
    rate: float,
    concurrency: int,
    seed: int,
    directory: Path,
    *,
    nemesis_interval_s: float = 5.0,
    nemesis_duration_s: float = 5.0,
    quiesce_s: float = 2.0,
    call_timeout_s: float = CALL_TIMEOUT_S,
    nemesis_limit: int | None = None,
    progress: Progress | None = None,
    report: bool = True,
    keep_data: bool = False,
) -> RunResult:
    """Run one test (see the module docstring); the net is closed on return.
    ``nemesis_limit``: at most this many faults (None: as many as the time allows)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    hosts = net.hosts
    result = RunResult(directory, system.name, workload.name, [n.name for n in nemeses],
                       len(hosts), net.isolated, time_limit_s, rate, concurrency, seed,
                       started_at=datetime.datetime.now(datetime.UTC).isoformat(
                           timespec="seconds"))  # fmt: skip
    phase = _Phases(result)
    active: list[tuple[Nemesis, NemesisInterval]] = []
    data = directory / "nodes"
    began = time.monotonic()
    try:
        interrupt = _Interrupt()
        with _signals_interrupt(interrupt):
            with phase("start"):
                if progress:
                    progress("start", 0.0, 0)
                system.start(hosts, data)
            result.recorder = Recorder()
            driver = _Driver(system, net, workload, nemeses, result, active, progress,
                             time_limit_s, rate, concurrency, seed, nemesis_interval_s,
                             nemesis_duration_s, quiesce_s, call_timeout_s, phase)
            driver.nemesis_limit = nemesis_limit
            asyncio.run(interrupt.run(driver.run))
    except KeyboardInterrupt:
        result.interrupted = True
        result.error = "interrupted"
    except Exception as exc:  # the run failed: clean up, report what was recorded
        result.error = f"{type(exc).__name__}: {exc}"
        (directory / "error.txt").write_text(traceback.format_exc(), encoding="utf-8")
    finally:
        with _signals_ignored(), phase("cleanup"):
            _cleanup(system, net, active, result, data, keep_data)
    result.phases["total"] = round(time.monotonic() - began, 3)
    if progress:
        progress("check", time.monotonic() - began, len(result.recorder.events))
    with phase("check"):
        try:
            result.checks = workload.check(result.recorder.history())
        except Exception as exc:
            result.checks = [CheckResult("checker", "unknown", f"the checker failed: {exc!r}",
                                         traceback.format_exc())]  # fmt: skip
    result.verdict = overall(result.checks, result.error)
    if report:
        from pnyx.harness.report import write_report

        with phase("report"):
            result.report = write_report(result)
    return result


def _cleanup(system: System, net: Net, active: list[tuple[Nemesis, NemesisInterval]],
             result: RunResult, data: Path, keep_data: bool) -> None:  # fmt: skip
    """Stop the active nemeses, stop the system, keep its logs, close the net: each step
    bounded and attempted whatever the previous one did."""
    def attempt(what: str, call: Callable[[], Any]) -> None:
        try:
            _bounded(call, CLEANUP_STEP_S, what)
        except Exception as exc:
            result.cleanup_errors.append(f"{what}: {type(exc).__name__}: {exc}")

    for nemesis, interval in list(active):
        attempt(f"stop nemesis {nemesis.name}", nemesis.stop)
        interval.end_ns = result.recorder.now()
        interval.stop = interval.stop or "stopped at clean-up"
    active.clear()
    attempt("heal the net", net.heal)
    attempt("stop the system", system.stop)
    try:
        logs = system.logs()
    except Exception as exc:
        logs = {}
        result.cleanup_errors.append(f"list the logs: {exc}")
    out = result.directory / "logs"
    for host, path in sorted(logs.items()):
        try:
            out.mkdir(exist_ok=True)
            target = out / f"{host}.log"
            shutil.copyfile(path, target)
            result.logs[host] = target
        except OSError as exc:
            result.cleanup_errors.append(f"copy the log of {host}: {exc}")
    if not keep_data and data.exists():
        shutil.rmtree(data, ignore_errors=True)
    attempt("close the net", net.close)


def _bounded(call: Callable[[], Any], timeout_s: float, what: str) -> Any:
    """``call()`` in a daemon thread, waited for at most ``timeout_s``."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = call()
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target, name=f"pnyx-test: {what}", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise TimeoutError(f"{what} took more than {timeout_s:g} s")
    if "error" in box:
        raise box["error"]
    return box.get("value")


class _Driver:
    """The asynchronous part of a run: clients, the nemesis schedule, heal, final reads."""

    def __init__(self, system: System, net: Net, workload: Workload,
                 nemeses: Sequence[Nemesis], result: RunResult,
                 active: list[tuple[Nemesis, NemesisInterval]], progress: Progress | None,
                 time_limit_s: float, rate: float, concurrency: int, seed: int,
                 interval_s: float, duration_s: float, quiesce_s: float,
                 call_timeout_s: float, phase: _Phases) -> None:  # fmt: skip
        self.system, self.net, self.workload = system, net, workload
        self.nemeses, self.result, self.active = list(nemeses), result, active
        self.progress = progress
        self.time_limit_s, self.rate, self.concurrency = time_limit_s, rate, concurrency
        self.seed = seed
        self.interval_s, self.duration_s, self.quiesce_s = interval_s, duration_s, quiesce_s
        self.call_timeout_s = call_timeout_s
        self.phase = phase
        self.rec = result.recorder
        self.stop = asyncio.Event()
        self.nemesis_limit: int | None = None
        """At most this many faults (None: no limit)."""

    async def run(self) -> None:
        endpoints = self.system.endpoints()
        async with AsyncEtcdClient(endpoints, timeout_s=self.call_timeout_s) as admin:
            try:
                with self.phase("setup"):
                    await asyncio.wait_for(
                        self.workload.setup(admin, endpoints, self.rec), SETUP_TIMEOUT_S)
                with self.phase("workload"):
                    await self._workload(endpoints)
                with self.phase("heal"):
                    await self._heal()
                with self.phase("quiesce"):
                    await self._quiesce(admin)
                with self.phase("final"):
                    self._report("final", 0.0)
                    await asyncio.wait_for(self.workload.final(admin, self.rec),
                                           FINAL_TIMEOUT_S)  # fmt: skip
            finally:
                await self.workload.close()

    def _report(self, phase: str, elapsed: float) -> None:
        if self.progress is not None:
            self.progress(phase, elapsed, len(self.rec.events))

    async def _workload(self, endpoints: list[str]) -> None:
        began = time.monotonic()
        clients: list[Client] = []
        for i in range(self.concurrency):
            k = i % len(endpoints)
            etcd = AsyncEtcdClient(endpoints[k:] + endpoints[:k], timeout_s=self.call_timeout_s,
                                   connect_timeout_s=min(1.0, self.call_timeout_s))
            clients.append(Client(i, self.concurrency, etcd, self.rec,
                                  random.Random(f"{self.seed}:{i}")))  # fmt: skip
        tasks = [asyncio.create_task(self._client(c, began)) for c in clients]
        nemesis = asyncio.create_task(self._nemeses(began))
        try:
            while time.monotonic() - began < self.time_limit_s:
                self._report("workload", time.monotonic() - began)
                if all(t.done() for t in tasks):
                    break
                await asyncio.sleep(min(0.5, max(0.0, self.time_limit_s -
                                                 (time.monotonic() - began))))  # fmt: skip
            self.stop.set()
            _, late = await asyncio.wait([*tasks, nemesis], timeout=CLIENT_DRAIN_S)
            for task in late:
                task.cancel()
            await asyncio.gather(*tasks, nemesis, return_exceptions=True)
            for task in tasks:
                if not task.cancelled() and task.exception() is not None:
                    raise RuntimeError(f"a client failed: {task.exception()!r}")
            if not nemesis.cancelled() and nemesis.exception() is not None:
                raise RuntimeError(f"the nemesis scheduler failed: {nemesis.exception()!r}")
        finally:
            self.stop.set()
            # the clients' tasks end (a lock's release, on an interrupt) before their
            # channels close; bounded
            await cancel_and_wait([*tasks, nemesis])
            for c in clients:
                await c.etcd.close()

    async def _client(self, client: Client, began: float) -> None:
        """Operations at ``rate / concurrency`` per second (random gaps), until stopped."""
        per_client = max(self.rate / self.concurrency, 1e-3)
        next_at = time.monotonic()
        while not self.stop.is_set():
            await self.workload.step(client)
            next_at = max(next_at + client.rng.uniform(0, 2 / per_client), time.monotonic()
                          - 1 / per_client)  # fmt: skip
            delay = next_at - time.monotonic()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), delay)

    async def _sleep(self, seconds: float) -> bool:
        """Sleep unless stopped; True if the run goes on."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), max(0.0, seconds))
        return not self.stop.is_set()

    async def _nemeses(self, began: float) -> None:
        if not self.nemeses:
            return
        rng = random.Random(f"{self.seed}:nemesis")
        order = list(self.nemeses)
        rng.shuffle(order)
        n = 0
        while self.nemesis_limit is None or n < self.nemesis_limit:
            if not await self._sleep(self.interval_s):
                return
            if self.time_limit_s - (time.monotonic() - began) < 1.0:
                return
            nemesis = order[n % len(order)]
            n += 1
            await self._start(nemesis)
            await self._sleep(self.duration_s)
            await self._stop_active()

    async def _start(self, nemesis: Nemesis) -> None:
        interval = NemesisInterval(nemesis.name, self.rec.now())
        self.rec.nemesis("invoke", "start", nemesis.name)
        self.active.append((nemesis, interval))
        self.result.intervals.append(interval)
        try:
            interval.start = str(await asyncio.to_thread(_bounded, nemesis.start,
                                                         NEMESIS_CALL_TIMEOUT_S, "start"))
        except Exception as exc:
            interval.start = f"failed: {type(exc).__name__}: {exc}"
        self.rec.nemesis("info", "start", f"{nemesis.name}: {interval.start}")

    async def _stop_active(self) -> None:
        while self.active:
            nemesis, interval = self.active[-1]
            self.rec.nemesis("invoke", "stop", nemesis.name)
            try:
                interval.stop = str(await asyncio.to_thread(_bounded, nemesis.stop,
                                                            NEMESIS_CALL_TIMEOUT_S, "stop"))
            except Exception as exc:
                interval.stop = f"failed: {type(exc).__name__}: {exc}"
            interval.end_ns = self.rec.now()
            self.rec.nemesis("info", "stop", f"{nemesis.name}: {interval.stop}")
            self.active.pop()

    async def _heal(self) -> None:
        """Stop the active fault, remove every cut, resume every node (SIGCONT), restart
        any node that is not running (when the system can tell)."""
        self._report("heal", 0.0)
        await self._stop_active()
        self.rec.nemesis("invoke", "heal", "all")
        done = []
        steps: list[tuple[str, Callable[[], Any]]] = [("heal the net", self.net.heal)]
        steps += [(f"resume {h.name}", _resumer(self.system, h)) for h in self.net.hosts]
        running = getattr(self.system, "running", None)  # ProcessSystem: restart the dead
        if callable(running):
            steps += [(f"restart {h.name}", _restarter(self.system, h, running))
                      for h in self.net.hosts]  # fmt: skip
        for what, call in steps:
            try:
                outcome = await asyncio.to_thread(_bounded, call, HEAL_TIMEOUT_S, what)
                if outcome != "running":
                    done.append(what if outcome is None else f"{what}: {outcome}")
            except Exception as exc:
                done.append(f"{what} failed: {exc}")
        self.rec.nemesis("info", "heal", "; ".join(done))

    async def _quiesce(self, admin: AsyncEtcdClient) -> None:
        """Until a write goes through (bounded), then ``quiesce_s`` more."""
        self._report("quiesce", 0.0)
        key = f"{self.workload.prefix}quiesce"
        attempts = max(1, int(SERVE_TIMEOUT_S / max(0.5, self.call_timeout_s)))
        try:
            await retried(lambda: admin.put(key, "1"), attempts=attempts, pause_s=0.5)
        except EtcdError as exc:
            raise RuntimeError(f"the cluster did not serve a write within "
                               f"{SERVE_TIMEOUT_S:g} s after healing: {exc}") from None
        await asyncio.sleep(self.quiesce_s)


def _resumer(system: System, host: Host) -> Callable[[], None]:
    def resume() -> None:
        system.resume(host)
    return resume


def _restarter(system: System, host: Host, running: Callable[[Host], bool]
               ) -> Callable[[], str]:  # fmt: skip
    def restart() -> str:
        if running(host):
            return "running"
        system.start_node(host)
        return "restarted"
    return restart

"""Run simulator seeds in parallel worker processes, with the results of a serial run.

Each seed is a pure function of (protocol, seed, schedule), so a pool of worker processes
can run whole seeds independently; the parent hands out seeds one at a time (so a slow
seed never holds up a queue of others), buffers results that arrive early and yields them
in seed order.  What a worker sends back is the :class:`~pnyx.sim.runner.SimResult`
without its history and trace (the bulky parts nothing downstream of a seed range needs);
a failing seed is shrunk by the caller, once, exactly as in a serial run.

The pool is bounded in every direction:

- workers are started with the ``spawn`` context (no inherited locks, threads or file
  descriptors, the same on every platform) and ignore SIGINT: on Ctrl-C the parent stops
  them by pid (terminate, then kill after ``stop_timeout_s``) and re-raises;
- a worker that dies (its process sentinel fires) is reported as :class:`WorkerCrashed`
  naming its pid, exit code and seed, never waited on;
- an exception escaping ``run_sim`` in a worker (a simulator bug, not a protocol
  violation: those are results) is re-raised in the parent as :class:`SeedError` with the
  worker's traceback;
- a worker whose parent is gone sees end-of-file on its pipe and exits.

Whatever ends the iteration (exhaustion, an error, ``close()`` of the generator), every
worker process is gone when :meth:`SeedPool.close` returns.
"""

from __future__ import annotations

import contextlib
import importlib
import multiprocessing
import signal
import traceback
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from types import TracebackType

from pnyx.catalog import get_protocol
from pnyx.sim.runner import SimConfig, SimResult, run_sim
from pnyx.sim.spec import ProtocolDef

MAX_JOBS = 64
"""Upper bound on ``--jobs``."""
DEFAULT_STOP_TIMEOUT_S = 5.0
"""How long a worker gets to exit after terminate (SIGTERM) before it is killed."""
WAIT_SLICE_S = 0.5
"""Longest single wait for a worker message; keeps the parent responsive to signals."""


class PoolError(RuntimeError):
    """The worker pool could not run a seed range to the end."""


class WorkerCrashed(PoolError):
    """A worker process died while it was running a seed."""

    def __init__(self, pid: int | None, exitcode: int | None, seed: int | None) -> None:
        self.pid = pid
        self.exitcode = exitcode
        self.seed = seed
        doing = f"while running seed {seed}" if seed is not None else "before taking a seed"
        super().__init__(f"simulator worker pid {pid} died (exit code {exitcode}) {doing}")


class SeedError(PoolError):
    """``run_sim`` raised in a worker: a simulator bug, reported with its traceback."""

    def __init__(self, seed: int, worker_traceback: str) -> None:
        self.seed = seed
        self.worker_traceback = worker_traceback
        last = worker_traceback.strip().splitlines()[-1] if worker_traceback.strip() else "?"
        super().__init__(f"seed {seed} raised in a simulator worker: {last}")


def validate_jobs(jobs: int) -> int:
    """``jobs`` when it is within 1..MAX_JOBS; ValueError with a one-line message otherwise."""
    if not 1 <= jobs <= MAX_JOBS:
        raise ValueError(f"--jobs must be between 1 and {MAX_JOBS}, got {jobs}")
    return jobs


def resolve_spec(ref: str) -> ProtocolDef:
    """A catalogue name (``raft``) or ``module:attribute`` naming a :class:`ProtocolDef`."""
    if ":" not in ref:
        return get_protocol(ref)
    module_name, attr = ref.split(":", 1)
    spec = getattr(importlib.import_module(module_name), attr)
    if not isinstance(spec, ProtocolDef):
        raise TypeError(f"{ref} is not a ProtocolDef")
    return spec


def compact(result: SimResult) -> SimResult:
    """``result`` without the parts a seed range does not report (history, trace)."""
    return replace(result, history=[], trace=[])


@dataclass
class _Worker:
    process: BaseProcess
    conn: Connection
    seed: int | None = None
    """The seed it is running (None when idle)."""


def _worker_main(conn: Connection, spec_ref: str, base: SimConfig) -> None:
    """Worker loop: receive a seed (or None to stop), run it, send the compact result."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us by pid
    spec = resolve_spec(spec_ref)
    conn.send(("ready", None, None))
    while True:
        try:
            seed = conn.recv()
        except (EOFError, OSError):
            return  # the parent is gone
        if seed is None:
            return
        try:
            result = compact(run_sim(spec, replace(base, seed=seed)))
        except Exception:
            conn.send(("error", seed, traceback.format_exc()))
            continue
        conn.send(("ok", seed, result))


class SeedPool:
    """``jobs`` worker processes running seeds of one protocol with one base config."""

    def __init__(
        self,
        spec_ref: str,
        base: SimConfig,
        jobs: int,
        *,
        stop_timeout_s: float = DEFAULT_STOP_TIMEOUT_S,
    ) -> None:
        self.spec_ref = spec_ref
        self.base = base
        self.jobs = validate_jobs(jobs)
        self.stop_timeout_s = stop_timeout_s
        self._workers: list[_Worker] = []
        self._closed = False

    @property
    def pids(self) -> list[int]:
        """Process ids of the workers started so far."""
        return [w.process.pid for w in self._workers if w.process.pid is not None]

    def __enter__(self) -> SeedPool:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _start(self, count: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        for _ in range(count):
            parent_end, child_end = ctx.Pipe(duplex=True)
            process = ctx.Process(
                target=_worker_main,
                args=(child_end, self.spec_ref, self.base),
                name="pnyx-sim-worker",
                daemon=True,
            )
            process.start()
            child_end.close()
            self._workers.append(_Worker(process, parent_end))

    def results(self, seeds: Iterable[int]) -> Iterator[SimResult]:
        """Run ``seeds``; yield each result in the order of ``seeds``.

        Raises :class:`WorkerCrashed` or :class:`SeedError` (after stopping the pool);
        closing the generator early also stops the pool.
        """
        order = list(seeds)
        if len(set(order)) != len(order):
            raise ValueError("seeds must be distinct")
        try:
            yield from self._run(order)
        finally:
            self.close()

    def _run(self, order: list[int]) -> Iterator[SimResult]:
        if not order:
            return
        self._start(min(self.jobs, len(order)))
        todo = iter(order)
        done: dict[int, SimResult] = {}
        next_index = 0
        for worker in self._workers:
            self._hand_out(worker, todo)
        while next_index < len(order):
            if not any(w.seed is not None for w in self._workers):
                raise PoolError("internal: no worker is running a seed but results are missing")
            self._collect(done, todo)
            while next_index < len(order) and order[next_index] in done:
                yield done.pop(order[next_index])
                next_index += 1

    def _hand_out(self, worker: _Worker, todo: Iterator[int]) -> None:
        """Give ``worker`` its next seed, or tell it to stop when none is left."""
        seed = next(todo, None)
        try:
            worker.conn.send(seed)
        except OSError:
            worker.process.join(timeout=self.stop_timeout_s)
            raise WorkerCrashed(worker.process.pid, worker.process.exitcode, seed) from None
        worker.seed = seed

    def _collect(self, done: dict[int, SimResult], todo: Iterator[int]) -> None:
        """Wait (a bounded slice) for worker messages and handle them."""
        busy = [w for w in self._workers if w.seed is not None]
        by_conn: dict[object, _Worker] = {w.conn: w for w in busy}
        by_sentinel: dict[object, _Worker] = {w.process.sentinel: w for w in busy}
        handles: list[Connection | int] = [w.conn for w in busy]
        handles += [w.process.sentinel for w in busy]
        ready: list[object] = list(wait(handles, timeout=WAIT_SLICE_S))
        for handle in ready:
            worker = by_conn.get(handle)
            if worker is not None:
                self._receive(worker, done, todo)
        for handle in ready:
            worker = by_sentinel.get(handle)
            if worker is not None and worker.seed is not None and not worker.conn.poll():
                worker.process.join(timeout=self.stop_timeout_s)
                raise WorkerCrashed(worker.process.pid, worker.process.exitcode, worker.seed)

    def _receive(self, worker: _Worker, done: dict[int, SimResult], todo: Iterator[int]) -> None:
        try:
            kind, seed, payload = worker.conn.recv()
        except (EOFError, OSError):
            worker.process.join(timeout=self.stop_timeout_s)
            raise WorkerCrashed(worker.process.pid, worker.process.exitcode, worker.seed) from None
        if kind == "ready":
            return
        if kind == "error":
            raise SeedError(seed, payload)
        if seed != worker.seed or not isinstance(payload, SimResult):
            raise PoolError(
                f"worker pid {worker.process.pid} sent a result for seed {seed} "
                f"while running {worker.seed}"
            )
        done[seed] = payload
        self._hand_out(worker, todo)

    def close(self) -> None:
        """Stop every worker (ask, then terminate, then kill, each bounded); idempotent."""
        if self._closed:
            return
        self._closed = True
        for worker in self._workers:
            if worker.process.is_alive():
                with contextlib.suppress(OSError, ValueError):
                    worker.conn.send(None)
        for worker in self._workers:
            worker.process.join(timeout=0.2)
        for worker in self._workers:
            if worker.process.is_alive():
                worker.process.terminate()
        for worker in self._workers:
            worker.process.join(timeout=self.stop_timeout_s)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join(timeout=self.stop_timeout_s)
            worker.conn.close()


def run_seeds(
    spec_ref: str,
    base: SimConfig,
    seeds: Iterable[int],
    jobs: int,
    *,
    stop_timeout_s: float = DEFAULT_STOP_TIMEOUT_S,
) -> Iterator[SimResult]:
    """Results of ``seeds`` in order, from ``jobs`` worker processes (serial when 1)."""
    validate_jobs(jobs)
    if jobs == 1:
        spec = resolve_spec(spec_ref)
        for seed in seeds:
            yield run_sim(spec, replace(base, seed=seed))
        return
    pool = SeedPool(spec_ref, base, jobs, stop_timeout_s=stop_timeout_s)
    yield from pool.results(seeds)

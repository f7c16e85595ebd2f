"""Linearizability of a history: partitions checked interleaved, within time and memory bounds.

The history is split into independent partitions (P-compositionality, ``model.partition``)
and each is searched by :class:`pnyx.check.search.Search` (Wing-Gong with Lowe's memo). The
searches are *interleaved by budget*: smallest partition first, every unfinished partition
gets a slice of :data:`~pnyx.check.search.STEPS_PER_YIELD` steps per round, so an easy
illegal partition is found while a hard one is still searching, and the check stops at the
first violation. Between slices the scheduler enforces the bounds: the deadline
(``timeout_s``), the steps per partition (``max_steps``) and the estimated memory of all
live searches (``max_memory_bytes``; past it the partition holding the most is given up as
``unknown`` and the others go on). An ``unknown`` verdict always says why, for which
partition and how far it got. With ``workers > 1``, partitions still undecided after half a
second are dealt to worker processes, each interleaving its share, and the first violation
stops them all.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pnyx.check.history import History, Operation
from pnyx.check.models import Model
from pnyx.check.search import Search, SearchVerdict

Verdict = Literal["linearizable", "not-linearizable", "unknown"]
_EXPLAIN_SLICES = 50  # budget (x 2,048 steps) of the unpruned search behind a counterexample
_SOLO_S = 0.5  # with workers, search this long in-process before handing off the rest
_MEMORY_CAP_BYTES = 2 << 30
_GIB = float(1 << 30)
_MIB = float(1 << 20)


def default_max_memory_bytes() -> int:
    """The default memory bound of one check: an eighth of physical memory, at most 2 GiB."""
    try:
        physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return _MEMORY_CAP_BYTES
    return max(64 << 20, min(_MEMORY_CAP_BYTES, physical // 8))


@dataclass
class PartitionResult:
    """The verdict on one independent sub-history, with a counterexample when it fails.

    ``prefix`` is the longest linearization found (in linearization order) and
    ``prefix_states`` the described state after each of its operations; ``unplaced`` are the
    operations that had to take effect next but could not, in the state after ``prefix``.
    ``reason`` says why an ``unknown`` partition is undecided (time-out, memory or step
    bound, or not searched because another partition failed first) and how far it got.
    """

    key: Any
    verdict: Verdict
    operations: list[Operation]
    steps: int = 0
    prefix: list[Operation] = field(default_factory=list)
    prefix_states: list[str] = field(default_factory=list)
    unplaced: list[Operation] = field(default_factory=list)
    final_state: str = ""
    fail_time: int | None = None
    reason: str = ""
    memory_bytes: int = 0


@dataclass
class LinearizabilityResult:
    """The verdict on a whole history: ``linearizable``, ``not-linearizable`` or ``unknown``."""

    verdict: Verdict
    partitions: list[PartitionResult]
    elapsed_s: float
    model: str

    @property
    def ok(self) -> bool:
        """True when the history is linearizable."""
        return self.verdict == "linearizable"

    @property
    def steps(self) -> int:
        """Search steps over all partitions."""
        return sum(p.steps for p in self.partitions)

    @property
    def failures(self) -> list[PartitionResult]:
        """The partitions that are not linearizable."""
        return [p for p in self.partitions if p.verdict == "not-linearizable"]

    @property
    def undecided(self) -> list[PartitionResult]:
        """The partitions whose verdict is ``unknown``."""
        return [p for p in self.partitions if p.verdict == "unknown"]

    @property
    def reason(self) -> str:
        """Why the verdict is ``unknown`` (empty otherwise): the first undecided partition's
        reason, and how many others are undecided."""
        if self.verdict != "unknown":
            return ""
        undecided = self.undecided
        more = len(undecided) - 1
        tail = f" (and {more} more undecided partitions)" if more > 0 else ""
        return undecided[0].reason + tail

    def explain(self) -> str:
        """A text counterexample (empty when linearizable), or why the verdict is unknown."""
        from pnyx.check.report import explain_text

        return explain_text(self)


@dataclass(frozen=True)
class Limits:
    """Bounds of one check: a ``time.monotonic()`` deadline, search steps per partition and
    estimated bytes of all live searches; ``stop_at_first``: stop at the first violation."""

    deadline: float | None = None
    max_steps: int | None = None
    max_memory_bytes: int | None = None
    stop_at_first: bool = True


def check_linearizable(
    history: History | Sequence[Operation],
    model: Model[Any],
    *,
    partition: bool = True,
    timeout_s: float | None = None,
    max_steps: int | None = None,
    max_memory_bytes: int | None = None,
    workers: int = 1,
    stop_at_first: bool = True,
) -> LinearizabilityResult:
    """Check ``history`` against ``model``.

    ``partition`` splits the history with ``model.partition`` (P-compositionality); without
    it, ``model.unpartitioned()`` checks everything at once. Partitions are searched
    interleaved, smallest first, and the check stops at the first violation (the partitions
    not finished then are ``unknown``, "not searched"), unless ``stop_at_first`` is false.
    After ``timeout_s`` seconds, ``max_steps`` search steps in one partition, or when the
    searches' estimated memory passes ``max_memory_bytes`` (default
    :func:`default_max_memory_bytes`), the undecided partitions are ``unknown`` with the
    reason, never a guess. With ``workers`` > 1, partitions still undecided after half a
    second start over in that many forked processes (the first violation stops them all).
    """
    started = time.monotonic()
    ops = [op for op in history if op.outcome != "fail"]
    if partition:
        parts, part_model = model.partition(ops), model
    else:
        parts, part_model = [ops], model.unpartitioned()
    parts = [p for p in parts if p]
    memory = default_max_memory_bytes() if max_memory_bytes is None else max_memory_bytes
    limits = Limits(None if timeout_s is None else started + timeout_s, max_steps, memory,
                    stop_at_first)
    if workers > 1 and len(parts) > 1:
        results = _check_adaptive(parts, part_model, limits, workers, started + _SOLO_S)
    else:
        results = check_partitions(parts, part_model, limits)
    return LinearizabilityResult(_combine(results), results, time.monotonic() - started,
                                 model.name)


def _combine(results: Sequence[PartitionResult]) -> Verdict:
    verdicts = {r.verdict for r in results}
    if "not-linearizable" in verdicts:
        return "not-linearizable"
    return "unknown" if "unknown" in verdicts else "linearizable"


def check_partition(ops: Sequence[Operation], model: Model[Any], deadline: float | None = None,
                    max_steps: int | None = None,
                    max_memory_bytes: int | None = None) -> PartitionResult:
    """Check one sub-history (no ``fail`` operations) against ``model`` without splitting;
    ``deadline`` is a ``time.monotonic()`` instant, the memory bound defaults as in
    :func:`check_linearizable`."""
    memory = default_max_memory_bytes() if max_memory_bytes is None else max_memory_bytes
    limits = Limits(deadline, max_steps, memory)
    return check_partitions([list(ops)], model, limits)[0]


def check_partitions(parts: Sequence[list[Operation]], model: Model[Any], limits: Limits,
                     stop: Any = None) -> list[PartitionResult]:
    """Check ``parts`` interleaved by budget, in this process; results in ``parts`` order.

    ``stop`` is an optional ``multiprocessing.Event``: set by whoever finds a violation,
    it ends the other searches (used by parallel workers).
    """
    scheduler = _Scheduler(parts, model, limits, stop)
    scheduler.run()
    return scheduler.results()


class _Task:
    """One partition's search and its generator, advanced slice by slice.

    The first slice runs the plain search: most partitions end within it, and the plain
    search has no per-step cost for the reductions. A partition still open after it starts
    over with the pruned search (forced reads, the model's dead ends)."""

    def __init__(self, index: int, ops: list[Operation], model: Model[Any]) -> None:
        self.index = index
        self.ops = ops
        keys = {op.key for op in ops}
        self.key = next(iter(keys)) if len(keys) == 1 else None
        self.search = Search(ops, model, prune=False)
        self.gen = self.search.steps_iter()
        self.pruned = False
        self.abandoned_steps = 0  # steps of the plain search, once replaced
        self.memory_bytes = 0

    @property
    def steps(self) -> int:
        """Search steps so far, over both searches."""
        return self.abandoned_steps + self.search.steps

    def advance(self) -> SearchVerdict | None:
        """Run one slice; the verdict when the search ended, else None."""
        try:
            next(self.gen)
        except StopIteration as stop:
            verdict: SearchVerdict = stop.value
            return verdict
        if not self.pruned:
            self._start_pruned()
        return None

    def _start_pruned(self) -> None:
        plain = self.search
        self.gen.close()
        self.abandoned_steps = plain.steps
        self.search = Search(self.ops, plain.model, prune=True)
        self.gen = self.search.steps_iter()
        self.pruned = True

    def result(self, verdict: Verdict, reason: str = "") -> PartitionResult:
        out = PartitionResult(self.key, verdict, self.ops, self.steps, reason=reason,
                              memory_bytes=self.memory_bytes)
        if verdict == "not-linearizable":
            (out.prefix, out.prefix_states, out.final_state, out.unplaced,
             out.fail_time) = self._explainer().counterexample()
        return out

    def _explainer(self) -> Search:
        """The search whose longest path explains the failure best: the pruned search stops
        paths early at dead ends, so an unpruned one is tried, within a step budget."""
        if not self.pruned:
            return self.search
        plain = Search(self.ops, self.search.model, prune=False)
        gen = plain.steps_iter()
        for _ in range(_EXPLAIN_SLICES):
            try:
                next(gen)
            except StopIteration as stop:
                return plain if stop.value == "not-linearizable" else self.search
        gen.close()
        return self.search

    @property
    def label(self) -> str:
        """``partition key 'k'``, or ``the history`` when it is not split by key."""
        return "the history" if self.key is None else f"partition key {self.key!r}"

    def progress(self) -> str:
        """How far the search got: partition, steps, longest linearized prefix, memory."""
        return (f"{self.label} ({len(self.ops)} operations) after {self.steps:,} steps, "
                f"longest linearized prefix {self.search.linearized_count()} of "
                f"{len(self.ops)}, about {self.memory_bytes / _MIB:.0f} MiB of search state")

    def give_up(self) -> None:
        self.gen.close()
        self.search.release()


class _Scheduler:
    """Round-robin over unfinished partitions, smallest first, one slice each per round."""

    def __init__(self, parts: Sequence[list[Operation]], model: Model[Any], limits: Limits,
                 stop: Any) -> None:
        self.limits = limits
        self.stop = stop
        self.tasks = [_Task(i, list(p), model) for i, p in enumerate(parts)]
        self.done: dict[int, PartitionResult] = {}
        self.total_memory_bytes = 0

    def results(self) -> list[PartitionResult]:
        return [self.done[t.index] for t in self.tasks]

    def run(self, pause_at: float | None = None) -> list[_Task]:
        """Search until every partition is decided (or the check is over), or until a round
        ends after the ``time.monotonic()`` instant ``pause_at`` (at least one round runs):
        then the undecided tasks are returned (still resumable by another ``run``)."""
        active = sorted((t for t in self.tasks if t.index not in self.done),
                        key=lambda t: len(t.ops))
        while active:
            for task in list(active):
                if task.index not in self.done and self._turn(task, active):
                    return []
            if pause_at is not None and time.monotonic() > pause_at:
                return active
        return []

    def _turn(self, task: _Task, active: list[_Task]) -> bool:
        """One slice of ``task``; True when the whole check is over."""
        verdict = task.advance()
        if verdict is None:
            self._account(task)
        else:
            self._finish(task, active, verdict)
            if verdict == "not-linearizable" and self.limits.stop_at_first:
                self._abandon(active, f"not searched: {task.label} is not linearizable")
                if self.stop is not None:
                    self.stop.set()
                return True
            return False
        return self._check_bounds(task, active)

    def _check_bounds(self, task: _Task, active: list[_Task]) -> bool:
        limits = self.limits
        if limits.deadline is not None and time.monotonic() > limits.deadline:
            for other in list(active):
                if other is not task:
                    self._finish(other, active, "unknown", f"time-out; {other.progress()}")
            self._finish(task, active, "unknown", f"time-out: {task.progress()}")
            return True
        if self.stop is not None and self.stop.is_set():
            self._abandon(active, "not searched: another worker found a violation")
            return True
        if limits.max_steps is not None and task.steps >= limits.max_steps:
            self._finish(task, active, "unknown",
                         f"step bound {limits.max_steps:,} reached: {task.progress()}")
            return False
        bound = limits.max_memory_bytes
        if bound is not None and self.total_memory_bytes > bound:
            victim = max(active, key=lambda t: t.memory_bytes)
            self._finish(victim, active, "unknown",
                         f"memory bound {bound / _MIB:.0f} MiB reached: {victim.progress()}")
        return False

    def _account(self, task: _Task) -> None:
        now = task.search.memory_bytes()
        self.total_memory_bytes += now - task.memory_bytes
        task.memory_bytes = now

    def _finish(self, task: _Task, active: list[_Task], verdict: Verdict,
                reason: str = "") -> None:
        self.done[task.index] = task.result(verdict, reason)
        self.total_memory_bytes -= task.memory_bytes
        if verdict == "unknown":
            task.give_up()
        active.remove(task)

    def _abandon(self, active: list[_Task], reason: str) -> None:
        for other in list(active):
            self._finish(other, active, "unknown", f"{reason}; {other.progress()}")


def _deal(parts: list[list[Operation]], workers: int) -> list[list[int]]:
    """Partition indexes dealt to ``workers`` groups, largest first, to the lightest group."""
    groups: list[list[int]] = [[] for _ in range(workers)]
    loads = [0] * workers
    for i in sorted(range(len(parts)), key=lambda k: -len(parts[k])):
        g = loads.index(min(loads))
        groups[g].append(i)
        loads[g] += len(parts[i])
    return [g for g in groups if g]


_WORKER_STOP: Any = None


def _init_worker(stop: Any) -> None:
    global _WORKER_STOP
    _WORKER_STOP = stop


def _check_group(parts: list[list[Operation]], model: Model[Any],
                 limits: Limits) -> list[PartitionResult]:
    return check_partitions(parts, model, limits, _WORKER_STOP)


def _check_adaptive(parts: list[list[Operation]], model: Model[Any], limits: Limits,
                    workers: int, solo_until: float) -> list[PartitionResult]:
    """In this process until ``solo_until``; then, if several partitions are undecided, they
    start over in ``workers`` processes (most histories finish before it pays to start any)."""
    scheduler = _Scheduler(parts, model, limits, None)
    left = scheduler.run(pause_at=solo_until)
    if len(left) > 1:
        for task in left:
            task.give_up()
        rest = _check_parallel([t.ops for t in left], model, limits, workers)
        for task, result in zip(left, rest, strict=True):
            scheduler.done[task.index] = result
    elif left:
        scheduler.run()
    return scheduler.results()


def _check_parallel(parts: list[list[Operation]], model: Model[Any], limits: Limits,
                    workers: int) -> list[PartitionResult]:
    groups = _deal(parts, min(workers, len(parts)))
    share = None if limits.max_memory_bytes is None else limits.max_memory_bytes // len(groups)
    worker_limits = Limits(limits.deadline, limits.max_steps, share, limits.stop_at_first)
    import multiprocessing  # here: a check without workers starts faster
    from concurrent.futures import ProcessPoolExecutor

    # fork: workers start in milliseconds and need no ``if __name__ == "__main__"`` guard in
    # the caller's script (spawn and forkserver re-import the main module)
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    ctx = multiprocessing.get_context(method)
    stop = ctx.Event()
    out: list[PartitionResult | None] = [None] * len(parts)
    with ProcessPoolExecutor(max_workers=len(groups), mp_context=ctx,
                             initializer=_init_worker, initargs=(stop,)) as pool:
        futures = [(g, pool.submit(_check_group, [parts[i] for i in g], model, worker_limits))
                   for g in groups]
        for group, fut in futures:
            for i, result in zip(group, fut.result(), strict=True):
                out[i] = result
    return [r for r in out if r is not None]

"""Several workloads in one run: each with its own clients, keys and checks.

:func:`pnyx.harness.run.run_test` drives one :class:`~pnyx.harness.workloads.Workload`;
:class:`CompositeWorkload` is one that runs several side by side (``pnyx service-demo``
runs ``kv``, ``watch`` and ``lock-fenced`` together).  What keeps them apart:

- **keys**: every workload keeps its keys under ``<prefix><name>/`` (:meth:`Workload.key`),
  so parts with distinct names never touch each other's keys (two parts with the same
  name are refused);
- **clients and processes**: each part owns a fixed range of the run's client indexes
  (``clients`` of them, in the order given), so ``concurrency`` must be their sum.  The
  run loop gives client ``i`` the processes ``i``, ``i + concurrency``, ... (a new process
  after each ``info``), so a client process ``p >= 0`` belongs to client
  ``p % concurrency`` and hence to exactly one part;
- **set-up and final operations** (negative processes such as the final reads' ``-2``,
  which several parts could use): the parts' ``setup`` and ``final`` run one after the
  other, and each part owns the invocations it recorded meanwhile;
- **checks**: each part checks only its own operations (a sub-history keeping the
  operations' indexes), and its results are named ``<part>: <check>``; a checker that
  raises gives an ``unknown`` result for its part without hiding the others.
"""

from __future__ import annotations

import dataclasses
import functools
import traceback
from collections.abc import Awaitable, Callable, Sequence

from pnyx.check.history import History, Operation
from pnyx.etcdclient import AsyncEtcdClient
from pnyx.harness.workloads import CheckResult, Client, Recorder, Workload

__all__ = ["CompositeWorkload"]

_Invocation = tuple[int, int]
"""An operation's identity in the recorded history: (process, invocation time ns)."""


class CompositeWorkload(Workload):
    """``parts``: ``(workload, clients)`` pairs; run with ``concurrency`` equal to the sum
    of their ``clients`` (see the module docstring)."""

    def __init__(self, parts: Sequence[tuple[Workload, int]]) -> None:
        super().__init__()
        if not parts:
            raise ValueError("a composite workload needs at least one part")
        names = [w.name for w, _ in parts]
        if len(set(names)) != len(names):
            raise ValueError(f"the parts' names must differ (their keys would collide): "
                             f"{', '.join(names)}")  # fmt: skip
        if any(n < 1 for _, n in parts):
            raise ValueError("every part needs at least one client")
        self.parts = [w for w, _ in parts]
        self.clients = [n for _, n in parts]
        self.name = "+".join(names)
        self.prefix = self.parts[0].prefix
        self._owner_of_client: list[int] = [k for k, n in enumerate(self.clients)
                                            for _ in range(n)]  # fmt: skip
        self._owned: list[set[_Invocation]] = [set() for _ in self.parts]
        """Per part: the negative-process invocations it recorded in setup and final."""

    @property
    def concurrency(self) -> int:
        """The number of clients the run must have: one per client of every part."""
        return len(self._owner_of_client)

    def part_of(self, process: int) -> int | None:
        """The index of the part a client process belongs to (None: not a client's)."""
        if process < 0:
            return None
        return self._owner_of_client[process % self.concurrency]

    async def setup(self, etcd: AsyncEtcdClient, endpoints: Sequence[str],
                    recorder: Recorder) -> None:  # fmt: skip
        for k, part in enumerate(self.parts):
            await self._owning(k, recorder, functools.partial(part.setup, etcd, endpoints,
                                                              recorder))

    async def step(self, client: Client) -> None:
        if client.concurrency != self.concurrency:
            raise ValueError(f"the {self.name} workload needs {self.concurrency} clients "
                             f"({', '.join(map(str, self.clients))}), not "
                             f"{client.concurrency}")  # fmt: skip
        await self.parts[self._owner_of_client[client.index]].step(client)

    async def final(self, etcd: AsyncEtcdClient, recorder: Recorder) -> None:
        """Every part's final phase in turn, each attempted even if an earlier one
        raised (the first error is raised at the end)."""
        await _each(self.parts, lambda k, part: self._owning(
            k, recorder, functools.partial(part.final, etcd, recorder)))

    async def close(self) -> None:
        await _each(self.parts, lambda k, p: p.close())

    async def _owning(self, k: int, recorder: Recorder,
                      call: Callable[[], Awaitable[None]]) -> None:  # fmt: skip
        """Run ``call``; the negative-process invocations recorded meanwhile are part
        ``k``'s."""
        first = len(recorder.events)
        try:
            await call()
        finally:
            self._owned[k].update((e.process, e.time) for e in recorder.events[first:]
                                  if e.process < 0 and e.type == "invoke")  # fmt: skip

    def owner(self, op: Operation) -> int | None:
        """The part an operation belongs to (None: no part's, e.g. the run loop's)."""
        if op.process >= 0:
            return self.part_of(op.process)
        return next((k for k, owned in enumerate(self._owned)
                     if (op.process, op.call_time) in owned), None)  # fmt: skip

    def check(self, history: History) -> list[CheckResult]:
        """Each part's checks on its own operations, named ``<part>: <check>``."""
        mine: list[list[Operation]] = [[] for _ in self.parts]
        for op in history.operations:
            k = self.owner(op)
            if k is not None:
                mine[k].append(op)
        results: list[CheckResult] = []
        for part, ops in zip(self.parts, mine, strict=True):
            results += _checked(part, History(ops, history.source))
        return results


def _checked(part: Workload, history: History) -> list[CheckResult]:
    """``part.check(history)``, its results renamed; ``unknown`` if the checker raised."""
    try:
        found = part.check(history)
    except Exception as exc:
        return [CheckResult(part.name, "unknown", f"the checker failed: {exc!r}",
                            traceback.format_exc())]  # fmt: skip
    return [dataclasses.replace(r, name=f"{part.name}: {r.name}") for r in found]


async def _each(parts: Sequence[Workload],
                call: Callable[[int, Workload], Awaitable[None]]) -> None:  # fmt: skip
    """``call(k, part)`` for every part in turn; the first exception is raised once all
    have been called."""
    error: BaseException | None = None
    for k, part in enumerate(parts):
        try:
            await call(k, part)
        except Exception as exc:
            error = error or exc
    if error is not None:
        raise error

"""Operations as invoke/complete pairs: the history model every checker in ``pnyx.check`` reads."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Literal

import msgspec

from pnyx.core.history import HistoryEvent

Outcome = Literal["ok", "fail", "info"]


class HistoryError(ValueError):
    """A history that cannot be read: says which file and line, and what was wrong."""

    def __init__(self, message: str, *, source: str = "", line: int | None = None) -> None:
        self.source = source
        self.line = line
        self.reason = message
        where = source
        if line is not None:
            where = f"{source}:{line}" if source else f"line {line}"
        super().__init__(f"{where}: {message}" if where else message)


class Operation(msgspec.Struct, frozen=True):
    """One client operation: its invocation joined with its completion.

    ``value`` is the argument recorded at invocation; ``output`` the value recorded with an
    ``ok`` completion (``None`` otherwise). ``outcome`` is ``ok``, ``fail`` (certainly did
    not happen) or ``info`` (may have happened at any time after invocation, or never; an
    operation that never completed is ``info``). ``call`` / ``ret`` are ranks in the total
    order of events (``ret`` is ``None`` for an operation that never completed);
    ``call_time`` / ``ret_time`` are the recorded timestamps, for display only.
    """

    index: int
    process: int
    f: str
    value: Any
    output: Any
    outcome: Outcome
    call: int
    ret: int | None
    key: Any = None
    call_time: int = 0
    ret_time: int | None = None


def freeze(value: Any) -> Any:
    """Turn lists into tuples, sets into frozensets, dicts into sorted item tuples (hashable)."""
    if isinstance(value, list | tuple):
        return tuple(freeze(v) for v in value)
    if isinstance(value, set | frozenset):
        return frozenset(freeze(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted(((freeze(k), freeze(v)) for k, v in value.items()), key=repr))
    return value


class History:
    """A list of operations in invocation order, built from raw events or read from a file."""

    def __init__(self, operations: Sequence[Operation], source: str = "") -> None:
        self.operations: list[Operation] = list(operations)
        self.source = source

    def __len__(self) -> int:
        return len(self.operations)

    def __iter__(self) -> Any:
        return iter(self.operations)

    def __repr__(self) -> str:
        return f"History({len(self.operations)} operations, source={self.source!r})"

    @property
    def processes(self) -> list[int]:
        """The process ids, sorted."""
        return sorted({op.process for op in self.operations})

    @classmethod
    def from_events(
        cls,
        events: Iterable[HistoryEvent],
        source: str = "",
        lines: Sequence[int] | None = None,
    ) -> History:
        """Pair invoke events with their completions (as recorded by a client or a log).

        Events are ordered by ``(time, position)``; when every time is 0 the recorded order
        is the real-time order. An invocation never completed becomes an ``info`` operation.
        ``lines`` gives, per event, the line number used in error messages.
        """
        evs = list(events)
        order = sorted(range(len(evs)), key=lambda i: (evs[i].time, i))
        rank = [0] * len(evs)
        for r, i in enumerate(order):
            rank[i] = r
        pairer = _Pairer(source)
        for i, ev in enumerate(evs):
            line = lines[i] if lines is not None else i + 1
            pairer.add(ev, rank[i], line)
        return cls(pairer.finish(), source)

    def to_events(self) -> list[HistoryEvent]:
        """The raw events again (invocations and completions in rank order)."""
        out: list[tuple[int, HistoryEvent]] = []
        for op in self.operations:
            out.append((op.call, HistoryEvent(op.process, "invoke", op.f, op.value, op.key,
                                              op.call_time)))
            if op.ret is not None:
                val = op.output if op.outcome == "ok" else op.value
                out.append((op.ret, HistoryEvent(op.process, op.outcome, op.f, val, op.key,
                                                 op.ret_time or 0)))
        return [ev for _, ev in sorted(out, key=lambda p: p[0])]


class _Pairer:
    """Joins invocations to completions per process, enforcing one operation in flight."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.open: dict[int, tuple[HistoryEvent, int, int]] = {}
        self.done: list[tuple[Any, ...]] = []  # Operation fields, without the index

    def add(self, ev: HistoryEvent, rank: int, line: int) -> None:
        if ev.type == "invoke":
            if ev.process in self.open:
                raise HistoryError(
                    f"process {ev.process} invokes {ev.f!r} while its previous operation is "
                    "still open; one process has at most one operation in flight",
                    source=self.source, line=line)
            self.open[ev.process] = (ev, rank, line)
            return
        if ev.type not in ("ok", "fail", "info"):
            raise HistoryError(f"event type {ev.type!r} is not invoke/ok/fail/info",
                               source=self.source, line=line)
        started = self.open.pop(ev.process, None)
        if started is None:
            raise HistoryError(
                f"process {ev.process} completes {ev.f!r} ({ev.type}) without an invocation",
                source=self.source, line=line)
        inv, call, _ = started
        if inv.f != ev.f:
            raise HistoryError(
                f"process {ev.process} completes {ev.f!r} but invoked {inv.f!r}",
                source=self.source, line=line)
        output = freeze(ev.value) if ev.type == "ok" else None
        self.done.append((call, ev.process, ev.f, freeze(inv.value), output, ev.type, rank,
                          freeze(inv.key), inv.time, ev.time))

    def finish(self) -> list[Operation]:
        for inv, call, _ in self.open.values():
            self.done.append((call, inv.process, inv.f, freeze(inv.value), None, "info", None,
                              freeze(inv.key), inv.time, None))
        self.done.sort(key=lambda p: p[0])
        return [Operation(i, proc, f, value, output, outcome, call, ret, key, call_time, ret_time)
                for i, (call, proc, f, value, output, outcome, ret, key, call_time, ret_time)
                in enumerate(self.done)]

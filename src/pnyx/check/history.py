"""Operations as invoke/complete pairs: the history model every checker in ``pnyx.check`` reads."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from operator import itemgetter
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


_SCALARS = frozenset((str, int, float, bool, type(None)))


def freeze(value: Any) -> Any:
    """Turn lists into tuples, sets into frozensets, dicts into sorted item tuples (hashable)."""
    kind = type(value)
    if kind in _SCALARS:
        return value
    if kind is tuple and all(type(v) in _SCALARS for v in value):
        return value
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
        evs = events if isinstance(events, list) else list(events)
        times = [ev.time for ev in evs]
        rank: Sequence[int] = range(len(evs))
        if times != sorted(times):
            order = sorted(rank, key=times.__getitem__)  # stable: ties keep file order
            ranks = [0] * len(evs)
            for r, i in enumerate(order):
                ranks[i] = r
            rank = ranks
        return cls(_pair(evs, rank, lines, source), source)

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


def _pair(evs: list[HistoryEvent], rank: Sequence[int], lines: Sequence[int] | None,
          source: str) -> list[Operation]:
    """Join invocations to completions per process, enforcing one operation in flight."""
    def where(i: int) -> int:
        return lines[i] if lines is not None else i + 1

    open_: dict[int, tuple[HistoryEvent, int]] = {}
    done: list[tuple[Any, ...]] = []  # Operation fields after the index
    for i, ev in enumerate(evs):
        kind, proc = ev.type, ev.process
        if kind == "invoke":
            if proc in open_:
                raise HistoryError(
                    f"process {proc} invokes {ev.f!r} while its previous operation is "
                    "still open; one process has at most one operation in flight",
                    source=source, line=where(i))
            open_[proc] = (ev, rank[i])
            continue
        started = open_.pop(proc, None)
        if started is None or kind not in _COMPLETIONS or started[0].f != ev.f:
            raise _completion_error(ev, started, source, where(i))
        inv, call = started
        value, key, output = inv.value, inv.key, ev.value if kind == "ok" else None
        done.append((proc, ev.f, value if type(value) in _SCALARS else freeze(value),
                     output if type(output) in _SCALARS else freeze(output), kind, call,
                     rank[i], key if type(key) in _SCALARS else freeze(key), inv.time,
                     ev.time))
    for inv, call in open_.values():
        done.append((inv.process, inv.f, freeze(inv.value), None, "info", call, None,
                     freeze(inv.key), inv.time, None))
    done.sort(key=itemgetter(5))  # by call rank
    return [Operation(i, *fields) for i, fields in enumerate(done)]


_COMPLETIONS = frozenset(("ok", "fail", "info"))


def _completion_error(ev: HistoryEvent, started: tuple[HistoryEvent, int] | None, source: str,
                      line: int) -> HistoryError:
    if ev.type not in _COMPLETIONS:
        return HistoryError(f"event type {ev.type!r} is not invoke/ok/fail/info",
                            source=source, line=line)
    if started is None:
        return HistoryError(
            f"process {ev.process} completes {ev.f!r} ({ev.type}) without an invocation",
            source=source, line=line)
    return HistoryError(f"process {ev.process} completes {ev.f!r} but invoked "
                        f"{started[0].f!r}", source=source, line=line)

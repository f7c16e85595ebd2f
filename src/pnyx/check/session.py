"""Session guarantees (Terry et al., 1994) on a register/KV history with unique writes.

A session is a process. "Older" is judged only by what is certain: ``w ⊏ w'`` when the
write ``w`` is strictly before ``w'`` in causal order ``co = (so | rf)+`` (a store whose
version order went against causality is caught), plus, for monotonic reads, the order in
which the session itself observed values. Each violation names the two to four operations
that form it (plus the causal chain when one is involved):

- ``read-your-writes``: a session wrote ``w'`` to x, then read x and got the initial value
  or a value ``⊏ w'``;
- ``monotonic-reads``: a session read x from ``w1`` and later read the initial value, a
  value ``⊏ w1``, or again a value it had read before ``w1`` (it went back);
- ``monotonic-writes``: a session wrote ``w1`` then ``w2``; another (or the same) session
  read ``w2``, then read ``w1``'s key and got the initial value or a value ``⊏ w1``;
- ``writes-follow-reads``: a session read ``w1`` then wrote ``w2``; a session read ``w2``,
  then read ``w1``'s key and got the initial value or a value ``⊏ w1``.

Each pattern implies a causal (CM) bad pattern (``WriteCORead``, ``WriteCOInitRead`` or
``CyclicHB``), so a causal history satisfies all four. Cost: one pass per session with
bitset operations, ``O(n·W/64)`` words.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

from pnyx.check.consistency_report import ConsistencyResult, Violation, finish
from pnyx.check.history import History, Operation
from pnyx.check.registers import INIT, NOWHERE, Access, RegisterHistory, lowest_bit

__all__ = ["GUARANTEES", "check_session", "session_violations"]

GUARANTEES = ("read-your-writes", "monotonic-reads", "monotonic-writes",
              "writes-follow-reads")


def check_session(history: History | Sequence[Operation], *,
                  guarantees: Iterable[str] = GUARANTEES, initial: Any = None,
                  model: str = "") -> ConsistencyResult:
    """Check the given session guarantees; the result's model is ``model`` (default: the
    single guarantee's name, or ``session`` for several)."""
    started = time.monotonic()
    wanted = tuple(guarantees)
    for g in wanted:
        if g not in GUARANTEES:
            raise ValueError(f"unknown session guarantee {g!r}; choose from "
                             f"{', '.join(GUARANTEES)}")
    rh = RegisterHistory(history, initial)
    found = session_violations(rh, wanted)
    name = model or (wanted[0] if len(wanted) == 1 else "session")
    return finish(name, found, time.monotonic() - started, len(rh.operations))


def session_violations(rh: RegisterHistory, guarantees: Iterable[str] = GUARANTEES,
                       ) -> list[Violation]:
    """Every violation of the given guarantees, guarantee by guarantee."""
    found: list[Violation] = []
    for g in guarantees:
        if g == "monotonic-writes":
            prior = _prior_writes(rh)
        elif g == "writes-follow-reads":
            prior = _prior_reads(rh)
        for process in sorted(rh.sessions):
            if g == "read-your-writes":
                found.extend(_ryw(rh, process))
            elif g == "monotonic-reads":
                found.extend(_mr(rh, process))
            else:
                found.extend(_observer(rh, process, g, prior))
    return found


def _session(rh: RegisterHistory, process: int) -> list[Access]:
    return [a for a in (rh.accesses[n] for n in rh.sessions[process]) if a.src != NOWHERE]


def _ryw(rh: RegisterHistory, process: int) -> list[Violation]:
    co = rh.causal()
    found: list[Violation] = []
    own = 0
    for a in _session(rh, process):
        if a.is_write:
            own |= 1 << a.wbit
            continue
        mine = own & rh.key_mask.get(a.key, 0)
        if not mine:
            continue
        stale = mine if a.src == INIT else mine & co.later[rh.accesses[a.src].wbit]
        if stale:
            w = rh.writes[stale.bit_length() - 1]  # the latest such own write
            got = "the initial value" if a.src == INIT else (
                f"{a.value!r}, written by {rh.describe(a.src)}, causally before it")
            ops = [rh.op(w), a.op] if a.src == INIT else [rh.op(a.src), rh.op(w), a.op]
            found.append(Violation("read-your-writes", (
                f"process {process} wrote {rh.describe(w)}, then {rh.describe(a.node)} got "
                f"{got}"), ops))
    return found


def _mr(rh: RegisterHistory, process: int) -> list[Violation]:
    co = rh.causal()
    found: list[Violation] = []
    older: dict[Any, int] = {}  # key -> writes the session has seen superseded
    last: dict[Any, Access] = {}  # key -> the session's latest read of it
    history: dict[Any, list[Access]] = {}
    for a in _session(rh, process):
        if a.is_write:
            continue
        prev = last.get(a.key)
        if prev is not None and _went_back(rh, older.get(a.key, 0), prev, a):
            found.append(_mr_violation(rh, process, history[a.key], a))
        if a.src != INIT:
            mask = older.get(a.key, 0) | co.past[a.src]
            if prev is not None and prev.src >= 0 and prev.src != a.src:
                mask |= 1 << rh.accesses[prev.src].wbit
            older[a.key] = mask
        last[a.key] = a
        history.setdefault(a.key, []).append(a)
    return found


def _went_back(rh: RegisterHistory, older: int, prev: Access, a: Access) -> bool:
    if a.src == INIT:
        return prev.src != INIT
    return a.src != prev.src and bool(older >> rh.accesses[a.src].wbit & 1)


def _mr_violation(rh: RegisterHistory, process: int, earlier: list[Access],
                  a: Access) -> Violation:
    co = rh.causal()
    for i in range(len(earlier) - 1, -1, -1):
        e = earlier[i]
        if e.src < 0:
            continue
        if a.src == INIT or (a.src != e.src and co.before(a.src, e.src)):
            why = "the initial value" if a.src == INIT else (
                f"{a.value!r}, causally before it: {co.chain_text(a.src, e.src)}")
            return Violation("monotonic-reads", (
                f"process {process} read {rh.describe(e.node)}, then {rh.describe(a.node)} "
                f"got {why}"), [e.op, a.op] + ([] if a.src == INIT else [rh.op(a.src)]))
        if e.src == a.src:
            between = next(b for b in earlier[i + 1:] if b.src != a.src)
            return Violation("monotonic-reads", (
                f"process {process} read {rh.describe(e.node)}, then "
                f"{rh.describe(between.node)}, then went back: {rh.describe(a.node)}"),
                [e.op, between.op, a.op])
    e = earlier[-1]  # co has a cycle through these writes: no strict order to show
    return Violation("monotonic-reads", (
        f"process {process} read {rh.describe(e.node)}, then {rh.describe(a.node)}, a value "
        "it had seen superseded (through a cycle in causal order)"), [e.op, a.op])


def _observer(rh: RegisterHistory, process: int, name: str,
              required_by: dict[int, int]) -> list[Violation]:
    """MW / WFR: after reading ``w2``, the session must see the writes ``required_by[w2]``."""
    co = rh.causal()
    found: list[Violation] = []
    required = 0
    read_before: list[Access] = []
    for a in _session(rh, process):
        if a.is_write:
            continue
        need = required & rh.key_mask.get(a.key, 0)
        if need:
            stale = need if a.src == INIT else need & co.later[rh.accesses[a.src].wbit]
            if stale:
                found.append(_observer_violation(rh, name, a, stale, read_before,
                                                 required_by))
        if a.src >= 0:
            required |= required_by.get(a.src, 0)
            read_before.append(a)
    return found


def _observer_violation(rh: RegisterHistory, name: str, a: Access, stale: int,
                        read_before: list[Access], required_by: dict[int, int]) -> Violation:
    w1 = rh.writes[lowest_bit(stale)]
    r1 = next(r for r in reversed(read_before)
              if required_by.get(r.src, 0) >> rh.accesses[w1].wbit & 1)
    w2 = r1.src
    how = ("wrote" if name == "monotonic-writes" else "read the value of")
    got = "the initial value" if a.src == INIT else (
        f"{a.value!r}, causally before {rh.describe(w1)}")
    ops = [rh.op(w1), rh.op(w2), r1.op, a.op]
    return Violation(name, (
        f"process {rh.accesses[w2].session} {how} {rh.describe(w1)} before writing "
        f"{rh.describe(w2)}; process {a.session} read it ({rh.describe(r1.node)}), then "
        f"{rh.describe(a.node)} got {got}"), ops)


def _prior_writes(rh: RegisterHistory) -> dict[int, int]:
    """Per write node: its session's earlier writes (bitset)."""
    out: dict[int, int] = {}
    for nodes in rh.sessions.values():
        acc = 0
        for n in nodes:
            a = rh.accesses[n]
            if a.is_write:
                out[n] = acc
                acc |= 1 << a.wbit
    return out


def _prior_reads(rh: RegisterHistory) -> dict[int, int]:
    """Per write node: the writes its session read from before it (bitset)."""
    out: dict[int, int] = {}
    for nodes in rh.sessions.values():
        acc = 0
        for n in nodes:
            a = rh.accesses[n]
            if a.is_write:
                out[n] = acc
            elif a.src >= 0:
                acc |= 1 << rh.accesses[a.src].wbit
    return out

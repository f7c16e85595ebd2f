"""Random register and transaction histories from small store simulations, for testing the
consistency checkers (``pnyx.check.sequential`` / ``causal`` / ``session`` /
``convergence`` / ``snapshot_isolation``). Ground truth comes from the simulated store:

- ``atomic``: one copy; every operation takes effect at an instant inside its interval, so
  the history is linearizable, hence sequential, causal and within every session guarantee;
- ``causal``: one replica per process, writes applied locally and sent to the others,
  delivered in causal order (vector clocks) after random delays, concurrent writes
  resolved last-writer-wins by (Lamport time, replica): causal convergence, hence causal
  memory and the session guarantees; usually not linearizable; final reads converge;
- ``eventual``: the same without causal delivery (any order): final reads still converge
  (last-writer-wins), causality can break; with ``sticky=False`` each operation goes to a
  random replica, and the session guarantees break too.

Written values are unique (``"v<n>"``). ``final_reads=True`` appends, after every message
is delivered, one ``final-read`` per replica and key. Transactions: ``si_history`` runs
rw-register transactions on a multi-version store with snapshot reads, optionally with
first-committer-wins (snapshot isolation; without it lost updates happen, and the
simulation records them). Deterministic: everything comes from ``random.Random(seed)``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from pnyx.check.history import History
from pnyx.core.history import HistoryEvent


@dataclass
class _Op:
    process: int
    f: str
    key: Any
    value: Any
    call: float
    ret: float
    output: Any = None


def _history(ops: list[_Op]) -> History:
    timed: list[tuple[float, int, HistoryEvent]] = []
    for i, op in enumerate(ops):
        arg = op.value if op.f == "write" or op.f == "final-read" else None
        timed.append((op.call, 2 * i, HistoryEvent(op.process, "invoke", op.f, arg, op.key)))
        out = op.value if op.f == "write" else op.output
        timed.append((op.ret, 2 * i + 1, HistoryEvent(op.process, "ok", op.f, out, op.key)))
    timed.sort(key=lambda t: (t[0], t[1]))
    events = [HistoryEvent(e.process, e.type, e.f, e.value, e.key, rank)
              for rank, (_, _, e) in enumerate(timed)]
    return History.from_events(events)


def atomic_history(seed: int, ops: int = 50, processes: int = 4, keys: int = 2,
                   p_write: float = 0.5) -> History:
    """A linearizable history: effects in a random global order, intervals around them."""
    rng = random.Random(seed)
    state: dict[str, str] = {}
    effects: dict[int, list[tuple[float, _Op]]] = {p: [] for p in range(processes)}
    for n in range(ops):
        p, key = rng.randrange(processes), f"k{rng.randrange(keys)}"
        t = float(n + 1)
        if rng.random() < p_write:
            op = _Op(p, "write", key, f"v{n}", t, t)
            state[key] = op.value
        else:
            op = _Op(p, "read", key, None, t, t, state.get(key))
        effects[p].append((t, op))
    out: list[_Op] = []
    for seq in effects.values():
        for i, (t, op) in enumerate(seq):
            prev = seq[i - 1][0] if i else t - 4.0
            nxt = seq[i + 1][0] if i + 1 < len(seq) else t + 4.0
            op.call = prev + (t - prev) * rng.uniform(0.55, 0.95)
            op.ret = t + (nxt - t) * rng.uniform(0.05, 0.45)
            out.append(op)
    return _history(out)


@dataclass
class _Replica:
    clock: list[int]
    store: dict[str, tuple[tuple[int, int], str]] = field(default_factory=dict)
    lamport: int = 0


@dataclass(order=True)
class _Msg:
    due: float
    seq: int
    dst: int = field(compare=False)
    origin: int = field(compare=False)
    deps: tuple[int, ...] = field(compare=False)
    key: str = field(compare=False)
    stamp: tuple[int, int] = field(compare=False)
    value: str = field(compare=False)


def replicated_history(seed: int, ops: int = 60, processes: int = 4, keys: int = 2,
                       causal: bool = True, final_reads: bool = False,
                       max_delay: float = 6.0, p_write: float = 0.5,
                       sticky: bool = True) -> History:
    """A history of a replicated store (one replica per process); see the module doc.
    ``sticky=False``: each operation goes to a random replica (session guarantees break)."""
    rng = random.Random(seed)
    reps = [_Replica([0] * processes) for _ in range(processes)]
    inbox: list[_Msg] = []
    out: list[_Op] = []
    seq = 0
    for n in range(ops):
        now = float(n + 1)
        _deliver(reps, inbox, now, causal)
        p, key = rng.randrange(processes), f"k{rng.randrange(keys)}"
        at = p if sticky else rng.randrange(processes)
        rep = reps[at]
        if rng.random() < p_write:
            rep.lamport += 1
            rep.clock[at] += 1
            stamp, value = (rep.lamport, at), f"v{n}"
            rep.store[key] = (stamp, value)
            for dst in range(processes):
                if dst != at:
                    seq += 1
                    inbox.append(_Msg(now + rng.uniform(0.5, max_delay), seq, dst, at,
                                      tuple(rep.clock), key, stamp, value))
            out.append(_Op(p, "write", key, value, now, now + 0.5))
        else:
            got = rep.store.get(key)
            out.append(_Op(p, "read", key, None, now, now + 0.5, got[1] if got else None))
    _deliver(reps, inbox, float("inf"), causal)
    if final_reads:
        t = float(ops + 2)
        for p, rep in enumerate(reps):
            for k in sorted({f"k{i}" for i in range(keys)}):
                got = rep.store.get(k)
                out.append(_Op(processes + p, "final-read", k, f"n{p}", t, t + 0.5,
                               got[1] if got else None))
                t += 1.0
    return _history(out)


def _deliver(reps: list[_Replica], inbox: list[_Msg], now: float, causal: bool) -> None:
    """Deliver due messages; with ``causal``, only those whose dependencies are applied."""
    progress = True
    while progress:
        progress = False
        for msg in sorted(inbox):
            if msg.due > now:
                break
            rep = reps[msg.dst]
            if causal and not _ready(rep.clock, msg):
                continue
            inbox.remove(msg)
            rep.clock[msg.origin] = max(rep.clock[msg.origin], msg.deps[msg.origin])
            if causal:
                rep.clock = [max(a, b) for a, b in zip(rep.clock, msg.deps, strict=True)]
            rep.lamport = max(rep.lamport, msg.stamp[0])
            cur = rep.store.get(msg.key)
            if cur is None or cur[0] < msg.stamp:
                rep.store[msg.key] = (msg.stamp, msg.value)
            progress = True


def _ready(clock: list[int], msg: _Msg) -> bool:
    for i, d in enumerate(msg.deps):
        need = d - 1 if i == msg.origin else d
        if clock[i] < need:
            return False
    return True


def stale_own_read(history: History, seed: int) -> History | None:
    """The same history with one read that follows its process's own write of the key
    made to return the initial value: a read-your-writes (and causal, and sequential)
    violation by construction. None when there is no such read."""
    ops = sorted(history.operations, key=lambda o: o.call)
    written: set[tuple[int, Any]] = set()
    targets = []
    for op in ops:
        if op.f == "write":
            written.add((op.process, op.key))
        elif op.f == "read" and (op.process, op.key) in written and op.output is not None:
            targets.append(op.index)
    if not targets:
        return None
    pick = random.Random(seed).choice(targets)
    return _with_output(history, pick, None)


def _with_output(history: History, index: int, output: Any) -> History:
    import msgspec

    ops = [msgspec.structs.replace(op, output=output) if op.index == index else op
           for op in history.operations]
    return History.from_events(History(ops).to_events())


# -- transactions --------------------------------------------------------------------------


@dataclass
class SiRun:
    """A generated transaction history and the lost updates the store let through."""

    history: History
    lost_updates: int


def si_history(seed: int, txns: int = 30, processes: int = 4, keys: int = 3,
               first_committer_wins: bool = True) -> SiRun:
    """rw-register transactions on a multi-version store with snapshot reads.

    Each transaction starts (takes a snapshot), reads and writes 1-3 keys (read-modify-
    write or blind), and commits later; with ``first_committer_wins`` a transaction whose
    written key was committed by another since its snapshot aborts (``fail``).
    """
    rng = random.Random(seed)
    versions: dict[str, list[tuple[int, Any]]] = {}  # key -> (commit time, value)
    running: list[dict[str, Any]] = []
    committed: list[dict[str, Any]] = []
    events: list[HistoryEvent] = []
    lost = 0
    clock = 0
    free = list(range(processes))
    n = 0
    while n < txns or running:
        clock += 1
        if free and n < txns and (not running or rng.random() < 0.5):
            p = free.pop(rng.randrange(len(free)))
            t = _begin(rng, p, n, clock, keys, versions)
            running.append(t)
            events.append(HistoryEvent(p, "invoke", "txn", t["invoke"]))
            n += 1
            continue
        t = running.pop(rng.randrange(len(running)))
        ok = not (first_committer_wins and _conflict(t, versions))
        if ok:
            lost += _lost(t, committed)
            committed.append(t)
            for k, v in t["writes"].items():
                versions.setdefault(k, []).append((clock, v))
        events.append(HistoryEvent(t["p"], "ok" if ok else "fail", "txn",
                                   t["done"] if ok else t["invoke"]))
        free.append(t["p"])
    stamped = [HistoryEvent(e.process, e.type, e.f, e.value, None, i)
               for i, e in enumerate(events)]
    return SiRun(History.from_events(stamped), lost)


def _snapshot(versions: dict[str, list[tuple[int, Any]]], k: str, start: int) -> Any:
    seen = [v for t, v in versions.get(k, []) if t < start]
    return seen[-1] if seen else None


def _begin(rng: random.Random, p: int, n: int, clock: int, keys: int,
           versions: dict[str, list[tuple[int, Any]]]) -> dict[str, Any]:
    mops: list[list[Any]] = []
    done: list[list[Any]] = []
    writes: dict[str, Any] = {}
    read_first: dict[str, Any] = {}
    for j, k in enumerate(rng.sample([f"k{i}" for i in range(keys)], rng.randint(1, 3))):
        snap = writes.get(k, _snapshot(versions, k, clock))
        if rng.random() < 0.7:
            mops.append(["r", k, None])
            done.append(["r", k, snap])
            read_first.setdefault(k, snap)
        if rng.random() < 0.6:
            v = f"t{n}.{j}"
            mops.append(["w", k, v])
            done.append(["w", k, v])
            writes[k] = v
    return {"p": p, "start": clock, "invoke": mops, "done": done, "writes": writes,
            "read_first": read_first}


def _conflict(t: dict[str, Any], versions: dict[str, list[tuple[int, Any]]]) -> bool:
    return any(ct >= t["start"] for k in t["writes"] for ct, _ in versions.get(k, []))


def _lost(t: dict[str, Any], committed: list[dict[str, Any]]) -> int:
    """1 when a committed transaction read the version of a key this one read and wrote
    it, as this one does (the checker's ``lost-update``)."""
    missing = object()
    for k, seen in t["read_first"].items():
        if k in t["writes"] and any(k in c["writes"] and c["read_first"].get(k, missing) == seen
                                    for c in committed):
            return 1
    return 0

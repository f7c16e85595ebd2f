"""Editing-trace replay for :class:`FugueText` (pure: parsing and replay, no I/O or clocks).

Trace format (``shared/testdata/crdt/README.md``): ``startContent``, ``endContent`` and
``txns``, each with ``patches`` = ``[position, deleted_count, inserted_text]`` applied in
order; concurrent traces add ``agent`` and ``parents`` (indexes of earlier txns: a txn's
positions are relative to the merge of its parents' histories).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping
from typing import Any, NamedTuple

from pnyx.protocols.crdt.text.fugue import FugueText
from pnyx.protocols.crdt.text.ops import TextOp

_START_REPLICA = "~start"  # replica that inserts startContent under every concurrent history


class TraceError(ValueError):
    """The trace is not in the expected format (says where and what)."""


class ReplayError(Exception):
    """The replay diverged: a patch falls outside the document it applies to."""


class Txn(NamedTuple):
    """One transaction: patches applied in order (agent/parents only in concurrent traces)."""

    patches: tuple[tuple[int, int, str], ...]
    agent: str | None = None
    parents: tuple[int, ...] = ()


class Trace(NamedTuple):
    """A parsed editing trace."""

    start: str
    end: str
    txns: list[Txn]
    concurrent: bool

    @property
    def edits(self) -> int:
        """Number of patches."""
        return sum(len(t.patches) for t in self.txns)


def _text(obj: Mapping[str, Any], key: str, default: str | None = None) -> str:
    value = obj.get(key, default)
    if not isinstance(value, str):
        raise TraceError(f"trace field {key!r} must be a string, got {type(value).__name__}")
    return value


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _patches(raw: object, i: int) -> tuple[tuple[int, int, str], ...]:
    if not isinstance(raw, list):
        raise TraceError(f"txn {i}: patches must be a list, got {raw!r:.80}")
    out = []
    for j, p in enumerate(raw):
        if (not isinstance(p, list) or len(p) != 3 or not _count(p[0]) or not _count(p[1])
                or not isinstance(p[2], str)):
            raise TraceError(f"txn {i} patch {j}: expected [position, deleted_count, text] "
                             f"with non-negative ints, got {p!r:.80}")
        out.append((p[0], p[1], p[2]))
    return tuple(out)


def _parents(raw: object, i: int) -> tuple[int, ...]:
    if not isinstance(raw, list) or not all(_count(p) and p < i for p in raw):
        raise TraceError(f"txn {i}: parents must be a list of earlier txn indexes, "
                         f"got {raw!r:.80}")
    return tuple(raw)


def parse_trace(obj: object) -> Trace:
    """Check and convert a decoded trace; raises :class:`TraceError` if malformed."""
    if not isinstance(obj, dict):
        raise TraceError(f"trace must be a JSON object, got {type(obj).__name__}")
    raw_txns = obj.get("txns")
    if not isinstance(raw_txns, list):
        raise TraceError("trace has no 'txns' list")
    start, end = _text(obj, "startContent", ""), _text(obj, "endContent")
    concurrent = any(isinstance(t, dict) and ("agent" in t or "parents" in t)
                     for t in raw_txns)
    txns = []
    for i, t in enumerate(raw_txns):
        if not isinstance(t, dict):
            raise TraceError(f"txn {i} must be an object, got {t!r:.80}")
        patches = _patches(t.get("patches"), i)
        if not concurrent:
            txns.append(Txn(patches))
            continue
        agent = t.get("agent")
        if isinstance(agent, bool) or not isinstance(agent, int | str) or agent == "":
            raise TraceError(f"txn {i}: agent must be an int or non-empty string, "
                             f"got {agent!r}")
        txns.append(Txn(patches, str(agent), _parents(t.get("parents"), i)))
    return Trace(start, end, txns, concurrent)


def _splice(doc: FugueText, i: int, patch: tuple[int, int, str]) -> None:
    pos, deleted, text = patch
    if pos + deleted > len(doc):
        raise ReplayError(f"txn {i}: patch {list(patch)!r:.80} is outside the document "
                          f"({len(doc)} code points) at replica {doc.replica!r}")
    doc.splice(pos, deleted, text)


def replay_sequential(trace: Trace, replica: str = "0") -> FugueText:
    """Apply every patch in order at one replica; returns it."""
    doc = FugueText(replica)
    splice = doc.splice
    if trace.start:
        splice(0, 0, trace.start)
    for i, txn in enumerate(trace.txns):
        for patch in txn.patches:
            pos, deleted, text = patch
            if pos + deleted > doc._len:
                _splice(doc, i, patch)
            splice(pos, deleted, text)
    return doc


def replay(trace: Trace) -> list[FugueText]:
    """Replay ``trace``; returns its replicas, all merged (one for a sequential trace)."""
    if trace.concurrent:
        return ConcurrentReplay(trace).run()
    return [replay_sequential(trace)]


def _dominated(version: Mapping[str, int], by: Mapping[str, int]) -> bool:
    return all(by.get(name, 0) >= ctr for name, ctr in version.items())


def _merge(versions: list[dict[str, int]]) -> dict[str, int]:
    out = dict(versions[0])
    for v in versions[1:]:
        for name, ctr in v.items():
            if ctr > out.get(name, 0):
                out[name] = ctr
    return out


class ConcurrentReplay:
    """One replica per agent; a txn runs at its agent's replica holding exactly its parents.

    Every txn's ops and version vector (after it) are kept.  Before a txn, its agent's
    replica is brought to the merge of its parents' versions by applying the ops of the
    txns it lacks (a replica name's txns are found by counter); a replica that already has
    more than that (the agent's edits branched) is replaced by a fresh one, under a new
    name, built from the txns of that history.
    """

    def __init__(self, trace: Trace) -> None:
        self.trace = trace
        self.txn_ops: list[list[TextOp]] = []
        self.txn_version: list[dict[str, int]] = []
        self.by_name: dict[str, tuple[list[int], list[int]]] = {}  # name -> (his, txn idxs)
        self.replicas: dict[str, FugueText] = {}
        self.all_docs: list[FugueText] = []
        self.names: set[str] = {_START_REPLICA}
        self.start_ops: list[TextOp] = []
        self.base: dict[str, int] = {}
        if trace.start:
            seed = FugueText(_START_REPLICA)
            seed.splice(0, 0, trace.start)
            self.start_ops = seed.ops_since({})
            self.base = seed.version()

    def run(self) -> list[FugueText]:
        """Replay every txn, then merge every replica; returns all replicas."""
        for i, txn in enumerate(self.trace.txns):
            self._txn(i, txn)
        full = _merge([self.base, *self.txn_version])
        for doc in self.all_docs:
            self.catch_up(doc, full)
        return self.all_docs

    def _txn(self, i: int, txn: Txn) -> None:
        parents = [self.txn_version[p] for p in txn.parents]
        target = _merge([self.base, *parents])
        if not txn.patches:
            self.txn_ops.append([])
            self.txn_version.append(target)
            return
        assert txn.agent is not None
        doc = self._replica(txn.agent, target)
        before = doc.version()
        for patch in txn.patches:
            _splice(doc, i, patch)
        after = doc.version()
        if after == before:  # patches that neither insert nor delete anything
            self.txn_ops.append([])
            self.txn_version.append(target)
            return
        self.txn_ops.append(doc.ops_since(before))
        self.txn_version.append(after)
        his, idxs = self.by_name.setdefault(doc.replica, ([], []))
        his.append(after[doc.replica])
        idxs.append(i)

    def _replica(self, agent: str, target: dict[str, int]) -> FugueText:
        doc = self.replicas.get(agent)
        if doc is None or not _dominated(doc.version(), target):
            name, k = agent, 0
            while name in self.names:
                k += 1
                name = f"{agent}~{k}"
            self.names.add(name)
            doc = FugueText(name)
            doc.apply_ops(self.start_ops)
            self.replicas[agent] = doc
            self.all_docs.append(doc)
        self.catch_up(doc, target)
        return doc

    def catch_up(self, doc: FugueText, target: Mapping[str, int]) -> None:
        """Apply to ``doc`` the ops of every txn in ``target`` it lacks (causal order)."""
        have = doc.version()
        todo: list[int] = []
        for name, hi in target.items():
            lo = have.get(name, 0)
            if hi > lo and name in self.by_name:
                his, idxs = self.by_name[name]
                todo.extend(idxs[bisect_right(his, lo) : bisect_right(his, hi)])
        todo.sort()
        for t in todo:
            doc.apply_ops(self.txn_ops[t])
        got = doc.version()
        want = {name: ctr for name, ctr in target.items() if ctr}
        if got != dict(sorted(want.items())) or doc.pending_ops:
            raise ReplayError(f"replica {doc.replica!r} reached {got} instead of {want}")

"""Text CRDT operations (:class:`TextOp`) and their compact columnar binary encoding.

An update is a list of :class:`TextOp` in causal order.  On the wire it is one msgpack
array (``msgspec``) of columns: replica names appear once, counters are implied (each
replica's ops are contiguous from a start counter), parents and delete targets of the
same replica are stored as small deltas, and the text of characters that a delete in the
same update removes is left out.
"""

from __future__ import annotations

from bisect import bisect_right
from typing import Final

import msgspec

from pnyx.protocols.crdt.base import WireError

WIRE_FORMAT: Final = 1
"""Version tag of the update encoding."""

PLACEHOLDER: Final = "\x00"
"""Stands for the content of a character deleted in the same update (never visible)."""


class TextOp(msgspec.Struct, frozen=True, array_like=True):
    """One operation of :class:`~pnyx.protocols.crdt.text.FugueText`.

    Every op uses the ids ``(replica, counter) .. (replica, counter + length - 1)``;
    a replica's counters start at 1 and grow by one per id, inserts and deletes alike.

    * insert (``text`` non-empty): the code points of ``text`` get those ids in order;
      the first is a child of ``(parent_replica, parent_counter)`` on the right
      (``right=True``) or left side (Fugue tree), ``parent_counter == 0`` meaning the
      root; each further code point is the right child of the one before.
    * delete (``targets`` non-empty): tombstones the characters named by ``targets``,
      each ``(replica, counter, length)``: ``length > 0`` ids ``counter ..
      counter+length-1``, ``length < 0`` ids ``counter, counter-1, ..``, ``-length`` of
      them.  The op's ``i``-th id stands for the ``i``-th target character.
    """

    replica: str
    counter: int
    text: str = ""
    parent_replica: str = ""
    parent_counter: int = 0
    right: bool = True
    targets: tuple[tuple[str, int, int], ...] = ()

    @property
    def length(self) -> int:
        """Number of ids (counters) this op uses."""
        if self.text:
            return len(self.text)
        return sum(abs(t[2]) for t in self.targets)

    @property
    def is_insert(self) -> bool:
        """Whether this op inserts text (else it deletes)."""
        return bool(self.text)


def check_op(op: TextOp) -> None:
    """Raise :class:`WireError` unless ``op`` is structurally valid."""
    if not op.replica:
        raise WireError(f"op replica must be a non-empty str, got {op.replica!r}")
    if op.counter < 1:
        raise WireError(f"op counter must be >= 1, got {op.counter} ({op.replica!r})")
    if bool(op.text) == bool(op.targets):
        raise WireError(
            f"op ({op.replica!r}, {op.counter}) must have exactly one of text / targets"
        )
    if op.text:
        _check_parent(op)
    else:
        for name, ctr, length in op.targets:
            if not name or length == 0 or ctr < 1 or (length < 0 and ctr + length < 0):
                raise WireError(f"bad delete target {(name, ctr, length)!r} in op "
                                f"({op.replica!r}, {op.counter})")


def _check_parent(op: TextOp) -> None:
    if op.parent_counter < 0 or (op.parent_counter == 0) != (op.parent_replica == ""):
        raise WireError(f"bad parent ({op.parent_replica!r}, {op.parent_counter}) of op "
                        f"({op.replica!r}, {op.counter})")
    if op.parent_counter == 0 and not op.right:
        raise WireError(f"op ({op.replica!r}, {op.counter}): root has no left children")
    if op.parent_replica == op.replica and op.parent_counter >= op.counter:
        raise WireError(f"op ({op.replica!r}, {op.counter}) names a later parent "
                        f"{op.parent_counter} of its own replica")


class _Wire(msgspec.Struct, array_like=True, forbid_unknown_fields=True):
    fmt: int
    names: list[str]
    starts: list[int]  # first counter of each name's ops in this update (0: name has none)
    rows: list[int]  # per op: name index * 2 + (1 if delete)
    lengths: list[int]  # per op: ids used
    parents: list[int]  # per insert: (parent name index + 1) * 2 + right, then counter/delta
    targets: list[int]  # per delete: count, then (name index, counter/delta, signed length)...
    text: str


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(_Wire)


def _deleted_intervals(ops: list[TextOp]) -> dict[str, list[tuple[int, int]]]:
    """Per replica, sorted merged ``[lo, hi)`` id intervals targeted by deletes in ``ops``."""
    raw: dict[str, list[tuple[int, int]]] = {}
    for op in ops:
        for name, ctr, length in op.targets:
            lo, hi = (ctr, ctr + length) if length > 0 else (ctr + length + 1, ctr + 1)
            raw.setdefault(name, []).append((lo, hi))
    merged: dict[str, list[tuple[int, int]]] = {}
    for name, spans in raw.items():
        spans.sort()
        out: list[tuple[int, int]] = []
        for lo, hi in spans:
            if out and lo <= out[-1][1]:
                if hi > out[-1][1]:
                    out[-1] = (out[-1][0], hi)
            else:
                out.append((lo, hi))
        merged[name] = out
    return merged


def _kept_slices(ctr: int, length: int, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Offsets ``[a, b)`` of the ids ``ctr..ctr+length-1`` NOT inside ``spans``."""
    end = ctr + length
    i = max(bisect_right(spans, (ctr, end)) - 1, 0)
    kept: list[tuple[int, int]] = []
    cur = ctr
    while i < len(spans) and spans[i][0] < end:
        lo, hi = spans[i]
        if hi > cur:
            if lo > cur:
                kept.append((cur - ctr, lo - ctr))
            cur = max(cur, hi)
        i += 1
    if cur < end:
        kept.append((cur - ctr, end - ctr))
    return kept


def encode_ops(ops: list[TextOp]) -> bytes:
    """Encode ops (each replica's contiguous, in causal order) as one update."""
    return _Writer(ops).encode()


class _Writer:
    """Builds the columns of a :class:`_Wire` from ops."""

    def __init__(self, ops: list[TextOp]) -> None:
        self.ops = ops
        self.index: dict[str, int] = {}
        self.names: list[str] = []
        self.starts: list[int] = []
        self.nxt: list[int] = []
        self.parents: list[int] = []
        self.targets: list[int] = []

    def idx(self, name: str) -> int:
        i = self.index.get(name)
        if i is None:
            i = self.index[name] = len(self.names)
            self.names.append(name)
            self.starts.append(0)
            self.nxt.append(0)
        return i

    def encode(self) -> bytes:
        rows: list[int] = []
        lengths: list[int] = []
        pieces: list[str] = []
        deleted = _deleted_intervals(self.ops) if any(op.targets for op in self.ops) else {}
        for op in self.ops:
            i = self.idx(op.replica)
            if self.starts[i] == 0:
                self.starts[i] = op.counter
            elif self.nxt[i] != op.counter:
                raise ValueError(f"ops of {op.replica!r} are not contiguous at {op.counter}")
            length = op.length
            self.nxt[i] = op.counter + length
            lengths.append(length)
            if op.text:
                rows.append(i * 2)
                self._parent(op, i)
                spans = deleted.get(op.replica)
                if spans:
                    kept = _kept_slices(op.counter, length, spans)
                    pieces.extend(op.text[a:b] for a, b in kept)
                else:
                    pieces.append(op.text)
            else:
                rows.append(i * 2 + 1)
                self.targets.append(len(op.targets))
                for name, ctr, tlen in op.targets:
                    t = self.idx(name)
                    self.targets.extend((t, op.counter - ctr if t == i else ctr, tlen))
        wire = _Wire(WIRE_FORMAT, self.names, self.starts, rows, lengths, self.parents,
                     self.targets, "".join(pieces))
        return _encoder.encode(wire)

    def _parent(self, op: TextOp, i: int) -> None:
        if op.parent_counter == 0:
            self.parents.extend((int(op.right), 0))
            return
        p = self.idx(op.parent_replica)
        delta = op.counter - op.parent_counter if p == i else op.parent_counter
        self.parents.extend(((p + 1) * 2 + int(op.right), delta))


def decode_ops(data: bytes) -> list[TextOp]:
    """Decode an update; raises :class:`WireError` (a ``ValueError``) if malformed."""
    try:
        wire = _decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise WireError(f"malformed text update ({len(data)} bytes): {exc}") from exc
    if wire.fmt != WIRE_FORMAT:
        raise WireError(f"unknown text update format {wire.fmt} (expected {WIRE_FORMAT})")
    return _Reader(wire).ops()


class _Reader:
    """Turns the columns of a :class:`_Wire` back into ops, checking every index."""

    def __init__(self, wire: _Wire) -> None:
        self.wire = wire
        names = wire.names
        if len(set(names)) != len(names) or not all(names):
            raise WireError(f"update names must be unique non-empty strs, got {names!r}")
        if len(wire.starts) != len(names) or any(s < 0 for s in wire.starts):
            raise WireError(f"update starts {wire.starts!r} do not match names {names!r}")
        if len(wire.lengths) != len(wire.rows):
            raise WireError(f"{len(wire.rows)} rows but {len(wire.lengths)} lengths")
        self.nxt = list(wire.starts)
        self.pi = 0
        self.ti = 0

    def _name(self, i: int) -> str:
        if not 0 <= i < len(self.wire.names):
            raise WireError(f"name index {i} out of range (update has "
                            f"{len(self.wire.names)} names)")
        return self.wire.names[i]

    def _take(self, column: list[int], pos: int, what: str) -> int:
        if pos >= len(column):
            raise WireError(f"update {what} column too short ({len(column)} values)")
        return column[pos]

    def ops(self) -> list[TextOp]:
        shells: list[tuple[str, int, int, str, int, bool, tuple[tuple[str, int, int], ...]]] = []
        for row, length in zip(self.wire.rows, self.wire.lengths, strict=True):
            if length < 1 or row < 0:
                raise WireError(f"bad op row {row} / length {length}")
            i = row >> 1
            name = self._name(i)
            ctr = self.nxt[i]
            if ctr < 1:
                raise WireError(f"update has ops of {name!r} but start counter {ctr}")
            self.nxt[i] += length
            if row & 1:
                shells.append((name, ctr, length, "", 0, True, self._targets(i, ctr, length)))
            else:
                pname, pctr, right = self._parent(i, ctr)
                shells.append((name, ctr, length, pname, pctr, right, ()))
        if self.pi != len(self.wire.parents) or self.ti != len(self.wire.targets):
            raise WireError("update has trailing parent/target values")
        return self._with_text(shells)

    def _parent(self, i: int, ctr: int) -> tuple[str, int, bool]:
        code = self._take(self.wire.parents, self.pi, "parents")
        value = self._take(self.wire.parents, self.pi + 1, "parents")
        self.pi += 2
        if code < 0 or value < 0:
            raise WireError(f"bad parent code {code} / value {value}")
        right = bool(code & 1)
        p = (code >> 1) - 1
        if p < 0:
            return "", 0, right
        pname = self._name(p)
        pctr = ctr - value if p == i else value
        return pname, pctr, right

    def _targets(self, i: int, ctr: int, length: int) -> tuple[tuple[str, int, int], ...]:
        count = self._take(self.wire.targets, self.ti, "targets")
        if not 1 <= count <= length:
            raise WireError(f"delete ({self.wire.names[i]!r}, {ctr}) has {count} targets "
                            f"for {length} ids")
        out: list[tuple[str, int, int]] = []
        for k in range(count):
            base = self.ti + 1 + 3 * k
            t = self._take(self.wire.targets, base, "targets")
            value = self._take(self.wire.targets, base + 1, "targets")
            tlen = self._take(self.wire.targets, base + 2, "targets")
            out.append((self._name(t), ctr - value if t == i else value, tlen))
        self.ti += 1 + 3 * count
        if sum(abs(t[2]) for t in out) != length:
            raise WireError(f"delete ({self.wire.names[i]!r}, {ctr}) targets do not add up "
                            f"to its {length} ids")
        return tuple(out)

    def _with_text(
        self, shells: list[tuple[str, int, int, str, int, bool, tuple[tuple[str, int, int], ...]]]
    ) -> list[TextOp]:
        text = self.wire.text
        pos = 0
        ops: list[TextOp] = []
        deleted: dict[str, list[tuple[int, int]]] = {}
        if any(s[6] for s in shells):
            deleted = _deleted_intervals(
                [TextOp(s[0], s[1], targets=s[6]) for s in shells if s[6]]
            )
        for name, ctr, length, pname, pctr, right, targets in shells:
            if targets:
                op = TextOp(name, ctr, targets=targets)
            else:
                spans = deleted.get(name)
                if spans:
                    parts = [PLACEHOLDER * length]
                    chars = list(parts[0])
                    for a, b in _kept_slices(ctr, length, spans):
                        chars[a:b] = text[pos:pos + b - a]
                        pos += b - a
                    body = "".join(chars)
                else:
                    body = text[pos:pos + length]
                    pos += length
                if len(body) != length:
                    raise WireError(f"update text too short for op ({name!r}, {ctr})")
                op = TextOp(name, ctr, body, pname, pctr, right)
            check_op(op)
            ops.append(op)
        if pos != len(text):
            raise WireError(f"update text has {len(text) - pos} code points beyond its ops")
        return ops

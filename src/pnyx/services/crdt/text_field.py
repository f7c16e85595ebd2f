"""The ``text`` field kind: a :class:`~pnyx.protocols.crdt.text.FugueText` and its handle.

Sync is the text CRDT's own: its version vector (per replica, the highest contiguous op
counter) is the field's version, and a peer behind it gets ``encode_since(its version)``.
A remote update that changed the version is logged as it came when no op was waiting for
a missing predecessor before or after it, else as ``encode_since(version before it)``, so
ops that waited and were released by it are logged too (a local edit may depend on them;
after a restart it must find them in the log).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Self

import msgspec

from pnyx.protocols.crdt.text import FugueText, TextOp, encode_ops
from pnyx.services.crdt.fields import FieldState, dominated

if TYPE_CHECKING:
    from pnyx.services.crdt.doc import CrdtDoc

OP_OVERHEAD_BYTES = 160
"""Bound on the encoded size of one op besides its characters or delete ranges (two
replica names and a few integers)."""
TARGET_BYTES = 96
"""Bound on the encoded size of one delete range (a replica name and two integers)."""
MAX_INSERT_CHARS = 64 * 1024
"""Longer inserts are split into several updates of at most this many characters (fewer
with a small ``DocConfig.max_message_bytes``), so each update stays within a message."""
DELETE_BYTES_PER_CHAR = 32
"""Bound on the encoded size of a delete per deleted character (a range per character at
worst, when the text is fragmented)."""
CHUNK_SLACK_BYTES = 1024
"""Room left in a message besides one local update's characters."""


class TextField(FieldState):
    """``text``: a collaborative text (Fugue sequence CRDT, Unicode code points)."""

    kind: ClassVar[str] = "text"

    def __init__(self, replica: str, text: FugueText | None = None) -> None:
        super().__init__(replica)
        self.text = text if text is not None else FugueText(replica)
        self.last_new_update: bytes | None = None
        """What :meth:`apply` last found new, as a self-contained update (for the log)."""

    def version(self) -> dict[str, int]:
        return dict(self.text.version())

    def updates_since(self, version: Mapping[str, int], max_bytes: int) -> list[bytes]:
        """``encode_since(version)``, or when that exceeds ``max_bytes`` the same ops split
        into several updates (in causal order, so each applies after the ones before)."""
        if dominated(self.text.version(), version):
            return []
        whole = self.text.encode_since(version)
        if len(whole) <= max_bytes:
            return [whole]
        return [encode_ops(group) for group in _groups(self.text.ops_since(version), max_bytes)]

    def apply(self, payload: bytes) -> bool:
        before = self.text.version()
        waiting_before = self.text.pending_ops
        self.text.apply_update(payload)  # ValueError on malformed data, unchanged then
        if self.text.version() == before:
            self.last_new_update = None
            return False
        if waiting_before == 0 and self.text.pending_ops == 0:
            self.last_new_update = None  # all of it applied, nothing else released: log it
        else:
            self.last_new_update = self.text.encode_since(before)
        return True

    def logged_form(self, payload: bytes) -> bytes:
        return self.last_new_update if self.last_new_update is not None else payload

    def encode(self) -> bytes:
        return self.text.encode()

    @classmethod
    def decode(cls, replica: str, data: bytes) -> Self:
        return cls(replica, FugueText.decode(replica, data))

    def value(self) -> str:
        return self.text.text()


class TextHandle:
    """A text field of a document: edits are durable when they return."""

    def __init__(self, doc: CrdtDoc, name: str) -> None:
        self._doc = doc
        self.name = name
        self._field = doc.typed_field(name, TextField)

    def insert(self, pos: int, text: str) -> None:
        """Insert ``text`` before code point ``pos`` (0 ≤ pos ≤ len).

        A long text goes as several updates (each within the sync message budget), each
        durable on its own; the call returns when all are.
        """
        _check_int(pos, "position")
        if not isinstance(text, str):
            raise ValueError(f"text to insert must be a str, got {text!r:.80}")
        if not 0 <= pos <= len(self._field.text):
            raise ValueError(f"insert position {pos} outside 0..{len(self._field.text)}")
        step = self._chunk_chars(4)
        for start in range(0, len(text), step):
            self._insert_chunk(pos + start, text[start : start + step])

    def _chunk_chars(self, bytes_per_char: int) -> int:
        budget = self._doc.config.max_message_bytes - CHUNK_SLACK_BYTES
        return max(1, min(MAX_INSERT_CHARS, budget // bytes_per_char))

    def _insert_chunk(self, pos: int, chunk: str) -> None:
        text = self._field.text
        self._doc.commit_local(self.name, self._field, lambda: text.insert(pos, chunk))

    def delete(self, pos: int, count: int, expect: str | None = None) -> None:
        """Delete ``count`` code points from ``pos``; with ``expect``, only if they read so
        (a compare-and-delete: ``ValueError`` and no change otherwise).  A long range goes
        as several updates, like a long insert."""
        _check_int(pos, "position")
        _check_int(count, "count")
        size = len(self._field.text)
        if not 0 <= pos <= pos + count <= size:
            raise ValueError(f"delete of {count} from {pos} outside the text of length {size}")
        if expect is not None:
            found = self._field.text.text()[pos : pos + count]
            if found != expect:
                raise ValueError(f"delete refused: text at {pos} is {found!r}, not {expect!r}")
        step = self._chunk_chars(DELETE_BYTES_PER_CHAR)
        for done in range(0, count, step):
            self._delete_chunk(pos, min(step, count - done))

    def _delete_chunk(self, pos: int, count: int) -> None:
        text = self._field.text
        self._doc.commit_local(self.name, self._field, lambda: text.delete(pos, count))

    def value(self) -> str:
        """The text."""
        return self._field.value()

    def __len__(self) -> int:
        return len(self._field.text)

    def version(self) -> dict[str, int]:
        """The field's version (replica → op counter)."""
        return self._field.version()


def _groups(ops: list[TextOp], max_bytes: int) -> list[list[TextOp]]:
    """``ops`` in order, cut into groups of about ``max_bytes`` encoded; an op bigger than
    that (the text keeps a replica's consecutive inserts as one run) is split first."""
    groups: list[list[TextOp]] = [[]]
    size = 0
    for whole in ops:
        for op in _split(whole, max_bytes):
            op_bytes = _op_bytes(op)
            if groups[-1] and size + op_bytes > max_bytes:
                groups.append([])
                size = 0
            groups[-1].append(op)
            size += op_bytes
    return groups


def _op_bytes(op: TextOp) -> int:
    """A bound on the encoded size of ``op``."""
    return OP_OVERHEAD_BYTES + (4 * len(op.text) if op.text else TARGET_BYTES * len(op.targets))


def _split(op: TextOp, max_bytes: int) -> list[TextOp]:
    """``op`` as ops of at most about ``max_bytes`` each, with the same effect.

    An insert's characters after the first are each the right child of the one before, so
    a tail of them is an insert whose parent is the last character of the head.  A delete's
    ids stand for its targets in order, so its targets can be cut between ranges.
    """
    if _op_bytes(op) <= max_bytes:
        return [op]
    if op.text:
        step = max(1, (max_bytes - OP_OVERHEAD_BYTES) // 4)
        parts = [op.text[i : i + step] for i in range(0, len(op.text), step)]
        out = [msgspec.structs.replace(op, text=parts[0])]
        counter = op.counter + len(parts[0])
        for part in parts[1:]:
            out.append(TextOp(op.replica, counter, part, op.replica, counter - 1, True))
            counter += len(part)
        return out
    step = max(1, (max_bytes - OP_OVERHEAD_BYTES) // TARGET_BYTES)
    out = []
    counter = op.counter
    for i in range(0, len(op.targets), step):
        targets = op.targets[i : i + step]
        out.append(TextOp(op.replica, counter, targets=targets))
        counter += sum(abs(t[2]) for t in targets)
    return out


def _check_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what} must be an int, got {value!r}")
    return value

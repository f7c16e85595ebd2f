"""Segmented write-ahead log of a node's ``PersistOp`` values, with group commit and recovery.

On disk (see ``docs/RUNTIME.md``): ``<dir>/<seq:016d>.wal`` segments, each starting with
the 8-byte magic ``PNYXWAL\\x01`` followed by records::

    u32 length | u32 crc32c(body) | u32 crc32c(first 8 header bytes) | body

``body`` is one kind byte then the data: an op encoded by the op codec, a
:class:`~pnyx.runtime.snapshots.SnapshotRef` (snapshot data lives in ``<dir>/snapshots``)
or a checkpoint marker.  A segment whose first record is a checkpoint marker holds a full
image of the durable state, so every older segment can be deleted.  Recovery replays from
the newest checkpoint into a :class:`pnyx.core.DurableState` using the shared fold.
"""

from __future__ import annotations

import logging
import os
import struct
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import crc32c
import msgspec

from pnyx.core import (
    Codec,
    DurableState,
    LogAppend,
    LogCompact,
    PersistOp,
    PutRecord,
    SnapshotSave,
    encode,
)
from pnyx.runtime.snapshots import SnapshotCorruptError, SnapshotRef, SnapshotStore, fsync_dir

log = logging.getLogger("pnyx.runtime.wal")

SEGMENT_MAGIC = b"PNYXWAL\x01"
"""First 8 bytes of every segment file (the last byte is the format version)."""

SECTOR_BYTES = 512
"""Granularity at which a crash may leave unwritten (zero) blocks in an unsynced tail."""

KIND_OP = 1
KIND_SNAPSHOT = 2
KIND_CHECKPOINT = 3

_RECORD_HEADER = struct.Struct("<III")
_SUFFIX = ".wal"
_SNAPSHOT_DIR = "snapshots"

RECOVER_HINT = (
    "stop the node, move its data directory aside (keep it for inspection) and restart the "
    "node with an empty data directory: it rejoins and catches up from its peers by "
    "snapshot (docs/RUNTIME.md, 'Recovering a node')"
)


class WalError(Exception):
    """Base class of WAL failures that must stop the node."""


class WalCorruptError(WalError):
    """A record that is not the torn tail of the last segment failed its checks."""

    def __init__(self, path: Path, offset: int, reason: str) -> None:
        super().__init__(
            f"WAL corrupt: {path} at byte offset {offset}: {reason}. "
            f"This is not a torn tail that can be repaired; {RECOVER_HINT}"
        )
        self.path = path
        self.offset = offset
        self.reason = reason


class WalDecodeError(WalError):
    """A record passed its CRC but the op codec could not decode it (wrong entry types?)."""

    def __init__(self, path: Path, offset: int, reason: str) -> None:
        super().__init__(
            f"WAL record {path} at byte offset {offset} passed its CRC but does not decode: "
            f"{reason}. Start the node with the same protocol (entry and record types) "
            "that wrote this WAL."
        )
        self.path = path
        self.offset = offset


class OpCodec(Protocol):
    """Encodes and decodes ``PersistOp`` values (``pnyx.core.Codec`` satisfies this)."""

    def encode(self, value: Any) -> bytes: ...

    def decode(self, data: bytes) -> Any: ...


class PersistCodec:
    """The default op codec: tagged ``PersistOp`` msgpack, with typed entries and records.

    ``entry_type`` types log entries (e.g. ``Delivery``, or a tagged union ``A | B``);
    ``record_types`` maps a record key to the type of its value; ``meta_type`` types
    ``SnapshotSave.meta``.  Untyped values decode as plain msgpack data.
    """

    def __init__(
        self,
        entry_type: Any = Any,
        record_types: Mapping[str, Any] | None = None,
        meta_type: Any = Any,
    ) -> None:
        self._base: Codec[PersistOp] = Codec([PutRecord, LogAppend, LogCompact, SnapshotSave])
        self._entries_type: Any = tuple[entry_type, ...]
        self._typed_entries = entry_type is not Any
        self._record_types = dict(record_types or {})
        self._meta_type = meta_type

    def encode(self, value: Any) -> bytes:
        """Encode one op (deterministic msgpack)."""
        return encode(value)

    def decode(self, data: bytes) -> PersistOp:
        """Decode one op, converting entries, record values and meta to their types."""
        op = self._base.decode(data)
        if isinstance(op, LogAppend) and self._typed_entries:
            entries = msgspec.convert(op.entries, self._entries_type)
            return LogAppend(op.first_index, entries)
        if isinstance(op, PutRecord) and op.key in self._record_types:
            return PutRecord(op.key, msgspec.convert(op.value, self._record_types[op.key]))
        if isinstance(op, SnapshotSave) and self._meta_type is not Any and op.meta is not None:
            meta = msgspec.convert(op.meta, self._meta_type)
            return SnapshotSave(op.index, op.term, op.data, meta)
        return op


@dataclass(frozen=True)
class WalConfig:
    """Bounds and switches of one WAL."""

    segment_bytes: int = 64 * 1024 * 1024
    """Start a new segment once the current one reaches this size (soft bound)."""
    max_record_bytes: int = 32 * 1024 * 1024
    """Largest record body; bigger ``LogAppend`` ops are split, a bigger entry is an error."""
    fsync: bool = True
    """False skips fsync (benchmarks only: acknowledged writes may be lost on power loss)."""


@dataclass
class WalStats:
    """Counters for tests and metrics."""

    fsyncs: int = 0
    records: int = 0
    bytes_written: int = 0
    segments_created: int = 0
    segments_deleted: int = 0
    checkpoints: int = 0
    torn_tail_repairs: int = 0
    last_sync_s: float = 0.0
    sync_seconds: list[float] = field(default_factory=list)

    def note_sync(self, seconds: float) -> None:
        """Record one fsync's latency (keeps a bounded window of recent samples)."""
        self.fsyncs += 1
        self.last_sync_s = seconds
        self.sync_seconds.append(seconds)
        if len(self.sync_seconds) > 4096:
            del self.sync_seconds[:2048]


@dataclass
class _Record:
    offset: int
    kind: int
    body: bytes


@dataclass
class _Scan:
    path: Path
    seq: int
    size_bytes: int
    records: list[_Record]
    torn_at: int | None = None
    error: WalCorruptError | None = None

    @property
    def is_checkpoint(self) -> bool:
        return bool(self.records) and self.records[0].kind == KIND_CHECKPOINT


class WriteAheadLog:
    """The durable log of one node; opening it recovers what survived.

    Use: ``wal = WriteAheadLog(path, codec)``; hand ``wal.recovered()`` to the node factory;
    per ``Ready`` batch call ``wal.write(ready.persist)`` (one fsync for the whole batch).
    Not thread-safe: one caller at a time (the runner runs it in one worker thread).
    """

    def __init__(
        self,
        directory: Path,
        codec: OpCodec | None = None,
        config: WalConfig | None = None,
        *,
        on_sync: Callable[[float], None] | None = None,
    ) -> None:
        self.directory = directory
        self.codec: OpCodec = codec if codec is not None else PersistCodec()
        self.config = config or WalConfig()
        assert self.config.max_record_bytes < 2**32, "record length is a u32"
        self.stats = WalStats()
        self._on_sync = on_sync
        directory.mkdir(parents=True, exist_ok=True)
        self.snapshots = SnapshotStore(
            directory / _SNAPSHOT_DIR, self.codec.encode, self.codec.decode
        )
        self._state = DurableState()
        self._snapshot_ref: SnapshotRef | None = None
        self._snapshot_changed = False
        self._pending: list[bytes] = []
        self._closed_segments: list[tuple[int, int]] = []  # (seq, size_bytes)
        self._seq = 0
        self._segment_bytes = 0
        self._fd = -1
        self._checkpoint_threshold_bytes = 0
        self._recover()

    # -- public API ----------------------------------------------------------------------

    @property
    def state(self) -> DurableState:
        """The durable state as of the last append (read-only view; do not mutate)."""
        return self._state

    def recovered(self) -> DurableState:
        """An independent copy of the durable state, for the node factory."""
        return self._state.copy()

    @property
    def segment_count(self) -> int:
        """Segments currently on disk."""
        return len(self._closed_segments) + 1

    def append(self, ops: Sequence[PersistOp]) -> None:
        """Encode ``ops`` into the pending batch (durable only after :meth:`sync`).

        A ``SnapshotSave`` is written to its own file right away (fsynced); the WAL
        records a reference to it.
        """
        for op in ops:
            if isinstance(op, SnapshotSave):
                self._append_snapshot(op)
                continue
            bodies = self._encode_op(op)
            self._state.apply(op)
            self._pending.extend(_frame_record(KIND_OP, body) for body in bodies)
            if isinstance(op, LogCompact):
                self._checkpoint_threshold_bytes = 0  # the image shrank: worth another look

    def sync(self) -> None:
        """Write the pending batch and make it durable with one fdatasync (group commit)."""
        if self._pending:
            data = b"".join(self._pending)
            records = len(self._pending)
            self._pending.clear()
            _write_all(self._fd, data)
            self._segment_bytes += len(data)
            self.stats.records += records
            self.stats.bytes_written += len(data)
            self._datasync(self._fd)
        self._after_sync()

    def write(self, ops: Sequence[PersistOp]) -> None:
        """Append ``ops`` and sync: when this returns, all of them are durable."""
        self.append(ops)
        self.sync()

    def close(self) -> None:
        """Sync anything pending and close the current segment."""
        if self._fd >= 0:
            self.sync()
            os.close(self._fd)
            self._fd = -1

    # -- writing -------------------------------------------------------------------------

    def _encode_op(self, op: PersistOp) -> list[bytes]:
        body = self.codec.encode(op)
        if len(body) + 1 <= self.config.max_record_bytes:
            return [body]
        if not isinstance(op, LogAppend):
            raise ValueError(
                f"{type(op).__name__} encodes to {len(body)} bytes, over "
                f"max_record_bytes={self.config.max_record_bytes}; raise WalConfig.max_record_bytes"
            )
        return [self.codec.encode(part) for part in self._split_append(op.first_index, op.entries)]

    def _split_append(self, first_index: int, entries: Sequence[Any]) -> Iterator[LogAppend]:
        """Equivalent ``LogAppend`` ops, each encoding to at most about half a record."""
        budget = self.config.max_record_bytes // 2
        chunk: list[Any] = []
        chunk_bytes = 0
        for entry in entries:
            size = len(encode(entry))
            if size + 64 > budget:
                raise ValueError(
                    f"a log entry of {size} bytes is over half of max_record_bytes="
                    f"{self.config.max_record_bytes}; raise WalConfig.max_record_bytes"
                )
            if chunk and chunk_bytes + size > budget:
                yield LogAppend(first_index, tuple(chunk))
                first_index += len(chunk)
                chunk, chunk_bytes = [], 0
            chunk.append(entry)
            chunk_bytes += size
        if chunk:
            yield LogAppend(first_index, tuple(chunk))

    def _append_snapshot(self, op: SnapshotSave) -> None:
        ref = self.snapshots.save(op)
        self._state.apply(op)
        self._pending.append(_frame_record(KIND_SNAPSHOT, msgspec.msgpack.encode(ref)))
        if self._state.snapshot is op:
            self._snapshot_ref = ref
        self._snapshot_changed = True  # either way, some file is now superfluous

    def _datasync(self, fd: int) -> None:
        if not self.config.fsync:
            return
        started = time.perf_counter()
        getattr(os, "fdatasync", os.fsync)(fd)
        elapsed = time.perf_counter() - started
        self.stats.note_sync(elapsed)
        if self._on_sync is not None:
            self._on_sync(elapsed)

    def _after_sync(self) -> None:
        if self._snapshot_changed:
            keep = [self._snapshot_ref.file] if self._snapshot_ref else []
            self.snapshots.remove_except(keep)
            self._snapshot_changed = False
        if self._segment_bytes >= self.config.segment_bytes:
            self._rotate()
        self._maybe_checkpoint()

    # -- segments ------------------------------------------------------------------------

    def _segment_path(self, seq: int) -> Path:
        return self.directory / f"{seq:016d}{_SUFFIX}"

    def _create_segment(self, seq: int, records: Sequence[bytes]) -> None:
        """Atomically create segment ``seq`` holding ``records``, and make it current."""
        final = self._segment_path(seq)
        temp = final.with_name(final.name + ".tmp")
        data = SEGMENT_MAGIC + b"".join(records)
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            _write_all(fd, data)
            self._datasync(fd)
        finally:
            os.close(fd)
        os.replace(temp, final)
        fsync_dir(self.directory)
        self._open_current(seq, len(data))
        self.stats.segments_created += 1

    def _open_current(self, seq: int, size_bytes: int) -> None:
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = os.open(self._segment_path(seq), os.O_WRONLY | os.O_APPEND)
        self._seq = seq
        self._segment_bytes = size_bytes

    def _rotate(self) -> None:
        self._closed_segments.append((self._seq, self._segment_bytes))
        self._create_segment(self._seq + 1, [])
        log.info("wal_rotate segment=%s", self._segment_path(self._seq).name)

    def _maybe_checkpoint(self) -> None:
        if not self._closed_segments:
            return
        closed_bytes = sum(size for _, size in self._closed_segments)
        if closed_bytes < self._checkpoint_threshold_bytes:
            return
        records = self._checkpoint_records(self._seq + 1)
        image_bytes = sum(len(r) for r in records)
        reclaim_bytes = closed_bytes + self._segment_bytes
        if image_bytes * 2 > reclaim_bytes:
            # Not worth it yet (log not compacted); retry once the closed segments doubled.
            self._checkpoint_threshold_bytes = 2 * image_bytes
            return
        old = [seq for seq, _ in self._closed_segments] + [self._seq]
        self._create_segment(self._seq + 1, records)
        self._closed_segments.clear()
        self._checkpoint_threshold_bytes = 0
        self._delete_segments(old)
        self.stats.checkpoints += 1
        log.info(
            "wal_checkpoint segment=%s image_bytes=%d reclaimed_bytes=%d",
            self._segment_path(self._seq).name,
            image_bytes,
            reclaim_bytes,
        )

    def _checkpoint_records(self, seq: int) -> list[bytes]:
        """Records that rebuild the current durable state from nothing."""
        state = self._state
        records = [_frame_record(KIND_CHECKPOINT, msgspec.msgpack.encode(seq))]
        for key, value in state.records.items():
            records.append(_frame_record(KIND_OP, self.codec.encode(PutRecord(key, value))))
        if self._snapshot_ref is not None:
            records.append(_frame_record(KIND_SNAPSHOT, msgspec.msgpack.encode(self._snapshot_ref)))
        if state.log_start > 1:
            compact = LogCompact(state.log_start - 1)
            records.append(_frame_record(KIND_OP, self.codec.encode(compact)))
        for part in self._split_append(state.log_start, state.log):
            records.append(_frame_record(KIND_OP, self.codec.encode(part)))
        return records

    def _delete_segments(self, seqs: Sequence[int]) -> None:
        for seq in seqs:
            self._segment_path(seq).unlink(missing_ok=True)
            self.stats.segments_deleted += 1
        if seqs:
            fsync_dir(self.directory)

    # -- recovery ------------------------------------------------------------------------

    def _recover(self) -> None:
        for temp in self.directory.glob("*" + _SUFFIX + ".tmp"):
            temp.unlink()
        paths = self._list_segments()
        if not paths:
            self._create_segment(1, [_frame_record(KIND_CHECKPOINT, msgspec.msgpack.encode(1))])
            self.snapshots.remove_except([])
            return
        scans = [
            _scan_segment(
                path,
                seq,
                path.read_bytes(),
                is_last=(i == len(paths) - 1),
                max_record_bytes=self.config.max_record_bytes,
            )
            for i, (seq, path) in enumerate(paths)
        ]
        start = self._replay_start(scans)
        live = scans[start:]
        for scan in live:
            if scan.error is not None:
                raise scan.error
        self._replay(live)
        last = live[-1]
        if last.torn_at is not None:
            self._repair_tail(last)
        self._delete_segments([scan.seq for scan in scans[:start]])
        self._closed_segments = [(s.seq, s.size_bytes) for s in live[:-1]]
        self._open_current(last.seq, last.torn_at if last.torn_at is not None else last.size_bytes)
        self.snapshots.remove_except([self._snapshot_ref.file] if self._snapshot_ref else [])

    def _list_segments(self) -> list[tuple[int, Path]]:
        found: list[tuple[int, Path]] = []
        for path in self.directory.glob("*" + _SUFFIX):
            stem = path.name[: -len(_SUFFIX)]
            if not stem.isdigit():
                raise WalCorruptError(path, 0, "unexpected file name in the WAL directory")
            found.append((int(stem), path))
        return sorted(found)

    def _replay_start(self, scans: list[_Scan]) -> int:
        for i in range(len(scans) - 1, -1, -1):
            if scans[i].is_checkpoint:
                for prev, nxt in zip(scans[i:], scans[i + 1 :], strict=False):
                    if nxt.seq != prev.seq + 1:
                        raise WalCorruptError(
                            nxt.path, 0, f"segment {prev.seq + 1} is missing before it"
                        )
                return i
        first = scans[0]
        raise WalCorruptError(
            first.error.path if first.error else first.path,
            first.error.offset if first.error else 0,
            "no segment starts with a valid checkpoint, so the log cannot be replayed",
        )

    def _replay(self, scans: list[_Scan]) -> None:
        refs = [
            (scan.path, rec.offset, msgspec.msgpack.decode(rec.body, type=SnapshotRef))
            for scan in scans
            for rec in scan.records
            if rec.kind == KIND_SNAPSHOT
        ]
        winner = _winning_ref(refs)
        for scan in scans:
            for rec in scan.records:
                self._replay_record(scan, rec, winner)

    def _replay_record(self, scan: _Scan, rec: _Record, winner: tuple[Path, int] | None) -> None:
        if rec.kind == KIND_OP:
            try:
                op = self.codec.decode(rec.body)
            except (msgspec.MsgspecError, ValueError, TypeError) as exc:
                raise WalDecodeError(scan.path, rec.offset, str(exc)) from exc
            if not isinstance(op, PersistOp):
                raise WalDecodeError(scan.path, rec.offset, f"decoded a {type(op).__name__}")
            self._state.apply(op)
        elif rec.kind == KIND_SNAPSHOT:
            ref = msgspec.msgpack.decode(rec.body, type=SnapshotRef)
            if (scan.path, rec.offset) == winner:
                try:
                    self._state.apply(self.snapshots.load(ref))
                except SnapshotCorruptError as exc:
                    raise WalCorruptError(scan.path, rec.offset, str(exc)) from exc
                self._snapshot_ref = ref
        elif rec.kind == KIND_CHECKPOINT:
            seq = msgspec.msgpack.decode(rec.body, type=int)
            if seq != scan.seq or rec.offset != len(SEGMENT_MAGIC):
                raise WalCorruptError(scan.path, rec.offset, f"misplaced checkpoint marker {seq}")
        else:
            raise WalCorruptError(scan.path, rec.offset, f"unknown record kind {rec.kind}")

    def _repair_tail(self, scan: _Scan) -> None:
        assert scan.torn_at is not None
        log.warning(
            "wal_torn_tail_repaired file=%s offset=%d dropped_bytes=%d",
            scan.path,
            scan.torn_at,
            scan.size_bytes - scan.torn_at,
        )
        fd = os.open(scan.path, os.O_WRONLY)
        try:
            os.ftruncate(fd, scan.torn_at)
            os.fsync(fd)
        finally:
            os.close(fd)
        self.stats.torn_tail_repairs += 1


class MemoryLog:
    """A ``WriteAheadLog`` stand-in that keeps nothing: in-memory nodes (no durability).

    Every write is accepted and forgotten, so a restarted node starts empty and must catch
    up from its peers (in Raft: log entries or a snapshot from the leader).  Like wiping a
    node's data directory, this is safe only while a majority of the group keeps its state;
    restart in-memory members one at a time.
    """

    def __init__(self) -> None:
        self.stats = WalStats()
        self._state = DurableState()

    @property
    def state(self) -> DurableState:
        """Always empty: nothing is kept."""
        return self._state

    def recovered(self) -> DurableState:
        """An empty durable state (there is nothing to recover)."""
        return DurableState()

    @property
    def segment_count(self) -> int:
        """No segments: nothing is written."""
        return 0

    def append(self, ops: Sequence[PersistOp]) -> None:
        """Count ``ops`` and drop them."""
        self.stats.records += len(ops)

    def sync(self) -> None:
        """Nothing to make durable."""

    def write(self, ops: Sequence[PersistOp]) -> None:
        """Count ``ops`` and drop them."""
        self.stats.records += len(ops)

    def close(self) -> None:
        """Nothing to close."""


def _winning_ref(refs: list[tuple[Path, int, SnapshotRef]]) -> tuple[Path, int] | None:
    """Where the ref the fold keeps is: highest index, the later one on ties (``>=``).

    Every other snapshot is superseded, so its file may already be gone.
    """
    winner: tuple[Path, int] | None = None
    best_index = -1
    for path, offset, ref in refs:
        if ref.index >= best_index:
            winner, best_index = (path, offset), ref.index
    return winner


def _frame_record(kind: int, data: bytes) -> bytes:
    body = bytes((kind,)) + data
    head = struct.pack("<II", len(body), crc32c.crc32c(body))
    return head + struct.pack("<I", crc32c.crc32c(head)) + body


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _scan_segment(
    path: Path, seq: int, data: bytes, *, is_last: bool, max_record_bytes: int
) -> _Scan:
    """Split a segment into records; classify the first bad one as torn tail or corruption."""
    scan = _Scan(path, seq, len(data), [])
    if data[: len(SEGMENT_MAGIC)] != SEGMENT_MAGIC:
        scan.error = WalCorruptError(path, 0, f"bad segment magic {data[:8]!r}")
        return scan
    offset = len(SEGMENT_MAGIC)
    while offset < len(data):
        problem, end = _check_record(data, offset, max_record_bytes)
        if problem is None:
            scan.records.append(_Record(offset, data[offset + 12], data[offset + 13 : end]))
            offset = end
            continue
        if is_last and _looks_torn(data, offset, end, header_ok=problem != "header"):
            scan.torn_at = offset
        else:
            scan.error = WalCorruptError(path, offset, _PROBLEMS[problem])
        break
    return scan


_PROBLEMS = {
    "short": "the file ends inside a record header",
    "header": "record header CRC32C mismatch (length field damaged)",
    "length": "record length is 0 or above max_record_bytes",
    "partial": "the file ends inside a record body",
    "body": "record body CRC32C mismatch",
}


def _check_record(data: bytes, offset: int, max_record_bytes: int) -> tuple[str | None, int]:
    """(problem or None, end offset of the record as far as it can be trusted)."""
    header_end = offset + _RECORD_HEADER.size
    if header_end > len(data):
        return "short", len(data)
    length, body_crc, header_crc = _RECORD_HEADER.unpack_from(data, offset)
    if crc32c.crc32c(data[offset : offset + 8]) != header_crc:
        return "header", header_end
    if length == 0 or length > max_record_bytes:
        return "length", header_end
    end = header_end + length
    if end > len(data):
        return "partial", end
    if crc32c.crc32c(data[header_end:end]) != body_crc:
        return "body", end
    return None, end


def _looks_torn(data: bytes, offset: int, end: int, *, header_ok: bool) -> bool:
    """Could the bad record at ``offset`` of the last segment be an interrupted write?

    An unsynced append that a crash interrupts leaves a prefix of what was written,
    then missing or zero-filled sectors.  Anything else is corruption.
    """
    if len(data) - offset < _RECORD_HEADER.size:
        return True
    nonzero_end = len(data.rstrip(b"\0"))
    if nonzero_end <= offset + _RECORD_HEADER.size:
        return True
    if header_ok and end >= nonzero_end:
        return True
    return _zero_sector_within(data, offset, min(end, len(data)))


def _zero_sector_within(data: bytes, start: int, end: int) -> bool:
    sector = (start // SECTOR_BYTES) * SECTOR_BYTES
    while sector < end:
        chunk = data[sector : sector + SECTOR_BYTES]
        if chunk and not any(chunk):
            return True
        sector += SECTOR_BYTES
    return False

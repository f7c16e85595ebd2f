"""Segmented write-ahead log of a node's ``PersistOp`` values, with group commit and recovery.

On disk (see ``docs/RUNTIME.md``, "WAL format"): ``<dir>/MANIFEST`` names the newest
segment; ``<dir>/<seq:016d>.wal`` segments are files of a fixed size (sparse, set when the
segment is created) that start with a header::

    magic "PNYXWAL\\x02" | u64 seq | u64 first_lsn | u64 size_bytes | u32 flags | u32 crc32c

followed by records, then zeros up to ``size_bytes``::

    magic | u32 length | u64 lsn | u32 lsn - batch_lsn | u16 flags | u16 0 | u32 crc32c(body)
          | u32 crc32c(the 28 header bytes before it) | body

Every record has the next log sequence number (``lsn``, counted across segments), names the
first lsn of its sync batch, and the last record of a batch is flagged ``BATCH_END``.  So
dropped, duplicated or reordered records and segments are detected, a crash can only leave
an incomplete *last* batch (which recovery drops as a whole), and damage followed by a
record of a later batch is known to hit data that was already durable.  ``body`` is one kind
byte then the data: an op encoded by the op codec or a
:class:`~pnyx.runtime.snapshots.SnapshotRef` (snapshot data lives in ``<dir>/snapshots``).
A segment flagged as a checkpoint holds a full image of the durable state, so every older
segment can be deleted.  Recovery replays from the newest checkpoint into a
:class:`pnyx.core.DurableState` using the shared fold.
"""

from __future__ import annotations

import errno
import json
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

SEGMENT_MAGIC = b"PNYXWAL\x02"
"""First 8 bytes of every segment file (the last byte is the format version)."""

RECORD_MAGIC = b"\xc1\xd7\x5a\x02"
"""First 4 bytes of every record (0xc1 is never a msgpack type byte); lets a scan find
records after a damaged region."""

MANIFEST_FILE = "MANIFEST"
"""JSON file in the WAL directory naming the newest segment (rewritten once per segment)."""

WAL_FORMAT = 2

LAZY_FSYNC = "lazy_fsync"
"""Runtime mutant (fault testing only): acknowledge at once, fdatasync at most every
:data:`LAZY_FSYNC_MS` (see :attr:`WalConfig.lazy_fsync_ms`)."""
LAZY_FSYNC_MS = 1000
RUNTIME_MUTANTS: frozenset[str] = frozenset({LAZY_FSYNC})
"""Names of the runtime's deliberately broken variants (``pnyx serve --test-mutant``)."""

KIND_OP = 1
KIND_SNAPSHOT = 2

SEGMENT_CHECKPOINT = 1
"""Segment header flag: the segment starts with a full image of the durable state."""
RECORD_BATCH_END = 1
"""Record flag: the last record of a sync batch."""

_SEGMENT_PREFIX = struct.Struct("<8sQQQI")
_SEGMENT_HEADER_BYTES = _SEGMENT_PREFIX.size + 4
_RECORD_PREFIX = struct.Struct("<4sIQIHHI")
_RECORD_HEADER_BYTES = _RECORD_PREFIX.size + 4
_CRC = struct.Struct("<I")
_V1_MAGIC = b"PNYXWAL\x01"
_SUFFIX = ".wal"
_SNAPSHOT_DIR = "snapshots"
_ZERO_CHUNK_BYTES = 64 * 1024

RECOVER_HINT = (
    "stop the node, move its data directory aside (keep it for inspection) and restart the "
    "node with an empty data directory: it rejoins and catches up from its peers by "
    "snapshot (docs/RUNTIME.md, 'Recovering a node')"
)


class WalError(Exception):
    """Base class of WAL failures that must stop the node."""


class WalCorruptError(WalError):
    """The WAL is damaged or incomplete in a way recovery must not repair."""

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
    """Size of each segment file, fixed when it is created (sparse: only written bytes use
    disk).  A batch that does not fit starts the next segment; a batch bigger than this gets
    a segment of its own, sized to fit."""
    max_record_bytes: int = 32 * 1024 * 1024
    """Largest record body; bigger ``LogAppend`` ops are split, a bigger entry is an error."""
    fsync: bool = True
    """False skips fsync (benchmarks only: acknowledged writes may be lost on power loss)."""
    lose_unsynced: bool = False
    """Fault testing only (``pnyx serve --test-lose-unsynced``): records written to the WAL
    stay in this process's memory until their fdatasync, so a SIGKILL loses exactly what a
    power failure would: everything not yet fsynced.  (Otherwise written bytes sit in the
    kernel's page cache, which survives the process.)  Segment headers, the manifest and
    snapshot files are fsynced as they are written, so they are unaffected."""
    lazy_fsync_ms: int = 0
    """The runtime mutant ``lazy_fsync`` (fault testing only; 0: off): :meth:`sync` writes
    each batch but fdatasyncs only when this many ms have passed since the last fdatasync,
    so a batch is acknowledged before it is durable (like Redis's ``appendfsync
    everysec``).  A whole-cluster crash then loses acknowledged writes."""


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
    manifest_writes: int = 0
    last_sync_s: float = 0.0
    sync_seconds: list[float] = field(default_factory=list)

    def note_sync(self, seconds: float) -> None:
        """Record one fsync's latency (keeps a bounded window of recent samples)."""
        self.fsyncs += 1
        self.last_sync_s = seconds
        self.sync_seconds.append(seconds)
        if len(self.sync_seconds) > 4096:
            del self.sync_seconds[:2048]


@dataclass(frozen=True)
class _SegmentHeader:
    seq: int
    first_lsn: int
    size_bytes: int
    checkpoint: bool


@dataclass
class _Record:
    offset: int
    end: int
    lsn: int
    batch_lsn: int
    batch_end: bool
    kind: int
    body: bytes


@dataclass
class _Scan:
    """What recovery keeps of one segment: the records of its complete batches."""

    path: Path
    header: _SegmentHeader
    records: list[_Record]
    used_bytes: int
    """Where the next batch goes (end of the last complete batch)."""
    next_lsn: int
    repair: tuple[int, int] | None = None
    """Byte range of a torn tail (an incomplete last batch) to zero out."""


class WriteAheadLog:
    """The durable log of one node; opening it recovers what survived.

    Use: ``wal = WriteAheadLog(path, codec)``; hand ``wal.recovered()`` to the node factory;
    per ``Ready`` batch call ``wal.write(ready.persist)`` (one fsync for the whole batch).
    ``must_exist=True`` refuses to create a new, empty WAL (the caller knows one existed,
    e.g. from the data directory's ``node.json``).
    Not thread-safe: one caller at a time (the runner runs it in one worker thread).
    """

    def __init__(
        self,
        directory: Path,
        codec: OpCodec | None = None,
        config: WalConfig | None = None,
        *,
        on_sync: Callable[[float], None] | None = None,
        must_exist: bool = False,
    ) -> None:
        self.directory = directory
        self.codec: OpCodec = codec if codec is not None else PersistCodec()
        self.config = config or WalConfig()
        if not 0 < self.config.max_record_bytes < 2**32:
            raise ValueError(f"max_record_bytes={self.config.max_record_bytes}: a u32 above 0")
        self.stats = WalStats()
        self._on_sync = on_sync
        self._must_exist = must_exist
        directory.mkdir(parents=True, exist_ok=True)
        self.snapshots = SnapshotStore(
            directory / _SNAPSHOT_DIR, self.codec.encode, self.codec.decode
        )
        self._state = DurableState()
        self._snapshot_ref: SnapshotRef | None = None
        self._snapshot_changed = False
        self._pending: list[tuple[int, bytes]] = []
        self._closed_segments: list[tuple[int, int]] = []  # (seq, used bytes)
        self._seq = 0
        self._next_lsn = 1
        self._write_offset = 0
        self._size_bytes = 0
        self._fd = -1
        self._checkpoint_threshold_bytes = 0
        self._unsynced: list[tuple[int, bytes]] = []
        """(offset, bytes) written to the current segment but held back until its
        fdatasync (``lose_unsynced``)."""
        self._dirty = False
        """Bytes were written to the current segment since its last fdatasync."""
        self._last_fsync_s = time.monotonic()
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

    @property
    def manifest_path(self) -> Path:
        """The manifest naming the newest segment."""
        return self.directory / MANIFEST_FILE

    def append(self, ops: Sequence[PersistOp]) -> None:
        """Encode ``ops`` into the pending batch (durable only after :meth:`sync`).

        A ``SnapshotSave`` is written to its own file right away (fsynced); the WAL
        records a reference to it.
        """
        for op in ops:
            if isinstance(op, SnapshotSave):
                self._append_snapshot(op)
                continue
            if isinstance(op, LogAppend) and op.first_index > self._state.last_index + 1:
                raise ValueError(
                    f"LogAppend at index {op.first_index} leaves a gap after the last "
                    f"index {self._state.last_index}"
                )
            bodies = self._encode_op(op)
            self._state.apply(op)
            self._pending.extend((KIND_OP, body) for body in bodies)
            if isinstance(op, LogCompact):
                self._checkpoint_threshold_bytes = 0  # the image shrank: worth another look

    def sync(self) -> None:
        """Write the pending batch and make it durable with one fdatasync (group commit).

        Under the ``lazy_fsync_ms`` mutant the fdatasync (and what follows it: snapshot
        clean-up, checkpoints) waits until that long has passed since the last one."""
        if self._pending:
            self._write_pending()
        if self._dirty and not self._fsync_due():
            return  # mutant lazy_fsync: written (and soon acknowledged), not durable
        self._sync_written()
        self._after_sync()

    def fsync(self) -> None:
        """Make every batch written so far durable now, whatever the ``lazy_fsync_ms``
        mutant would wait for (pending ops are written first)."""
        if self._pending:
            self._write_pending()
        self._sync_written()
        self._after_sync()

    def write(self, ops: Sequence[PersistOp]) -> None:
        """Append ``ops`` and sync: when this returns, all of them are durable (under the
        ``lazy_fsync_ms`` mutant: written, durable at a later sync)."""
        self.append(ops)
        self.sync()

    def close(self) -> None:
        """Sync anything pending and close the current segment."""
        if self._fd >= 0:
            self.sync()
            self._sync_written()
            os.close(self._fd)
            self._fd = -1

    # -- writing -------------------------------------------------------------------------

    def _write_pending(self) -> None:
        """Frame the pending records as one batch and write it after the current one."""
        data = _frame_batch(self._pending, self._next_lsn)
        records = len(self._pending)
        self._pending.clear()
        if self._write_offset + len(data) > self._size_bytes:
            self._roll(len(data))
        if self.config.lose_unsynced:
            self._unsynced.append((self._write_offset, data))
        else:
            _pwrite_all(self._fd, data, self._write_offset)
        self._dirty = True
        self._write_offset += len(data)
        self._next_lsn += records
        self.stats.records += records
        self.stats.bytes_written += len(data)

    def _fsync_due(self) -> bool:
        """Whether :meth:`sync` fdatasyncs now (always, unless the lazy_fsync mutant)."""
        interval_ms = self.config.lazy_fsync_ms
        return interval_ms <= 0 or (time.monotonic() - self._last_fsync_s) * 1000 >= interval_ms

    def _sync_written(self) -> None:
        """Make every batch written to the current segment durable: write what was held
        back (``lose_unsynced``), then one fdatasync."""
        if not self._dirty:
            return
        for offset, data in self._unsynced:
            _pwrite_all(self._fd, data, offset)
        self._unsynced.clear()
        self._datasync(self._fd)
        self._dirty = False
        self._last_fsync_s = time.monotonic()

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
        self._pending.append((KIND_SNAPSHOT, msgspec.msgpack.encode(ref)))
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
        self._maybe_checkpoint()

    # -- segments and the manifest -------------------------------------------------------

    def _segment_path(self, seq: int) -> Path:
        return self.directory / f"{seq:016d}{_SUFFIX}"

    def _create_segment(
        self, seq: int, items: Sequence[tuple[int, bytes]], *, checkpoint: bool, min_bytes: int = 0
    ) -> None:
        """Atomically create segment ``seq`` holding ``items`` (one batch), and make it current.

        Order: the segment file is complete and durable (temp file with its final size,
        fsync, rename, directory fsync) before the manifest names it, and the manifest
        names it before anything is appended to it.  A crash before the manifest update
        leaves a whole segment one past the manifest, which recovery accepts; a crash after
        it leaves a manifest naming a segment that exists.  (The other order would make a
        crash look like a deleted segment.)  So the manifest is written once per segment,
        never per batch.
        """
        first_lsn = self._next_lsn
        data = _frame_batch(items, first_lsn) if items else b""
        size = max(self.config.segment_bytes, _SEGMENT_HEADER_BYTES + max(len(data), min_bytes))
        final = self._segment_path(seq)
        temp = final.with_name(final.name + ".tmp")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            _pwrite_all(fd, _segment_header(seq, first_lsn, size, checkpoint) + data, 0)
            os.ftruncate(fd, size)
            self._datasync(fd)
        finally:
            os.close(fd)
        os.replace(temp, final)
        fsync_dir(self.directory)
        self._write_manifest(seq)
        self._next_lsn += len(items)
        self._open_current(seq, size, _SEGMENT_HEADER_BYTES + len(data))
        self.stats.segments_created += 1

    def _write_manifest(self, last_segment: int) -> None:
        temp = self.directory / (MANIFEST_FILE + ".tmp")
        text = json.dumps({"format": WAL_FORMAT, "last_segment": last_segment}) + "\n"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            _pwrite_all(fd, text.encode(), 0)
            self._datasync(fd)
        finally:
            os.close(fd)
        os.replace(temp, self.manifest_path)
        fsync_dir(self.directory)
        self.stats.manifest_writes += 1

    def _read_manifest(self) -> int | None:
        path = self.manifest_path
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise WalCorruptError(path, 0, f"unreadable manifest ({exc})") from exc
        if not isinstance(raw, dict) or raw.get("format") != WAL_FORMAT:
            raise WalCorruptError(path, 0, f"manifest of an unknown WAL format: {raw!r}")
        last = raw.get("last_segment")
        if not isinstance(last, int) or isinstance(last, bool) or last < 1:
            raise WalCorruptError(path, 0, f"manifest without a valid last_segment: {raw!r}")
        return last

    def _open_current(self, seq: int, size_bytes: int, write_offset: int) -> None:
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = os.open(self._segment_path(seq), os.O_WRONLY)
        self._seq = seq
        self._size_bytes = size_bytes
        self._write_offset = write_offset

    def _roll(self, min_bytes: int) -> None:
        """Close the current segment and continue in a new one that fits ``min_bytes``."""
        self._sync_written()  # a segment is closed durable (the lazy_fsync mutant too)
        self._closed_segments.append((self._seq, self._write_offset))
        self._create_segment(self._seq + 1, [], checkpoint=False, min_bytes=min_bytes)
        log.info("wal_rotate segment=%s", self._segment_path(self._seq).name)

    def _maybe_checkpoint(self) -> None:
        if not self._closed_segments:
            return
        closed_bytes = sum(size for _, size in self._closed_segments)
        if closed_bytes < self._checkpoint_threshold_bytes:
            return
        items = self._checkpoint_items()
        image_bytes = sum(len(body) + _RECORD_HEADER_BYTES + 1 for _, body in items)
        reclaim_bytes = closed_bytes + self._write_offset
        if image_bytes * 2 > reclaim_bytes:
            # Not worth it yet (log not compacted); retry once the closed segments doubled.
            self._checkpoint_threshold_bytes = 2 * image_bytes
            return
        old = [seq for seq, _ in self._closed_segments] + [self._seq]
        self._create_segment(self._seq + 1, items, checkpoint=True)
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

    def _checkpoint_items(self) -> list[tuple[int, bytes]]:
        """Records that rebuild the current durable state from nothing."""
        state = self._state
        items = [(KIND_OP, self.codec.encode(PutRecord(k, v))) for k, v in state.records.items()]
        if self._snapshot_ref is not None:
            items.append((KIND_SNAPSHOT, msgspec.msgpack.encode(self._snapshot_ref)))
        if state.log_start > 1:
            items.append((KIND_OP, self.codec.encode(LogCompact(state.log_start - 1))))
        for part in self._split_append(state.log_start, state.log):
            items.append((KIND_OP, self.codec.encode(part)))
        return items

    def _delete_segments(self, seqs: Sequence[int]) -> None:
        for seq in seqs:
            self._segment_path(seq).unlink(missing_ok=True)
            self.stats.segments_deleted += 1
        if seqs:
            fsync_dir(self.directory)

    # -- recovery ------------------------------------------------------------------------

    def _recover(self) -> None:
        for temp in self.directory.glob("*.tmp"):
            temp.unlink()
        manifest = self._read_manifest()
        paths = self._list_segments()
        if not paths:
            self._recover_empty(manifest)
            return
        self._check_against_manifest(paths, manifest)
        start = self._replay_start(paths)
        scans: list[_Scan] = []
        expected_lsn: int | None = None
        for i, (seq, path) in enumerate(paths[start:], start):
            data, size_bytes = _read_segment(path)
            scan = _scan_segment(
                path,
                seq,
                data,
                size_bytes,
                expected_lsn,
                is_last=(i == len(paths) - 1),
                max_record_bytes=self.config.max_record_bytes,
            )
            scans.append(scan)
            expected_lsn = scan.next_lsn
        last = scans[-1]
        if manifest is None and not _is_fresh(scans):
            raise WalCorruptError(
                self.manifest_path,
                0,
                "missing: the WAL has segments holding data but no manifest (the manifest was "
                "deleted, or the WAL was written by an older format)",
            )
        self._replay(scans)
        if last.repair is not None:
            self._repair_tail(last, *last.repair)
        self._delete_segments([seq for seq, _ in paths[:start]])
        self._closed_segments = [(s.header.seq, s.used_bytes) for s in scans[:-1]]
        self._next_lsn = last.next_lsn
        self._open_current(last.header.seq, last.header.size_bytes, last.used_bytes)
        if manifest != last.header.seq:
            self._write_manifest(last.header.seq)
        self.snapshots.remove_except([self._snapshot_ref.file] if self._snapshot_ref else [])

    def _recover_empty(self, manifest: int | None) -> None:
        if manifest is not None:
            raise WalCorruptError(
                self._segment_path(manifest),
                0,
                f"missing: no segment is left, but the manifest {self.manifest_path} names "
                f"segment {manifest} as the newest",
            )
        if self._must_exist:
            raise WalCorruptError(
                self.manifest_path,
                0,
                "missing: the data directory records that this node had a WAL here, but there "
                "is neither a manifest nor a segment (was the wal directory deleted?)",
            )
        self._create_segment(1, [], checkpoint=True)
        self.snapshots.remove_except([])

    def _check_against_manifest(self, paths: list[tuple[int, Path]], manifest: int | None) -> None:
        newest = paths[-1][0]
        if manifest is None:
            return  # accepted only for a fresh, empty first segment (checked after the scan)
        if newest < manifest:
            raise WalCorruptError(
                self._segment_path(newest + 1),
                0,
                f"missing: the manifest names segment {manifest} as the newest, but the newest "
                f"on disk is {newest} (segments {newest + 1}..{manifest} were deleted)",
            )
        if newest > manifest + 1:
            raise WalCorruptError(
                paths[-1][1],
                0,
                f"segment {newest} is beyond the manifest's newest segment {manifest}+1, so it "
                "was not written by this WAL",
            )

    def _list_segments(self) -> list[tuple[int, Path]]:
        found: list[tuple[int, Path]] = []
        for path in self.directory.glob("*" + _SUFFIX):
            stem = path.name[: -len(_SUFFIX)]
            if not stem.isdigit():
                raise WalCorruptError(path, 0, "unexpected file name in the WAL directory")
            found.append((int(stem), path))
        return sorted(found)

    def _replay_start(self, paths: list[tuple[int, Path]]) -> int:
        """Index of the newest checkpoint segment; every segment after it must be present."""
        for i in range(len(paths) - 1, -1, -1):
            seq, path = paths[i]
            if i + 1 < len(paths) and paths[i + 1][0] != seq + 1:
                raise WalCorruptError(paths[i + 1][1], 0, f"segment {seq + 1} is missing before it")
            with open(path, "rb") as handle:
                header = _parse_segment_header(path, handle.read(_SEGMENT_HEADER_BYTES))
            if header.seq != seq:
                raise WalCorruptError(path, 0, _renamed(header.seq))
            if header.checkpoint:
                return i
        raise WalCorruptError(
            paths[0][1],
            0,
            "no segment is a checkpoint, so the log cannot be replayed (older segments are "
            "missing)",
        )

    def _replay(self, scans: list[_Scan]) -> None:
        refs: list[tuple[Path, int, SnapshotRef]] = []
        for scan in scans:
            for rec in scan.records:
                if rec.kind == KIND_SNAPSHOT:
                    refs.append((scan.path, rec.offset, _decode_ref(scan.path, rec)))
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
            if isinstance(op, LogAppend) and op.first_index > self._state.last_index + 1:
                raise WalCorruptError(
                    scan.path,
                    rec.offset,
                    f"inconsistent records: LogAppend at index {op.first_index} leaves a gap "
                    f"after the last index {self._state.last_index}",
                )
            self._state.apply(op)
        elif rec.kind == KIND_SNAPSHOT:
            if (scan.path, rec.offset) == winner:
                ref = _decode_ref(scan.path, rec)
                try:
                    self._state.apply(self.snapshots.load(ref))
                except SnapshotCorruptError as exc:
                    raise WalCorruptError(scan.path, rec.offset, str(exc)) from exc
                self._snapshot_ref = ref
        else:
            raise WalCorruptError(scan.path, rec.offset, f"unknown record kind {rec.kind}")

    def _repair_tail(self, scan: _Scan, start: int, end: int) -> None:
        """Zero the torn tail ``[start, end)`` (the file keeps its size) and make it durable."""
        log.warning(
            "wal_torn_tail_repaired file=%s offset=%d dropped_bytes=%d",
            scan.path,
            start,
            end - start,
        )
        fd = os.open(scan.path, os.O_WRONLY)
        try:
            offset = start
            while offset < end:
                chunk = min(_ZERO_CHUNK_BYTES, end - offset)
                _pwrite_all(fd, bytes(chunk), offset)
                offset += chunk
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


def _frame_batch(items: Sequence[tuple[int, bytes]], first_lsn: int) -> bytes:
    """Frame one sync batch: consecutive lsns from ``first_lsn``, the last flagged BATCH_END."""
    out: list[bytes] = []
    last = len(items) - 1
    for i, (kind, data) in enumerate(items):
        body = bytes((kind,)) + data
        flags = RECORD_BATCH_END if i == last else 0
        head = _RECORD_PREFIX.pack(
            RECORD_MAGIC, len(body), first_lsn + i, i, flags, 0, crc32c.crc32c(body)
        )
        out.append(head + _CRC.pack(crc32c.crc32c(head)) + body)
    return b"".join(out)


def _segment_header(seq: int, first_lsn: int, size_bytes: int, checkpoint: bool) -> bytes:
    flags = SEGMENT_CHECKPOINT if checkpoint else 0
    head = _SEGMENT_PREFIX.pack(SEGMENT_MAGIC, seq, first_lsn, size_bytes, flags)
    return head + _CRC.pack(crc32c.crc32c(head))


def _parse_segment_header(path: Path, data: bytes) -> _SegmentHeader:
    if data[: len(_V1_MAGIC)] == _V1_MAGIC:
        raise WalCorruptError(
            path,
            0,
            "segment of WAL format 1 (written by an older pnyx); this version reads format 2. "
            "The node cannot be upgraded in place",
        )
    if len(data) < _SEGMENT_HEADER_BYTES:
        raise WalCorruptError(path, 0, f"{len(data)} bytes, shorter than a segment header")
    magic, seq, first_lsn, size_bytes, flags = _SEGMENT_PREFIX.unpack_from(data, 0)
    if magic != SEGMENT_MAGIC:
        raise WalCorruptError(path, 0, f"bad segment magic {magic!r}")
    (crc,) = _CRC.unpack_from(data, _SEGMENT_PREFIX.size)
    if crc32c.crc32c(data[: _SEGMENT_PREFIX.size]) != crc:
        raise WalCorruptError(path, 0, "segment header CRC32C mismatch")
    return _SegmentHeader(seq, first_lsn, size_bytes, bool(flags & SEGMENT_CHECKPOINT))


def _renamed(header_seq: int) -> str:
    return f"the segment header names segment {header_seq}: the file was renamed or copied"


def _decode_ref(path: Path, rec: _Record) -> SnapshotRef:
    try:
        return msgspec.msgpack.decode(rec.body, type=SnapshotRef)
    except msgspec.MsgspecError as exc:
        raise WalDecodeError(path, rec.offset, f"snapshot reference: {exc}") from exc


def _is_fresh(scans: list[_Scan]) -> bool:
    """A first segment created without its manifest yet (a crash at the very first start)."""
    only = scans[0]
    return (
        len(scans) == 1
        and only.header.seq == 1
        and only.header.checkpoint
        and not only.records
        and only.repair is None
    )


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


_PROBLEMS = {
    "short": "the segment ends inside a record header",
    "magic": "no record starts here (bad record magic)",
    "header": "record header CRC32C mismatch (length or sequence fields damaged)",
    "length": "record length is 0, above max_record_bytes or beyond the segment",
    "body": "record body CRC32C mismatch",
}


def _read_record(data: bytes, offset: int, max_record_bytes: int) -> tuple[_Record | None, str]:
    """The record at ``offset`` if its framing and CRCs are valid, else (None, problem)."""
    header_end = offset + _RECORD_HEADER_BYTES
    if header_end > len(data):
        return None, "short"
    magic, length, lsn, delta, flags, _, body_crc = _RECORD_PREFIX.unpack_from(data, offset)
    if magic != RECORD_MAGIC:
        return None, "magic"
    (header_crc,) = _CRC.unpack_from(data, offset + _RECORD_PREFIX.size)
    if crc32c.crc32c(data[offset : offset + _RECORD_PREFIX.size]) != header_crc:
        return None, "header"
    end = header_end + length
    if length == 0 or length > max_record_bytes or end > len(data) or delta > lsn:
        return None, "length"
    if crc32c.crc32c(data[header_end:end]) != body_crc:
        return None, "body"
    body = data[header_end + 1 : end]
    batch_end = bool(flags & RECORD_BATCH_END)
    return _Record(offset, end, lsn, lsn - delta, batch_end, data[header_end], body), ""


def _order_problem(rec: _Record, lsn: int, batch_lsn: int | None) -> str:
    """Why a CRC-valid record is out of place ("" when it is the expected next record)."""
    if rec.lsn != lsn:
        return (
            f"record has log sequence number {rec.lsn}, expected {lsn} (records dropped, "
            "duplicated or reordered)"
        )
    want_batch = lsn if batch_lsn is None else batch_lsn
    if rec.batch_lsn != want_batch:
        return f"record says its batch starts at {rec.batch_lsn}, expected {want_batch}"
    return ""


def _scan_segment(
    path: Path,
    seq: int,
    data: bytes,
    size_bytes: int,
    expected_lsn: int | None,
    *,
    is_last: bool,
    max_record_bytes: int,
) -> _Scan:
    """The complete batches of one segment; classify what follows them as clean, torn or corrupt.

    Only the last segment may end in a torn tail: an incomplete batch, or damage after which
    no valid record of a *later* batch follows.  A later batch is written only after the
    damaged one was fsynced, so damage followed by one is damage to acknowledged data.
    """
    header = _check_segment(path, seq, data, size_bytes, expected_lsn)
    offset = _SEGMENT_HEADER_BYTES
    lsn = header.first_lsn
    batch_lsn: int | None = None  # first lsn of the batch being read, None between batches
    batch_offset = offset
    complete: list[_Record] = []
    pending: list[_Record] = []
    problem = ""
    while offset < len(data):
        rec, key = _read_record(data, offset, max_record_bytes)
        problem = _PROBLEMS[key] if rec is None else _order_problem(rec, lsn, batch_lsn)
        if rec is None or problem:
            break
        if batch_lsn is None:
            batch_lsn, batch_offset = rec.lsn, offset
        pending.append(rec)
        lsn += 1
        offset = rec.end
        if rec.batch_end:
            complete.extend(pending)
            pending.clear()
            batch_lsn = None
    nonzero_end = _nonzero_end(data, offset)
    if nonzero_end == offset and not pending:
        return _Scan(path, header, complete, offset, lsn)
    damaged_lsn = lsn if batch_lsn is None else batch_lsn
    start = batch_offset if pending else offset
    if not is_last:
        if nonzero_end == offset:
            problem = "the segment ends inside a batch (only the last segment can be torn)"
            offset = start
        raise WalCorruptError(path, offset, problem)
    later = _later_record(data, offset, nonzero_end, damaged_lsn, lsn, max_record_bytes)
    if later is not None:
        raise WalCorruptError(
            path,
            offset,
            f"{problem}; a valid record of a later write follows at byte offset {later.offset} "
            f"(log sequence number {later.lsn}), so this damage hit data that was already "
            "durable",
        )
    return _Scan(path, header, complete, start, damaged_lsn, (start, max(nonzero_end, offset)))


def _check_segment(
    path: Path, seq: int, data: bytes, size_bytes: int, expected_lsn: int | None
) -> _SegmentHeader:
    header = _parse_segment_header(path, data)
    if header.seq != seq:
        raise WalCorruptError(path, 0, _renamed(header.seq))
    if size_bytes != header.size_bytes:
        raise WalCorruptError(
            path,
            min(size_bytes, header.size_bytes),
            f"the file is {size_bytes} bytes but was created with {header.size_bytes}: it was "
            "truncated or extended",
        )
    if expected_lsn is not None and header.first_lsn != expected_lsn:
        raise WalCorruptError(
            path,
            0,
            f"the segment starts at log sequence number {header.first_lsn}, but the previous "
            f"segment ends before {expected_lsn} (records or segments lost, duplicated or "
            "reordered)",
        )
    return header


def _later_record(
    data: bytes, start: int, end: int, damaged_lsn: int, next_lsn: int, max_record_bytes: int
) -> _Record | None:
    """The first valid record in ``[start, end)`` that is not part of the damaged batch."""
    pos = start
    while True:
        pos = data.find(RECORD_MAGIC, pos, end)
        if pos < 0:
            return None
        rec, _ = _read_record(data, pos, max_record_bytes)
        if rec is not None and (rec.batch_lsn != damaged_lsn or rec.lsn < next_lsn):
            return rec
        pos += 1


def _read_segment(path: Path) -> tuple[bytes, int]:
    """(the bytes up to the end of the file's last data extent, the file size).

    Segments are sparse: what lies past the last data extent is a hole, which reads as
    zeros, so it is not read (a fresh 64 MiB segment costs a few KiB, not 64 MiB).
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        size_bytes = os.fstat(fd).st_size
        end = _data_end(fd, size_bytes)
        chunks: list[bytes] = []
        offset = 0
        while offset < end:
            chunk = os.pread(fd, end - offset, offset)
            if not chunk:
                break
            chunks.append(chunk)
            offset += len(chunk)
        return b"".join(chunks), size_bytes
    finally:
        os.close(fd)


def _data_end(fd: int, size_bytes: int) -> int:
    """End of the last data extent (``size_bytes`` when holes cannot be asked for)."""
    seek_data, seek_hole = getattr(os, "SEEK_DATA", None), getattr(os, "SEEK_HOLE", None)
    if seek_data is None or seek_hole is None:
        return size_bytes
    end = pos = 0
    try:
        while pos < size_bytes:
            pos = os.lseek(fd, os.lseek(fd, pos, seek_data), seek_hole)
            end = pos
    except OSError as exc:
        if exc.errno != errno.ENXIO:  # ENXIO: no data after pos; anything else: read all
            return size_bytes
    return min(end, size_bytes)


def _nonzero_end(data: bytes, start: int) -> int:
    """One past the last non-zero byte at or after ``start`` (``start`` if all zero)."""
    end = len(data)
    while end > start:
        low = max(start, end - _ZERO_CHUNK_BYTES)
        kept = len(data[low:end].rstrip(b"\0"))
        if kept:
            return low + kept
        end = low
    return start

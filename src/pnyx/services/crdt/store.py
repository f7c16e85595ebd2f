"""Durable state of one CRDT document replica: a CRC-checked snapshot plus an append log.

A replica's data directory holds::

    snapshot.crdt   magic "PNYXCRS\\x01" | u64 payload length | u32 crc32c(payload) | payload
    updates.log     magic "PNYXCRL\\x01" | record*
                    record = u32 body length | u32 crc32c(body) | u32 crc32c(those 8 bytes)
                             | body
    lock            flock held by the running process (see ``pnyx.runtime.datadir``)

Snapshot payload and log record bodies are msgpack.  The snapshot holds the whole document
(``{"format", "replica", "doc", "incarnation", "fields": [[name, kind, state], ...]}``); the
log's first record names its owner ``[replica, doc, incarnation]``; every later record
is one update ``[name, kind, payload]`` exactly as it was applied (local edits and updates
received from peers alike), so replaying the log over the snapshot rebuilds the document
(applying an update twice is harmless: every field type's ``apply`` is idempotent).

Writes: records are appended with one ``write`` per batch and made durable by
``fdatasync`` (:meth:`UpdateLog.sync`); compaction writes a new snapshot atomically (temp
file, fsync, rename, directory fsync) and then empties the log, so a crash between the
two leaves a snapshot and a log that replays harmlessly over it.

Recovery tells a *torn tail* (the last record incomplete, or zeros after the last whole
record: what a crash mid-append or a power cut leaves; such a record was never
acknowledged) from *corruption* (a whole record with a wrong CRC, a bad magic, a snapshot
failing its CRC): the torn tail is cut off with a log line, corruption raises
:class:`StoreCorruptError` naming the file, the offset and what is wrong, and nothing is
modified.
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import crc32c
import msgspec

from pnyx.runtime.snapshots import fsync_dir

log = logging.getLogger("pnyx.services.crdt.store")

SNAPSHOT_FILE = "snapshot.crdt"
LOG_FILE = "updates.log"
SNAPSHOT_MAGIC = b"PNYXCRS\x01"
LOG_MAGIC = b"PNYXCRL\x01"
SNAPSHOT_FORMAT = 1
_SNAP_HEADER = struct.Struct("<8sQI")
_RECORD_HEADER = struct.Struct("<III")
_LENGTH_CRC = struct.Struct("<II")
MAX_RECORD_BYTES = 64 * 1024 * 1024
"""A record header announcing more than this is corruption, not a big update."""

_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder()

_RECOVER_HINT = (
    "the replica's data is damaged; to recover, move the data directory aside and restart "
    "the replica with an empty one: it starts a new incarnation and catches up from its "
    "peers (its edits that no peer received are lost)"
)


class StoreError(Exception):
    """The replica's data directory cannot be used; the message says why and what to do."""


class StoreCorruptError(StoreError):
    """A file of the replica failed its checks (CRC, magic, length, format)."""


@dataclass(frozen=True)
class Owner:
    """Whose files these are: the replica's name, its document, and its incarnation.

    The incarnation is drawn at random when a data directory is first used; the replica's
    CRDT operations are named ``<replica>.<incarnation>``, so a replica whose directory was
    lost comes back under a new origin and can never reuse an operation id.
    """

    replica: str
    doc: str
    incarnation: str

    @property
    def origin(self) -> str:
        """The name this replica's operations carry."""
        return f"{self.replica}.{self.incarnation}"


@dataclass(frozen=True)
class FieldImage:
    """One field in a snapshot: its name, its kind and its encoded whole state."""

    name: str
    kind: str
    state: bytes


@dataclass(frozen=True)
class Update:
    """One logged update of one field, as it was applied."""

    name: str
    kind: str
    payload: bytes


@dataclass(frozen=True)
class Recovered:
    """What :func:`recover` found: the snapshot's fields, then the log's updates in order."""

    fields: list[FieldImage]
    updates: list[Update]
    incarnation: str | None
    """The replica's incarnation recorded in its files (None: a fresh directory)."""
    log_valid_bytes: int
    """Length of the log's valid prefix (what :meth:`UpdateLog.open` keeps)."""
    torn_bytes: int
    """Bytes of a torn log tail to cut off (0 when the log ended cleanly)."""


def encode_record(update: Update) -> bytes:
    """Frame one update as a log record (header with length and CRC, then the body)."""
    body = _ENCODER.encode([update.name, update.kind, update.payload])
    head = _LENGTH_CRC.pack(len(body), crc32c.crc32c(body))
    return head + struct.pack("<I", crc32c.crc32c(head)) + body


def write_snapshot(
    directory: Path,
    owner: Owner,
    fields: Iterable[FieldImage],
    *,
    fsync: bool = True,
) -> int:
    """Replace the snapshot atomically (temp file, fsync, rename, dir fsync); return its size."""
    payload = _ENCODER.encode(
        {
            "format": SNAPSHOT_FORMAT,
            "replica": owner.replica,
            "doc": owner.doc,
            "incarnation": owner.incarnation,
            "fields": [[f.name, f.kind, f.state] for f in fields],
        }
    )
    final = directory / SNAPSHOT_FILE
    temp = directory / (SNAPSHOT_FILE + ".tmp")
    with open(temp, "wb") as handle:
        handle.write(_SNAP_HEADER.pack(SNAPSHOT_MAGIC, len(payload), crc32c.crc32c(payload)))
        handle.write(payload)
        handle.flush()
        if fsync:
            os.fsync(handle.fileno())
    os.replace(temp, final)
    if fsync:
        fsync_dir(directory)
    return _SNAP_HEADER.size + len(payload)


def read_snapshot(
    directory: Path, replica: str, doc: str
) -> tuple[list[FieldImage], str | None]:
    """The fields and incarnation of the snapshot in ``directory`` (``[], None`` when there
    is none); checked."""
    path = directory / SNAPSHOT_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return [], None
    except OSError as exc:
        raise StoreError(f"cannot read {path}: {exc.strerror}") from exc
    payload = _verify_snapshot(path, data)
    try:
        raw = _DECODER.decode(payload)
    except msgspec.MsgspecError as exc:
        raise StoreCorruptError(
            f"{path}: payload passed its CRC but is not msgpack ({exc}); {_RECOVER_HINT}"
        ) from exc
    return _parse_snapshot(path, raw, replica, doc)


def _verify_snapshot(path: Path, data: bytes) -> bytes:
    if len(data) < _SNAP_HEADER.size:
        raise StoreCorruptError(
            f"{path} at offset 0: {len(data)} bytes, shorter than the {_SNAP_HEADER.size}-byte "
            f"header; {_RECOVER_HINT}"
        )
    magic, length, crc = _SNAP_HEADER.unpack_from(data, 0)
    if magic != SNAPSHOT_MAGIC:
        raise StoreCorruptError(f"{path} at offset 0: bad magic {magic!r}; {_RECOVER_HINT}")
    payload = data[_SNAP_HEADER.size :]
    if length != len(payload):
        raise StoreCorruptError(
            f"{path} at offset 8: header says {length} payload bytes, the file holds "
            f"{len(payload)}; {_RECOVER_HINT}"
        )
    if crc32c.crc32c(payload) != crc:
        raise StoreCorruptError(
            f"{path} at offset {_SNAP_HEADER.size}: CRC32C mismatch over {length} payload "
            f"bytes; {_RECOVER_HINT}"
        )
    return payload


def _parse_snapshot(
    path: Path, raw: Any, replica: str, doc: str
) -> tuple[list[FieldImage], str | None]:
    if not isinstance(raw, dict) or raw.get("format") != SNAPSHOT_FORMAT:
        found = raw.get("format") if isinstance(raw, dict) else type(raw).__name__
        raise StoreCorruptError(
            f"{path}: not a snapshot of format {SNAPSHOT_FORMAT} (found {found!r}); "
            f"{_RECOVER_HINT}"
        )
    _check_owner(path, raw.get("replica"), raw.get("doc"), replica, doc)
    incarnation = _check_incarnation(path, raw.get("incarnation"))
    fields = raw.get("fields")
    if not isinstance(fields, list):
        raise StoreCorruptError(f"{path}: 'fields' is {type(fields).__name__}, not a list")
    images: list[FieldImage] = []
    for entry in fields:
        if not _is_name_kind_bytes(entry):
            raise StoreCorruptError(f"{path}: bad field entry {entry!r:.200}; {_RECOVER_HINT}")
        images.append(FieldImage(entry[0], entry[1], entry[2]))
    return images, incarnation


def _check_incarnation(path: Path, found: Any) -> str:
    if not isinstance(found, str) or not found:
        raise StoreCorruptError(f"{path}: bad incarnation {found!r:.80}; {_RECOVER_HINT}")
    return found


def _check_owner(path: Path, found_replica: Any, found_doc: Any, replica: str, doc: str) -> None:
    if found_replica != replica or found_doc != doc:
        raise StoreError(
            f"{path} belongs to replica {found_replica!r} of document {found_doc!r}; this is "
            f"replica {replica!r} of document {doc!r}. Start with that --id and --doc, or use "
            "another --data-dir"
        )


class UpdateLog:
    """The append-only update log of one replica (open for appending)."""

    def __init__(self, directory: Path, owner: Owner, *, fsync: bool = True) -> None:
        self.path = directory / LOG_FILE
        self.owner = owner
        self.fsync = fsync
        self._fd = -1
        self.size_bytes = 0
        self.unsynced = False

    def open(self, valid_bytes: int) -> None:
        """Open for appending after ``valid_bytes`` (a torn tail beyond it is cut off)."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        if valid_bytes <= len(LOG_MAGIC):
            valid_bytes = 0  # nothing logged yet (maybe a torn owner record): start afresh
        try:
            if os.fstat(fd).st_size > valid_bytes:
                os.ftruncate(fd, valid_bytes)
                self._sync_fd(fd)
            if valid_bytes == 0:
                os.write(fd, LOG_MAGIC + _owner_record(self.owner))
                self._sync_fd(fd)
                if self.fsync:
                    fsync_dir(self.path.parent)
            self.size_bytes = os.fstat(fd).st_size
            os.lseek(fd, 0, os.SEEK_END)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def append(self, updates: Iterable[Update]) -> int:
        """Append records (one ``write``); not durable until :meth:`sync`. Returns bytes."""
        if self._fd < 0:
            raise StoreError(f"{self.path} is not open")
        data = b"".join(encode_record(u) for u in updates)
        if data:
            written = os.write(self._fd, data)
            if written != len(data):  # a regular file only short-writes when the disk is full
                raise StoreError(f"short write to {self.path}: {written} of {len(data)} bytes")
            self.size_bytes += len(data)
            self.unsynced = True
        return len(data)

    def sync(self) -> None:
        """Make every appended record durable (fdatasync; skipped with ``fsync=False``)."""
        if self._fd >= 0 and self.unsynced:
            self._sync_fd(self._fd)
            self.unsynced = False

    def reset(self) -> None:
        """Empty the log (after a snapshot made its records redundant) and reopen it."""
        self.close()
        temp = self.path.with_name(LOG_FILE + ".tmp")
        with open(temp, "wb") as handle:
            handle.write(LOG_MAGIC + _owner_record(self.owner))
            handle.flush()
            if self.fsync:
                os.fsync(handle.fileno())
        os.replace(temp, self.path)
        if self.fsync:
            fsync_dir(self.path.parent)
        self.open(os.path.getsize(self.path))

    def close(self) -> None:
        """Sync and close (idempotent)."""
        if self._fd >= 0:
            self.sync()
            os.close(self._fd)
            self._fd = -1

    def _sync_fd(self, fd: int) -> None:
        if self.fsync:
            os.fdatasync(fd)


def _owner_record(owner: Owner) -> bytes:
    body = _ENCODER.encode([owner.replica, owner.doc, owner.incarnation])
    return encode_record(Update("", "owner", body))


def read_log(path: Path, replica: str, doc: str) -> tuple[list[Update], int, str | None]:
    """The updates in the log at ``path``, the byte length of its valid prefix and the
    incarnation its owner record names (None if it has none yet).

    A missing log is empty.  A torn tail is reported by a valid length below the file size;
    corruption raises :class:`StoreCorruptError`.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return [], 0, None
    except OSError as exc:
        raise StoreError(f"cannot read {path}: {exc.strerror}") from exc
    if len(data) < len(LOG_MAGIC):
        if data.strip(b"\x00"):
            raise StoreCorruptError(f"{path} at offset 0: bad magic {data!r}; {_RECOVER_HINT}")
        return [], 0, None  # crashed while creating the file: nothing was ever logged
    if data[: len(LOG_MAGIC)] != LOG_MAGIC:
        raise StoreCorruptError(
            f"{path} at offset 0: bad magic {data[:8]!r}; {_RECOVER_HINT}"
        )
    updates, valid = _scan_records(path, data)
    if not updates:
        return [], valid, None
    if updates[0].kind != "owner":
        raise StoreCorruptError(f"{path}: the first record does not name the replica")
    incarnation = _check_log_owner(path, updates[0].payload, replica, doc)
    return updates[1:], valid, incarnation


def _check_log_owner(path: Path, payload: bytes, replica: str, doc: str) -> str:
    try:
        found = _DECODER.decode(payload)
    except msgspec.MsgspecError as exc:
        raise StoreCorruptError(f"{path}: owner record is not msgpack ({exc})") from exc
    if not isinstance(found, list) or len(found) != 3:
        raise StoreCorruptError(f"{path}: bad owner record {found!r:.200}")
    _check_owner(path, found[0], found[1], replica, doc)
    return _check_incarnation(path, found[2])


def _scan_records(path: Path, data: bytes) -> tuple[list[Update], int]:
    offset = len(LOG_MAGIC)
    updates: list[Update] = []
    end = len(data)
    while offset < end:
        if _is_torn(data, offset):
            log.warning(
                "crdt_log_torn_tail file=%s offset=%d dropped_bytes=%d",
                path,
                offset,
                end - offset,
            )
            return updates, offset
        length, crc, head_crc = _RECORD_HEADER.unpack_from(data, offset)
        if crc32c.crc32c(data[offset : offset + _LENGTH_CRC.size]) != head_crc:
            raise StoreCorruptError(
                f"{path} at offset {offset}: record header fails its CRC32C (record "
                f"{len(updates) + 1} of the log); {_RECOVER_HINT}"
            )
        body = data[offset + _RECORD_HEADER.size : offset + _RECORD_HEADER.size + length]
        if crc32c.crc32c(body) != crc:
            raise StoreCorruptError(
                f"{path} at offset {offset}: record of {length} bytes fails its CRC32C "
                f"(record {len(updates) + 1} of the log); {_RECOVER_HINT}"
            )
        updates.append(_parse_record(path, offset, body))
        offset += _RECORD_HEADER.size + length
    return updates, offset


def _is_torn(data: bytes, offset: int) -> bool:
    """True when what starts at ``offset`` is an incomplete last record or all zeros."""
    rest = len(data) - offset
    if not data[offset:].strip(b"\x00"):
        return True
    if rest < _RECORD_HEADER.size:
        return True
    length, _crc, head_crc = _RECORD_HEADER.unpack_from(data, offset)
    if crc32c.crc32c(data[offset : offset + _LENGTH_CRC.size]) != head_crc:
        return False  # a damaged header is judged (and refused) by the caller
    if length > MAX_RECORD_BYTES:
        return False  # we never write such a record: damage, refused by the body's CRC
    return bool(_RECORD_HEADER.size + length > rest)


def _parse_record(path: Path, offset: int, body: bytes) -> Update:
    try:
        raw = _DECODER.decode(body)
    except msgspec.MsgspecError as exc:
        raise StoreCorruptError(
            f"{path} at offset {offset}: record passed its CRC but is not msgpack ({exc})"
        ) from exc
    if not _is_name_kind_bytes(raw):
        raise StoreCorruptError(f"{path} at offset {offset}: bad record {raw!r:.200}")
    return Update(raw[0], raw[1], raw[2])


def _is_name_kind_bytes(raw: Any) -> bool:
    """``raw`` is ``[str, str, bytes]``: a snapshot's field entry or a log record (field
    name, kind, encoded state or update)."""
    return (
        isinstance(raw, list)
        and len(raw) == 3
        and isinstance(raw[0], str)
        and isinstance(raw[1], str)
        and isinstance(raw[2], bytes)
    )


def recover(directory: Path, replica: str, doc: str) -> Recovered:
    """Read the snapshot and the log of ``directory`` (checked; nothing is modified)."""
    fields, snap_incarnation = read_snapshot(directory, replica, doc)
    path = directory / LOG_FILE
    updates, valid, log_incarnation = read_log(path, replica, doc)
    if snap_incarnation and log_incarnation and snap_incarnation != log_incarnation:
        raise StoreCorruptError(
            f"{directory}: {SNAPSHOT_FILE} is of incarnation {snap_incarnation!r} and "
            f"{LOG_FILE} of {log_incarnation!r}: files of two lives of the replica mixed; "
            f"{_RECOVER_HINT}"
        )
    size = path.stat().st_size if path.exists() else 0
    incarnation = snap_incarnation or log_incarnation
    return Recovered(fields, updates, incarnation, valid, size - valid)


def remove_temp_files(directory: Path) -> None:
    """Delete leftovers of an interrupted snapshot or log reset."""
    for name in (SNAPSHOT_FILE + ".tmp", LOG_FILE + ".tmp"):
        (directory / name).unlink(missing_ok=True)

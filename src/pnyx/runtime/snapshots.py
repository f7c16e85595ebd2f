"""Snapshot files: one CRC-protected file per ``SnapshotSave``, written atomically.

A snapshot is written to ``<name>.tmp``, fsynced, renamed into place and the directory
fsynced, so after a crash a snapshot file is either absent or whole.  The WAL stores only
a small :class:`SnapshotRef` to it.  File layout::

    magic "PNYXSNP" | u8 version | u64 payload length | u32 crc32c(payload) | payload

where ``payload`` is the ``SnapshotSave`` op encoded by the WAL's op codec.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import crc32c
import msgspec

from pnyx.core import SnapshotSave

SNAPSHOT_MAGIC = b"PNYXSNP\x01"
"""First 8 bytes of every snapshot file (the last byte is the format version)."""

_HEADER = struct.Struct("<8sQI")
_SUFFIX = ".snap"


class SnapshotCorruptError(Exception):
    """A snapshot file failed its checks; the message names the file and what to do."""


class SnapshotRef(msgspec.Struct, frozen=True, array_like=True):
    """What the WAL records about a snapshot file (the data itself lives in the file)."""

    file: str
    index: int
    term: int
    size_bytes: int
    crc: int


def fsync_dir(directory: Path) -> None:
    """Make renames, creations and deletions inside ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SnapshotStore:
    """The snapshot files of one node, in ``directory``."""

    def __init__(
        self,
        directory: Path,
        encode: Callable[[Any], bytes],
        decode: Callable[[bytes], Any],
    ) -> None:
        self.directory = directory
        self._encode = encode
        self._decode = decode
        directory.mkdir(parents=True, exist_ok=True)
        self._remove_temp_files()

    def save(self, op: SnapshotSave) -> SnapshotRef:
        """Write ``op`` durably (temp file, fsync, rename, directory fsync)."""
        payload = self._encode(op)
        crc = crc32c.crc32c(payload)
        # A random suffix keeps a re-save of the same index from overwriting a file that
        # the durable WAL still references.
        name = f"{op.index:020d}-{op.term:020d}-{os.urandom(4).hex()}{_SUFFIX}"
        final = self.directory / name
        temp = self.directory / (name + ".tmp")
        with open(temp, "wb") as handle:
            handle.write(_HEADER.pack(SNAPSHOT_MAGIC, len(payload), crc))
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, final)
        fsync_dir(self.directory)
        return SnapshotRef(name, op.index, op.term, len(payload), crc)

    def exists(self, ref: SnapshotRef) -> bool:
        """True when the file ``ref`` points to is present."""
        return (self.directory / ref.file).exists()

    def load(self, ref: SnapshotRef) -> SnapshotSave:
        """Read and verify the snapshot ``ref`` points to."""
        path = self.directory / ref.file
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise SnapshotCorruptError(
                f"snapshot file {path} is missing; {_RECOVER_HINT}"
            ) from None
        payload = self._verify(path, data, ref)
        try:
            op = self._decode(payload)
        except msgspec.MsgspecError as exc:
            raise SnapshotCorruptError(
                f"snapshot file {path} at offset {_HEADER.size}: payload passed its CRC but "
                f"does not decode ({exc}); was it written with other entry types? {_RECOVER_HINT}"
            ) from exc
        if not isinstance(op, SnapshotSave):
            raise SnapshotCorruptError(f"snapshot file {path} holds {type(op).__name__}")
        return op

    def remove_except(self, keep: Iterable[str]) -> list[str]:
        """Delete every snapshot file not named in ``keep``; return what was deleted."""
        kept = set(keep)
        removed = [p.name for p in self.directory.glob("*" + _SUFFIX) if p.name not in kept]
        for name in removed:
            (self.directory / name).unlink()
        if removed:
            fsync_dir(self.directory)
        return removed

    def _verify(self, path: Path, data: bytes, ref: SnapshotRef) -> bytes:
        if len(data) < _HEADER.size:
            raise SnapshotCorruptError(
                f"snapshot file {path} at offset 0: {len(data)} bytes, shorter than the "
                f"{_HEADER.size}-byte header; {_RECOVER_HINT}"
            )
        magic, length, crc = _HEADER.unpack_from(data, 0)
        if magic != SNAPSHOT_MAGIC:
            raise SnapshotCorruptError(
                f"snapshot file {path} at offset 0: bad magic {magic!r}; {_RECOVER_HINT}"
            )
        payload = data[_HEADER.size :]
        if length != len(payload) or length != ref.size_bytes:
            raise SnapshotCorruptError(
                f"snapshot file {path} at offset 8: length {length}, file holds "
                f"{len(payload)} payload bytes, WAL expects {ref.size_bytes}; {_RECOVER_HINT}"
            )
        if crc32c.crc32c(payload) != crc or crc != ref.crc:
            raise SnapshotCorruptError(
                f"snapshot file {path} at offset {_HEADER.size}: CRC32C mismatch; {_RECOVER_HINT}"
            )
        return payload

    def _remove_temp_files(self) -> None:
        for temp in self.directory.glob("*.tmp"):
            temp.unlink()


_RECOVER_HINT = (
    "the node's data is damaged: stop it, move its data directory aside and restart it "
    "empty so it catches up from its peers (docs/RUNTIME.md, 'Recovering a node')"
)

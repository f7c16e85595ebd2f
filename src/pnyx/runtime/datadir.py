"""A node's data directory: who it belongs to (``node.json``) and who is using it (a lock).

``node.json`` (format 2) records the node id, the configured group (``sorted(peers |
{node_id})``, what ``pnyx serve --peers`` passes; not Raft's current configuration, which
may change at run time) and the cluster id.  A directory stamped for another node, group or
cluster is refused with a :class:`DataDirError` that says how to start fresh.  Once the
node's WAL exists, ``"wal": true`` is added, so a deleted ``wal/`` is detected.

The lock is ``fcntl.flock(LOCK_EX | LOCK_NB)`` on ``<dir>/lock``, held for the life of the
process (the kernel releases it when the process dies, so a crashed node leaves no stale
lock); the file holds the owner's pid for the error message.
"""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

from pnyx.runtime.snapshots import fsync_dir

STAMP_FILE = "node.json"
"""File in a node's data directory naming the node, group and cluster it belongs to."""

LOCK_FILE = "lock"
"""File in a node's data directory that the running process holds an exclusive flock on."""

STAMP_FORMAT = 2


class DataDirError(Exception):
    """The data directory cannot be used by this node; the message says what to do."""


@dataclass(frozen=True)
class DataDirStamp:
    """What ``node.json`` records about the node a data directory belongs to."""

    node_id: int
    members: tuple[int, ...]
    """The sorted configured group, the node included."""
    cluster: str


def read_stamp(data_dir: Path) -> DataDirStamp | None:
    """The stamp of ``data_dir``; None when it has no ``node.json``.

    Raises :class:`DataDirError` for an unreadable stamp or one of the older format 1
    (which recorded no membership).
    """
    raw = _read_raw(data_dir)
    return None if raw is None else _parse(data_dir, raw)


def wal_recorded(data_dir: Path) -> bool:
    """True when ``node.json`` records that the node's WAL was created."""
    raw = _read_raw(data_dir)
    return bool(raw is not None and raw.get("wal") is True)


def claim_data_dir(data_dir: Path, wanted: DataDirStamp) -> bool:
    """Stamp a new ``data_dir`` for ``wanted`` or check that its stamp matches.

    Returns :func:`wal_recorded`.  Raises :class:`DataDirError` when the directory belongs
    to another node, group or cluster.
    """
    _make_dir(data_dir)
    raw = _read_raw(data_dir)
    if raw is None:
        _write_raw(data_dir, _to_raw(wanted, wal=False))
        return False
    found = _parse(data_dir, raw)
    if found != wanted:
        raise DataDirError(_mismatch(data_dir, found, wanted))
    return raw.get("wal") is True


def record_wal_created(data_dir: Path, stamp: DataDirStamp) -> None:
    """Add ``"wal": true`` to the stamp, once the WAL (segment and manifest) is durable.

    Written after the WAL, never before: a crash in between leaves a WAL and a stamp
    without the flag, which starts normally and sets it; the other order would make a crash
    before the first segment look like a deleted WAL.
    """
    if not wal_recorded(data_dir):
        _write_raw(data_dir, _to_raw(stamp, wal=True))


class LockHandle:
    """An exclusive flock on a data directory; :meth:`release` (or process exit) frees it."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd = fd

    @property
    def held(self) -> bool:
        """True until :meth:`release`."""
        return self._fd >= 0

    def release(self) -> None:
        """Release the lock (idempotent)."""
        if self._fd >= 0:
            os.close(self._fd)  # closing the only descriptor drops the flock
            self._fd = -1


def lock_data_dir(data_dir: Path) -> LockHandle:
    """Take the exclusive lock on ``data_dir`` (creating it), or raise :class:`DataDirError`."""
    _make_dir(data_dir)
    path = data_dir / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise DataDirError(f"cannot open the lock file {path}: {exc.strerror}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise DataDirError(
            f"data directory {data_dir} is in use by another process (pid {owner}); stop "
            "that process or pass another --data-dir"
        ) from None
    except OSError as exc:
        os.close(fd)
        raise DataDirError(f"cannot lock {path}: {exc.strerror}") from exc
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return LockHandle(path, fd)


def _make_dir(data_dir: Path) -> None:
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataDirError(f"cannot create data directory {data_dir}: {exc.strerror}") from exc
    if not data_dir.is_dir():
        raise DataDirError(f"data directory {data_dir} is not a directory")


def _read_raw(data_dir: Path) -> dict[str, Any] | None:
    path = data_dir / STAMP_FILE
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DataDirError(
            f"cannot read {path} ({exc}); move {data_dir} away to start a fresh node "
            f"(e.g. rm -r {data_dir})"
        ) from exc
    if not isinstance(raw, dict):
        raise DataDirError(
            f"{path} is not a JSON object; move {data_dir} away to start a fresh node "
            f"(e.g. rm -r {data_dir})"
        )
    return raw


def _parse(data_dir: Path, raw: dict[str, Any]) -> DataDirStamp:
    path = data_dir / STAMP_FILE
    if raw.get("format") == 1:
        # Format 1 recorded no membership and came with WAL format 1, which this version
        # cannot read; refusing is the only safe answer.
        raise DataDirError(
            f"data directory {data_dir} was written by an older pnyx (node.json format 1, "
            f"node {raw.get('node_id')}, no membership recorded, an older WAL format); move "
            f"it away to start a fresh node (e.g. rm -r {data_dir})"
        )
    node_id, members, cluster = raw.get("node_id"), raw.get("members"), raw.get("cluster")
    if (
        raw.get("format") != STAMP_FORMAT
        or not _is_int(node_id)
        or not isinstance(members, list)
        or not all(_is_int(m) for m in members)
        or not isinstance(cluster, str)
    ):
        raise DataDirError(
            f"{path} is not a node.json of format {STAMP_FORMAT}: {raw!r}; move {data_dir} "
            f"away to start a fresh node (e.g. rm -r {data_dir})"
        )
    return DataDirStamp(node_id, tuple(members), cluster)


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _to_raw(stamp: DataDirStamp, *, wal: bool) -> dict[str, Any]:
    return {
        "format": STAMP_FORMAT,
        "node_id": stamp.node_id,
        "members": list(stamp.members),
        "cluster": stamp.cluster,
        "wal": wal,
    }


def _write_raw(data_dir: Path, raw: dict[str, Any]) -> None:
    """Replace ``node.json`` atomically (temp file, fsync, rename, directory fsync)."""
    final = data_dir / STAMP_FILE
    temp = final.with_name(STAMP_FILE + ".tmp")
    try:
        with open(temp, "w") as handle:
            handle.write(json.dumps(raw) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, final)
        fsync_dir(data_dir)
    except OSError as exc:
        raise DataDirError(f"cannot write {final}: {exc.strerror}") from exc


def _mismatch(data_dir: Path, found: DataDirStamp, wanted: DataDirStamp) -> str:
    return (
        f"data directory {data_dir} belongs to node {found.node_id} of cluster "
        f"{found.cluster!r} with members {list(found.members)}; this node is {wanted.node_id} "
        f"of cluster {wanted.cluster!r} with members {list(wanted.members)}. Start with that "
        f"node id, cluster and membership, or move {data_dir} away to start a fresh node "
        f"(e.g. rm -r {data_dir})"
    )

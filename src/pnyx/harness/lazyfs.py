"""A lazyfs-like FUSE filesystem: written data reaches the disk only on fsync.

Jepsen's lazyfs mounts a directory through FUSE with its own page cache that is written to
the backing filesystem only when the application asks (fsync/fdatasync); killing the
filesystem process then loses what a power failure would.  This module is a small Python
equivalent built on the ``mfusepy`` binding (libfuse 3), for systems that have no
test-only lose-unsynced mode of their own (real etcd).

Semantics (per backing inode, so renames and hard links keep the overlay):

* ``write`` and ``truncate``/``ftruncate`` (and ``fallocate`` mode 0, which only grows the
  size) go to an in-memory overlay: dirty 4 KiB pages plus the file's logical size.
* Reads and ``getattr`` see the overlay, as a process sees the page cache.
* Only ``fsync``/``fdatasync`` of a file writes its overlay to the backing file and
  fsyncs it.  ``flush`` (every ``close``) and ``release`` persist nothing: as in lazyfs,
  closing a file is not a sync.
* Metadata operations (create, mkdir, rename, unlink, rmdir, link, symlink, chmod,
  chown, utimens) pass through to the backing directory at once, so they survive a
  crash even without a directory fsync.  lazyfs does the same as far as its source shows
  (``lfs_getattr`` lstat's the backing file and only overrides size and times from its
  cache; the namespace operations call the backing syscalls directly): neither simulates
  losing a create or rename that was not followed by a directory fsync.
* ``flock`` and POSIX locks are not implemented by the filesystem, so the kernel keeps
  them locally (correct for processes on one machine); ``mmap`` works because the
  mount does not use ``direct_io`` (bbolt maps its file read-only and writes with
  ``pwrite``).

A crash is the filesystem process dying by SIGKILL: the overlay is gone, the backing
directory keeps only what was fsynced.  Run it as its own process::

    python -m pnyx.harness.lazyfs BACKING MOUNTPOINT

(foreground; SIGTERM or SIGINT unmounts cleanly; after a SIGKILL,
``fusermount3 -u -z MOUNTPOINT`` removes the dead mount).  :class:`LazyFs` does that for
the harness: ``start()``, ``crash()`` (SIGKILL, lazy unmount, start again on the same
backing directory), ``stop()``.

Needs: PyPI ``mfusepy>=3.1``; Debian ``fuse3`` (``fusermount3``) and ``libfuse3-3``.
"""

from __future__ import annotations

import contextlib
import errno
import importlib.util
import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = ["PAGE_SIZE_BYTES", "LazyFs", "LazyFsError", "LazyOperations", "is_mounted", "main"]

PAGE_SIZE_BYTES = 4096
"""Granularity of the overlay: a page is loaded from the backing file on its first partial
write, as the kernel's page cache would."""
MOUNT_TIMEOUT_S = 30.0
"""Bound on the filesystem process showing up in /proc/self/mountinfo."""
STOP_TIMEOUT_S = 10.0
"""Bound between SIGTERM and SIGKILL of the filesystem process."""
REAP_TIMEOUT_S = 10.0
"""Bound on a SIGKILLed filesystem process being reaped."""
UNMOUNT_TIMEOUT_S = 10.0
"""Bound on one ``fusermount3``/``umount`` call."""
POLL_INTERVAL_S = 0.02
"""Pause between two looks at the mount table while waiting."""

FileKey = tuple[int, int]
"""A backing inode: ``(st_dev, st_ino)``."""


class LazyFsError(RuntimeError):
    """The filesystem could not be mounted or unmounted."""


# --------------------------------------------------------------------------- overlay


@dataclass
class FileOverlay:
    """The unsynced state of one backing inode.

    ``size_bytes`` is the logical size; bytes of the backing file at or past
    ``low_water_bytes`` (the smallest size the file had since its last sync) read as zeros,
    so a truncate-then-extend does not resurrect old data.  Invariant:
    ``low_water_bytes <= size_bytes``.
    """

    size_bytes: int
    low_water_bytes: int
    pages: dict[int, bytearray] = field(default_factory=dict)

    @classmethod
    def of_fd(cls, fd: int) -> FileOverlay:
        """A clean overlay for the backing file open as ``fd``."""
        size_bytes = os.fstat(fd).st_size
        return cls(size_bytes=size_bytes, low_water_bytes=size_bytes)

    def _backing_page(self, fd: int, index: int) -> bytearray:
        start = index * PAGE_SIZE_BYTES
        page = bytearray(PAGE_SIZE_BYTES)
        valid = max(0, min(PAGE_SIZE_BYTES, self.low_water_bytes - start))
        if valid:
            data = os.pread(fd, valid, start)
            page[: len(data)] = data
        return page

    def _page(self, fd: int, index: int) -> bytes | bytearray:
        page = self.pages.get(index)
        return page if page is not None else self._backing_page(fd, index)

    def read(self, fd: int, size: int, offset: int) -> bytes:
        """Up to ``size`` bytes at ``offset`` as the overlay shows them."""
        end = min(offset + size, self.size_bytes)
        chunks: list[bytes] = []
        position = offset
        while position < end:
            index, within = divmod(position, PAGE_SIZE_BYTES)
            count = min(PAGE_SIZE_BYTES - within, end - position)
            chunks.append(bytes(self._page(fd, index)[within : within + count]))
            position += count
        return b"".join(chunks)

    def write(self, fd: int, data: bytes, offset: int) -> None:
        """Put ``data`` at ``offset`` into dirty pages."""
        position = offset
        view = memoryview(data)
        while view:
            index, within = divmod(position, PAGE_SIZE_BYTES)
            count = min(PAGE_SIZE_BYTES - within, len(view))
            page = self.pages.get(index)
            if page is None:
                whole = within == 0 and count == PAGE_SIZE_BYTES
                page = bytearray(PAGE_SIZE_BYTES) if whole else self._backing_page(fd, index)
                self.pages[index] = page
            page[within : within + count] = view[:count]
            view = view[count:]
            position += count
        self.size_bytes = max(self.size_bytes, offset + len(data))

    def truncate(self, length_bytes: int) -> None:
        """Set the logical size; bytes past a shrink read as zeros if it grows again."""
        if length_bytes < self.size_bytes:
            first_gone = -(-length_bytes // PAGE_SIZE_BYTES)
            for index in [i for i in self.pages if i >= first_gone]:
                del self.pages[index]
            index, within = divmod(length_bytes, PAGE_SIZE_BYTES)
            tail = self.pages.get(index)
            if tail is not None:
                tail[within:] = bytes(PAGE_SIZE_BYTES - within)
            self.low_water_bytes = min(self.low_water_bytes, length_bytes)
        self.size_bytes = length_bytes

    def persist(self, fd: int, datasync: bool) -> None:
        """Write the overlay to the backing file ``fd`` and fsync it; the overlay is clean
        afterwards."""
        if os.fstat(fd).st_size > self.low_water_bytes:
            os.ftruncate(fd, self.low_water_bytes)
        for index, page in sorted(self.pages.items()):
            start = index * PAGE_SIZE_BYTES
            count = min(PAGE_SIZE_BYTES, self.size_bytes - start)
            if count > 0:
                os.pwrite(fd, bytes(page[:count]), start)
        if os.fstat(fd).st_size != self.size_bytes:
            os.ftruncate(fd, self.size_bytes)
        (os.fdatasync if datasync else os.fsync)(fd)
        self.pages.clear()
        self.low_water_bytes = self.size_bytes


# --------------------------------------------------------------------------- operations


def _stat_dict(st: os.stat_result) -> dict[str, Any]:
    keys = ("st_mode", "st_ino", "st_nlink", "st_uid", "st_gid", "st_size", "st_blocks")
    attrs: dict[str, Any] = {key: getattr(st, key) for key in keys}
    attrs.update(st_atime=st.st_atime_ns, st_mtime=st.st_mtime_ns, st_ctime=st.st_ctime_ns)
    attrs["st_rdev"] = st.st_rdev
    attrs["st_blksize"] = st.st_blksize
    return attrs


def _key(st: os.stat_result) -> FileKey:
    return (st.st_dev, st.st_ino)


_OPEN_FLAGS_DROPPED = os.O_ACCMODE | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_TRUNC | os.O_DIRECT


class LazyOperations:
    """mfusepy operations: a passthrough of ``backing`` with data held until fsync.

    Runs single-threaded (``nothreads``), so no locking is needed.  Errors are raised as
    ``OSError`` (mfusepy returns their errno to the kernel).
    """

    use_ns = True
    """Times in ``getattr``/``utimens`` are integer nanoseconds."""

    def __init__(self, backing: Path) -> None:
        self.backing = backing.resolve()
        self.overlays: dict[FileKey, FileOverlay] = {}
        self.fd_keys: dict[int, FileKey] = {}

    def _real(self, path: str) -> str:
        return os.path.join(self.backing, path.lstrip("/"))

    # ----------------------------------------------------------------- overlay helpers

    def _overlay(self, fh: int) -> FileOverlay:
        key = self.fd_keys[fh]
        overlay = self.overlays.get(key)
        if overlay is None:
            overlay = self.overlays[key] = FileOverlay.of_fd(fh)
        return overlay

    def _forget_if_last_link(self, real: str) -> None:
        """Drop the overlay of the inode at ``real`` if removing this name frees it."""
        with contextlib.suppress(FileNotFoundError):
            st = os.lstat(real)
            if stat.S_ISREG(st.st_mode) and st.st_nlink <= 1:
                self.overlays.pop(_key(st), None)

    def _register(self, fd: int) -> int:
        self.fd_keys[fd] = _key(os.fstat(fd))
        return fd

    # ----------------------------------------------------------------- attributes

    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        """The backing file's attributes with the overlay's size."""
        st = os.fstat(fh) if fh is not None else os.lstat(self._real(path))
        attrs = _stat_dict(st)
        overlay = self.overlays.get(_key(st))
        if overlay is not None:
            attrs["st_size"] = overlay.size_bytes
            attrs["st_blocks"] = -(-overlay.size_bytes // 512)
        return attrs

    def access(self, path: str, amode: int) -> int:
        """Passthrough ``access``."""
        if not os.access(self._real(path), amode):
            raise OSError(errno.EACCES, os.strerror(errno.EACCES))
        return 0

    def chmod(self, path: str, mode: int) -> int:
        """Passthrough ``chmod``."""
        os.chmod(self._real(path), mode)
        return 0

    def chown(self, path: str, uid: int, gid: int) -> int:
        """Passthrough ``chown``."""
        os.lchown(self._real(path), uid, gid)
        return 0

    def utimens(self, path: str, times: tuple[int, int] | None = None) -> int:
        """Passthrough ``utimensat`` (nanoseconds)."""
        if times is None:
            os.utime(self._real(path), None, follow_symlinks=False)
        else:
            os.utime(self._real(path), ns=times, follow_symlinks=False)
        return 0

    def statfs(self, path: str) -> dict[str, int]:
        """The backing filesystem's ``statvfs``."""
        st = os.statvfs(self._real(path))
        keys = ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files")
        more = ("f_ffree", "f_favail", "f_flag", "f_namemax")
        return {key: getattr(st, key) for key in keys + more}

    # ----------------------------------------------------------------- namespace

    def readdir(self, path: str, fh: int) -> list[tuple[str, dict[str, int], int]]:
        """Passthrough directory listing (names with their type and inode number)."""
        real = self._real(path)
        entries = [(name, os.lstat(os.path.join(real, name))) for name in (".", "..")]
        with os.scandir(real) as scan:
            entries += [(entry.name, entry.stat(follow_symlinks=False)) for entry in scan]
        return [(name, {"st_mode": st.st_mode, "st_ino": st.st_ino}, 0) for name, st in entries]

    def readlink(self, path: str) -> str:
        """Passthrough ``readlink``."""
        return os.readlink(self._real(path))

    def mkdir(self, path: str, mode: int) -> int:
        """Passthrough ``mkdir`` (at once, as metadata)."""
        os.mkdir(self._real(path), mode)
        return 0

    def rmdir(self, path: str) -> int:
        """Passthrough ``rmdir``."""
        os.rmdir(self._real(path))
        return 0

    def mknod(self, path: str, mode: int, dev: int) -> int:
        """Passthrough ``mknod``."""
        os.mknod(self._real(path), mode, dev)
        return 0

    def symlink(self, target: str, source: str) -> int:
        """Passthrough ``symlink``: ``target`` is the new link, ``source`` its content."""
        os.symlink(source, self._real(target))
        return 0

    def link(self, target: str, source: str) -> int:
        """Passthrough hard link: ``target`` is the new name of ``source``."""
        os.link(self._real(source), self._real(target))
        return 0

    def unlink(self, path: str) -> int:
        """Passthrough ``unlink``; the overlay goes with the inode's last name.

        libfuse hides a still-open file (``.fuse_hidden*``) instead of unlinking it, so
        this runs only when no handle is open.
        """
        real = self._real(path)
        self._forget_if_last_link(real)
        os.unlink(real)
        return 0

    def rename(self, old: str, new: str) -> int:
        """Passthrough ``rename``; an overwritten target's overlay goes with it."""
        real_old, real_new = self._real(old), self._real(new)
        with contextlib.suppress(FileNotFoundError):
            if os.path.samestat(os.lstat(real_old), os.lstat(real_new)):
                return 0
        self._forget_if_last_link(real_new)
        os.rename(real_old, real_new)
        return 0

    # ----------------------------------------------------------------- files

    def _open_backing(self, real: str, flags: int, mode: int = 0) -> int:
        base = (flags & ~_OPEN_FLAGS_DROPPED) | (flags & (os.O_CREAT | os.O_EXCL))
        try:
            fd = os.open(real, base | os.O_RDWR, mode)
        except PermissionError:
            fd = os.open(real, base | (flags & os.O_ACCMODE), mode)
        return self._register(fd)

    def open(self, path: str, flags: int) -> int:
        """Open the backing file read-write (a sync needs to write), never ``O_APPEND``
        (the kernel passes append offsets), ``O_TRUNC`` going to the overlay."""
        fh = self._open_backing(self._real(path), flags)
        if flags & os.O_TRUNC:
            self._overlay(fh).truncate(0)
        return fh

    def create(self, path: str, mode: int, flags: int) -> int:
        """Create the file at once (metadata); its data stays in the overlay."""
        fh = self._open_backing(self._real(path), flags | os.O_CREAT, mode)
        if flags & os.O_TRUNC:
            self._overlay(fh).truncate(0)
        return fh

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        """Read through the overlay (or straight from the backing file when clean)."""
        overlay = self.overlays.get(self.fd_keys[fh])
        if overlay is None:
            return os.pread(fh, size, offset)
        return overlay.read(fh, size, offset)

    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        """Hold ``data`` in the overlay; nothing reaches the backing file."""
        self._overlay(fh).write(fh, data, offset)
        return len(data)

    def truncate(self, path: str, length: int, fh: int | None = None) -> int:
        """Set the overlay's size (the backing file keeps its size until a sync)."""
        if fh is not None:
            self._overlay(fh).truncate(length)
            return 0
        fd = self._open_backing(self._real(path), os.O_RDWR)
        try:
            self._overlay(fd).truncate(length)
        finally:
            self.release(path, fd)
        return 0

    def fallocate(self, path: str, mode: int, offset: int, size: int, fh: int) -> int:
        """Mode 0 grows the overlay's size (zeros); other modes are not supported (etcd's
        WAL then falls back to ftruncate)."""
        if mode != 0:
            raise OSError(errno.EOPNOTSUPP, os.strerror(errno.EOPNOTSUPP))
        overlay = self._overlay(fh)
        if offset + size > overlay.size_bytes:
            overlay.truncate(offset + size)
        return 0

    def fsync(self, path: str, datasync: int, fh: int) -> int:
        """The only way data reaches the backing file: write the overlay, fsync it."""
        overlay = self.overlays.get(self.fd_keys[fh])
        if overlay is None:
            (os.fdatasync if datasync else os.fsync)(fh)
        else:
            overlay.persist(fh, bool(datasync))
        return 0

    def flush(self, path: str, fh: int) -> int:
        """``close`` persists nothing (lazyfs semantics)."""
        return 0

    def release(self, path: str, fh: int) -> int:
        """Close the backing descriptor; the overlay stays (it is the page cache)."""
        self.fd_keys.pop(fh, None)
        os.close(fh)
        return 0

    def fsyncdir(self, path: str, datasync: int, fh: int) -> int:
        """Directory entries are already on the backing filesystem: fsync it there."""
        fd = os.open(self._real(path), os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return 0


# --------------------------------------------------------------------------- serving


def serve(backing: Path, mount: Path) -> None:
    """Mount ``backing`` lazily at ``mount`` and serve until unmounted (foreground).

    Attribute and entry caching are off (as lazyfs does), so sizes always come from the
    overlay; the page cache is kept only for an open file (no ``kernel_cache``).
    """
    # Imported here: only the filesystem process needs the binding.
    import mfusepy  # type: ignore[import-untyped,import-not-found,unused-ignore]

    mfusepy.FUSE(
        LazyOperations(backing),
        str(mount),
        foreground=True,
        nothreads=True,
        fsname=f"lazyfs:{backing}",
        subtype="pnyx-lazyfs",
        attr_timeout=0,
        entry_timeout=0,
        negative_timeout=0,
        use_ino=True,
        default_permissions=True,
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m pnyx.harness.lazyfs BACKING MOUNTPOINT``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m pnyx.harness.lazyfs BACKING MOUNTPOINT", file=sys.stderr)
        return 2
    mount = Path(args[0]), Path(args[1])
    try:
        serve(*mount)
    except RuntimeError as error:
        # libfuse 3 unmounts on SIGTERM/SIGINT/SIGHUP (its own handlers) and then reports
        # the loop as failed (8); mfusepy raises that.  Unmounted means a clean stop.
        if is_mounted(mount[1]):
            raise
        print(f"lazyfs: unmounted ({error})", file=sys.stderr)
    return 0


# --------------------------------------------------------------------------- harness API


def _decode_mountinfo(field_text: str) -> str:
    return field_text.encode().decode("unicode_escape")


def is_mounted(mount: Path) -> bool:
    """Whether ``mount`` is a mount point (read from /proc/self/mountinfo, so a dead FUSE
    mount that stats fail on still counts)."""
    target = os.path.abspath(mount)
    with open("/proc/self/mountinfo", encoding="utf-8") as table:
        return any(_decode_mountinfo(line.split()[4]) == target for line in table)


def unmount(mount: Path) -> None:
    """Lazily unmount ``mount`` if mounted (``fusermount3 -u -z``, else ``umount -l``)."""
    if not is_mounted(mount):
        return
    fusermount = shutil.which("fusermount3") or shutil.which("fusermount")
    commands = [[fusermount, "-u", "-z", str(mount)]] if fusermount else []
    commands.append(["umount", "-l", str(mount)])
    for command in commands:
        subprocess.run(command, capture_output=True, timeout=UNMOUNT_TIMEOUT_S, check=False)
        if not is_mounted(mount):
            return
    raise LazyFsError(f"could not unmount {mount}")


class LazyFs:
    """One lazy filesystem process: ``backing`` mounted at ``mount``.

    Use as a context manager or call :meth:`start` / :meth:`stop`.  Every wait is bounded;
    only the process this object started is signalled, by pid, and only while unreaped.
    """

    def __init__(self, backing: Path, mount: Path, log_path: Path | None = None) -> None:
        self.backing = backing
        self.mount = mount
        self.log_path = log_path or backing.parent / f"{backing.name}.lazyfs.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    def __enter__(self) -> LazyFs:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def pid(self) -> int | None:
        """The running filesystem process's pid, if any."""
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    def start(self) -> None:
        """Mount and wait (bounded by :data:`MOUNT_TIMEOUT_S`) until mounted."""
        with self._lock:
            self._start_locked()

    def crash(self) -> None:
        """Lose everything not fsynced: SIGKILL the process, lazy-unmount, start again on
        the same backing directory."""
        with self._lock:
            self._kill_locked()
            unmount(self.mount)
            self._start_locked()

    def stop(self) -> None:
        """Unmount cleanly (SIGTERM, then SIGKILL after :data:`STOP_TIMEOUT_S`); always
        leaves nothing mounted at ``mount``; idempotent."""
        with self._lock:
            self._terminate_locked()
            unmount(self.mount)

    def _start_locked(self) -> None:
        if self.pid is not None:
            raise LazyFsError(f"lazyfs on {self.mount} already running")
        if importlib.util.find_spec("mfusepy") is None:
            raise LazyFsError("lazyfs needs the mfusepy package (pip install 'mfusepy>=3.1')")
        if is_mounted(self.mount):
            raise LazyFsError(f"{self.mount} is already a mount point")
        self.backing.mkdir(parents=True, exist_ok=True)
        self.mount.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "pnyx.harness.lazyfs", str(self.backing), str(self.mount)]
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
            )
        self._wait_mounted()

    def _wait_mounted(self) -> None:
        process = self._process
        assert process is not None
        deadline = time.monotonic() + MOUNT_TIMEOUT_S
        while not is_mounted(self.mount):
            if process.poll() is not None:
                raise LazyFsError(f"lazyfs exited with {process.returncode}; see {self.log_path}")
            if time.monotonic() > deadline:
                self._kill_locked()
                unmount(self.mount)
                raise LazyFsError(f"{self.mount} not mounted within {MOUNT_TIMEOUT_S} s")
            time.sleep(POLL_INTERVAL_S)

    def _terminate_locked(self) -> None:
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self._kill_locked()

    def _kill_locked(self) -> None:
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        process.wait(timeout=REAP_TIMEOUT_S)


if __name__ == "__main__":
    sys.exit(main())

"""The lazyfs-like FUSE filesystem: only fsynced data survives a crash; etcd runs on it.

Needs root, /dev/fuse, Debian ``fuse3`` + ``libfuse3-3`` and PyPI ``mfusepy``: without them
these tests fail with a message saying so, never skip.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

try:
    import mfusepy  # type: ignore[import-untyped,import-not-found,unused-ignore]  # noqa: F401
except (ImportError, OSError) as error:  # OSError: libfuse itself missing
    raise ImportError(
        "the lazyfs tests need the mfusepy binding and libfuse 3: "
        "pip install 'mfusepy>=3.1'; apt-get install -y fuse3 libfuse3-3"
    ) from error

from pnyx.harness.lazyfs import PAGE_SIZE_BYTES, FileOverlay, LazyFs, is_mounted
from pnyx.harness.systems import ETCD_BIN

ETCDCTL_BIN = shutil.which("etcdctl") or "/usr/bin/etcdctl"
ETCD_START_TIMEOUT_S = 90.0
"""Bound on etcd serving after a start (generous: two busy cores, Python FUSE)."""
ETCD_STOP_TIMEOUT_S = 20.0
"""Bound on etcd exiting after SIGTERM, or being reaped after SIGKILL."""
ETCDCTL_TIMEOUT_S = 20.0
"""Bound on one etcdctl call."""
RETRY_PAUSE_S = 0.2


def _require_fuse() -> None:
    missing = [
        what
        for what, ok in (
            ("/dev/fuse", os.path.exists("/dev/fuse")),
            ("root", os.geteuid() == 0),
            ("fusermount3 (apt-get install fuse3)", shutil.which("fusermount3") is not None),
        )
        if not ok
    ]
    if missing:
        pytest.fail(f"the lazyfs tests need: {', '.join(missing)}", pytrace=False)


@pytest.fixture
def lazyfs(tmp_path: Path) -> Iterator[LazyFs]:
    """A mounted LazyFs; stopped (and checked unmounted) even when the test fails."""
    _require_fuse()
    fs = LazyFs(tmp_path / "backing", tmp_path / "mnt")
    try:
        fs.start()
        yield fs
    finally:
        fs.stop()
    assert not is_mounted(fs.mount)
    assert str(fs.mount) not in Path("/proc/mounts").read_text(encoding="utf-8")


def _write(path: Path, data: bytes, *, sync: bool) -> None:
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        os.write(fd, data)
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- overlay


def test_overlay_truncate_then_extend_reads_zeros_and_persists(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"a" * (2 * PAGE_SIZE_BYTES))
    fd = os.open(path, os.O_RDWR)
    try:
        overlay = FileOverlay.of_fd(fd)
        overlay.write(fd, b"bb", PAGE_SIZE_BYTES - 1)
        overlay.truncate(10)
        overlay.truncate(PAGE_SIZE_BYTES + 5)
        expected = b"a" * 10 + bytes(PAGE_SIZE_BYTES + 5 - 10)
        assert overlay.read(fd, 1 << 20, 0) == expected
        assert path.read_bytes() == b"a" * (2 * PAGE_SIZE_BYTES)
        overlay.persist(fd, datasync=True)
        assert path.read_bytes() == expected
        assert overlay.read(fd, 1 << 20, 0) == expected
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- crash


def test_only_fsynced_data_survives_crash(lazyfs: LazyFs) -> None:
    synced, unsynced = lazyfs.mount / "synced", lazyfs.mount / "unsynced"
    _write(synced, b"durable", sync=True)
    _write(unsynced, b"volatile", sync=False)
    _write(synced, b"-lost-tail", sync=False)  # overwrites from offset 0, not synced
    appended = lazyfs.mount / "appended"
    _write(appended, b"head", sync=True)
    with open(appended, "ab") as tail:
        tail.write(b"+tail")
    renamed = lazyfs.mount / "renamed"
    _write(lazyfs.mount / "before-rename", b"kept", sync=False)
    os.rename(lazyfs.mount / "before-rename", renamed)
    renamed_fd = os.open(renamed, os.O_RDONLY)
    try:
        os.fsync(renamed_fd)  # the overlay follows the inode through the rename
    finally:
        os.close(renamed_fd)
    assert appended.read_bytes() == b"head+tail"
    assert unsynced.read_bytes() == b"volatile"
    assert synced.read_bytes() == b"-lost-tail"
    assert (lazyfs.backing / "synced").read_bytes() == b"durable"

    lazyfs.crash()

    assert synced.read_bytes() == b"durable"
    assert unsynced.exists()  # creation is metadata: passed through at once
    assert unsynced.read_bytes() == b""
    assert appended.read_bytes() == b"head"  # shorter: the unsynced append is gone
    assert renamed.read_bytes() == b"kept"


def test_close_does_not_persist_and_stop_unmounts(lazyfs: LazyFs) -> None:
    path = lazyfs.mount / "closed"
    path.write_bytes(b"closed, never synced")
    assert path.read_bytes() == b"closed, never synced"
    lazyfs.crash()
    assert path.read_bytes() == b""
    lazyfs.stop()
    lazyfs.stop()
    assert not is_mounted(lazyfs.mount)


# --------------------------------------------------------------------------- etcd


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class EtcdNode:
    """A single-node etcd with its data dir on the lazy mount, driven with etcdctl."""

    def __init__(self, data_dir: Path, log_path: Path) -> None:
        self.data_dir = data_dir
        self.log_path = log_path
        self.client_url = f"http://127.0.0.1:{_free_port()}"
        self.peer_url = f"http://127.0.0.1:{_free_port()}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start etcd and wait (bounded) until a read is served."""
        argv = [
            ETCD_BIN,
            "--name=n1",
            f"--data-dir={self.data_dir}",
            f"--listen-client-urls={self.client_url}",
            f"--advertise-client-urls={self.client_url}",
            f"--listen-peer-urls={self.peer_url}",
            f"--initial-advertise-peer-urls={self.peer_url}",
            f"--initial-cluster=n1={self.peer_url}",
        ]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True
            )
        deadline = time.monotonic() + ETCD_START_TIMEOUT_S
        while self._ctl("get", "--prefix", "probe").returncode != 0:
            assert self.process.poll() is None, f"etcd exited: {self.log_path.read_text()}"
            assert time.monotonic() < deadline, f"etcd not serving: {self.log_path.read_text()}"
            time.sleep(RETRY_PAUSE_S)

    def _ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, ETCDCTL_API="3")
        argv = [ETCDCTL_BIN, f"--endpoints={self.client_url}", "--command-timeout=10s", *args]
        try:
            return subprocess.run(
                argv, env=env, capture_output=True, text=True, timeout=ETCDCTL_TIMEOUT_S
            )
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess(argv, 1, "", "timeout")

    def put(self, key: str, value: str) -> bool:
        """Whether the put was acknowledged."""
        return self._ctl("put", key, value).returncode == 0

    def get_prefix(self, prefix: str) -> dict[str, str]:
        """Every key under ``prefix`` with its value."""
        result = self._ctl("get", "--prefix", prefix)
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        return dict(zip(lines[0::2], lines[1::2], strict=True))

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        """Signal etcd (only while unreaped) and wait, bounded, until reaped."""
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(timeout=ETCD_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=ETCD_STOP_TIMEOUT_S)
        self.process = None


def _put_all(node: EtcdNode, prefix: str, count: int) -> dict[str, str]:
    acknowledged = {}
    for i in range(count):
        key, value = f"{prefix}{i:03d}", f"value-{prefix}{i}"
        if node.put(key, value):
            acknowledged[key] = value
    assert len(acknowledged) == count, "a put on a healthy single node was refused"
    return acknowledged


def test_etcd_on_lazyfs_keeps_acknowledged_puts_across_crash(lazyfs: LazyFs) -> None:
    assert Path(ETCD_BIN).exists(), f"etcd not found at {ETCD_BIN}"
    node = EtcdNode(lazyfs.mount / "etcd", lazyfs.backing.parent / "etcd.log")
    try:
        node.start()
        first = _put_all(node, "a/", 20)
        assert node.get_prefix("a/") == first

        node.stop()  # a normal restart
        node.start()
        assert node.get_prefix("a/") == first
        second = _put_all(node, "b/", 20)

        node.stop(signal.SIGKILL)  # power failure: the node and the page cache die
        lazyfs.crash()
        node.start()
        assert node.get_prefix("a/") == first
        assert node.get_prefix("b/") == second
        assert node.put("c/after", "crash")
    finally:
        node.stop(signal.SIGKILL)


def test_etcd_cluster_on_lazyfs_under_kill_all_loses_no_acknowledged_add(
    tmp_path: Path,
) -> None:
    """``pnyx test --system etcd --lose-unsynced``: each node's data dir on its own lazyfs,
    ``kill-all`` also crashes the filesystems (their pids change); etcd fsyncs before it
    acknowledges, so the ``set`` workload loses nothing, and no mount is left."""
    from pnyx.harness.nemeses import make_nemesis
    from pnyx.harness.net import NamespaceNet, leftovers, new_run_id
    from pnyx.harness.run import run_test
    from pnyx.harness.systems import EtcdSystem
    from pnyx.harness.workloads import make_workload
    from tests.harness.conftest import require_namespaces

    require_namespaces()
    run_id = "z" + new_run_id()[:7]
    net = NamespaceNet(3, run_id)
    system = EtcdSystem(lazyfs=True)
    fs_pids: list[dict[str, int | None]] = []
    crash_storage = system.crash_storage

    def recording_crash(host: Any) -> None:
        before = system._fs[host.name].pid
        crash_storage(host)
        fs_pids.append({"before": before, "after": system._fs[host.name].pid})

    system.crash_storage = recording_crash  # type: ignore[method-assign]
    try:
        fault = make_nemesis("kill-all", net, system, 1)
        result = run_test(system, net, make_workload("set", seed=1), [fault], 16.0, 40, 4, 1,
                          tmp_path / "run", nemesis_interval_s=3.0,
                          nemesis_duration_s=1.0)  # fmt: skip
    finally:
        net.close()
    assert result.error == "", result.error
    check = next(c for c in result.checks if c.name == "set")
    assert check.verdict == "valid" and check.details["lost"] == [], check.summary
    assert len(fs_pids) >= 6  # two or more whole-cluster crashes, three filesystems each
    assert all(p["before"] and p["after"] and p["before"] != p["after"] for p in fs_pids)
    assert leftovers(run_id) == []
    assert str(tmp_path) not in Path("/proc/mounts").read_text()

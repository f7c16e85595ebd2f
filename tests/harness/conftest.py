"""Fixtures and helpers of the harness tests: root checks, run ids, sockets opened inside a
host's network namespace, and clusters whose processes and namespaces are removed in
teardown even when a test fails.

Tests marked ``root`` (and every fixture that makes namespaces) need root, ``ip`` and
``nft``: without them they fail with a message saying so, never skip.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from pnyx.harness.api import Host
from pnyx.harness.net import NamespaceNet, leftovers, namespace_support, new_run_id
from pnyx.harness.systems import EtcdSystem, PnyxSystem, ProcessSystem

T = TypeVar("T")
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def require_namespaces() -> None:
    """Fail (not skip) with the reason when network namespaces cannot be made here."""
    reason = namespace_support()
    if reason is not None:
        pytest.fail(f"the harness tests need network namespaces: {reason}", pytrace=False)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "root: needs root, ip and nft (network namespaces); fails without them"
    )


@pytest.fixture(autouse=True)
def _root_marker(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("root") is not None:
        require_namespaces()


def in_netns(host: Host, make: Callable[[], T]) -> T:
    """``make()`` run on a fresh thread that entered ``host``'s network namespace: a socket
    it creates belongs to that namespace for its whole life."""
    result: list[T] = []
    error: list[BaseException] = []

    def body() -> None:
        try:
            assert host.netns is not None
            with open(f"/run/netns/{host.netns}") as ns:
                if _libc.setns(ns.fileno(), CLONE_NEWNET) != 0:
                    errno = ctypes.get_errno()
                    raise OSError(errno, f"setns {host.netns}: {os.strerror(errno)}")
            result.append(make())
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=body)
    thread.start()
    thread.join(10.0)
    if error:
        raise error[0]
    assert result, "in_netns: no result after 10 s"
    return result[0]


def udp_socket(host: Host, port: int = 0) -> socket.socket:
    """A UDP socket in ``host``'s namespace bound to its address."""

    def make() -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((host.address, port))
        return s

    return in_netns(host, make)


def tcp_listener(host: Host) -> socket.socket:
    def make() -> socket.socket:
        s = socket.socket()
        s.bind((host.address, 0))
        s.listen(8)
        return s

    return in_netns(host, make)


def udp_arrives(src: Host, dst: Host, timeout_s: float = 0.5) -> bool:
    """Whether a datagram sent from ``src`` reaches ``dst`` (bounded)."""
    receiver = udp_socket(dst)
    sender = udp_socket(src)
    try:
        receiver.settimeout(timeout_s)
        for _ in range(3):
            sender.sendto(b"ping", receiver.getsockname())
        try:
            return receiver.recv(16) == b"ping"
        except TimeoutError:
            return False
    finally:
        receiver.close()
        sender.close()


def tcp_connects(src: Host, dst: Host, timeout_s: float = 0.5) -> bool:
    """Whether a TCP connection from ``src`` to ``dst`` is set up (bounded)."""
    listener = tcp_listener(dst)
    client = in_netns(src, socket.socket)
    try:
        client.settimeout(timeout_s)
        try:
            client.connect(listener.getsockname())
            return True
        except OSError:
            return False
    finally:
        client.close()
        listener.close()


@pytest.fixture
def run_id() -> Iterator[str]:
    """A fresh run id; afterwards nothing of it may be left."""
    require_namespaces()
    rid = "t" + new_run_id()[:7]
    yield rid
    assert leftovers(rid) == [], f"run {rid} left {leftovers(rid)}"


@pytest.fixture
def net3(run_id: str) -> Iterator[NamespaceNet]:
    with NamespaceNet(3, run_id) as net:
        yield net


def scratch_dir() -> Path:
    """A temporary directory on tmpfs when there is one (cheap fsyncs on a busy machine)."""
    shm = "/dev/shm"
    root = shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix="pnyx-harness-", dir=root))


def make_system(kind: str) -> ProcessSystem:
    return PnyxSystem() if kind == "pnyx" else EtcdSystem()


def pids_gone(pids: list[int]) -> bool:
    """None of ``pids`` runs (zombies of other parents count as gone)."""
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] != "Z":
                    return False
        except OSError:
            continue
    return True


@pytest.fixture(scope="module")
def cluster_factory() -> Iterator[Callable[[str], tuple[NamespaceNet, ProcessSystem]]]:
    """Start a 3-node cluster of a system in namespaces (module scope); teardown stops
    its processes by pid, removes the namespaces and the data, and asserts nothing is
    left, also when a test failed."""
    made: list[tuple[NamespaceNet, ProcessSystem, Path]] = []

    def make(kind: str) -> tuple[NamespaceNet, ProcessSystem]:
        require_namespaces()
        net = NamespaceNet(3, "c" + new_run_id()[:7])
        directory = scratch_dir()
        system = make_system(kind)
        made.append((net, system, directory))
        system.start(net.hosts, directory)
        return net, system

    yield make
    problems = []
    for net, system, directory in made:
        pids = list(system.pids().values())
        try:
            system.stop()
        finally:
            net.close()
            shutil.rmtree(directory, ignore_errors=True)
        if not pids_gone(pids):
            problems.append(f"{system.name}: processes {pids} still run")
        if leftovers(net.run_id):
            problems.append(f"{system.name}: {leftovers(net.run_id)} left")
    assert not problems, problems


WAIT_S = 60.0
"""Bound on every wait of the harness tests (generous: a busy 2-core machine)."""


def wait_for(what: str, check: Callable[[], Any], timeout_s: float = WAIT_S) -> Any:
    """``check()``'s first truthy value, polled every 0.1 s; AssertionError after
    ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not {what} after {timeout_s:.0f} s")
        time.sleep(0.1)  # poll interval

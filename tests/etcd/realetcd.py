"""Real etcd 3.4 (Debian ``etcd-server``) on loopback, for differential tests.

:func:`start_real_etcd` starts a 1- or 3-member cluster as child processes on free loopback
ports with a fresh temporary data dir (on ``/dev/shm`` when there is one: tmpfs makes
etcd's fsyncs cheap, which keeps the tests fast on a busy 2-core machine), waits until every
member answers and knows a leader, and returns a :class:`RealEtcd`.  ``stop()`` sends
SIGTERM to the pids it started, SIGKILL after a bound, and removes the data dir.  The
module-scoped fixtures :func:`real_etcd` and :func:`real_etcd3` do both, also when a test
fails.

Without an ``etcd`` binary the fixture fails (never skips) and says how to install it.

:func:`start_pnyx_etcd` / the fixture :func:`pnyx_etcd3` give a pnyx etcd cluster of the
same shape (``endpoints``, ``urls``), built on ``tests.services.etcd_cluster.EtcdCluster``
(real ``pnyx serve --protocol etcd`` processes, also on tmpfs: these are correctness tests,
not a measure of fsync cost).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from aetcd.rpc import rpc_pb2, rpc_pb2_grpc

from pnyx.cli.cluster_cmd import free_ports

ETCD_BIN = os.environ.get("PNYX_ETCD_BIN") or shutil.which("etcd") or "/usr/bin/etcd"
ETCDCTL_BIN = os.environ.get("PNYX_ETCDCTL_BIN") or shutil.which("etcdctl") or "/usr/bin/etcdctl"
START_TIMEOUT = 60.0
"""Seconds a member may take to answer (generous: the machine's 2 cores may be busy)."""
STOP_TIMEOUT = 10.0
"""Seconds between SIGTERM and SIGKILL."""

_MISSING = (
    "real etcd is not installed ({what} not found): the differential tests need the "
    "Debian packages etcd-server and etcd-client (etcd 3.4). `make test` installs them "
    "(as root: apt-get update && apt-get install -y etcd-server etcd-client)."
)


def require_binaries() -> None:
    """Fail the test (not skip) when etcd or etcdctl is missing."""
    for path in (ETCD_BIN, ETCDCTL_BIN):
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            pytest.fail(_MISSING.format(what=path), pytrace=False)




def _scratch_root() -> str | None:
    shm = "/dev/shm"
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else None


@dataclass
class RealEtcd:
    """A running real etcd cluster started by this process."""

    data_dir: Path
    endpoints: list[str]
    """``127.0.0.1:port`` client endpoints, one per member."""
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)

    @property
    def endpoint(self) -> str:
        return self.endpoints[0]

    @property
    def urls(self) -> str:
        """The ``--endpoints`` value for etcdctl."""
        return ",".join(f"http://{e}" for e in self.endpoints)

    def log_tail(self, lines: int = 30) -> str:
        out = []
        for log in self.logs:
            with contextlib.suppress(OSError):
                text = log.read_text(errors="replace").splitlines()[-lines:]
                out.append(f"--- {log.name}\n" + "\n".join(text))
        return "\n".join(out)

    def stop(self) -> None:
        """SIGTERM every member this process started (by pid), SIGKILL after
        :data:`STOP_TIMEOUT`, then remove the data dir."""
        try:
            for p in self.procs:
                if p.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(p.pid, signal.SIGTERM)
            deadline = time.monotonic() + STOP_TIMEOUT
            for p in self.procs:
                try:
                    p.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(p.pid, signal.SIGKILL)
                    p.wait(timeout=STOP_TIMEOUT)
        finally:
            shutil.rmtree(self.data_dir, ignore_errors=True)


def _member_ready(endpoint: str, timeout: float) -> bool:
    """A member answers Status with a leader, and a linearizable read goes through."""
    with grpc.insecure_channel(endpoint) as ch:
        try:
            st = rpc_pb2_grpc.MaintenanceStub(ch).Status(
                rpc_pb2.StatusRequest(), timeout=timeout
            )
            if st.leader == 0:
                return False
            rpc_pb2_grpc.KVStub(ch).Range(rpc_pb2.RangeRequest(key=b"health"), timeout=timeout)
        except grpc.RpcError:
            return False
    return True


def start_real_etcd(members: int = 1, extra_args: tuple[str, ...] = ()) -> RealEtcd:
    """Start a real etcd cluster of ``members`` members on loopback and wait for it."""
    require_binaries()
    data_dir = Path(tempfile.mkdtemp(prefix="pnyx-realetcd-", dir=_scratch_root()))
    ports = free_ports(2 * members)
    names = [f"m{i}" for i in range(members)]
    peer = {n: f"http://127.0.0.1:{ports[2 * i + 1]}" for i, n in enumerate(names)}
    client = {n: f"127.0.0.1:{ports[2 * i]}" for i, n in enumerate(names)}
    initial = ",".join(f"{n}={u}" for n, u in peer.items())
    token = f"pnyx-test-{uuid.uuid4().hex[:12]}"
    cluster = RealEtcd(data_dir=data_dir, endpoints=[client[n] for n in names])
    try:
        for n in names:
            log = data_dir / f"{n}.log"
            cluster.logs.append(log)
            argv = [
                ETCD_BIN,
                "--name", n,
                "--data-dir", str(data_dir / n),
                "--listen-client-urls", f"http://{client[n]}",
                "--advertise-client-urls", f"http://{client[n]}",
                "--listen-peer-urls", peer[n],
                "--initial-advertise-peer-urls", peer[n],
                "--initial-cluster", initial,
                "--initial-cluster-state", "new",
                "--initial-cluster-token", token,
                # etcd's default timing (100 ms heartbeat, 1 s election): its minimum lease
                # TTL (2 s) is then pnyx's default too.
                *extra_args,
            ]
            with open(log, "wb") as out:
                cluster.procs.append(
                    subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
                )
        deadline = time.monotonic() + START_TIMEOUT
        pending = list(cluster.endpoints)
        while pending:
            for p in cluster.procs:
                if p.poll() is not None:
                    raise RuntimeError(
                        f"etcd exited with {p.returncode} while starting\n{cluster.log_tail()}"
                    )
            pending = [e for e in pending if not _member_ready(e, timeout=2.0)]
            if pending and time.monotonic() > deadline:
                raise RuntimeError(
                    f"etcd members {pending} not ready after {START_TIMEOUT:.0f} s\n"
                    f"{cluster.log_tail()}"
                )
            if pending:
                time.sleep(0.05)  # poll interval, not a correctness wait
    except BaseException:
        cluster.stop()
        raise
    return cluster


@pytest.fixture(scope="module")
def real_etcd() -> Iterator[RealEtcd]:
    """One single-member real etcd for the whole test module."""
    cluster = start_real_etcd(1)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def real_etcd3() -> Iterator[RealEtcd]:
    """A three-member real etcd cluster for the whole test module."""
    cluster = start_real_etcd(3)
    try:
        yield cluster
    finally:
        cluster.stop()


# ----------------------------------------------------------------- a pnyx etcd cluster


@dataclass
class PnyxEtcd:
    """A pnyx etcd cluster (``tests.services.etcd_cluster.EtcdCluster``: N real ``pnyx
    serve --protocol etcd`` processes) with the same ``endpoints`` / ``urls`` shape as
    :class:`RealEtcd`."""

    root: Path
    cluster: Any

    @property
    def endpoints(self) -> list[str]:
        return list(self.cluster.endpoints)

    @property
    def endpoint(self) -> str:
        return self.endpoints[0]

    @property
    def urls(self) -> str:
        return ",".join(f"http://{e}" for e in self.endpoints)

    def stop(self) -> None:
        """Stop the processes it started (by pid, bounded) and remove the data dir."""
        try:
            self.cluster.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def start_pnyx_etcd(nodes: int = 3) -> PnyxEtcd:
    """Start ``nodes`` pnyx etcd members on loopback (fsync on; data on tmpfs when there
    is one) and wait until each serves and a leader is known."""
    from tests.services.etcd_cluster import EtcdCluster

    root = Path(tempfile.mkdtemp(prefix="pnyx-etcd-", dir=_scratch_root()))
    cluster = EtcdCluster(root / "etcd", nodes=nodes, start_timeout_s=START_TIMEOUT)
    pnyx = PnyxEtcd(root=root, cluster=cluster)
    try:
        cluster.start()
        for e in cluster.endpoints:  # and a linearizable read goes through everywhere
            deadline = time.monotonic() + START_TIMEOUT
            while not _member_ready(e, timeout=2.0):
                if time.monotonic() > deadline:
                    logs = "\n".join(cluster.log(i)[-3000:] for i in cluster.node_ids)
                    raise RuntimeError(f"pnyx etcd member {e} not ready\n{logs}")
                time.sleep(0.05)  # poll interval
    except BaseException:
        pnyx.stop()
        raise
    return pnyx


@pytest.fixture(scope="module")
def pnyx_etcd3() -> Iterator[PnyxEtcd]:
    """A three-member pnyx etcd cluster for the whole test module."""
    cluster = start_pnyx_etcd(3)
    try:
        yield cluster
    finally:
        cluster.stop()

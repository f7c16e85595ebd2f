"""A pnyx etcd cluster of N real ``pnyx serve --protocol etcd`` processes, for tests.

Signature (stable; other test modules import it)::

    from tests.services.etcd_cluster import EtcdCluster, etcd_cluster

    EtcdCluster(directory: Path, nodes: int = 3, *, extra_args: Sequence[str] = (),
                tick_ms: int = 10, start_timeout_s: float = 60.0)

    with EtcdCluster(tmp_path / "etcd", nodes=3) as cluster:  # started, a leader known
        cluster.endpoints          # ["127.0.0.1:PORT", ...] gRPC client endpoints, node 1 first
        cluster.endpoints_csv      # "127.0.0.1:P1,127.0.0.1:P2,..." (ETCDCTL_ENDPOINTS)
        cluster.endpoint(2)        # node 2's client endpoint
        cluster.client_port(2)     # node 2's client port
        cluster.pids               # {node_id: pid} of the running nodes
        cluster.node_ids           # [1, 2, ...]
        cluster.leader()           # node id of the leader (waits, bounded)
        cluster.status(2)          # node 2's Maintenance.Status (rpc_pb2.StatusResponse) or None
        cluster.kill(2)            # SIGKILL node 2 and wait until it is gone
        cluster.restart(2)         # start node 2 again (same arguments), wait until it serves
        cluster.wait_serving(2)    # wait until node 2 answers Status and knows a leader
        cluster.log(2)             # node 2's output so far (str)
    # leaving the block stops every process it started (SIGTERM, then SIGKILL; bounded)

    def test_x(etcd_cluster: EtcdCluster) -> None: ...   # pytest fixture: 3 nodes, fsync on,
                                                          # directory removed afterwards

Every wait is bounded; only processes this object started are signalled, by pid.  Each
node's data directory is ``directory/node-<id>`` and its output ``directory/node-<id>.log``.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest
from aetcd.rpc import rpc_pb2, rpc_pb2_grpc

from pnyx.cli.cluster_cmd import free_ports

POLL_S = 0.05
STOP_TIMEOUT_S = 10.0
KILL_WAIT_S = 10.0




class EtcdCluster:
    """N pnyx etcd nodes as child processes (see the module docstring)."""

    def __init__(
        self,
        directory: Path,
        nodes: int = 3,
        *,
        extra_args: Sequence[str] = (),
        tick_ms: int = 10,
        start_timeout_s: float = 60.0,
    ) -> None:
        self.directory = Path(directory)
        self.node_ids = list(range(1, nodes + 1))
        self.start_timeout_s = start_timeout_s
        ports = free_ports(2 * nodes)
        self._peer_ports = dict(zip(self.node_ids, ports[:nodes], strict=True))
        self._client_ports = dict(zip(self.node_ids, ports[nodes:], strict=True))
        self.cluster_id = "test-" + secrets.token_hex(6)
        peers = ",".join(f"{i}=127.0.0.1:{p}" for i, p in self._peer_ports.items())
        clients = ",".join(f"{i}=127.0.0.1:{p}" for i, p in self._client_ports.items())
        self._argv = {
            i: [
                sys.executable, "-m", "pnyx", "serve",
                "--id", str(i),
                "--peers", peers,
                "--cluster-id", self.cluster_id,
                "--data-dir", str(self.directory / f"node-{i}"),
                "--protocol", "etcd",
                "--tick-ms", str(tick_ms),
                "--client-port", str(self._client_ports[i]),
                "--client-endpoints", clients,
                *extra_args,
            ]
            for i in self.node_ids
        }  # fmt: skip
        self._procs: dict[int, subprocess.Popen[bytes]] = {}

    # -- addresses ----------------------------------------------------------------------

    def client_port(self, node_id: int) -> int:
        """Node ``node_id``'s gRPC client port."""
        return self._client_ports[node_id]

    def endpoint(self, node_id: int) -> str:
        """Node ``node_id``'s client endpoint ``127.0.0.1:PORT``."""
        return f"127.0.0.1:{self._client_ports[node_id]}"

    @property
    def endpoints(self) -> list[str]:
        """Every node's client endpoint, node 1 first."""
        return [self.endpoint(i) for i in self.node_ids]

    @property
    def endpoints_csv(self) -> str:
        """The endpoints as ``ETCDCTL_ENDPOINTS`` wants them."""
        return ",".join(self.endpoints)

    @property
    def pids(self) -> dict[int, int]:
        """Pids of the nodes running now."""
        return {i: p.pid for i, p in self._procs.items() if p.poll() is None}

    def log(self, node_id: int) -> str:
        """Node ``node_id``'s output so far."""
        path = self.directory / f"node-{node_id}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Launch every node; return once each serves and a leader is known."""
        self.directory.mkdir(parents=True, exist_ok=True)
        for node_id in self.node_ids:
            self._launch(node_id)
        for node_id in self.node_ids:
            self.wait_serving(node_id)
        self.leader()

    def _launch(self, node_id: int) -> None:
        with open(self.directory / f"node-{node_id}.log", "ab") as out:
            self._procs[node_id] = subprocess.Popen(
                self._argv[node_id],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def stop(self) -> None:
        """SIGTERM every node this object started, SIGKILL what is left after a bound."""
        procs = [p for p in self._procs.values() if p.poll() is None]
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.0, deadline - time.monotonic()))
        for proc in procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(KILL_WAIT_S)

    def kill(self, node_id: int) -> None:
        """SIGKILL node ``node_id`` and wait (bounded) until it is gone."""
        proc = self._procs[node_id]
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(KILL_WAIT_S)

    def restart(self, node_id: int) -> None:
        """Start node ``node_id`` again (same arguments, same data) and wait until it serves."""
        proc = self._procs.get(node_id)
        assert proc is None or proc.poll() is not None, f"node {node_id} still runs"
        self._launch(node_id)
        self.wait_serving(node_id)

    def __enter__(self) -> EtcdCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- observation ------------------------------------------------------------------------

    def status(self, node_id: int, timeout_s: float = 1.0) -> Any:
        """Node ``node_id``'s ``Maintenance.Status`` response, or None if it does not answer."""
        try:
            with grpc.insecure_channel(self.endpoint(node_id)) as channel:
                stub = rpc_pb2_grpc.MaintenanceStub(channel)
                return stub.Status(rpc_pb2.StatusRequest(), timeout=timeout_s)
        except grpc.RpcError:
            return None

    def wait_serving(self, node_id: int, timeout_s: float | None = None) -> None:
        """Until node ``node_id`` answers Status and knows a leader (bounded)."""
        deadline = time.monotonic() + (timeout_s or self.start_timeout_s)
        while time.monotonic() < deadline:
            proc = self._procs[node_id]
            if proc.poll() is not None:
                raise RuntimeError(
                    f"node {node_id} exited with {proc.returncode}:\n{self.log(node_id)[-3000:]}"
                )
            status = self.status(node_id)
            if status is not None and status.leader:
                return
            time.sleep(POLL_S)
        raise TimeoutError(f"node {node_id} not serving:\n{self.log(node_id)[-3000:]}")

    def leader(self, timeout_s: float | None = None) -> int:
        """The node id every running node names as leader (waits, bounded)."""
        deadline = time.monotonic() + (timeout_s or self.start_timeout_s)
        by_member = {self._member_id(i): i for i in self.node_ids}
        while time.monotonic() < deadline:
            seen = [self.status(i) for i in self.pids]
            leaders = {s.leader for s in seen if s is not None}
            if len(leaders) == 1 and None not in seen:
                (leader,) = leaders
                if leader in by_member and by_member[leader] in self.pids:
                    return by_member[leader]
            time.sleep(POLL_S)
        raise TimeoutError(f"no agreed leader within the bound; running: {sorted(self.pids)}")

    def _member_id(self, node_id: int) -> int:
        from pnyx.services.etcd.members import member_id64

        return member_id64(self.cluster_id, node_id)


@pytest.fixture
def etcd_cluster(tmp_path: Path) -> Iterator[EtcdCluster]:
    """A started 3-node pnyx etcd cluster (fsync on); stopped and removed afterwards."""
    directory = tmp_path / "etcd-cluster"
    with EtcdCluster(directory, nodes=3) as cluster:
        yield cluster
    shutil.rmtree(directory, ignore_errors=True)


__all__ = ["EtcdCluster", "etcd_cluster", "free_ports"]

if __name__ == "__main__":  # manual check: python tests/services/etcd_cluster.py DIR
    with EtcdCluster(Path(sys.argv[1])) as demo:
        print(demo.endpoints_csv, demo.pids, demo.leader())

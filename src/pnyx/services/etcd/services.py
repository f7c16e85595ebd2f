"""Registers every etcd gRPC service of one member on a ``grpc.aio`` server."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aetcd.rpc import rpc_pb2_grpc  # type: ignore[import-untyped]

from pnyx.services.etcd.auth_service import AuthService
from pnyx.services.etcd.cluster import ClusterService
from pnyx.services.etcd.election_service import ElectionService
from pnyx.services.etcd.kv_service import KvService
from pnyx.services.etcd.lease_service import LeaseService
from pnyx.services.etcd.lock_service import LockService
from pnyx.services.etcd.maintenance import MaintenanceService
from pnyx.services.etcd.proto import v3election_pb2_grpc, v3lock_pb2_grpc
from pnyx.services.etcd.watch_service import WatchService

if TYPE_CHECKING:
    from pnyx.services.etcd.server import EtcdServer


def add_services(grpc_server: Any, server: EtcdServer) -> dict[str, Any]:
    """Add KV, Lease, Cluster, Maintenance, Watch, Lock, Election and Auth for ``server``;
    name -> servicer."""
    services: dict[str, Any] = {
        "KV": KvService(server),
        "Lease": LeaseService(server),
        "Cluster": ClusterService(server),
        "Maintenance": MaintenanceService(server),
        "Watch": WatchService(server),
        "Lock": LockService(server),
        "Election": ElectionService(server),
        "Auth": AuthService(server),
    }
    stubs = {"Lock": v3lock_pb2_grpc, "Election": v3election_pb2_grpc}
    for name, servicer in services.items():
        add = getattr(stubs.get(name, rpc_pb2_grpc), f"add_{name}Servicer_to_server")
        add(servicer, grpc_server)
    return services


__all__ = ["add_services"]

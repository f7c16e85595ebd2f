"""Protocols that ``pnyx serve`` / ``pnyx cluster`` can run as real processes, by name."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pnyx.core import DurableState, Message, Node, NodeFactory, Rng, StateMachine
from pnyx.runtime.node_runner import NodeRunner, RunnerConfig
from pnyx.runtime.wal import PersistCodec


@dataclass(frozen=True)
class ServiceDef:
    """Everything the real runtime needs to run one protocol as a service."""

    name: str
    summary: str
    make_node: NodeFactory
    peer_message_types: tuple[type[Message], ...]
    """Accepted on peer connections (node to node); see ``NodeRunner``."""
    client_message_types: tuple[type[Message], ...]
    """Accepted on client connections; a client sends these and gets ``ClientReply``."""
    make_state_machine: Callable[[], StateMachine] | None = None
    entry_type: Any = Any
    """Type of log entries, so the WAL decodes them back into protocol structs."""
    record_types: Mapping[str, Any] = field(default_factory=dict)
    serve: Callable[[Node, StateMachine | None, Any], None] | None = None
    """Carries out protocol-specific ``Ready.services`` requests (see ``pnyx.sim.spec``)."""

    @property
    def message_types(self) -> tuple[type[Message], ...]:
        """Every wire message type of the protocol (peer and client), for codecs."""
        return tuple(dict.fromkeys((*self.peer_message_types, *self.client_message_types)))

    def op_codec(self) -> PersistCodec:
        """The WAL codec for this protocol's durable writes."""
        return PersistCodec(entry_type=self.entry_type, record_types=self.record_types)

    def runner(
        self,
        config: RunnerConfig,
        *,
        state_machine: StateMachine | None = None,
        make_node: NodeFactory | None = None,
        **options: Any,
    ) -> NodeRunner:
        """A ``NodeRunner`` of this protocol: its message types by role, its WAL codec, a
        fresh state machine (or ``state_machine``), its node factory (or ``make_node``), and
        its ``serve`` hook for ``Ready.services`` requests.  ``options`` go to
        ``NodeRunner`` (e.g. ``listen_sock``)."""
        sm = state_machine
        if sm is None and self.make_state_machine is not None:
            sm = self.make_state_machine()
        runner: NodeRunner

        def on_service(request: object) -> None:
            if self.serve is None:
                raise RuntimeError(f"{self.name} asked for service {request!r}")
            self.serve(runner.node, sm, request)

        runner = NodeRunner(
            config,
            make_node or self.make_node,
            self.message_types,
            peer_message_types=self.peer_message_types,
            client_message_types=self.client_message_types,
            state_machine=sm,
            op_codec=self.op_codec(),
            on_service=on_service,
            **options,
        )
        return runner


def _broadcast() -> ServiceDef:
    from pnyx.protocols.broadcast import (
        CLIENT_MESSAGE_TYPES,
        PEER_MESSAGE_TYPES,
        Delivery,
        make_node,
    )

    return ServiceDef(
        name="broadcast",
        summary="reliable broadcast (every node delivers every message exactly once)",
        make_node=make_node,
        peer_message_types=PEER_MESSAGE_TYPES,
        client_message_types=CLIENT_MESSAGE_TYPES,
        entry_type=Delivery,
    )


RAFT_RUNTIME_CONFIG_FIELDS: dict[str, Any] = {
    "snapshot_threshold_entries": 10_000,
    "max_entries_per_msg": 256,
    "max_inflight_msgs": 16,
    "snapshot_chunk_bytes": 1 << 20,
}
"""Raft tuning for real processes (10 ms ticks): bigger batches, windows and snapshots than
the simulator's deliberately small ones."""


def raft_node_factory(**overrides: Any) -> NodeFactory:
    """A factory of Raft nodes with the runtime tuning and ``overrides`` of
    :class:`~pnyx.protocols.raft.RaftConfig` fields (e.g. ``election_timeout_ticks``)."""
    from pnyx.protocols.raft import RaftConfig, RaftNode

    config = RaftConfig(**{**RAFT_RUNTIME_CONFIG_FIELDS, **overrides})

    def make_node(
        node_id: int, peers: tuple[int, ...], rng: Rng, durable: DurableState
    ) -> RaftNode:
        return RaftNode(node_id, peers, rng, durable, config)

    return make_node


def _raft() -> ServiceDef:
    from pnyx.protocols.raft import (
        CLIENT_MESSAGE_TYPES,
        PEER_MESSAGE_TYPES,
        Entry,
        HardState,
        KvStateMachine,
        RaftConfig,
        RaftNode,
    )
    from pnyx.protocols.raft.messages import HARD_STATE_KEY
    from pnyx.protocols.raft.services import serve

    config = RaftConfig(**RAFT_RUNTIME_CONFIG_FIELDS)

    def make_node(
        node_id: int, peers: tuple[int, ...], rng: Rng, durable: DurableState
    ) -> RaftNode:
        return RaftNode(node_id, peers, rng, durable, config)

    return ServiceDef(
        name="raft",
        summary="Raft-replicated key-value store (sessions, ReadIndex reads, snapshots)",
        make_node=make_node,
        peer_message_types=PEER_MESSAGE_TYPES,
        client_message_types=CLIENT_MESSAGE_TYPES,
        make_state_machine=KvStateMachine,
        entry_type=Entry,
        record_types={HARD_STATE_KEY: HardState},
        serve=serve,
    )


def _etcd() -> ServiceDef:
    from pnyx.protocols.etcd import EtcdStateMachine
    from pnyx.protocols.raft import CLIENT_MESSAGE_TYPES, PEER_MESSAGE_TYPES, Entry, HardState
    from pnyx.protocols.raft.messages import HARD_STATE_KEY
    from pnyx.protocols.raft.services import serve
    from pnyx.services.etcd.machine import ServedMachine

    def make_state_machine() -> StateMachine:
        return ServedMachine(EtcdStateMachine())

    return ServiceDef(
        name="etcd",
        summary="etcd v3 API (KV, txn, watch, leases) on Raft; the gRPC client port is "
        "served by pnyx.services.etcd",
        make_node=raft_node_factory(),
        peer_message_types=PEER_MESSAGE_TYPES,
        client_message_types=CLIENT_MESSAGE_TYPES,
        make_state_machine=make_state_machine,
        entry_type=Entry,
        record_types={HARD_STATE_KEY: HardState},
        serve=serve,
    )


# name -> "module:function" returning its ServiceDef (protocol modules are imported lazily);
# adding a protocol to the real runtime is one line here
_SERVICES: dict[str, str] = {
    "broadcast": "pnyx.services.catalog:_broadcast",
    "chain": "pnyx.services.schemes:_chain",
    "craq": "pnyx.services.schemes:_craq",
    "dynamo": "pnyx.services.schemes:_dynamo",
    "primary-backup": "pnyx.services.schemes:_primary_backup",
    "etcd": "pnyx.services.catalog:_etcd",
    "raft": "pnyx.services.catalog:_raft",
    "tso": "pnyx.services.tso:tso_service",
    "paxos": "pnyx.services.paxos_service:paxos_service",
    "vr": "pnyx.services.vr_service:vr_service",
}


def service_names() -> list[str]:
    """Names accepted by ``--protocol``."""
    return sorted(_SERVICES)


def get_service(name: str) -> ServiceDef:
    """The service ``name``; KeyError with the valid names otherwise."""
    try:
        target = _SERVICES[name]
    except KeyError:
        raise KeyError(f"unknown protocol {name!r}; valid: {', '.join(service_names())}") from None
    module_name, attr = target.split(":")
    service = getattr(importlib.import_module(module_name), attr)()
    if not isinstance(service, ServiceDef):
        raise TypeError(f"{target} returned {type(service).__name__}, not a ServiceDef")
    return service

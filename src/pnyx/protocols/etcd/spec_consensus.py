"""etcd in the simulator over Multi-Paxos and Viewstamped Replication (``pnyx sim
etcd-paxos``, ``pnyx sim etcd-vr``).

The same :class:`~pnyx.protocols.etcd.spec.EtcdNode` wrapper, state machine
(:class:`~pnyx.protocols.etcd.spec.SimEtcdMachine`: MVCC, leases with the leader's lessor,
sessions), clients (KV, txns, a lease and a watch each) and monitor checks
(``revision-divergence``, ``lease-early-expiry``, ``watch-order``, ``linearizability``) as
``pnyx sim etcd``; only the wrapped node differs, through an
:class:`~pnyx.protocols.etcd.spec.Inner`:

* **Multi-Paxos** (:class:`~pnyx.protocols.paxos.PaxosNode`): the node leads once its phase
  1 completed (role ``leader``), and its lessor runs once the store applied the node's
  lease epoch (its ballot; see :attr:`~pnyx.protocols.etcd.spec.Inner.epoch`: seed 229
  found a deposed leader's expiry, adopted by a later phase 1, deleting a lease that the
  leader in between had renewed); a lease expiry (``LeaseExpireRequest(epoch)``) is
  proposed as a ``ClientRequest`` stepped into the node from
  :data:`~pnyx.protocols.etcd.spec.LEASE_CLIENT_ID` (Paxos has no local proposal call; the
  node refuses it unless it leads, and its reply is dropped); keep-alives are
  linearizable reads answered after a phase-2 quorum confirmed the leader's ballot;
  snapshots through Paxos's own ``TakeSnapshot``.
* **VR** (:class:`~pnyx.protocols.vr.VrNode`): the node leads while it is the primary of
  its view in normal status; expiries are proposed the same way; keep-alives are read
  entries of the log, answered by the primary when they commit.  No checkpoints here (the
  real etcd service over VR checkpoints every 10,000 ops; simulated runs are shorter).

The wrapped protocol's own monitor (``PaxosMonitor``, ``VrMonitor``: chosen-value and
view-change invariants, liveness after heal) and protocol-aware nemesis (``PaxosNemesis``,
``VrNemesis``) see the wrapped nodes.  ``etcd-paxos+MUTANT`` / ``etcd-vr+MUTANT`` take the
etcd mutants (``lease_expires_early``, ``watch_gap``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from pnyx.core import DurableState, NodeFactory, Rng
from pnyx.core.node import StateMachine
from pnyx.protocols.etcd.lease import ballot_epoch
from pnyx.protocols.etcd.spec import (
    ETCD_MUTANTS,
    EtcdMonitor,
    EtcdNemesis,
    EtcdNode,
    Inner,
    etcd_client_factory,
    etcd_hub_factory,
    etcd_machine_factory,
    propose_as_client,
    serve,
)
from pnyx.protocols.paxos import LEADER as PAXOS_LEADER
from pnyx.protocols.paxos import PaxosConfig, PaxosNode
from pnyx.protocols.paxos import serve as paxos_serve
from pnyx.protocols.paxos.spec import NEMESIS_RULES as PAXOS_NEMESIS_RULES
from pnyx.protocols.paxos.spec import SIM_CONFIG as PAXOS_SIM_CONFIG
from pnyx.protocols.paxos.spec import PaxosMonitor, PaxosNemesis, draw_paxos_settings
from pnyx.protocols.raft.spec import split_settings
from pnyx.protocols.vr import VrConfig, VrNode
from pnyx.protocols.vr import serve as vr_serve
from pnyx.protocols.vr.spec import NEMESIS_RULES as VR_NEMESIS_RULES
from pnyx.protocols.vr.spec import VrMonitor, VrNemesis, draw_vr_settings
from pnyx.sim.spec import Monitor, ProtocolDef, SimRandom


def paxos_epoch(node: Any) -> int:
    """A Paxos leader's lease epoch: its ballot."""
    round_, node_id = node.ballot
    return ballot_epoch(round_, node_id)


PAXOS_INNER = Inner(
    name="paxos",
    leading=lambda node: node.role == PAXOS_LEADER,
    propose=propose_as_client,
    serve=paxos_serve,
    client_proposals=True,
    epoch=paxos_epoch,
)
"""How an :class:`EtcdNode` drives a ``PaxosNode``."""

VR_INNER = Inner(
    name="vr",
    leading=lambda node: bool(node.is_primary),
    propose=propose_as_client,
    serve=vr_serve,
    client_proposals=True,
)
"""How an :class:`EtcdNode` drives a ``VrNode``."""

VR_SIM_CONFIG = VrConfig(max_prepare_entries=4)
"""VR's simulator setting of small retransmission batches; no checkpoints."""
SWARM_ONLY_KEYS = ("checkpoint_interval_ops", "reconfigure")
"""Swarm draws of the wrapped protocol's KV spec that etcd over it does not take (no
checkpoints; a fixed membership)."""


def _check_mutants(mutants: frozenset[str], name: str) -> None:
    unknown = sorted(mutants - ETCD_MUTANTS)
    if unknown:
        raise KeyError(
            f"unknown protocol {name!r}: unknown mutants {unknown}; "
            f"valid: {', '.join(sorted(ETCD_MUTANTS))}"
        )


def _protocol_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The wrapped protocol's config fields among swarm ``settings`` (no client mix)."""
    _, protocol = split_settings(settings)
    return {k: v for k, v in protocol.items() if k not in SWARM_ONLY_KEYS}


def _draw(draw: Callable[[SimRandom], dict[str, Any]]) -> Callable[[SimRandom], dict[str, Any]]:
    def draw_settings(rng: SimRandom) -> dict[str, Any]:
        return _protocol_settings(draw(rng))

    return draw_settings


def etcd_paxos_spec(
    mutants: frozenset[str] = frozenset(),
    config: PaxosConfig | None = None,
    name: str = "etcd-paxos",
    inner: Inner = PAXOS_INNER,
) -> ProtocolDef:
    """etcd over Multi-Paxos; ``mutants`` (etcd's) break it on purpose.  ``inner``: how
    the nodes are driven (tests: :data:`PAXOS_INNER` without lease epochs)."""
    _check_mutants(mutants, name)
    node_config = config or PAXOS_SIM_CONFIG
    make_hub = etcd_hub_factory(mutants)

    def make_node(node_id: int, peers: tuple[int, ...], rng: Rng, durable: DurableState) -> Any:
        paxos = PaxosNode(node_id, peers, rng, durable, node_config)
        return EtcdNode(paxos, make_hub, inner)

    def make_monitor(node_ids: tuple[int, ...]) -> Monitor:
        return EtcdMonitor(node_ids, PaxosMonitor(node_ids, node_config))

    def configure(settings: Mapping[str, Any]) -> ProtocolDef:
        fields = _protocol_settings(settings)
        return etcd_paxos_spec(mutants, dataclasses.replace(node_config, **fields), name, inner)

    return _definition(
        name,
        "etcd over Multi-Paxos: MVCC, txns, leases (leader expiry), watches",
        mutants,
        make_node,
        make_monitor,
        configure,
        draw=_draw(draw_paxos_settings),
        make_nemesis=lambda rules: EtcdNemesis(rules, PaxosNemesis),
        nemesis_rules=PAXOS_NEMESIS_RULES,
    )


def etcd_vr_spec(
    mutants: frozenset[str] = frozenset(),
    config: VrConfig | None = None,
    name: str = "etcd-vr",
) -> ProtocolDef:
    """etcd over Viewstamped Replication; ``mutants`` (etcd's) break it on purpose."""
    _check_mutants(mutants, name)
    node_config = config or VR_SIM_CONFIG
    make_hub = etcd_hub_factory(mutants)

    def make_node(node_id: int, peers: tuple[int, ...], rng: Rng, durable: DurableState) -> Any:
        return EtcdNode(VrNode(node_id, peers, rng, durable, node_config), make_hub, VR_INNER)

    def make_monitor(node_ids: tuple[int, ...]) -> Monitor:
        return EtcdMonitor(node_ids, VrMonitor(node_ids, node_config.durable))

    def configure(settings: Mapping[str, Any]) -> ProtocolDef:
        fields = _protocol_settings(settings)
        return etcd_vr_spec(mutants, dataclasses.replace(node_config, **fields), name)

    return _definition(
        name,
        "etcd over Viewstamped Replication: MVCC, txns, leases (primary expiry), watches",
        mutants,
        make_node,
        make_monitor,
        configure,
        draw=_draw(draw_vr_settings),
        make_nemesis=lambda rules: EtcdNemesis(rules, VrNemesis),
        nemesis_rules=VR_NEMESIS_RULES,
    )


def _definition(
    name: str,
    summary: str,
    mutants: frozenset[str],
    make_node: NodeFactory,
    make_monitor: Callable[[tuple[int, ...]], Monitor],
    configure: Callable[[Mapping[str, Any]], ProtocolDef],
    *,
    draw: Callable[[SimRandom], dict[str, Any]],
    make_nemesis: Callable[[frozenset[str]], Any],
    nemesis_rules: tuple[str, ...],
) -> ProtocolDef:
    make_sm: Callable[[], StateMachine] = etcd_machine_factory(mutants)
    return ProtocolDef(
        name=name,
        summary=summary,
        make_node=make_node,
        make_client=etcd_client_factory(compactions=False),
        make_monitor=make_monitor,
        make_state_machine=make_sm,
        serve=serve,
        default_nodes=5,
        default_clients=3,
        broken=bool(mutants),
        draw_settings=draw,
        configure=configure,
        make_nemesis=make_nemesis,
        nemesis_rules=nemesis_rules,
        swarm_nodes=(3, 5, 5, 7),
    )


def etcd_paxos_mutant_spec(mutants: frozenset[str], name: str) -> ProtocolDef:
    """``etcd-paxos+MUTANT[,MUTANT]``; KeyError naming the valid mutants."""
    return etcd_paxos_spec(mutants=mutants, name=name)


def etcd_vr_mutant_spec(mutants: frozenset[str], name: str) -> ProtocolDef:
    """``etcd-vr+MUTANT[,MUTANT]``; KeyError naming the valid mutants."""
    return etcd_vr_spec(mutants=mutants, name=name)


ETCD_PAXOS = etcd_paxos_spec()
"""``pnyx sim etcd-paxos`` (simulator only: as real processes it is ``pnyx serve --protocol
etcd --consensus paxos``)."""
ETCD_VR = etcd_vr_spec()
"""``pnyx sim etcd-vr`` (real processes: ``pnyx serve --protocol etcd --consensus vr``)."""

__all__ = [
    "ETCD_PAXOS",
    "ETCD_VR",
    "PAXOS_INNER",
    "VR_INNER",
    "etcd_paxos_mutant_spec",
    "etcd_paxos_spec",
    "etcd_vr_mutant_spec",
    "etcd_vr_spec",
]

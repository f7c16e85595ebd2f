"""Simulator specs for Dynamo-style quorum replication (:mod:`pnyx.protocols.dynamo`).

``dynamo``: N=3, R=2, W=2 (R+W>N), strict quorums.  ``dynamo-weak``: N=3, R=1, W=1.
``dynamo-sloppy``: N=3, R=2, W=2 with sloppy quorums and hinted handoff.  All three run
read repair and Merkle anti-entropy.  Variants for the consistency table
(:mod:`pnyx.cli.consistency_matrix`): ``dynamo-weak-norepair`` and
``dynamo-sloppy-norepair`` (read repair off, anti-entropy on), ``dynamo-norepair-noae``
(N=3, R=2, W=2 with neither read repair nor anti-entropy: replicas may stay apart, which
its monitor reports as a liveness failure), and ``dynamo-r1w3`` (N=3, R=1, W=3: R+W>N with
fast reads).

Monitor: during the heal phase, liveness is convergence — no hint left undelivered and
every key's replicas holding the same siblings, which anti-entropy and hand-off must
reach once faults heal.  At the end: convergence is confirmed with
:func:`pnyx.check.convergence.check_convergence_states`, and no acknowledged write is
lost (each is one of the final siblings at every replica of its key, or covered by the
context of one of them) — unless at least W nodes stopped on damaged disks, which may have
held every durable copy.  Hints for a node stopped for good are not owed.  The client
history (``get``/``put`` with unique written values) is the run's history, readable by
:func:`pnyx.check.consistency.check_consistency`.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any

from pnyx.core import DurableState, Rng
from pnyx.protocols.dynamo import DynamoClient, DynamoConfig, DynamoNode, Ring
from pnyx.protocols.dynamo.runtime_def import DYNAMO_RUNTIME
from pnyx.protocols.dynamo.versions import Version, dominated
from pnyx.sim.spec import Monitor, ProtocolDef, Violation, World

STRICT = DynamoConfig(n=3, r=2, w=2)
WEAK = DynamoConfig(n=3, r=1, w=1)
SLOPPY = DynamoConfig(n=3, r=2, w=2, sloppy=True)
WEAK_NOREPAIR = DynamoConfig(n=3, r=1, w=1, read_repair=False)
SLOPPY_NOREPAIR = DynamoConfig(n=3, r=2, w=2, sloppy=True, read_repair=False)
NOREPAIR_NOAE = DynamoConfig(n=3, r=2, w=2, read_repair=False, anti_entropy=False)
R1W3 = DynamoConfig(n=3, r=1, w=3)


class DynamoMonitor(Monitor):
    """Convergence after heal and no lost acknowledged write."""

    def __init__(self, node_ids: tuple[int, ...], config: DynamoConfig) -> None:
        self.node_ids = node_ids
        self.config = config
        self.ring = Ring(node_ids, config.vnodes)

    def owners(self, world: World, key: str) -> list[int]:
        """The key's replicas that are not down for good."""
        top = self.ring.preference_list(key)[: self.config.n]
        return [n for n in top if not world.stopped(n)]

    def _nodes(self, world: World) -> dict[int, DynamoNode]:
        nodes: dict[int, DynamoNode] = {}
        for node_id in self.node_ids:
            node = world.node(node_id)
            if isinstance(node, DynamoNode):
                nodes[node_id] = node
        return nodes

    def divergence(self, world: World) -> str | None:
        """What keeps the cluster from having converged (None once it has)."""
        nodes = self._nodes(world)
        for node_id in self.node_ids:
            if node_id not in nodes and not world.stopped(node_id):
                return f"node {node_id} is down"
            held = nodes[node_id].hints if node_id in nodes else {}
            owed = [n for n in sorted(held) if not world.stopped(n)]
            if owed:
                return f"node {node_id} still holds hints for {owed}"
        for key in sorted({k for node in nodes.values() for k in node.store}):
            stores = {n: nodes[n].store.get(key, ()) for n in self.owners(world, key)}
            if len(set(stores.values())) > 1:
                return f"key {key!r}: replicas differ: {_show(stores)}"
        return None

    def liveness(self, world: World) -> str | None:
        for client_id in world.client_ids:
            client = world.node(client_id)
            if isinstance(client, DynamoClient) and client.busy:
                return f"client {client_id} still has an operation in flight"
        return self.divergence(world)

    def at_end(self, world: World) -> Violation | None:
        from pnyx.check.convergence import check_convergence_states

        nodes = self._nodes(world)
        for key in sorted({k for node in nodes.values() for k in node.store}):
            states = {
                n: {key: nodes[n].store.get(key, ())} for n in self.owners(world, key) if n in nodes
            }
            result = check_convergence_states(states, initial=())
            if not result.ok:
                return Violation("convergence", result.explain())
        return self._lost_write(world, nodes)

    def _lost_write(self, world: World, nodes: dict[int, DynamoNode]) -> Violation | None:
        stopped = sum(1 for n in self.node_ids if world.stopped(n))
        if stopped >= self.config.w:
            return None  # all W durable copies of a write may have been on damaged disks
        for client_id in world.client_ids:
            client = world.node(client_id)
            if not isinstance(client, DynamoClient):
                continue
            for token, (key, dot) in client.acked.items():
                for owner in self.owners(world, key):
                    siblings = nodes[owner].store.get(key, ()) if owner in nodes else ()
                    if not dominated(siblings, *dot):
                        return Violation(
                            "lost-write",
                            (
                                f"acknowledged put {token!r} of key {key!r} (dot {dot}) is "
                                f"neither present nor overwritten at replica {owner}: "
                                f"{_show({owner: siblings})}"
                            ),
                        )
        return None


def _show(stores: dict[int, tuple[Version, ...]]) -> str:
    return "; ".join(
        f"{n}: {[(v.node, v.counter, v.value) for v in siblings]}"
        for n, siblings in sorted(stores.items())
    )


def _make_node(
    config: DynamoConfig, node_id: int, peers: tuple[int, ...], rng: Rng, durable: DurableState
) -> DynamoNode:
    return DynamoNode(node_id, peers, rng, durable, config)


def _make_client(
    config: DynamoConfig, client_id: int, node_ids: tuple[int, ...], rng: Rng
) -> DynamoClient:
    return DynamoClient(client_id, node_ids, rng, config)


def dynamo_spec(name: str, summary: str, config: DynamoConfig, **extra: Any) -> ProtocolDef:
    """A Dynamo spec with ``config``."""
    return ProtocolDef(
        name=name,
        summary=summary,
        make_node=partial(_make_node, config),
        make_client=partial(_make_client, config),
        make_monitor=partial(DynamoMonitor, config=config),
        **extra,
    )


DYNAMO = dynamo_spec(
    "dynamo", "Dynamo quorum replication, N=3 R=2 W=2 (R+W>N), strict quorums", STRICT
)
DYNAMO_WEAK = dynamo_spec("dynamo-weak", "Dynamo quorum replication, N=3 R=1 W=1 (R+W<=N)", WEAK)
DYNAMO_SLOPPY = dynamo_spec(
    "dynamo-sloppy",
    "Dynamo quorum replication, N=3 R=2 W=2, sloppy quorum + hinted handoff",
    SLOPPY,
)
DYNAMO_WEAK_NOREPAIR = dynamo_spec(
    "dynamo-weak-norepair", "Dynamo, N=3 R=1 W=1 (R+W<=N), no read repair", WEAK_NOREPAIR
)
DYNAMO_SLOPPY_NOREPAIR = dynamo_spec(
    "dynamo-sloppy-norepair",
    "Dynamo, N=3 R=2 W=2, sloppy quorum + hinted handoff, no read repair",
    SLOPPY_NOREPAIR,
)
DYNAMO_NOREPAIR_NOAE = dynamo_spec(
    "dynamo-norepair-noae",
    "Dynamo, N=3 R=2 W=2, neither read repair nor anti-entropy (replicas may never converge)",
    NOREPAIR_NOAE,
)
DYNAMO_R1W3 = dynamo_spec(
    "dynamo-r1w3", "Dynamo, N=3 R=1 W=3 (R+W>N, reads from one replica)", R1W3
)


# -- as real processes (pnyx serve / cluster up --protocol): the runtime part ----------
DYNAMO = dataclasses.replace(DYNAMO, runtime=DYNAMO_RUNTIME)

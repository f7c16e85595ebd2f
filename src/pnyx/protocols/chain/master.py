"""The configuration master: detects failed replicas by missed heartbeats and repairs the chain.

In the paper the master is itself replicated (Paxos); here it is one node that stands in
for such a fault-tolerant service (e.g. a Raft-backed configuration store).  The
simulator specs never crash, pause or isolate it on purpose (see ``pnyx.protocols.chain.spec``).
"""

from __future__ import annotations

from typing import Any

from pnyx.core import ClientReply, DurableState, Message, Outbox, PutRecord, is_client
from pnyx.protocols.chain.messages import ChainConfig, KvRequest, Ping

LEASE_TICKS = 10
"""A replica serves reads and acts in the chain only this long after a heartbeat it sent
was answered."""

DETECT_TICKS = 3 * LEASE_TICKS
"""Silence after which the master removes a replica.  Longer than a lease even with clock
drift, so a removed replica has stopped serving before the new configuration exists."""

PING_TICKS = 2
"""Ticks between two heartbeats of a replica."""

CONFIG_RECORD = "chain_config"
"""Durable record of a master given ``durable``: ``[epoch, members, incarnations, stateful]``."""


class ChainMaster(Outbox):
    """The configuration master (implements :class:`pnyx.core.Node`)."""

    def __init__(
        self, node_id: int, replicas: tuple[int, ...], durable: DurableState | None = None
    ) -> None:
        """``durable``: keep the configuration in durable storage and recover it from there
        (the real runtime, where the master process may restart); None keeps it in memory
        only (the simulator never crashes the master)."""
        if not replicas:
            raise ValueError("a chain needs at least one replica")
        self.node_id = node_id
        self.epoch = 1
        self.members: list[tuple[int, int]] = [(n, 1) for n in replicas]
        self.incarnations: dict[int, int] = {n: 1 for n in replicas}
        self._now_ticks = 0
        self._last_heard: dict[int, int] = {n: 0 for n in replicas}
        self.stateful: set[int] = set(replicas)
        """Members that reported holding the state in their current membership."""
        self._durable = durable is not None
        super().__init__()
        if durable is not None and CONFIG_RECORD in durable.records:
            self._recover(durable.records[CONFIG_RECORD])

    def _recover(self, record: Any) -> None:
        epoch, members, incarnations, stateful = record
        self.epoch = int(epoch)
        self.members = [(int(n), int(since)) for n, since in members]
        self.incarnations.update({int(n): int(i) for n, i in incarnations})
        self.stateful = {int(n) for n in stateful}

    def _persist(self) -> None:
        if self._durable:
            incarnations = sorted(self.incarnations.items())
            record = [self.epoch, self.members, incarnations, sorted(self.stateful)]
            self._ready.persist.append(PutRecord(CONFIG_RECORD, record))

    @property
    def chain(self) -> tuple[int, ...]:
        """The replicas from head to tail."""
        return tuple(n for n, _ in self.members)

    def status(self) -> dict[str, object]:
        """Health report: epoch and chain."""
        return {"role": "master", "epoch": self.epoch, "members": list(self.chain)}

    def step(self, msg: Message, from_id: int) -> None:
        """Heartbeats from replicas; clients are redirected to the head."""
        if isinstance(msg, Ping):
            self._on_ping(msg, from_id)
        elif isinstance(msg, KvRequest) and is_client(from_id):
            target = self.chain[-1] if msg.f == "get" else self.chain[0]
            self._send(from_id, ClientReply(msg.request_id, False, None, target, "not_replica"))

    def tick(self) -> None:
        """Remove replicas silent for longer than ``DETECT_TICKS``, but never the last one
        known to hold the state (without it the data would be gone)."""
        self._now_ticks += 1
        for node in self.chain:
            silent = self._now_ticks - self._last_heard[node]
            if silent > DETECT_TICKS and self.stateful - {node}:
                self.stateful.discard(node)
                self._reconfigure([m for m in self.members if m[0] != node])

    def _on_ping(self, ping: Ping, node: int) -> None:
        if node not in self._last_heard:
            return  # not one of the replicas this master manages
        self._last_heard[node] = self._now_ticks
        known = self.incarnations.get(node, 0)
        if node not in self.chain or ping.incarnation > known:
            # A removed replica, or one that restarted and lost its state: it rejoins at the
            # tail, with a fresh state transferred from its predecessor.
            self.incarnations[node] = max(known, ping.incarnation)
            if self.stateful - {node}:
                self.stateful.discard(node)
            else:
                self._persist()
                return  # the only holder of the state lost it or was removed: cannot repair
            rest = [m for m in self.members if m[0] != node]
            self._reconfigure([*rest, (node, self.epoch + 1)])
        since = dict(self.members).get(node, self.epoch + 1)
        if ping.has_state and ping.epoch >= since and node not in self.stateful:
            self.stateful.add(node)
            self._persist()
        self._send(node, ChainConfig(self.epoch, tuple(self.members), ping.sent_tick))

    def _reconfigure(self, members: list[tuple[int, int]]) -> None:
        self.epoch += 1
        self.members = members
        self._persist()
        for node in self.chain:
            self._send(node, ChainConfig(self.epoch, tuple(self.members)))

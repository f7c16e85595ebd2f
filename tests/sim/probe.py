"""A test-only protocol that makes every simulator fault observable."""

from __future__ import annotations

from typing import Any

from pnyx.core import (
    Apply,
    DurableState,
    LogAppend,
    Message,
    Outbox,
    PutRecord,
    Ready,
    Restore,
    Rng,
    Send,
)
from pnyx.sim.spec import Monitor, ProtocolDef, Violation, World


class Seq(Message, frozen=True):
    """Sent to every peer on every tick: sender's counter and its tick count."""

    n: int
    sent_tick: int


class ProbeNode(Outbox):
    """Each tick: write a two-entry batch (plus a record) and send ``Seq`` to every peer."""

    def __init__(self, node_id: int, peers: tuple[int, ...], rng: Rng, durable: DurableState):
        self.node_id = node_id
        self.peers = tuple(p for p in peers if p != node_id)
        self.ticks = 0
        self.sent = 0
        self.next_index = durable.last_index + 1
        self.received: dict[int, list[int]] = {p: [] for p in self.peers}
        self.lags: list[int] = []
        self.recovered_log_len = len(durable.log)
        self.recovered_record = durable.records.get("last")
        self.synced_index = durable.last_index
        """Last log index of a batch the runtime reported durable (``advance``)."""
        super().__init__()

    def step(self, msg: Message, from_id: int) -> None:
        assert isinstance(msg, Seq)
        self.received[from_id].append(msg.n)
        self.lags.append(self.ticks - msg.sent_tick)

    def tick(self) -> None:
        self.ticks += 1
        i = self.next_index
        self._ready.persist += [
            LogAppend(i, (("a", i),)),
            LogAppend(i + 1, (("b", i + 1),)),
            PutRecord("last", i + 1),
        ]
        self.next_index += 2
        self.sent += 1
        for peer in self.peers:
            self._ready.send.append(Send(peer, Seq(self.sent, self.ticks)))

    def advance(self, ready: Ready) -> None:
        for op in ready.persist:
            if isinstance(op, LogAppend):
                self.synced_index = max(self.synced_index, op.first_index + len(op.entries) - 1)

    def status(self) -> dict[str, Any]:
        """Every probe node names node 2 as the leader (for leader-targeted faults)."""
        return {"leader": 2}


class IdleClient:
    def __init__(self, client_id: int, node_ids: tuple[int, ...], rng: Rng) -> None:
        self.node_id = client_id

    def step(self, msg: Message, from_id: int) -> None:
        pass

    def tick(self) -> None:
        pass

    def has_ready(self) -> bool:
        return False

    def ready(self) -> Ready:
        return Ready()

    def advance(self, ready: Ready) -> None:
        pass


class ProbeMonitor(Monitor):
    """Records what restarts found on disk and counts invariant checks.

    ``durable-log``: a restarted node recovers every log entry its previous incarnation was
    told was durable (never a silently shorter log).
    """

    def __init__(self, node_ids: tuple[int, ...]) -> None:
        self.node_ids = node_ids
        self.recovered: list[tuple[int, Any]] = []
        self.after_event_calls = 0
        self.synced: dict[int, int] = {}
        self.shorter: list[str] = []

    def on_apply(
        self, world: World, node_id: int, item: Apply | Restore, result: Any
    ) -> Violation | None:
        return None

    def on_restart(self, world: World, node_id: int) -> None:
        node = world.node(node_id)
        assert isinstance(node, ProbeNode)
        self.recovered.append((node.recovered_log_len, node.recovered_record))
        acknowledged = self.synced.get(node_id, 0)
        if node.recovered_log_len < acknowledged:
            self.shorter.append(
                f"node {node_id} recovered {node.recovered_log_len} entries, "
                f"{acknowledged} were acknowledged durable"
            )

    def after_event(self, world: World) -> Violation | None:
        self.after_event_calls += 1
        for node_id in self.node_ids:
            node = world.node(node_id)
            if isinstance(node, ProbeNode):
                self.synced[node_id] = node.synced_index
        return None


PROBE = ProtocolDef(
    name="probe",
    summary="test-only fault probe",
    make_node=ProbeNode,
    make_client=IdleClient,
    make_monitor=ProbeMonitor,
    default_nodes=3,
    default_clients=1,
)

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
from pnyx.sim.spec import Monitor, ProtocolSpec, Violation, World


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
    """Records what restarts found on disk and counts invariant checks."""

    def __init__(self, node_ids: tuple[int, ...]) -> None:
        self.recovered: list[tuple[int, Any]] = []
        self.after_event_calls = 0

    def on_apply(
        self, world: World, node_id: int, item: Apply | Restore, result: Any
    ) -> Violation | None:
        return None

    def on_restart(self, world: World, node_id: int) -> None:
        node = world.node(node_id)
        assert isinstance(node, ProbeNode)
        self.recovered.append((node.recovered_log_len, node.recovered_record))

    def after_event(self, world: World) -> Violation | None:
        self.after_event_calls += 1
        return None


PROBE = ProtocolSpec(
    name="probe",
    summary="test-only fault probe",
    make_node=ProbeNode,
    make_client=IdleClient,
    make_monitor=ProbeMonitor,
    default_nodes=3,
    default_clients=1,
)

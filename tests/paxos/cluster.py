"""A hand-driven Paxos cluster for directed scenarios: the test decides what is delivered."""

from __future__ import annotations

from typing import Any

from pnyx.core import Apply, ClientReply, DurableState, Message, Ready, SplitMix64
from pnyx.protocols.paxos import PaxosConfig, PaxosNode, serve
from pnyx.protocols.raft import KvStateMachine


class Cluster:
    """Nodes 1..n with their disks and state machines; sent messages wait in ``queue``."""

    def __init__(self, n: int, config: PaxosConfig | None = None) -> None:
        self.config = config or PaxosConfig()
        self.ids = tuple(range(1, n + 1))
        self.disks = {i: DurableState() for i in self.ids}
        self.sms = {i: KvStateMachine() for i in self.ids}
        self.nodes = {i: self._build(i) for i in self.ids}
        self.queue: list[tuple[int, int, Message]] = []
        self.replies: list[tuple[int, ClientReply]] = []
        self.applied: dict[int, list[Apply]] = {i: [] for i in self.ids}

    def _build(self, i: int) -> PaxosNode:
        return PaxosNode(i, self.ids, SplitMix64(i), self.disks[i].copy(), self.config)

    def node(self, i: int) -> PaxosNode:
        return self.nodes[i]

    def flush(self, i: int) -> None:
        """Carry out node ``i``'s pending batches (persist, send, apply, services)."""
        node = self.nodes[i]
        for _ in range(100):
            if not node.has_ready():
                return
            ready = node.ready()
            self._carry_out(i, node, ready)
        raise AssertionError(f"node {i} kept producing batches")

    def _carry_out(self, i: int, node: PaxosNode, ready: Ready) -> None:
        self.disks[i].apply_all(ready.persist)
        for send in ready.send:
            if send.to >= 1000:
                assert isinstance(send.msg, ClientReply)
                self.replies.append((send.to, send.msg))
            else:
                self.queue.append((i, send.to, send.msg))
        sm = self.sms[i]
        for item in ready.apply:
            if isinstance(item, Apply):
                result: Any = sm.apply(item.command)
                self.applied[i].append(item)
                if item.reply_to is not None:
                    self.replies.append((item.reply_to, ClientReply(item.request_id, True, result)))
            else:
                sm.restore(item.data)
        for request in ready.services:
            serve(node, sm, request)
        node.advance(ready)

    def step(self, i: int, msg: Message, from_id: int) -> None:
        self.nodes[i].step(msg, from_id)
        self.flush(i)

    def deliver(self, src: int, dst: int, kind: type[Message] | None = None) -> int:
        """Deliver the queued messages from ``src`` to ``dst`` (of type ``kind``)."""
        picked = [
            m
            for m in self.queue
            if m[0] == src and m[1] == dst and (kind is None or type(m[2]) is kind)
        ]
        for item in picked:
            self.queue.remove(item)
        for _, _, msg in picked:
            self.step(dst, msg, src)
        return len(picked)

    def drop(self, src: int, dst: int) -> None:
        self.queue = [m for m in self.queue if not (m[0] == src and m[1] == dst)]

    def deliver_all(self, rounds: int = 50) -> None:
        for _ in range(rounds):
            if not self.queue:
                return
            src, dst, msg = self.queue.pop(0)
            self.step(dst, msg, src)
        raise AssertionError("messages kept flowing")

    def campaign(self, i: int) -> None:
        """Node ``i`` times out and starts phase 1."""
        node = self.nodes[i]
        for _ in range(1000):
            if node.role != "follower":
                break
            node.tick()
        self.flush(i)

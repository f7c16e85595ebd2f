"""A tiny hand-driven network of VR replicas for directed scenarios (no simulator).

Messages wait in one FIFO queue; a test decides who is down, who is cut off and which
messages are lost, and drives time with :meth:`Net.tick`.  Each replica applies committed
ops to its own ``KvStateMachine`` (rebuilt empty when it restarts, as in a real crash).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from pnyx.core import CLIENT_ID_BASE, ClientReply, DurableState, Message, Restore, SplitMix64
from pnyx.protocols.raft import ClientRequest, KvStateMachine, ReadRequest
from pnyx.protocols.raft.kv import OPEN_SESSION, PUT, Command, KvOp
from pnyx.protocols.vr import VrConfig, VrNode
from pnyx.protocols.vr.checkpoints import serve_checkpoint

CLIENT = CLIENT_ID_BASE
MAX_DELIVERIES = 100_000
CONFIG = VrConfig(view_change_jitter_ticks=0, commit_interval_ticks=1)

Filter = Callable[[int, int, Message], bool]
"""(source, destination, message) -> True to lose the message."""


class Net:
    """Replicas 1..n, a client id, a message queue and fault switches."""

    def __init__(self, n: int = 5, config: VrConfig = CONFIG) -> None:
        self.ids = tuple(range(1, n + 1))
        self.config = config
        self.disks = {i: DurableState() for i in self.ids}
        self.nodes: dict[int, VrNode] = {}
        self.sms: dict[int, KvStateMachine] = {}
        self.lives = dict.fromkeys(self.ids, 0)
        for i in self.ids:
            self._build(i)
        self.queue: deque[tuple[int, int, Message]] = deque()
        self.down: set[int] = set()
        self.cut: set[int] = set()
        self.lose: Filter | None = None
        self.replies: dict[int, ClientReply] = {}

    def _build(self, i: int) -> None:
        self.lives[i] += 1
        rng = SplitMix64(i * 1000 + self.lives[i])
        self.nodes[i] = VrNode(i, self.ids, rng, self.disks[i].copy(), self.config)
        self.sms[i] = KvStateMachine()

    # -- faults -------------------------------------------------------------------------

    def crash(self, i: int) -> None:
        """Node ``i`` loses everything but its disk; messages to it are lost."""
        self.down.add(i)

    def restart(self, i: int) -> None:
        self.down.discard(i)
        self._build(i)
        self.pump()

    # -- driving ------------------------------------------------------------------------

    def pump(self) -> None:
        """Carry out every ready batch and deliver every queued message, until quiet."""
        for _ in range(MAX_DELIVERIES):
            self._drain()
            if not self.queue:
                return
            src, dst, msg = self.queue.popleft()
            if dst == CLIENT:
                if isinstance(msg, ClientReply):
                    self.replies[msg.request_id] = msg
                continue
            blocked = dst in self.down or src in self.down or {src, dst} & self.cut
            if blocked or (self.lose is not None and self.lose(src, dst, msg)):
                continue
            self.nodes[dst].step(msg, src)
        raise AssertionError(f"network not quiet after {MAX_DELIVERIES} deliveries")

    def _drain(self) -> None:
        for i in self.ids:
            if i in self.down:
                continue
            node = self.nodes[i]
            while node.has_ready():
                batch = node.ready()
                self.disks[i].apply_all(batch.persist)
                for send in batch.send:
                    self.queue.append((i, send.to, send.msg))
                for item in batch.apply:
                    if isinstance(item, Restore):
                        self.sms[i].restore(item.data)
                        continue
                    result = self.sms[i].apply(item.command)
                    if item.reply_to is not None:
                        reply = ClientReply(item.request_id, True, result)
                        self.queue.append((i, item.reply_to, reply))
                for request in batch.services:
                    serve_checkpoint(node, self.sms[i], request)
                node.advance(batch)

    def tick(self, ticks: int = 1) -> None:
        for _ in range(ticks):
            for i in self.ids:
                if i not in self.down:
                    self.nodes[i].tick()
            self.pump()

    # -- clients ------------------------------------------------------------------------

    def request(self, to: int, request_id: int, command: Any) -> ClientReply | None:
        """Send a write to node ``to``; its reply, if one came back while quiet."""
        self.nodes[to].step(ClientRequest(request_id, command), CLIENT)
        self.pump()
        return self.replies.get(request_id)

    def read(self, to: int, request_id: int, key: str) -> ClientReply | None:
        self.nodes[to].step(ReadRequest(request_id, KvOp("get", key)), CLIENT)
        self.pump()
        return self.replies.get(request_id)

    def open_session(self, to: int = 1) -> int:
        reply = self.request(to, 1, Command(0, 0, OPEN_SESSION))
        assert reply is not None and reply.ok, reply
        session = reply.result
        assert isinstance(session, int)
        return session

    def put(self, to: int, request_id: int, session: int, seq: int, key: str, value: str) -> Any:
        return self.request(to, request_id, Command(session, seq, KvOp(PUT, key, value)))

    def live(self) -> list[VrNode]:
        return [self.nodes[i] for i in self.ids if i not in self.down]

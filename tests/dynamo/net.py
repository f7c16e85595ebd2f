"""A tiny hand-driven network of Dynamo nodes for directed tests (no simulator)."""

from __future__ import annotations

from typing import Any

from pnyx.core import CLIENT_ID_BASE, ClientReply, DurableState, Message, SplitMix64
from pnyx.protocols.dynamo import DynamoConfig, DynamoNode

CLIENT = CLIENT_ID_BASE


class Net:
    """Nodes 1..size; messages to or from a ``down`` node are dropped."""

    def __init__(self, config: DynamoConfig, size: int = 5) -> None:
        self.ids = tuple(range(1, size + 1))
        self.config = config
        self.disks = {n: DurableState() for n in self.ids}
        self.nodes = {n: DynamoNode(n, self.ids, SplitMix64(n), self.disks[n], config)
                      for n in self.ids}
        self.down: set[int] = set()
        self.replies: list[ClientReply] = []
        self.sent: list[tuple[int, int, Message]] = []
        """Every message delivered (from, to, msg), for inspection."""

    def send(self, to: int, msg: Message, from_id: int = CLIENT) -> None:
        """Deliver ``msg`` to ``to`` and everything that follows until the network is quiet."""
        queue: list[tuple[int, int, Message]] = [(from_id, to, msg)]
        for _ in range(10_000):
            if not queue:
                return
            src, dst, m = queue.pop(0)
            if src in self.down or dst in self.down:
                continue
            if dst == CLIENT:
                assert isinstance(m, ClientReply)
                self.replies.append(m)
                continue
            self.sent.append((src, dst, m))
            self.nodes[dst].step(m, src)
            queue.extend(self._drain(dst))
        raise AssertionError("network did not go quiet")

    def tick(self, ticks: int = 1) -> None:
        """Tick every live node ``ticks`` times, delivering what they send."""
        for _ in range(ticks):
            for n in self.ids:
                if n in self.down:
                    continue
                self.nodes[n].tick()
                for src, dst, m in self._drain(n):
                    self.send(dst, m, src)

    def _drain(self, node_id: int) -> list[tuple[int, int, Message]]:
        node = self.nodes[node_id]
        out: list[tuple[int, int, Message]] = []
        while node.has_ready():
            ready = node.ready()
            self.disks[node_id].apply_all(ready.persist)
            out.extend((node_id, s.to, s.msg) for s in ready.send)
            node.advance(ready)
        return out

    def restart(self, node_id: int) -> None:
        """Rebuild the node from its disk."""
        self.nodes[node_id] = DynamoNode(node_id, self.ids, SplitMix64(node_id),
                                         self.disks[node_id], self.config)
        self._drain(node_id)

    def last_result(self) -> Any:
        """The result of the last client reply (which must be ok)."""
        reply = self.replies[-1]
        assert reply.ok, reply
        return reply.result

"""An in-process, hand-driven Raft cluster for scenario tests (etcd-raft style).

Messages sit in a FIFO until the test delivers them; every delivery is written to a
readable trace (``1->2 RequestVote term=1 ...``).  Ready batches are carried out exactly as
the runtimes do: persist into a :class:`DurableState`, send, apply to a KV state machine,
serve ``TakeSnapshot``, then ``advance``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from pnyx.core import Apply, ClientReply, DurableState, Message, Restore, SplitMix64, is_client
from pnyx.protocols.raft import (
    Command,
    KvOp,
    KvStateMachine,
    RaftConfig,
    RaftNode,
    TakeSnapshot,
)
from pnyx.protocols.raft.kv import OPEN_SESSION
from pnyx.protocols.raft.node import LEADER

Filter = Callable[[int, int, Message], bool]


def describe(msg: Message) -> str:
    """``RequestVote term=1 last_index=0 ...`` — one message as one trace line."""
    parts = [type(msg).__name__]
    fields = msg.__struct_fields__
    defaults = dict(
        zip(
            fields[len(fields) - len(msg.__struct_defaults__) :],
            msg.__struct_defaults__,
            strict=True,
        )
    )
    for name in fields:
        value = getattr(msg, name)
        if name in defaults and defaults[name] == value:
            continue
        if name == "entries":
            value = "[" + ",".join(f"{e.term}" for e in value) + "]"
        elif name == "data" and isinstance(value, bytes):
            value = f"<{len(value)}B>"
        elif name == "config":
            continue
        parts.append(f"{name}={value}")
    return " ".join(parts)


class Cluster:
    """Nodes ``1..n`` wired through a controllable network."""

    def __init__(
        self,
        n: int = 3,
        config: RaftConfig | None = None,
        seed: int = 7,
        ids: tuple[int, ...] | None = None,
        sm_factory: Callable[[], KvStateMachine] = KvStateMachine,
    ) -> None:
        self.ids = ids or tuple(range(1, n + 1))
        self.config = config or RaftConfig()
        self.seed = seed
        self.sm_factory = sm_factory
        self.durable = {i: DurableState() for i in self.ids}
        self.nodes: dict[int, RaftNode | None] = {}
        self.sms: dict[int, KvStateMachine] = {}
        self.incarnation = dict.fromkeys(self.ids, 0)
        self.queue: list[tuple[int, int, Message]] = []
        self.blocked: set[tuple[int, int]] = set()
        self.trace: list[str] = []
        self.replies: list[tuple[int, ClientReply]] = []
        self.applied: dict[int, list[Apply | Restore]] = {i: [] for i in self.ids}
        for i in self.ids:
            self.start(i)

    # -- processes -----------------------------------------------------------------------

    def start(self, i: int) -> RaftNode:
        rng = SplitMix64(self.seed * 1000 + i * 10 + self.incarnation[i])
        node = RaftNode(i, self.ids, rng, self.durable[i].copy(), self.config)
        self.nodes[i] = node
        self.sms[i] = self.sm_factory()
        self.flush(i)
        return node

    def crash(self, i: int) -> None:
        """Stop node ``i``; everything it did not persist is gone (flush persists eagerly)."""
        self.nodes[i] = None
        self.incarnation[i] += 1
        self.queue = [(s, d, m) for s, d, m in self.queue if d != i]
        self.trace.append(f"crash {i}")

    def restart(self, i: int) -> RaftNode:
        self.trace.append(f"restart {i}")
        return self.start(i)

    def node(self, i: int) -> RaftNode:
        node = self.nodes[i]
        assert node is not None, f"node {i} is crashed"
        return node

    def live(self) -> list[RaftNode]:
        return [n for n in self.nodes.values() if n is not None]

    def leader(self) -> RaftNode | None:
        leaders = [n for n in self.live() if n.role == LEADER]
        if not leaders:
            return None
        return max(leaders, key=lambda n: n.term)

    # -- the runtime loop --------------------------------------------------------------------

    def flush(self, i: int) -> None:
        node = self.nodes[i]
        if node is None:
            return
        while node.has_ready():
            ready = node.ready()
            self.durable[i].apply_all(ready.persist)
            for send in ready.send:
                if is_client(send.to):
                    assert isinstance(send.msg, ClientReply)
                    self.replies.append((send.to, send.msg))
                else:
                    self.queue.append((i, send.to, send.msg))
            for item in ready.apply:
                self._apply(i, item)
            for request in ready.services:
                assert isinstance(request, TakeSnapshot)
                node.snapshot_taken(request.index, self.sms[i].snapshot())
            node.advance(ready)

    def _apply(self, i: int, item: Apply | Restore) -> None:
        sm = self.sms[i]
        self.applied[i].append(item)
        if isinstance(item, Restore):
            sm.restore(item.data)
            return
        result = sm.apply(item.command)
        if item.reply_to is not None:
            self.replies.append((item.reply_to, ClientReply(item.request_id, True, result)))

    def flush_all(self) -> None:
        for i in self.ids:
            self.flush(i)

    def deliver_one(self, src: int, dst: int, msg: Message) -> None:
        node = self.nodes.get(dst)
        if node is None or (src, dst) in self.blocked:
            self.trace.append(f"{src}->{dst} dropped {describe(msg)}")
            return
        self.trace.append(f"{src}->{dst} {describe(msg)}")
        node.step(msg, src)
        self.flush(dst)

    def deliver(self, keep: Filter | None = None, max_steps: int = 100_000) -> int:
        """Deliver queued messages (FIFO) until none is left; ``keep`` may hold some back."""
        self.flush_all()
        delivered = 0
        held: list[tuple[int, int, Message]] = []
        while self.queue:
            src, dst, msg = self.queue.pop(0)
            if keep is not None and keep(src, dst, msg):
                held.append((src, dst, msg))
                continue
            self.deliver_one(src, dst, msg)
            delivered += 1
            assert delivered < max_steps, "the cluster did not go quiet"
        self.queue = held
        return delivered

    def deliver_until(self, line_prefix: str, max_steps: int = 10_000) -> None:  # exact line
        """Deliver one message at a time until a trace line starting with ``line_prefix``."""
        self.flush_all()
        for _ in range(max_steps):
            assert self.queue, f"the network went quiet before {line_prefix!r}\n{self.text()}"
            src, dst, msg = self.queue.pop(0)
            self.deliver_one(src, dst, msg)
            if self.trace[-1] == line_prefix:
                return
        raise AssertionError(f"{line_prefix!r} never happened")

    def deliver_until_type(self, kind: type[Message], max_steps: int = 10_000) -> None:
        """Deliver one message at a time (FIFO) until one of type ``kind`` was delivered."""
        self.flush_all()
        for _ in range(max_steps):
            assert self.queue, f"the network went quiet before a {kind.__name__}\n{self.text()}"
            src, dst, msg = self.queue.pop(0)
            self.deliver_one(src, dst, msg)
            if type(msg) is kind:
                return
        raise AssertionError(f"no {kind.__name__} within {max_steps} deliveries")

    def drop_queued(self) -> None:
        self.queue = []

    def tick(self, i: int, times: int = 1) -> None:
        for _ in range(times):
            self.node(i).tick()
            self.flush(i)

    def tick_all(self, times: int = 1) -> None:
        for _ in range(times):
            for n in self.live():
                n.tick()
            self.flush_all()

    def elect(self, i: int) -> RaftNode:
        """Time node ``i`` out and deliver everything: it should win."""
        node = self.node(i)
        for other in self.live():
            if other is not node and other.role != LEADER:
                # time has passed: nobody remembers hearing from a leader (lease over)
                other.election_elapsed_ticks = self.config.election_timeout_ticks
        node.election_elapsed_ticks = node.randomized_timeout_ticks - 1
        self.tick(i)
        self.deliver()
        assert node.role == LEADER, f"node {i} did not win: {node!r}\n" + self.text()
        return node

    def settle(self, rounds: int = 50) -> None:
        """Tick everyone and deliver until the network is quiet after heartbeats."""
        for _ in range(rounds):
            self.tick_all()
            self.deliver()

    # -- partitions --------------------------------------------------------------------------

    def isolate(self, i: int) -> None:
        for j in self.ids:
            if j != i:
                self.blocked |= {(i, j), (j, i)}

    def heal(self) -> None:
        self.blocked.clear()

    # -- clients --------------------------------------------------------------------------

    def put(self, leader: int, key: str, value: Any, session: int, seq: int, rid: int) -> None:
        from pnyx.protocols.raft import ClientRequest

        cmd = Command(session, seq, KvOp("put", key, value))
        self.node(leader).step(ClientRequest(rid, cmd), 1000)
        self.flush(leader)

    def open_session(self, leader: int, rid: int = 1) -> int:
        from pnyx.protocols.raft import ClientRequest

        self.node(leader).step(ClientRequest(rid, Command(0, 0, OPEN_SESSION)), 1000)
        self.deliver()
        reply = self.reply(rid)
        assert reply.ok, reply
        assert isinstance(reply.result, int)
        return reply.result

    def reply(self, request_id: int) -> ClientReply:
        found = [r for _, r in self.replies if r.request_id == request_id]
        assert found, f"no reply to request {request_id}; replies: {self.replies}"
        return found[-1]

    def text(self) -> str:
        return "\n".join(self.trace)

    def take_trace(self) -> list[str]:
        out, self.trace = self.trace, []
        return out

    def logs_equal_through(self, index: int) -> bool:
        ref = None
        for n in self.live():
            terms = [n.log.term(k) for k in range(n.log.offset + 1, index + 1)]
            mine = terms[-3:]
            if ref is None:
                ref = mine
            elif mine != ref:
                return False
        return True


def kv_state(cluster: Cluster, i: int) -> dict[str, Any]:
    return dict(cluster.sms[i].data)


def encode_size(msg: Any) -> int:
    return len(msgspec.msgpack.encode(msg))

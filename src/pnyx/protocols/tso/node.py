"""The timestamp oracle's node: a Raft node plus the leader-side batch allocator.

As in TiDB's PD (and Percolator's oracle): the leader persists a high-water mark through
the Raft log ahead of what it hands out, then serves strictly increasing timestamps from
memory up to that mark.  A new leader first applies everything committed before its term
(its no-op committed), proposes ``mark + window_size`` and serves from ``mark + 1`` once that
proposal is applied: every timestamp it hands out is above anything an earlier leader could
have handed out.  Before answering, the leader confirms through Raft's ReadIndex (a
heartbeat round, one per batch of waiting requests) that it still leads, so a deposed leader
that has not noticed yet cannot hand out a smaller timestamp after its successor handed out
a larger one: timestamps increase in real-time order across leader changes.
"""

from __future__ import annotations

from typing import Any

from pnyx.core import (
    Apply,
    ClientReply,
    DurableState,
    InvalidMessage,
    Message,
    NodeFactory,
    Ready,
    Restore,
    Rng,
    Send,
    is_client,
)
from pnyx.protocols.raft import LEADER, RaftConfig, RaftNode, ReadRequest
from pnyx.protocols.tso.machine import as_command, decode_mark
from pnyx.protocols.tso.messages import MAX_BATCH, Barrier, SetHighWater, TsoRequest

INTERNAL_CLIENT = 2**62
"""The client id the TSO node uses for its own ReadIndex barriers (never a real client)."""

WINDOW_SIZE = 1_000_000
"""Timestamps one persisted mark covers by default (PD's window is 3 s of timestamps)."""

MAX_WAITING = 4_096
"""Bound on client requests queued at the leader."""


class _Waiting:
    __slots__ = ("client", "count", "request_id")

    def __init__(self, client: int, request_id: int, count: int) -> None:
        self.client = client
        self.request_id = request_id
        self.count = count


class Allocator:
    """Leader-only state, created on election and dropped on step-down."""

    __slots__ = ("limit", "next_ts", "proposed", "started", "term")

    def __init__(self, term: int) -> None:
        self.term = term
        self.started = False
        """True once the window was proposed (all earlier marks applied)."""
        self.next_ts = 0
        """The next timestamp to hand out."""
        self.limit = 0
        """The highest timestamp this leader may hand out (its applied mark)."""
        self.proposed = 0
        """The highest mark this leader proposed."""

    def available(self) -> int:
        """Timestamps that may be handed out now."""
        return max(0, self.limit - self.next_ts + 1) if self.started else 0


class TsoNode:
    """A timestamp oracle member (implements :class:`pnyx.core.Node`)."""

    def __init__(
        self,
        node_id: int,
        peers: tuple[int, ...],
        rng: Rng,
        durable: DurableState,
        raft_config: RaftConfig | None = None,
        window_size: int = WINDOW_SIZE,
    ) -> None:
        if window_size < 2:
            raise ValueError(f"window_size must be >= 2, got {window_size}")
        self.node_id = node_id
        self.window_size = window_size
        self.max_count = min(MAX_BATCH, window_size // 2)
        """Most timestamps one request may ask for (half a window: one extension serves it)."""
        self.raft = RaftNode(node_id, peers, rng, durable, raft_config or RaftConfig())
        self.applied_mark = 0
        """The highest mark applied here (snapshot or log)."""
        self._seen_through = 0
        """Raft's applied index when its last batch was taken: marks up to it are known."""
        self.alloc: Allocator | None = None
        self._pending: list[_Waiting] = []
        """Arrived after the barrier in flight started."""
        self._covered: list[_Waiting] = []
        """Covered by the barrier in flight."""
        self._confirmed: list[_Waiting] = []
        """Leadership confirmed after they arrived: served as the window allows."""
        self._barrier_ctx = 0
        self._barrier_in_flight = 0
        self._out: list[Send] = []
        self.served = 0
        """Timestamps handed out by this node (all terms)."""

    # -- node contract -------------------------------------------------------------------

    def step(self, msg: Message, from_id: int) -> None:
        """Client timestamp requests are queued here; everything else is Raft's."""
        if isinstance(msg, TsoRequest):
            self._on_request(msg, from_id)
            return
        if is_client(from_id) and from_id != INTERNAL_CLIENT:
            raise InvalidMessage(
                f"TSO node takes TsoRequest from clients, got {type(msg).__name__}"
            )
        self.raft.step(msg, from_id)
        self._drive()

    def tick(self) -> None:
        """Raft's tick, then the allocator's housekeeping."""
        self.raft.tick()
        self._drive()

    def has_ready(self) -> bool:
        return bool(self._out) or self.raft.has_ready()

    def ready(self) -> Ready:
        """Raft's batch minus the node's own barrier traffic, plus the timestamp replies."""
        batch = self.raft.ready()
        self._seen_through = self.raft.applied
        batch.apply = [item for item in batch.apply if self._observe(item)]
        sends = [s for s in batch.send if s.to != INTERNAL_CLIENT or self._barrier_reply(s)]
        batch.send = sends + self._out
        self._out = []
        return batch

    def advance(self, ready: Ready) -> None:
        """Raft's acknowledgement, then serve what became possible."""
        self.raft.advance(ready)
        self._drive()

    def status(self) -> dict[str, Any]:
        """Raft's status plus the allocator's."""
        status = self.raft.status()
        status["tso_mark"] = self.applied_mark
        if self.alloc is not None:
            status["tso_next"] = self.alloc.next_ts
            status["tso_limit"] = self.alloc.limit
        return status

    def clock_stalled(self, missed_ticks: int) -> None:
        """Passed on to Raft (its lease, if any, ends)."""
        self.raft.clock_stalled(missed_ticks)

    def snapshot_taken(self, index: int, data: bytes) -> None:
        """The runtime's answer to Raft's snapshot request."""
        self.raft.snapshot_taken(index, data)

    def invariants(self) -> list[str]:
        """Raft's invariants and the allocator's: it never passes its persisted mark."""
        problems = self.raft.invariants()
        alloc = self.alloc
        if alloc is not None and alloc.started and alloc.next_ts > alloc.limit + 1:
            problems.append(f"TSO next {alloc.next_ts} beyond limit {alloc.limit} + 1")
        if alloc is not None and alloc.limit > self.applied_mark:
            problems.append(f"TSO limit {alloc.limit} above the applied mark {self.applied_mark}")
        return problems

    # -- what Raft applied -----------------------------------------------------------------

    def _observe(self, item: Apply | Restore) -> bool:
        """Note marks and barriers in an applied item; False drops it from the batch."""
        if isinstance(item, Restore):
            self.applied_mark = max(self.applied_mark, decode_mark(item.data))
            return True
        if item.reply_to == INTERNAL_CLIENT:
            command = as_command(item.command)
            if isinstance(command, Barrier) and command.ctx == self._barrier_in_flight:
                self._barrier_in_flight = 0
                self._confirmed.extend(self._covered)
                self._covered = []
            return False
        command = as_command(item.command)
        if isinstance(command, SetHighWater):
            self.applied_mark = max(self.applied_mark, command.mark)
            alloc = self.alloc
            if alloc is not None and command.term == alloc.term and alloc.started:
                alloc.limit = max(alloc.limit, command.mark)
        return True

    def _barrier_reply(self, send: Send) -> bool:
        """Raft refused our barrier (not leader, busy): the covered requests fail."""
        msg = send.msg
        if (
            isinstance(msg, ClientReply)
            and not msg.ok
            and msg.request_id == self._barrier_in_flight
        ):
            self._barrier_in_flight = 0
            self._fail(self._covered, msg.error or "not_leader")
            self._covered = []
        return False

    # -- serving -----------------------------------------------------------------------------

    def _on_request(self, msg: TsoRequest, client: int) -> None:
        if not is_client(client) or client == INTERNAL_CLIENT:
            raise InvalidMessage(f"TsoRequest from non-client {client}")
        if not 1 <= msg.count <= self.max_count:
            error = f"count {msg.count} outside [1, {self.max_count}]"
            self._reply_error(client, msg.request_id, error)
            return
        if self.raft.role != LEADER:
            self._reply_error(client, msg.request_id, "not_leader")
            return
        if len(self._pending) + len(self._covered) + len(self._confirmed) >= MAX_WAITING:
            self._reply_error(client, msg.request_id, "busy")
            return
        self._pending.append(_Waiting(client, msg.request_id, msg.count))
        self._drive()

    def _drive(self) -> None:
        """Follow Raft's role; start the window, barriers and extensions; serve."""
        raft = self.raft
        if raft.role != LEADER:
            if self.alloc is not None or self._pending or self._covered or self._confirmed:
                self._step_down()
            return
        alloc = self.alloc
        if alloc is None or alloc.term != raft.term:
            if alloc is not None:
                self._step_down()
            alloc = self.alloc = Allocator(raft.term)
        if not alloc.started:
            self._maybe_start(alloc)
        if self._pending and not self._barrier_in_flight:
            self._start_barrier()
        self._serve(alloc)
        self._maybe_extend(alloc)

    def _maybe_start(self, alloc: Allocator) -> None:
        """Once every entry before our term is applied (and seen), propose our window."""
        if self._may_start():
            self._start_window(alloc)

    def _may_start(self) -> bool:
        """Whether an entry of our term is committed and everything up to it seen."""
        raft = self.raft
        return raft.log.term(raft.commit) == raft.term and self._seen_through >= raft.commit

    def _start_window(self, alloc: Allocator) -> None:
        """Propose the first window above the applied mark and serve from it."""
        base = self.applied_mark
        if self.raft.propose([SetHighWater(base + self.window_size, self.raft.term)]) == 0:
            return
        alloc.started = True
        alloc.next_ts = base + 1
        alloc.limit = base
        alloc.proposed = base + self.window_size

    def _maybe_extend(self, alloc: Allocator) -> None:
        """Propose the next window when less than half of the current one is left."""
        if not alloc.started or alloc.proposed > alloc.limit:
            return
        if alloc.available() >= self.window_size // 2:
            return
        mark = alloc.limit + self.window_size
        if self.raft.propose([SetHighWater(mark, alloc.term)]) != 0:
            alloc.proposed = mark

    def _start_barrier(self) -> None:
        self._barrier_ctx += 1
        self._barrier_in_flight = self._barrier_ctx
        self._covered, self._pending = self._pending, []
        request = ReadRequest(self._barrier_ctx, Barrier(self._barrier_ctx))
        self.raft.step(request, INTERNAL_CLIENT)

    def _serve(self, alloc: Allocator) -> None:
        served = 0
        for waiting in self._confirmed:
            if alloc.available() < waiting.count:
                break
            first = alloc.next_ts
            alloc.next_ts += waiting.count
            self.served += waiting.count
            self._out.append(
                Send(waiting.client, ClientReply(waiting.request_id, True, [first, waiting.count]))
            )
            served += 1
        if served:
            del self._confirmed[:served]

    def _step_down(self) -> None:
        self.alloc = None
        self._barrier_in_flight = 0
        self._fail(self._pending + self._covered + self._confirmed, "not_leader")
        self._pending, self._covered, self._confirmed = [], [], []

    def _fail(self, requests: list[_Waiting], error: str) -> None:
        for waiting in requests:
            self._reply_error(waiting.client, waiting.request_id, error)

    def _reply_error(self, client: int, request_id: int, error: str) -> None:
        leader = self.raft.leader
        hint = leader if leader > 0 and leader != self.node_id else None
        reply = ClientReply(request_id, False, leader_hint=hint, error=error)
        self._out.append(Send(client, reply))


def tso_node_factory(
    raft_config: RaftConfig | None = None, window_size: int = WINDOW_SIZE
) -> NodeFactory:
    """A node factory with the given Raft tuning and window."""

    def make_node(node_id: int, peers: tuple[int, ...], rng: Rng, durable: DurableState) -> TsoNode:
        return TsoNode(node_id, peers, rng, durable, raft_config, window_size)

    return make_node

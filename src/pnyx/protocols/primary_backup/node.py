"""Primary-backup replication: a view manager names the primary of each view; servers serve.

Follows the view-service design (Lampson's primary-backup with a configuration service;
the classic teaching version is the MIT 6.824 "viewservice"): node 1 is the view manager
(standing in for a Raft-backed configuration service), every other node is a server.

- Servers ping the manager every ``ping_ticks``; one silent for ``dead_ticks`` (or one
  that pings with view 0, i.e. restarted and lost its state) has failed.
- The manager moves from view v to v+1 only after the primary of view v acknowledged v
  (so no two primaries serve: the primary of v+1 was the backup of v, which rejects a
  stale primary's operations once it knows v+1).
- A new view with a backup starts with a state transfer; the primary acknowledges the
  view only when the backup installed it, so the manager never promotes a backup that
  lacks acknowledged writes.
- The primary forwards every operation (reads too) to the backup and applies and answers
  it only after the backup acknowledged it; a stale primary therefore cannot answer.
"""

from __future__ import annotations

from typing import Any

from pnyx.core import (
    ClientReply,
    DurableState,
    InvalidMessage,
    Message,
    Outbox,
    PutRecord,
    Rng,
    is_client,
)
from pnyx.protocols.primary_backup.messages import (
    NO_SERVER,
    Forward,
    ForwardAck,
    Ping,
    StateTransfer,
    TransferAck,
    View,
    ViewReply,
)
from pnyx.protocols.raft.kv import KvStateMachine
from pnyx.protocols.raft.messages import ClientRequest, ReadRequest

VIEW_MANAGER = 1
"""The node id of the view manager; servers are every other node."""

PING_TICKS = 2
DEAD_TICKS = 10
RETRANSMIT_TICKS = 4
MAX_PENDING_OPS = 256
"""Bound on operations the primary holds unacknowledged by its backup."""

VIEW_RECORD = "view"
"""Durable record of the view manager: ``[num, primary, backup, acked]``."""

STARTED_RECORD = "started"
"""Durable record of a server: it ran before (its volatile state was lost in a crash)."""

NOT_PRIMARY = "not_leader"
"""The error a non-primary answers with (the KV client's redirect error)."""


class ViewManager(Outbox):
    """The configuration service: decides views, one at a time, on the primary's ack."""

    def __init__(
        self,
        node_id: int,
        servers: tuple[int, ...],
        durable: DurableState,
        *,
        dead_ticks: int = DEAD_TICKS,
        skip_ack_rule: bool = False,
    ) -> None:
        super().__init__()
        self.node_id = node_id
        self.servers = servers
        self.dead_ticks = dead_ticks
        self.skip_ack_rule = skip_ack_rule
        num, primary, backup, acked = durable.records.get(VIEW_RECORD, (0, 0, 0, False))
        self.view = View(int(num), int(primary), int(backup))
        self.acked = bool(acked)
        self._now_ticks = 0
        self._last_ping: dict[int, int] = {}
        """server -> tick of its last ping (this incarnation's clock)."""

    def step(self, msg: Message, from_id: int) -> None:
        """Answer pings with the view; other messages (client requests) are redirected."""
        if isinstance(msg, Ping):
            self._on_ping(msg, from_id)
        elif is_client(from_id) and isinstance(msg, ClientRequest | ReadRequest):
            reply = ClientReply(msg.request_id, False, None, self.view.primary or None, NOT_PRIMARY)
            self._send(from_id, reply)
        else:
            raise InvalidMessage(f"view manager got {type(msg).__name__} from {from_id}")

    def tick(self) -> None:
        """Count time and change the view when a server of it failed."""
        self._now_ticks += 1
        self._maybe_change(restarted=NO_SERVER)

    def status(self) -> dict[str, Any]:
        """The current view, for health reports."""
        return {
            "role": "view-manager",
            "leader": self.view.primary,
            "term": self.view.num,
            "acked": self.acked,
        }

    def _on_ping(self, msg: Ping, from_id: int) -> None:
        if from_id not in self.servers:
            raise InvalidMessage(f"ping from {from_id}, not a server of {self.servers}")
        self._last_ping[from_id] = self._now_ticks
        view = self.view
        if from_id == view.primary and msg.ready_view == view.num and not self.acked:
            self._set(view, acked=True)
        restarted = from_id if msg.view_num == 0 else NO_SERVER
        self._maybe_change(restarted)
        self._send(from_id, ViewReply(self.view))

    def _alive(self, server: int, restarted: int) -> bool:
        last = self._last_ping.get(server)
        return server != restarted and last is not None and self._now_ticks - last < self.dead_ticks

    def _maybe_change(self, restarted: int) -> None:
        view = self.view
        if view.num > 0 and not self.acked and not self.skip_ack_rule:
            return
        primary_ok = view.primary != NO_SERVER and self._alive(view.primary, restarted)
        backup_ok = view.backup != NO_SERVER and self._alive(view.backup, restarted)
        if view.num == 0:
            idle = self._idle(restarted, ())
            if idle:
                self._set(View(1, idle[0], NO_SERVER), acked=False)
            return
        if not primary_ok:
            if not backup_ok:
                return  # both copies gone: no server holds the data; wait (unavailable)
            idle = self._idle(restarted, (view.backup,))
            self._set(View(view.num + 1, view.backup, idle[0] if idle else NO_SERVER), False)
        elif not backup_ok:
            idle = self._idle(restarted, (view.primary,))
            backup = idle[0] if idle else NO_SERVER
            if backup != view.backup:
                self._set(View(view.num + 1, view.primary, backup), acked=False)

    def _idle(self, restarted: int, taken: tuple[int, ...]) -> list[int]:
        return [s for s in self.servers if s not in taken and self._alive(s, restarted)]

    def _set(self, view: View, acked: bool) -> None:
        self.view = view
        self.acked = acked
        record = [view.num, view.primary, view.backup, acked]
        self._ready.persist.append(PutRecord(VIEW_RECORD, record))


class Server(Outbox):
    """A replica: primary, backup or idle in its current view.  State is volatile."""

    def __init__(
        self,
        node_id: int,
        manager: int,
        durable: DurableState,
        *,
        ping_ticks: int = PING_TICKS,
        retransmit_ticks: int = RETRANSMIT_TICKS,
        reply_early: bool = False,
    ) -> None:
        super().__init__()
        self.node_id = node_id
        self.manager = manager
        self.ping_ticks = ping_ticks
        self.retransmit_ticks = retransmit_ticks
        self.reply_early = reply_early
        self.view = View(0, NO_SERVER, NO_SERVER)
        self.restarted = STARTED_RECORD in durable.records
        """True after a crash: the state is gone, so it never starts the first view empty."""
        if not self.restarted:
            self._ready.persist.append(PutRecord(STARTED_RECORD, True))
        self.sm = KvStateMachine()
        self.applied_index = 0
        """Operations applied to ``sm`` (the same numbering on primary and backup)."""
        self.installed_view = 0
        """The view whose state this server holds as backup or primary (0: none yet)."""
        self.ready_view = 0
        """As primary: the view whose backup holds the whole state (acknowledged)."""
        self.replied_index = 0
        """Highest operation index answered to a client as primary."""
        self._pending: dict[int, tuple[int, int, Any]] = {}
        """index -> (client, request id, op), forwarded and awaiting the backup's ack."""
        self._acked_index = 0
        self._ticks = 0

    # -- node contract ------------------------------------------------------------------

    def step(self, msg: Message, from_id: int) -> None:
        """Handle a view, a peer's replication message or a client request."""
        if isinstance(msg, ViewReply):
            if from_id != self.manager:
                raise InvalidMessage(f"ViewReply from {from_id}, not the manager")
            self._on_view(msg.view)
        elif isinstance(msg, ClientRequest):
            self._on_client(from_id, msg.request_id, msg.command)
        elif isinstance(msg, ReadRequest):
            self._on_client(from_id, msg.request_id, msg.query)
        elif isinstance(msg, StateTransfer):
            self._on_transfer(msg, from_id)
        elif isinstance(msg, TransferAck):
            self._on_transfer_ack(msg, from_id)
        elif isinstance(msg, Forward):
            self._on_forward(msg, from_id)
        elif isinstance(msg, ForwardAck):
            self._on_forward_ack(msg, from_id)
        else:
            raise InvalidMessage(f"server got {type(msg).__name__} from {from_id}")

    def tick(self) -> None:
        """Ping the manager; as primary, resend what the backup has not acknowledged."""
        self._ticks += 1
        if self._ticks % self.ping_ticks == 0:
            self._send(self.manager, Ping(self.installed_view, self.ready_view))
        if self._ticks % self.retransmit_ticks == 0 and self.is_primary:
            self._retransmit()

    @property
    def is_primary(self) -> bool:
        """True when this server is the primary of the view it knows and holds its state."""
        view = self.view
        return view.primary == self.node_id and self.installed_view == view.num

    @property
    def serving(self) -> bool:
        """True when this server, as primary, accepts client operations."""
        return self.is_primary and self.ready_view == self.view.num

    def status(self) -> dict[str, Any]:
        """Role and progress, for health reports."""
        view = self.view
        role = "backup" if view.backup == self.node_id else "idle"
        if view.primary == self.node_id:
            role = "primary" if self.serving else "primary-pending"
        return {
            "role": role,
            "leader": view.primary,
            "term": view.num,
            "applied": self.applied_index,
        }

    def invariants(self) -> list[str]:
        """Broken local invariants (empty when all hold)."""
        problems = []
        if self.replied_index > self.applied_index:
            problems.append(f"replied {self.replied_index} > applied {self.applied_index}")
        if len(self._pending) > MAX_PENDING_OPS:
            problems.append(f"{len(self._pending)} pending ops > {MAX_PENDING_OPS}")
        return problems

    # -- views --------------------------------------------------------------------------

    def _on_view(self, view: View) -> None:
        if view.num <= self.view.num:
            return
        old = self.view
        self.view = view
        if view.primary != self.node_id:
            self._drop_pending()
            return
        held = self.installed_view == old.num and self.node_id in (old.primary, old.backup)
        if held and old.num > 0:
            self.installed_view = view.num  # promoted or kept: it holds the data
        elif view.num == 1 and not self.restarted:
            self.installed_view = 1  # the first view starts empty
        else:
            return  # named primary without the data: cannot happen with the ack rule
        self._drop_pending()
        if view.backup == NO_SERVER:
            self.ready_view = view.num
        else:
            self._send_transfer()

    def _send_transfer(self) -> None:
        image = self.sm.snapshot()
        self._send(self.view.backup, StateTransfer(self.view, self.applied_index, image))

    def _on_transfer(self, msg: StateTransfer, from_id: int) -> None:
        view = msg.view
        if view.backup != self.node_id or view.primary != from_id or view.num < self.view.num:
            return  # stale or misdirected: the sender learns the view from the manager
        if view.num > self.view.num:
            self.view = view
            self._drop_pending()
        if self.installed_view != view.num:
            sm = KvStateMachine()
            try:
                sm.restore(msg.image)
            except Exception as exc:  # a peer's bytes: refuse them, keep running
                raise InvalidMessage(f"StateTransfer image does not decode: {exc}") from exc
            self.sm = sm
            self.applied_index = msg.applied_index
            self.installed_view = view.num
        self._send(from_id, TransferAck(view.num))

    def _on_transfer_ack(self, msg: TransferAck, from_id: int) -> None:
        if self.is_primary and msg.view_num == self.view.num and from_id == self.view.backup:
            self.ready_view = self.view.num
            self._acked_index = self.applied_index

    # -- operations ---------------------------------------------------------------------

    def _on_client(self, client: int, request_id: int, op: Any) -> None:
        if not is_client(client):
            raise InvalidMessage(f"client request from node {client}")
        if not self.serving or len(self._pending) >= MAX_PENDING_OPS:
            hint = self.view.primary or None
            self._send(client, ClientReply(request_id, False, None, hint, NOT_PRIMARY))
            return
        index = self.applied_index + len(self._pending) + 1
        if self.view.backup == NO_SERVER:
            self._apply_and_reply(index, client, request_id, op)
            return
        if self.reply_early:  # broken on purpose: answers before the backup has it
            self._apply_and_reply(index, client, request_id, op)
            self._send(self.view.backup, Forward(self.view.num, index, op))
            return
        self._pending[index] = (client, request_id, op)
        self._send(self.view.backup, Forward(self.view.num, index, op))

    def _apply_and_reply(self, index: int, client: int, request_id: int, op: Any) -> None:
        if index != self.applied_index + 1:
            raise RuntimeError(f"apply of op {index} after {self.applied_index}")
        result = self.sm.apply(op)
        self.applied_index = index
        self.replied_index = index
        self._send(client, ClientReply(request_id, True, result))

    def _on_forward(self, msg: Forward, from_id: int) -> None:
        view = self.view
        if msg.view_num != view.num or view.backup != self.node_id or from_id != view.primary:
            return  # a stale primary: no ack, so it cannot answer its client
        if self.installed_view != view.num:
            return
        if msg.index == self.applied_index + 1:
            self.sm.apply(msg.op)
            self.applied_index = msg.index
        if msg.index <= self.applied_index:
            self._send(from_id, ForwardAck(view.num, self.applied_index))

    def _on_forward_ack(self, msg: ForwardAck, from_id: int) -> None:
        if not self.is_primary or msg.view_num != self.view.num or from_id != self.view.backup:
            return
        if self.reply_early:
            return
        while self.applied_index < msg.index and self.applied_index + 1 in self._pending:
            client, request_id, op = self._pending.pop(self.applied_index + 1)
            self._apply_and_reply(self.applied_index + 1, client, request_id, op)

    def _retransmit(self) -> None:
        if self.ready_view != self.view.num:
            if self.view.backup != NO_SERVER:
                self._send_transfer()
            return
        for index in sorted(self._pending)[:32]:
            self._send(self.view.backup, Forward(self.view.num, index, self._pending[index][2]))

    def _drop_pending(self) -> None:
        """Operations of an earlier view are abandoned (clients retry; sessions dedup)."""
        self._pending.clear()


def make_node(
    node_id: int,
    peers: tuple[int, ...],
    rng: Rng,
    durable: DurableState,
    *,
    reply_early: bool = False,
    skip_ack_rule: bool = False,
) -> ViewManager | Server:
    """Node 1 (``VIEW_MANAGER``) manages views; every other node is a server."""
    manager = min(peers)
    if node_id == manager:
        servers = tuple(p for p in peers if p != manager)
        return ViewManager(node_id, servers, durable, skip_ack_rule=skip_ack_rule)
    return Server(node_id, manager, durable, reply_early=reply_early)

"""A chain replication replica (van Renesse & Schneider, OSDI 2004), with CRAQ reads
(Terrace & Freedman, USENIX ATC 2009) as a mode.

Writes enter at the head, which applies them to its newest state, numbers them and
forwards the resulting value down the chain; the tail commits and answers the client, and
its commit point flows back up in :class:`Sync` messages.  Every replica keeps the versions
of a key newer than its known commit point (dirty) plus the newest committed one (clean).
Reads go to the tail (chain) or to any replica (CRAQ): a clean newest version is served
locally, a dirty one after asking the tail which version is committed.

A replica acts only while it holds a lease from the master (heartbeats answered within
``LEASE_TICKS``); the master removes a replica only after a longer silence, so a replica cut
off from the master stops serving before the chain is reconfigured without it.  A replica
has no durable data: one that restarts, or was removed, rejoins at the tail and receives the
whole state from its predecessor.
"""

from __future__ import annotations

from typing import Any

from pnyx.core import ClientReply, DurableState, Message, Outbox, PutRecord, is_client
from pnyx.protocols.chain.master import LEASE_TICKS, PING_TICKS
from pnyx.protocols.chain.messages import (
    ChainConfig,
    KvRequest,
    Ping,
    Snapshot,
    Sync,
    Update,
    VersionQuery,
    VersionReply,
)

SYNC_TICKS = 3
"""Ticks between two periodic :class:`Sync` messages to the predecessor (repairs losses)."""

WRITES = ("put", "append", "cas")
MAX_PENDING_QUERIES = 256
"""Bound on CRAQ reads waiting for the tail's answer at one replica."""
QUERY_EXPIRY_TICKS = 4 * LEASE_TICKS
"""A CRAQ read still waiting for the tail after this long is forgotten (its query or the
answer was lost; the client has retried).  Without it, lost queries would pile up in a
long-running process until every dirty read is refused as ``busy``."""


class ChainNode(Outbox):
    """One replica (implements :class:`pnyx.core.Node`).

    ``craq`` serves reads at every replica; ``dirty_reads`` is the deliberately broken CRAQ
    that serves a dirty version without asking the tail.
    """

    def __init__(
        self,
        node_id: int,
        master_id: int,
        initial_chain: tuple[int, ...],
        durable: DurableState,
        *,
        craq: bool = False,
        dirty_reads: bool = False,
    ) -> None:
        self.node_id = node_id
        self.master_id = master_id
        self.craq = craq
        self.dirty_reads = dirty_reads
        self.incarnation = int(durable.records.get("incarnation", 0)) + 1
        fresh = self.incarnation == 1
        self.epoch = 1 if fresh else 0
        self.members: tuple[tuple[int, int], ...] = (
            tuple((n, 1) for n in initial_chain) if fresh else ()
        )
        self.has_state = fresh and node_id in initial_chain
        self.last_seq = 0
        self.committed = 0
        self.versions: dict[str, list[tuple[int, Any]]] = {}
        self.last_writes: dict[int, tuple[int, int, Any]] = {}
        """client -> (request_id, seq, result) of its newest write."""
        self._pending: dict[int, Update] = {}
        """seq -> update not yet known committed (kept to resend to a new successor)."""
        self._queries: dict[int, tuple[int, int, str]] = {}
        self._query_ticks: dict[int, int] = {}
        """query id -> tick it was sent (insertion order: oldest first)."""
        self._next_query = 0
        self._now_ticks = 0
        self._lease_until = -1
        self._stalled_at_tick = -1
        """Heartbeats sent at or before this tick grant no lease (time was lost after them)."""
        super().__init__()
        self._ready.persist.append(PutRecord("incarnation", self.incarnation))

    # -- chain position -----------------------------------------------------------------

    @property
    def chain(self) -> tuple[int, ...]:
        """The replicas from head to tail, as this replica last heard from the master."""
        return tuple(n for n, _ in self.members)

    def _position(self) -> int:
        chain = self.chain
        return chain.index(self.node_id) if self.node_id in chain else -1

    def _predecessor(self) -> int | None:
        pos = self._position()
        return self.chain[pos - 1] if pos > 0 else None

    def _successor(self) -> int | None:
        pos = self._position()
        return self.chain[pos + 1] if 0 <= pos < len(self.chain) - 1 else None

    def is_head(self) -> bool:
        """True when this replica is the head of its current chain."""
        return self._position() == 0

    def is_tail(self) -> bool:
        """True when this replica is the tail of its current chain."""
        pos = self._position()
        return pos >= 0 and pos == len(self.chain) - 1

    def _active(self) -> bool:
        return self.has_state and self._position() >= 0 and self._now_ticks < self._lease_until

    def status(self) -> dict[str, object]:
        """Health report."""
        return {
            "role": self._role(),
            "epoch": self.epoch,
            "members": list(self.chain),
            "commit_index": self.committed,
            "has_state": self.has_state,
        }

    def _role(self) -> str:
        if self._position() < 0:
            return "outside"
        if not self.has_state:
            return "joining"
        return "head" if self.is_head() else ("tail" if self.is_tail() else "middle")

    def clock_stalled(self, missed_ticks: int) -> None:
        """Time was lost: the lease may have run out in real time, so end it, and ignore
        answers to heartbeats sent before the stall."""
        self._lease_until = -1
        self._stalled_at_tick = self._now_ticks

    # -- node contract ----------------------------------------------------------------------

    def step(self, msg: Message, from_id: int) -> None:
        """Dispatch one message."""
        if isinstance(msg, KvRequest):
            if is_client(from_id):
                self._on_request(msg, from_id)
        elif isinstance(msg, Update):
            self._on_update(msg, from_id)
        elif isinstance(msg, Sync):
            self._on_sync(msg, from_id)
        elif isinstance(msg, Snapshot):
            self._on_snapshot(msg, from_id)
        elif isinstance(msg, VersionQuery):
            self._on_version_query(msg, from_id)
        elif isinstance(msg, VersionReply):
            self._on_version_reply(msg)
        elif isinstance(msg, ChainConfig) and from_id == self.master_id:
            self._on_config(msg)

    def tick(self) -> None:
        """Heartbeat the master; periodically sync with the predecessor."""
        self._now_ticks += 1
        if self._now_ticks % PING_TICKS == 0:
            ping = Ping(self._now_ticks, self.incarnation, self.epoch, self.has_state)
            self._send(self.master_id, ping)
        if self._now_ticks % SYNC_TICKS == 0:
            self._sync_predecessor()
        self._expire_queries()

    def _expire_queries(self) -> None:
        for query_id, sent_tick in list(self._query_ticks.items()):
            if self._now_ticks - sent_tick < QUERY_EXPIRY_TICKS:
                return  # the rest are younger
            del self._query_ticks[query_id]
            self._queries.pop(query_id, None)

    # -- configuration ------------------------------------------------------------------------

    def _on_config(self, msg: ChainConfig) -> None:
        if msg.epoch > self.epoch:
            mine = dict(self.members).get(self.node_id)
            since = dict(msg.members).get(self.node_id)
            if since is not None and since != mine:
                self._wipe()  # added at the tail: the state comes from the predecessor
            self.epoch = msg.epoch
            self.members = msg.members
            self._queries.clear()
            self._query_ticks.clear()
            if self.is_tail() and self.has_state:
                self._commit_through(self.last_seq)
            self._sync_predecessor()
            self._resend_pending()
        fresh_echo = msg.echo_tick > self._stalled_at_tick
        if fresh_echo and msg.epoch == self.epoch and self._position() >= 0:
            self._lease_until = max(self._lease_until, msg.echo_tick + LEASE_TICKS)

    def _wipe(self) -> None:
        self.has_state = False
        self.last_seq = 0
        self.committed = 0
        self.versions = {}
        self.last_writes = {}
        self._pending = {}

    # -- writes -------------------------------------------------------------------------------

    def _on_request(self, msg: KvRequest, client: int) -> None:
        if msg.f == "get":
            self._on_read(msg, client)
            return
        if msg.f not in WRITES:
            self._send(client, ClientReply(msg.request_id, False, error=f"unknown op {msg.f!r}"))
            return
        if not (self.is_head() and self._active()):
            self._redirect(msg, client, self.chain[0] if self.chain else None)
            return
        seen = self.last_writes.get(client)
        if seen is not None and seen[0] >= msg.request_id:
            if seen[0] == msg.request_id and seen[1] <= self.committed:
                self._send(client, ClientReply(msg.request_id, True, seen[2]))
            return  # a retry still in the chain: the tail answers when it commits
        try:
            new_value, result = _compute(msg, self._newest(msg.key))
        except ValueError as err:
            self._send(client, ClientReply(msg.request_id, False, error=str(err)))
            return
        update = Update(
            self.epoch, self.last_seq + 1, client, msg.request_id, msg.key, new_value, result
        )
        self._accept(update)

    def _on_update(self, msg: Update, from_id: int) -> None:
        if msg.epoch != self.epoch or from_id != self._predecessor() or not self.has_state:
            return
        if msg.seq == self.last_seq + 1:
            self._accept(msg)

    def _accept(self, update: Update) -> None:
        self.last_seq = update.seq
        self.versions.setdefault(update.key, []).append((update.seq, update.new_value))
        self.last_writes[update.client] = (update.request_id, update.seq, update.result)
        self._pending[update.seq] = update
        successor = self._successor()
        if successor is not None:
            self._send(successor, _restamp(update, self.epoch))
        elif self.is_tail():
            self._send(update.client, ClientReply(update.request_id, True, update.result))
            self._commit_through(update.seq)
            self._sync_predecessor()

    def _commit_through(self, seq: int) -> None:
        if seq <= self.committed:
            return
        self.committed = min(seq, self.last_seq)
        for done in [s for s in self._pending if s <= self.committed]:
            key = self._pending.pop(done).key
            self._prune(key)

    def _prune(self, key: str) -> None:
        versions = self.versions.get(key, [])
        clean = [i for i, (seq, _) in enumerate(versions) if seq <= self.committed]
        if len(clean) > 1:
            del versions[: clean[-1]]

    def _sync_predecessor(self) -> None:
        pred = self._predecessor()
        if pred is not None:
            self._send(pred, Sync(self.epoch, self.last_seq, self.committed, self.has_state))

    def _on_sync(self, msg: Sync, from_id: int) -> None:
        if msg.epoch != self.epoch or from_id != self._successor() or not self.has_state:
            return
        if not msg.has_state:
            self._send(from_id, self._snapshot())
            return
        self._commit_through(msg.committed)
        self._resend_pending(after_seq=msg.last_seq)
        if self._predecessor() is not None and msg.committed > 0:
            self._sync_predecessor()

    def _resend_pending(self, after_seq: int = -1) -> None:
        successor = self._successor()
        if successor is None or not self.has_state:
            return
        for seq in sorted(self._pending):
            if seq > after_seq:
                self._send(successor, _restamp(self._pending[seq], self.epoch))

    def _snapshot(self) -> Snapshot:
        versions = {k: list(v) for k, v in self.versions.items()}
        writes = tuple((c, *self.last_writes[c]) for c in sorted(self.last_writes))
        return Snapshot(self.epoch, self.last_seq, self.committed, versions, writes)

    def _on_snapshot(self, msg: Snapshot, from_id: int) -> None:
        if msg.epoch != self.epoch or from_id != self._predecessor() or self.has_state:
            return
        self.has_state = True
        self.last_seq = msg.last_seq
        self.committed = msg.committed
        self.versions = {k: list(v) for k, v in msg.versions.items()}
        self.last_writes = {c: (rid, seq, result) for c, rid, seq, result in msg.last_writes}
        self._pending = {}
        if self.is_tail():
            self._commit_through(self.last_seq)
        self._sync_predecessor()

    # -- reads ----------------------------------------------------------------------------------

    def _on_read(self, msg: KvRequest, client: int) -> None:
        if not self._active() or not (self.craq or self.is_tail()):
            self._redirect(msg, client, self.chain[-1] if self.chain else None)
            return
        versions = self.versions.get(msg.key, [])
        newest = versions[-1] if versions else (0, "")
        if self.is_tail() or newest[0] <= self.committed or self.dirty_reads:
            self._send(client, ClientReply(msg.request_id, True, newest[1]))
            return
        if len(self._queries) >= MAX_PENDING_QUERIES:
            self._send(client, ClientReply(msg.request_id, False, error="busy"))
            return
        self._next_query += 1
        self._queries[self._next_query] = (client, msg.request_id, msg.key)
        self._query_ticks[self._next_query] = self._now_ticks
        self._send(self.chain[-1], VersionQuery(self.epoch, self._next_query, msg.key))

    def _on_version_query(self, msg: VersionQuery, from_id: int) -> None:
        if msg.epoch == self.epoch and self.is_tail() and self._active():
            versions = self.versions.get(msg.key, [])
            self._send(from_id, VersionReply(msg.query_id, versions[-1][0] if versions else 0))

    def _on_version_reply(self, msg: VersionReply) -> None:
        asked = self._queries.pop(msg.query_id, None)
        self._query_ticks.pop(msg.query_id, None)
        if asked is None or not self._active():
            return
        client, request_id, key = asked
        for seq, value in self.versions.get(key, []):
            if seq == msg.seq:
                self._send(client, ClientReply(request_id, True, value))
                return
        if msg.seq == 0 and all(seq > self.committed for seq, _ in self.versions.get(key, [])):
            self._send(client, ClientReply(request_id, True, ""))
            return
        self._send(client, ClientReply(request_id, False, error="version_gone"))

    def _newest(self, key: str) -> Any:
        versions = self.versions.get(key)
        return versions[-1][1] if versions else ""

    def _redirect(self, msg: KvRequest, client: int, hint: int | None) -> None:
        hint = hint if hint != self.node_id else None
        self._send(client, ClientReply(msg.request_id, False, None, hint, "not_serving"))


def _compute(msg: KvRequest, current: Any) -> tuple[Any, Any]:
    """The key's new value and the operation's result, computed by the head."""
    if msg.f == "put":
        return msg.value, None
    if msg.f == "append":
        return f"{current}{msg.value}", None
    expected, new = _cas_pair(msg.value)
    return (new, True) if current == expected else (current, False)


def _cas_pair(value: Any) -> tuple[Any, Any]:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ValueError(f"cas needs [expected, new], got {value!r}")
    return value[0], value[1]


def _restamp(update: Update, epoch: int) -> Update:
    if update.epoch == epoch:
        return update
    return Update(
        epoch,
        update.seq,
        update.client,
        update.request_id,
        update.key,
        update.new_value,
        update.result,
    )

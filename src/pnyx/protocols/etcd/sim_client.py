"""A simulated etcd client for ``pnyx sim etcd``: KV and txn operations, a lease, a watch.

Pure, like :class:`pnyx.protocols.raft.client.KvClient`: it follows the node contract and
talks to the nodes of :mod:`pnyx.protocols.etcd.spec` with Raft's client messages.

* **KV and txn** (one operation at a time, retried until answered, given up on after
  ``give_up_ticks``): writes travel in a session (``SessionCommand``) as a
  ``ClientRequest`` — Put, DeleteRange, a compare-and-put Txn (compare on the value, or on
  version 0 for "absent"), the same nested inside an always-true Txn, and a Txn putting
  two keys; reads are linearizable ``ReadRequest`` — a Range of one key, or a read-only
  Txn ranging over two keys.  Each is recorded per key for the ``kv`` model: Range →
  ``get``, Put → ``put``, DeleteRange → ``delete``, compare-and-put → ``cas``; a two-key
  Txn is recorded as one operation per key, each under a process of its own
  (:func:`kv_process`: one per client and key), so every key's history stays a history of
  one-at-a-time processes.  Only the keys of :data:`KV_KEYS` are written this way.
* **A lease** (``lease_grant``, ``lease_put``, ``lease_revoke`` operations, recorded under
  :func:`lease_process`): grant one with a TTL of ``lease_ttls_s``, attach keys of the
  client's own keyspace ``l/<client>/`` to it (nobody else writes them), keep it alive on a
  channel of its own (:func:`keep_alive_process`; etcd's keep-alive stream) every third
  of its TTL, and now and then let it lapse (stop the keep-alives) or revoke it.  A
  keep-alive is a ``ReadRequest`` carrying ``LeaseKeepAliveRequest``: the leader answers it
  after its ReadIndex round, so a deposed leader cannot.  Grant and keep-alive completions
  are recorded with the granted TTL: the monitor's lease check reads them.
* **Leadership transfers** (the admin client only, not recorded): now and then ask the
  leader to hand leadership to a node (etcd's MoveLeader), so leaders also change while
  everything is healthy — the moment a new leader's lessor must not forget the old
  leader's keep-alives.
* **Compactions** (with ``compactions=True``) now and then, at most a few revisions
  behind the latest the client saw.
* **A watch** over one key, the ``k/`` prefix, or every key, from revision 1 or from "now",
  on one node, with progress notifications.  The node's messages
  (:class:`WatchData`) are numbered per stream: a message out of sequence means the stream
  broke (a gRPC stream is ordered and loss-free until it fails), and the client re-creates
  the watch — on another node, from the revision after the last event it accepted (or
  after the last progress notification), as etcd's clients do.  It also re-creates it when
  the stream is silent too long (a crashed or cut-off node) and, now and then, for no
  reason.  When the watch is canceled because the history it needs was compacted, the
  client starts a new watch from the compact revision (etcd's clients get
  ``ErrCompacted`` and do the same).  Every accepted event is kept
  (:attr:`EtcdClient.watch_log`) for the monitor.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec

from pnyx.core import ClientReply, HistoryEvent, Message, Outbox, Quiesce, Record, Rng, Send
from pnyx.protocols.etcd.errors import ErrorResult
from pnyx.protocols.etcd.requests import (
    CompactionRequest,
    CompactionResponse,
    Compare,
    CompareResult,
    CompareTarget,
    DeleteRangeRequest,
    DeleteRangeResponse,
    Event,
    LeaseGrantRequest,
    LeaseGrantResponse,
    LeaseKeepAliveRequest,
    LeaseKeepAliveResponse,
    LeaseRevokeRequest,
    PutRequest,
    PutResponse,
    RangeRequest,
    RangeResponse,
    RequestOp,
    TxnRequest,
    TxnResponse,
    WatchResponse,
)
from pnyx.protocols.raft.messages import TRANSFER, AdminRequest, ClientRequest, ReadRequest
from pnyx.protocols.raft.sessions import OPEN_SESSION, SESSION_EXPIRED, SessionCommand

KV_KEYS: tuple[str, ...] = ("k/a", "k/b", "k/c")
"""The keys whose history is checked for linearizability (never attached to a lease)."""
KV_FUNCTIONS = frozenset({"get", "put", "delete", "cas"})
"""History functions of the ``kv`` model (other recorded functions are lease operations)."""
LEASE_PREFIX = "l/"

ALL_KEYS = (b"\0", b"\0")
"""etcd's "every key" range: key ``\\0`` with range end ``\\0``."""
WATCH_RANGES: tuple[tuple[bytes, bytes], ...] = (
    (b"k/a", b""),
    (b"k/b", b""),
    (b"k/", b"k0"),
    ALL_KEYS,
)
"""What a client may watch: one key, the ``k/`` prefix, or every key (leased keys too)."""

OP_WEIGHTS: tuple[tuple[str, int], ...] = (
    ("get", 22),
    ("put", 18),
    ("delete", 7),
    ("cas", 14),
    ("nested_cas", 6),
    ("multi_put", 8),
    ("multi_get", 8),
    ("lease", 17),
)
COMPACT_WEIGHT = 3
"""Weight of compactions among the operations when a client makes them."""


def kv_process(client_id: int, key_index: int) -> int:
    """History process of a client's operations on ``KV_KEYS[key_index]``."""
    return client_id * 10 + key_index


def lease_process(client_id: int) -> int:
    """History process of a client's lease grants, leased puts and revokes."""
    return client_id * 10 + 8


def keep_alive_process(client_id: int) -> int:
    """History process of a client's keep-alives (a channel of their own)."""
    return client_id * 10 + 9


# -- watch messages (client <-> node) ----------------------------------------------------------


class WatchOpen(Message, frozen=True):
    """Client → node: open a watch stream ``ref`` (numbered by the client) over etcd's range
    ``(key, range_end)`` from ``start_revision`` (0: from the node's next revision)."""

    ref: int
    key: bytes
    range_end: bytes
    start_revision: int


class WatchClose(Message, frozen=True):
    """Client → node: the client left stream ``ref`` (best effort)."""

    ref: int


class WatchData(Message, frozen=True):
    """Node → client: the next responses of stream ``ref``; ``seq`` counts messages of the
    stream from 0 (a gap or repeat means the stream broke)."""

    ref: int
    seq: int
    responses: tuple[WatchResponse, ...]


# -- the client ----------------------------------------------------------------------------------


@dataclass
class WatchRecord:
    """One logical watch of a client (it survives re-creations) and what it accepted."""

    key: bytes
    range_end: bytes
    start: int
    """First revision the watch covers (0 until the first stream of a watch "from now" is
    created: then the created response's revision + 1)."""
    events: list[Event] = field(default_factory=list)
    """Every event accepted, in the order accepted."""
    next_rev: int = 0
    """The revision a re-created stream starts from."""
    recreated: int = 0
    compacted: int = 0
    """The ``compact_revision`` of the response that canceled this watch (0: never)."""
    needed: int = 0
    """The revision the watch needed next when it was canceled as compacted."""


@dataclass
class _Op:
    kind: str
    """``session``, ``write``, ``read``, ``lease_grant``, ``lease_put``, ``lease_revoke``,
    ``keep_alive``."""
    message: Any
    request_id: int
    entries: list[tuple[int, str, str, Any]]
    """History entries: (process, f, key, invoke value); empty: not recorded."""
    decode: Any = None
    """result -> list of outputs per entry (for ``ok``), or None: the request failed."""
    age_ticks: int = 0
    silent_ticks: int = 0


class EtcdClient(Outbox):
    """Implements :class:`pnyx.core.Node` as a client process (id >= CLIENT_ID_BASE)."""

    def __init__(
        self,
        client_id: int,
        node_ids: tuple[int, ...],
        rng: Rng,
        *,
        retry_ticks: int = 8,
        give_up_ticks: int = 120,
        max_think_ticks: int = 3,
        tick_ms: int = 10,
        lease_ttls_s: tuple[int, ...] = (1, 2),
        lapse_p: float = 0.2,
        admin: bool = False,
        transfer_p: float = 0.15,
        compactions: bool = False,
        watch_silence_ticks: int = 40,
        watch_move_p: float = 0.005,
    ) -> None:
        assert node_ids, "a client needs at least one node"
        self.node_id = client_id
        self._nodes = node_ids
        self._rng = rng
        self._retry_ticks = retry_ticks
        self._give_up_ticks = give_up_ticks
        self._max_think_ticks = max_think_ticks
        self._tick_ms = tick_ms
        self._lease_ttls_s = lease_ttls_s
        self._lapse_p = lapse_p
        self._admin = admin
        self._transfer_p = transfer_p
        self._weights = OP_WEIGHTS + ((("compact", COMPACT_WEIGHT),) if compactions else ())
        self._watch_silence_ticks = watch_silence_ticks
        self._watch_move_p = watch_move_p
        self._target = _pick(rng, list(node_ids))
        self._session = 0
        self._seq = 0
        self._request_id = 0
        self._counter = 0
        self._op: _Op | None = None
        self._ka: _Op | None = None
        self._think_ticks = rng.randrange(0, max_think_ticks + 1)
        self._stopped = False
        self._last_seen: dict[str, str] = {}
        self._revision = 0
        """The highest store revision a response showed (compactions stay below it)."""
        # the lease
        self.lease_id = 0
        self._lease_ttl_s = 0
        self._lapsing = False
        self._ka_due_ticks = 0
        self._ka_target = self._target
        self._leased_keys = 0
        # the watch
        key, range_end = WATCH_RANGES[rng.randrange(0, len(WATCH_RANGES))]
        start = 1 if rng.random() < 0.5 else 0
        self.watch = WatchRecord(key, range_end, start, next_rev=start)
        self.watch_log = [self.watch]
        """Every logical watch of this client (the monitor checks each)."""
        self._watch_node = _pick(rng, list(node_ids))
        self._watch_ref = 0
        self._watch_seq = 0
        self._watch_silent = 0
        super().__init__()
        self._open_watch(self._watch_node)

    # -- node contract --------------------------------------------------------------------

    def step(self, msg: Message, from_id: int) -> None:
        if isinstance(msg, Quiesce):
            self._stopped = True
        elif isinstance(msg, ClientReply):
            op = self._op
            if op is not None and msg.request_id == op.request_id:
                self._on_reply(op, msg)
                return
            ka = self._ka
            if ka is not None and msg.request_id == ka.request_id:
                self._on_reply(ka, msg)
        elif isinstance(msg, WatchData):
            self._on_watch_data(msg)
        # anything else (a test harness's Steer, ...) is ignored

    def tick(self) -> None:
        self._tick_watch()
        self._tick_keep_alive()
        op = self._op
        if op is not None:
            self._age(op)
            return
        if self._stopped:
            return
        if self._think_ticks > 0:
            self._think_ticks -= 1
            return
        self._start()

    def _age(self, op: _Op) -> None:
        op.age_ticks += 1
        op.silent_ticks += 1
        if op.age_ticks >= self._give_up_ticks:
            self._finish(op, "info", None)
        elif op.silent_ticks >= self._retry_ticks:
            self._retarget(op)
            self._send_op(op)

    # -- operations -------------------------------------------------------------------------

    def _start(self) -> None:
        if self._session == 0:
            command = SessionCommand(0, 0, OPEN_SESSION)
            self._begin("session", ClientRequest(0, command), [], None)
            return
        rng = self._rng
        if self._admin and rng.random() < self._transfer_p:
            node = _pick(rng, list(self._nodes))
            self._begin("admin", AdminRequest(0, TRANSFER, node), [], lambda r: [])
            return
        kind = self._pick_kind()
        if kind == "lease":
            self._start_lease_op()
            return
        if kind == "compact":
            if self._revision > 4:
                compact = CompactionRequest(revision=self._revision - rng.randrange(0, 4))
                ok = (CompactionResponse,)
                self._begin(
                    "write", self._write(compact), [], lambda r: [] if type(r) in ok else None
                )
            return
        index = rng.randrange(0, len(KV_KEYS))
        key = KV_KEYS[index]
        bkey = key.encode()
        process = kv_process(self.node_id, index)
        token = self._token()
        if kind == "get":
            self._begin(
                "read",
                ReadRequest(0, RangeRequest(key=bkey)),
                [(process, "get", key, None)],
                lambda r: [_value_of(r)] if type(r) is RangeResponse else None,
            )
        elif kind == "put":
            self._begin(
                "write",
                self._write(PutRequest(key=bkey, value=token.encode())),
                [(process, "put", key, token)],
                lambda r: [None] if type(r) is PutResponse else None,
            )
        elif kind == "delete":
            self._begin(
                "write",
                self._write(DeleteRangeRequest(key=bkey)),
                [(process, "delete", key, None)],
                lambda r: [None] if type(r) is DeleteRangeResponse else None,
            )
        elif kind in ("cas", "nested_cas"):
            expected = self._last_seen.get(key, "") if rng.random() < 0.7 else ""
            txn = _cas_txn(bkey, expected, token)
            nested = kind == "nested_cas"
            if nested:
                txn = TxnRequest(success=[RequestOp(request_txn=txn)])
            self._begin(
                "write",
                self._write(txn),
                [(process, "cas", key, [expected, token])],
                lambda r: _cas_outcome(r, nested),
            )
        else:
            other = (index + 1 + rng.randrange(0, len(KV_KEYS) - 1)) % len(KV_KEYS)
            pair = [index, other]
            if kind == "multi_put":
                values = [f"{token}{KV_KEYS[i][-1]}" for i in pair]
                ops = [
                    RequestOp(request_put=PutRequest(key=KV_KEYS[i].encode(), value=v.encode()))
                    for i, v in zip(pair, values, strict=True)
                ]
                self._begin(
                    "write",
                    self._write(TxnRequest(success=ops)),
                    [
                        (kv_process(self.node_id, i), "put", KV_KEYS[i], v)
                        for i, v in zip(pair, values, strict=True)
                    ],
                    lambda r: [None, None] if type(r) is TxnResponse and r.succeeded else None,
                )
            else:
                ranges = [
                    RequestOp(request_range=RangeRequest(key=KV_KEYS[i].encode())) for i in pair
                ]
                self._begin(
                    "read",
                    ReadRequest(0, TxnRequest(success=ranges)),
                    [(kv_process(self.node_id, i), "get", KV_KEYS[i], None) for i in pair],
                    _multi_get_outcome,
                )

    def _start_lease_op(self) -> None:
        rng = self._rng
        process = lease_process(self.node_id)
        if self.lease_id == 0:
            ttl = self._lease_ttls_s[rng.randrange(0, len(self._lease_ttls_s))]
            self._begin(
                "lease_grant",
                self._write(LeaseGrantRequest(TTL=ttl)),
                [(process, "lease_grant", "", ttl)],
                lambda r: [[r.ID, r.TTL]] if type(r) is LeaseGrantResponse else None,
            )
        elif rng.random() < 0.08:
            lease = self.lease_id
            self._begin(
                "lease_revoke",
                self._write(LeaseRevokeRequest(ID=lease)),
                [(process, "lease_revoke", "", lease)],
                lambda r: None if isinstance(r, ErrorResult) else [None],
            )
        else:
            self._leased_keys = (self._leased_keys + 1) % 3
            key = f"{LEASE_PREFIX}{self.node_id}/{self._leased_keys}"
            token = self._token()
            lease = self.lease_id
            self._begin(
                "lease_put",
                self._write(PutRequest(key=key.encode(), value=token.encode(), lease=lease)),
                [(process, "lease_put", key, [lease, token])],
                lambda r: [None] if type(r) is PutResponse else None,
            )

    def _pick_kind(self) -> str:
        total = sum(w for _, w in self._weights)
        draw = self._rng.randrange(0, total)
        for kind, weight in self._weights:
            if draw < weight:
                return kind
            draw -= weight
        raise AssertionError("unreachable: weights cover the draw")

    def _token(self) -> str:
        self._counter += 1
        return f"{self.node_id % 1000}.{self._counter}"

    def _write(self, request: Any) -> ClientRequest:
        self._seq += 1
        return ClientRequest(0, SessionCommand(self._session, self._seq, request))

    def _begin(
        self, kind: str, message: Any, entries: list[tuple[int, str, str, Any]], decode: Any
    ) -> None:
        self._op = self._new_op(kind, message, entries, decode)
        self._send_op(self._op)

    def _new_op(
        self, kind: str, message: Any, entries: list[tuple[int, str, str, Any]], decode: Any
    ) -> _Op:
        self._request_id += 1
        rid = self._request_id
        message = _with_request_id(message, rid)
        for process, f, key, value in entries:
            self._record(HistoryEvent(process, "invoke", f, value, key))
        return _Op(kind, message, rid, entries, decode)

    def _record(self, event: HistoryEvent) -> None:
        self._ready.record.append(Record(event))

    def _send_op(self, op: _Op) -> None:
        op.silent_ticks = 0
        target = self._ka_target if op.kind == "keep_alive" else self._target
        self._ready.send.append(Send(target, op.message))

    def _retarget(self, op: _Op, hint: int | None = None) -> None:
        if op.kind == "keep_alive":
            self._ka_target = hint if hint else self._other_node(self._ka_target)
        else:
            self._target = hint if hint else self._other_node(self._target)

    def _other_node(self, current: int) -> int:
        others = [n for n in self._nodes if n != current] or list(self._nodes)
        node: int = _pick(self._rng, others)
        return node

    def _on_reply(self, op: _Op, reply: ClientReply) -> None:
        if op.kind == "admin" and not reply.ok and reply.error != "not_leader":
            self._finish(op, "fail", None)  # refused (e.g. not a voter, caught up): done
            return
        if not reply.ok:
            hint = reply.leader_hint
            current = self._ka_target if op.kind == "keep_alive" else self._target
            if hint and hint != current:
                self._retarget(op, hint)
                self._send_op(op)
            elif hint:
                pass  # a late answer of an earlier attempt: already asking that leader
            else:
                op.silent_ticks = self._retry_ticks - 1  # another node on the next tick
                self._retarget(op)
            return
        result = reply.result
        if isinstance(result, ErrorResult) and op.kind in ("read", "keep_alive"):
            # a keep-alive or read that reached a node that is not (or no longer) leader
            # answers *not leader*: ask another node on the next tick
            op.silent_ticks = self._retry_ticks - 1
            self._retarget(op)
            return
        if result == SESSION_EXPIRED:
            self._session = 0
            self._finish(op, "info", None)
            return
        if op.kind == "session":
            assert isinstance(result, int), f"open_session answered {result!r}"
            self._session = result
            self._seq = 0
            self._finish(op, "ok", None)
            return
        header = getattr(result, "header", None)
        if header is not None:
            self._revision = max(self._revision, header.revision)
        outputs = op.decode(result)
        if outputs is None:
            self._finish(op, "fail", result)
        else:
            self._finish(op, "ok", outputs)

    def _finish(self, op: _Op, outcome: str, outputs: Any) -> None:
        for i, (process, f, key, value) in enumerate(op.entries):
            out = outputs[i] if outcome == "ok" else value
            self._record(HistoryEvent(process, outcome, f, out, key))  # type: ignore[arg-type]
        if outcome == "ok":
            self._remember(op, outputs)
        elif op.kind == "lease_put" and outcome == "fail":
            self._forget_lease()  # the lease is gone (expired or revoked)
        if op.kind == "keep_alive":
            self._ka = None
            self._ka_due_ticks = self._ka_interval() if outcome == "ok" else 1
            return
        self._op = None
        self._think_ticks = self._rng.randrange(0, self._max_think_ticks + 1)

    def _remember(self, op: _Op, outputs: Any) -> None:
        for i, (_, f, key, value) in enumerate(op.entries):
            if f == "get":
                self._last_seen[key] = outputs[i]
            elif f == "put":
                self._last_seen[key] = value
            elif f == "cas" and outputs[i] is True:
                self._last_seen[key] = value[1]
            elif f == "lease_grant":
                self.lease_id, self._lease_ttl_s = outputs[i]
                self._lapsing = self._rng.random() < self._lapse_p
                self._ka_due_ticks = self._ka_interval()
            elif f == "lease_revoke" or (f == "keep_alive" and outputs[i] <= 0):
                self._forget_lease()

    def _forget_lease(self) -> None:
        self.lease_id = 0
        self._lease_ttl_s = 0

    # -- keep-alive channel ------------------------------------------------------------------

    def _ka_interval(self) -> int:
        return max(1, self._lease_ttl_s * 1000 // self._tick_ms // 3)

    def _tick_keep_alive(self) -> None:
        ka = self._ka
        if ka is not None:
            ka.age_ticks += 1
            ka.silent_ticks += 1
            if ka.age_ticks >= 3 * self._ka_interval():
                self._finish(ka, "info", None)  # as long as the TTL: the next one goes out
                self._ka_target = self._other_node(self._ka_target)
            elif ka.silent_ticks >= min(self._retry_ticks, max(2, self._ka_interval() // 2)):
                self._retarget(ka)
                self._send_op(ka)
            return
        if self.lease_id == 0 or self._lapsing or self._stopped:
            return
        self._ka_due_ticks -= 1
        if self._ka_due_ticks > 0:
            return
        lease = self.lease_id
        self._ka = self._new_op(
            "keep_alive",
            ReadRequest(0, LeaseKeepAliveRequest(ID=lease)),
            [(keep_alive_process(self.node_id), "keep_alive", "", lease)],
            lambda r: [r.TTL] if type(r) is LeaseKeepAliveResponse else None,
        )
        self._send_op(self._ka)

    # -- the watch ------------------------------------------------------------------------------

    def _open_watch(self, node: int) -> None:
        if self._watch_ref:
            self._ready.send.append(Send(self._watch_node, WatchClose(self._watch_ref)))
        self._watch_ref += 1
        self._watch_seq = 0
        self._watch_silent = 0
        self._watch_node = node
        w = self.watch
        if self._watch_ref > 1:
            w.recreated += 1
        msg = WatchOpen(self._watch_ref, w.key, w.range_end, w.next_rev)
        self._ready.send.append(Send(node, msg))

    def _tick_watch(self) -> None:
        self._watch_silent += 1
        moving = not self._stopped and self._rng.random() < self._watch_move_p
        if moving or self._watch_silent >= self._watch_silence_ticks:
            self._open_watch(self._other_node(self._watch_node))

    def _on_watch_data(self, msg: WatchData) -> None:
        if msg.ref != self._watch_ref:
            return  # an old stream
        if msg.seq != self._watch_seq:
            self._open_watch(self._other_node(self._watch_node))  # the stream broke
            return
        self._watch_seq += 1
        self._watch_silent = 0
        w = self.watch
        for response in msg.responses:
            if response.canceled and response.compact_revision > 0:
                # the history this watch needs is compacted away: as etcd's clients, start
                # a new watch from the compact revision (what came before it is lost)
                w.compacted, w.needed = response.compact_revision, w.next_rev
                compacted = response.compact_revision
                self.watch = WatchRecord(w.key, w.range_end, compacted, next_rev=compacted)
                self.watch_log.append(self.watch)
                self._open_watch(self._other_node(self._watch_node))
                return
            if response.canceled:
                self._open_watch(self._other_node(self._watch_node))
                return
            if response.created:
                if w.start == 0:
                    w.start = w.next_rev = response.header.revision + 1
                continue
            if w.start == 0:
                continue  # cannot happen: created comes first
            if not response.events:
                # a progress notification: every event up to its revision was sent
                w.next_rev = max(w.next_rev, response.header.revision + 1)
                continue
            for event in response.events:
                w.events.append(event)
                if event.kv is not None:
                    w.next_rev = max(w.next_rev, event.kv.mod_revision + 1)


def _pick(rng: Rng, items: list[Any]) -> Any:
    return items[rng.randrange(0, len(items))]


def _with_request_id(message: Any, request_id: int) -> Any:
    if isinstance(message, ClientRequest):
        return ClientRequest(request_id, message.command)
    if isinstance(message, AdminRequest):
        return msgspec.structs.replace(message, request_id=request_id)
    assert isinstance(message, ReadRequest)
    return ReadRequest(request_id, message.query)


def _cas_txn(key: bytes, expected: str, new: str) -> TxnRequest:
    """Put ``new`` if the value is ``expected`` ("" = absent: version 0)."""
    if expected:
        compare = Compare(
            result=CompareResult.EQUAL,
            target=CompareTarget.VALUE,
            key=key,
            value=expected.encode(),
        )
    else:
        compare = Compare(result=CompareResult.EQUAL, target=CompareTarget.VERSION, key=key)
    put = RequestOp(request_put=PutRequest(key=key, value=new.encode()))
    return TxnRequest(compare=[compare], success=[put])


def _cas_outcome(result: Any, nested: bool) -> list[Any] | None:
    if type(result) is not TxnResponse:
        return None
    if not nested:
        return [result.succeeded]
    inner = result.responses[0].response_txn if result.responses else None
    return None if inner is None else [inner.succeeded]


def _multi_get_outcome(result: Any) -> list[Any] | None:
    if type(result) is not TxnResponse or not result.succeeded:
        return None
    values = []
    for response in result.responses:
        if response.response_range is None:
            return None
        values.append(_value_of(response.response_range))
    return values


def _value_of(response: RangeResponse) -> str:
    return response.kvs[0].value.decode() if response.kvs else ""

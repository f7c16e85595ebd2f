"""A simulated KV client of a Raft group: one operation at a time, retried until answered.

Writes travel in a session (opened first, reopened after expiry) with a sequence number,
so a retry after a timeout or a leader change is applied at most once.  Reads are
linearizable ReadIndex reads.  Every KV operation is recorded as a history event pair for
the linearizability checker; an operation given up on is recorded ``info``.  The admin
client (``admin=True``) also issues membership changes and leadership transfers now and
then (not recorded: they are not KV operations).

A test harness may steer a client (:class:`Steer`), as a Jepsen generator binds operations
to nodes and alternates busy and quiet phases: hold off new operations for a while, or run
given operations at given nodes next.  Steered operations are recorded like any other.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from pnyx.core import ClientReply, HistoryEvent, Message, Outbox, Quiesce, Record, Rng, Send
from pnyx.protocols.raft.kv import (
    APPEND,
    CAS,
    DELETE,
    GET,
    OPEN_SESSION,
    PUT,
    Command,
    KvOp,
)
from pnyx.protocols.raft.messages import (
    ADD_LEARNER,
    PROMOTE,
    REMOVE,
    REPLACE,
    TRANSFER,
    AdminRequest,
    ClientRequest,
    ConfigData,
    ReadRequest,
)

KEYS = ("a", "b", "c")
OP_WEIGHTS: tuple[tuple[str, int], ...] = (
    (GET, 30),
    (PUT, 25),
    (APPEND, 20),
    (CAS, 15),
    (DELETE, 10),
)


MAX_STEERED_OPS = 8
"""Steered operations a client queues at most (later ones are ignored)."""


class Steer(Message, frozen=True):
    """From a test harness to a client: start no new operation for ``idle_ticks``; then run
    ``ops`` — (node, f, key) with f ``get`` or ``put`` — one after another, each sent first
    to its node (retries may go elsewhere), before any random operation."""

    idle_ticks: int = 0
    ops: tuple[tuple[int, str, str], ...] = ()


class _Op:
    """The operation in flight."""

    __slots__ = ("age_ticks", "f", "history_value", "key", "kv", "request_id", "silent_ticks")

    def __init__(self, f: str, key: str | None, kv: Any, history_value: Any, request_id: int):
        self.f = f
        self.key = key
        self.kv = kv
        self.history_value = history_value
        self.request_id = request_id
        self.age_ticks = 0
        self.silent_ticks = 0


class KvClient(Outbox):
    """Implements :class:`pnyx.core.Node` as a client process (id >= CLIENT_ID_BASE)."""

    def __init__(
        self,
        client_id: int,
        node_ids: tuple[int, ...],
        rng: Rng,
        admin: bool = False,
        retry_ticks: int = 8,
        give_up_ticks: int = 120,
        max_think_ticks: int = 3,
        admin_probability: float = 0.35,
        min_voters: int = 3,
    ) -> None:
        assert node_ids, "a client needs at least one node"
        self.node_id = client_id
        self._nodes = node_ids
        self._rng = rng
        self._admin = admin
        self._retry_ticks = retry_ticks
        self._give_up_ticks = give_up_ticks
        self._max_think_ticks = max_think_ticks
        self._admin_probability = admin_probability
        self._min_voters = min_voters
        self._target = node_ids[rng.randrange(0, len(node_ids))]
        self._session = 0
        self._seq = 0
        self._request_id = 0
        self._counter = 0
        self._op: _Op | None = None
        self._think_ticks = rng.randrange(0, max_think_ticks + 1)
        self._stopped = False
        self._last_seen: dict[str, Any] = {}
        self._config: ConfigData | None = None
        self._idle_ticks = 0
        self._steered: deque[tuple[int, str, str]] = deque()
        super().__init__()

    # -- node contract --------------------------------------------------------------------

    def step(self, msg: Message, from_id: int) -> None:
        if isinstance(msg, Quiesce):
            self._stopped = True
        elif isinstance(msg, Steer):
            self._steer(msg)
        elif isinstance(msg, ClientReply):
            op = self._op
            if op is not None and msg.request_id == op.request_id:
                self._on_reply(op, msg)

    def tick(self) -> None:
        op = self._op
        if op is not None:
            op.age_ticks += 1
            op.silent_ticks += 1
            if op.age_ticks >= self._give_up_ticks:
                self._finish(op, "info", None)
            elif op.silent_ticks >= self._retry_ticks:
                self._retry(op, self._other_node())
            return
        if self._stopped:
            return
        if self._idle_ticks > 0:
            self._idle_ticks -= 1
            return
        if self._think_ticks > 0 and not (self._steered and self._session):
            self._think_ticks -= 1
            return
        self._start()

    def _steer(self, msg: Steer) -> None:
        self._idle_ticks = msg.idle_ticks  # the latest steer decides
        for node, f, key in msg.ops:
            if len(self._steered) < MAX_STEERED_OPS and f in (GET, PUT) and node in self._nodes:
                self._steered.append((node, f, key))
        self._start_steered()

    def _start_steered(self) -> None:
        """Start the next steered operation now, if the client is free to."""
        free = self._op is None and self._session and not self._stopped
        if self._steered and free and self._idle_ticks == 0:
            self._start()

    # -- operations -------------------------------------------------------------------------

    def _start(self) -> None:
        rng = self._rng
        if self._session == 0:
            self._begin("open_session", None, Command(0, 0, OPEN_SESSION), None)
            return
        if self._steered:
            node, f, key = self._steered.popleft()
            self._target = node
            self._start_kv(f, key)
            return
        if self._admin and rng.random() < self._admin_probability:
            self._begin("admin", None, self._pick_admin(), None)
            return
        self._start_kv(self._pick_kind(), KEYS[rng.randrange(0, len(KEYS))])

    def _start_kv(self, kind: str, key: str) -> None:
        rng = self._rng
        self._counter += 1
        token = f"{self.node_id % 1000}.{self._counter}"
        if kind == GET:
            self._begin(GET, key, KvOp(GET, key), None)
        elif kind == PUT:
            self._begin(PUT, key, self._write(KvOp(PUT, key, token)), token)
        elif kind == APPEND:
            self._begin(APPEND, key, self._write(KvOp(APPEND, key, token + ";")), token + ";")
        elif kind == CAS:
            expected = self._last_seen.get(key, "") if rng.random() < 0.7 else ""
            cas = KvOp(CAS, key, token, expected)
            self._begin(CAS, key, self._write(cas), [expected, token])
        else:
            self._begin(DELETE, key, self._write(KvOp(DELETE, key)), None)

    def _pick_admin(self) -> tuple[str, int, int]:
        """A membership change that is likely valid for the configuration last reported."""
        rng = self._rng
        conf = self._config
        voters = list(conf.voters) if conf else list(self._nodes)
        learners = list(conf.learners) if conf else []
        outgoing = [n for n in conf.outgoing if n not in voters] if conf else []
        others = [n for n in self._nodes if n not in voters + outgoing and n not in learners]
        # Transfers may name any voter, an outgoing-only one of a joint configuration too
        # (the leader must refuse that one): admins make mistakes.
        choices: list[tuple[str, int, int]] = [(TRANSFER, _pick(rng, voters + outgoing), 0)]
        if others:
            choices.append((ADD_LEARNER, _pick(rng, others), 0))
        if learners:
            choices.append((PROMOTE, _pick(rng, learners), 0))
            choices.append((REPLACE, _pick(rng, voters), _pick(rng, learners)))
            choices.append((REMOVE, _pick(rng, learners), 0))
        if len(voters) > self._min_voters:
            choices.append((REMOVE, _pick(rng, voters), 0))
        choice: tuple[str, int, int] = _pick(rng, choices)
        return choice

    def _pick_kind(self) -> str:
        total = sum(w for _, w in OP_WEIGHTS)
        draw = self._rng.randrange(0, total)
        for kind, weight in OP_WEIGHTS:
            if draw < weight:
                return kind
            draw -= weight
        raise AssertionError("unreachable: weights cover the draw")

    def _write(self, op: KvOp) -> Command:
        self._seq += 1
        return Command(self._session, self._seq, op)

    def _begin(self, f: str, key: str | None, kv: Any, history_value: Any) -> None:
        self._request_id += 1
        op = _Op(f, key, kv, history_value, self._request_id)
        self._op = op
        if key is not None:
            event = HistoryEvent(self.node_id, "invoke", f, history_value, key)
            self._ready.record.append(Record(event))
        self._retry(op, self._target)

    def _retry(self, op: _Op, target: int) -> None:
        self._target = target
        op.silent_ticks = 0
        if op.f == "admin":
            action, node, other = op.kv
            msg: Message = AdminRequest(op.request_id, action, node, self._min_voters, other)
        elif op.f == GET:
            msg = ReadRequest(op.request_id, op.kv)
        else:
            msg = ClientRequest(op.request_id, op.kv)
        self._ready.send.append(Send(target, msg))

    def _other_node(self) -> int:
        others = [n for n in self._nodes if n != self._target] or list(self._nodes)
        return others[self._rng.randrange(0, len(others))]

    def _on_reply(self, op: _Op, reply: ClientReply) -> None:
        if op.f == "admin" and isinstance(reply.result, ConfigData):
            self._config = reply.result
        if not reply.ok:
            if op.f == "admin" and reply.error not in ("not_leader", "busy"):
                self._finish(op, "fail", None)  # refused: e.g. not caught up yet
                return
            hint = reply.leader_hint
            if hint and hint != self._target:
                self._retry(op, hint)
            else:
                op.silent_ticks = self._retry_ticks - 1  # try another node on the next tick
                self._target = self._other_node()
            return
        result = reply.result
        if isinstance(result, dict) and result.get("error") == "session_expired":
            self._session = 0
            self._finish(op, "info", None)
            return
        if op.f == "open_session":
            assert isinstance(result, int), f"open_session answered {result!r}"
            self._session = result
            self._seq = 0
        self._finish(op, "ok", result)

    def _finish(self, op: _Op, outcome: str, result: Any) -> None:
        if op.key is not None:
            value = result
            if outcome == "ok":
                self._remember(op, result)
            else:
                value = op.history_value
            event = HistoryEvent(self.node_id, outcome, op.f, value, op.key)  # type: ignore[arg-type]
            self._ready.record.append(Record(event))
        self._op = None
        self._think_ticks = self._rng.randrange(0, self._max_think_ticks + 1)
        self._start_steered()

    def _remember(self, op: _Op, result: Any) -> None:
        key = op.key
        assert key is not None
        if op.f == GET:
            self._last_seen[key] = result
        elif op.f == PUT:
            self._last_seen[key] = op.history_value
        elif op.f == CAS and result is True:
            self._last_seen[key] = op.history_value[1]


def _pick(rng: Rng, items: list[Any]) -> Any:
    return items[rng.randrange(0, len(items))]

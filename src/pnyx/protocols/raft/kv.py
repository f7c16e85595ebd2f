"""The replicated key-value state machine, with client sessions for exactly-once writes.

Commands are :class:`Command` (session id + sequence number + :class:`KvOp`); reads served
by ReadIndex are bare :class:`KvOp` ``get`` queries.  Sessions follow Ongaro's thesis §6.3:
a session is opened by a command of its own (its id is assigned by the state machine, so
ids are never reused), a retried command returns the cached reply instead of running
twice, and sessions expire deterministically (idle for too many commands, or evicted
least-recently-used when too many are open) — every replica expires the same ones.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import msgspec

GET = "get"
PUT = "put"
APPEND = "append"
CAS = "cas"
DELETE = "delete"
OPEN_SESSION = "open_session"

ABSENT = ""
"""What ``get`` returns for a missing key (the ``kv`` model's initial value)."""

SESSION_EXPIRED = {"error": "session_expired"}
"""Result of a command whose session is unknown: the client must open a new one."""
STALE_COMMAND = {"error": "stale"}
"""Result of a command older than its session's latest (nobody waits for it)."""


class KvOp(msgspec.Struct, frozen=True, array_like=True):
    """One key-value operation.  ``cas`` swaps ``expected`` for ``value``."""

    kind: str
    key: str = ""
    value: Any = None
    expected: Any = None


class Command(msgspec.Struct, frozen=True, array_like=True):
    """A write as it travels through the log: which session, which sequence number, what."""

    session: int
    seq: int
    op: KvOp


def decode_command(raw: Any) -> KvOp | Command:
    """A command or query that crossed a wire untyped (an array): which struct is it?

    A ``KvOp`` starts with its kind (a string), a ``Command`` with its session (an int).
    """
    if isinstance(raw, (list, tuple)) and raw and isinstance(raw[0], str):
        return msgspec.convert(raw, KvOp)
    return msgspec.convert(raw, Command)


class _Session:
    __slots__ = ("last_seq", "last_used", "reply")

    def __init__(self, last_used: int) -> None:
        self.last_seq = 0
        self.reply: Any = None
        self.last_used = last_used


class _Image(msgspec.Struct, array_like=True):
    data: list[tuple[str, Any]]
    sessions: list[tuple[int, int, Any, int]]
    next_session: int
    clock: int


class KvStateMachine:
    """get / put / append / cas / delete over string keys (implements ``StateMachine``)."""

    def __init__(
        self,
        session_idle_commands: int = 100_000,
        max_sessions: int = 1024,
        dedup: bool = True,
    ) -> None:
        assert max_sessions >= 1 and session_idle_commands >= 1
        self.session_idle_commands = session_idle_commands
        self.max_sessions = max_sessions
        self.dedup = dedup
        self.data: dict[str, Any] = {}
        self.sessions: OrderedDict[int, _Session] = OrderedDict()
        self.next_session = 1
        self.clock = 0
        """Commands applied so far: the deterministic clock sessions expire by."""

    def apply(self, command: Any) -> Any:
        if type(command) is not KvOp and type(command) is not Command:
            command = decode_command(command)
        if type(command) is KvOp:
            assert command.kind == GET, f"only get may be a bare query, not {command.kind!r}"
            return self.data.get(command.key, ABSENT)
        self.clock += 1
        if command.op.kind == OPEN_SESSION:
            return self._open_session()
        session = self.sessions.get(command.session)
        if session is None:
            return SESSION_EXPIRED
        if self.dedup and command.seq <= session.last_seq:
            return session.reply if command.seq == session.last_seq else STALE_COMMAND
        result = self._execute(command.op)
        session.last_seq = command.seq
        session.reply = result
        session.last_used = self.clock
        self.sessions.move_to_end(command.session)
        self._expire()
        return result

    def _open_session(self) -> int:
        session_id = self.next_session
        self.next_session += 1
        self.sessions[session_id] = _Session(self.clock)
        self._expire()
        return session_id

    def _expire(self) -> None:
        sessions = self.sessions
        horizon = self.clock - self.session_idle_commands
        while sessions:
            oldest_id = next(iter(sessions))
            oldest = sessions[oldest_id]
            if len(sessions) > self.max_sessions or oldest.last_used < horizon:
                del sessions[oldest_id]
            else:
                break

    def _execute(self, op: KvOp) -> Any:
        data = self.data
        kind = op.kind
        if kind == GET:
            return data.get(op.key, ABSENT)
        if kind == PUT:
            data[op.key] = op.value
            return None
        if kind == APPEND:
            data[op.key] = data.get(op.key, ABSENT) + op.value
            return None
        if kind == CAS:
            if data.get(op.key, ABSENT) != op.expected:
                return False
            data[op.key] = op.value
            return True
        if kind == DELETE:
            return data.pop(op.key, None) is not None
        return {"error": f"unknown operation {kind!r}"}

    def snapshot(self) -> bytes:
        image = _Image(
            sorted(self.data.items()),
            [(sid, s.last_seq, s.reply, s.last_used) for sid, s in self.sessions.items()],
            self.next_session,
            self.clock,
        )
        return msgspec.msgpack.encode(image)

    def restore(self, data: bytes) -> None:
        image = msgspec.msgpack.decode(data, type=_Image)
        self.data = dict(image.data)
        self.sessions = OrderedDict()
        for sid, last_seq, reply, last_used in image.sessions:
            session = _Session(last_used)
            session.last_seq = last_seq
            session.reply = reply
            self.sessions[sid] = session
        self.next_session = image.next_session
        self.clock = image.clock

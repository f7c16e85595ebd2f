"""Client sessions for exactly-once commands over any replicated state machine.

Ongaro's thesis §6.3: a session is opened by a command of its own (ids come from the
state machine, so they are never reused); a command carries (session, seq); a retried
command returns the cached reply instead of running twice; sessions expire
deterministically — idle for too many commands, or least-recently-used beyond a bound —
so every replica expires the same ones.  :class:`SessionStateMachine` wraps any
:class:`pnyx.core.StateMachine`: commands reach the inner machine at most once, bare
queries (reads) go straight to it.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import msgspec

from pnyx.core import StateMachine

OPEN_SESSION = "open_session"
"""The ``op`` of a command that opens a session (its result is the new session id)."""

SESSION_EXPIRED = {"error": "session_expired"}
"""Result of a command whose session is unknown: it was not applied; open a new session."""
STALE_COMMAND = {"error": "stale"}
"""Result of a command older than its session's latest (nobody waits for it)."""


class SessionCommand(msgspec.Struct, frozen=True, array_like=True):
    """A write as it travels through the log: which session, which sequence number, what."""

    session: int
    seq: int
    op: Any


class _Session:
    __slots__ = ("last_seq", "last_used", "reply")

    def __init__(self, last_used: int) -> None:
        self.last_seq = 0
        self.reply: Any = None
        self.last_used = last_used


class _Image(msgspec.Struct, array_like=True):
    inner: bytes
    sessions: list[tuple[int, int, Any, int]]
    next_session: int
    clock: int


class SessionStateMachine:
    """Exactly-once wrapper (implements :class:`pnyx.core.StateMachine`).

    ``apply`` takes a :class:`SessionCommand` (or its untyped array form after a wire),
    whose ``op`` is handed to ``inner.apply``; anything else is a read-only query for
    ``inner``.  ``dedup=False`` is a deliberately broken variant (tests only).
    """

    def __init__(
        self,
        inner: StateMachine,
        *,
        session_idle_commands: int = 100_000,
        max_sessions: int = 1024,
        dedup: bool = True,
    ) -> None:
        assert max_sessions >= 1 and session_idle_commands >= 1
        self.inner = inner
        self.session_idle_commands = session_idle_commands
        self.max_sessions = max_sessions
        self.dedup = dedup
        self.sessions: OrderedDict[int, _Session] = OrderedDict()
        self.next_session = 1
        self.clock = 0
        """Commands applied so far: the deterministic clock sessions expire by."""

    def apply(self, command: Any) -> Any:
        if type(command) is not SessionCommand:
            if not _is_command_array(command):
                return self.inner.apply(command)
            command = msgspec.convert(command, SessionCommand)
        self.clock += 1
        if command.op == OPEN_SESSION:
            return self._open_session()
        session = self.sessions.get(command.session)
        if session is None:
            return SESSION_EXPIRED
        if self.dedup and command.seq <= session.last_seq:
            return session.reply if command.seq == session.last_seq else STALE_COMMAND
        result = self.inner.apply(command.op)
        session.last_seq = command.seq
        session.reply = result
        session.last_used = self.clock
        self.sessions.move_to_end(command.session)
        self._expire()
        return result

    def snapshot(self) -> bytes:
        image = _Image(
            self.inner.snapshot(),
            [(sid, s.last_seq, s.reply, s.last_used) for sid, s in self.sessions.items()],
            self.next_session,
            self.clock,
        )
        return msgspec.msgpack.encode(image)

    def restore(self, data: bytes) -> None:
        image = msgspec.msgpack.decode(data, type=_Image)
        self.inner.restore(image.inner)
        self.sessions = OrderedDict()
        for sid, last_seq, reply, last_used in image.sessions:
            session = _Session(last_used)
            session.last_seq = last_seq
            session.reply = reply
            self.sessions[sid] = session
        self.next_session = image.next_session
        self.clock = image.clock

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
            if len(sessions) > self.max_sessions or sessions[oldest_id].last_used < horizon:
                del sessions[oldest_id]
            else:
                break


def _is_command_array(raw: Any) -> bool:
    """A SessionCommand that crossed a wire untyped: ``[session:int, seq:int, op]``."""
    return (
        isinstance(raw, (list, tuple))
        and len(raw) == 3
        and type(raw[0]) is int
        and type(raw[1]) is int
    )

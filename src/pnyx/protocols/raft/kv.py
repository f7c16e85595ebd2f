"""The replicated key-value state machine, with client sessions for exactly-once writes.

Writes are :class:`Command` (session id + sequence number + :class:`KvOp`), handled by the
generic :class:`~pnyx.protocols.raft.sessions.SessionStateMachine` (thesis §6.3: ids from
the state machine, cached replies for retries, deterministic expiry); reads served by
ReadIndex are bare :class:`KvOp` ``get`` queries.  :class:`KvStore` is the data itself.
"""

from __future__ import annotations

from typing import Any

import msgspec

from pnyx.protocols.raft.sessions import (
    OPEN_SESSION,
    SESSION_EXPIRED,
    STALE_COMMAND,
    SessionCommand,
    SessionStateMachine,
)

GET = "get"
PUT = "put"
APPEND = "append"
CAS = "cas"
DELETE = "delete"

ABSENT = ""
"""What ``get`` returns for a missing key (the ``kv`` model's initial value)."""

Command = SessionCommand
"""A KV write in a session: ``Command(session, seq, KvOp(...))``; ``Command(0, 0,
OPEN_SESSION)`` opens a session."""

__all__ = [
    "APPEND",
    "CAS",
    "DELETE",
    "GET",
    "OPEN_SESSION",
    "PUT",
    "SESSION_EXPIRED",
    "STALE_COMMAND",
    "Command",
    "KvOp",
    "KvStateMachine",
    "KvStore",
]


class KvOp(msgspec.Struct, frozen=True, array_like=True):
    """One key-value operation.  ``cas`` swaps ``expected`` for ``value``."""

    kind: str
    key: str = ""
    value: Any = None
    expected: Any = None


class _Image(msgspec.Struct, array_like=True):
    data: list[tuple[str, Any]]


class KvStore:
    """get / put / append / cas / delete over string keys (a :class:`StateMachine` without
    sessions; wrap it in :class:`SessionStateMachine` for exactly-once writes)."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    def apply(self, op: Any) -> Any:
        """Apply one operation.  A malformed one (a client's mistake that reached the log)
        gets an error result, the same on every replica, instead of raising."""
        if type(op) is not KvOp:
            try:
                op = msgspec.convert(op, KvOp)  # crossed a wire untyped
            except msgspec.ValidationError as exc:
                return {"error": f"malformed operation: {exc}"}
        if type(op.key) is not str:
            return {"error": f"key {op.key!r} is not a string"}
        data = self.data
        kind = op.kind
        if kind == GET:
            return data.get(op.key, ABSENT)
        if kind == PUT:
            data[op.key] = op.value
            return None
        if kind == APPEND:
            current = data.get(op.key, ABSENT)
            if type(current) is not str or type(op.value) is not str:
                return {"error": f"append needs strings, not {op.value!r} to {current!r}"}
            data[op.key] = current + op.value
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
        return msgspec.msgpack.encode(_Image(sorted(self.data.items())))

    def restore(self, data: bytes) -> None:
        self.data = dict(msgspec.msgpack.decode(data, type=_Image).data)


class KvStateMachine(SessionStateMachine):
    """The replicated KV store with client sessions (what a Raft KV node applies)."""

    def __init__(
        self,
        session_idle_commands: int = 100_000,
        max_sessions: int = 1024,
        dedup: bool = True,
    ) -> None:
        self.store = KvStore()
        super().__init__(
            self.store,
            session_idle_commands=session_idle_commands,
            max_sessions=max_sessions,
            dedup=dedup,
        )

    @property
    def data(self) -> dict[str, Any]:
        """The key-value data."""
        return self.store.data

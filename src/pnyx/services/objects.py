"""Ready-made replicated objects: dict, counter, lock with fencing tokens, FIFO queue.

Host one with :class:`pnyx.services.replicated.Replica`.  Their snapshots are msgspec
msgpack (no pickle), so they are safe to restore from any peer.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import msgspec

from pnyx.services.replicated import ReplicatedObject, query, replicated


class ReplicatedCounter(ReplicatedObject):
    """An integer counter.  ``value`` reads the local replica; ``get()`` is linearizable."""

    def __init__(self, initial: int = 0) -> None:
        self._count = initial

    @replicated
    def incr(self, by: int = 1) -> int:
        """Add ``by``; the new value."""
        self._count += by
        return self._count

    @replicated
    def decr(self, by: int = 1) -> int:
        """Subtract ``by``; the new value."""
        self._count -= by
        return self._count

    @replicated
    def reset(self, value: int = 0) -> int:
        """Set the counter to ``value``; the previous value."""
        previous, self._count = self._count, value
        return previous

    @query
    def get(self) -> int:
        """The value (linearizable when called; ``get.local()`` reads this replica)."""
        return self._count

    @property
    def value(self) -> int:
        """The value on this replica (may lag the leader)."""
        return self._count

    def dump_state(self) -> bytes:
        return msgspec.msgpack.encode(self._count)

    def load_state(self, data: bytes) -> None:
        self._count = msgspec.msgpack.decode(data, type=int)


class ReplicatedDict(ReplicatedObject):
    """A dict with str or int keys and msgpack-encodable values.

    Writes: ``set``, ``pop``, ``update``, ``clear``.  ``get`` is linearizable;
    ``d[key]``, ``key in d``, ``len(d)`` and ``items()`` read the local replica.
    """

    def __init__(self) -> None:
        self._data: dict[Any, Any] = {}

    @replicated
    def set(self, key: Any, value: Any) -> None:
        """Map ``key`` to ``value``."""
        self._data[key] = value

    @replicated
    def pop(self, key: Any, default: Any = None) -> Any:
        """Remove ``key``; its value, or ``default`` when absent."""
        return self._data.pop(key, default)

    @replicated
    def update(self, items: dict[Any, Any]) -> None:
        """Set every key of ``items`` (one log entry for all of them)."""
        self._data.update(items)

    @replicated
    def clear(self) -> int:
        """Remove every key; how many there were."""
        count = len(self._data)
        self._data.clear()
        return count

    @query
    def get(self, key: Any, default: Any = None) -> Any:
        """The value of ``key``, or ``default`` when absent."""
        return self._data.get(key, default)

    def __getitem__(self, key: Any) -> Any:
        return self._data[key]

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)

    def items(self) -> list[tuple[Any, Any]]:
        """A copy of this replica's items."""
        return list(self._data.items())

    def dump_state(self) -> bytes:
        return msgspec.msgpack.encode(self._data)

    def load_state(self, data: bytes) -> None:
        self._data = msgspec.msgpack.decode(data)


class _LockState(msgspec.Struct, array_like=True):
    owner: str | None
    token: int
    expires_ms: int
    last_token: int


class ReplicatedLock(ReplicatedObject):
    """A lease lock: ``acquire(owner, ttl_s)`` returns a fencing token, 0 when held by another.

    Tokens strictly increase across holders, so a resource that remembers the highest
    token it has seen can refuse a stale holder whose lease expired.  Leases run on the
    group's log time (:attr:`ReplicatedObject.log_time_s`); re-acquiring while holding
    renews the lease and keeps the token.
    """

    def __init__(self) -> None:
        self._state = _LockState(None, 0, 0, 0)

    @replicated
    def acquire(self, owner: str, ttl_s: float) -> int:
        """Take or renew the lock for ``ttl_s`` seconds; the fencing token, or 0 if held."""
        if not owner or ttl_s <= 0:
            raise ValueError(f"acquire needs an owner and ttl_s > 0, got {owner!r}, {ttl_s!r}")
        state = self._state
        now_ms = self._pnyx_log_time_ms
        expires_ms = now_ms + int(ttl_s * 1000)
        if state.owner is not None and state.expires_ms > now_ms:
            if state.owner != owner:
                return 0
            state.expires_ms = expires_ms  # renewal: same holder, same token
            return state.token
        state.last_token += 1
        state.owner, state.token, state.expires_ms = owner, state.last_token, expires_ms
        return state.token

    @replicated
    def release(self, owner: str, token: int) -> bool:
        """Release the lock if ``owner`` holds it with ``token``; True when released."""
        state = self._state
        live = state.owner is not None and state.expires_ms > self._pnyx_log_time_ms
        if not live or state.owner != owner or state.token != token:
            return False
        state.owner, state.expires_ms = None, 0
        return True

    @query
    def holder(self) -> list[Any] | None:
        """``[owner, token, expires_s]`` of the holder as of the last applied command, or None.

        Expiry is judged by log time, which moves only with applied commands.
        """
        state = self._state
        if state.owner is None or state.expires_ms <= self._pnyx_log_time_ms:
            return None
        return [state.owner, state.token, state.expires_ms / 1000.0]

    def dump_state(self) -> bytes:
        return msgspec.msgpack.encode(self._state)

    def load_state(self, data: bytes) -> None:
        self._state = msgspec.msgpack.decode(data, type=_LockState)


class ReplicatedQueue(ReplicatedObject):
    """A bounded FIFO queue of msgpack-encodable items."""

    def __init__(self, max_items: int = 100_000) -> None:
        assert max_items >= 1, f"max_items={max_items} must be at least 1"
        self.max_items = max_items
        self._items: deque[Any] = deque()

    @replicated
    def put(self, item: Any) -> bool:
        """Append ``item``; False (and nothing appended) when the queue holds ``max_items``."""
        if len(self._items) >= self.max_items:
            return False
        self._items.append(item)
        return True

    @replicated
    def get(self, default: Any = None) -> Any:
        """Remove and return the oldest item, or ``default`` when empty."""
        return self._items.popleft() if self._items else default

    @replicated
    def get_many(self, max_items: int) -> list[Any]:
        """Remove and return up to ``max_items`` oldest items, oldest first."""
        count = min(max_items, len(self._items))
        return [self._items.popleft() for _ in range(count)]

    @query
    def size(self) -> int:
        """How many items are queued (linearizable)."""
        return len(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def dump_state(self) -> bytes:
        return msgspec.msgpack.encode([self.max_items, list(self._items)])

    def load_state(self, data: bytes) -> None:
        max_items, items = msgspec.msgpack.decode(data)
        self.max_items, self._items = max_items, deque(items)


__all__ = ["ReplicatedCounter", "ReplicatedDict", "ReplicatedLock", "ReplicatedQueue"]

"""The multi-Raft KV as a real service (``pnyx cluster up --protocol multiraft``): the
routing client.

:class:`RangeClient` (asyncio) keeps one connection per process and a cached range map read
from the meta range (group 0, a replica on every process).  Each operation goes to the
range that owns its key, to that range's leader as far as the client knows (else one of
its replicas).  A refusal is definite and retried within the deadline:

- ``key_not_in_range`` / ``range_not_found``: the cached map is stale; it is read again
  (from the next process each time), then the operation is routed again;
- ``not_leader``: go to the hint (or the next replica); ``busy`` / ``transferring``: wait.

Writes are exactly once: a write is ``RangeWrite(client, op_seq, op)`` and every attempt of
one write carries the same ``op_seq``; ranges apply each (client, op_seq) at most once and a
split copies that table to both halves.  One write at a time per client (a lock), so the
numbers arrive in order.  A write attempt that timed out, lost its connection after being
sent, or was answered ``leadership_lost`` (its leader had appended it, then lost office: it
may still commit) raises :class:`Indeterminate` at once: it may or may not have taken
effect, and it is not retried (as the simulator's client does).  A read is retried after
a time-out.

:class:`SyncRangeClient` is a blocking facade (its loop runs in a thread).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import ssl as ssl_module
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from pnyx.core import ClientReply, Message
from pnyx.protocols.multiraft.machines import KEY_NOT_IN_RANGE, check_range_map
from pnyx.protocols.multiraft.messages import (
    CLIENT_MESSAGES,
    META_GROUP,
    GroupRequest,
    LeadersQuery,
    MetaQuery,
    RangeDesc,
    RangeWrite,
)
from pnyx.protocols.multiraft.node import LEADERSHIP_LOST
from pnyx.protocols.multiraft.runtime_def import KEY_ALPHABET, PREFIXES
from pnyx.protocols.raft.kv import APPEND, CAS, DELETE, GET, PUT, KvOp
from pnyx.protocols.raft.messages import (
    READ_LINEARIZABLE,
    READ_SERIALIZABLE,
    ClientRequest,
    ReadRequest,
)
from pnyx.runtime.client import FramedClient
from pnyx.runtime.framing import RemoteProtocolError
from pnyx.runtime.transport import Address
from pnyx.services.client import TASK_END_BOUND_S, LoopThread, client_identity, wait_cancelled

log = logging.getLogger("pnyx.multiraft.client")

STALE_ROUTE_ERRORS = frozenset({KEY_NOT_IN_RANGE, "range_not_found"})
WAIT_ERRORS = frozenset({"busy", "transferring"})
MAX_ATTEMPTS = 200
"""Attempts of one operation at most (besides the deadline)."""
BACKOFF_FIRST_S = 0.01
BACKOFF_MAX_S = 0.2
READ_IDLE_S = 1.0


class RangeError(Exception):
    """The operation was refused or found no route within the deadline: it did not happen
    (a read: no answer)."""


class Indeterminate(RangeError):
    """A write that may or may not have taken effect (time-out, connection lost after
    sending, ``leadership_lost``)."""


@dataclass(frozen=True)
class RangeInfo:
    """A range as ``pnyx kv ranges`` shows it: the meta range's descriptor and the process
    that leads it now (None: none claims it)."""

    desc: RangeDesc
    leader: int | None


def spread_key(n: int) -> str:
    """The ``n``-th key of pnyx's multi-Raft workloads: a two-character prefix of
    ``0-9a-z`` that consecutive ``n`` spread evenly over (the prefixes the initial split
    keys divide), then ``n`` itself, so keys are distinct."""
    index = (n * 7919) % PREFIXES  # 7919 is prime, coprime with 1296: a permutation
    high, low = divmod(index, len(KEY_ALPHABET))
    return f"{KEY_ALPHABET[high]}{KEY_ALPHABET[low]}{n:06d}"


class _Unsent(Exception):
    """The request never left: no connection (definite)."""


class _NoReply(Exception):
    """The request was sent; no reply came (time-out or lost connection)."""


class _Conn:
    """One connection to a process, replies handed to waiting futures."""

    def __init__(self, conn: FramedClient, member: int) -> None:
        self.conn = conn
        self.member = member
        self.waiting: dict[int, asyncio.Future[ClientReply]] = {}
        self.reader = asyncio.ensure_future(self._read())
        self.closed = False

    async def _read(self) -> None:
        try:
            while not self.closed:
                try:
                    reply = await self.conn.recv(READ_IDLE_S)
                except TimeoutError:
                    continue
                if isinstance(reply, ClientReply):
                    future = self.waiting.get(reply.request_id)
                    if future is not None and not future.done():
                        future.set_result(reply)
        except (OSError, RemoteProtocolError, ValueError, ConnectionError) as exc:
            log.info("connection_lost member=%d error=%r", self.member, exc)
        finally:
            self.closed = True
            for future in self.waiting.values():
                if not future.done():
                    future.set_exception(ConnectionError("connection closed"))

    async def close(self) -> None:
        self.closed = True
        self.reader.cancel()
        await self.conn.close()
        await wait_cancelled([self.reader], TASK_END_BOUND_S, "range client reader")


class RangeClient:
    """Asyncio routing client of a multi-Raft cluster; ``members`` maps process ids to
    addresses.  Concurrent reads share the connections; writes go one at a time."""

    def __init__(
        self,
        members: Mapping[int, Address],
        *,
        client_id: int | None = None,
        request_timeout_s: float = 2.0,
        deadline_s: float = 30.0,
        ssl: ssl_module.SSLContext | None = None,
    ) -> None:
        self.client_id = client_identity(members, client_id, request_timeout_s, deadline_s)
        self.members = dict(members)
        self.request_timeout_s = request_timeout_s
        self.deadline_s = deadline_s
        self._ssl = ssl
        self._order = sorted(self.members)
        self._conns: dict[int, _Conn] = {}
        self._connecting: dict[int, asyncio.Lock] = {}
        self._ids = itertools.count(1)
        self._op_seq = 0
        self._write_lock = asyncio.Lock()
        self._map: list[RangeDesc] = []
        self._leaders: dict[int, int] = {}
        self._next_meta = 0
        self._rotation = 0
        self._closed = False
        self.refreshes = 0
        """Times the range map was read from the meta range."""
        self.retries = 0
        """Attempts refused or unanswered and retried."""

    # -- the KV operations ---------------------------------------------------------------

    async def get(self, key: str, consistency: str = READ_LINEARIZABLE) -> Any:
        """The value of ``key`` ("" when absent); ``serializable``: from any replica."""
        if consistency not in (READ_LINEARIZABLE, READ_SERIALIZABLE):
            raise ValueError(f"consistency {consistency!r} is not linearizable/serializable")
        op = KvOp(GET, _checked_key(key))
        return await self._run(key, lambda rid: ReadRequest(rid, op, consistency), False)

    async def put(self, key: str, value: Any) -> None:
        """Set ``key`` to ``value``."""
        await self._write(KvOp(PUT, _checked_key(key), value))

    async def append(self, key: str, suffix: str) -> None:
        """Append ``suffix`` to the value of ``key``."""
        await self._write(KvOp(APPEND, _checked_key(key), suffix))

    async def cas(self, key: str, expected: Any, new: Any) -> bool:
        """Set ``key`` to ``new`` if it holds ``expected``; whether it did."""
        return bool(await self._write(KvOp(CAS, _checked_key(key), new, expected)))

    async def delete(self, key: str) -> bool:
        """Remove ``key``; whether it existed."""
        return bool(await self._write(KvOp(DELETE, _checked_key(key))))

    async def _write(self, op: KvOp) -> Any:
        async with self._write_lock:
            self._op_seq += 1
            write = RangeWrite(self.client_id, self._op_seq, op)
            return await self._run(op.key, lambda rid: ClientRequest(rid, write), True)

    # -- the range map ------------------------------------------------------------------

    async def refresh(self) -> list[RangeDesc]:
        """Read the range map again (from the next process in turn); returns it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.deadline_s
        problems: list[str] = []
        for _ in range(MAX_ATTEMPTS):
            if loop.time() >= deadline:
                break
            member = self._order[self._next_meta % len(self._order)]
            self._next_meta += 1
            query = ReadRequest(0, MetaQuery(), READ_SERIALIZABLE)
            try:
                reply = await self._call(member, META_GROUP, query, deadline)
            except (_Unsent, _NoReply) as exc:
                problems.append(f"member {member}: {exc}")
                await asyncio.sleep(BACKOFF_FIRST_S)
                continue
            ranges = _range_map(reply)
            if ranges is None:
                problems.append(f"member {member}: answered {reply.error or reply.result!r:.80}")
                continue
            self._map = ranges
            self.refreshes += 1
            return list(ranges)
        raise RangeError("no process gave a range map: " + "; ".join(problems[-len(self._order) :]))

    async def ranges(self) -> list[RangeInfo]:
        """The range map (freshly read) with the current leader of every range."""
        ranges = await self.refresh()
        claims: dict[int, tuple[int, int]] = {}
        replies = await asyncio.gather(
            *(self._leaders_of(m) for m in self._order), return_exceptions=True
        )
        for member, led in zip(self._order, replies, strict=True):
            if isinstance(led, BaseException):
                if not isinstance(led, Exception):
                    raise led
                continue
            for group, term in led:
                if group not in claims or term > claims[group][0]:
                    claims[group] = (term, member)
        return [
            RangeInfo(d, claims[d.range_id][1] if d.range_id in claims else None) for d in ranges
        ]

    async def _leaders_of(self, member: int) -> list[tuple[int, int]]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.request_timeout_s
        reply = await self._send(member, LeadersQuery(next(self._ids)), deadline)
        return [(int(g), int(t)) for g, t in reply.result]

    def _route(self, key: str) -> RangeDesc | None:
        for desc in self._map:
            if desc.contains(key):
                return desc
        return None

    def _pick(self, desc: RangeDesc) -> int:
        leader = self._leaders.get(desc.range_id)
        if leader is not None and leader in self.members:
            return leader
        known = [r for r in desc.replicas if r in self.members] or self._order
        self._rotation += 1
        return known[self._rotation % len(known)]

    # -- one operation ----------------------------------------------------------------------

    async def _run(
        self, key: str, build: Callable[[int], ClientRequest | ReadRequest], write: bool
    ) -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.deadline_s
        backoff = BACKOFF_FIRST_S
        last = "no attempt"
        for _ in range(MAX_ATTEMPTS):
            if loop.time() >= deadline:
                break
            desc = self._route(key)
            if desc is None:
                await self.refresh()
                desc = self._route(key)
                if desc is None:
                    raise RangeError(f"the range map covers no range for key {key!r}")
            member = self._pick(desc)
            try:
                reply = await self._call(member, desc.range_id, build(0), deadline)
            except _Unsent as exc:
                last = f"member {member}: {exc}"
                self._leaders.pop(desc.range_id, None)
                await asyncio.sleep(backoff)
                backoff = min(2 * backoff, BACKOFF_MAX_S)
                continue
            except _NoReply as exc:
                if write:
                    raise Indeterminate(f"write of {key!r} to member {member}: {exc}") from None
                last = f"member {member}: {exc}"
                self._leaders.pop(desc.range_id, None)
                continue
            if reply.ok:
                self._leaders[desc.range_id] = member
                return reply.result
            last = f"member {member} range {desc.range_id}: {reply.error}"
            if reply.error == LEADERSHIP_LOST and write:
                raise Indeterminate(f"write of {key!r}: {last}")
            if not await self._after_refusal(desc, member, reply, backoff):
                raise RangeError(f"{key!r}: {last}")
            backoff = min(2 * backoff, BACKOFF_MAX_S)
            self.retries += 1
        raise RangeError(f"{key!r}: no answer within {self.deadline_s} s (last: {last})")

    async def _after_refusal(
        self, desc: RangeDesc, member: int, reply: ClientReply, backoff_s: float
    ) -> bool:
        """Prepare the retry of a refused attempt; False when the refusal is final."""
        error = reply.error
        if error in STALE_ROUTE_ERRORS:
            self._leaders.pop(desc.range_id, None)
            await self.refresh()
            return True
        if error in ("not_leader", LEADERSHIP_LOST):
            hint = reply.leader_hint
            if hint is not None and hint > 0 and hint != member and hint in self.members:
                self._leaders[desc.range_id] = hint
            else:
                self._leaders.pop(desc.range_id, None)
                await asyncio.sleep(backoff_s)
            return True
        if error in WAIT_ERRORS:
            await asyncio.sleep(backoff_s)
            return True
        return False

    async def _call(
        self, member: int, group: int, request: ClientRequest | ReadRequest, deadline: float
    ) -> ClientReply:
        rid = next(self._ids)
        request = msgspec.structs.replace(request, request_id=rid)
        return await self._send(member, GroupRequest(group, request), deadline, rid)

    async def _send(
        self, member: int, msg: Message, deadline: float, rid: int | None = None
    ) -> ClientReply:
        """Send ``msg`` to ``member`` and wait for its reply (within one request time-out
        and the deadline).  Raises _Unsent or _NoReply."""
        if rid is None:
            rid = getattr(msg, "request_id", 0)
        loop = asyncio.get_running_loop()
        timeout_s = max(0.001, min(self.request_timeout_s, deadline - loop.time()))
        conn = await self._connection(member, timeout_s)
        future: asyncio.Future[ClientReply] = loop.create_future()
        conn.waiting[rid] = future
        try:
            try:
                await conn.conn.send(msg)
            except (OSError, ConnectionError) as exc:
                await self._drop(member, conn)
                raise _NoReply(f"send failed: {exc!r}") from None
            try:
                async with asyncio.timeout(timeout_s):
                    return await future
            except TimeoutError:
                raise _NoReply(f"no reply within {timeout_s:.1f} s") from None
            except ConnectionError as exc:
                await self._drop(member, conn)
                raise _NoReply(f"connection lost: {exc}") from None
        finally:
            conn.waiting.pop(rid, None)

    async def _connection(self, member: int, timeout_s: float) -> _Conn:
        if self._closed:
            raise _Unsent("the client is closed")
        lock = self._connecting.setdefault(member, asyncio.Lock())
        async with lock:
            conn = self._conns.get(member)
            if conn is not None and not conn.closed:
                return conn
            if conn is not None:
                await self._drop(member, conn)
            try:
                framed = await FramedClient.connect(
                    self.members[member],
                    CLIENT_MESSAGES,
                    client_id=self.client_id,
                    timeout_s=timeout_s,
                    ssl=self._ssl,
                )
            except (OSError, TimeoutError, RemoteProtocolError, ConnectionError) as exc:
                raise _Unsent(f"cannot connect: {exc!r}") from None
            conn = self._conns[member] = _Conn(framed, member)
            return conn

    async def _drop(self, member: int, conn: _Conn) -> None:
        if self._conns.get(member) is conn:
            del self._conns[member]
        await conn.close()

    async def close(self) -> None:
        """Close every connection; later operations fail with RangeError."""
        self._closed = True
        conns, self._conns = list(self._conns.values()), {}
        for conn in conns:
            with contextlib.suppress(OSError):
                await conn.close()


def _checked_key(key: Any) -> str:
    if type(key) is not str:
        raise TypeError(f"keys are strings, got {key!r}")
    return key


def _range_map(reply: ClientReply) -> list[RangeDesc] | None:
    """The range map a meta query answered, if it is a valid one."""
    if not reply.ok:
        return None
    try:
        ranges = list(msgspec.convert(reply.result, tuple[RangeDesc, ...]))
    except msgspec.ValidationError:
        return None
    if check_range_map(ranges):
        return None
    return sorted(ranges, key=lambda d: d.start)


class SyncRangeClient:
    """Blocking facade over :class:`RangeClient` (same options); its loop runs in a thread."""

    def __init__(self, members: Mapping[int, Address], **options: Any) -> None:
        self._loop = LoopThread("pnyx-multiraft-client")
        self._async: RangeClient = self._loop.run(_make(members, options))

    def get(self, key: str, consistency: str = READ_LINEARIZABLE) -> Any:
        """Blocking :meth:`RangeClient.get`."""
        return self._loop.run(self._async.get(key, consistency))

    def put(self, key: str, value: Any) -> None:
        """Blocking :meth:`RangeClient.put`."""
        self._loop.run(self._async.put(key, value))

    def append(self, key: str, suffix: str) -> None:
        """Blocking :meth:`RangeClient.append`."""
        self._loop.run(self._async.append(key, suffix))

    def cas(self, key: str, expected: Any, new: Any) -> bool:
        """Blocking :meth:`RangeClient.cas`."""
        return self._loop.run(self._async.cas(key, expected, new))

    def delete(self, key: str) -> bool:
        """Blocking :meth:`RangeClient.delete`."""
        return self._loop.run(self._async.delete(key))

    def ranges(self) -> list[RangeInfo]:
        """Blocking :meth:`RangeClient.ranges`."""
        return self._loop.run(self._async.ranges())

    def close(self) -> None:
        """Close the connections and stop the loop."""
        try:
            self._loop.run(self._async.close(), TASK_END_BOUND_S + 5.0)
        finally:
            self._loop.close()

    def __enter__(self) -> SyncRangeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def _make(members: Mapping[int, Address], options: dict[str, Any]) -> RangeClient:
    return RangeClient(members, **options)


__all__ = [
    "Indeterminate",
    "RangeClient",
    "RangeError",
    "RangeInfo",
    "SyncRangeClient",
    "spread_key",
]

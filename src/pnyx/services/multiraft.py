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
    MoveReplicaExplained,
    RangeBounds,
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
MOVE_POLL_S = 0.1
"""How often a replica move reads the range map while it waits for the move to show."""
MAX_MOVE_POLLS = 10_000


class RangeError(Exception):
    """The operation was refused or found no route within the deadline: it did not happen
    (a read: no answer)."""


class Indeterminate(RangeError):
    """A write that may or may not have taken effect (time-out, connection lost after
    sending, ``leadership_lost``)."""


class KeyOutsideRange(RangeError):
    """A command names a key outside the range that holds its route key (definite: it was
    not applied).  A caller that grouped keys by a map older than a split: :meth:`refresh
    <RangeClient.refresh>`, group again (:meth:`RangeClient.group_keys`) and send again."""


class MoveRefused(RangeError):
    """A replica move the cluster will not make (unknown range, the source is not a voter,
    the target already holds a replica or is no process, another move under way): nothing
    changed."""


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

    # -- commands of layers on top (e.g. transactions) ---------------------------------------

    async def command(self, route_key: str, command: Any, *, exactly_once: bool = False) -> Any:
        """Send ``command`` (a command type of the cluster's range machine, e.g. a
        transaction command of :mod:`pnyx.protocols.txn.messages`) to the range holding
        ``route_key`` and return its result as the range answered it (decoded from the
        wire, untyped).  Routing as for ``get``/``put``: the cached map, refreshed on a
        stale route; ``not_leader`` hints followed; all within ``deadline_s``.

        - ``exactly_once=False``: the command is sent bare and re-sent after a time-out:
          use it for idempotent commands (applying one twice has the effect of once).
        - ``exactly_once=True``: the command travels as ``RangeWrite(client, op_seq,
          command)``, one at a time per client like the KV writes; a time-out raises
          :class:`Indeterminate` (not re-sent).

        A refusal of the range (an ``{"error": ...}`` result other than a stale route) or
        no answer in time raises :class:`RangeError`.  The range's machine checks every key
        the command names against its bounds: ``route_key`` must be one of them, and a
        command naming a key of another range raises :class:`KeyOutsideRange` at once."""
        key = _checked_key(route_key)
        if not exactly_once:
            return await self._run(key, lambda rid: ClientRequest(rid, command), False)
        async with self._write_lock:
            self._op_seq += 1
            write = RangeWrite(self.client_id, self._op_seq, command)
            return await self._run(key, lambda rid: ClientRequest(rid, write), True)

    async def range_of(self, key: str) -> RangeDesc:
        """The range holding ``key`` in the cached map (read first if there is none yet).
        The map may be stale: :meth:`command` refreshes it when a range refuses a key."""
        return await self._route_or_refresh(_checked_key(key))

    async def _route_or_refresh(self, key: str) -> RangeDesc:
        """The cached range of ``key``, reading the map once more when it has none."""
        desc = self._route(key)
        if desc is None:
            await self.refresh()
            desc = self._route(key)
        if desc is None:
            raise RangeError(f"the range map covers no range for key {key!r}")
        return desc

    async def group_keys(self, keys: list[str]) -> list[list[str]]:
        """``keys`` (deduplicated, sorted) grouped by the range holding them in the cached
        map, in key order (e.g. one transaction command per group)."""
        by_range: dict[int, list[str]] = {}
        for key in sorted(set(keys)):
            desc = await self.range_of(key)
            by_range.setdefault(desc.range_id, []).append(key)
        return list(by_range.values())

    # -- replica moves ----------------------------------------------------------------------

    async def move_replica(
        self, range_id: int, source: int, target: int, *, wait_s: float = 60.0
    ) -> RangeDesc:
        """Move range ``range_id``'s replica from process ``source`` to process ``target``
        (membership change: the range's leader adds ``target`` as a learner, lets it catch
        up, then swaps it in for ``source`` in one joint-consensus change) and wait until
        the range map shows the new replica set at a higher ``conf_ver``; returns that
        descriptor.

        Raises :class:`MoveRefused` when the move is invalid (unknown range, the meta range,
        ``source`` not a voter, ``target`` already a replica or not a process, another move
        of the range under way), :class:`Indeterminate` when the leader started the move
        but the map does not show it within ``wait_s`` (it gives up a move that does not
        finish in its ``move_timeout_ticks``), :class:`RangeError` when no leader answered."""
        if min(range_id, source, target) < 0 or range_id == META_GROUP:
            raise MoveRefused(
                f"range {range_id} from {source} to {target}: the meta range (0) is never "
                "moved; range and process ids are positive"
            )
        if source == target:
            raise MoveRefused(f"range {range_id}: source and target are both process {source}")
        if target not in self.members:
            raise MoveRefused(
                f"process {target} is not a member of the cluster {sorted(self.members)}"
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        before = await self._find_range(range_id)
        if before is None:
            raise MoveRefused(f"unknown range {range_id}; ranges: {self._range_ids()}")
        move = _MoveState(range_id, source, target, before)
        await self._start_move(move, deadline)
        if move.done is not None:
            return move.done
        return await self._await_move(move, deadline)

    async def _find_range(self, range_id: int) -> RangeDesc | None:
        """Range ``range_id`` of a fresh map (maps of several processes: one may lag)."""
        for _ in range(len(self._order)):
            for desc in await self.refresh():
                if desc.range_id == range_id:
                    return desc
        return None

    def _range_ids(self) -> list[int]:
        return sorted(d.range_id for d in self._map)

    async def _start_move(self, move: _MoveState, deadline: float) -> None:
        """Have the range's leader start ``move`` (retries within the deadline)."""
        loop = asyncio.get_running_loop()
        backoff = BACKOFF_FIRST_S
        last = "no attempt"
        for _ in range(MAX_ATTEMPTS):
            if loop.time() >= deadline:
                break
            member = self._pick(move.desc)
            rid = next(self._ids)
            request = MoveReplicaExplained(rid, move.range_id, move.source, move.target)
            try:
                reply = await self._send(member, request, deadline, rid)
            except (_Unsent, _NoReply) as exc:
                move.maybe_started = move.maybe_started or isinstance(exc, _NoReply)
                last = f"member {member}: {exc}"
                self._leaders.pop(move.range_id, None)
                await asyncio.sleep(backoff)
                backoff = min(2 * backoff, BACKOFF_MAX_S)
                continue
            if reply.ok:
                self._leaders[move.range_id] = member
                return
            last = f"member {member}: {reply.error} {reply.result or ''}".strip()
            if not await self._after_move_refusal(move, member, reply, backoff):
                return
            backoff = min(2 * backoff, BACKOFF_MAX_S)
        raise RangeError(f"{move}: no leader started it within the deadline (last: {last})")

    async def _after_move_refusal(
        self, move: _MoveState, member: int, reply: ClientReply, backoff_s: float
    ) -> bool:
        """Prepare the next attempt after a refusal; False when the move is over (done by
        an earlier attempt, see ``move.done``).  Raises MoveRefused when it is refused."""
        error = reply.error
        if error == "not_leader":
            await self._follow_hint(move.range_id, member, reply.leader_hint, backoff_s)
            return True
        if error == "range_not_found":  # this member holds no replica: the map is stale
            self._leaders.pop(move.range_id, None)
            desc = await self._find_range(move.range_id)
            if desc is None:
                raise MoveRefused(f"unknown range {move.range_id}; ranges: {self._range_ids()}")
            move.desc = desc
            return True
        if error in WAIT_ERRORS:
            await asyncio.sleep(backoff_s)
            return True
        if move.maybe_started:  # an unanswered attempt may have done it already
            desc = await self._find_range(move.range_id)
            if desc is not None and move.shown_by(desc):
                move.done = desc
                return False
        reason = reply.result if isinstance(reply.result, str) else error
        raise MoveRefused(f"{move}: refused by process {member}: {reason}")

    async def _await_move(self, move: _MoveState, deadline: float) -> RangeDesc:
        """Poll the range map until it shows ``move`` done (or the deadline passes)."""
        loop = asyncio.get_running_loop()
        seen = move.desc
        for _ in range(MAX_MOVE_POLLS):
            desc = await self._find_range(move.range_id)
            if desc is not None:
                seen = desc
                if move.shown_by(desc):
                    return desc
            if loop.time() >= deadline:
                break
            await asyncio.sleep(MOVE_POLL_S)
        raise Indeterminate(
            f"{move}: started, but the range map does not show it (replicas "
            f"{list(seen.replicas)}, conf_ver {seen.conf_ver}); the leader gives up a move "
            "that does not finish in time or when it loses office: see `pnyx kv ranges`"
        )

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

    async def _follow_hint(
        self, range_id: int, member: int, hint: int | None, backoff_s: float
    ) -> None:
        """After ``not_leader`` from ``member``: try the hinted leader next, or, without a
        usable hint, forget the range's leader and back off."""
        if hint is not None and hint > 0 and hint != member and hint in self.members:
            self._leaders[range_id] = hint
        else:
            self._leaders.pop(range_id, None)
            await asyncio.sleep(backoff_s)

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
            desc = await self._route_or_refresh(key)
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
            if _names_other_keys(reply, key):
                raise KeyOutsideRange(
                    f"{key!r}: the command names a key outside range {desc.range_id}, which "
                    f"holds {key!r} ({last}: {reply.result})"
                )
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
            await self._follow_hint(desc.range_id, member, reply.leader_hint, backoff_s)
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


class _MoveState:
    """One replica move in progress at the client."""

    def __init__(self, range_id: int, source: int, target: int, desc: RangeDesc) -> None:
        self.range_id = range_id
        self.source = source
        self.target = target
        self.desc = desc
        """The range as the client knows it (to route the request)."""
        self.conf_ver = desc.conf_ver
        """The range's ``conf_ver`` before the move: the map must show a higher one."""
        self.maybe_started = False
        self.done: RangeDesc | None = None

    def shown_by(self, desc: RangeDesc) -> bool:
        """True when ``desc`` shows the move done: target in, source out, newer conf_ver."""
        return (
            self.target in desc.replicas
            and self.source not in desc.replicas
            and desc.conf_ver > self.conf_ver
        )

    def __str__(self) -> str:
        return f"move of range {self.range_id} from process {self.source} to {self.target}"


def _names_other_keys(reply: ClientReply, route_key: str) -> bool:
    """True when a ``key_not_in_range`` refusal came from a range whose bounds hold the
    route key: the map was right, the command names a key of another range (definite)."""
    if reply.error != KEY_NOT_IN_RANGE or reply.result is None:
        return False
    try:
        bounds = msgspec.convert(reply.result, RangeBounds)
    except msgspec.ValidationError:
        return False
    return bounds.contains(route_key)


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

    def command(self, route_key: str, command: Any, *, exactly_once: bool = False) -> Any:
        """Blocking :meth:`RangeClient.command`."""
        return self._loop.run(self._async.command(route_key, command, exactly_once=exactly_once))

    def move_replica(
        self, range_id: int, source: int, target: int, *, wait_s: float = 60.0
    ) -> RangeDesc:
        """Blocking :meth:`RangeClient.move_replica`."""
        move = self._async.move_replica(range_id, source, target, wait_s=wait_s)
        return self._loop.run(move, wait_s + self._async.deadline_s + 30.0)

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
    "KeyOutsideRange",
    "MoveRefused",
    "RangeClient",
    "RangeError",
    "RangeInfo",
    "SyncRangeClient",
    "spread_key",
]

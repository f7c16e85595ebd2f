"""Transactions on a real ``txn`` cluster (``pnyx cluster up --protocol txn``): the
coordinator as an asyncio client.

::

    store = TxnStore(members)
    async with store.transaction() as tx:
        balance = await tx.get("alice")
        tx.put("alice", balance - 5)
        tx.delete("old-key")
        pairs = await tx.scan("a", "b", limit=100)   # [(key, value), ...] in key order
    total = await store.run(transfer, retries=10)   # retries on TxnConflict

Snapshot isolation by Percolator's protocol (Peng & Dabek, OSDI 2010) over the ranges'
Raft logs (:mod:`pnyx.protocols.txn.mvcc` holds the columns and commands):

- **start**: the start timestamp from the store's allocator (``AllocTs`` on the reserved key
  ``!ts``, a command of the first range's log); concurrent callers share one request
  (:class:`TimestampBatcher`: one Raft commit serves every caller waiting meanwhile);
- **reads** at the start timestamp (a transaction sees its own buffered writes); a read
  blocked by another transaction's lock waits ``lock_wait_s``, then resolves the lock from
  its primary (``CheckTxnStatus`` with forced rollback; for an async-commit lock,
  ``CheckSecondaryLocks`` on all its keys) by rolling it forward or back, and reads again;
- **scans** at the start timestamp go range by range in key order (``Scan`` commands of
  :data:`SCAN_PAGE_ITEMS` values at most, each routed by the key it starts at, so a split
  met on the way refreshes the range map and the page is sent again), resolve the locks
  they meet as reads do, and merge the transaction's own writes;
- **writes** are buffered; at the end of the ``async with`` block the commit runs:

  - ``percolator`` (default): prewrite every range in parallel; take the commit
    timestamp; commit the primary (the commit point); then the secondaries (failures
    there are left to readers' lock resolution);
  - ``async-commit`` (TiKV): prewrite every range in parallel with ``min_commit_ts``; once
    all are durable the transaction is committed at the largest ``min_commit_ts``;
  - ``1pc``: async commit, and one committing prewrite when every key lies in one range;
  - ``2pc``: as ``percolator``, and every key the transaction read but did not write (its
    gets, and the keys its scans listed) gets a read lock in the prewrite (the prepare):
    the same conflict rules validate that nobody committed a write to it since the start
    timestamp, and the lock keeps writers off until the decision (the primary's commit
    record).  Update transactions are thus **serializable** at their commit timestamps,
    read-only ones (which commit nothing) at their snapshots; the other modes give
    snapshot isolation.  Scans lock the keys they listed, not the gaps: phantoms are not
    prevented.  Serializability holds among ``2pc`` transactions: a transaction of
    another mode writing meanwhile validates nothing it read.

A refused prewrite (another transaction's lock, a newer commit, a rollback record) rolls
the transaction's keys back and raises :class:`TxnConflict`; :meth:`TxnStore.run` retries
those with jittered exponential back-off.  A commit whose outcome is unknown (no answer
for the primary's commit, or for the rollback of an async transaction whose prewrites may
all have landed) raises :class:`TxnIndeterminate` and is never retried blindly.  Any other
failure raises :class:`TxnError`: the transaction did not commit.

The protocol itself is :mod:`pnyx.protocols.txn.coordinator` (sans I/O, the generators the
simulator's client runs too); this module is its asyncio driver: each effect becomes a
command through the ``RangeClient`` (``asyncio.gather`` for parallel ones), a timestamp
from :class:`TimestampBatcher`, an ``asyncio.sleep`` for a lock wait.

Routing: each command goes through :meth:`pnyx.services.multiraft.RangeClient.command`
(range map cache, refresh on a stale route, leader hints, retries of unanswered requests:
every transaction command is idempotent); a command whose keys a split put in two ranges
(``KeyOutsideRange``) is sent again key by key.  :class:`SyncTxnStore` is a blocking facade.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl as ssl_module
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterator, Mapping
from typing import Any, TypeVar

import msgspec

from pnyx.protocols.txn import coordinator as core
from pnyx.protocols.txn.messages import (
    MAX_ALLOC_COUNT,
    RESERVED_PREFIX,
    AllocTs,
    Prewrite,
    TxnCommand,
    command_keys,
)
from pnyx.protocols.txn.workloads import TS_KEY
from pnyx.runtime.transport import Address
from pnyx.services.client import TASK_END_BOUND_S, LoopThread, wait_cancelled
from pnyx.services.multiraft import KeyOutsideRange, RangeClient, RangeError

log = logging.getLogger("pnyx.txn.client")

PERCOLATOR = "percolator"
ASYNC_COMMIT = "async-commit"
ONE_PC = "1pc"
TWO_PC = "2pc"
MODES = (PERCOLATOR, ASYNC_COMMIT, ONE_PC, TWO_PC)
"""The commit modes: the first three give snapshot isolation, ``2pc`` serializability."""
MAX_LOCK_ROUNDS = 40
"""Locks one read may meet and resolve before the transaction gives up (TxnConflict)."""
BACKOFF_FIRST_S = 0.01
BACKOFF_MAX_S = 0.5
SCAN_PAGE_ITEMS = 256
"""Values one ``Scan`` command asks for at most (bounds an answer's size)."""
MAX_SCAN_PAGES = 100_000
"""Scan commands one :meth:`Transaction.scan` sends at most (each lists a value or
finishes a range; lock rounds are bounded apart)."""

MAX_EFFECTS = 1_000_000
"""Effects one coordinator generator may yield (a bound: each is a command or a wait)."""
_STAT_OF = {
    "reads_blocked": "locks_met",
    "scans_blocked": "locks_met",
    "resolutions": "lock_resolutions",
    "rolled_forward": "rolled_forward",
    "rolled_back": "rolled_back",
}
"""The coordinator's counters kept by :class:`TxnStats`, by name."""

T = TypeVar("T")


class TxnError(Exception):
    """The transaction did not commit (no answer in time, a refusal, bad input)."""


class TxnConflict(TxnError):
    """The transaction met another one (a lock it could not clear, a newer commit, a
    rollback by a reader) and was rolled back: it did not commit; retrying may succeed."""


class TxnIndeterminate(TxnError):
    """The transaction may or may not have committed (its commit point got no answer)."""


def check_key(key: Any) -> str:
    """``key`` if it is a usable key (a non-empty string not starting with ``!``)."""
    if type(key) is not str or not key:
        raise TxnError(f"keys are non-empty strings, got {key!r}")
    if key.startswith(RESERVED_PREFIX):
        raise TxnError(f"key {key!r}: keys starting with {RESERVED_PREFIX!r} are reserved")
    return key


def check_scan(start: Any, end: Any, limit: Any) -> tuple[str, str, int | None]:
    """``(start, end, limit)`` if they describe a scan: ``start`` a string ("" = from the
    first key), ``end`` "" (no upper bound) or a key above ``start``, ``limit`` None (all)
    or an int >= 1; TxnError naming the bad value otherwise."""
    for name, bound in (("start", start), ("end", end)):
        if type(bound) is not str:
            raise TxnError(f"scan {name} must be a string, got {bound!r}")
        if bound.startswith(RESERVED_PREFIX):
            raise TxnError(
                f"scan {name} {bound!r}: keys starting with {RESERVED_PREFIX!r} are reserved"
            )
    if end and end <= start:
        raise TxnError(f"scan end {end!r} must be above start {start!r} (or \"\": unbounded)")
    if limit is not None and (type(limit) is not int or limit < 1):
        raise TxnError(f"scan limit must be an int >= 1 or None, got {limit!r}")
    return start, end, limit


class _Router:
    """Sends one transaction command to the range holding its route key through a
    RangeClient's public API (:meth:`RangeClient.command`: its routing, refreshes and
    retries; requests unanswered are sent again: every transaction command is
    idempotent)."""

    def __init__(self, client: RangeClient) -> None:
        self.client = client

    async def call(self, command: TxnCommand, route_key: str) -> Any:
        """The command's result as the range answered it (decoded from the wire); raises
        _Split when it names keys of two ranges (a split since it was grouped), _NoAnswer
        when no answer came."""
        try:
            return await self.client.command(route_key, command)
        except KeyOutsideRange as exc:
            raise _Split(f"{type(command).__name__} for {route_key!r}: {exc}") from None
        except RangeError as exc:
            raise _NoAnswer(f"{type(command).__name__} for {route_key!r}: {exc}") from None

    async def groups(self, keys: list[str]) -> list[list[str]]:
        """``keys`` (sorted) grouped by the range holding them in the cached map."""
        try:
            return await self.client.group_keys(keys)
        except RangeError as exc:
            raise _NoAnswer(f"range map: {exc}") from None


class _NoAnswer(Exception):
    """A command got no definite answer within the client's deadline."""


class _Split(_NoAnswer):
    """A multi-key command named keys of two ranges (definite: not applied)."""


def _typed(raw: Any, kind: Any) -> Any:
    """``raw`` (decoded from the wire) as ``kind``; None if it is not one."""
    try:
        return msgspec.convert(raw, kind, strict=False)
    except msgspec.ValidationError:
        log.warning("unexpected answer %.120r (wanted %s)", raw, kind)
        return None


class TimestampBatcher:
    """Coalesces concurrent timestamp requests, as TiDB's PD client does: while one
    ``AllocTs`` is in flight, callers queue; the next request asks for as many timestamps
    as callers are queued (``AllocTs(TS_KEY, count=n)``, one Raft commit) and hands each
    one of the window it answers.

    **Real time is kept**: a caller only gets a timestamp of a request sent after it
    asked (it never takes one from a window fetched before), and the allocator's counter
    only grows, so its timestamp is larger than every timestamp handed to anyone before it
    asked — a transaction that starts after another committed sees it.
    ``fetch(count)`` returns the first timestamp of a window of ``count``."""

    def __init__(self, fetch: Callable[[int], Awaitable[int]]) -> None:
        self._fetch = fetch
        self._queued: list[asyncio.Future[int]] = []
        self._task: asyncio.Task[None] | None = None

    async def next(self) -> int:
        """A timestamp of this caller's own (TxnError when the allocator did not answer)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        self._queued.append(future)
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._serve())
        return await future

    async def _serve(self) -> None:
        while self._queued:
            batch = [f for f in self._queued[:MAX_ALLOC_COUNT] if not f.done()]
            del self._queued[:MAX_ALLOC_COUNT]
            if batch:
                await self._answer(batch)

    async def _answer(self, batch: list[asyncio.Future[int]]) -> None:
        """Fetch one window for ``batch`` (every caller in it asked before this request)."""
        try:
            first = await self._fetch(len(batch))
        except asyncio.CancelledError:
            for future in batch:
                future.cancel()
            raise
        except Exception as exc:  # every waiter hears of it (never left waiting)
            why = str(exc) if isinstance(exc, TxnError) else f"no timestamp: {exc!r}"
            for future in batch:
                if not future.done():
                    future.set_exception(TxnError(why))
            return
        for i, future in enumerate(batch):
            if not future.done():  # its caller was cancelled: the timestamp goes unused
                future.set_result(first + i)

    async def close(self) -> None:
        """Stop serving; callers still waiting are cancelled."""
        if self._task is not None:
            await wait_cancelled([self._task], TASK_END_BOUND_S, "timestamp batcher")
        queued, self._queued = self._queued, []
        for future in queued:
            future.cancel()


class TxnStats:
    """Counters of one store (all transactions through it)."""

    def __init__(self) -> None:
        self.committed = 0
        self.conflicts = 0
        """Attempts rolled back on a conflict (TxnConflict raised)."""
        self.indeterminate = 0
        self.locks_met = 0
        """Times a read or a scan was stopped by another transaction's lock."""
        self.lock_resolutions = 0
        self.rolled_forward = 0
        self.rolled_back = 0
        self.retries = 0
        """Attempts that :meth:`TxnStore.run` started again after a conflict."""
        self.ts_requests = 0
        """``AllocTs`` requests sent (each serves every caller that waited for it)."""
        self.timestamps = 0
        """Timestamps those requests took."""
        self.read_locks = 0
        """Read locks of committed transactions (``2pc`` mode: keys read, not written)."""

    def as_dict(self) -> dict[str, int]:
        """The counters by name."""
        return dict(vars(self))


class TxnStore:
    """Asyncio client of a ``txn`` cluster; ``members`` maps process ids to addresses.

    Transactions through one store run concurrently over shared connections.  ``mode``:
    ``percolator``, ``async-commit`` or ``1pc`` (snapshot isolation), or ``2pc``
    (serializable: read keys are locked in the prepare).  Every command of a transaction
    is retried until ``deadline_s``; ``lock_wait_s`` is how long a read blocked by a lock
    waits before resolving it.
    """

    def __init__(
        self,
        members: Mapping[int, Address],
        *,
        mode: str = PERCOLATOR,
        client_id: int | None = None,
        request_timeout_s: float = 2.0,
        deadline_s: float = 10.0,
        lock_wait_s: float = 0.05,
        ssl: ssl_module.SSLContext | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if lock_wait_s < 0:
            raise ValueError(f"lock_wait_s must be >= 0, got {lock_wait_s}")
        self.mode = mode
        self.lock_wait_s = lock_wait_s
        self.ranges = RangeClient(
            members,
            client_id=client_id,
            request_timeout_s=request_timeout_s,
            deadline_s=deadline_s,
            ssl=ssl,
        )
        self._router = _Router(self.ranges)
        self.stats = TxnStats()
        self._ctx = core.Context(mode, max_lock_rounds=MAX_LOCK_ROUNDS, count=self._count)
        self._rng = random.Random()
        self._timestamps = TimestampBatcher(self._alloc_window)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """A transaction: its snapshot is taken on entry, it commits when the block ends
        without an exception (raises TxnConflict / TxnIndeterminate / TxnError), and is
        dropped (nothing was written) when the block raises."""
        tx = Transaction(self, await self._alloc_ts())
        yield tx
        await tx._commit()

    async def run(
        self, fn: Callable[[Transaction], Awaitable[T]], retries: int = 5
    ) -> T:
        """``fn(tx)`` in a transaction, committed; started again (after a jittered
        exponential back-off) at most ``retries`` times when it raised TxnConflict."""
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        for attempt in range(retries + 1):
            try:
                async with self.transaction() as tx:
                    result = await fn(tx)
                return result
            except TxnConflict:
                if attempt == retries:
                    raise
            self.stats.retries += 1
            cap_s = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2**attempt)
            await asyncio.sleep(self._rng.uniform(0, cap_s))
        raise AssertionError("unreachable")  # pragma: no cover

    async def close(self) -> None:
        """Stop the timestamp batcher and close the connections."""
        try:
            await self._timestamps.close()
        finally:
            await self.ranges.close()

    async def __aenter__(self) -> TxnStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- commands shared by transactions ----------------------------------------------------

    async def _alloc_ts(self) -> int:
        """A timestamp above every one handed out before this call (see
        :class:`TimestampBatcher`)."""
        return await self._timestamps.next()

    async def _alloc_window(self, count: int) -> int:
        """The first of ``count`` fresh timestamps (one ``AllocTs`` command)."""
        self.stats.ts_requests += 1
        try:
            ts = await self._router.call(AllocTs(TS_KEY, count), TS_KEY)
        except _NoAnswer as exc:
            raise TxnError(f"no timestamp: {exc}") from None
        if type(ts) is not int or ts < 1:
            raise TxnError(f"the allocator answered {ts!r}, not a timestamp")
        self.stats.timestamps += count
        return ts

    # -- the coordinator's generators, driven in asyncio ----------------------------------------

    def _count(self, name: str) -> None:
        """A counter of the coordinator's, as one of :class:`TxnStats`."""
        field = _STAT_OF.get(name)
        if field is not None:
            setattr(self.stats, field, getattr(self.stats, field) + 1)

    async def _drive(self, gen: Generator[Any, Any, Any]) -> Any:
        """Run one of :mod:`pnyx.protocols.txn.coordinator`'s generators to its end, carrying
        out its effects; its return value (NoAnswer / LockedOut propagate)."""
        value: Any = None
        error: Exception | None = None
        for _ in range(MAX_EFFECTS):
            try:
                effect = gen.throw(error) if error is not None else gen.send(value)
            except StopIteration as stop:
                return stop.value
            value, error = None, None
            try:
                value = await self._effect(effect)
            except (core.NoAnswer, core.LockedOut) as exc:  # from forked tasks
                error = exc
        gen.close()
        raise TxnError(f"the coordinator took more than {MAX_EFFECTS} steps")

    async def _effect(self, effect: Any) -> Any:
        kind = type(effect)
        if kind is core.Call:
            return await self._command(effect.command)
        if kind is core.Calls:
            answers = await asyncio.gather(*(self._command(c) for c in effect.commands))
            if not effect.wait and None in answers:
                log.info("commits_left commands=%d unanswered", answers.count(None))
            return list(answers)
        if kind is core.Groups:
            return await self._groups(list(effect.keys))
        if kind is core.OneRange:
            return len(await self._groups(list(effect.keys))) == 1
        if kind is core.Timestamp:
            try:
                return await self._alloc_ts()
            except TxnError:
                return None
        if kind is core.LockWait:
            await asyncio.sleep(self.lock_wait_s)
        elif kind is core.Sleep:
            await asyncio.sleep(float(effect.delay))
        elif kind is core.Fork:
            await self._fork(effect.tasks)
        elif kind is core.Retry:
            return 0.0  # run() backs off and starts a new transaction itself
        elif kind not in (core.Crash, core.Decided):
            raise TypeError(f"unknown coordinator effect {effect!r}")
        return None

    async def _fork(self, gens: tuple[Generator[Any, Any, Any], ...]) -> None:
        """Run ``gens`` concurrently; the first NoAnswer / LockedOut cancels the others and
        is raised."""
        tasks = [asyncio.ensure_future(self._drive(g)) for g in gens]
        try:
            for finished in asyncio.as_completed(tasks):
                await finished
        finally:
            pending = [t for t in tasks if not t.done()]
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=TASK_END_BOUND_S)

    async def _groups(self, keys: list[str]) -> list[list[str]]:
        try:
            return await self._router.groups(keys)
        except _NoAnswer:
            return [[k] for k in sorted(set(keys))]  # no map: each key routed alone

    async def _command(self, command: TxnCommand) -> Any:
        """``command``'s typed result, None when no answer came.  A multi-key command that
        met a split is sent again key by key (a 1PC prewrite answers ONE_PC_SPLIT)."""
        try:
            raw = await self._router.call(command, core.route_key(command))
        except _Split:
            if type(command) is Prewrite and command.one_pc:
                return {"error": core.ONE_PC_SPLIT}
            keys = command_keys(command)
            if len(keys) < 2:
                return None
            parts = await asyncio.gather(
                *(self._command(core.split_command(command, k)) for k in keys)
            )
            return core.merge_answers(command, list(parts))
        except _NoAnswer as exc:
            log.info("no_answer %s", exc)
            return None
        return _typed(raw, core.RESULT_TYPES[type(command)])



class Transaction:
    """One transaction of a :class:`TxnStore` (from :meth:`TxnStore.transaction`)."""

    def __init__(self, store: TxnStore, start_ts: int) -> None:
        self.store = store
        self.start_ts = start_ts
        """The snapshot's timestamp."""
        self.commit_ts = 0
        """Set once committed (0: read-only, or not committed)."""
        self._writes: dict[str, Any] = {}
        self._reads: dict[str, Any] = {}
        """Values read from the snapshot by ``get``, by key."""
        self._scanned: set[str] = set()
        """Keys the transaction's scans returned (2pc read-locks them as it does gets)."""
        self._done = False

    async def get(self, key: str) -> Any:
        """The value of ``key`` in this transaction's snapshot, with its own writes (None:
        absent)."""
        key = check_key(key)
        if key in self._writes:
            return self._writes[key]
        if key not in self._reads:
            self._reads[key] = await self._read(key)
        return self._reads[key]

    def put(self, key: str, value: Any) -> None:
        """Write ``value`` (not None; any msgpack value) to ``key`` at commit."""
        if value is None:
            raise TxnError(f"put {key!r}: None is not a value (use delete)")
        self._write(check_key(key), value)

    def delete(self, key: str) -> None:
        """Remove ``key`` at commit."""
        self._write(check_key(key), None)

    def _write(self, key: str, value: Any) -> None:
        if self._done:
            raise TxnError("the transaction has ended")
        self._writes[key] = value

    async def scan(
        self, start: str = "", end: str = "", limit: int | None = None
    ) -> list[tuple[str, Any]]:
        """The ``(key, value)`` pairs of ``[start, end)`` in this transaction's snapshot with
        its own writes (its deletes hide keys, its puts add them), in key order, at most
        ``limit`` (None: all).  ``start`` "" is the first key, ``end`` "" has no bound; the
        store's reserved keys never appear."""
        start, end, limit = check_scan(start, end, limit)
        pairs = await self._scan_merged(start, end, limit)
        # 2pc read-locks every key the caller was shown (its own writes are locked anyway);
        # keys a page listed beyond ``limit`` were not shown and are not locked.
        self._scanned.update(key for key, _ in pairs)
        return pairs

    async def _scan_merged(
        self, start: str, end: str, limit: int | None
    ) -> list[tuple[str, Any]]:
        """The snapshot's pairs of ``[start, end)`` overlaid with the own writes, at most
        ``limit``."""
        mine = {k: v for k, v in self._writes.items() if start <= k and (not end or k < end)}
        hidden = sum(v is None for v in mine.values())
        found: list[tuple[str, Any]] = []
        cursor = start
        try:
            for _ in range(MAX_SCAN_PAGES):
                merged = _merge(found, mine, cursor)
                if limit is not None and len(merged) >= limit:
                    return merged[:limit]
                want = SCAN_PAGE_ITEMS
                if limit is not None:
                    want = min(want, limit - len(merged) + hidden)
                items, cursor = await self._scan_page(cursor, end, want)
                found += items
                if not cursor:
                    merged = _merge(found, mine, None)
                    return merged if limit is None else merged[:limit]
        except _NoAnswer as exc:
            raise TxnError(f"scan of [{start!r}, {end!r}): {exc}") from None
        raise TxnError(f"scan of [{start!r}, {end!r}): more than {MAX_SCAN_PAGES} pages")

    async def _scan_page(
        self, cursor: str, end: str, want: int
    ) -> tuple[list[tuple[str, Any]], str]:
        """One range's values from ``cursor`` on, past any lock (resolved as reads do), and
        the key the scan goes on at ("" done)."""
        store = self.store
        for _ in range(MAX_LOCK_ROUNDS):
            page = await store._drive(
                core.scan_page(store._ctx, cursor, end, self.start_ts, want)
            )
            stuck = page.resume < cursor or (page.resume == cursor and page.lock is None)
            if page.resume and stuck:
                raise _NoAnswer(f"a scan from {cursor!r} answered resume {page.resume!r}")
            if page.lock is None or page.items:
                return [(str(k), v) for k, v in page.items], page.resume
            cursor = page.resume  # the lock was resolved: scan again from the locked key
        store.stats.conflicts += 1
        raise TxnConflict(f"scan at {cursor!r}: still locked after {MAX_LOCK_ROUNDS} rounds")

    async def _read(self, key: str) -> Any:
        store = self.store
        try:
            return await store._drive(core.read(store._ctx, key, self.start_ts))
        except core.NoAnswer as exc:
            raise TxnError(str(exc)) from None
        except core.LockedOut as exc:
            store.stats.conflicts += 1
            raise TxnConflict(str(exc)) from None

    @property
    def read_keys(self) -> tuple[str, ...]:
        """The keys read from the snapshot so far (gets, keys scans returned), sorted: in
        ``2pc`` mode those not written are read-locked by the commit."""
        return tuple(sorted({*self._reads, *self._scanned}))

    # -- commit ---------------------------------------------------------------------------

    async def _commit(self) -> None:
        if self._done:
            raise TxnError("the transaction has already ended")
        self._done = True
        if not self._writes:
            return  # read-only: its reads were one snapshot (serializable there in 2pc)
        store = self.store
        mutations = core.mutations_of(store.mode, self._writes, self.read_keys)
        outcome = await store._drive(core.commit(store._ctx, self.start_ts, mutations))
        if outcome.kind == core.OK:
            self.commit_ts = outcome.commit_ts
            store.stats.committed += 1
            store.stats.read_locks += sum(m.read_only for m in mutations.values())
        elif outcome.kind == core.INDETERMINATE:
            store.stats.indeterminate += 1
            raise TxnIndeterminate(outcome.reason)
        elif outcome.conflict:
            store.stats.conflicts += 1
            raise TxnConflict(outcome.reason)
        else:
            raise TxnError(outcome.reason)



def _merge(
    found: list[tuple[str, Any]], mine: dict[str, Any], upto: str | None
) -> list[tuple[str, Any]]:
    """The snapshot's ``found`` pairs overlaid with the transaction's own writes to keys
    below ``upto`` (None: all of them; a None value deletes), in key order."""
    merged = dict(found)
    for key, value in mine.items():
        if upto is not None and key >= upto:
            continue
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return sorted(merged.items())


class SyncTxnStore:
    """Blocking facade over :class:`TxnStore` (same options); its loop runs in a thread.

    ``with store.transaction() as tx:`` gives a :class:`SyncTransaction`."""

    def __init__(self, members: Mapping[int, Address], **options: Any) -> None:
        self._loop = LoopThread("pnyx-txn-client")
        self._async: TxnStore = self._loop.run(_make(members, options))

    @property
    def stats(self) -> TxnStats:
        """The store's counters."""
        return self._async.stats

    @contextlib.contextmanager
    def transaction(self) -> Iterator[SyncTransaction]:
        """As :meth:`TxnStore.transaction`, blocking."""
        tx = Transaction(self._async, self._loop.run(self._async._alloc_ts()))
        yield SyncTransaction(tx, self._loop)
        self._loop.run(tx._commit())

    def run(self, fn: Callable[[SyncTransaction], T], retries: int = 5) -> T:
        """As :meth:`TxnStore.run` with a blocking ``fn``."""
        rng = random.Random()
        for attempt in range(retries + 1):
            try:
                with self.transaction() as tx:
                    result = fn(tx)
                return result
            except TxnConflict:
                if attempt == retries:
                    raise
            self._async.stats.retries += 1
            cap_s = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2**attempt)
            self._loop.run(asyncio.sleep(rng.uniform(0, cap_s)))
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        """Close the connections and stop the loop."""
        try:
            self._loop.run(self._async.close(), TASK_END_BOUND_S + 5.0)
        finally:
            self._loop.close()

    def __enter__(self) -> SyncTxnStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SyncTransaction:
    """A :class:`Transaction` with blocking reads."""

    def __init__(self, tx: Transaction, loop: LoopThread) -> None:
        self._tx = tx
        self._loop = loop

    def get(self, key: str) -> Any:
        """Blocking :meth:`Transaction.get`."""
        return self._loop.run(self._tx.get(key))

    def scan(
        self, start: str = "", end: str = "", limit: int | None = None
    ) -> list[tuple[str, Any]]:
        """Blocking :meth:`Transaction.scan`."""
        return self._loop.run(self._tx.scan(start, end, limit))

    def put(self, key: str, value: Any) -> None:
        """:meth:`Transaction.put`."""
        self._tx.put(key, value)

    def delete(self, key: str) -> None:
        """:meth:`Transaction.delete`."""
        self._tx.delete(key)


async def _make(members: Mapping[int, Address], options: dict[str, Any]) -> TxnStore:
    return TxnStore(members, **options)


__all__ = [
    "ASYNC_COMMIT",
    "MODES",
    "ONE_PC",
    "PERCOLATOR",
    "TWO_PC",
    "SyncTransaction",
    "SyncTxnStore",
    "TimestampBatcher",
    "Transaction",
    "TxnConflict",
    "TxnError",
    "TxnIndeterminate",
    "TxnStats",
    "TxnStore",
    "bank_account_key",
    "bank_init",
    "bank_problem",
    "bank_read",
    "bank_transfer",
]


# -- the bank workload (pnyx txn bank-*, tests) ----------------------------------------------

BANK_META_KEY = "bank.meta"
"""Holds ``[accounts, total]`` of the bank made by :func:`bank_init`."""


def bank_account_key(account: int) -> str:
    """The key of bank account ``account`` (spread over the initial ranges)."""
    from pnyx.services.multiraft import spread_key

    if type(account) is not int or account < 0:
        raise TxnError(f"an account is a number >= 0, got {account!r}")
    return f"{spread_key(account)}.bank"


async def bank_init(tx: Transaction, accounts: int, amount: int) -> None:
    """Create ``accounts`` accounts holding ``amount`` each (in one transaction)."""
    if accounts < 1 or amount < 0:
        raise TxnError(f"bank-init needs accounts >= 1 and amount >= 0, got {accounts}, {amount}")
    for account in range(accounts):
        tx.put(bank_account_key(account), amount)
    tx.put(BANK_META_KEY, [accounts, accounts * amount])


async def bank_meta(tx: Transaction) -> tuple[int, int]:
    """(accounts, total) of the bank (TxnError when there is none)."""
    meta = await tx.get(BANK_META_KEY)
    shaped = isinstance(meta, list | tuple) and len(meta) == 2
    if not (shaped and all(type(v) is int for v in meta)):
        raise TxnError(f"no bank here ({BANK_META_KEY!r} holds {meta!r}); run bank-init first")
    return int(meta[0]), int(meta[1])


async def bank_transfer(tx: Transaction, source: int, target: int, amount: int) -> bool:
    """Move ``amount`` from account ``source`` to ``target`` if ``source`` holds it;
    whether it did."""
    if source == target or amount < 1:
        raise TxnError(
            f"a transfer needs two accounts and amount >= 1, got {source}, {target}, {amount}"
        )
    src, dst = bank_account_key(source), bank_account_key(target)
    balances = await asyncio.gather(tx.get(src), tx.get(dst))
    if not all(type(b) is int for b in balances):
        raise TxnError(f"accounts {source}, {target} hold {balances!r}: not a bank's accounts")
    if balances[0] < amount:
        return False
    tx.put(src, balances[0] - amount)
    tx.put(dst, balances[1] + amount)
    return True


async def bank_read(tx: Transaction) -> tuple[list[int], int]:
    """Every balance of the bank (in this transaction's snapshot) and the total it should
    sum to."""
    accounts, total = await bank_meta(tx)
    keys = [bank_account_key(a) for a in range(accounts)]
    balances = await asyncio.gather(*(tx.get(k) for k in keys))
    if not all(type(b) is int for b in balances):
        raise TxnError(f"bank accounts hold non-numbers: {balances!r}")
    return [int(b) for b in balances], total


def bank_problem(balances: list[int], total: int) -> str:
    """What is wrong with a read of every balance ("" nothing)."""
    if sum(balances) != total:
        return f"balances {balances} sum to {sum(balances)}, not {total}"
    negative = [b for b in balances if b < 0]
    if negative:
        return f"negative balances {negative} in {balances}"
    return ""

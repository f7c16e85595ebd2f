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

  - ``percolator`` (default): prewrite the primary's range, then the others in parallel;
    take the commit timestamp; commit the primary (the commit point); then the
    secondaries (failures there are left to readers' lock resolution);
  - ``async-commit`` (TiKV): prewrite every range in parallel with ``min_commit_ts``; once
    all are durable the transaction is committed at the largest ``min_commit_ts``;
  - ``1pc``: async commit, and one committing prewrite when every key lies in one range.

A refused prewrite (another transaction's lock, a newer commit, a rollback record) rolls
the transaction's keys back and raises :class:`TxnConflict`; :meth:`TxnStore.run` retries
those with jittered exponential back-off.  A commit whose outcome is unknown (no answer
for the primary's commit, or for the rollback of an async transaction whose prewrites may
all have landed) raises :class:`TxnIndeterminate` and is never retried blindly.  Any other
failure raises :class:`TxnError`: the transaction did not commit.

Routing: each command goes through :class:`pnyx.services.multiraft.RangeClient` (range map
cache, refresh on a stale route, leader hints, retries of unanswered requests: every
transaction command is idempotent).  :class:`SyncTxnStore` is a blocking facade.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl as ssl_module
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from typing import Any, TypeVar

import msgspec

from pnyx.protocols.raft.messages import ClientRequest
from pnyx.protocols.txn.messages import (
    ALREADY_COMMITTED,
    COMMITTED,
    LOCKED,
    MAX_ALLOC_COUNT,
    RESERVED_PREFIX,
    ROLLED_BACK,
    WRITE_CONFLICT,
    AllocTs,
    CheckSecondaryLocks,
    CheckTxnStatus,
    Get,
    GetResult,
    Lock,
    Mutation,
    Prewrite,
    PrewriteResult,
    Resolve,
    ResolveResult,
    Scan,
    ScanResult,
    TxnCommand,
    TxnStatus,
)
from pnyx.protocols.txn.workloads import TS_KEY
from pnyx.runtime.transport import Address
from pnyx.services.client import TASK_END_BOUND_S, LoopThread, wait_cancelled
from pnyx.services.multiraft import RangeClient, RangeError

log = logging.getLogger("pnyx.txn.client")

PERCOLATOR = "percolator"
ASYNC_COMMIT = "async-commit"
ONE_PC = "1pc"
MODES = (PERCOLATOR, ASYNC_COMMIT, ONE_PC)
MAX_LOCK_ROUNDS = 40
"""Locks one read may meet and resolve before the transaction gives up (TxnConflict)."""
BACKOFF_FIRST_S = 0.01
BACKOFF_MAX_S = 0.5
SCAN_PAGE_ITEMS = 256
"""Values one ``Scan`` command asks for at most (bounds an answer's size)."""
MAX_SCAN_PAGES = 100_000
"""Scan commands one :meth:`Transaction.scan` sends at most (each lists a value or
finishes a range; lock rounds are bounded apart)."""

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
    """Sends one transaction command to the range holding its keys, through a RangeClient
    (its routing, refreshes and retries; requests unanswered are sent again: every
    transaction command is idempotent)."""

    def __init__(self, client: RangeClient) -> None:
        self.client = client

    async def call(self, command: TxnCommand, route_key: str) -> Any:
        """The command's result as the range answered it (decoded from the wire)."""
        build = lambda rid: ClientRequest(rid, command)  # noqa: E731
        try:
            return await self.client._run(route_key, build, False)
        except RangeError as exc:
            raise _NoAnswer(f"{type(command).__name__} for {route_key!r}: {exc}") from None

    async def groups(self, keys: list[str]) -> list[list[str]]:
        """``keys`` (sorted) grouped by the range holding them in the cached map."""
        if not self.client._map:
            try:
                await self.client.refresh()
            except RangeError as exc:
                raise _NoAnswer(f"range map: {exc}") from None
        by_range: dict[int, list[str]] = {}
        for key in sorted(set(keys)):
            desc = self.client._route(key)
            by_range.setdefault(-1 if desc is None else desc.range_id, []).append(key)
        return list(by_range.values())


class _NoAnswer(Exception):
    """A command got no definite answer within the client's deadline."""


def _typed(raw: Any, kind: type[T]) -> T:
    try:
        return msgspec.convert(raw, kind, strict=False)
    except msgspec.ValidationError as exc:
        raise _NoAnswer(f"unexpected answer {raw!r:.120}: {exc}") from None


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

    def as_dict(self) -> dict[str, int]:
        """The counters by name."""
        return dict(vars(self))


class TxnStore:
    """Asyncio client of a ``txn`` cluster; ``members`` maps process ids to addresses.

    Transactions through one store run concurrently over shared connections.  ``mode``:
    ``percolator``, ``async-commit`` or ``1pc``.  Every command of a transaction is retried
    until ``deadline_s``; ``lock_wait_s`` is how long a read blocked by a lock waits
    before resolving it.
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

    async def _resolve(self, keys: list[str], start_ts: int, commit_ts: int) -> str:
        """Commit (``commit_ts`` > 0) or roll back ``start_ts`` on ``keys``: "" done,
        ALREADY_COMMITTED when a rollback found a commit, "unknown" when a range did not
        answer, else the status a range answered."""
        groups = await self._router.groups(keys)
        calls = [
            self._router.call(Resolve(tuple(g), start_ts, commit_ts), g[0]) for g in groups
        ]
        outcome = ""
        for result in await asyncio.gather(*calls, return_exceptions=True):
            if isinstance(result, _NoAnswer):
                outcome = outcome or "unknown"
            elif isinstance(result, BaseException):
                raise result
            else:
                status = _typed(result, ResolveResult).status
                if status == ALREADY_COMMITTED or not outcome:
                    outcome = status or outcome
        return outcome

    async def _resolve_lock(self, key: str, lock: Lock) -> bool:
        """Decide ``lock``'s transaction from its primary and roll ``key`` (and the
        primary) forward or back accordingly; False when it could not be decided yet."""
        self.stats.lock_resolutions += 1
        check = CheckTxnStatus(lock.primary, lock.start_ts, True)
        status = _typed(await self._router.call(check, lock.primary), TxnStatus)
        if status.state == LOCKED and status.lock is not None:
            commit_ts = await self._decide_async(status.lock)
            if commit_ts is None:
                return False  # some key did not answer: read again later
        else:
            commit_ts = status.commit_ts if status.state == COMMITTED else 0
        if commit_ts:
            self.stats.rolled_forward += 1
        else:
            self.stats.rolled_back += 1
        await self._resolve(sorted({key, lock.primary}), lock.start_ts, commit_ts)
        return True

    async def _decide_async(self, primary_lock: Lock) -> int | None:
        """An async-commit transaction's fate from all its keys: its commit timestamp, 0
        (rolled back) or None (some key did not answer)."""
        keys = sorted({primary_lock.primary, *primary_lock.secondaries})
        start_ts = primary_lock.start_ts
        states: list[TxnStatus] = []
        for group in await self._router.groups(keys):
            raw = await self._router.call(CheckSecondaryLocks(tuple(group), start_ts), group[0])
            states += _typed(raw, tuple[TxnStatus, ...])
        if any(s.state == ROLLED_BACK for s in states):
            return 0
        if any(s.state == LOCKED and s.lock is None for s in states):
            return None
        return max(
            s.commit_ts if s.state == COMMITTED or s.lock is None else s.lock.min_commit_ts
            for s in states
        )


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
        seen: Lock | None = None
        for _ in range(MAX_LOCK_ROUNDS):
            raw = await self.store._router.call(Scan(cursor, end, self.start_ts, want), cursor)
            page = _typed(raw, ScanResult)
            stuck = page.resume < cursor or (page.resume == cursor and page.lock is None)
            if page.resume and stuck:
                raise _NoAnswer(f"a scan from {cursor!r} answered resume {page.resume!r}")
            if page.lock is None or page.items:
                return [(str(k), v) for k, v in page.items], page.resume
            cursor = page.resume  # the locked key (no value before it)
            await self._past_lock(cursor, page.lock, seen)
            seen = page.lock
        self.store.stats.conflicts += 1
        raise TxnConflict(f"scan at {cursor!r}: still locked after {MAX_LOCK_ROUNDS} rounds")

    async def _read(self, key: str) -> Any:
        store = self.store
        seen: Lock | None = None
        try:
            for _ in range(MAX_LOCK_ROUNDS):
                raw = await store._router.call(Get(key, self.start_ts), key)
                result = _typed(raw, GetResult)
                if result.lock is None:
                    return result.value
                await self._past_lock(key, result.lock, seen)
                seen = result.lock
        except _NoAnswer as exc:
            raise TxnError(f"read of {key!r}: {exc}") from None
        store.stats.conflicts += 1
        raise TxnConflict(f"read of {key!r}: still locked after {MAX_LOCK_ROUNDS} rounds")

    async def _past_lock(self, key: str, lock: Lock, seen: Lock | None) -> None:
        """Met ``lock`` on ``key``: the first time, give its owner ``lock_wait_s``; met again
        (``seen``), resolve it from its primary (waiting when it cannot be decided yet)."""
        store = self.store
        store.stats.locks_met += 1
        same = seen is not None and seen.start_ts == lock.start_ts
        if not (same and await store._resolve_lock(key, lock)):
            await asyncio.sleep(store.lock_wait_s)

    # -- commit ---------------------------------------------------------------------------

    async def _commit(self) -> None:
        if self._done:
            raise TxnError("the transaction has already ended")
        self._done = True
        if not self._writes:
            return  # read-only: its reads were one snapshot
        store = self.store
        try:
            groups = await store._router.groups(list(self._writes))
        except _NoAnswer as exc:
            raise TxnError(f"nothing written: {exc}") from None
        if store.mode == ONE_PC and len(groups) == 1:
            await self._one_pc(groups[0])
        elif store.mode == PERCOLATOR:
            await self._percolator(groups)
        else:
            await self._async_commit(groups)
        store.stats.committed += 1

    def _prewrite(self, group: list[str], use_async: bool, one_pc: bool = False) -> Prewrite:
        keys = sorted(self._writes)
        primary = keys[0]
        secondaries = tuple(keys[1:]) if use_async and primary in group else ()
        muts = tuple(Mutation(k, self._writes[k]) for k in group)
        return Prewrite(self.start_ts, primary, muts, use_async, secondaries, one_pc)

    async def _send_prewrites(
        self, groups: list[list[str]], use_async: bool
    ) -> list[PrewriteResult | None]:
        """Each group's prewrite result (None: no answer)."""
        calls = [self.store._router.call(self._prewrite(g, use_async), g[0]) for g in groups]
        out: list[PrewriteResult | None] = []
        for raw in await asyncio.gather(*calls, return_exceptions=True):
            if isinstance(raw, _NoAnswer):
                out.append(None)
            elif isinstance(raw, BaseException):
                raise raw
            else:
                out.append(_typed(raw, PrewriteResult))
        return out

    async def _percolator(self, groups: list[list[str]]) -> None:
        primary = min(self._writes)
        first = next(g for g in groups if primary in g)
        rest = [g for g in groups if g is not first]
        results = await self._send_prewrites([first], False)  # the primary first
        if _all_ok(results):
            results += await self._send_prewrites(rest, False)
        if not _all_ok(results):
            await self._abort(results, may_have_committed=False)
            return  # the rollback found it committed
        try:
            self.commit_ts = await self.store._alloc_ts()
        except TxnError as exc:
            await self._abort([], may_have_committed=False, failure=f"no commit timestamp: {exc}")
            return
        try:
            outcome = await self.store._resolve([primary], self.start_ts, self.commit_ts)
        except _NoAnswer:
            outcome = "unknown"
        if outcome == "unknown":
            self.store.stats.indeterminate += 1
            raise TxnIndeterminate(
                f"transaction {self.start_ts}: the commit of its primary {primary!r} got no "
                "answer; it may or may not have committed"
            )
        if outcome:
            await self._abort([], may_have_committed=False, conflict=f"primary: {outcome}")
            return  # a reader rolled it back (the rollback found it committed: it is)
        await self._commit_secondaries([k for k in sorted(self._writes) if k != primary])

    async def _async_commit(self, groups: list[list[str]]) -> None:
        results = await self._send_prewrites(groups, True)
        if not _all_ok(results):
            await self._abort(results, may_have_committed=None in results)
            return
        self.commit_ts = max(r.commit_ts or r.min_commit_ts for r in results if r is not None)
        await self._commit_secondaries(sorted(self._writes))

    async def _one_pc(self, group: list[str]) -> None:
        command = self._prewrite(group, True, one_pc=True)
        result: PrewriteResult | None = None
        with contextlib.suppress(_NoAnswer):
            result = _typed(await self.store._router.call(command, group[0]), PrewriteResult)
        if result is not None and result.status == COMMITTED:
            self.commit_ts = result.commit_ts
            return
        await self._abort([result], may_have_committed=result is None)

    async def _commit_secondaries(self, keys: list[str]) -> None:
        """Commit the keys after the commit point; what fails is left to readers."""
        if not keys:
            return
        try:
            await self.store._resolve(keys, self.start_ts, self.commit_ts)
        except _NoAnswer as exc:
            log.info("secondaries_left start_ts=%d error=%s", self.start_ts, exc)

    async def _abort(
        self,
        results: list[PrewriteResult | None],
        *,
        may_have_committed: bool,
        failure: str = "",
        conflict: str = "",
    ) -> None:
        """Roll every key back and raise: TxnConflict (a conflict), TxnError (no answer),
        TxnIndeterminate (the rollback got no answer where the prewrites may all have
        landed).  Returns normally when the rollback finds the transaction committed."""
        store = self.store
        try:
            outcome = await store._resolve(sorted(self._writes), self.start_ts, 0)
        except _NoAnswer:
            outcome = "unknown"
        if outcome == ALREADY_COMMITTED:
            return  # a resolver (or our own late command) committed it
        if outcome == "unknown" and may_have_committed:
            store.stats.indeterminate += 1
            raise TxnIndeterminate(
                f"transaction {self.start_ts}: its prewrites and rollback got no answer; it "
                "may or may not have committed"
            )
        if failure:
            raise TxnError(f"transaction {self.start_ts} rolled back: {failure}")
        refused = [r for r in results if r is not None and not r.ok]
        if not refused and any(r is None for r in results):
            raise TxnError(f"transaction {self.start_ts}: a prewrite got no answer (rolled back)")
        blocking = next((r for r in refused if r.lock is not None), None)
        if blocking is not None and blocking.lock is not None:
            await asyncio.sleep(store.lock_wait_s)
            with contextlib.suppress(_NoAnswer):
                await store._resolve_lock(blocking.key or blocking.lock.primary, blocking.lock)
        store.stats.conflicts += 1
        why = refused[0].status if refused else conflict or WRITE_CONFLICT
        raise TxnConflict(f"transaction {self.start_ts} rolled back: {why}")


def _all_ok(results: list[PrewriteResult | None]) -> bool:
    return all(r is not None and r.ok for r in results)


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

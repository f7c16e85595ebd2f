"""The coordinator of :mod:`pnyx.services.txn` against in-process ranges: the real
Percolator columns (:class:`~pnyx.protocols.txn.mvcc.MvccStore`, two ranges split at
``"m"``) behind a fake router that encodes every answer as the wire does and can lose
answers.  Outcomes the real cluster rarely shows: a commit point without an answer is
reported indeterminate (never committed, never failed), a lost prewrite is a definite
failure in Percolator but indeterminate in async commit when the rollback is lost too,
conflicts roll every key back, readers roll locks forward and back."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import msgspec
import pytest

from pnyx.protocols.txn.messages import (
    AllocTs,
    Lock,
    Mutation,
    Prewrite,
    Resolve,
    Scan,
    ScanResult,
    TxnCommand,
    command_keys,
)
from pnyx.protocols.txn.mvcc import MvccStore
from pnyx.services.txn import (
    ASYNC_COMMIT,
    ONE_PC,
    PERCOLATOR,
    Transaction,
    TxnConflict,
    TxnError,
    TxnIndeterminate,
    TxnStore,
    _NoAnswer,
)

SPLIT = "m"
MEMBERS = {1: ("127.0.0.1", 1)}  # never dialled: the fake router answers


class FakeRouter:
    """Two ranges of real MVCC columns; ``lose(command) -> bool`` drops an answer after
    the command was applied (``lose_before``: before)."""

    def __init__(self) -> None:
        self.left, self.right = MvccStore(), MvccStore()
        self.sent: list[TxnCommand] = []
        self.lose: Callable[[TxnCommand], bool] = lambda c: False
        self.lose_before: Callable[[TxnCommand], bool] = lambda c: False

    def range_of(self, key: str) -> MvccStore:
        return self.left if key < SPLIT else self.right

    async def call(self, command: TxnCommand, route_key: str) -> Any:
        self.sent.append(command)
        keys = command_keys(command)
        if any(self.range_of(k) is not self.range_of(route_key) for k in keys):
            raise AssertionError(f"{command} spans ranges")
        if self.lose_before(command):
            raise _NoAnswer("lost before applying")
        if type(command) is AllocTs:
            await asyncio.sleep(0)  # in flight for a moment: callers arriving now queue
        result = self._scan(command) if type(command) is Scan else None
        if result is None:
            result = self.range_of(route_key).apply(command)
        if self.lose(command):
            raise _NoAnswer("lost after applying")
        return msgspec.msgpack.decode(msgspec.msgpack.encode(result))  # as the wire does

    def _scan(self, cmd: Scan) -> ScanResult | None:
        """A scan from the left range clipped at the split, as the range machine clips it."""
        if cmd.start >= SPLIT or (cmd.end and cmd.end <= SPLIT):
            return None
        result = self.left.apply(Scan(cmd.start, SPLIT, cmd.read_ts, cmd.limit))
        if result.resume or result.lock is not None:
            return result
        return ScanResult(result.items, None, SPLIT)

    async def groups(self, keys: list[str]) -> list[list[str]]:
        left = sorted(k for k in set(keys) if k < SPLIT)
        right = sorted(k for k in set(keys) if k >= SPLIT)
        return [g for g in (left, right) if g]


def _store(mode: str = PERCOLATOR) -> tuple[TxnStore, FakeRouter]:
    store = TxnStore(MEMBERS, mode=mode, lock_wait_s=0.0)
    router = FakeRouter()
    store._router = router  # type: ignore[assignment]
    return store, router


def _value(router: FakeRouter, key: str) -> Any:
    return router.range_of(key).record(key).visible(2**62)


async def _write(store: TxnStore, **values: Any) -> Transaction:
    async with store.transaction() as tx:
        for key, value in values.items():
            tx.put(key, value)
    return tx


@pytest.mark.parametrize("mode", [PERCOLATOR, ASYNC_COMMIT, ONE_PC])
def test_a_transaction_commits_on_both_ranges_and_reads_its_snapshot(mode: str) -> None:
    async def scenario() -> None:
        store, router = _store(mode)
        first = await _write(store, a=1, z=2)
        assert first.commit_ts > first.start_ts
        async with store.transaction() as old:
            await _write(store, a=10)
            assert await old.get("a") == 1  # its snapshot, not the later commit
            old.put("b", 5)
            assert await old.get("b") == 5  # its own write
        assert (_value(router, "a"), _value(router, "b"), _value(router, "z")) == (10, 5, 2)
        assert not router.left.locks() and not router.right.locks()

    asyncio.run(scenario())


def test_one_pc_commits_a_single_range_transaction_with_one_command() -> None:
    async def scenario() -> None:
        store, router = _store(ONE_PC)
        await _write(store, a=1, b=2)
        prewrites = [c for c in router.sent if type(c) is Prewrite]
        assert len(prewrites) == 1 and prewrites[0].one_pc
        assert not [c for c in router.sent if type(c) is Resolve]
        assert _value(router, "b") == 2

    asyncio.run(scenario())


def test_a_write_write_conflict_rolls_the_later_transaction_back() -> None:
    async def scenario() -> None:
        store, router = _store()
        with pytest.raises(TxnConflict, match="write_conflict"):
            async with store.transaction() as t1:
                await t1.get("a")
                t1.put("a", "t1")
                t1.put("z", "t1")
                await _write(store, a="t2")  # commits after t1's snapshot
        assert _value(router, "a") == "t2" and _value(router, "z") is None
        assert router.right.record("z").rolled_back(t1.start_ts)
        assert store.stats.conflicts == 1

    asyncio.run(scenario())


def test_no_answer_for_the_primary_commit_is_indeterminate_never_failed() -> None:
    async def scenario() -> None:
        store, router = _store()
        router.lose = lambda c: type(c) is Resolve and c.commit_ts > 0 and "a" in c.keys
        with pytest.raises(TxnIndeterminate, match="may or may not"):
            await _write(store, a=1, z=2)
        assert _value(router, "a") == 1  # it did commit: reporting a failure would lie
        assert store.stats.indeterminate == 1 and store.stats.committed == 0

    asyncio.run(scenario())


def test_run_does_not_retry_an_indeterminate_commit() -> None:
    async def scenario() -> None:
        store, router = _store()
        router.lose = lambda c: type(c) is Resolve and c.commit_ts > 0
        calls = []

        async def fn(tx: Transaction) -> None:
            calls.append(1)
            tx.put("a", len(calls))

        with pytest.raises(TxnIndeterminate):
            await store.run(fn, retries=5)
        assert calls == [1]

    asyncio.run(scenario())


def test_a_lost_prewrite_in_percolator_is_a_definite_failure() -> None:
    async def scenario() -> None:
        store, router = _store()
        router.lose = lambda c: type(c) is Prewrite and c.mutations[0].key == "z"
        with pytest.raises(TxnError) as caught:
            await _write(store, a=1, z=2)
        assert type(caught.value) is TxnError, caught.value  # not indeterminate
        assert _value(router, "a") is None and _value(router, "z") is None
        assert not router.left.locks() and not router.right.locks()

    asyncio.run(scenario())


def test_async_commit_with_prewrite_and_rollback_lost_is_indeterminate() -> None:
    async def scenario() -> None:
        store, router = _store(ASYNC_COMMIT)
        router.lose = lambda c: type(c) is Prewrite and c.mutations[0].key == "z"
        router.lose_before = lambda c: type(c) is Resolve and c.commit_ts == 0
        with pytest.raises(TxnIndeterminate):
            await _write(store, a=1, z=2)
        # every prewrite landed, so the transaction is committed (a reader decides so)
        reader, _ = _store(ASYNC_COMMIT)
        reader._router = router  # type: ignore[assignment]
        async with reader.transaction() as tx:
            assert (await tx.get("a"), await tx.get("z")) == (1, 2)
        assert reader.stats.rolled_forward >= 1

    asyncio.run(scenario())


def test_async_commit_with_a_lost_prewrite_rolled_back_is_a_definite_failure() -> None:
    async def scenario() -> None:
        store, router = _store(ASYNC_COMMIT)
        router.lose_before = lambda c: type(c) is Prewrite and c.mutations[0].key == "z"
        with pytest.raises(TxnError) as caught:
            await _write(store, a=1, z=2)
        assert type(caught.value) is TxnError
        assert _value(router, "a") is None
        assert router.right.record("z").rolled_back(caught_start(router))

    asyncio.run(scenario())


def caught_start(router: FakeRouter) -> int:
    return next(c.start_ts for c in router.sent if type(c) is Prewrite)


def _abandoned(router: FakeRouter, start_ts: int, use_async: bool, commit_primary: bool) -> None:
    """A coordinator that prewrote ``a`` (primary) and ``z`` and vanished (after
    committing the primary, if asked)."""
    secondaries = ("z",) if use_async else ()
    router.left.apply(Prewrite(start_ts, "a", (Mutation("a", "old"),), use_async, secondaries))
    router.right.apply(Prewrite(start_ts, "a", (Mutation("z", "old"),), use_async))
    if commit_primary:
        router.left.apply(Resolve(("a",), start_ts, start_ts + 1))


@pytest.mark.parametrize(
    ("use_async", "commit_primary", "expected"),
    [(False, True, "old"), (False, False, None), (True, False, "old")],
    ids=["primary-committed", "primary-locked", "async-all-locked"],
)
def test_a_reader_resolves_an_abandoned_lock_forward_or_back(
    use_async: bool, commit_primary: bool, expected: Any
) -> None:
    async def scenario() -> None:
        store, router = _store()
        ts = router.left.apply(AllocTs("!ts", 5))
        _abandoned(router, ts, use_async, commit_primary)
        async with store.transaction() as tx:
            assert await tx.get("z") == expected
        assert router.right.record("z").lock is None
        if expected is None:
            assert store.stats.rolled_back == 1 and router.left.record("a").rolled_back(ts)
        else:
            assert store.stats.rolled_forward == 1

    asyncio.run(scenario())


def test_a_prewrite_meeting_a_lock_resolves_it_and_run_retries() -> None:
    async def scenario() -> None:
        store, router = _store()
        ts = router.left.apply(AllocTs("!ts", 5))
        _abandoned(router, ts, use_async=False, commit_primary=False)

        async def fn(tx: Transaction) -> None:
            tx.put("z", "new")

        await store.run(fn, retries=3)
        assert _value(router, "z") == "new"
        assert store.stats.conflicts == 1 and store.stats.retries == 1
        assert store.stats.rolled_back == 1

    asyncio.run(scenario())


def test_run_gives_up_after_its_retries() -> None:
    async def scenario() -> None:
        store, router = _store()
        lock = Lock("a", 10**9, "x")  # a lock no status check clears: its start is ahead

        async def fn(tx: Transaction) -> None:
            router.right.record("z").lock = lock
            tx.put("z", 1)

        with pytest.raises(TxnConflict, match="locked"):
            await store.run(fn, retries=2)
        assert store.stats.conflicts == 3 and store.stats.retries == 2

    asyncio.run(scenario())


def test_bad_keys_and_values_are_refused_with_the_value() -> None:
    async def scenario() -> None:
        store, _ = _store()
        async with store.transaction() as tx:
            with pytest.raises(TxnError, match="reserved"):
                tx.put("!ts", 1)
            with pytest.raises(TxnError, match="42"):
                await tx.get(42)  # type: ignore[arg-type]
            with pytest.raises(TxnError, match="use delete"):
                tx.put("a", None)
        with pytest.raises(ValueError, match="'3pc'"):
            TxnStore(MEMBERS, mode="3pc")

    asyncio.run(scenario())


def test_an_exception_in_the_block_writes_nothing() -> None:
    async def scenario() -> None:
        store, router = _store()
        with pytest.raises(KeyError):
            async with store.transaction() as tx:
                tx.put("a", 1)
                raise KeyError("the caller's own error")
        assert not [c for c in router.sent if type(c) is Prewrite]
        assert _value(router, "a") is None

    asyncio.run(scenario())


def test_the_sync_facade_commits_and_retries() -> None:
    from pnyx.services.txn import SyncTransaction, SyncTxnStore

    with SyncTxnStore(MEMBERS, lock_wait_s=0.0) as store:
        router = FakeRouter()
        store._async._router = router  # type: ignore[assignment]
        with store.transaction() as tx:
            tx.put("a", 1)
            tx.put("z", 2)
        ts = router.left.apply(AllocTs("!ts", 5))
        _abandoned(router, ts, use_async=False, commit_primary=False)  # blocks a first try

        def move(tx: SyncTransaction) -> int:
            a = tx.get("a")
            tx.put("a", a - 1)
            tx.put("z", "moved")
            return int(a)

        assert store.run(move, retries=3) == 1
        assert (_value(router, "a"), _value(router, "z")) == (0, "moved")
        assert store.stats.committed == 2


# -- scans -----------------------------------------------------------------------------------


def test_a_scan_crosses_ranges_page_by_page_and_merges_its_own_writes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import pnyx.services.txn as txn_module

    monkeypatch.setattr(txn_module, "SCAN_PAGE_ITEMS", 2)

    async def scenario() -> None:
        store, router = _store()
        await _write(store, a=1, b=2, c=3, n=4, p=5, z=6)
        async with store.transaction() as tx:
            tx.delete("b")
            tx.put("c", 30)
            tx.put("o", 15)
            assert await tx.scan() == [
                ("a", 1), ("c", 30), ("n", 4), ("o", 15), ("p", 5), ("z", 6)
            ]
            assert await tx.scan("b", "p") == [("c", 30), ("n", 4), ("o", 15)]
            assert await tx.scan("b", limit=3) == [("c", 30), ("n", 4), ("o", 15)]
            assert await tx.scan("a", limit=1) == [("a", 1)]
            assert await tx.scan("q", "y") == []
            await _write(store, d=7)  # after the snapshot: not seen
            assert [k for k, _ in await tx.scan("c", "e")] == ["c"]
        scans = [c for c in router.sent if type(c) is Scan]
        assert [c.start for c in scans[:4]] == ["", "c", SPLIT, "z"]  # pages; the range end
        assert max(c.limit for c in scans) == 2

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("use_async", "commit_primary", "expected"),
    [(False, True, "old"), (False, False, None), (True, False, "old")],
    ids=["primary-committed", "primary-locked", "async-all-locked"],
)
def test_a_scan_resolves_an_abandoned_lock_forward_or_back(
    use_async: bool, commit_primary: bool, expected: Any
) -> None:
    async def scenario() -> None:
        store, router = _store()
        await _write(store, y=1)
        ts = router.left.apply(AllocTs("!ts", 5))
        _abandoned(router, ts, use_async, commit_primary)
        async with store.transaction() as tx:
            got = await tx.scan("b")
        assert got == [("y", 1)] + ([("z", expected)] if expected is not None else [])
        assert router.right.record("z").lock is None
        assert (store.stats.rolled_forward, store.stats.rolled_back) == (
            (1, 0) if expected is not None else (0, 1)
        )

    asyncio.run(scenario())


def test_bad_scan_arguments_are_refused_with_the_value() -> None:
    async def scenario() -> None:
        store, router = _store()
        async with store.transaction() as tx:
            with pytest.raises(TxnError, match="end 'a' must be above start 'b'"):
                await tx.scan("b", "a")
            with pytest.raises(TxnError, match="reserved"):
                await tx.scan("!ts")
            with pytest.raises(TxnError, match=r"limit .* got 0"):
                await tx.scan("a", limit=0)
            with pytest.raises(TxnError, match="got True"):
                await tx.scan("a", limit=True)
            with pytest.raises(TxnError, match="start must be a string, got 3"):
                await tx.scan(3)  # type: ignore[arg-type]
        assert not [c for c in router.sent if type(c) is Scan]

    asyncio.run(scenario())


def test_the_sync_facade_scans() -> None:
    from pnyx.services.txn import SyncTxnStore

    with SyncTxnStore(MEMBERS, lock_wait_s=0.0) as store:
        store._async._router = FakeRouter()  # type: ignore[assignment]
        with store.transaction() as tx:
            tx.put("a", 1)
            tx.put("z", 2)
        with store.transaction() as tx:
            assert tx.scan("", "", 5) == [("a", 1), ("z", 2)]


# -- batched timestamps ----------------------------------------------------------------------


def test_concurrent_timestamp_callers_share_allocator_requests() -> None:
    async def scenario() -> None:
        store, router = _store()
        first = await store._alloc_ts()
        many = await asyncio.gather(*(store._alloc_ts() for _ in range(50)))
        assert len(set(many)) == 50 and min(many) > first
        allocs = [c for c in router.sent if type(c) is AllocTs]
        assert [c.count for c in allocs] == [1, 50]  # one request for all 50 waiting
        assert (store.stats.ts_requests, store.stats.timestamps) == (2, 51)

    asyncio.run(scenario())


def test_a_timestamp_comes_from_a_request_sent_after_its_caller_asked() -> None:
    async def scenario() -> None:
        store, router = _store()
        early = asyncio.ensure_future(store._alloc_ts())
        await asyncio.sleep(0)  # the first request is in flight now
        late = asyncio.ensure_future(store._alloc_ts())
        assert await late > await early  # not a spare number of the early window
        assert [c.count for c in router.sent if type(c) is AllocTs] == [1, 1]

    asyncio.run(scenario())


def test_a_cancelled_caller_leaves_the_batch_working_and_a_failure_reaches_all() -> None:
    async def scenario() -> None:
        store, router = _store()
        waiters = [asyncio.ensure_future(store._alloc_ts()) for _ in range(3)]
        waiters[1].cancel()
        results = await asyncio.gather(*waiters, return_exceptions=True)
        assert isinstance(results[1], asyncio.CancelledError)
        assert results[0] != results[2] and all(type(r) is int for r in (results[0], results[2]))
        router.lose_before = lambda c: type(c) is AllocTs
        failing = await asyncio.gather(
            *(store._alloc_ts() for _ in range(3)), return_exceptions=True
        )
        assert all(isinstance(f, TxnError) and "no timestamp" in str(f) for f in failing)
        await store.close()

    asyncio.run(scenario())


def test_the_batcher_fails_every_waiter_on_any_error_and_close_cancels_the_waiting() -> None:
    from pnyx.services.txn import TimestampBatcher

    async def scenario() -> None:
        async def broken(count: int) -> int:
            raise RuntimeError(f"boom for {count}")

        failing = TimestampBatcher(broken)
        got = await asyncio.gather(*(failing.next() for _ in range(3)), return_exceptions=True)
        assert all(isinstance(g, TxnError) and "boom for 3" in str(g) for g in got), got
        gate = asyncio.Event()

        async def stuck(count: int) -> int:
            await gate.wait()
            return 1

        for started in (False, True):  # closed before the request left, and while in flight
            batcher = TimestampBatcher(stuck)
            waiters = [asyncio.ensure_future(batcher.next()) for _ in range(2)]
            await asyncio.sleep(0)
            if started:
                await asyncio.sleep(0)
            await batcher.close()
            results = await asyncio.gather(*waiters, return_exceptions=True)
            assert all(isinstance(r, asyncio.CancelledError) for r in results), results

    asyncio.run(scenario())


# -- commands met by a split -----------------------------------------------------------------


@pytest.mark.parametrize("mode", [PERCOLATOR, ONE_PC])
def test_a_command_whose_keys_a_split_separated_is_sent_again_key_by_key(mode: str) -> None:
    from pnyx.services.txn import _Split

    async def scenario() -> None:
        store, router = _store(mode)
        call = router.call

        async def split_between(command: TxnCommand, route_key: str) -> Any:
            if len(command_keys(command)) > 1:  # "a" and "b" are in two ranges by now
                router.sent.append(command)
                raise _Split(f"{type(command).__name__} names keys of two ranges")
            return await call(command, route_key)

        router.call = split_between  # type: ignore[method-assign]
        tx = await _write(store, a=1, b=2)
        assert (_value(router, "a"), _value(router, "b")) == (1, 2)
        assert tx.commit_ts > tx.start_ts and not router.left.locks()
        prewrites = [c for c in router.sent if type(c) is Prewrite]
        assert [len(c.mutations) for c in prewrites] == [2, 1, 1]
        if mode == ONE_PC:  # the 1PC command fell back to async commit, key by key
            assert prewrites[0].one_pc and all(c.use_async for c in prewrites[1:])

    asyncio.run(scenario())

"""Directed tests of Percolator's columns (pnyx.protocols.txn.mvcc), one rule each."""

from __future__ import annotations

import pytest

from pnyx.protocols.txn.messages import (
    ALREADY_COMMITTED,
    COMMITTED,
    LOCKED,
    ROLLED_BACK,
    TXN_NOT_FOUND,
    WRITE_CONFLICT,
    AllocTs,
    CheckSecondaryLocks,
    CheckTxnStatus,
    Get,
    Mutation,
    Prewrite,
    Resolve,
)
from pnyx.protocols.txn.mvcc import READER_IGNORES_LOCK, MvccStore


def _prewrite(store: MvccStore, start_ts: int, *kv: tuple[str, object], **kw: object) -> object:
    muts = tuple(Mutation(k, v) for k, v in kv)
    return store.apply(Prewrite(start_ts, kv[0][0], muts, **kw))  # type: ignore[arg-type]


def _committed(store: MvccStore, key: str, value: object, start_ts: int, commit_ts: int) -> None:
    assert _prewrite(store, start_ts, (key, value)).ok  # type: ignore[attr-defined]
    assert store.apply(Resolve((key,), start_ts, commit_ts)).status == ""


def test_a_read_sees_the_last_commit_at_or_below_its_timestamp() -> None:
    s = MvccStore()
    _committed(s, "a", 1, start_ts=10, commit_ts=11)
    _committed(s, "a", 2, start_ts=20, commit_ts=21)
    assert s.apply(Get("a", 5)).value is None
    assert s.apply(Get("a", 11)).value == 1
    assert s.apply(Get("a", 20)).value == 1
    assert s.apply(Get("a", 21)).value == 2


def test_a_lock_at_or_below_the_read_timestamp_blocks_and_a_newer_one_does_not() -> None:
    s = MvccStore()
    _committed(s, "a", 1, start_ts=10, commit_ts=11)
    _prewrite(s, 20, ("a", 2))
    blocked = s.apply(Get("a", 25))
    assert blocked.lock is not None and blocked.lock.start_ts == 20
    assert s.apply(Get("a", 15)).value == 1


def test_the_reader_ignores_lock_mutant_reads_under_a_blocking_lock() -> None:
    s = MvccStore(frozenset({READER_IGNORES_LOCK}))
    _committed(s, "a", 1, start_ts=10, commit_ts=11)
    _prewrite(s, 20, ("a", 2))
    assert s.apply(Get("a", 25)).lock is None


def test_prewrite_refuses_a_newer_write_and_another_lock_and_is_all_or_nothing() -> None:
    s = MvccStore()
    _committed(s, "a", 1, start_ts=10, commit_ts=30)
    assert _prewrite(s, 20, ("b", 1), ("a", 2)).status == WRITE_CONFLICT  # type: ignore[attr-defined]
    assert "b" not in s.locks()
    _prewrite(s, 40, ("b", 1))
    refused = _prewrite(s, 41, ("b", 2))
    assert refused.status == LOCKED and refused.lock.start_ts == 40  # type: ignore[attr-defined]


def test_prewrite_and_commit_are_idempotent() -> None:
    s = MvccStore()
    assert _prewrite(s, 10, ("a", 1)).ok  # type: ignore[attr-defined]
    assert _prewrite(s, 10, ("a", 1)).ok  # type: ignore[attr-defined]
    assert s.apply(Resolve(("a",), 10, 12)).status == ""
    assert s.apply(Resolve(("a",), 10, 12)).status == ""
    again = _prewrite(s, 10, ("a", 1))
    assert again.status == COMMITTED and again.commit_ts == 12  # type: ignore[attr-defined]
    assert s.records["a"].writes == [(12, 10)]


def test_a_rollback_record_stops_a_late_prewrite_and_a_commit() -> None:
    s = MvccStore()
    status = s.apply(CheckTxnStatus("a", 10))
    assert status.state == ROLLED_BACK
    assert _prewrite(s, 10, ("a", 1)).status == ROLLED_BACK  # type: ignore[attr-defined]
    assert s.apply(Resolve(("a",), 10, 12)).status == TXN_NOT_FOUND


def test_rollback_of_a_committed_transaction_is_refused() -> None:
    s = MvccStore()
    _committed(s, "a", 1, start_ts=10, commit_ts=11)
    result = s.apply(Resolve(("a",), 10, 0))
    assert result.status == ALREADY_COMMITTED and result.keys == ("a",)
    assert s.apply(Get("a", 11)).value == 1


def test_check_txn_status_rolls_a_plain_lock_back_only_when_forced() -> None:
    s = MvccStore()
    _prewrite(s, 10, ("a", 1))
    assert s.apply(CheckTxnStatus("a", 10)).state == LOCKED
    assert s.apply(CheckTxnStatus("a", 10, force_rollback=True)).state == ROLLED_BACK
    assert s.locks() == {}
    _prewrite(s, 20, ("b", 1))
    s.apply(Resolve(("b",), 20, 21))
    committed = s.apply(CheckTxnStatus("b", 20, force_rollback=True))
    assert committed.state == COMMITTED and committed.commit_ts == 21


def test_an_async_lock_is_never_rolled_back_by_its_primary_alone() -> None:
    s = MvccStore()
    _prewrite(s, 10, ("a", 1), use_async=True, secondaries=("b",))
    status = s.apply(CheckTxnStatus("a", 10, force_rollback=True))
    assert status.state == LOCKED and status.lock.secondaries == ("b",)  # type: ignore[union-attr]


def test_async_min_commit_ts_is_above_every_read_and_a_reader_below_it_passes() -> None:
    s = MvccStore()
    s.apply(Get("a", 50))
    result = _prewrite(s, 10, ("a", 1), use_async=True)
    assert result.min_commit_ts == 51  # type: ignore[attr-defined]
    assert s.apply(Get("a", 50)).lock is None
    assert s.apply(Get("a", 51)).lock is not None


def test_check_secondary_locks_rolls_back_a_key_never_prewritten() -> None:
    s = MvccStore()
    _prewrite(s, 10, ("a", 1), use_async=True)
    states = s.apply(CheckSecondaryLocks(("a", "b"), 10))
    assert [x.state for x in states] == [LOCKED, ROLLED_BACK]
    assert _prewrite(s, 10, ("b", 2), use_async=True).status == ROLLED_BACK  # type: ignore[attr-defined]


def test_one_pc_commits_at_once_above_every_read() -> None:
    s = MvccStore()
    s.apply(Get("b", 30))
    result = _prewrite(s, 10, ("a", 1), ("b", 2), one_pc=True)
    assert result.status == COMMITTED and result.commit_ts == 31  # type: ignore[attr-defined]
    assert s.locks() == {}
    assert s.apply(Get("b", 31)).value == 2 and s.apply(Get("b", 30)).value is None


def test_timestamps_from_the_allocator_increase() -> None:
    s = MvccStore()
    assert s.apply(AllocTs("!ts")) == 1
    assert s.apply(AllocTs("!ts", 5)) == 2
    assert s.apply(AllocTs("!ts")) == 7
    with pytest.raises(ValueError, match="count"):
        s.apply(AllocTs("!ts", 0))


def test_unknown_mutant_and_foreign_command_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown mvcc mutants"):
        MvccStore(frozenset({"nope"}))
    with pytest.raises(TypeError, match="not a transaction command"):
        MvccStore().apply("get a")  # type: ignore[arg-type]

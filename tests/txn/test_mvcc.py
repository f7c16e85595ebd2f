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
    Scan,
    ScanResult,
)
from pnyx.protocols.txn.mvcc import READER_IGNORES_LOCK, SCAN_IGNORES_LOCK, MvccStore


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


# -- scans ----------------------------------------------------------------------------------------


def _scan_store(mutants: frozenset[str] = frozenset()) -> MvccStore:
    """b=1 c=2 (deleted at 31) d=3 f=6 committed at 11..; e written at 40 only; the
    allocator's reserved key at the front."""
    s = MvccStore(mutants)
    s.apply(AllocTs("!ts", 100))
    for i, (key, value) in enumerate((("b", 1), ("c", 2), ("d", 3), ("f", 6))):
        _committed(s, key, value, start_ts=10 + 2 * i, commit_ts=11 + 2 * i)
    _committed(s, "c", None, start_ts=30, commit_ts=31)
    _committed(s, "e", 5, start_ts=40, commit_ts=41)
    return s


def test_a_scan_lists_visible_values_in_key_order_without_deletes_or_reserved_keys() -> None:
    s = _scan_store()
    assert s.apply(Scan("", "", 20, 10)) == ScanResult((("b", 1), ("c", 2), ("d", 3), ("f", 6)))
    assert s.apply(Scan("", "", 50, 10)).items == (("b", 1), ("d", 3), ("e", 5), ("f", 6))
    assert s.apply(Scan("c", "f", 50, 10)).items == (("d", 3), ("e", 5))  # end excluded
    assert s.apply(Scan("a", "b", 50, 10)) == ScanResult()
    assert s.apply(Scan("!", "", 50, 10)).items[0] == ("b", 1)  # "!ts" never listed
    assert s.max_read_ts == 50


def test_a_scan_stops_at_its_limit_and_resumes_at_the_next_key() -> None:
    s = _scan_store()
    first = s.apply(Scan("", "", 50, 2))
    assert first == ScanResult((("b", 1), ("d", 3)), None, "e")
    assert s.apply(Scan(first.resume, "", 50, 2)) == ScanResult((("e", 5), ("f", 6)))
    with pytest.raises(ValueError, match="limit must be >= 1, got 0"):
        s.apply(Scan("", "", 50, 0))


def test_a_scan_stops_at_a_blocking_lock_as_a_get_does() -> None:
    s = _scan_store()
    _prewrite(s, 60, ("d", 30))
    blocked = s.apply(Scan("a", "", 70, 10))
    assert blocked.items == (("b", 1),) and blocked.resume == "d"
    assert blocked.lock is not None and blocked.lock.start_ts == 60
    assert s.apply(Scan("a", "", 55, 10)).lock is None  # a newer lock hides nothing at 55
    s.apply(Get("zz", 90))  # async locks after this read get min_commit_ts 91
    _prewrite(s, 62, ("g", 7), use_async=True)
    assert s.apply(Scan("f", "", 90, 10)).lock is None  # min_commit_ts above the read


def test_the_scan_ignores_lock_mutant_lists_the_value_under_a_lock() -> None:
    s = _scan_store(frozenset({SCAN_IGNORES_LOCK}))
    _prewrite(s, 60, ("d", 30))
    assert s.apply(Scan("a", "", 70, 10)).items == (("b", 1), ("d", 3), ("e", 5), ("f", 6))
    assert s.apply(Get("d", 70)).lock is not None  # gets still honour locks


def test_a_scan_raises_max_read_ts_so_an_async_insert_commits_above_it() -> None:
    s = MvccStore()
    assert s.apply(Scan("a", "z", 40, 5)) == ScanResult()
    result = _prewrite(s, 10, ("m", 1), use_async=True)
    assert result.min_commit_ts == 41  # type: ignore[attr-defined]
    assert s.apply(Scan("a", "z", 40, 5)).items == ()  # the phantom stays invisible at 40


def test_alloc_ts_refuses_a_count_beyond_the_bound() -> None:
    s = MvccStore()
    with pytest.raises(ValueError, match=r"1\.\.65536, got 65537"):
        s.apply(AllocTs("!ts", 65537))
    assert s.apply(AllocTs("!ts", 65536)) == 1 and s.apply(AllocTs("!ts")) == 65537

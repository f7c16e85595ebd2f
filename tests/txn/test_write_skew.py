"""Write skew is possible under Percolator's snapshot isolation: two transactions read
both keys at their snapshots, each writes a different key, both commit (no write-write
conflict).  The Elle-style checkers say so: allowed under SI, not serializable."""

from __future__ import annotations

from typing import Any

from pnyx.check.history import History
from pnyx.check.serializability import check_serializable
from pnyx.check.snapshot_isolation import check_snapshot_isolation
from pnyx.core import HistoryEvent
from pnyx.protocols.txn.messages import Get, Mutation, Prewrite, Resolve
from pnyx.protocols.txn.mvcc import MvccStore


def _read(store: MvccStore, key: str, ts: int) -> list[Any]:
    result = store.apply(Get(key, ts))
    assert result.lock is None
    return list(result.value or [])


def _commit(store: MvccStore, start_ts: int, key: str, value: list[Any], commit_ts: int) -> None:
    prewrite = store.apply(Prewrite(start_ts, key, (Mutation(key, value),)))
    assert prewrite.ok, prewrite
    assert store.apply(Resolve((key,), start_ts, commit_ts)).status == ""


def test_write_skew_commits_under_si_and_the_checker_calls_it_allowed_but_not_serializable() -> (
    None
):
    store = MvccStore()
    # T1 (start 10) and T2 (start 11) both read x and y before either commits.
    t1_reads = [_read(store, k, 10) for k in ("x", "y")]
    t2_reads = [_read(store, k, 11) for k in ("x", "y")]
    _commit(store, 10, "x", [*t1_reads[0], 1], commit_ts=12)  # T1 appends 1 to x
    _commit(store, 11, "y", [*t2_reads[1], 2], commit_ts=13)  # T2 appends 2 to y: no conflict
    final_x, final_y = _read(store, "x", 14), _read(store, "y", 14)
    assert (final_x, final_y) == ([1], [2])  # both committed

    events = []
    for proc, _reads, append in (
        (1, t1_reads, ["append", "x", 1]),
        (2, t2_reads, ["append", "y", 2]),
    ):
        mops = [["r", "x", None], ["r", "y", None], append]
        events.append(HistoryEvent(proc, "invoke", "txn", mops))
    for proc, reads, append in (
        (1, t1_reads, ["append", "x", 1]),
        (2, t2_reads, ["append", "y", 2]),
    ):
        mops = [["r", "x", reads[0]], ["r", "y", reads[1]], append]
        events.append(HistoryEvent(proc, "ok", "txn", mops))
    events.append(HistoryEvent(3, "invoke", "txn", [["r", "x", None], ["r", "y", None]]))
    events.append(HistoryEvent(3, "ok", "txn", [["r", "x", final_x], ["r", "y", final_y]]))
    history = History.from_events(events)

    si = check_snapshot_isolation(history, kind="list-append")
    assert si.ok, si.explain()
    assert [v.name for v in si.allowed] == ["write-skew"], si.explain()
    serial = check_serializable(history, kind="list-append")
    assert not serial.ok
    assert serial.anomaly_names == ["G2-item"], serial.explain()


def test_a_lost_update_is_refused_by_the_first_committer_wins_rule() -> None:
    store = MvccStore()
    base = _read(store, "x", 10)
    _read(store, "x", 11)
    _commit(store, 10, "x", [*base, 1], commit_ts=12)
    refused = store.apply(Prewrite(11, "x", (Mutation("x", [2]),)))
    assert refused.status == "write_conflict"


def test_read_locks_of_the_2pc_mode_refuse_write_skew() -> None:
    store = MvccStore()
    for key in ("x", "y"):
        assert _read(store, key, 10) == [] and _read(store, key, 11) == []
    t1 = store.apply(Prewrite(10, "x", (Mutation("x", [1]), Mutation("y", None, read_only=True))))
    assert t1.ok
    t2 = store.apply(Prewrite(11, "y", (Mutation("y", [2]), Mutation("x", None, read_only=True))))
    assert t2.status == "locked" and t2.key == "y"
    assert store.apply(Resolve(("x", "y"), 10, 12)).status == ""
    assert _read(store, "y", 20) == []  # the read lock wrote nothing
    late = store.apply(Prewrite(11, "y", (Mutation("y", [2]), Mutation("x", None, read_only=True))))
    assert late.status == "write_conflict"  # x changed after T2's snapshot

"""The transactional range machine: bounds checked at apply time, splits carry whole
records (locks included), snapshots round-trip, commands typed again after msgpack."""

from __future__ import annotations

import msgspec
import pytest

from pnyx.core import CLIENT_ID_BASE
from pnyx.protocols.multiraft.machines import KEY_NOT_IN_RANGE
from pnyx.protocols.multiraft.messages import RangeBounds, RangeWrite, SplitCmd, SplitDone
from pnyx.protocols.raft.kv import PUT, KvOp
from pnyx.protocols.txn.machine import PLAIN_KV_REFUSED, SPLIT_LOSES_LOCK, TxnRangeMachine
from pnyx.protocols.txn.messages import (
    AllocTs,
    Get,
    GetResult,
    Mutation,
    Prewrite,
    Resolve,
    Scan,
    ScanResult,
)

WHOLE = RangeBounds(1, "", None, 1)


def _machine(txn_mutants: frozenset[str] = frozenset()) -> TxnRangeMachine:
    sm = TxnRangeMachine(WHOLE, frozenset(), txn_mutants)
    sm.apply(Prewrite(5, "a", (Mutation("a", 1), Mutation("m", 1))))
    sm.apply(Resolve(("a", "m"), 5, 6))
    sm.apply(Prewrite(10, "m", (Mutation("m", 2),)))  # in flight across the split
    return sm


def _right_half(sm: TxnRangeMachine) -> TxnRangeMachine:
    done = sm.apply(SplitCmd(1, 1, "k", 2))
    assert type(done) is SplitDone
    right = TxnRangeMachine(RangeBounds(2, "", "", 0), frozenset(), frozenset())
    right.restore(done.right_data)
    return right


def test_a_split_moves_whole_records_with_their_locks() -> None:
    sm = _machine()
    sm.apply(Get("a", 40))
    right = _right_half(sm)
    assert sorted(sm.data) == ["a"] and sorted(right.data) == ["m"]
    assert right.mvcc.locks()["m"].start_ts == 10
    assert right.apply(Get("m", 20)).lock is not None
    assert right.mvcc.max_read_ts == 40
    assert right.apply(Resolve(("m",), 10, 11)).status == ""
    assert right.apply(Get("m", 11)) == GetResult(2)


def test_the_split_loses_lock_mutant_drops_the_moved_lock() -> None:
    right = _right_half(_machine(frozenset({SPLIT_LOSES_LOCK})))
    assert right.mvcc.locks() == {}
    assert right.apply(Get("m", 20)) == GetResult(1)  # reads under the lost lock


def test_a_command_on_a_key_outside_the_range_is_refused_when_applied() -> None:
    sm = _machine()
    _right_half(sm)
    refused = sm.apply(Prewrite(20, "m", (Mutation("m", 3),)))
    assert refused["error"] == KEY_NOT_IN_RANGE
    assert sm.op_keys(Prewrite(20, "a", (Mutation("a", 3), Mutation("z", 1)))) == ("a", "z")


def test_snapshot_round_trip_and_untyped_commands() -> None:
    sm = _machine()
    copy = TxnRangeMachine(WHOLE)
    copy.restore(sm.snapshot())
    assert copy.snapshot() == sm.snapshot()
    raw = msgspec.msgpack.decode(msgspec.msgpack.encode(Get("m", 6)))
    assert copy.apply(raw).lock is None and copy.apply(raw).value == 1


def test_bad_input_is_answered_with_an_error_not_a_crash() -> None:
    sm = _machine()
    assert "error" in sm.apply(["Get", 3, "x"])
    with pytest.raises(ValueError, match="unknown txn range mutants"):
        TxnRangeMachine(WHOLE, frozenset(), frozenset({"nope"}))


def test_a_plain_kv_write_is_refused_and_the_record_keeps_working() -> None:
    sm = _machine()
    before = sm.snapshot()
    answer = sm.apply(RangeWrite(CLIENT_ID_BASE + 1, 1, KvOp(PUT, "m", "bare")))
    assert PLAIN_KV_REFUSED in answer["error"]
    raw = msgspec.msgpack.decode(msgspec.msgpack.encode(KvOp(PUT, "a", "bare")))
    assert PLAIN_KV_REFUSED in sm.apply(raw)["error"]  # as a replica replays it from the log
    assert sm.snapshot() == before
    assert sm.apply(Get("a", 7)).value == 1  # the record is still Percolator's


def test_a_scan_is_clipped_to_the_range_and_resumes_at_its_end() -> None:
    sm = _machine()  # a=1, m=1 committed at 6; m locked by 10
    sm.apply(AllocTs("!ts", 3))
    right = _right_half(sm)  # sm keeps ["", "k"), right holds ["k", ...)
    assert sm.apply(Scan("", "", 8, 10)) == ScanResult((("a", 1),), None, "k")
    assert sm.apply(Scan("", "c", 8, 10)) == ScanResult((("a", 1),))  # ends inside
    assert sm.apply(Scan("", "k", 8, 10)) == ScanResult((("a", 1),))
    assert right.apply(Scan("k", "", 8, 10)) == ScanResult((("m", 1),))  # the last range
    assert right.apply(Scan("k", "", 20, 10)).resume == "m"  # the moved lock stops it
    assert right.mvcc.max_read_ts == 20 and sm.mvcc.max_read_ts == 8


def test_a_scan_starting_outside_the_range_is_refused_when_applied() -> None:
    sm = _machine()
    _right_half(sm)
    assert sm.apply(Scan("m", "", 8, 10))["error"] == KEY_NOT_IN_RANGE
    assert sm.op_keys(Scan("m", "z", 8, 10)) == ("m",)
    assert "scan limit must be >= 1, got -1" in sm.apply(Scan("a", "", 8, -1))["error"]
    raw = msgspec.msgpack.decode(msgspec.msgpack.encode(Scan("", "", 8, 10)))
    assert sm.apply(raw).items == (("a", 1),)  # typed again after the wire
    assert "error" in sm.apply(["Scan", "", "", "x", 1])
    assert "count must be in 1..65536, got 0" in sm.apply(AllocTs("!ts", 0))["error"]

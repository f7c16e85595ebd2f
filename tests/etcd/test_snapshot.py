"""Snapshot / restore of the whole MVCC state, determinism, invariant checks."""

from __future__ import annotations

import msgspec
import pytest

from pnyx.protocols.etcd import (
    SNAPSHOT_FORMAT,
    CompactionRequest,
    HashKVRequest,
    MvccCorrupted,
    MvccStore,
    RangeRequest,
    Revision,
)
from tests.etcd.helpers import delete, op_del, op_put, put, txn


def _history(s: MvccStore) -> None:
    s.add_lease(3)
    put(s, b"a", b"1")
    put(s, b"b", b"2", lease=3)
    txn(s, success=[op_put(b"c", b"3"), op_put(b"a", b"4"), op_del(b"b")])
    put(s, b"b", b"5")
    delete(s, b"c")
    put(s, b"d", b"6")
    s.compact(3)
    put(s, b"a", b"7")


def _all_reads(s: MvccStore) -> list[object]:
    out: list[object] = []
    for rev in range(0, s.current_revision + 2):
        for key, end in ((b"\x00", b"\x00"), (b"a", b""), (b"b", b"d")):
            out.append(s.apply(RangeRequest(key=key, range_end=end, revision=rev)))
    return out


def test_round_trip_gives_identical_reads_and_bytes() -> None:
    s = MvccStore()
    _history(s)
    data = s.snapshot()
    t = MvccStore()
    t.restore(data)
    assert t.snapshot() == data
    assert _all_reads(t) == _all_reads(s)
    assert t.current_revision == s.current_revision == 8
    assert t.compact_revision == 3 and t.leases == {3}
    assert t.apply(HashKVRequest()) == s.apply(HashKVRequest())
    # the restored store carries on identically
    for store in (s, t):
        put(store, b"e", b"8")
        store.apply(CompactionRequest(revision=8))
    assert t.snapshot() == s.snapshot()


def test_same_history_same_bytes_and_order_independent_of_insertion() -> None:
    a, b = MvccStore(), MvccStore()
    _history(a)
    _history(b)
    assert a.snapshot() == b.snapshot()
    c, d = MvccStore(), MvccStore()
    txn(c, success=[op_put(b"x"), op_put(b"y")])
    txn(d, success=[op_put(b"y"), op_put(b"x")])
    assert c.snapshot() != d.snapshot()  # sub-revisions differ: different states


def test_restore_replaces_state() -> None:
    s = MvccStore()
    put(s, b"zzz")
    s.restore(MvccStore().snapshot())
    assert s.current_revision == 1 and s.apply(RangeRequest(key=b"zzz")).count == 0


def _image(**over: object) -> bytes:
    base: dict[str, object] = {
        "format": SNAPSHOT_FORMAT,
        "current_revision": 2,
        "compact_revision": -1,
        "leases": [],
        "keys": [],
    }
    base.update(over)
    return msgspec.msgpack.encode(list(base.values()))


def test_restore_refuses_bad_snapshots_and_keeps_state() -> None:
    s = MvccStore()
    put(s, b"keep")
    before = s.snapshot()
    good_kv = {"key": b"k", "create_revision": 2, "mod_revision": 2, "version": 1}
    bad = [
        b"\xc1garbage",
        _image(format=99),
        _image(current_revision=0),
        _image(keys=[[b"k", []]]),  # empty history
        _image(keys=[[b"k", [Revision(3, 0, None)]]]),  # beyond the current revision
        _image(keys=[[b"k", [[2, 0, good_kv], [2, 0, None]]]]),  # not strictly sorted
        _image(keys=[[b"k", [[2, 0, {**good_kv, "key": b"j"}]]]]),  # wrong key
        _image(keys=[[b"k", [[2, 0, {**good_kv, "version": 0}]]]]),
        _image(keys=[[b"b", [[2, 0, good_kv | {"key": b"b"}]]],
                     [b"a", [[2, 1, good_kv | {"key": b"a"}]]]]),  # index not sorted
    ]
    for data in bad:
        with pytest.raises(MvccCorrupted):
            s.restore(data)
        assert s.snapshot() == before
    s.restore(_image(keys=[[b"k", [[2, 0, good_kv]]]]))
    assert s.apply(RangeRequest(key=b"k")).kvs[0].version == 1


def test_invariants_catch_a_corrupted_store() -> None:
    s = MvccStore()
    _history(s)
    s.invariants()
    s._keys.reverse()
    with pytest.raises(MvccCorrupted):
        s.invariants()

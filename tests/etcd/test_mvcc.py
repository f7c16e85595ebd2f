"""Range / Put / DeleteRange / Compaction / HashKV of the etcd MVCC store."""

from __future__ import annotations

import pytest

from pnyx.protocols.etcd import (
    CompactionRequest,
    ErrorResult,
    EtcdError,
    GrpcCode,
    HashKVRequest,
    KeyValue,
    MvccStore,
    PutRequest,
    RangeRequest,
    SortOrder,
    SortTarget,
    check_request_size,
    encoded_size,
)
from pnyx.protocols.etcd.errors import (
    MSG_COMPACTED,
    MSG_EMPTY_KEY,
    MSG_FUTURE_REV,
    MSG_INVALID_SORT_OPTION,
    MSG_KEY_NOT_FOUND,
    MSG_LEASE_NOT_FOUND,
    MSG_LEASE_PROVIDED,
    MSG_REQUEST_TOO_LARGE,
    MSG_VALUE_PROVIDED,
)
from tests.etcd.helpers import delete, get, keys, put

INVALID = int(GrpcCode.INVALID_ARGUMENT)
OUT_OF_RANGE = int(GrpcCode.OUT_OF_RANGE)


def _err(code: int, message: str) -> ErrorResult:
    return ErrorResult(code, message)


def test_error_messages_and_codes_are_etcds() -> None:
    assert MSG_COMPACTED == "etcdserver: mvcc: required revision has been compacted"
    assert MSG_FUTURE_REV == "etcdserver: mvcc: required revision is a future revision"
    assert MSG_EMPTY_KEY == "etcdserver: key is not provided"
    assert MSG_LEASE_NOT_FOUND == "etcdserver: requested lease not found"
    assert (GrpcCode.INVALID_ARGUMENT, GrpcCode.NOT_FOUND, GrpcCode.OUT_OF_RANGE) == (3, 5, 11)


def test_empty_store_is_at_revision_one() -> None:
    s = MvccStore()
    r = get(s, b"a")
    assert r.header.revision == 1
    assert r.kvs == [] and r.count == 0 and r.more is False


def test_put_bookkeeping_create_mod_version() -> None:
    s = MvccStore()
    assert put(s, b"a", b"1").header.revision == 2
    assert put(s, b"a", b"2").header.revision == 3
    assert put(s, b"b", b"x").header.revision == 4
    (kv,) = get(s, b"a").kvs
    assert kv == KeyValue(key=b"a", create_revision=2, mod_revision=3, version=2, value=b"2")
    assert delete(s, b"a").deleted == 1
    assert s.current_revision == 5
    put(s, b"a", b"3")
    (kv,) = get(s, b"a").kvs
    assert (kv.create_revision, kv.mod_revision, kv.version) == (6, 6, 1)


def test_put_same_value_still_bumps_revision() -> None:
    s = MvccStore()
    put(s, b"a", b"1")
    put(s, b"a", b"1")
    assert s.current_revision == 3
    assert get(s, b"a").kvs[0].version == 2


def test_put_prev_kv() -> None:
    s = MvccStore()
    assert put(s, b"a", b"1", prev_kv=True).prev_kv is None
    r = put(s, b"a", b"2", prev_kv=True)
    assert r.prev_kv == KeyValue(key=b"a", create_revision=2, mod_revision=2, version=1, value=b"1")
    assert put(s, b"a", b"3").prev_kv is None  # not asked for


def test_put_lease_must_exist() -> None:
    s = MvccStore()
    assert put(s, b"a", lease=7) == _err(int(GrpcCode.NOT_FOUND), MSG_LEASE_NOT_FOUND)
    assert s.current_revision == 1
    s.add_lease(7)
    put(s, b"a", lease=7)
    assert get(s, b"a").kvs[0].lease == 7
    put(s, b"a")  # a put without lease detaches it
    assert get(s, b"a").kvs[0].lease == 0


def test_lease_hook_overrides_own_set() -> None:
    s = MvccStore(lease_exists=lambda lease: lease % 2 == 0)
    assert put(s, b"a", lease=4).header.revision == 2
    assert put(s, b"a", lease=3).message == MSG_LEASE_NOT_FOUND


def test_ignore_value_and_ignore_lease() -> None:
    s = MvccStore()
    s.add_lease(9)
    assert put(s, b"a", b"", ignore_value=True) == _err(INVALID, MSG_KEY_NOT_FOUND)
    assert put(s, b"a", b"", ignore_lease=True) == _err(INVALID, MSG_KEY_NOT_FOUND)
    assert put(s, b"a", b"x", ignore_value=True) == _err(INVALID, MSG_VALUE_PROVIDED)
    assert put(s, b"a", b"", lease=9, ignore_lease=True) == _err(INVALID, MSG_LEASE_PROVIDED)
    put(s, b"a", b"old", lease=9)
    put(s, b"a", b"", lease=0, ignore_value=True)
    kv = get(s, b"a").kvs[0]
    assert (kv.value, kv.lease, kv.version) == (b"old", 0, 2)
    put(s, b"a", b"new", ignore_lease=True)
    put(s, b"a", b"", lease=9, ignore_value=False)
    put(s, b"a", b"newer", ignore_lease=True)
    kv = get(s, b"a").kvs[0]
    assert (kv.value, kv.lease) == (b"newer", 9)


def test_empty_key_refused_everywhere() -> None:
    s = MvccStore()
    want = _err(INVALID, MSG_EMPTY_KEY)
    assert put(s, b"") == want
    assert get(s, b"") == want
    assert delete(s, b"") == want


def test_invalid_sort_option() -> None:
    s = MvccStore()
    want = _err(INVALID, MSG_INVALID_SORT_OPTION)
    assert get(s, b"a", sort_order=3) == want
    assert get(s, b"a", sort_target=5) == want


def _abc(s: MvccStore) -> None:
    for k in (b"a", b"ab", b"abc", b"b", b"c", b"\x00z"):
        put(s, k, k)


def test_range_forms() -> None:
    s = MvccStore()
    _abc(s)
    assert keys(get(s, b"ab")) == [b"ab"]
    assert keys(get(s, b"a", range_end=b"b")) == [b"a", b"ab", b"abc"]
    assert keys(get(s, b"ab", range_end=b"ac")) == [b"ab", b"abc"]  # prefix "ab"
    assert keys(get(s, b"b", range_end=b"\x00")) == [b"b", b"c"]  # all keys >= "b"
    assert keys(get(s, b"\x00", range_end=b"\x00")) == [b"\x00z", b"a", b"ab", b"abc", b"b", b"c"]
    assert keys(get(s, b"c", range_end=b"a")) == []  # end before key: empty
    assert keys(get(s, b"zz")) == []


def test_limit_more_count() -> None:
    s = MvccStore()
    _abc(s)
    r = get(s, b"a", range_end=b"\x00", limit=2)
    assert keys(r) == [b"a", b"ab"] and r.more and r.count == 5
    r = get(s, b"a", range_end=b"\x00", limit=5)
    assert len(r.kvs) == 5 and not r.more and r.count == 5
    r = get(s, b"a", range_end=b"\x00", limit=-3)
    assert len(r.kvs) == 5 and not r.more


def test_count_only_and_keys_only() -> None:
    s = MvccStore()
    _abc(s)
    r = get(s, b"a", range_end=b"b", count_only=True, limit=1)
    assert r.kvs == [] and r.count == 3 and not r.more
    r = get(s, b"a", range_end=b"b", keys_only=True)
    assert keys(r) == [b"a", b"ab", b"abc"]
    assert all(kv.value == b"" and kv.version == 1 for kv in r.kvs)


def test_sort_orders() -> None:
    s = MvccStore()
    put(s, b"b", b"2")
    put(s, b"a", b"3")
    put(s, b"c", b"1")
    put(s, b"b", b"0")  # b: version 2, mod 5
    every = {"key": b"a", "range_end": b"\x00"}
    assert keys(get(s, **every, sort_order=SortOrder.DESCEND)) == [b"c", b"b", b"a"]
    assert keys(get(s, **every, sort_target=SortTarget.VALUE)) == [b"b", b"c", b"a"]  # NONE->ASCEND
    by_create = get(s, **every, sort_target=SortTarget.CREATE, sort_order=SortOrder.DESCEND)
    assert keys(by_create) == [b"c", b"a", b"b"]
    assert keys(get(s, **every, sort_target=SortTarget.MOD)) == [b"a", b"c", b"b"]
    by_version = get(s, **every, sort_target=SortTarget.VERSION, sort_order=SortOrder.DESCEND)
    assert keys(by_version)[0] == b"b"
    # sort before limit: the two highest values, not the first two keys
    r = get(s, **every, sort_target=SortTarget.VALUE, sort_order=SortOrder.DESCEND, limit=2)
    assert keys(r) == [b"a", b"c"] and r.more and r.count == 3


def test_revision_filters_apply_after_range() -> None:
    s = MvccStore()
    put(s, b"a")  # 2
    put(s, b"b")  # 3
    put(s, b"c")  # 4
    put(s, b"a")  # 5: a create 2 mod 5
    every = {"key": b"a", "range_end": b"\x00"}
    assert keys(get(s, **every, min_mod_revision=4)) == [b"a", b"c"]
    assert keys(get(s, **every, max_mod_revision=3)) == [b"b"]
    assert keys(get(s, **every, min_create_revision=3)) == [b"b", b"c"]
    assert keys(get(s, **every, max_create_revision=2)) == [b"a"]
    r = get(s, **every, min_mod_revision=4, limit=1)
    assert keys(r) == [b"a"] and r.more and r.count == 3  # count ignores the filters
    r = get(s, **every, min_mod_revision=5, limit=1)
    assert keys(r) == [b"a"] and not r.more and r.count == 3


def test_historical_reads_and_future_revision() -> None:
    s = MvccStore()
    put(s, b"a", b"1")  # 2
    put(s, b"a", b"2")  # 3
    delete(s, b"a")  # 4
    assert get(s, b"a", revision=1).kvs == []
    assert get(s, b"a", revision=2).kvs[0].value == b"1"
    r = get(s, b"a", revision=3)
    assert r.kvs[0].value == b"2" and r.header.revision == 4  # header: current revision
    assert get(s, b"a", revision=4).kvs == []
    assert get(s, b"a", revision=5) == _err(OUT_OF_RANGE, MSG_FUTURE_REV)
    assert get(s, b"a", revision=-1).header.revision == 4  # <= 0: current


def test_delete_range_semantics() -> None:
    s = MvccStore()
    _abc(s)
    rev = s.current_revision
    r = delete(s, b"zz")
    assert (r.deleted, r.header.revision, s.current_revision) == (0, rev, rev)  # no change
    r = delete(s, b"a", range_end=b"b", prev_kv=True)
    assert r.deleted == 3 and [kv.key for kv in r.prev_kvs] == [b"a", b"ab", b"abc"]
    assert r.header.revision == rev + 1 == s.current_revision
    assert delete(s, b"b").prev_kvs == []  # not asked for
    assert keys(get(s, b"\x00", range_end=b"\x00")) == [b"\x00z", b"c"]
    assert delete(s, b"\x00", range_end=b"\x00").deleted == 2
    assert get(s, b"a", range_end=b"\x00").count == 0


def test_compaction() -> None:
    s = MvccStore()
    put(s, b"a", b"1")  # 2
    put(s, b"a", b"2")  # 3
    put(s, b"b", b"1")  # 4
    delete(s, b"b")  # 5
    put(s, b"c", b"1")  # 6
    r = s.apply(CompactionRequest(revision=5))
    assert r.header.revision == 6 and s.current_revision == 6
    assert get(s, b"a", revision=4) == _err(OUT_OF_RANGE, MSG_COMPACTED)
    assert get(s, b"a", revision=5).kvs[0].value == b"2"  # the compact revision stays readable
    assert get(s, b"b", revision=5).kvs == []
    # the delete at the compact revision stays (a watch may start there), older ones go
    assert [e.main for e in s._history[b"b"]] == [5] and s._history[b"b"][0].kv is None
    assert s.apply(CompactionRequest(revision=5)) == _err(OUT_OF_RANGE, MSG_COMPACTED)
    assert s.apply(CompactionRequest(revision=4)) == _err(OUT_OF_RANGE, MSG_COMPACTED)
    assert s.apply(CompactionRequest(revision=7)) == _err(OUT_OF_RANGE, MSG_FUTURE_REV)
    assert [e.main for e in s._history[b"a"]] == [3]
    s.invariants()
    put(s, b"d", b"1")  # 7
    s.apply(CompactionRequest(revision=6))
    assert b"b" not in s._history and get(s, b"b").kvs == []  # gone with the key now
    s.invariants()


def test_compaction_keeps_later_history() -> None:
    s = MvccStore()
    for i in range(5):
        put(s, b"k", bytes([48 + i]))  # revisions 2..6
    s.apply(CompactionRequest(revision=3))
    assert [get(s, b"k", revision=r).kvs[0].value for r in (3, 4, 5, 6)] == [b"1", b"2", b"3", b"4"]
    kv = get(s, b"k").kvs[0]
    assert (kv.create_revision, kv.version) == (2, 5)  # bookkeeping survives compaction


def test_hash_kv() -> None:
    a, b = MvccStore(), MvccStore()
    for s in (a, b):
        put(s, b"x", b"1")
        put(s, b"y", b"2")
    ha = a.apply(HashKVRequest())
    assert ha == b.apply(HashKVRequest())
    assert ha.compact_revision == -1 and ha.header.revision == 3
    put(b, b"y", b"3")
    assert a.apply(HashKVRequest()).hash != b.apply(HashKVRequest()).hash
    assert a.apply(HashKVRequest(revision=3)).hash == b.apply(HashKVRequest(revision=3)).hash
    assert b.apply(HashKVRequest(revision=9)).message == MSG_FUTURE_REV
    b.apply(CompactionRequest(revision=3))
    assert b.apply(HashKVRequest(revision=2)).message == MSG_COMPACTED


def test_request_size_check() -> None:
    check_request_size(1536 * 1024)
    with pytest.raises(EtcdError) as exc:
        check_request_size(1536 * 1024 + 1)
    assert exc.value.message == MSG_REQUEST_TOO_LARGE
    assert exc.value.code == GrpcCode.INVALID_ARGUMENT
    big = PutRequest(key=b"k", value=b"x" * 2000)
    assert encoded_size(big) > 2000
    with pytest.raises(EtcdError):
        check_request_size(encoded_size(big), max_request_bytes=2000)


def test_unknown_command_is_an_error_result() -> None:
    r = MvccStore().apply({"kind": "get"})
    assert isinstance(r, ErrorResult) and r.code == INVALID


def test_range_does_not_scan_outside_the_prefix() -> None:
    s = MvccStore()
    for i in range(2000):
        put(s, b"k%05d" % i)
    seen: list[bytes] = []
    real = s.kv_at

    def spy(key: bytes, rev: int) -> KeyValue | None:
        seen.append(key)
        return real(key, rev)

    s.kv_at = spy  # type: ignore[method-assign,assignment]
    r = s.range(RangeRequest(key=b"k0012", range_end=b"k0013"))
    assert r.count == 10 and len(seen) == 10


def test_sort_target_without_order_sorts_only_the_first_limit_plus_one_keys() -> None:
    """etcd 3.4 fetches limit + 1 keys in key order when sort_order is NONE (whatever the
    target), then sorts those by the target: found by the differential test."""
    from pnyx.protocols.etcd import SortTarget

    store = MvccStore()
    for key, value in ((b"a", b"9"), (b"b", b"1"), (b"c", b"2"), (b"d", b"0")):
        put(store, key, value)
    resp = get(store, b"a", range_end=b"z", limit=2, sort_target=SortTarget.VALUE)
    assert keys(resp) == [b"b", b"c"] and resp.more and resp.count == 4
    everything = get(store, b"a", range_end=b"z", sort_target=SortTarget.VALUE)
    assert keys(everything) == [b"d", b"b", b"c", b"a"]

"""Txn: compares, branches, nesting, duplicate keys, op limits, atomicity."""

from __future__ import annotations

from pnyx.protocols.etcd import (
    Compare,
    CompareResult,
    CompareTarget,
    ErrorResult,
    GrpcCode,
    MvccStore,
    ResponseHeader,
    ResponseOp,
    TxnResponse,
)
from pnyx.protocols.etcd.errors import (
    MSG_COMPACTED,
    MSG_DUPLICATE_KEY,
    MSG_EMPTY_KEY,
    MSG_FUTURE_REV,
    MSG_KEY_NOT_FOUND,
    MSG_LEASE_NOT_FOUND,
    MSG_TOO_MANY_OPS,
)
from tests.etcd.helpers import get, op_del, op_get, op_put, op_txn, put, txn

DUP = ErrorResult(int(GrpcCode.INVALID_ARGUMENT), MSG_DUPLICATE_KEY)
EQ, GT, LT, NE = (CompareResult.EQUAL, CompareResult.GREATER, CompareResult.LESS,
                  CompareResult.NOT_EQUAL)


def cmp(key: bytes, result: int, target: int, **kw: object) -> Compare:
    return Compare(key=key, result=result, target=target, **kw)  # type: ignore[arg-type]


def test_puts_in_one_txn_share_a_revision() -> None:
    s = MvccStore()
    r = txn(s, success=[op_put(b"a"), op_put(b"b"), op_get(b"a")])
    assert r.succeeded and r.header.revision == 2 and s.current_revision == 2
    a, b = get(s, b"a").kvs[0], get(s, b"b").kvs[0]
    assert a.create_revision == a.mod_revision == b.create_revision == b.mod_revision == 2
    assert [e.sub for e in (s._history[b"a"][0], s._history[b"b"][0])] == [0, 1]
    assert r.responses[2].response_range.kvs == [a]  # a read sees the txn's earlier put
    assert r.responses[0].response_put.header.revision == 2


def test_empty_and_read_only_txn_keep_the_revision() -> None:
    s = MvccStore()
    put(s, b"a")
    r = txn(s, success=[op_get(b"a"), op_del(b"nothing")])
    assert r.header.revision == 2 and s.current_revision == 2
    assert r.responses[1].response_delete_range.deleted == 0
    assert txn(s).header.revision == 2


def test_compare_targets_and_results() -> None:
    s = MvccStore()
    s.add_lease(5)
    put(s, b"k", b"m", lease=5)  # create 2 mod 2 version 1
    put(s, b"k", b"m")  # mod 3 version 2, lease 0
    cases = [
        (cmp(b"k", EQ, CompareTarget.VALUE, value=b"m"), True),
        (cmp(b"k", GT, CompareTarget.VALUE, value=b"l"), True),
        (cmp(b"k", LT, CompareTarget.VALUE, value=b"m"), False),
        (cmp(b"k", EQ, CompareTarget.VERSION, version=2), True),
        (cmp(b"k", NE, CompareTarget.VERSION, version=2), False),
        (cmp(b"k", EQ, CompareTarget.CREATE, create_revision=2), True),
        (cmp(b"k", GT, CompareTarget.MOD, mod_revision=2), True),
        (cmp(b"k", EQ, CompareTarget.LEASE, lease=0), True),
        (cmp(b"k", LT, CompareTarget.LEASE, lease=5), True),
    ]
    for c, want in cases:
        assert txn(s, [c]).succeeded is want, c


def test_missing_key_compares_as_zero_but_value_fails() -> None:
    s = MvccStore()
    assert txn(s, [cmp(b"x", EQ, CompareTarget.VERSION, version=0)]).succeeded
    assert txn(s, [cmp(b"x", EQ, CompareTarget.CREATE, create_revision=0)]).succeeded
    assert txn(s, [cmp(b"x", EQ, CompareTarget.MOD, mod_revision=0)]).succeeded
    assert txn(s, [cmp(b"x", EQ, CompareTarget.LEASE, lease=0)]).succeeded
    assert not txn(s, [cmp(b"x", EQ, CompareTarget.VALUE, value=b"")]).succeeded
    assert not txn(s, [cmp(b"x", NE, CompareTarget.VALUE, value=b"y")]).succeeded


def test_compare_over_a_range_needs_every_key() -> None:
    s = MvccStore()
    put(s, b"p/a", b"1")
    put(s, b"p/b", b"2")
    over = {"range_end": b"p0"}
    assert txn(s, [cmp(b"p/", GT, CompareTarget.VALUE, value=b"0", **over)]).succeeded
    assert not txn(s, [cmp(b"p/", GT, CompareTarget.VALUE, value=b"1", **over)]).succeeded
    assert txn(s, [cmp(b"p/", EQ, CompareTarget.VERSION, version=1, **over)]).succeeded


def test_all_compares_must_hold_and_failure_branch_runs() -> None:
    s = MvccStore()
    put(s, b"a", b"1")
    r = txn(
        s,
        [cmp(b"a", EQ, CompareTarget.VALUE, value=b"1"), cmp(b"a", EQ, CompareTarget.VERSION,
                                                             version=9)],
        success=[op_put(b"s")],
        failure=[op_put(b"f"), op_get(b"f")],
    )
    assert not r.succeeded and len(r.responses) == 2
    assert r.responses[1].response_range.kvs[0].key == b"f"
    assert get(s, b"s").kvs == [] and get(s, b"f").count == 1


def test_nested_txn_compares_see_the_state_before_the_txn() -> None:
    s = MvccStore()
    inner = op_txn(
        [cmp(b"a", EQ, CompareTarget.VERSION, version=0)],  # a is absent before the txn
        success=[op_put(b"then")],
        failure=[op_put(b"else")],
    )
    r = txn(s, success=[op_put(b"a"), inner])
    assert r.succeeded
    nested = r.responses[1].response_txn
    assert nested.succeeded is True
    assert nested.header == ResponseHeader()  # etcd leaves nested headers empty
    assert get(s, b"then").count == 1 and get(s, b"else").count == 0
    assert get(s, b"then").kvs[0].mod_revision == get(s, b"a").kvs[0].mod_revision == 2


def test_nested_response_shape() -> None:
    s = MvccStore()
    r = txn(s, success=[op_txn(failure=[op_put(b"x")], compare=[cmp(b"q", EQ, 3, value=b"z")])])
    assert r == TxnResponse(
        header=ResponseHeader(revision=2),
        succeeded=True,
        responses=[ResponseOp(response_txn=TxnResponse(succeeded=False, responses=[
            ResponseOp(response_put=r.responses[0].response_txn.responses[0].response_put)
        ]))],
    )
    assert r.responses[0].response_txn.responses[0].response_put.header.revision == 2


def test_txn_header_is_the_new_revision() -> None:
    s = MvccStore()
    r = txn(s, success=[op_txn(success=[op_put(b"x")])])
    assert r.header.revision == 2 == s.current_revision


def test_put_then_delete_same_txn_via_nested_children() -> None:
    s = MvccStore()
    put(s, b"k", b"old")
    r = txn(s, success=[op_txn(success=[op_put(b"k", b"new")]),
                        op_txn(success=[op_del(b"k", prev_kv=True)])])
    assert r.succeeded and r.header.revision == 3
    deleted = r.responses[1].response_txn.responses[0].response_delete_range
    assert deleted.prev_kvs[0].value == b"new"
    assert get(s, b"k").kvs == []
    assert get(s, b"k", revision=2).kvs[0].value == b"old"


def test_duplicate_keys() -> None:
    s = MvccStore()
    assert txn(s, success=[op_put(b"a"), op_put(b"a")]) == DUP
    assert txn(s, failure=[op_put(b"a"), op_put(b"a")]) == DUP
    assert txn(s, success=[op_put(b"a"), op_del(b"a")]) == DUP
    assert txn(s, success=[op_del(b"a"), op_put(b"a")]) == DUP
    assert txn(s, success=[op_del(b"a", range_end=b"c"), op_put(b"b")]) == DUP
    assert txn(s, success=[op_put(b"a"), op_txn(success=[op_put(b"a")])]) == DUP
    assert txn(s, success=[op_del(b"a"), op_txn(failure=[op_put(b"a")])]) == DUP
    assert txn(s, success=[op_txn(success=[op_del(b"a")]), op_put(b"a")]) == DUP
    assert txn(s, success=[op_txn(success=[op_put(b"a")]), op_txn(success=[op_put(b"a")])]) == DUP
    assert s.current_revision == 1  # nothing applied


def test_allowed_overlaps() -> None:
    s = MvccStore()
    ok = [
        [op_del(b"a"), op_del(b"a")],
        [op_get(b"a"), op_put(b"a")],
        [op_put(b"a"), op_put(b"b")],
        [op_del(b"a", range_end=b"c"), op_put(b"c")],  # range end is exclusive
        [op_txn(success=[op_put(b"a")], failure=[op_put(b"a")])],  # only one runs
        [op_txn(success=[op_put(b"a")]), op_txn(success=[op_del(b"a")])],  # etcd allows
        [op_del(b"a", range_end=b"\x00"), op_put(b"b")],  # etcd's interval for "\0" is empty
    ]
    for ops in ok:
        assert not isinstance(txn(s, success=ops), ErrorResult), ops


def test_too_many_ops() -> None:
    s = MvccStore(max_txn_ops=3)
    many = ErrorResult(int(GrpcCode.INVALID_ARGUMENT), MSG_TOO_MANY_OPS)
    assert txn(s, success=[op_put(b"%d" % i) for i in range(4)]) == many
    assert txn(s, compare=[cmp(b"a", EQ, 0)] * 4) == many
    assert txn(s, success=[op_put(b"%d" % i) for i in range(3)]).succeeded
    # a nested txn may use what its parent leaves: 3 - 2 = 1 op
    assert txn(s, success=[op_get(b"x"), op_txn(success=[op_get(b"y"), op_get(b"z")])]) == many
    assert txn(s, success=[op_get(b"x"), op_txn(success=[op_get(b"y")])]).succeeded
    assert MvccStore().max_txn_ops == 128


def test_txn_validation_errors() -> None:
    s = MvccStore()
    empty = ErrorResult(int(GrpcCode.INVALID_ARGUMENT), MSG_EMPTY_KEY)
    assert txn(s, compare=[cmp(b"", EQ, 0)]) == empty
    assert txn(s, failure=[op_txn(success=[op_get(b"")])]) == empty


def test_txn_checks_lease_and_ignore_before_applying() -> None:
    s = MvccStore()
    r = txn(s, success=[op_put(b"a"), op_put(b"b", lease=4)])
    assert r == ErrorResult(int(GrpcCode.NOT_FOUND), MSG_LEASE_NOT_FOUND)
    assert s.current_revision == 1 and get(s, b"a").count == 0
    # the failure branch is not checked when the success branch runs
    assert txn(s, success=[op_put(b"a")], failure=[op_put(b"b", lease=4)]).succeeded
    # ignore_value looks at the state before the txn, even after a put in the same txn
    r = txn(s, success=[op_txn(success=[op_put(b"n")]), op_put(b"n2", b"", ignore_value=True)])
    assert r.message == MSG_KEY_NOT_FOUND and get(s, b"n").count == 0
    r = txn(s, success=[op_put(b"a", b"", ignore_value=True), op_get(b"a")])
    assert r.responses[1].response_range.kvs[0].value == b"v"


def test_txn_ignore_value_after_delete_rolls_back() -> None:
    s = MvccStore()
    put(s, b"b", b"keep")
    rev = s.current_revision
    # etcd's duplicate check lets this through (a "\0" range end) and then fails mid-txn;
    # pnyx answers key-not-found and applies none of the txn.
    r = txn(s, success=[op_put(b"a"), op_del(b"a", range_end=b"\x00"),
                        op_put(b"b", b"", ignore_value=True)])
    assert r.message == MSG_KEY_NOT_FOUND
    assert s.current_revision == rev and get(s, b"a").count == 0
    assert get(s, b"b").kvs[0].value == b"keep"
    s.invariants()


def test_txn_range_revision_checks() -> None:
    s = MvccStore()
    put(s, b"a")
    put(s, b"a")
    assert txn(s, success=[op_get(b"a", revision=9)]).message == MSG_FUTURE_REV
    # a range at the txn's own new revision is refused too (checked before the writes)
    assert txn(s, success=[op_put(b"b"), op_get(b"b", revision=4)]).message == MSG_FUTURE_REV
    s.compact(3)
    assert txn(s, success=[op_get(b"a", revision=2)]).message == MSG_COMPACTED
    r = txn(s, success=[op_get(b"a", revision=3)])
    assert r.responses[0].response_range.kvs[0].version == 2


def test_duplicate_key_else_branch_rule() -> None:
    s = MvccStore()
    # then/else of one nested txn may share a key, but another nested txn's else may not
    # reuse a key an earlier sibling puts (etcd's checkIntervals putsElse rule)
    assert txn(s, success=[op_txn(success=[op_put(b"a")]), op_txn(failure=[op_put(b"a")])]) == DUP
    assert txn(s, success=[op_txn(failure=[op_del(b"a")]), op_txn(failure=[op_put(b"b")]),
                           op_put(b"a")]) == DUP
    never = [cmp(b"missing", EQ, CompareTarget.VALUE, value=b"")]  # a missing value fails
    r = txn(s, never, failure=[op_txn(success=[op_put(b"a")], failure=[op_put(b"a")]),
                               op_put(b"b")])
    assert r.succeeded is False and r.responses[0].response_txn.succeeded is True
    assert s.current_revision == 2 and get(s, b"a").count == get(s, b"b").count == 1

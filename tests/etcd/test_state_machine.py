"""EtcdStateMachine: what a Raft node applies (commands over the wire, sessions, snapshots)."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from pnyx.protocols.etcd import (
    CompactionRequest,
    DeleteRangeRequest,
    ErrorResult,
    EtcdStateMachine,
    EtcdStore,
    GrpcCode,
    LeaseGrantRequest,
    LeaseGrantResponse,
    LeaseLeasesRequest,
    LeaseRevokeRequest,
    MvccCorrupted,
    PutRequest,
    PutResponse,
    RangeRequest,
    RangeResponse,
    RequestOp,
    TxnRequest,
    TxnResponse,
    decode_command,
    decode_result,
)
from pnyx.protocols.raft.sessions import (
    OPEN_SESSION,
    SESSION_EXPIRED,
    SessionCommand,
)


def wire(value: Any) -> Any:
    """What a value looks like after the Raft log / WAL / transport (untyped msgpack)."""
    return msgspec.msgpack.decode(msgspec.msgpack.encode(value))


def open_session(sm: EtcdStateMachine) -> int:
    sid = sm.apply(SessionCommand(0, 0, OPEN_SESSION))
    assert isinstance(sid, int)
    return sid


REQUESTS = [
    RangeRequest(key=b"a", range_end=b"\0", limit=3),
    PutRequest(key=b"k", value=b"v", lease=7, prev_kv=True),
    DeleteRangeRequest(key=b"a", range_end=b"z"),
    TxnRequest(
        success=[
            RequestOp(request_put=PutRequest(key=b"x")),
            RequestOp(
                request_txn=TxnRequest(failure=[RequestOp(request_range=RangeRequest(key=b"y"))])
            ),
        ]
    ),
    LeaseGrantRequest(TTL=5, ID=3),
    LeaseRevokeRequest(ID=3),
    LeaseLeasesRequest(),
]


@pytest.mark.parametrize("request_", REQUESTS, ids=lambda r: type(r).__name__)
def test_every_command_survives_a_msgpack_round_trip(request_: Any) -> None:
    raw = wire(request_)
    assert isinstance(raw, dict) and "type" in raw
    assert decode_command(raw) == request_
    assert decode_command(request_) is request_


def test_a_malformed_command_gets_the_same_error_everywhere() -> None:
    store = EtcdStore()
    for junk in ({"type": "nope"}, {"key": b"k"}, 42, "put", {"type": "put", "key": 3}):
        result = store.apply(junk)
        assert isinstance(result, ErrorResult), junk
        assert result.code == GrpcCode.INVALID_ARGUMENT
    assert store.current_revision == 1


def test_untyped_session_commands_apply_like_typed_ones() -> None:
    typed, untyped = EtcdStateMachine(), EtcdStateMachine()
    for sm, conv in ((typed, lambda v: v), (untyped, wire)):
        sid = sm.apply(conv(SessionCommand(0, 0, OPEN_SESSION)))
        r1 = sm.apply(conv(SessionCommand(sid, 1, PutRequest(key=b"k", value=b"1"))))
        r2 = sm.apply(conv(SessionCommand(sid, 2, PutRequest(key=b"k", value=b"2", prev_kv=True))))
        assert isinstance(r1, PutResponse) and isinstance(r2, PutResponse)
        assert r2.prev_kv is not None and r2.prev_kv.value == b"1"
    assert typed.store.snapshot() == untyped.store.snapshot()


def test_a_retried_write_applies_once_and_gets_the_first_reply() -> None:
    sm = EtcdStateMachine()
    sid = open_session(sm)
    cmd = SessionCommand(sid, 1, PutRequest(key=b"k", value=b"v"))
    first = sm.apply(cmd)
    again = sm.apply(wire(cmd))
    assert again == first
    assert sm.store.current_revision == 2
    got = sm.apply(RangeRequest(key=b"k"))
    assert isinstance(got, RangeResponse) and got.kvs[0].version == 1


def test_a_retry_after_restore_gets_the_typed_first_reply() -> None:
    sm = EtcdStateMachine()
    sid = open_session(sm)
    grant = SessionCommand(sid, 1, LeaseGrantRequest(TTL=60))
    first = sm.apply(grant)
    assert isinstance(first, LeaseGrantResponse) and first.ID != 0
    bad = SessionCommand(sid, 2, PutRequest(key=b"k", lease=12345))
    refused = sm.apply(bad)
    assert isinstance(refused, ErrorResult) and refused.code == GrpcCode.NOT_FOUND
    other = EtcdStateMachine()
    other.restore(sm.snapshot())
    assert other.apply(wire(bad)) == refused
    txn = SessionCommand(sid, 3, TxnRequest(success=[RequestOp(request_put=PutRequest(key=b"t"))]))
    done = sm.apply(txn)
    other.restore(sm.snapshot())
    again = other.apply(txn)
    assert isinstance(again, TxnResponse) and again == done
    assert other.store.snapshot() == sm.store.snapshot()


def test_session_answers_pass_through() -> None:
    sm = EtcdStateMachine()
    assert sm.apply(SessionCommand(99, 1, PutRequest(key=b"k"))) == SESSION_EXPIRED
    assert sm.store.current_revision == 1


def test_decode_result_leaves_unknowns_alone() -> None:
    assert decode_result(PutRequest(key=b"k"), None) is None
    assert decode_result({"type": "bogus"}, {"x": 1}) == {"x": 1}
    assert decode_result(PutRequest(key=b"k"), [5, "m"]) == ErrorResult(5, "m")


def test_server_chosen_lease_ids_are_deterministic_and_distinct() -> None:
    a, b = EtcdStore(), EtcdStore()
    ids_a = [a.apply(LeaseGrantRequest(TTL=10)).ID for _ in range(50)]
    ids_b = [b.apply(wire(LeaseGrantRequest(TTL=10))).ID for _ in range(50)]
    assert ids_a == ids_b
    assert len(set(ids_a)) == 50 and all(0 < i < 2**63 for i in ids_a)


def test_restore_refuses_a_key_on_an_unknown_lease_and_keeps_state() -> None:
    store = EtcdStore()
    store.apply(LeaseGrantRequest(TTL=10, ID=1))
    store.apply(PutRequest(key=b"k", lease=1))
    image = msgspec.msgpack.decode(store.snapshot())
    image[2] = []  # drop the lease, keep the key attached to it
    before = store.snapshot()
    with pytest.raises(MvccCorrupted):
        store.restore(msgspec.msgpack.encode(image))
    with pytest.raises(MvccCorrupted):
        store.restore(b"\x01garbage")
    assert store.snapshot() == before


def test_snapshot_keeps_the_history_watchers_replay() -> None:
    store = EtcdStore()
    store.apply(LeaseGrantRequest(TTL=10, ID=4))
    for i in range(6):
        store.apply(PutRequest(key=b"k%d" % (i % 3), value=b"%d" % i, lease=4 if i % 2 else 0))
    store.apply(DeleteRangeRequest(key=b"k1"))
    store.apply(CompactionRequest(revision=3))
    store.apply(LeaseRevokeRequest(ID=4))
    other = EtcdStore()
    other.restore(store.snapshot())
    for after in range(3, store.current_revision + 1):
        assert other.mvcc.events_between(b"k", b"l", after, 99) == store.mvcc.events_between(
            b"k", b"l", after, 99
        )
    assert other.mvcc.compact_revision == 3
    assert other.current_revision == store.current_revision

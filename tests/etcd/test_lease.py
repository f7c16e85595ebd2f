"""Leases: the replicated lease table (grant, revoke, attachments, snapshot) and the
leader's Lessor (keep-alive, time-to-live, expiry, promote across leader changes)."""

from __future__ import annotations

from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from pnyx.protocols.etcd import (
    MAX_LEASE_TTL_S,
    DeleteRangeRequest,
    ErrorResult,
    EtcdStore,
    GrpcCode,
    LeaseGrantRequest,
    LeaseGrantResponse,
    LeaseKeepAliveResponse,
    LeaseLeasesRequest,
    LeaseRevokeRequest,
    LeaseRevokeResponse,
    LeaseTimeToLiveRequest,
    LeaseTimeToLiveResponse,
    PutRequest,
    RangeRequest,
    RequestOp,
    TxnRequest,
    min_lease_ttl_s,
)
from pnyx.protocols.etcd.errors import (
    MSG_LEASE_EXIST,
    MSG_LEASE_NOT_FOUND,
    MSG_LEASE_TTL_TOO_LARGE,
    MSG_NOT_LEADER,
)


def grant(store: EtcdStore, ttl_s: int, lease_id: int = 0) -> Any:
    return store.apply(LeaseGrantRequest(TTL=ttl_s, ID=lease_id))


def live_keys(store: EtcdStore) -> list[bytes]:
    resp = store.apply(RangeRequest(key=b"\0", range_end=b"\0"))
    return [kv.key for kv in resp.kvs]


# --------------------------------------------------------------------------- grant


def test_min_lease_ttl_follows_the_election_timeout() -> None:
    assert min_lease_ttl_s(10, 100) == 2  # etcd defaults: 1.5 s rounded up
    assert min_lease_ttl_s(5, 1000) == 7  # (3*5)//2 = 7 heartbeats of 1 s
    assert min_lease_ttl_s(3, 333) == 2  # 4 x 333 ms = 1.332 s -> 2


def test_grant_with_own_id_and_errors() -> None:
    store = EtcdStore(min_lease_ttl_s=2)
    resp = grant(store, 60, 0x42)
    assert isinstance(resp, LeaseGrantResponse)
    assert (resp.ID, resp.TTL, resp.header.revision) == (0x42, 60, 1)
    again = grant(store, 30, 0x42)
    assert again == ErrorResult(GrpcCode.FAILED_PRECONDITION, MSG_LEASE_EXIST)
    too_large = grant(store, MAX_LEASE_TTL_S + 1)
    assert too_large == ErrorResult(GrpcCode.OUT_OF_RANGE, MSG_LEASE_TTL_TOO_LARGE)
    assert grant(store, MAX_LEASE_TTL_S).TTL == MAX_LEASE_TTL_S
    assert store.current_revision == 1  # granting changes no key


def test_a_short_ttl_is_raised_to_the_minimum() -> None:
    store = EtcdStore(min_lease_ttl_s=5)
    assert grant(store, 1).TTL == 5
    assert grant(store, 0).TTL == 5
    assert grant(store, -3).TTL == 5
    assert grant(store, 6).TTL == 6


def test_server_chosen_ids_skip_ids_already_taken() -> None:
    probe = EtcdStore()
    first = grant(probe, 10).ID
    store = EtcdStore()
    assert first == grant(store, 10, first).ID
    chosen = grant(store, 10).ID
    assert chosen not in (0, first)


def test_leases_lists_every_lease() -> None:
    store = EtcdStore()
    for lease_id in (9, 3, 5):
        grant(store, 10, lease_id)
    store.apply(LeaseRevokeRequest(ID=5))
    resp = store.apply(LeaseLeasesRequest())
    assert [s.ID for s in resp.leases] == [3, 9]


# --------------------------------------------------------------------------- revoke


def test_revoke_deletes_attached_keys_in_one_revision() -> None:
    store = EtcdStore()
    grant(store, 10, 1)
    grant(store, 10, 2)
    for key, lease in ((b"c", 1), (b"a", 1), (b"b", 2), (b"z", 0)):
        store.apply(PutRequest(key=key, lease=lease))
    assert store.current_revision == 5
    resp = store.apply(LeaseRevokeRequest(ID=1))
    assert isinstance(resp, LeaseRevokeResponse) and resp.header.revision == 6
    assert live_keys(store) == [b"b", b"z"]
    (rev, events) = store.mvcc.recent[-1]
    assert rev == 6 and [e.kv.key for e in events if e.kv] == [b"a", b"c"]
    assert [e.prev_kv.lease for e in events if e.prev_kv] == [1, 1]


def test_revoke_without_keys_makes_no_revision_and_unknown_is_not_found() -> None:
    store = EtcdStore()
    grant(store, 10, 1)
    resp = store.apply(LeaseRevokeRequest(ID=1))
    assert resp.header.revision == 1 and store.current_revision == 1
    gone = store.apply(LeaseRevokeRequest(ID=1))
    assert gone == ErrorResult(GrpcCode.NOT_FOUND, MSG_LEASE_NOT_FOUND)
    assert store.apply(PutRequest(key=b"k", lease=1)) == gone
    assert (
        store.apply(TxnRequest(success=[RequestOp(request_put=PutRequest(key=b"k", lease=1))]))
        == gone
    )


def test_attachments_follow_puts_and_deletes() -> None:
    store = EtcdStore()
    grant(store, 10, 1)
    grant(store, 10, 2)
    store.apply(PutRequest(key=b"moved", lease=1))
    store.apply(PutRequest(key=b"moved", lease=2))  # re-attached to lease 2
    store.apply(PutRequest(key=b"unleased", lease=1))
    store.apply(PutRequest(key=b"unleased"))  # a put without lease detaches
    store.apply(PutRequest(key=b"kept", lease=1))
    store.apply(PutRequest(key=b"kept", value=b"new", ignore_lease=True))  # keeps lease 1
    store.apply(PutRequest(key=b"deleted", lease=1))
    store.apply(DeleteRangeRequest(key=b"deleted"))
    store.apply(PutRequest(key=b"deleted"))
    assert store.leases.keys_of(1) == [b"kept"]
    assert store.leases.keys_of(2) == [b"moved"]
    store.apply(LeaseRevokeRequest(ID=1))
    assert live_keys(store) == [b"deleted", b"moved", b"unleased"]


def test_snapshot_round_trips_leases_attachments_and_the_id_generator() -> None:
    store = EtcdStore(min_lease_ttl_s=3)
    a = grant(store, 100).ID
    grant(store, 1, 7)
    store.apply(PutRequest(key=b"k1", lease=a))
    store.apply(PutRequest(key=b"k2", lease=7))
    store.apply(PutRequest(key=b"k3", lease=a))
    image = store.snapshot()
    other = EtcdStore(min_lease_ttl_s=3)
    other.restore(image)
    assert other.snapshot() == image
    assert other.leases.ttl_s == {a: 100, 7: 3}
    assert other.leases.keys_of(a) == [b"k1", b"k3"]
    assert grant(other, 5).ID == grant(store, 5).ID  # same next server-chosen id
    other.apply(LeaseRevokeRequest(ID=a))
    assert live_keys(other) == [b"k2"]


def test_restore_then_replay_equals_straight_apply() -> None:
    """A node that restores a snapshot and applies the rest of the log ends in the state
    of a node that applied everything."""
    ops: list[Any] = [
        LeaseGrantRequest(TTL=10),
        LeaseGrantRequest(TTL=10, ID=5),
        PutRequest(key=b"a", lease=5),
        PutRequest(key=b"b"),
        LeaseGrantRequest(TTL=10),
        LeaseRevokeRequest(ID=5),
        PutRequest(key=b"c"),
    ]
    straight = EtcdStore()
    for op in ops:
        straight.apply(op)
    for cut in range(len(ops) + 1):
        first = EtcdStore()
        for op in ops[:cut]:
            first.apply(op)
        second = EtcdStore()
        second.restore(first.snapshot())
        for op in ops[cut:]:
            second.apply(msgspec.msgpack.decode(msgspec.msgpack.encode(op)))
        assert second.snapshot() == straight.snapshot()


# --------------------------------------------------------------------------- lessor


def test_lessor_calls_on_a_follower_say_not_leader() -> None:
    store = EtcdStore()
    grant(store, 10, 1)
    lessor = store.new_lessor()
    not_leader = ErrorResult(GrpcCode.UNAVAILABLE, MSG_NOT_LEADER)
    assert lessor.keep_alive(1, 0) == not_leader
    assert lessor.time_to_live(LeaseTimeToLiveRequest(ID=1), 0) == not_leader
    assert lessor.expired(10**9) == []
    lessor.promote(0)
    lessor.demote()
    assert lessor.expired(10**9) == [] and lessor.keep_alive(1, 0) == not_leader


def test_keep_alive_renews_from_now_and_reports_the_granted_ttl() -> None:
    store = EtcdStore(min_lease_ttl_s=2)
    grant(store, 10, 1)
    lessor = store.new_lessor()
    lessor.promote(1_000)
    assert lessor.expired(10_999) == []
    resp = lessor.keep_alive(1, 9_000)
    assert isinstance(resp, LeaseKeepAliveResponse) and (resp.ID, resp.TTL) == (1, 10)
    assert lessor.expired(18_999) == []
    assert lessor.expired(19_000) == [1]
    gone = lessor.keep_alive(1, 19_000)  # expired, revoke pending: not renewed
    assert isinstance(gone, LeaseKeepAliveResponse) and gone.TTL == 0
    unknown = lessor.keep_alive(77, 0)
    assert isinstance(unknown, LeaseKeepAliveResponse) and (unknown.ID, unknown.TTL) == (77, 0)


def test_time_to_live_remaining_granted_and_keys() -> None:
    store = EtcdStore(min_lease_ttl_s=2)
    grant(store, 10, 1)
    store.apply(PutRequest(key=b"y", lease=1))
    store.apply(PutRequest(key=b"x", lease=1))
    lessor = store.new_lessor()
    lessor.promote(0)
    resp = lessor.time_to_live(LeaseTimeToLiveRequest(ID=1, keys=True), 2_500)
    assert isinstance(resp, LeaseTimeToLiveResponse)
    assert (resp.ID, resp.TTL, resp.grantedTTL, resp.keys) == (1, 7, 10, [b"x", b"y"])
    assert resp.header.revision == 3
    no_keys = lessor.time_to_live(LeaseTimeToLiveRequest(ID=1), 10_500)
    assert (no_keys.TTL, no_keys.keys) == (0, [])
    unknown = lessor.time_to_live(LeaseTimeToLiveRequest(ID=2), 0)
    assert (unknown.ID, unknown.TTL, unknown.grantedTTL) == (2, -1, 0)


def test_expired_ids_are_offered_once_then_again_after_the_retry_interval() -> None:
    store = EtcdStore(min_lease_ttl_s=2)
    grant(store, 2, 1)
    grant(store, 3, 2)
    lessor = store.new_lessor(revoke_retry_ms=500, max_revokes_per_call=1)
    lessor.promote(0)
    assert lessor.next_deadline_ms() == 2_000
    assert lessor.expired(5_000) == [1]  # earliest deadline first, one per call
    assert lessor.expired(5_000) == [2]
    assert lessor.expired(5_100) == []
    assert lessor.expired(5_500) == [1]  # the revoke never came: offered again
    store.apply(LeaseRevokeRequest(ID=1))
    store.apply(LeaseRevokeRequest(ID=2))
    assert lessor.expired(9_000) == [] and lessor.deadline_ms == {}


def test_a_lease_granted_while_leader_starts_its_ttl_when_the_lessor_sees_it() -> None:
    store = EtcdStore(min_lease_ttl_s=2)
    lessor = store.new_lessor()
    lessor.promote(0)
    grant(store, 5, 1)
    assert lessor.remaining_ms(1, 1_000) == 5_000
    assert lessor.expired(5_999) == [] and lessor.expired(6_000) == [1]
    # Revoked and granted again between two looks: a new lease, a new full TTL.
    store.apply(LeaseRevokeRequest(ID=1))
    grant(store, 5, 1)
    assert lessor.expired(6_500) == []
    assert lessor.remaining_ms(1, 6_500) == 5_000


def test_promote_extends_every_lease_to_a_full_ttl() -> None:
    store = EtcdStore(min_lease_ttl_s=2)
    grant(store, 10, 1)
    old, new = store.new_lessor(), store.new_lessor()
    old.promote(0)
    assert old.keep_alive(1, 8_000).TTL == 10
    old.demote()
    new.promote(12_000)  # the old leader's deadline was 18 s; the new one says 22 s
    assert new.expired(21_999) == []
    assert new.expired(22_000) == [1]


# --------------------------------------------------------------------------- leader changes


class _Cluster:
    """Replicas applying the same log; the leader's Lessor decides expiry."""

    def __init__(self, n: int) -> None:
        self.stores = [EtcdStore(min_lease_ttl_s=1) for _ in range(n)]
        self.lessors = [s.new_lessor(revoke_retry_ms=1_000) for s in self.stores]
        self.leader = 0
        self.lessors[0].promote(0)
        self.renewed_ms: dict[int, int] = {}
        """Last moment a client was told its lease is alive (grant or keep-alive)."""
        self.ttl_s: dict[int, int] = {}

    def apply(self, command: Any) -> Any:
        results = [s.apply(command) for s in self.stores]
        if any(r != results[0] for r in results):
            raise AssertionError(f"replicas disagree on {command}: {results}")
        return results[0]


def _revoke_expired(c: _Cluster, now_ms: int) -> None:
    for lease_id in c.lessors[c.leader].expired(now_ms):
        alive_ms = now_ms - c.renewed_ms[lease_id]
        assert alive_ms >= 1000 * c.ttl_s[lease_id], (lease_id, alive_ms)
        c.apply(LeaseRevokeRequest(ID=lease_id))
        assert b"k%d" % lease_id not in live_keys(c.stores[0])


def _advance(c: _Cluster, now_ms: int, to_ms: int) -> int:
    """Move time to ``to_ms``, stopping at every deadline on the way (so a deadline that
    is too early is caught at the very moment it fires)."""
    while True:
        deadline = c.lessors[c.leader].next_deadline_ms()
        if deadline is None or deadline > to_ms:
            break
        now_ms = max(now_ms, deadline)
        _revoke_expired(c, now_ms)
        if c.lessors[c.leader].next_deadline_ms() == deadline:
            break  # offered already, its revoke retried later
    _revoke_expired(c, to_ms)
    return to_ms


_LEASE_ACTIONS = st.one_of(
    st.tuples(st.just("grant"), st.integers(1, 5)),
    st.tuples(st.just("advance"), st.sampled_from([1, 100, 499, 500, 1_000, 3_000])),
    st.tuples(st.just("leader"), st.integers(0, 2)),
    st.tuples(st.just("advance"), st.sampled_from([1, 100, 499, 500, 1_000, 3_000])),
    st.tuples(st.just("keep_alive"), st.integers(0, 7)),
    st.tuples(st.just("leader"), st.integers(0, 2)),
    st.tuples(st.just("revoke"), st.integers(0, 7)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_LEASE_ACTIONS, max_size=40))
def test_no_lease_expires_before_its_ttl_across_leader_changes(actions: list[Any]) -> None:
    c = _Cluster(3)
    now_ms = 0
    ids: list[int] = []
    for kind, arg in actions:
        lessor = c.lessors[c.leader]
        if kind == "grant":
            resp = c.apply(LeaseGrantRequest(TTL=arg))
            ids.append(resp.ID)
            c.renewed_ms[resp.ID], c.ttl_s[resp.ID] = now_ms, resp.TTL
            c.apply(PutRequest(key=b"k%d" % resp.ID, lease=resp.ID))
        elif kind == "keep_alive" and ids:
            lease_id = ids[arg % len(ids)]
            resp = lessor.keep_alive(lease_id, now_ms)
            if resp.TTL > 0:
                c.renewed_ms[lease_id] = now_ms
        elif kind == "advance":
            now_ms = _advance(c, now_ms, now_ms + arg)
        elif kind == "leader":
            lessor.demote()
            c.leader = arg
            c.lessors[arg].promote(now_ms)
        elif kind == "revoke" and ids:
            c.apply(LeaseRevokeRequest(ID=ids[arg % len(ids)]))
        _revoke_expired(c, now_ms)
    # Liveness: with time enough, every lease still there is reported expired.
    now_ms += 10_000
    expired = set(c.lessors[c.leader].expired(now_ms))
    assert expired == set(c.stores[0].leases.ids())

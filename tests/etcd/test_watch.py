"""The watch hub: create/cancel/progress, history replay, compaction, filters, prev_kv,
fragments, bounded outboxes, and lease revokes as DELETE events."""

from __future__ import annotations

from typing import Any

from pnyx.protocols.etcd import (
    CompactionRequest,
    DeleteRangeRequest,
    EtcdStore,
    Event,
    EventType,
    FilterType,
    KeyValue,
    LeaseGrantRequest,
    LeaseRevokeRequest,
    PutRequest,
    RequestOp,
    TxnRequest,
    WatchCancelRequest,
    WatchCreateRequest,
    WatchProgressRequest,
    WatchRequest,
    WatchResponse,
)
from pnyx.protocols.etcd.errors import MSG_COMPACTED
from pnyx.protocols.etcd.watch import (
    INVALID_WATCH_ID,
    MSG_DUPLICATE_WATCH_ID,
    MSG_EMPTY_WATCHER_RANGE,
    WatchHub,
)


def create(hub: WatchHub, stream: int, key: bytes, **kw: Any) -> None:
    hub.request(stream, WatchRequest(create_request=WatchCreateRequest(key=key, **kw)))


def put(store: EtcdStore, key: bytes, value: bytes = b"v", **kw: Any) -> None:
    store.apply(PutRequest(key=key, value=value, **kw))


def events(responses: list[WatchResponse]) -> list[tuple[int, bytes, int]]:
    """(type, key, mod_revision) of every event, in order."""
    return [(e.type, e.kv.key, e.kv.mod_revision) for r in responses for e in r.events if e.kv]


def setup(**kw: Any) -> tuple[EtcdStore, WatchHub, int]:
    store = EtcdStore()
    hub = WatchHub(store, **kw)
    return store, hub, hub.open_stream()


PUT, DELETE = EventType.PUT, EventType.DELETE


def test_create_answers_created_then_streams_new_revisions() -> None:
    store, hub, s = setup()
    put(store, b"a")
    hub.advance()
    create(hub, s, b"a")
    create(hub, s, b"b", range_end=b"c")
    created = hub.take(s)
    assert [(r.watch_id, r.created, r.header.revision) for r in created] == [
        (0, True, 2),
        (1, True, 2),
    ]
    put(store, b"a")
    put(store, b"b1")
    put(store, b"zz")
    hub.advance()
    out = hub.take(s)
    assert [(r.watch_id, r.header.revision) for r in out] == [(0, 3), (1, 4)]
    assert events(out) == [(PUT, b"a", 3), (PUT, b"b1", 4)]
    assert hub.take(s) == []


def test_refused_creates() -> None:
    _, hub, s = setup()
    create(hub, s, b"k", watch_id=7)
    create(hub, s, b"k", watch_id=7)
    create(hub, s, b"b", range_end=b"a")
    create(hub, s, b"b", range_end=b"b")
    create(hub, s, b"k", start_revision=-1)
    out = hub.take(s)
    assert (out[0].watch_id, out[0].created, out[0].canceled) == (7, True, False)
    refused = [(r.watch_id, r.created, r.canceled, r.cancel_reason) for r in out[1:]]
    assert refused == [
        (INVALID_WATCH_ID, True, True, MSG_DUPLICATE_WATCH_ID),
        (INVALID_WATCH_ID, True, True, MSG_EMPTY_WATCHER_RANGE),
        (INVALID_WATCH_ID, True, True, MSG_EMPTY_WATCHER_RANGE),
        (INVALID_WATCH_ID, True, True, MSG_COMPACTED),
    ]
    assert len(hub.watchers(s)) == 1


def test_auto_ids_skip_ids_taken_and_are_per_stream() -> None:
    _, hub, s = setup()
    create(hub, s, b"k", watch_id=1)
    create(hub, s, b"k")
    create(hub, s, b"k")
    other = hub.open_stream()
    create(hub, other, b"k")
    assert [r.watch_id for r in hub.take(s)] == [1, 0, 2]
    assert [r.watch_id for r in hub.take(other)] == [0]


def test_history_replay_with_prev_kv_and_range_rules() -> None:
    store, hub, s = setup()
    put(store, b"a", b"1")  # 2
    put(store, b"b", b"1")  # 3
    put(store, b"a", b"2")  # 4
    store.apply(DeleteRangeRequest(key=b"a"))  # 5
    put(store, b"c", b"1")  # 6
    create(hub, s, b"a", start_revision=3, prev_kv=True)
    create(hub, s, b"a", range_end=b"\0", start_revision=1)
    out = hub.take(s)
    single = [r for r in out if r.watch_id == 0 and r.events]
    assert events(single) == [(PUT, b"a", 4), (DELETE, b"a", 5)]
    put_ev, del_ev = single[0].events
    assert put_ev.prev_kv is not None and put_ev.prev_kv.value == b"1"
    assert del_ev.kv == KeyValue(key=b"a", mod_revision=5)
    assert del_ev.prev_kv is not None and del_ev.prev_kv.value == b"2"
    assert single[0].header.revision == 6
    from_key = [r for r in out if r.watch_id == 1 and r.events]
    assert events(from_key) == [
        (PUT, b"a", 2),
        (PUT, b"b", 3),
        (PUT, b"a", 4),
        (DELETE, b"a", 5),
        (PUT, b"c", 6),
    ]
    assert all(e.prev_kv is None for r in from_key for e in r.events)


def test_a_future_start_revision_waits() -> None:
    store, hub, s = setup()
    create(hub, s, b"k", start_revision=4)
    for _ in range(4):
        put(store, b"k")
    hub.advance()
    out = hub.take(s)
    assert events(out) == [(PUT, b"k", 4), (PUT, b"k", 5)]


def test_a_compacted_start_is_canceled_with_the_compact_revision() -> None:
    store, hub, s = setup()
    for _ in range(5):
        put(store, b"k")
    store.apply(CompactionRequest(revision=4))
    create(hub, s, b"k", start_revision=3)
    out = hub.take(s)
    assert (out[0].created, out[0].canceled) == (True, False)
    assert (out[1].canceled, out[1].compact_revision, out[1].events) == (True, 4, [])
    assert out[1].watch_id == out[0].watch_id and hub.watchers(s) == []
    create(hub, s, b"k", start_revision=4)  # the compact revision itself is still readable
    assert events(hub.take(s)) == [(PUT, b"k", 4), (PUT, b"k", 5), (PUT, b"k", 6)]


def test_a_lagging_watcher_whose_history_is_compacted_is_canceled() -> None:
    store, hub, s = setup(max_pending_responses=1)
    create(hub, s, b"k")
    hub.take(s)
    for _ in range(4):
        put(store, b"k")
        hub.advance()  # the outbox fills: the watcher falls behind
    store.apply(CompactionRequest(revision=5))
    hub.advance()
    out = hub.take(s) + hub.take(s)
    assert events(out) == [(PUT, b"k", 2)]
    assert out[-1].canceled and out[-1].compact_revision == 5


def test_one_txn_is_one_revision_in_sub_revision_order() -> None:
    store, hub, s = setup()
    put(store, b"x")
    create(hub, s, b"a", range_end=b"z")
    hub.take(s)
    ops = [
        RequestOp(request_put=PutRequest(key=b"m")),
        RequestOp(request_delete_range=DeleteRangeRequest(key=b"x")),
        RequestOp(request_put=PutRequest(key=b"b")),
    ]
    store.apply(TxnRequest(success=ops))
    hub.advance()
    out = hub.take(s)
    assert len(out) == 1 and out[0].header.revision == 3
    assert events(out) == [(PUT, b"m", 3), (DELETE, b"x", 3), (PUT, b"b", 3)]


def test_filters() -> None:
    store, hub, s = setup()
    create(hub, s, b"k", filters=[FilterType.NOPUT])
    create(hub, s, b"k", filters=[FilterType.NODELETE])
    hub.take(s)
    put(store, b"k")
    store.apply(DeleteRangeRequest(key=b"k"))
    hub.advance()
    out = hub.take(s)
    assert [(r.watch_id, events([r])) for r in out] == [
        (1, [(PUT, b"k", 2)]),
        (0, [(DELETE, b"k", 3)]),
    ]


def test_a_lease_revoke_is_delete_events_at_one_revision() -> None:
    store, hub, s = setup()
    store.apply(LeaseGrantRequest(TTL=10, ID=9))
    put(store, b"l1", lease=9)
    put(store, b"l2", lease=9)
    create(hub, s, b"l", range_end=b"m", prev_kv=True)
    hub.take(s)
    store.apply(LeaseRevokeRequest(ID=9))
    hub.advance()
    out = hub.take(s)
    assert events(out) == [(DELETE, b"l1", 4), (DELETE, b"l2", 4)]
    assert [e.prev_kv.lease for e in out[0].events if e.prev_kv] == [9, 9]


def test_cancel() -> None:
    store, hub, s = setup()
    create(hub, s, b"k")
    hub.take(s)
    hub.request(s, WatchRequest(cancel_request=WatchCancelRequest(watch_id=0)))
    hub.request(s, WatchRequest(cancel_request=WatchCancelRequest(watch_id=42)))
    put(store, b"k")
    hub.advance()
    out = hub.take(s)
    assert [(r.watch_id, r.canceled, r.events) for r in out] == [(0, True, [])]


def test_progress_request_reports_the_revision_once_all_watchers_are_synced() -> None:
    store, hub, s = setup(max_pending_responses=2, batch_revisions=1)
    for _ in range(3):
        put(store, b"k")
    create(hub, s, b"k", start_revision=1)
    hub.request(s, WatchRequest(progress_request=WatchProgressRequest()))
    out: list[WatchResponse] = []
    for _ in range(5):
        out += hub.take(s)
    progress = [r for r in out if r.watch_id == INVALID_WATCH_ID]
    assert len(progress) == 1 and progress[0].header.revision == 4 and not progress[0].events
    assert out[-1] is progress[0]  # after every event it vouches for
    assert events(out) == [(PUT, b"k", 2), (PUT, b"k", 3), (PUT, b"k", 4)]


def test_progress_notify_ticks_only_quiet_watchers_that_asked() -> None:
    store, hub, s = setup()
    create(hub, s, b"a", progress_notify=True)
    create(hub, s, b"b", progress_notify=True)
    create(hub, s, b"c")
    hub.take(s)
    put(store, b"a")
    hub.advance()
    hub.progress_tick()
    out = hub.take(s)
    assert [(r.watch_id, bool(r.events)) for r in out] == [(0, True), (1, False)]
    assert out[1].header.revision == 2
    hub.progress_tick()
    assert [r.watch_id for r in hub.take(s)] == [0, 1]


def test_fragments_split_large_responses_for_watchers_that_ask() -> None:
    store, hub, s = setup(max_response_bytes=300)
    create(hub, s, b"k", range_end=b"l", fragment=True)
    create(hub, s, b"k", range_end=b"l")
    hub.take(s)
    ops = [RequestOp(request_put=PutRequest(key=b"k%d" % i, value=b"x" * 100)) for i in range(5)]
    store.apply(TxnRequest(success=ops))
    hub.advance()
    out = hub.take(s)
    parts = [r for r in out if r.watch_id == 0]
    assert len(parts) > 1
    assert [r.fragment for r in parts] == [True] * (len(parts) - 1) + [False]
    assert events(parts) == [(PUT, b"k%d" % i, 2) for i in range(5)]
    whole = [r for r in out if r.watch_id == 1]
    assert len(whole) == 1 and not whole[0].fragment and len(whole[0].events) == 5


def test_a_stream_that_is_never_read_stays_bounded_then_catches_up_exactly() -> None:
    store, hub, s = setup(max_pending_responses=4, batch_revisions=7)
    create(hub, s, b"k", range_end=b"l")
    for i in range(300):
        put(store, b"k%d" % (i % 5))
        hub.advance()
        assert len(hub._streams[s].outbox) <= 4
    got: list[WatchResponse] = []
    while hub.has_output(s):
        got += hub.take(s, max_responses=3)
    assert events(got) == [(PUT, b"k%d" % (i % 5), i + 2) for i in range(300)]


def test_the_hub_falls_back_to_history_when_recent_events_are_gone() -> None:
    store = EtcdStore(recent_revisions=2)
    hub = WatchHub(store)
    s = hub.open_stream()
    create(hub, s, b"k")
    hub.take(s)
    for _ in range(10):
        put(store, b"k")  # no advance in between: more than recent_revisions behind
    hub.advance()
    out: list[WatchResponse] = []
    while hub.has_output(s):
        out += hub.take(s)
    assert events(out) == [(PUT, b"k", rev) for rev in range(2, 12)]


def test_watchers_continue_across_a_restore() -> None:
    store, hub, s = setup()
    create(hub, s, b"k")
    hub.take(s)
    put(store, b"k")
    hub.advance()
    leader = EtcdStore()
    leader.restore(store.snapshot())
    for _ in range(3):
        put(leader, b"k")
    store.restore(leader.snapshot())  # a follower installs a newer snapshot
    hub.advance()
    out = hub.take(s)
    assert events(out) == [(PUT, b"k", rev) for rev in range(2, 6)]


def test_close_stream_forgets_its_watchers() -> None:
    store, hub, s = setup()
    create(hub, s, b"k")
    create(hub, s, b"a", range_end=b"z")
    hub.close_stream(s)
    put(store, b"k")
    hub.advance()
    assert hub._key_watchers == {} and hub._range_watchers == set()


def test_event_struct_mirrors_mvccpb() -> None:
    assert Event().type == EventType.PUT and Event().kv is None
    assert WatchResponse().watch_id == 0 and WatchResponse().events == []

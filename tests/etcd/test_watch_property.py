"""Property: watchers on random ranges over random writes, deletes, txns, compactions and
lease revokes see exactly the store's history restricted to their range and filters, in
revision order, each event once, whatever the outbox bound, replay batch size, recent-event
window and the moments the server advances and drains."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from pnyx.protocols.etcd import (
    CompactionRequest,
    DeleteRangeRequest,
    EtcdStore,
    Event,
    EventType,
    FilterType,
    LeaseGrantRequest,
    LeaseRevokeRequest,
    PutRequest,
    RequestOp,
    TxnRequest,
    WatchCreateRequest,
    WatchHub,
    WatchRequest,
    WatchResponse,
)

KEYS = [b"a", b"b", b"c", b"d", b"e"]
RANGE_ENDS = [b"", b"", b"\0", b"c", b"e", b"f"]

key_st = st.sampled_from(KEYS)
op_st = st.one_of(
    st.tuples(st.just("put"), key_st, st.integers(0, 3)),
    st.tuples(st.just("delete"), key_st, st.sampled_from([b"", b"c", b"\0"])),
    st.tuples(st.just("txn"), st.lists(key_st, min_size=1, max_size=3, unique=True), st.booleans()),
    st.tuples(st.just("compact"), st.integers(0, 6), st.none()),
    st.tuples(st.just("grant"), st.integers(1, 3), st.none()),
    st.tuples(st.just("revoke"), st.integers(1, 3), st.none()),
    st.tuples(
        st.just("watch"),
        st.tuples(
            st.integers(0, 1),  # stream
            key_st,
            st.sampled_from(RANGE_ENDS),
            st.integers(-1, 8),  # start: -1 = now, else relative to the current revision
            st.booleans(),  # prev_kv
            st.sampled_from([[], [FilterType.NOPUT], [FilterType.NODELETE]]),
        ),
        st.none(),
    ),
    st.tuples(st.just("advance"), st.none(), st.none()),
    st.tuples(st.just("take"), st.integers(0, 1), st.integers(1, 3)),
)


@dataclass
class _Watch:
    key: bytes
    range_end: bytes
    start: int
    prev_kv: bool
    filters: list[int]
    got: list[tuple[int, Event]] = field(default_factory=list)
    compacted_at: int = 0


def _covers(w: _Watch, key: bytes) -> bool:
    if not w.range_end:
        return key == w.key
    if w.range_end == b"\0":
        return key >= w.key
    return w.key <= key < w.range_end


def _wants(w: _Watch, ev: Event) -> bool:
    if ev.type == EventType.PUT:
        return FilterType.NOPUT not in w.filters
    return FilterType.NODELETE not in w.filters


def _apply(store: EtcdStore, kind: str, a: Any, b: Any) -> None:
    if kind == "put":
        store.apply(PutRequest(key=a, value=b"%d" % store.current_revision, lease=b))
    elif kind == "delete":
        store.apply(DeleteRangeRequest(key=a, range_end=b if b > a or b == b"\0" else b""))
    elif kind == "txn":
        ops = [
            RequestOp(request_put=PutRequest(key=k, value=b"t"))
            if b or i % 2 == 0
            else RequestOp(request_delete_range=DeleteRangeRequest(key=k))
            for i, k in enumerate(a)
        ]
        store.apply(TxnRequest(success=ops))
    elif kind == "compact":
        store.apply(CompactionRequest(revision=store.current_revision - a))
    elif kind == "grant":
        store.apply(LeaseGrantRequest(TTL=10, ID=a))
    elif kind == "revoke":
        store.apply(LeaseRevokeRequest(ID=a))


def _collect(
    hub: WatchHub,
    stream: int,
    responses: list[WatchResponse],
    ids: dict[Any, _Watch],
    pending: list[_Watch],
    max_n: int | None = None,
) -> None:
    for r in hub.take(stream, max_n):
        responses.append(r)
        if r.created and not r.canceled:
            ids[(stream, r.watch_id)] = pending.pop(0)
            continue
        w = ids.get((stream, r.watch_id))
        if w is None:
            continue
        if r.compact_revision:
            w.compacted_at = r.compact_revision
        for ev in r.events:
            assert ev.kv is not None and ev.kv.mod_revision <= r.header.revision
            w.got.append((ev.kv.mod_revision, ev))


@settings(max_examples=250, deadline=None)
@given(
    ops=st.lists(op_st, max_size=45),
    max_pending=st.integers(1, 4),
    batch_revisions=st.integers(1, 4),
    recent_revisions=st.sampled_from([1, 3, 1000]),
)
def test_watchers_see_exactly_their_history(
    ops: list[Any], max_pending: int, batch_revisions: int, recent_revisions: int
) -> None:
    store = EtcdStore(recent_revisions=recent_revisions, min_lease_ttl_s=1)
    log: list[tuple[int, Event]] = []
    inner = store.mvcc.on_commit

    def record(rev: int, events: list[Event]) -> None:
        log.extend((rev, ev) for ev in events)
        if inner is not None:
            inner(rev, events)

    store.mvcc.on_commit = record
    hub = WatchHub(store, max_pending_responses=max_pending, batch_revisions=batch_revisions)
    streams = [hub.open_stream(), hub.open_stream()]
    pending: dict[int, list[_Watch]] = {0: [], 1: []}
    ids: dict[Any, _Watch] = {}
    responses: list[WatchResponse] = []
    for kind, a, b in ops:
        if kind == "watch":
            idx, key, range_end, start, prev_kv, filters = a
            if range_end and range_end != b"\0" and range_end <= key:
                range_end = b""
            cur, compact = store.current_revision, store.mvcc.compact_revision
            start_rev = 0 if start < 0 else max(1, cur - 4 + start)
            effective = start_rev if start_rev > 0 else cur + 1
            if effective == compact:
                start_rev = effective = compact + 1  # see test_watch: etcd's edge
            w = _Watch(key, range_end, effective, prev_kv, filters)
            pending[idx].append(w)
            create = WatchCreateRequest(
                key=key,
                range_end=range_end,
                start_revision=start_rev,
                prev_kv=prev_kv,
                filters=filters,
            )
            hub.request(streams[idx], WatchRequest(create_request=create))
            if effective < compact:
                w.compacted_at = -1  # must be canceled
        elif kind == "advance":
            hub.advance()
        elif kind == "take":
            _collect(hub, streams[a], responses, ids, pending[a], b)
        else:
            _apply(store, kind, a, b)
        hub.invariants()
    hub.advance()
    for idx, s in enumerate(streams):
        while hub.has_output(s):
            _collect(hub, s, responses, ids, pending[idx])
    assert not pending[0] and not pending[1]
    for w in ids.values():
        expected = [
            (rev, ev)
            for rev, ev in log
            if rev >= w.start and ev.kv is not None and _covers(w, ev.kv.key) and _wants(w, ev)
        ]
        got = [(rev, ev.type, ev.kv) for rev, ev in w.got]
        want = [(rev, ev.type, ev.kv) for rev, ev in expected]
        if w.compacted_at:
            assert w.compacted_at > 0, "a compacted start must be canceled"
            assert got == want[: len(got)]
            assert all(rev < w.compacted_at for rev, _, _ in got)
            if got and len(got) < len(want):
                assert want[len(got)][0] != got[-1][0], "cut inside a revision"
        else:
            assert got == want
        for (_, ev), (_, exp) in zip(w.got, expected, strict=False):
            assert ev.prev_kv == (exp.prev_kv if w.prev_kv else None)

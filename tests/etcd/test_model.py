"""Random operation sequences: the MVCC store against the reference model, field by field."""

from __future__ import annotations

import os
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pnyx.protocols.etcd import (
    CompactionRequest,
    Compare,
    DeleteRangeRequest,
    MvccStore,
    PutRequest,
    RangeRequest,
    RequestOp,
    TxnRequest,
)
from tests.etcd.model import Model

LIVE_LEASES = {1, 2}
KEYS = [b"a", b"ab", b"abc", b"b", b"c"]
key = st.sampled_from(KEYS)
range_end = st.sampled_from([b"", b"", b"\x00", b"ab", b"b", b"c", b"d", b"a"])
value = st.sampled_from([b"", b"x", b"y", b"z"])
revision = st.integers(min_value=-1, max_value=14)
small_rev = st.sampled_from([0, 0, 0, 2, 4, 7, 12])

ranges = st.builds(
    RangeRequest,
    key=key,
    range_end=range_end,
    limit=st.sampled_from([0, 0, 1, 2, 3]),
    revision=st.one_of(st.just(0), revision),
    sort_order=st.sampled_from([0, 0, 1, 2]),
    sort_target=st.sampled_from([0, 0, 1, 2, 3, 4]),
    keys_only=st.booleans(),
    count_only=st.sampled_from([False, False, False, True]),
    min_mod_revision=small_rev,
    max_mod_revision=small_rev,
    min_create_revision=small_rev,
    max_create_revision=small_rev,
)


@st.composite
def _put(draw: st.DrawFn) -> PutRequest:
    flavour = draw(st.sampled_from(["plain"] * 6 + ["ignore_value", "ignore_lease", "bad"]))
    k, v, prev = draw(key), draw(value), draw(st.booleans())
    if flavour == "ignore_value":
        return PutRequest(key=k, prev_kv=prev, lease=draw(st.sampled_from([0, 1])),
                          ignore_value=True)
    if flavour == "ignore_lease":
        return PutRequest(key=k, value=v, prev_kv=prev, ignore_lease=True)
    if flavour == "bad":  # refused by validation: value/lease given with ignore_*
        return PutRequest(key=k, value=b"q", lease=1, ignore_value=True, ignore_lease=True)
    return PutRequest(key=k, value=v, prev_kv=prev, lease=draw(st.sampled_from([0, 0, 0, 1, 2, 3])))


puts = _put()
deletes = st.builds(DeleteRangeRequest, key=key, range_end=range_end, prev_kv=st.booleans())
compares = st.builds(
    Compare,
    result=st.integers(0, 3),
    target=st.integers(0, 4),
    key=key,
    range_end=st.sampled_from([b"", b"", b"b", b"\x00"]),
    version=st.integers(0, 3),
    create_revision=small_rev,
    mod_revision=small_rev,
    value=value,
    lease=st.integers(0, 2),
)


def _ops(inner: st.SearchStrategy[RequestOp]) -> st.SearchStrategy[list[RequestOp]]:
    return st.lists(inner, max_size=3)


flat_op = st.one_of(
    st.builds(RequestOp, request_range=ranges),
    st.builds(RequestOp, request_put=puts),
    st.builds(RequestOp, request_delete_range=deletes),
)
nested_txn = st.builds(TxnRequest, compare=st.lists(compares, max_size=2),
                       success=_ops(flat_op), failure=_ops(flat_op))
any_op = st.one_of(flat_op, st.builds(RequestOp, request_txn=nested_txn))
txns = st.builds(TxnRequest, compare=st.lists(compares, max_size=3),
                 success=_ops(any_op), failure=_ops(any_op))
compactions = st.builds(CompactionRequest, revision=st.integers(-1, 14))
requests = st.one_of(
    puts, puts, puts, deletes, ranges, ranges, txns, txns, st.just(None), compactions
)


def _probe(store: MvccStore, model: Model) -> None:
    """Every key range at every readable revision answers the same."""
    for rev in range(max(model.compacted, 1), model.rev + 1):
        r = RangeRequest(key=b"\x00", range_end=b"\x00", revision=rev)
        assert store.apply(r) == model.apply(r)


MODEL_EXAMPLES = 2_000 if os.environ.get("PNYX_SOAK") else 100
"""Generated request sequences per run: ``make test`` 100, ``make soak`` 2,000."""


@settings(
    max_examples=MODEL_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(st.lists(requests, min_size=20, max_size=80))
def test_store_matches_model(reqs: list[Any]) -> None:
    store = MvccStore()
    for lease in LIVE_LEASES:
        store.add_lease(lease)
    model = Model(LIVE_LEASES)
    for req in reqs:
        if req is None:  # a snapshot round trip in the middle of the run
            copy = MvccStore()
            copy.restore(store.snapshot())
            assert copy.snapshot() == store.snapshot()
            store = copy
            continue
        got, want = store.apply(req), model.apply(req)
        assert got == want, req
        assert store.current_revision == model.rev
        store.invariants()
    _probe(store, model)

"""Differential tests: pnyx's pure state machines against real etcd 3.4, field by field.

Two pure targets: ``MvccStore`` (KV only; its ``add_lease`` stands in for leases, so it runs
the scenarios without lease revoke/time-to-live) and ``EtcdStateMachine`` (what a node
applies: writes as session commands, leases with revoke deleting keys, time-to-live from
a leader ``Lessor``), each against a real single-member etcd over gRPC.

The same scripted scenarios (:mod:`tests.etcd.scenarios`) and the same random operation
sequences (hypothesis) run against a real single-member etcd over gRPC and against the
store; every response (revisions, versions, create/mod revisions, counts, ``more``,
values, error codes and messages) must be equal once both are in scenario terms.

The store is driven as a server would: etcd's pre-consensus checks (``validate``), then
the request-size limit for requests that are proposals (puts, deletes, compactions and
txns that write; etcd serves reads and read-only txns without a size check), then
``apply``.

**Isolation.** Real etcd's revision grows across scenarios and examples; restarting it per
hypothesis example (~0.3 s each, more when the machine is busy) would dominate the run, so
each run gets a fresh key prefix and relative revisions (see :mod:`tests.etcd.scenarios`):
the comparison is of revision *deltas* from the run's start, which is exactly what a fresh
store's absolute revisions are.  What this cannot reach, because a shared etcd has already
compacted: compacting revision 0 or below on a never-compacted store.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pnyx.protocols.etcd import (
    CompactionRequest,
    DeleteRangeRequest,
    ErrorResult,
    EtcdError,
    EtcdStateMachine,
    GrpcCode,
    LeaseGrantRequest,
    LeaseRevokeRequest,
    LeaseTimeToLiveRequest,
    MvccStore,
    PutRequest,
    RangeRequest,
    TxnRequest,
    check_request_size,
    encoded_size,
    validate,
)
from pnyx.protocols.raft.sessions import OPEN_SESSION, SessionCommand
from tests.etcd.realetcd import RealEtcd, real_etcd  # noqa: F401 (fixture)
from tests.etcd.scenarios import (
    FROMKEY_GAP,
    HASHKV,
    HASHKV_AT_COMPACT,
    LEASE_OPS,
    SCENARIOS,
    GrpcTarget,
    Op,
    Record,
    Session,
    distinct_puts,
    error_record,
    first_difference,
    get,
    operations,
    ranges,
    run_scenario,
    struct_to_dict,
    without_hash,
)


def _writes(r: TxnRequest) -> bool:
    for o in (*r.success, *r.failure):
        if o.request_put is not None or o.request_delete_range is not None:
            return True
        if o.request_txn is not None and _writes(o.request_txn):
            return True
    return False


def _is_proposal(request: Any) -> bool:
    if isinstance(request, TxnRequest):
        return _writes(request)
    return isinstance(
        request,
        PutRequest | DeleteRangeRequest | CompactionRequest | LeaseGrantRequest
        | LeaseRevokeRequest,
    )


def server_checks(request: Any, max_txn_ops: int) -> Record | None:
    """What etcd's gRPC layer refuses before consensus (as an error record), else None."""
    try:
        if not isinstance(request, (CompactionRequest, *LEASE_OPS)):
            validate(request, max_txn_ops)
        if _is_proposal(request):
            check_request_size(encoded_size(request))
    except EtcdError as exc:
        return error_record(exc.code.name, exc.message)
    return None


def result_record(result: Any) -> Record:
    if isinstance(result, ErrorResult):
        return error_record(GrpcCode(result.code).name, result.message)
    return struct_to_dict(result)


class StoreTarget:
    """A fresh ``MvccStore`` per run, driven as etcd's server drives its backend."""

    name = "pnyx MvccStore"

    def __init__(self) -> None:
        self.store = MvccStore()

    def begin(self) -> int:
        self.store = MvccStore()
        return self.store.current_revision

    @staticmethod
    def supports(ops: list[Op]) -> bool:
        """No lease revoke or time-to-live: the bare store has no lease layer."""
        return not any(isinstance(o, LeaseRevokeRequest | LeaseTimeToLiveRequest) for o in ops)

    def execute(self, request: Op) -> Record:
        store = self.store
        if isinstance(request, LeaseGrantRequest):
            store.add_lease(request.ID)
            return {
                "header": {"revision": store.current_revision},
                "ID": request.ID,
                "TTL": request.TTL,
                "error": "",
            }
        refused = server_checks(request, store.max_txn_ops)
        return refused or result_record(store.apply(request))


class MachineTarget:
    """A fresh ``EtcdStateMachine`` per run, driven as a leader's server drives it: writes
    (and lease grants/revokes) through a client session as the log carries them, reads
    bare, lease time-to-live from a promoted ``Lessor`` (clock frozen at 0 ms)."""

    name = "pnyx EtcdStateMachine"

    def __init__(self) -> None:
        self.begin()

    def begin(self) -> int:
        self.sm = EtcdStateMachine()
        self.session = self.sm.apply(SessionCommand(0, 0, OPEN_SESSION))
        self.seq = 0
        self.lessor = self.sm.store.new_lessor()
        self.lessor.promote(0)
        return self.sm.store.current_revision

    @staticmethod
    def supports(ops: list[Op]) -> bool:
        return True

    def execute(self, request: Op) -> Record:
        refused = server_checks(request, self.sm.store.max_txn_ops)
        if refused:
            return refused
        if isinstance(request, LeaseTimeToLiveRequest):
            return result_record(self.lessor.time_to_live(request, 0))
        if _is_proposal(request):
            self.seq += 1
            return result_record(self.sm.apply(SessionCommand(self.session, self.seq, request)))
        return result_record(self.sm.apply(request))


PURE_TARGETS: dict[str, Any] = {"mvcc": StoreTarget, "machine": MachineTarget}


@pytest.fixture(scope="module")
def etcd_target(real_etcd: RealEtcd) -> Any:  # noqa: F811
    target = GrpcTarget(real_etcd.endpoint, "real etcd 3.4")
    yield target
    target.close()


def _describe(ops: list[Op], i: int) -> str:
    text = repr(ops[i])
    return text if len(text) < 400 else text[:400] + "..."


def differences(ops: list[Op], ours: list[Record], theirs: list[Record]) -> list[str]:
    out = []
    for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        d = first_difference(a, b)
        if d:
            out.append(f"step {i}: {_describe(ops, i)}\n  pnyx: {a}\n  etcd: {b}\n  at {d}")
    return out




@pytest.mark.parametrize(
    ("name", "pure"),
    [
        (name, pure)
        for name in sorted(SCENARIOS)
        for pure in sorted(PURE_TARGETS)
        if PURE_TARGETS[pure].supports(SCENARIOS[name])
    ],
)
def test_scenario_matches_real_etcd(name: str, pure: str, etcd_target: GrpcTarget) -> None:
    ops = SCENARIOS[name]
    target = PURE_TARGETS[pure]()
    theirs = run_scenario(etcd_target, ops)
    ours = run_scenario(target, ops)
    # The scenario must actually exercise something: not everything an error.
    assert any("status" not in r for r in theirs)
    diffs = differences(ops, ours, theirs)
    assert not diffs, f"{len(diffs)} differences in {name}:\n" + "\n".join(diffs)


def test_scenarios_reach_every_error(etcd_target: GrpcTarget) -> None:
    """The scripted scenarios provoke each etcd error they are meant to cover."""
    seen = set()
    for ops in SCENARIOS.values():
        for r in run_scenario(etcd_target, ops):
            if "status" in r:
                seen.add((r["status"], r["details"]))
    expected = {
        ("INVALID_ARGUMENT", "etcdserver: key is not provided"),
        ("INVALID_ARGUMENT", "etcdserver: key not found"),
        ("INVALID_ARGUMENT", "etcdserver: value is provided"),
        ("INVALID_ARGUMENT", "etcdserver: lease is provided"),
        ("INVALID_ARGUMENT", "etcdserver: too many operations in txn request"),
        ("INVALID_ARGUMENT", "etcdserver: duplicate key given in txn request"),
        ("INVALID_ARGUMENT", "etcdserver: request is too large"),
        ("OUT_OF_RANGE", "etcdserver: mvcc: required revision has been compacted"),
        ("OUT_OF_RANGE", "etcdserver: mvcc: required revision is a future revision"),
        ("NOT_FOUND", "etcdserver: requested lease not found"),
    }
    assert expected <= seen, expected - seen


def test_sort_option_deviation(etcd_target: GrpcTarget) -> None:
    """Deliberate, documented deviation (the store's README): an unknown sort order is
    refused as etcd 3.5 does; etcd 3.4 ignores it (and an unknown sort *target* makes
    etcd 3.4 panic and exit, so it is not sent to the real one)."""
    ops: list[Op] = [PutRequest(key=b"a", value=b"1"), get(b"a", range_end=b"z", sort_order=5)]
    theirs = run_scenario(etcd_target, ops)
    ours = run_scenario(StoreTarget(), ops)
    assert theirs[1]["count"] == 1 and "status" not in theirs[1]
    assert ours[1] == {"status": "INVALID_ARGUMENT", "details": "etcdserver: invalid sort option"}


# ----------------------------------------------------------------- hypothesis

# Strategies: tests.etcd.scenarios (operations, ranges, distinct_puts).

@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=st.lists(operations, min_size=1, max_size=14))
def test_random_sequences_match_real_etcd(etcd_target: GrpcTarget, ops: list[Op]) -> None:
    ops = [LeaseGrantRequest(ID=1, TTL=600), *ops]
    ours, theirs = Session(MachineTarget()), Session(etcd_target)
    for i, o in enumerate(ops):
        a, b = ours.run(o), theirs.run(o)
        d = first_difference(a, b)
        assert d is None, f"step {i}: {o!r}\n  pnyx: {a}\n  etcd: {b}\n  at {d}"


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    writes=st.lists(distinct_puts, min_size=1, max_size=3),
    reads=st.lists(ranges(), min_size=1, max_size=8),
)
def test_random_reads_match_real_etcd(
    etcd_target: GrpcTarget, writes: list[tuple[PutRequest, ...]], reads: list[RangeRequest]
) -> None:
    """Reads (limits, sorts, filters, revisions) over several keys with several versions."""
    ops: list[Op] = [p for batch in writes for p in batch] + list(reads)
    ours, theirs = Session(StoreTarget()), Session(etcd_target)
    for i, o in enumerate(ops):
        a, b = ours.run(o), theirs.run(o)
        d = first_difference(a, b)
        assert d is None, f"step {i}: {o!r}\n  pnyx: {a}\n  etcd: {b}\n  at {d}"


@pytest.mark.parametrize("pure", sorted(PURE_TARGETS))
def test_fromkey_gap_refuses_the_whole_txn(pure: str) -> None:
    """pnyx's deliberate deviation (README): *key not found*, nothing of the txn applied."""
    rec = run_scenario(PURE_TARGETS[pure](), FROMKEY_GAP)
    assert rec[1] == {"status": "INVALID_ARGUMENT", "details": "etcdserver: key not found"}
    assert rec[2]["header"]["revision"] == 2
    assert [kv["key"] for kv in rec[2]["kvs"]] == [b"d"]


@pytest.mark.parametrize("pure", sorted(PURE_TARGETS))
def test_hashkv_errors_and_revisions(pure: str, etcd_target: GrpcTarget) -> None:
    """HashKV's errors, header and compact_revision, without the hash (pnyx's own encoding)."""
    theirs = run_scenario(etcd_target, HASHKV)
    ours = run_scenario(PURE_TARGETS[pure](), HASHKV)
    assert theirs[3]["status"] == "OUT_OF_RANGE"
    assert without_hash(ours) == without_hash(theirs)


@pytest.mark.parametrize("pure", sorted(PURE_TARGETS))
def test_hashkv_at_the_compact_revision(pure: str, etcd_target: GrpcTarget) -> None:
    theirs = run_scenario(etcd_target, HASHKV_AT_COMPACT)
    assert theirs[-1]["status"] == "OUT_OF_RANGE"
    assert without_hash(run_scenario(PURE_TARGETS[pure](), HASHKV_AT_COMPACT)) == without_hash(
        theirs
    )

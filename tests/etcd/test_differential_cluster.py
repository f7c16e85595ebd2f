"""Differential tests over gRPC: a 3-node pnyx etcd cluster against real etcd 3.4.

The scripted scenarios of :mod:`tests.etcd.scenarios` and random operation sequences run
against both endpoints; every response must be equal field by field (revisions relative to
each run's start, see :mod:`tests.etcd.scenarios`).  Each scenario is sent to a different
pnyx member in turn, so followers' forwarding and read paths are compared too.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pnyx.protocols.etcd import CompactionRequest, LeaseGrantRequest
from tests.etcd.realetcd import PnyxEtcd, RealEtcd, pnyx_etcd3, real_etcd  # noqa: F401
from tests.etcd.scenarios import (
    FROMKEY_GAP,
    HASHKV,
    HASHKV_AT_COMPACT,
    SCENARIOS,
    GrpcTarget,
    Op,
    Session,
    distinct_puts,
    first_difference,
    get,
    op,
    operations,
    put,
    ranges,
    run_scenario,
    txn,
    without_hash,
)


@pytest.fixture(scope="module")
def etcd_target(real_etcd: RealEtcd) -> Iterator[GrpcTarget]:  # noqa: F811
    target = GrpcTarget(real_etcd.endpoint, "real etcd 3.4")
    yield target
    target.close()


@pytest.fixture(scope="module")
def pnyx_targets(pnyx_etcd3: PnyxEtcd) -> Iterator[list[GrpcTarget]]:  # noqa: F811
    targets = [GrpcTarget(e, f"pnyx member {i + 1}") for i, e in enumerate(pnyx_etcd3.endpoints)]
    yield targets
    for t in targets:
        t.close()


def _describe(o: Any) -> str:
    text = repr(o)
    return text if len(text) < 400 else text[:400] + "..."


@pytest.mark.parametrize("index_name", list(enumerate(sorted(SCENARIOS))), ids=lambda x: x[1])
def test_scenario_matches_real_etcd(
    index_name: tuple[int, str], etcd_target: GrpcTarget, pnyx_targets: list[GrpcTarget]
) -> None:
    index, name = index_name
    ops = SCENARIOS[name]
    pnyx = pnyx_targets[index % len(pnyx_targets)]
    theirs = run_scenario(etcd_target, ops)
    ours = run_scenario(pnyx, ops)
    assert any("status" not in r for r in theirs)
    diffs = []
    for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        d = first_difference(a, b)
        if d:
            diffs.append(f"step {i}: {_describe(ops[i])}\n  pnyx: {a}\n  etcd: {b}\n  at {d}")
    assert not diffs, f"{len(diffs)} differences in {name} ({pnyx.name}):\n" + "\n".join(diffs)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    ops=st.lists(operations, min_size=1, max_size=12),
    member=st.integers(0, 2),
)
def test_random_sequences_match_real_etcd(
    etcd_target: GrpcTarget, pnyx_targets: list[GrpcTarget], ops: list[Op], member: int
) -> None:
    ops = [LeaseGrantRequest(ID=1, TTL=600), *ops]
    ours, theirs = Session(pnyx_targets[member]), Session(etcd_target)
    for i, o in enumerate(ops):
        a, b = ours.run(o), theirs.run(o)
        d = first_difference(a, b)
        assert d is None, f"step {i}: {o!r}\n  pnyx: {a}\n  etcd: {b}\n  at {d}"


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    writes=st.lists(distinct_puts, min_size=1, max_size=2),
    reads=st.lists(ranges(), min_size=1, max_size=6),
    member=st.integers(0, 2),
)
def test_random_reads_match_real_etcd(
    etcd_target: GrpcTarget,
    pnyx_targets: list[GrpcTarget],
    writes: list[tuple[Any, ...]],
    reads: list[Any],
    member: int,
) -> None:
    ops: list[Op] = [p for batch in writes for p in batch] + list(reads)
    ours, theirs = Session(pnyx_targets[member]), Session(etcd_target)
    for i, o in enumerate(ops):
        a, b = ours.run(o), theirs.run(o)
        d = first_difference(a, b)
        assert d is None, f"step {i}: {o!r}\n  pnyx: {a}\n  etcd: {b}\n  at {d}"


HUGE = b"x" * (2 * 1024 * 1024 + 100)
"""Over etcd's gRPC receive limit (``--max-request-bytes`` + 512 KiB = 2 MiB)."""
OVERSIZED: list[Op] = [
    put(b"a", HUGE),
    get(HUGE),
    txn([], [op(get(HUGE))]),
    put(b"a", b"still served"),
    get(b"a"),
]


def _oversized(target: GrpcTarget) -> list[Any]:
    return run_scenario(target, OVERSIZED)


def test_oversized_grpc_message_code_and_sizes(
    etcd_target: GrpcTarget, pnyx_targets: list[GrpcTarget]
) -> None:
    """A message over the gRPC limit is refused by gRPC itself (RESOURCE_EXHAUSTED, with
    the same sizes), reads too, and the member goes on serving."""
    theirs, ours = _oversized(etcd_target), _oversized(pnyx_targets[1])
    for a, b in zip(ours[:3], theirs[:3], strict=True):
        assert a["status"] == b["status"] == "RESOURCE_EXHAUSTED"
        size = re.search(r"\(\d+ vs\. \d+\)$", b["details"])
        assert size and a["details"].endswith(size.group(0)), (a, b)
    assert ours[3:] == theirs[3:]
    assert ours[4]["kvs"][0]["value"] == b"still served"


def test_fromkey_gap_refused_and_cluster_serves(pnyx_targets: list[GrpcTarget]) -> None:
    """The txn that makes real etcd 3.4.23 panic: every pnyx member refuses it alike and
    goes on serving (not sent to real etcd)."""
    rec = run_scenario(pnyx_targets[2], FROMKEY_GAP)
    assert rec[1] == {"status": "INVALID_ARGUMENT", "details": "etcdserver: key not found"}
    assert rec[2]["header"]["revision"] == 2
    assert [kv["key"] for kv in rec[2]["kvs"]] == [b"d"]
    for t in pnyx_targets:
        assert "status" not in t.execute(put(b"/gap/after", b"ok"))


COMPACT_THEN_SERIALIZABLE: list[Op] = [
    put(b"a", b"1"),
    put(b"a", b"2"),
    put(b"a", b"3"),
    CompactionRequest(revision=3),
    get(b"a", revision=2, serializable=True),
    get(b"a", revision=2),
]


def test_compaction_applied_on_the_member_that_acknowledged_it(
    etcd_target: GrpcTarget, pnyx_targets: list[GrpcTarget]
) -> None:
    """Regression (found here, fixed in the server): a follower acknowledged a Compact
    before it applied it, so a serializable read right after still saw the old history."""
    theirs = run_scenario(etcd_target, COMPACT_THEN_SERIALIZABLE)
    assert theirs[4]["status"] == "OUT_OF_RANGE"
    for t in pnyx_targets:
        ours = run_scenario(t, COMPACT_THEN_SERIALIZABLE)
        assert ours == theirs, f"{t.name}:\n  pnyx: {ours}\n  etcd: {theirs}"


def _hashkv_diffs(ops: list[Op], ours: list[Any], theirs: list[Any]) -> list[str]:
    return [
        f"step {i}: {ops[i]!r}\n  pnyx: {a}\n  etcd: {b}"
        for i, (a, b) in enumerate(zip(without_hash(ours), without_hash(theirs), strict=True))
        if a != b
    ]


def test_hashkv_errors_and_revisions(
    etcd_target: GrpcTarget, pnyx_targets: list[GrpcTarget]
) -> None:
    """HashKV's errors, header and compact_revision (the hash itself is pnyx's own
    encoding, not etcd's, so it is left out)."""
    theirs = run_scenario(etcd_target, HASHKV)
    assert theirs[3]["status"] == "OUT_OF_RANGE" and theirs[6]["status"] == "OUT_OF_RANGE"
    diffs = _hashkv_diffs(HASHKV, run_scenario(pnyx_targets[0], HASHKV), theirs)
    assert not diffs, "\n".join(diffs)


def test_hashkv_at_the_compact_revision(
    etcd_target: GrpcTarget, pnyx_targets: list[GrpcTarget]
) -> None:
    theirs = run_scenario(etcd_target, HASHKV_AT_COMPACT)
    assert theirs[-1]["status"] == "OUT_OF_RANGE"
    ours = run_scenario(pnyx_targets[0], HASHKV_AT_COMPACT)
    diffs = _hashkv_diffs(HASHKV_AT_COMPACT, ours, theirs)
    assert not diffs, "\n".join(diffs)

"""Dynamo under the simulator: seeds with faults, the monitor's own failures, and what the
client histories show about session guarantees."""

from __future__ import annotations

import dataclasses

import pytest

from pnyx.catalog import get_protocol
from pnyx.check.consistency import check_consistency
from pnyx.check.history import History
from pnyx.core import DurableState, Rng
from pnyx.protocols.dynamo import DynamoConfig, DynamoNode
from pnyx.protocols.dynamo.spec import STRICT, dynamo_spec
from pnyx.protocols.dynamo.versions import Version
from pnyx.sim.runner import SimConfig, SimResult, run_sim
from pnyx.sim.schedule import parse_faults
from pnyx.sim.spec import ProtocolDef

ALL = parse_faults("all")
NONE = parse_faults("none")


def _run(spec: ProtocolDef, seed: int, faults: frozenset[str] = ALL) -> SimResult:
    return run_sim(spec, SimConfig(seed=seed, faults=faults))


@pytest.mark.parametrize("name", ["dynamo", "dynamo-weak", "dynamo-sloppy"])
def test_seeds_with_faults_converge_and_lose_no_acknowledged_write(name: str) -> None:
    spec = get_protocol(name)
    for seed in range(1, 31):
        result = _run(spec, seed)
        assert result.violation is None, f"seed {seed}: {result.violation}"
        assert any(e.type == "ok" and e.f == "put" for e in result.history), seed


def test_same_seed_same_run() -> None:
    spec = get_protocol("dynamo-sloppy")
    first = run_sim(spec, SimConfig(seed=5, faults=ALL, trace=True))
    second = run_sim(spec, SimConfig(seed=5, faults=ALL, trace=True))
    assert first.trace_hash and first.trace_hash == second.trace_hash


class _ForgetfulNode(DynamoNode):
    """Broken on purpose: acknowledges writes without storing them."""

    def _store_versions(self, key: str, versions: tuple[Version, ...]) -> None:
        return None


def test_monitor_reports_a_lost_acknowledged_write() -> None:
    def make(node_id: int, peers: tuple[int, ...], rng: Rng, durable: DurableState) -> DynamoNode:
        return _ForgetfulNode(node_id, peers, rng, durable, STRICT)

    spec = dataclasses.replace(get_protocol("dynamo"), make_node=make)
    result = _run(spec, 1, NONE)
    assert result.violation is not None and result.violation.prop == "lost-write"


def test_monitor_reports_replicas_that_never_converge() -> None:
    """Without anti-entropy and read repair, a replica that missed a write stays behind."""
    config = DynamoConfig(n=3, r=2, w=2, anti_entropy=False, read_repair=False)
    spec = dynamo_spec("dynamo-no-repair", "no repair", config)
    violations = [v for seed in range(1, 11) if (v := _run(spec, seed).violation)]
    assert violations, "some seed with faults must leave a replica behind"
    assert all(v.prop == "liveness" and "replicas differ" in v.detail for v in violations)


def _session_violations(result: SimResult, model: str) -> bool:
    return not check_consistency(History.from_events(result.history), model).ok


def test_weak_quorums_break_a_session_guarantee_on_some_seed() -> None:
    spec = get_protocol("dynamo-weak")
    broken = [
        seed
        for seed in range(1, 21)
        if _session_violations(result := _run(spec, seed), "read-your-writes")
        or _session_violations(result, "monotonic-reads")
    ]
    assert broken, "R=1, W=1 should show a stale read of a session's own write or a regress"


@pytest.mark.parametrize(("faults", "seeds"), [(ALL, 40), (NONE, 15)])
def test_strict_quorums_keep_read_your_writes(faults: frozenset[str], seeds: int) -> None:
    """R+W>N, strict quorums: a session's read sees its acknowledged writes (or later ones),
    whatever the faults (crashes, partitions, pauses; no disk loss of W copies)."""
    spec = get_protocol("dynamo")
    for seed in range(1, seeds + 1):
        result = _run(spec, seed, faults)
        assert not _session_violations(result, "read-your-writes"), seed


@pytest.mark.soak
@pytest.mark.parametrize("name", ["dynamo", "dynamo-weak", "dynamo-sloppy"])
def test_soak_many_seeds_with_faults(name: str) -> None:
    spec = get_protocol(name)
    for seed in range(1, 501):
        result = _run(spec, seed)
        assert result.violation is None, f"seed {seed}: {result.violation}"
        if name == "dynamo":
            assert not _session_violations(result, "read-your-writes"), seed

"""The consistency table's expected shape, asserted on a few targeted seeds.

Chain and CRAQ keep every model; Dynamo with R+W<=N is not linearizable but converges; a
sloppy quorum without read repair loses read-your-writes under partitions (strict quorums
keep it on the same seeds); the broken CRAQ is caught by the property it breaks.
"""

from __future__ import annotations

import pytest

from pnyx.catalog import get_protocol
from pnyx.cli.consistency_matrix import HELD, MODELS, VIOLATED, run_seed
from pnyx.protocols.chain.spec import replica_cuts
from pnyx.sim.runner import SimConfig, run_sim
from pnyx.sim.schedule import parse_faults


@pytest.mark.parametrize("key", ["chain", "craq"])
def test_chain_and_craq_keep_every_model_under_faults(key: str) -> None:
    for seed in (1, 2):
        outcome = run_seed(key, seed, MODELS, tradeoffs=False)
        assert outcome.monitor == HELD, (seed, outcome.monitor)
        assert outcome.operations > 20, "the run must have done something to check"
        assert outcome.verdicts == {m: HELD for m in MODELS}, (seed, outcome.details)


def test_weak_quorums_are_not_linearizable_but_converge() -> None:
    outcomes = [run_seed("dynamo-weak", seed, ("linearizable", "convergent"), tradeoffs=False)
                for seed in (1, 2, 3)]
    assert any(o.verdicts["linearizable"] == VIOLATED for o in outcomes), \
        "R=1, W=1 under faults should read a stale value on one of these seeds"
    assert all(o.verdicts["convergent"] == HELD for o in outcomes), \
        [o.details.get("convergent") for o in outcomes]


def test_convergence_column_catches_replicas_left_apart() -> None:
    """Must fail: without read repair and anti-entropy a replica that missed a write keeps
    its old value, and the final reads show it."""
    outcome = run_seed("dynamo-norepair-noae", 1, ("convergent",), tradeoffs=False)
    assert outcome.verdicts["convergent"] == VIOLATED
    assert "divergent" in outcome.details["convergent"]
    assert outcome.monitor == "liveness"


def test_sloppy_quorum_without_read_repair_breaks_read_your_writes_under_partition() -> None:
    seeds = range(1, 7)
    sloppy = [run_seed("dynamo-sloppy-norepair", seed, ("read-your-writes",),
                       faults="partition", tradeoffs=False) for seed in seeds]
    broken = [o.seed for o in sloppy if o.verdicts["read-your-writes"] == VIOLATED]
    assert broken, "a write to stand-ins should be missed by the session's next read"
    assert "read-your-writes" in sloppy[broken[0] - 1].details["read-your-writes"]
    strict = run_seed("dynamo", broken[0], ("read-your-writes",), faults="partition",
                      tradeoffs=False)
    assert strict.verdicts["read-your-writes"] == HELD, strict.details


def test_broken_craq_is_caught_by_linearizability_within_few_seeds() -> None:
    """The replica cuts (a replica cut off from the other replicas only) keep writes dirty
    while clients read: ``pnyx sim craq-broken`` is caught at seed 4."""
    spec = get_protocol("craq-broken")
    faults = parse_faults("all")
    caught = None
    for seed in range(1, 21):
        result = run_sim(spec, SimConfig(seed=seed, faults=faults))
        if result.violation is not None:
            caught = result
            break
    assert caught is not None and caught.violation is not None, "survived 20 seeds"
    assert caught.seed == 4
    assert caught.violation.prop == "linearizability"
    assert any(e.shape == "replica-cut" for e in caught.schedule.events)
    fixed = run_sim(get_protocol("craq"), SimConfig(seed=caught.seed, schedule=caught.schedule))
    assert fixed.ok, fixed.violation


def test_replica_cuts_spare_the_master_and_clients() -> None:
    for seed in range(1, 30):
        cuts = replica_cuts(seed, 4, 3000)
        assert cuts
        for cut in cuts:
            ends = {n for link in cut.links for n in link}
            assert ends <= {1, 2, 3}, cut
            assert all(cut.node in link for link in cut.links), cut
            assert 0 <= cut.start_us < cut.end_us <= 3_000_000

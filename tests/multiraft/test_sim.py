"""Multi-Raft in the simulator: clean under all faults, deterministic, and the split mutant
is caught by the property it breaks."""

from __future__ import annotations

import dataclasses

import pytest

from pnyx.catalog import get_protocol
from pnyx.protocols.multiraft import MUTANT_PROPERTIES, SPLIT_LOSES_INFLIGHT
from pnyx.protocols.multiraft.spec import SIM_CONFIG, multiraft_spec
from pnyx.sim.runner import SimConfig, run_sim
from pnyx.sim.schedule import parse_faults

ALL = parse_faults("all")


def _failures(name: str, seeds: range, faults: frozenset[str] = ALL) -> list[str]:
    spec = get_protocol(name)
    failures = []
    for seed in seeds:
        result = run_sim(spec, SimConfig(seed=seed, faults=faults))
        if not result.ok or result.unknown:
            failures.append(
                f"seed {seed}: {result.violation} {result.unknown} (pnyx sim {name} --seed {seed})"
            )
    return failures


def test_multiraft_passes_100_seeds_with_all_faults() -> None:
    failures = _failures("multiraft", range(1, 101))
    assert not failures, "\n".join(failures)


def test_multiraft_passes_8_long_seeds_without_faults() -> None:
    # Without faults a run lasts its whole 9 s: many splits and moves (seed 7 found that a
    # leader moving its own replica away answered appended writes with a refusal).
    failures = _failures("multiraft", range(1, 9), frozenset())
    assert not failures, "\n".join(failures)


@pytest.mark.soak
def test_multiraft_passes_60_long_seeds_without_faults() -> None:
    failures = _failures("multiraft", range(9, 69), frozenset())  # ~35 s CPU
    assert not failures, "\n".join(failures)


@pytest.mark.soak
@pytest.mark.parametrize("first", range(101, 1101, 200))
def test_multiraft_passes_1000_more_seeds_with_all_faults(first: int) -> None:
    failures = _failures("multiraft", range(first, first + 200))  # ~30 s CPU per chunk
    assert not failures, "\n".join(failures)


def test_split_losing_in_flight_writes_is_caught_within_200_seeds() -> None:
    name = f"multiraft+{SPLIT_LOSES_INFLIGHT}"
    spec = get_protocol(name)
    assert spec.broken
    for seed in range(1, 201):
        result = run_sim(spec, SimConfig(seed=seed, faults=ALL))
        if not result.ok:
            break
    else:
        pytest.fail(f"{name} survived 200 seeds")
    violation = result.violation
    assert violation is not None
    assert violation.prop == MUTANT_PROPERTIES[SPLIT_LOSES_INFLIGHT] == "lost-write"
    assert "after the key left the range" in violation.detail
    # The correct protocol passes the very seed that caught the mutant.
    assert run_sim(get_protocol("multiraft"), SimConfig(seed=seed, faults=ALL)).ok


def test_same_seed_same_run() -> None:
    spec = get_protocol("multiraft")
    runs = [run_sim(spec, SimConfig(seed=7, faults=ALL, hash_trace=True)) for _ in range(2)]
    assert runs[0].trace_hash and runs[0].trace_hash == runs[1].trace_hash
    assert runs[0].history == runs[1].history


def test_unknown_mutant_is_refused_with_the_valid_names() -> None:
    with pytest.raises(KeyError, match=SPLIT_LOSES_INFLIGHT):
        get_protocol("multiraft+nope")


def test_a_raft_mutant_in_every_group_is_caught_by_the_per_group_raft_checks() -> None:
    name = "multiraft+leader_apply_before_quorum"
    spec = get_protocol(name)
    for seed in range(1, 41):
        result = run_sim(spec, SimConfig(seed=seed, faults=ALL))
        if not result.ok:
            break
    else:
        pytest.fail(f"{name} survived 40 seeds")
    assert result.violation is not None
    # Applying before a quorum lets a later leader lack (or overwrite) a committed entry.
    assert result.violation.prop in ("leader-completeness", "state-machine-safety")
    assert result.violation.detail.startswith("group ")


def test_replies_first_passes_seeds_with_all_faults_and_changes_the_batches() -> None:
    # Real processes hand out replies as a batch of their own (no wait for the next fsync).
    config = dataclasses.replace(SIM_CONFIG, replies_first=True)
    spec = multiraft_spec(config=config)
    failures = []
    for seed in range(1, 7):
        result = run_sim(spec, SimConfig(seed=seed, faults=ALL, hash_trace=True))
        if not result.ok or result.unknown:
            failures.append(f"seed {seed}: {result.violation} {result.unknown}")
        if seed == 1:
            sim = SimConfig(seed=1, faults=ALL, hash_trace=True)
            plain = run_sim(get_protocol("multiraft"), sim)
            assert plain.trace_hash != result.trace_hash  # the option is in effect
    assert not failures, "\n".join(failures)

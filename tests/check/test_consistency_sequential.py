"""Sequential consistency: the separating histories, minimal counterexamples, the search
bound, generated histories, and agreement with exhaustive search on small ones."""

from __future__ import annotations

import pytest

from pnyx.check import check_linearizable, get_model, read_history
from pnyx.check.causal import check_causal
from pnyx.check.sequential import check_sequential
from tests.check.consistency_generate import atomic_history, replicated_history
from tests.check.consistency_helpers import brute_sequential, perturb_reads, r, seq, w
from tests.check.helpers import LOCAL_HISTORIES

SEPARATING = LOCAL_HISTORIES / "consistency"


def test_sequential_but_not_linearizable() -> None:
    h = read_history(SEPARATING / "sequential-not-linearizable.jsonl", "jsonl")
    assert check_sequential(h).verdict == "sequential"
    assert check_linearizable(h, get_model("register")).verdict == "not-linearizable"


def test_causal_but_not_sequential() -> None:
    h = read_history(SEPARATING / "causal-not-sequential.jsonl", "jsonl")
    assert check_causal(h).verdict == "causal"
    result = check_sequential(h)
    assert result.verdict == "not-sequential"
    (v,) = result.violations
    assert len(v.operations) == 4, "the whole Dekker pattern, nothing less, fails"


def test_per_key_sequential_is_not_enough() -> None:
    h = read_history(SEPARATING / "causal-not-sequential.jsonl", "jsonl")
    for key in ("x", "y"):
        assert check_sequential([op for op in h if op.key == key]).ok
    assert not check_sequential(h).ok


def test_counterexample_is_shrunk_to_a_minimal_failing_sub_history() -> None:
    noise = [w(2, "z", i) for i in range(1, 6)] + [r(3, "z", 5)]
    h = seq(*noise, w(0, "x", 1), w(1, "y", 1), r(0, "y", None), r(1, "x", None))
    (v,) = check_sequential(h).violations
    assert {op.key for op in v.operations} == {"x", "y"}
    assert "minimal failing sub-history (4 operations" in v.explanation


def test_causal_violation_is_reported_as_such() -> None:
    h = seq(w(0, "x", 1), w(0, "y", 1), r(1, "y", 1), r(1, "x", None))
    result = check_sequential(h)
    assert result.names == ["WriteCOInitRead"]
    assert "hence not sequentially consistent" in result.explain()


def test_budget_exhaustion_is_unknown_not_a_guess() -> None:
    h = replicated_history(3, ops=200, processes=6, keys=1, causal=True)
    result = check_sequential(h, max_states=1)
    assert result.verdict == "unknown"
    assert "search states" in result.reason


@pytest.mark.parametrize("seed", range(10))
def test_linearizable_histories_are_sequential(seed: int) -> None:
    h = atomic_history(seed, ops=300, processes=8, keys=3)
    assert check_sequential(h).verdict == "sequential"


def test_generated_causal_histories_include_non_sequential_ones() -> None:
    verdicts = {check_sequential(replicated_history(s, ops=40, processes=4, keys=2)).verdict
                for s in range(40)}
    assert verdicts == {"sequential", "not-sequential"}


def test_agrees_with_exhaustive_search_on_small_random_histories() -> None:
    seen = set()
    for seed in range(250):
        base = replicated_history(seed, ops=9, processes=3, keys=2, causal=seed % 2 == 0,
                                  max_delay=8.0)
        h = perturb_reads(base, seed, seed % 3)
        expected = brute_sequential(h.operations)
        assert check_sequential(h).ok == expected, f"seed {seed}"
        seen.add(expected)
    assert seen == {True, False}

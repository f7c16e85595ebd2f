"""Convergence: final reads per replica agree; the separating convergent-not-causal history."""

from __future__ import annotations

import pytest

from pnyx.check import read_history
from pnyx.check.causal import check_causal
from pnyx.check.convergence import check_convergence, check_convergence_states
from pnyx.check.session import check_session
from tests.check.consistency_generate import replicated_history
from tests.check.consistency_helpers import final, r, seq, w
from tests.check.helpers import LOCAL_HISTORIES


def test_convergent_but_not_causal() -> None:
    h = read_history(LOCAL_HISTORIES / "consistency" / "convergent-not-causal.jsonl", "jsonl")
    assert check_convergence(h).verdict == "convergent"
    assert check_causal(h).names == ["WriteCOInitRead"]


def test_divergent_replicas_are_named_with_their_reads() -> None:
    h = seq(w(0, "x", 1), w(1, "x", 2), final(2, "n1", "x", 1), final(3, "n2", "x", 2),
            final(4, "n3", "x", 2), final(2, "n1", "y", None), final(3, "n2", "y", None))
    result = check_convergence(h)
    assert result.verdict == "not-convergent"
    (v,) = result.violations
    assert "replica 'n1' holds 1" in v.explanation and "replica 'n2' holds 2" in v.explanation
    assert "2 distinct values over 3 replicas" in v.explanation
    assert len(v.operations) == 2


def test_whole_state_final_reads_treat_absent_keys_as_initial() -> None:
    h = seq([(0, "invoke", "final-read", "a", None), (0, "ok", "final-read", {"x": 1}, None)],
            [(1, "invoke", "final-read", "b", None), (1, "ok", "final-read", {"x": 1, "y": 2},
                                                       None)])
    result = check_convergence(h)
    assert result.names == ["divergent"]
    assert "key 'y'" in result.explain()


def test_states_given_directly() -> None:
    assert check_convergence_states({"a": {"x": 1}, "b": {"x": 1}}).ok
    bad = check_convergence_states({"a": {"x": 1}, "b": {"x": 1, "z": 3}, "c": {}})
    assert bad.verdict == "not-convergent" and "key 'z'" in bad.explain()


def test_history_without_final_reads_is_refused() -> None:
    with pytest.raises(ValueError, match="final reads"):
        check_convergence(seq(w(0, "x", 1), r(1, "x", 1)))


@pytest.mark.parametrize("seed", range(10))
def test_eventual_store_converges_though_not_always_causal(seed: int) -> None:
    h = replicated_history(seed, ops=60, processes=4, keys=2, causal=False, sticky=False,
                           max_delay=15.0, final_reads=True)
    assert check_convergence(h).verdict == "convergent"


def test_generated_convergent_histories_include_non_causal_ones() -> None:
    found = 0
    for seed in range(30):
        h = replicated_history(seed, ops=60, processes=4, keys=2, causal=False, sticky=False,
                               max_delay=15.0, final_reads=True)
        if not check_causal(h).ok:
            found += 1
            assert check_convergence(h).ok and not check_session(h).ok
    assert found > 0

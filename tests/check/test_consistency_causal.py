"""Causal consistency (causal memory): each bad pattern, clean histories, generated stores,
and agreement with a brute-force check of the definition on small random histories."""

from __future__ import annotations

import pytest

from pnyx.check.causal import check_causal
from pnyx.check.history import History
from tests.check.consistency_generate import replicated_history, stale_own_read
from tests.check.consistency_helpers import brute_causal_memory, perturb_reads, r, seq, w

BAD: dict[str, History] = {
    "ThinAirRead": seq(w(0, "x", 1), r(1, "x", 7)),
    "CyclicCO": seq(r(0, "x", 1), w(0, "y", 1), r(1, "y", 1), w(1, "x", 1)),
    "WriteCOInitRead": seq(w(0, "x", 1), w(0, "y", 1), r(1, "y", 1), r(1, "x", None)),
    "WriteCORead": seq(w(0, "x", 1), w(0, "x", 2), w(0, "y", 1), r(1, "y", 1), r(1, "x", 1)),
    # p2 sees x=1 then x=2, so 1 precedes 2 in its view; then x=1 again: a cycle
    "CyclicHB": seq(w(0, "x", 1), w(1, "x", 2), r(2, "x", 1), r(2, "x", 2), r(2, "x", 1)),
    # p2's last read returns y=1 with p0's y=2 in its causal past, so y=2 precedes y=1 in
    # p2's view, and x=1 (before y=2) precedes p2's first read: its read of x cannot be nil
    "WriteHBInitRead": seq(w(0, "x", 1), w(0, "y", 2), w(0, "z", 1), w(1, "y", 1),
                           r(2, "y", 1), r(2, "x", None), r(2, "z", 1), r(2, "y", 1)),
}


@pytest.mark.parametrize("name", list(BAD))
def test_each_bad_pattern_is_found_and_named(name: str) -> None:
    result = check_causal(BAD[name])
    assert result.verdict == "not-causal"
    assert result.names == [name]
    assert all(v.operations for v in result.violations), "a counterexample names operations"


def test_counterexample_of_a_stale_read_is_the_causal_chain() -> None:
    result = check_causal(BAD["WriteCORead"])
    (v,) = result.violations
    assert [op.index for op in v.operations] == [0, 1, 2, 3, 4]
    assert "overwritten in its causal past" in v.explanation
    assert "-so->" in v.explanation and "-rf->" in v.explanation


def test_cyclic_hb_names_both_view_edges() -> None:
    (v,) = check_causal(BAD["CyclicHB"]).violations
    assert v.explanation.count("-view->") == 2
    assert {op.index for op in v.operations} == {0, 1}


def test_cm_only_patterns_agree_with_the_definition() -> None:
    for name in ("CyclicHB", "WriteHBInitRead"):
        assert not brute_causal_memory(BAD[name].operations), name
    (v,) = check_causal(BAD["WriteHBInitRead"]).violations
    assert "in process 2's view" in v.explanation and "-view->" in v.explanation


CLEAN = {
    "concurrent-writes-seen-differently": seq(w(0, "x", 1), w(1, "x", 2), r(2, "x", 1),
                                              r(2, "x", 2), r(3, "x", 2), r(3, "x", 1)),
    "dekker": seq(w(0, "x", 1), w(1, "y", 1), r(0, "y", None), r(1, "x", None)),
    "read-own-and-others": seq(w(0, "x", 1), r(1, "x", 1), w(1, "x", 2), r(0, "x", 2)),
    "empty": seq(),
}


@pytest.mark.parametrize("name", list(CLEAN))
def test_clean_histories_pass(name: str) -> None:
    result = check_causal(CLEAN[name])
    assert result.verdict == "causal" and result.ok and not result.violations


@pytest.mark.parametrize("seed", range(20))
def test_causal_store_histories_are_causal(seed: int) -> None:
    h = replicated_history(seed, ops=120, processes=5, keys=3, causal=True)
    assert check_causal(h).verdict == "causal"


@pytest.mark.parametrize("seed", range(10))
def test_injected_stale_own_read_is_caught(seed: int) -> None:
    h = stale_own_read(replicated_history(seed, ops=80, processes=4, keys=2), seed)
    assert h is not None
    result = check_causal(h)
    assert result.verdict == "not-causal"
    assert "WriteCOInitRead" in result.names


def test_agrees_with_the_definition_on_small_random_histories() -> None:
    verdicts = set()
    for seed in range(250):
        base = replicated_history(seed, ops=9, processes=3, keys=2, causal=seed % 2 == 0,
                                  max_delay=8.0)
        h = perturb_reads(base, seed, seed % 3)
        expected = brute_causal_memory(h.operations)
        assert check_causal(h).ok == expected, f"seed {seed}"
        verdicts.add(expected)
    assert verdicts == {True, False}


def test_info_writes_count_only_when_read_and_failed_writes_never() -> None:
    h = seq([(0, "invoke", "write", 1, "x"), (0, "info", "write", None, "x")],
            w(1, "x", 2), r(1, "x", 2), r(2, "x", 1))
    assert check_causal(h).ok
    aborted = seq([(0, "invoke", "write", 1, "x"), (0, "fail", "write", 1, "x")],
                  r(1, "x", 1))
    assert check_causal(aborted).names == ["AbortedRead"]


@pytest.mark.parametrize(("events", "needle"), [
    (seq([(0, "invoke", "append", "a", "x"), (0, "ok", "append", "a", "x")]), "'append'"),
    (seq(w(0, "x", 1), w(1, "x", 1)), "both write 1"),
])
def test_unreadable_histories_are_refused_with_the_offending_operation(
        events: History, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        check_causal(events)

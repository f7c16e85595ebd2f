"""Session guarantees: each one broken alone (and reported alone, with the few operations
that break it), clean histories, and the guarantees as a consequence of causality."""

from __future__ import annotations

import pytest

from pnyx.check.causal import check_causal
from pnyx.check.history import History
from pnyx.check.session import GUARANTEES, check_session
from tests.check.consistency_generate import replicated_history, stale_own_read
from tests.check.consistency_helpers import r, seq, w

BROKEN: dict[str, History] = {
    "read-your-writes": seq(w(0, "x", 1), w(0, "x", 2), r(0, "x", 1)),
    "monotonic-reads": seq(w(0, "x", 1), w(1, "x", 2), r(2, "x", 1), r(2, "x", 2),
                           r(2, "x", 1)),
    "monotonic-writes": seq(w(0, "x", 1), w(0, "y", 1), r(1, "y", 1), r(1, "x", None)),
    "writes-follow-reads": seq(w(0, "x", 1), r(1, "x", 1), w(1, "y", 1), r(2, "y", 1),
                               r(2, "x", None)),
}
SIZE = {"read-your-writes": 3, "monotonic-reads": 3, "monotonic-writes": 4,
        "writes-follow-reads": 4}


@pytest.mark.parametrize("guarantee", GUARANTEES)
def test_each_guarantee_is_reported_separately(guarantee: str) -> None:
    h = BROKEN[guarantee]
    result = check_session(h, guarantees=[guarantee])
    assert result.verdict == f"not-{guarantee}"
    (v,) = result.violations
    assert v.name == guarantee
    assert len(v.operations) == SIZE[guarantee]
    others = [g for g in GUARANTEES if g != guarantee]
    assert check_session(h, guarantees=others).ok, "the other guarantees hold"


@pytest.mark.parametrize("guarantee", GUARANTEES)
def test_every_session_violation_is_a_causal_one(guarantee: str) -> None:
    assert not check_causal(BROKEN[guarantee]).ok


def test_read_your_writes_initial_value() -> None:
    result = check_session(seq(w(0, "x", 1), r(0, "x", None)), guarantees=["read-your-writes"])
    assert result.names == ["read-your-writes"]
    assert "got the initial value" in result.explain()


def test_monotonic_reads_going_causally_back() -> None:
    h = seq(w(0, "x", 1), w(0, "x", 2), r(1, "x", 2), r(1, "x", 1))
    (v,) = check_session(h, guarantees=["monotonic-reads"]).violations
    assert "causally before it" in v.explanation


CLEAN = {
    "others-writes-any-order": seq(w(0, "x", 1), w(1, "x", 2), r(2, "x", 2), r(3, "x", 1)),
    "own-write-then-newer": seq(w(0, "x", 1), r(1, "x", 1), w(1, "x", 2), r(0, "x", 2)),
    "concurrent-writes-reordered-by-two-readers": seq(
        w(0, "x", 1), w(1, "x", 2), r(2, "x", 1), r(2, "x", 2), r(3, "x", 2), r(3, "x", 1)),
}


@pytest.mark.parametrize("name", list(CLEAN))
def test_clean_histories_keep_every_guarantee(name: str) -> None:
    result = check_session(CLEAN[name])
    assert result.verdict == "session" and not result.violations


@pytest.mark.parametrize("seed", range(15))
def test_causal_store_keeps_the_guarantees(seed: int) -> None:
    h = replicated_history(seed, ops=120, processes=5, keys=3, causal=True)
    assert check_session(h).ok


@pytest.mark.parametrize("seed", range(8))
def test_injected_stale_own_read_breaks_read_your_writes(seed: int) -> None:
    h = stale_own_read(replicated_history(seed, ops=80, processes=4, keys=2), seed)
    assert h is not None
    assert "read-your-writes" in check_session(h).names


def test_eventual_store_violations_are_causal_violations() -> None:
    flagged = 0
    for seed in range(60):
        h = replicated_history(seed, ops=60, processes=4, keys=2, causal=False,
                               max_delay=15.0, sticky=False)
        if not check_session(h).ok:
            flagged += 1
            assert not check_causal(h).ok, f"seed {seed}"
    assert flagged > 0, "the eventual store breaks some guarantee on some seed"


def test_unknown_guarantee_is_refused() -> None:
    with pytest.raises(ValueError, match="read-my-writes"):
        check_session(seq(), guarantees=["read-my-writes"])

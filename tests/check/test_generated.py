"""Generated histories (tests/check/generate.py): the checker agrees with the ground truth.

Clean histories (simulated atomic objects) must be ``linearizable``, never ``unknown``;
histories with an injected anomaly must be ``not-linearizable`` with exactly the anomalous
key failing; on small histories a brute-force search over all orders is the oracle.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from pnyx.check import History, KVModel, LinearizabilityResult, Model, check_linearizable
from pnyx.core.history import HistoryEvent
from tests.check.generate import (
    ANOMALIES,
    KINDS,
    Generated,
    Params,
    brute_force_linearizable,
    generate,
    perturb,
    random_params,
)

CASES = [(kind, anomaly) for kind in KINDS for anomaly in ANOMALIES[kind]]
TIMEOUT_S = 30.0
MAX_OPS = 100  # with ~3 operations in flight per key: every seed takes well under a second
UNSPLIT_MAX_OPS = 24  # all keys in one search: the state space is the product over keys


def check(g: Generated, history: History | None = None, split: bool = True,
          ) -> LinearizabilityResult:
    return check_linearizable(g.history() if history is None else history, g.model(),
                              partition=split, timeout_s=TIMEOUT_S)


def drawn(seed: int, kind: str, anomaly: str | None = None, **kw: Any) -> Generated:
    """A history whose parameters are drawn from ``seed`` too."""
    return generate(seed, random_params(random.Random(seed), kind, anomaly=anomaly, **kw))


def assert_clean(g: Generated, split: bool = True) -> None:
    result = check(g, split=split)
    assert result.verdict == "linearizable", (g.seed, g.params, result.explain())


def assert_caught(g: Generated, split: bool = True) -> None:
    result = check(g, split=split)
    assert result.verdict == "not-linearizable", (g.seed, g.params, result.verdict)
    if split:
        assert {p.key for p in result.failures} == set(g.anomalous_keys), (g.seed, g.params)


def replays(ops: list[Any], model: Model[Any]) -> bool:
    """Whether ``ops``, in this order, is a legal sequential run (keys kept apart)."""
    states: dict[Any, Any] = {}
    for op in ops:
        allowed, states[op.key] = model.step(states.get(op.key, model.init()), op)
        if not allowed:
            return False
    return True


# -- the generator itself -------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_generation_is_deterministic(kind: str) -> None:
    first, again = drawn(7, kind, max_ops=300), drawn(7, kind, max_ops=300)
    assert first.events() == again.events()
    assert first.events() != drawn(8, kind, max_ops=300).events()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed", range(20))
def test_clean_history_has_the_simulation_as_witness(kind: str, seed: int) -> None:
    g = drawn(seed, kind, max_ops=300)
    for sim, op in g.pairs():
        assert (sim.process, sim.f) == (op.process, op.f)
        if sim.effect is not None:  # it took effect inside its interval (info: after call)
            assert sim.call < sim.effect and (op.outcome == "info" or sim.effect < (sim.ret or 0))
        else:
            assert op.outcome != "ok", "an ok operation took effect"
    assert replays(g.witness(), g.model())


def test_parameters_reach_their_ranges() -> None:
    g = generate(1, Params(kind="kv", ops=10_000, clients=50, keys=20, p_info=0.1, p_fail=0.1))
    history = g.history()
    outcomes = {op.outcome for op in history}
    assert len(history) == 10_000 and outcomes == {"ok", "info", "fail"}
    assert any(op.ret is None for op in history), "some operations stay open at the end"
    assert len({op.key for op in history}) == 20 and len(history.processes) > 50
    fails = generate(2, Params(kind="cas-register", ops=200, values=3))
    assert {op.outcome for op in fails.history() if op.f == "cas"} == {"ok", "fail"}


@pytest.mark.parametrize(("kind", "anomaly"), CASES)
@pytest.mark.parametrize("seed", range(15))
def test_small_histories_agree_with_brute_force(kind: str, anomaly: str, seed: int) -> None:
    """On ≤ 8 operations the oracle tries every order: clean ones have one, anomalous none."""
    for bad in (None, anomaly):
        g = drawn(seed, kind, bad, max_ops=8 if bad is None else 5, max_keys=2)
        history = g.history()
        assert len(history) <= 8
        truth = brute_force_linearizable(list(history), g.model())
        assert truth is (bad is None), (g.seed, g.params)
        for split in (True, False):
            (assert_clean if bad is None else assert_caught)(g, split)


# -- the checker against the ground truth ---------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed", range(40))
def test_clean_histories_are_linearizable(kind: str, seed: int) -> None:
    g = drawn(seed, kind, max_ops=MAX_OPS)
    assert_clean(g)
    if len(g.ops) <= UNSPLIT_MAX_OPS:
        assert_clean(g, split=False)


@pytest.mark.parametrize(("kind", "anomaly"), CASES)
@pytest.mark.parametrize("seed", range(25))
def test_anomalies_are_caught_on_their_key(kind: str, anomaly: str, seed: int) -> None:
    g = drawn(seed, kind, anomaly, max_ops=MAX_OPS)
    assert_caught(g)
    if len(g.ops) <= UNSPLIT_MAX_OPS:
        assert_caught(g, split=False)


@pytest.mark.parametrize("seed", range(150))
def test_checker_agrees_with_brute_force_on_perturbed_histories(seed: int) -> None:
    """A random change (a read's output, an outcome) has an unknown effect: the oracle decides."""
    rng = random.Random(seed)
    g = drawn(seed, rng.choice(KINDS), max_ops=10, max_keys=2, concurrency=6)
    history = perturb(rng, g.history())
    expected = "linearizable" if brute_force_linearizable(list(history), g.model()) \
        else "not-linearizable"
    for split in (True, False):
        assert check(g, history, split).verdict == expected, (seed, list(history))


# -- soak: a larger sweep, only in make soak --------------------------------------------------


def test_concurrent_appends_before_a_get() -> None:
    """Minimised from a generated KV key (seed 5) the checker left ``unknown`` at 51
    operations: before it finds that the get (p73) must precede append p68, it tries every
    order of the appends concurrent with the get (distinct states, so the memo cannot help):
    about 67,000 steps for 11 operations. Linearizable: 15 84, 33, 24, get, then the rest.
    """
    ops = [(22, "append", "x 22 75 y", None, 215, None),
           (33, "append", "x 33 83 y", "ok", 237, 250),
           (97, "put", "x 15 84 y", "ok", 238, 245),
           (68, "append", "x 27 104 y", "ok", 289, 346),
           (24, "append", "x 24 108 y", "ok", 302, 303),
           (73, "get", "x 15 84 yx 33 83 yx 24 108 y", "ok", 310, 341),
           (4, "append", "x 4 112 y", "info", 331, 340),
           (9, "append", "x 9 113 y", "ok", 332, 349),
           (35, "append", "x 35 114 y", None, 333, None),
           (7, "append", "x 7 115 y", "ok", 335, 355),
           (20, "append", "x 20 117 y", "ok", 339, 347)]
    events = []
    for proc, f, value, outcome, call, ret in ops:
        events.append((call, HistoryEvent(proc, "invoke", f, None if f == "get" else value, "k")))
        if ret is not None:
            events.append((ret, HistoryEvent(proc, outcome, f, value, "k")))
    history = History.from_events([ev for _, ev in sorted(events, key=lambda p: p[0])])
    assert brute_force_linearizable(list(history), KVModel())
    assert check_linearizable(history, KVModel(), timeout_s=TIMEOUT_S).verdict == "linearizable"


@pytest.mark.soak
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("block", range(10))
def test_soak_sweep(kind: str, block: int) -> None:
    for seed in range(1000 + 50 * block, 1050 + 50 * block):
        # measured: all 500 seeds decided at these sizes; KV at 200 and registers at 300
        # operations already left one stale-read seed in 500 unknown after 30 s
        size = 100 if kind == "kv" else 150
        assert_clean(drawn(seed, kind, max_ops=size, max_keys=8))
        for anomaly in ANOMALIES[kind]:
            assert_caught(drawn(seed, kind, anomaly, max_ops=size, max_keys=8))


@pytest.mark.soak
@pytest.mark.parametrize("seed", range(2000))
def test_soak_brute_force(seed: int) -> None:
    rng = random.Random(seed)
    g = drawn(seed, rng.choice(KINDS), max_ops=12, max_keys=2, concurrency=8)
    history = perturb(rng, perturb(rng, g.history()))
    truth = brute_force_linearizable(list(history), g.model())
    assert check(g, history).ok is truth, (seed, list(history))

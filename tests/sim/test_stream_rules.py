"""Stream rules and stream settings: added randomness that does not reshuffle old seeds."""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

from pnyx.catalog import get_protocol
from pnyx.core import Ready
from pnyx.protocols.raft.spec import RAFT, SIM_CONFIG, STREAM_NEMESIS_RULES, RaftNemesis, raft_spec
from pnyx.sim.nemesis import NemesisPlan, Strike, rule_stream
from pnyx.sim.runner import SimConfig, Simulation, run_sim
from pnyx.sim.schedule import parse_faults
from pnyx.sim.spec import World
from pnyx.sim.swarm import draw_swarm

ALL = parse_faults("all")
WITHOUT_STREAMS = replace(RAFT, draw_stream_settings=None, stream_nemesis_rules=())
"""The Raft spec as it was before stream draws existed."""


def _trace_hash(spec: Any, config: SimConfig) -> str | None:
    return run_sim(spec, replace(config, hash_trace=True)).trace_hash


def test_stream_draws_leave_the_main_draws_as_they_were() -> None:
    changed = 0
    for seed in range(60):
        new, old = draw_swarm(seed, RAFT, ALL), draw_swarm(seed, WITHOUT_STREAMS, ALL)
        extra_rules = new.nemesis.rules - old.nemesis.rules
        assert extra_rules <= set(STREAM_NEMESIS_RULES)
        assert replace(new.nemesis, rules=old.nemesis.rules) == old.nemesis
        assert new.faults == old.faults and new.intensity == old.intensity
        assert (new.nodes, new.clients, new.catch_up_ticks) == (
            old.nodes,
            old.clients,
            old.catch_up_ticks,
        )
        old_settings, new_settings = dict(old.settings), dict(new.settings)
        extra = {k for k in new_settings if new_settings[k] != old_settings.get(k)}
        assert extra <= {"snapshot_chunk_bytes", "snapshot_threshold_entries"}
        changed += bool(extra or extra_rules)
    assert 0 < changed < 60


def test_a_seed_without_stream_draws_replays_as_before() -> None:
    seeds = [
        s for s in range(40) if draw_swarm(s, RAFT, ALL) == draw_swarm(s, WITHOUT_STREAMS, ALL)
    ][:3]
    assert seeds
    for seed in seeds:
        config = SimConfig(seed=seed, faults=ALL, swarm=True)
        assert _trace_hash(RAFT, config) == _trace_hash(WITHOUT_STREAMS, config)


def test_a_stream_rule_that_never_fires_leaves_the_trace_unchanged() -> None:
    """With one-chunk snapshots (the default 256-byte chunks) ``snapshot-stale`` never
    strikes: the run is the same, byte for byte, as without the rule."""
    base = frozenset({"vote-crash", "append-crash", "snapshot-echo"})
    for seed in range(3):
        plans = [NemesisPlan(base | extra, 1.0, 6) for extra in (frozenset(), {"snapshot-stale"})]
        hashes = {_trace_hash(RAFT, SimConfig(seed=seed, faults=ALL, nemesis=p)) for p in plans}
        assert len(hashes) == 1


def _strikes(seed: int, spec: Any, plan: NemesisPlan) -> list[tuple[int, str]]:
    result = Simulation(spec, SimConfig(seed=seed, faults=ALL, nemesis=plan, trace=True)).run()
    assert result.ok, result.violation
    heal_us = next(r[0] for r in result.trace if r[1] == "heal-phase")
    return [(r[0] - heal_us, str(r[2])) for r in result.trace if r[1] == "strike"]


def test_snapshot_stale_cuts_a_follower_off_then_delivers_an_older_first_chunk() -> None:
    """Several-chunk snapshots taken every few entries: the rule cuts a follower off at a
    first chunk, and later re-delivers that chunk in the middle of a newer stream."""
    spec = raft_spec(
        config=replace(SIM_CONFIG, snapshot_chunk_bytes=8, snapshot_threshold_entries=4)
    )
    plan = NemesisPlan(frozenset({"snapshot-stale"}), 1.0, 6)
    kinds: set[str] = set()
    for seed in range(6):
        strikes = _strikes(seed, spec, plan)
        assert all("snapshot-stale" in text for _, text in strikes)
        assert all("inject" in text for at_us, text in strikes if at_us >= 0)
        kinds |= {text.split(": ")[1].split()[0] for _, text in strikes}
    assert kinds == {"isolate", "inject"}


class LatePause(RaftNemesis):
    """A stream rule that proposes a pause at every batch, also after the heal."""

    def stream_strike(self, world: World, node_id: int, ready: Ready, rngs: Any) -> Strike | None:
        return Strike("pause", node_id, 60_000_000, "snapshot-stale")


def test_stream_rules_start_no_fault_after_the_heal() -> None:
    spec = replace(RAFT, make_nemesis=LatePause)
    plan = NemesisPlan(frozenset({"snapshot-stale"}), 1.0, 20)
    strikes = _strikes(1, spec, plan)
    assert strikes and all(at_us < 0 for at_us, _ in strikes)


def test_each_stream_rule_has_its_own_stream() -> None:
    assert rule_stream(3, "a").random() == rule_stream(3, "a").random()
    assert rule_stream(3, "a").random() != rule_stream(3, "b").random()
    assert rule_stream(3, "a").random() != random.Random("pnyx-nemesis:3").random()


def _steal_strikes(spec: Any, seed: int) -> tuple[Any, list[tuple[int, str]]]:
    sim = Simulation(spec, SimConfig(seed=seed, faults=ALL, swarm=True, trace=True))
    result = sim.run()
    strikes = [(r[0], str(r[2])) for r in result.trace if r[1] == "strike"]
    return result, [(t, text) for t, text in strikes if "lease-steal" in text]


def _step(text: str) -> str:
    return text.split(": ")[1].split()[0]


def test_lease_steal_steps_follow_a_carried_out_cut() -> None:
    """Step 2 (power-cycle the voters, isolate the old leader) comes only after a step 1
    that was carried out, against the leader that step cut off (a proposal the firing draw
    turned down starts nothing)."""
    seconds = 0
    for seed in range(30):
        result, strikes = _steal_strikes(RAFT, seed)
        assert result.ok, result.violation
        cut_leader = None
        for _, text in strikes:
            if _step(text) == "cut":
                cut_leader = text.split("cut node ")[1].split()[0]
            elif _step(text) == "isolate":
                assert cut_leader == text.split("isolate node ")[1].split()[0], strikes
                seconds += 1
                cut_leader = None
    assert seconds > 0


def test_lease_steal_catches_a_restarted_voter_that_votes_at_once() -> None:
    """Swarm seed 23: the three steps happen, and the stale read is the steered one (a get
    of the key the steered put wrote at the new leader, served by the old leader)."""
    result, strikes = _steal_strikes(get_protocol("raft+restart_votes_at_once"), 23)
    assert result.violation is not None and result.violation.prop == "linearizability"
    assert [_step(text) for _, text in strikes][:3] == ["cut", "isolate", "inject"]
    steered_at = strikes[2][0]
    late = [e for e in result.history if e.time >= steered_at * 1000 and e.f in ("put", "get")]
    put_done = next(e for e in late if e.f == "put" and e.type == "ok")
    get_done = next(e for e in late if e.f == "get" and e.type == "ok" and e.time > put_done.time)
    assert get_done.key == put_done.key and get_done.value != put_done.value
    assert "get" in str(result.violation)
    ok = run_sim(RAFT, SimConfig(seed=23, faults=ALL, swarm=True))
    assert ok.ok, ok.violation

"""The nemesis hook strikes at the batch it names, with the effect each strike kind promises."""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

import pytest

from pnyx.core import PutRecord, Ready
from pnyx.protocols.raft.messages import VoteResponse
from pnyx.protocols.raft.node import LEADER, RaftNode
from pnyx.protocols.raft.spec import RAFT, RaftNemesis
from pnyx.sim.nemesis import NemesisPlan, Strike
from pnyx.sim.runner import SimConfig, Simulation, run_sim
from pnyx.sim.schedule import parse_faults
from pnyx.sim.spec import World
from tests.sim.probe import PROBE, ProbeNode, Seq

STRIKE_AT = 5
"""The probe strikes at node 1's batch that sends its fifth ``Seq``."""


class ProbeNemesis:
    """Strikes node 1 at the batch carrying Seq(n=STRIKE_AT)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def on_batch(self, world: World, node_id: int, ready: Ready, rng: random.Random) -> Any:
        if node_id != 1:
            return None
        if any(isinstance(s.msg, Seq) and s.msg.n == STRIKE_AT for s in ready.send):
            group = {"split": (1,), "cut": (2,)}.get(self.kind, ())
            return Strike(self.kind, 1, 100_000, "probe", group=group)
        return None


def _run(kind: str) -> tuple[Simulation, list[tuple[Any, ...]]]:
    spec = replace(PROBE, make_nemesis=lambda rules: ProbeNemesis(kind), nemesis_rules=("probe",))
    plan = NemesisPlan(frozenset({"probe"}), fire_p=1.0, max_strikes=1)
    sim = Simulation(spec, SimConfig(seed=1, trace=True, nemesis=plan, fault_ms=1_000))
    result = sim.run()
    assert result.ok, result.violation
    assert result.stats.strikes == 1
    return sim, result.trace


def _strike_time(trace: list[tuple[Any, ...]]) -> int:
    [t_us] = [r[0] for r in trace if r[1] == "strike" and "nemesis probe:" in str(r[2])]
    return t_us


def _seqs_from_1(trace: list[tuple[Any, ...]]) -> list[tuple[int, int]]:
    return [(r[0], r[4].n) for r in trace if r[1] == "deliver" and r[2] == 1]


def test_crash_strike_happens_right_after_the_batch_is_sent() -> None:
    _, trace = _run("crash")
    at = _strike_time(trace)
    crashes = [r[0] for r in trace if r[1] == "crash" and r[2] == 1]
    assert crashes == [at]
    seqs = _seqs_from_1(trace)
    assert STRIKE_AT in [n for _, n in seqs]  # the batch left before the crash
    assert not [n for t, n in seqs if t > at + 2_000 and n > STRIKE_AT and t < at + 100_000]
    assert [r for r in trace if r[1] == "restart" and r[2] == 1 and r[0] == at + 100_000]


def test_pause_strike_holds_the_batch_until_resume() -> None:
    sim, trace = _run("pause")
    at = _strike_time(trace)
    delivered = {n: t for t, n in _seqs_from_1(trace)}
    assert delivered[STRIKE_AT - 1] < at
    assert delivered[STRIKE_AT] >= at + 100_000  # sent only once the pause ended
    node = sim.node(1)
    assert isinstance(node, ProbeNode)


def test_isolate_strike_loses_the_batch_to_peers() -> None:
    for kind in ("isolate", "split"):
        _, trace = _run(kind)
        at = _strike_time(trace)
        seqs = _seqs_from_1(trace)
        assert STRIKE_AT not in [n for _, n in seqs]
        assert not [t for t, _ in seqs if at < t < at + 100_000]


def test_cut_strike_loses_the_links_to_its_group_only() -> None:
    _, trace = _run("cut")
    at = _strike_time(trace)
    to = {
        dst: [r[4].n for r in trace if r[1] == "deliver" and r[2] == 1 and r[3] == dst]
        for dst in (2, 3)
    }
    assert STRIKE_AT in to[3] and STRIKE_AT not in to[2]
    during = [r for r in trace if r[1] == "deliver" and r[2] == 1 and at < r[0] < at + 100_000]
    assert during and all(r[3] == 3 for r in during)


def test_drop_strike_loses_only_that_batch() -> None:
    _, trace = _run("drop")
    delivered = [n for _, n in _seqs_from_1(trace)]
    assert STRIKE_AT not in delivered and STRIKE_AT + 1 in delivered


def test_echo_strike_delivers_the_batch_again_later() -> None:
    _, trace = _run("echo")
    at = _strike_time(trace)
    times = [t for t, n in _seqs_from_1(trace) if n == STRIKE_AT]
    assert len(times) == 2 * 2  # to both peers, twice
    assert max(times) == at + 100_000


def test_bad_strikes_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown strike"):
        Strike("explode", 1, 10, "x")
    with pytest.raises(ValueError, match="must hold node"):
        Strike("split", 1, 10, "x", group=(2, 3))
    with pytest.raises(ValueError, match="must be other nodes"):
        Strike("cut", 1, 10, "x", group=(1, 2))
    with pytest.raises(ValueError, match="also-strike"):
        Strike("crash", 1, 10, "x", also=(Strike("echo", 2, 10, "x"),))


class Recording(RaftNemesis):
    """Records what the node looked like whenever a rule proposed a strike."""

    seen: list[tuple[str, str, bool, bool]] = []

    def on_batch(self, world: World, node_id: int, ready: Ready, rng: random.Random) -> Any:
        strike = super().on_batch(world, node_id, ready, rng)
        if strike is not None:
            node = world.node(node_id)
            assert isinstance(node, RaftNode)
            granted = any(
                isinstance(s.msg, VoteResponse) and s.msg.granted and not s.msg.pre_vote
                for s in ready.send
            )
            reads = any(getattr(a, "read_only", False) for a in ready.apply)
            Recording.seen.append((strike.rule, node.role, granted, reads))
            if strike.rule.startswith("joint"):
                assert node.role == LEADER and node.log.config().joint
        return strike


@pytest.mark.parametrize("rules", [{"vote-crash"}, {"read-pause", "read-isolate"}])
def test_raft_rules_strike_at_their_moment(rules: set[str]) -> None:
    Recording.seen = []
    spec = replace(RAFT, make_nemesis=Recording)
    plan = NemesisPlan(frozenset(rules), fire_p=1.0, max_strikes=3)
    for seed in range(3):
        assert (
            Simulation(spec, SimConfig(seed=seed, faults=parse_faults("drop"), nemesis=plan))
            .run()
            .ok
        )
    assert Recording.seen
    for rule, role, granted, reads in Recording.seen:
        if rule == "vote-crash":
            assert granted
        else:
            assert role == LEADER and reads


def test_joint_rules_strike_when_a_leader_appends_a_joint_configuration() -> None:
    Recording.seen = []
    spec = replace(RAFT, make_nemesis=Recording)
    rules = frozenset({"joint-isolate", "joint-split", "joint-transfer"})
    plan = NemesisPlan(rules, fire_p=1.0, max_strikes=2)
    for seed in range(6):
        Simulation(spec, SimConfig(seed=seed, nemesis=plan)).run()
    assert any(rule.startswith("joint") for rule, *_ in Recording.seen)


def test_commit_crash_never_fires_on_a_correct_leader() -> None:
    """A correct leader commits only entries of its own term (Figure 8 rule)."""
    plan = NemesisPlan(frozenset({"commit-crash"}), fire_p=1.0, max_strikes=6)
    for seed in range(4):
        result = Simulation(
            RAFT, SimConfig(seed=seed, faults=parse_faults("crash,drop"), nemesis=plan)
        ).run()
        assert result.ok and result.stats.strikes == 0


def test_inject_strike_needs_a_message_and_a_source() -> None:
    with pytest.raises(ValueError, match="inject"):
        Strike("inject", 1, 0, "x")


def test_halt_strike_crashes_before_the_batch_is_sent() -> None:
    _, trace = _run("halt")
    at = _strike_time(trace)
    assert [r[0] for r in trace if r[1] == "crash" and r[2] == 1] == [at]
    before_restart = [n for t, n in _seqs_from_1(trace) if t < at + 100_000]
    assert STRIKE_AT not in before_restart and STRIKE_AT - 1 in before_restart  # never left


class PauseForeverNemesis:
    """Pauses a Raft node at each of its batches for longer than the whole run."""

    def on_batch(self, world: World, node_id: int, ready: Ready, rng: random.Random) -> Any:
        return Strike("pause", node_id, 60_000_000, "probe")


def test_no_strike_at_the_batches_the_heal_itself_carries_out() -> None:
    """The heal resumes a paused node, whose held batch runs at once: no strike may hit it
    (a pause struck there would never end, and the heal phase would fail on liveness)."""
    spec = replace(RAFT, make_nemesis=lambda rules: PauseForeverNemesis(), nemesis_rules=("probe",))
    plan = NemesisPlan(frozenset({"probe"}), fire_p=1.0, max_strikes=20)
    fault_ms = 1_000
    sim = Simulation(spec, SimConfig(seed=1, trace=True, nemesis=plan, fault_ms=fault_ms))
    result = sim.run()
    assert result.ok, result.violation
    strikes = [r[0] for r in result.trace if r[1] == "strike"]
    assert strikes, "the probe nemesis never struck"
    assert all(t_us < fault_ms * 1000 for t_us in strikes), strikes


class StallProbe(ProbeNode):
    """Counts batches taken while another is still out, and asks for one at each stall."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.outstanding = False
        self.overlaps = 0
        self.stalls = 0

    def ready(self) -> Ready:
        self.overlaps += self.outstanding
        self.outstanding = True
        return super().ready()

    def advance(self, ready: Ready) -> None:
        super().advance(ready)
        self.outstanding = False

    def clock_stalled(self, missed_ticks: int) -> None:
        self.stalls += 1
        self._ready.persist.append(PutRecord("stall", missed_ticks))


class LongPause(ProbeNemesis):
    def on_batch(self, world: World, node_id: int, ready: Ready, rng: random.Random) -> Any:
        hit = super().on_batch(world, node_id, ready, rng)
        return None if hit is None else replace(hit, duration_us=1_000_000)


def test_a_stalled_node_gets_no_new_batch_before_its_held_one_is_carried_out() -> None:
    """Seed 61130: a leader paused before carrying out a batch (its apply of index 81) was
    told of the clock stall and its next batch (a read at 81) was carried out first."""
    spec = replace(
        PROBE,
        make_node=StallProbe,
        make_nemesis=lambda rules: LongPause("pause"),
        nemesis_rules=("probe",),
    )
    plan = NemesisPlan(frozenset({"probe"}), fire_p=1.0, max_strikes=1)
    sim = Simulation(spec, SimConfig(seed=1, nemesis=plan, fault_ms=3_000))
    result = sim.run()
    assert result.ok, result.violation
    node = sim.node(1)
    assert isinstance(node, StallProbe)
    assert node.stalls == 1 and node.overlaps == 0


def test_seed_61130_serves_no_read_before_the_apply_it_follows() -> None:
    result = run_sim(RAFT, SimConfig(seed=61130, faults=parse_faults("all"), swarm=True))
    assert result.ok, result.violation

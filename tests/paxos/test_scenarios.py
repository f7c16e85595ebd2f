"""Directed Paxos scenarios: competing proposers with interleaved phase 1, catch-up by
snapshot, Flexible Paxos quorum sizes, client-facing answers."""

from __future__ import annotations

import pytest

from pnyx.core import DurableState, InvalidMessage, SplitMix64
from pnyx.protocols.paxos import (
    LEADER,
    Accept,
    Accepted,
    Commit,
    PaxosConfig,
    PaxosNode,
    Prepare,
    Promise,
    Slot,
    quorum_sizes,
)
from pnyx.protocols.paxos.config import ADOPT_LOWEST_BALLOT, GAP_SKIPPED
from pnyx.protocols.paxos.messages import KIND_HOLE, KIND_NOOP
from pnyx.protocols.paxos.spec import PaxosMonitor
from pnyx.protocols.raft import AdminRequest, ClientRequest, KvOp, ReadRequest

from .cluster import Cluster

A = KvOp("put", "x", "A")
B = KvOp("put", "x", "B")


def _lead(c: Cluster, leader: int, voters: tuple[int, ...]) -> None:
    """``leader`` runs phase 1; only ``voters`` get its prepares (the rest are dropped)."""
    c.campaign(leader)
    for v in voters:
        c.deliver(leader, v, Prepare)
        c.deliver(v, leader, Promise)
    for other in c.ids:
        c.drop(leader, other)
    assert c.node(leader).role == LEADER


def _interleaved_phase1(mutants: frozenset[str]) -> tuple[Cluster, PaxosMonitor]:
    """Five acceptors.  Leader 1 gets A accepted by itself only; leader 2 (ballot (2,2))
    gets B chosen by {2, 4, 5}; then 3 runs phase 1 while 1 and 2 still think they lead,
    its prepares and 2's stale accepts interleaved, with promises from 1 (A at (1,1)) and 2
    (B at (2,2)).  It must adopt B, the value of the highest ballot."""
    c = Cluster(5, PaxosConfig(mutants=mutants))
    _lead(c, 1, (2, 3))
    c.step(1, ClientRequest(1, A), 1000)
    for other in c.ids:
        c.drop(1, other)  # leader 1 is cut off: A stays on it
    _lead(c, 2, (4, 5))
    c.step(2, ClientRequest(2, B), 1001)
    for v in (4, 5):
        c.deliver(2, v, Accept)
        c.deliver(v, 2, Accepted)
    assert c.node(2).commit == 1, "B is chosen by {2, 4, 5}"
    c.campaign(3)
    assert c.node(3).ballot == (2, 3)
    c.deliver(3, 1, Prepare)  # 1 still leads (1,1): it steps down, promising (2,3)
    c.deliver(2, 3, Accept)  # a stale accept of (2,2) reaches 3, which promised (2,3)
    c.deliver(3, 2, Prepare)  # 2 steps down
    assert c.node(1).role != LEADER and c.node(2).role != LEADER
    c.deliver(1, 3, Promise)
    assert c.node(3).role != LEADER, "two promises of three: phase 1 still open"
    c.deliver(2, 3)  # 2's promise (and its Nack of nothing)
    assert c.node(3).role == LEADER
    c.deliver_all()
    monitor = PaxosMonitor(c.ids, c.config)
    return c, monitor


def test_competing_proposers_new_leader_adopts_the_highest_ballot_value() -> None:
    c, monitor = _interleaved_phase1(frozenset())
    held = c.node(3).entry(1)
    assert held is not None and held.value == B and held.ballot == (2, 3)
    assert [monitor._check_node(c.node(i)) for i in c.ids] == [None] * 5
    assert all(c.sms[i].data.get("x") == "B" for i in c.ids if c.node(i).applied >= 1)
    assert c.node(3).commit == 1


def test_mutant_adopt_lowest_ballot_overwrites_the_chosen_value() -> None:
    c, monitor = _interleaved_phase1(frozenset({ADOPT_LOWEST_BALLOT}))
    held = c.node(3).entry(1)
    assert held is not None and held.value == A
    props = {v.prop for i in c.ids if (v := monitor._check_node(c.node(i))) is not None}
    assert "accepted-above-chosen" in props, props


def _gap(mutants: frozenset[str]) -> Cluster:
    """Leader 1 proposes slots 1 and 2; slot 1's accept is lost, slot 2 reaches node 2 only;
    then node 3 leads with promises from 2 and 3: slot 2 has a value, slot 1 none."""
    c = Cluster(3, PaxosConfig(max_batch_slots=1, mutants=mutants))
    _lead(c, 1, (2,))
    c.node(1).step(ClientRequest(1, A), 1000)
    c.node(1).step(ClientRequest(2, B), 1000)
    c.flush(1)
    c.queue = [m for m in c.queue if not (isinstance(m[2], Accept) and m[2].first == 1)]
    c.drop(1, 3)
    c.deliver(1, 2, Accept)
    c.drop(2, 1)
    c.campaign(3)
    c.deliver(3, 2, Prepare)
    c.deliver(2, 3, Promise)
    assert c.node(3).role == LEADER
    c.drop(3, 1)
    for _ in range(3):
        c.deliver(3, 2)
        c.deliver(2, 3)
    return c


def test_a_gap_found_in_phase1_is_filled_with_a_no_op() -> None:
    c = _gap(frozenset())
    node = c.node(3)
    gap, held = node.entry(1), node.entry(2)
    assert gap is not None and gap.kind == KIND_NOOP and held is not None and held.value == B
    assert node.commit == 2 and c.sms[3].data == {"x": "B"}
    assert [a.index for a in c.applied[3]] == [2], "the no-op is chosen but not applied"


def test_mutant_gap_skipped_leaves_the_gap_unchosen_yet_passed() -> None:
    c = _gap(frozenset({GAP_SKIPPED}))
    node = c.node(3)
    gap = node.entry(1)
    assert gap is not None and gap.kind == KIND_HOLE and node.commit == 2
    # node 1 still holds A at slot 1: a later leader may choose it, after 3 passed slot 1
    held = c.node(1).entry(1)
    assert held is not None and held.value == A


def test_a_lagging_replica_catches_up_from_a_snapshot() -> None:
    c = Cluster(3, PaxosConfig(snapshot_threshold_slots=4, max_batch_slots=2))
    _lead(c, 1, (2,))
    for rid in range(10):
        c.step(1, ClientRequest(rid, KvOp("put", f"k{rid}", str(rid))), 1000)
        c.deliver(1, 2)
        c.deliver(2, 1)
        c.drop(1, 3)
    leader = c.node(1)
    assert leader.commit == 10 and leader.offset >= 4, leader
    assert c.node(3).commit == 0
    c.node(1).tick()
    c.node(1).tick()  # a heartbeat: 3 answers with its commit, 1 sends its snapshot
    c.flush(1)
    c.deliver_all()
    c.node(1).tick()
    c.node(1).tick()
    c.flush(1)
    c.deliver_all()
    assert c.node(3).commit == 10 and c.node(3).offset >= 4
    assert c.sms[3].data == c.sms[1].data and c.sms[3].data["k9"] == "9"


def test_reads_wait_for_a_phase2_quorum_round() -> None:
    c = Cluster(3)
    _lead(c, 1, (2,))
    c.step(1, ReadRequest(7, KvOp("get", "x")), 1000)
    assert c.replies == [], "no answer before a quorum confirmed the ballot"
    c.deliver(1, 2)
    c.deliver(2, 1)
    assert [r.request_id for _, r in c.replies] == [7]


def test_followers_redirect_and_admin_requests_are_refused() -> None:
    c = Cluster(3)
    _lead(c, 1, (2,))
    c.node(1).tick()
    c.node(1).tick()  # a heartbeat tells the others who leads
    c.flush(1)
    c.deliver_all()
    c.step(2, ClientRequest(1, A), 1000)
    c.step(1, AdminRequest(2, "remove", 3), 1000)
    (_, redirect), (_, admin) = c.replies
    assert not redirect.ok and redirect.error == "not_leader" and redirect.leader_hint == 1
    assert not admin.ok and admin.error.startswith("not_supported") and "'remove'" in admin.error


def test_invalid_peer_messages_are_refused_before_any_change() -> None:
    node = PaxosNode(1, (1, 2, 3), SplitMix64(1), DurableState())
    with pytest.raises(InvalidMessage, match="not a peer"):
        node.step(Commit((1, 9), 0), 9)
    with pytest.raises(InvalidMessage, match="negative commit"):
        node.step(Commit((1, 2), -1), 2)
    with pytest.raises(InvalidMessage, match="malformed ballot"):
        node.step(Prepare((1, -2), 0), 2)
    assert node.promised == (0, 0) and node.commit == 0


# -- Flexible Paxos quorums ---------------------------------------------------------------


def test_flexible_quorums_derive_the_missing_size() -> None:
    assert quorum_sizes(5, None, None) == (3, 3)
    assert quorum_sizes(5, None, 2) == (4, 2)
    assert quorum_sizes(5, 4, None) == (4, 2)
    assert quorum_sizes(4, 3, 2) == (3, 2)


@pytest.mark.parametrize(("q1", "q2"), [(2, 3), (3, 2), (1, 1)])
def test_an_invalid_quorum_pair_is_refused_with_the_values(q1: int, q2: int) -> None:
    with pytest.raises(ValueError, match=rf"phase-1 quorum {q1} \+ phase-2 quorum {q2}"):
        quorum_sizes(5, q1, q2)
    config = PaxosConfig(phase1_quorum=q1, phase2_quorum=q2)
    with pytest.raises(ValueError, match="must exceed the 5 acceptors"):
        PaxosNode(1, (1, 2, 3, 4, 5), SplitMix64(1), DurableState(), config)


def test_quorum_sizes_out_of_range_are_refused() -> None:
    with pytest.raises(ValueError, match="phase-2 quorum 6 must be between 1 and 5"):
        quorum_sizes(5, 1, 6)


def test_a_small_phase2_quorum_commits_with_two_of_five() -> None:
    c = Cluster(5, PaxosConfig(phase2_quorum=2))
    _lead(c, 1, (2, 3, 4))  # phase 1 needs 4 of 5
    c.step(1, ClientRequest(1, A), 1000)
    c.deliver(1, 2, Accept)
    c.deliver(2, 1, Accepted)
    assert c.node(1).commit == 1 and c.replies[0][1].ok


def test_bad_client_requests_are_refused_and_far_accepts_ignored() -> None:
    node = PaxosNode(2, (1, 2, 3), SplitMix64(2), DurableState())
    with pytest.raises(InvalidMessage, match="consistency 'sloppy'"):
        node.step(ReadRequest(1, KvOp("get", "x"), "sloppy"), 1000)
    with pytest.raises(InvalidMessage, match="out of range"):
        node.step(Commit((1, 1), 2**63), 1)
    node.step(Accept((1, 1), 10**9, (Slot((1, 1), 0, A),), 0), 1)
    assert node.last_slot == 0 and node.promised == (1, 1), "no billion holes stored"
    node.step(Accept((1, 1), 3, (Slot((1, 1), 0, A),), 0), 1)
    assert node.last_slot == 3 and node.entry(1) is not None and node.entry(3) is not None


def test_failed_phase1_attempts_widen_the_randomized_back_off() -> None:
    config = PaxosConfig(election_timeout_ticks=10, election_jitter_ticks=4)
    node = PaxosNode(1, (1, 2, 3), SplitMix64(5), DurableState(), config)
    spans = {}
    for failures in (0, 3):
        node.failures = failures
        draws = []
        for _ in range(200):
            node._reset_timer()
            draws.append(node.timeout_ticks)
        spans[failures] = (min(draws), max(draws))
    assert spans[0][0] >= 10 and spans[0][1] < 14
    assert spans[3][0] >= 10 and 14 <= spans[3][1] < 10 + 4 * 8


def test_dueling_proposers_settle_on_one_leader() -> None:
    """Nodes 1 and 2 time out on the same tick, again and again at first; the widening
    random back-off lets one of them finish phase 1 and commit."""
    c = Cluster(3, PaxosConfig(election_timeout_ticks=4, election_jitter_ticks=1))
    for i in (1, 2):
        c.node(i).election_elapsed_ticks = c.node(i).timeout_ticks - 1
    c.node(3).timeout_ticks = 10**6  # node 3 only answers
    dueled = False
    for _ in range(400):
        for i in c.ids:
            c.node(i).tick()
            c.flush(i)
        dueled |= c.node(1).ballot != (0, 0) and c.node(2).ballot != (0, 0)
        c.deliver_all(rounds=10_000)
        leaders = [i for i in c.ids if c.node(i).role == LEADER]
        if len(leaders) == 1 and all(c.node(i).leader == leaders[0] for i in c.ids):
            break
    else:
        raise AssertionError("no single leader after 400 ticks")
    assert dueled, "both proposers ran phase 1"
    (leader,) = leaders
    c.step(leader, ClientRequest(1, A), 1000)
    c.deliver_all(rounds=10_000)
    assert c.node(leader).commit >= 1 and c.replies[-1][1].ok


def _restart_after_promise(mutants: frozenset[str]) -> list[object]:
    """Node 2 promises ballot (1, 3), crashes (only its disk survives) and restarts; then
    an accept of the older ballot (1, 1) reaches it.  Returns what node 2 answers."""
    c = Cluster(3, PaxosConfig(mutants=mutants))
    c.step(2, Prepare((1, 3), 0), 3)
    assert c.node(2).promised == (1, 3)
    c.nodes[2] = c._build(2)  # a crash: rebuilt from what it made durable
    c.queue.clear()
    c.step(2, Accept((1, 1), 1, (Slot((1, 1), 0, A),), 0), 1)
    return [type(m).__name__ for s, d, m in c.queue if s == 2 and d == 1]


def test_a_promise_survives_a_crash() -> None:
    assert _restart_after_promise(frozenset()) == ["Nack"]


def test_mutant_promise_not_persisted_accepts_below_its_promise_after_a_crash() -> None:
    assert _restart_after_promise(frozenset({"promise_not_persisted"})) == ["Accepted"]

"""Scenario tests of the 2PC and 3PC engines, driven by hand (no simulator)."""

from __future__ import annotations

import pytest

from pnyx.core import (
    Apply,
    ClientReply,
    DurableState,
    InvalidMessage,
    Message,
    PutRecord,
    Ready,
    SplitMix64,
)
from pnyx.protocols.commit.common import CommitConfig, CommitNode, txn_key
from pnyx.protocols.commit.messages import (
    CanCommit,
    Decided,
    Decision,
    DecisionAck,
    Inquire,
    PreCommit,
    PreCommitAck,
    Prepare,
    StateReply,
    StateRequest,
    SubmitTxn,
    Vote,
    Voted,
)
from pnyx.protocols.commit.threepc import ThreePcNode
from pnyx.protocols.commit.twopc import TwoPcNode

GROUP = (1, 2, 3, 4)
CLIENT = 1000
ALWAYS_YES = CommitConfig(no_vote_per_mille=0)
ALWAYS_NO = CommitConfig(no_vote_per_mille=1000)


def _two(
    node_id: int, durable: DurableState | None = None, cfg: CommitConfig = ALWAYS_YES
) -> TwoPcNode:
    return TwoPcNode(node_id, GROUP, SplitMix64(node_id), durable or DurableState(), cfg)


def _three(
    node_id: int, durable: DurableState | None = None, cfg: CommitConfig = ALWAYS_YES
) -> ThreePcNode:
    return ThreePcNode(node_id, GROUP, SplitMix64(node_id), durable or DurableState(), cfg)


def _sends(node: CommitNode, durable: DurableState | None = None) -> list[tuple[int, Message]]:
    """Take the node's batch; fold its persists into ``durable``; return its sends."""
    ready: Ready = node.ready()
    if durable is not None:
        durable.apply_all(ready.persist)
    node.advance(ready)
    return [(s.to, s.msg) for s in ready.send]


def _applied(ready: Ready) -> list[object]:
    return [item.command for item in ready.apply if isinstance(item, Apply)]


# -- 2PC --------------------------------------------------------------------------------


def test_2pc_commit_decision_is_persisted_in_the_batch_that_announces_it() -> None:
    coord = _two(1)
    coord.step(SubmitTxn(1, 7, (2, 3)), CLIENT)
    assert _sends(coord) == [(2, Prepare(7, (2, 3))), (3, Prepare(7, (2, 3)))]
    coord.step(Vote(7, True), 2)
    assert not coord.has_ready()  # still waiting for participant 3
    coord.step(Vote(7, True), 3)
    ready = coord.ready()
    assert ready.persist == [PutRecord(txn_key(7), ("committed", (2, 3)))]
    assert (CLIENT, ClientReply(1, True, "commit")) in [(s.to, s.msg) for s in ready.send]
    assert [s.to for s in ready.send if isinstance(s.msg, Decision)] == [2, 3]


def test_2pc_coordinator_recovers_its_commit_and_resends_it_until_acknowledged() -> None:
    durable = DurableState()
    coord = _two(1)
    coord.step(SubmitTxn(1, 7, (2, 3)), CLIENT)
    _sends(coord, durable)
    coord.step(Vote(7, True), 2)
    coord.step(Vote(7, True), 3)
    _sends(coord, durable)
    reborn = _two(1, durable.copy())
    assert any(isinstance(c, Decided) and c.commit for c in _applied(reborn.ready()))
    for _ in range(CommitConfig().resend_ticks):
        reborn.tick()
    assert sorted(to for to, msg in _sends(reborn) if msg == Decision(7, True)) == [2, 3]
    reborn.step(Inquire(7), 2)
    assert _sends(reborn) == [(2, Decision(7, True))]
    reborn.step(DecisionAck(7), 2)
    reborn.step(DecisionAck(7), 3)
    ready = reborn.ready()
    assert ready.persist == [PutRecord(txn_key(7), ("end", (2, 3)))]


def test_2pc_presumed_abort_answers_an_inquiry_about_an_unknown_transaction() -> None:
    coord = _two(1)
    coord.step(Inquire(99), 3)
    assert _sends(coord) == [(3, Decision(99, False))]


def test_2pc_vote_timeout_aborts_without_logging() -> None:
    coord = _two(1)
    coord.step(SubmitTxn(1, 7, (2, 3)), CLIENT)
    _sends(coord)
    coord.step(Vote(7, True), 2)
    for _ in range(CommitConfig().vote_timeout_ticks):
        coord.tick()
    ready = coord.ready()
    assert ready.persist == []  # presumed abort: nothing to log
    assert (CLIENT, ClientReply(1, True, "abort")) in [(s.to, s.msg) for s in ready.send]


def test_2pc_participant_in_doubt_survives_a_restart_and_keeps_asking() -> None:
    durable = DurableState()
    part = _two(2)
    part.step(Prepare(7, (2, 3)), 1)
    ready = part.ready()
    assert ready.persist == [PutRecord(txn_key(7), ("uncertain", (2, 3)))]
    assert [(s.to, s.msg) for s in ready.send] == [(1, Vote(7, True))]
    durable.apply_all(ready.persist)
    reborn = _two(2, durable.copy())
    assert Voted(7, 2, True, (2, 3)) in _applied(reborn.ready())
    for _ in range(CommitConfig().resend_ticks):
        reborn.tick()
    assert _sends(reborn) == [(1, Inquire(7))]
    reborn.step(Decision(7, False), 1)
    ready = reborn.ready()
    assert ready.persist == [PutRecord(txn_key(7), ("aborted", (2, 3)))]
    assert any(isinstance(c, Decided) and not c.commit for c in _applied(ready))
    reborn.advance(ready)
    for _ in range(3 * CommitConfig().resend_ticks):
        reborn.tick()
    assert _sends(reborn) == []  # decided: no more inquiries


def test_2pc_participant_voting_no_aborts_at_once() -> None:
    part = _two(2, cfg=ALWAYS_NO)
    part.step(Prepare(7, (2, 3)), 1)
    ready = part.ready()
    assert [(s.to, s.msg) for s in ready.send] == [(1, Vote(7, False))]
    assert any(isinstance(c, Decided) and not c.commit for c in _applied(ready))


def test_bad_input_gets_an_error_or_is_refused() -> None:
    coord = _two(1)
    coord.step(SubmitTxn(1, 7, (3, 2)), CLIENT)
    ((to, reply),) = _sends(coord)
    assert to == CLIENT and isinstance(reply, ClientReply) and not reply.ok
    assert "sorted" in reply.error
    coord.step(SubmitTxn(2, 8, (2, 9)), CLIENT)
    ((_, reply),) = _sends(coord)
    assert isinstance(reply, ClientReply) and "[9]" in reply.error
    with pytest.raises(InvalidMessage):
        coord.step(Vote(7, True), 9)  # not a participant
    with pytest.raises(InvalidMessage):
        _two(2).step(Prepare(7, (2, 3)), 3)  # only the coordinator prepares
    with pytest.raises(InvalidMessage):
        _two(2).step(Prepare(7, (2, 42)), 1)
    participant = _two(3)
    participant.step(SubmitTxn(1, 7, (2, 3)), CLIENT)
    ((_, reply),) = _sends(participant)
    assert isinstance(reply, ClientReply) and reply.leader_hint == 1


# -- 3PC --------------------------------------------------------------------------------


def test_3pc_coordinator_precommits_then_commits() -> None:
    coord = _three(1)
    coord.step(SubmitTxn(1, 7, (2, 3)), CLIENT)
    assert _sends(coord) == [(2, CanCommit(7, (2, 3))), (3, CanCommit(7, (2, 3)))]
    coord.step(Vote(7, True), 2)
    coord.step(Vote(7, True), 3)
    assert _sends(coord) == [(2, PreCommit(7, (2, 3))), (3, PreCommit(7, (2, 3)))]
    coord.step(PreCommitAck(7), 2)
    coord.step(PreCommitAck(7), 3)
    ready = coord.ready()
    assert ready.persist == [PutRecord(txn_key(7), ("committed", (2, 3)))]
    assert (CLIENT, ClientReply(1, True, "commit")) in [(s.to, s.msg) for s in ready.send]


def test_3pc_coordinator_never_presumes_abort_for_a_forgotten_transaction() -> None:
    coord = _three(1)
    coord.step(Vote(7, True), 2)
    assert _sends(coord) == []


def _uncertain(node_id: int, participants: tuple[int, ...]) -> ThreePcNode:
    part = _three(node_id)
    part.step(CanCommit(7, participants), 1)
    _sends(part)
    return part


def _time_out(part: ThreePcNode) -> list[tuple[int, Message]]:
    for _ in range(CommitConfig().termination_timeout_ticks):
        part.tick()
    return _sends(part)


def test_3pc_termination_all_uncertain_aborts() -> None:
    part = _uncertain(2, (2, 3))
    assert _time_out(part) == [(3, StateRequest(7, (2, 3)))]
    part.step(StateReply(7, "uncertain"), 3)
    part.tick()  # everyone answered: decide
    ready = part.ready()
    assert any(isinstance(c, Decided) and not c.commit for c in _applied(ready))
    assert [(s.to, s.msg) for s in ready.send] == [(3, Decision(7, False))]


def test_3pc_termination_with_a_precommitted_participant_precommits_then_commits() -> None:
    part = _uncertain(2, (2, 3, 4))
    _time_out(part)
    part.step(StateReply(7, "precommitted"), 3)
    part.step(StateReply(7, "uncertain"), 4)
    part.tick()
    ready = part.ready()
    assert [(s.to, s.msg) for s in ready.send] == [(4, PreCommit(7, (2, 3, 4)))]
    assert ready.persist == [PutRecord(txn_key(7), ("precommitted", (2, 3, 4)))]
    part.advance(ready)
    for _ in range(CommitConfig().collect_ticks):
        part.tick()
    ready = part.ready()
    assert any(isinstance(c, Decided) and c.commit for c in _applied(ready))
    assert sorted(s.to for s in ready.send if s.msg == Decision(7, True)) == [3, 4]


def test_3pc_termination_defers_to_a_lower_participant_that_answered() -> None:
    part = _uncertain(3, (2, 3))
    _time_out(part)
    part.step(StateReply(7, "uncertain"), 2)
    part.tick()
    assert _sends(part) == []  # node 2 is the recovery coordinator
    assert 7 in part.engine.undecided  # type: ignore[union-attr]


def test_3pc_termination_adopts_a_decision_it_hears_of() -> None:
    part = _uncertain(3, (2, 3))
    _time_out(part)
    part.step(StateReply(7, "committed"), 2)
    part.tick()
    assert any(isinstance(c, Decided) and c.commit for c in _applied(part.ready()))


def test_3pc_a_participant_that_never_voted_aborts_when_asked() -> None:
    part = _three(4)
    part.step(StateRequest(7, (2, 4)), 2)
    ready = part.ready()
    assert [(s.to, s.msg) for s in ready.send] == [(2, StateReply(7, "unknown"))]
    part.advance(ready)
    part.step(CanCommit(7, (2, 4)), 1)
    assert _sends(part) == [(1, Vote(7, False))]  # too late: it aborted


def test_3pc_refuses_bad_state_replies() -> None:
    part = _uncertain(2, (2, 3))
    with pytest.raises(InvalidMessage, match="state"):
        part.step(StateReply(7, "maybe"), 3)
    with pytest.raises(InvalidMessage):
        part.step(StateRequest(7, (2, 3)), 1)  # the coordinator does not terminate


def test_config_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="vote_timeout_ticks"):
        CommitConfig(vote_timeout_ticks=0)
    with pytest.raises(ValueError, match="no_vote_per_mille"):
        CommitConfig(no_vote_per_mille=1001)

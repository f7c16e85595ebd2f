"""Directed Multi-Paxos phase-2 scenarios: batching and the pipelining window, commit
notifications and catch-up of a lagging learner without a snapshot, exactly-once retries."""

from __future__ import annotations

from pnyx.protocols.paxos import LEADER, Accept, Commit, PaxosConfig, Prepare, Promise
from pnyx.protocols.paxos.messages import Learn, Snapshot
from pnyx.protocols.raft import ClientRequest
from pnyx.protocols.raft.kv import APPEND, OPEN_SESSION, PUT, Command, KvOp

from .cluster import Cluster

CLIENT = 1000


def _leader(c: Cluster) -> None:
    """Node 1 leads with promises from everyone; the queue is empty afterwards."""
    c.campaign(1)
    for other in c.ids[1:]:
        c.deliver(1, other, Prepare)
        c.deliver(other, 1, Promise)
    c.deliver_all(rounds=10_000)
    assert c.node(1).role == LEADER and not c.queue


def test_commands_go_out_in_batches_within_the_pipelining_window() -> None:
    c = Cluster(3, PaxosConfig(max_batch_slots=4, max_inflight_slots=6))
    _leader(c)
    for r in range(10):  # ten commands before the node's next batch
        c.node(1).step(ClientRequest(r + 1, KvOp(PUT, f"k{r}", "v")), CLIENT)
    c.flush(1)
    accepts = [m for s, d, m in c.queue if s == 1 and d == 2 and isinstance(m, Accept)]
    assert [(m.first, len(m.slots)) for m in accepts] == [(1, 4), (5, 2)], accepts
    c.deliver_all(rounds=10_000)  # acceptances open the window for slots 7..10
    assert c.node(1).commit == 10 and len([r for _, r in c.replies if r.ok]) == 10
    assert all(c.sms[i].data == c.sms[1].data for i in c.ids)


def test_a_lagging_learner_catches_up_from_learn_messages() -> None:
    c = Cluster(3, PaxosConfig(snapshot_threshold_slots=1000))
    _leader(c)
    for r in range(5):
        c.step(1, ClientRequest(r + 1, KvOp(PUT, f"k{r}", "v")), CLIENT)
        c.drop(1, 3)  # node 3 misses every accept and commit
        c.deliver_all(rounds=10_000)
    assert c.node(1).commit == 5 and c.node(3).commit == 0
    for _ in range(c.config.heartbeat_interval_ticks):
        c.node(1).tick()
    c.flush(1)
    assert any(d == 3 and isinstance(m, Commit) for _, d, m in c.queue)
    sent = []
    for _ in range(10_000):
        if not c.queue:
            break
        src, dst, msg = c.queue.pop(0)
        sent.append((src, dst, msg))
        c.step(dst, msg, src)
    to_three = [type(m) for s, d, m in sent if d == 3]
    assert Learn in to_three and Snapshot not in to_three, to_three
    assert c.node(3).commit == 5 and c.sms[3].data == c.sms[1].data


def test_a_retried_command_is_chosen_once_and_answered_from_the_session() -> None:
    c = Cluster(3)
    _leader(c)
    c.step(1, ClientRequest(1, Command(0, 0, OPEN_SESSION)), CLIENT)
    c.deliver_all(rounds=10_000)
    session = c.replies[-1][1].result
    assert isinstance(session, int)
    write = Command(session, 1, KvOp(APPEND, "a", "x;"))
    for request_id in (2, 3):  # the first reply was lost: the client retries
        c.step(1, ClientRequest(request_id, write), CLIENT)
        c.deliver_all(rounds=10_000)
    answers = {r.request_id: r for _, r in c.replies if r.request_id in (2, 3)}
    assert answers[2].ok and answers[3].ok and answers[2].result == answers[3].result
    assert all(c.sms[i].data["a"] == "x;" for i in c.ids), "applied once everywhere"

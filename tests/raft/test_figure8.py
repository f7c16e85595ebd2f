"""Figure 8 of the Raft paper, played out on five nodes: counting replicas of an entry from
an earlier term is not enough to commit it (§5.4.2).  With the mutant
``count_previous_term_entries`` the entry is committed, acknowledged to the client, and
then overwritten by a later leader — a state-machine safety violation; the correct code
never commits it, so the overwrite is legal.
"""

from __future__ import annotations

from pnyx.core import Apply, Message
from pnyx.protocols.raft import LEADER, AppendEntries, RaftConfig, RaftNode
from pnyx.protocols.raft.config import COUNT_PREVIOUS_TERM_ENTRIES

from .cluster import Cluster, Filter


def _campaign(c: Cluster, i: int, keep: Filter | None = None, attempts: int = 3) -> RaftNode:
    """Time node ``i`` out (everyone else has not heard from a leader for a while) and
    deliver until it leads; a first attempt may only teach it the current term."""
    node = c.node(i)
    for _ in range(attempts):
        for other in c.live():
            if other is not node:
                other.election_elapsed_ticks = c.config.election_timeout_ticks
        node.election_elapsed_ticks = node.randomized_timeout_ticks - 1
        c.tick(i)
        c.deliver(keep=keep)
        if node.role == LEADER:
            return node
    raise AssertionError(f"node {i} did not win\n{c.text()}")


def _figure_8(mutants: frozenset[str]) -> tuple[int, int | None, int, bool]:
    """Returns (index of A, the term node 1 committed at that index or None, the term node 5
    committed there in the end, whether node 1 applied A to its state machine)."""
    c = Cluster(5, RaftConfig(max_entries_per_msg=1, mutants=mutants))
    c.elect(1)
    session = c.open_session(1, rid=100)
    c.settle(2)
    # (a) leader 1 (term 1) replicates A only to node 2, then crashes.
    for j in (3, 4, 5):
        c.blocked |= {(1, j), (j, 1)}
    c.put(1, "x", "A", session, 1, 1)
    c.deliver()
    a_index = c.node(1).log.last_index
    assert c.node(2).log.last_index == a_index and c.node(1).commit < a_index
    c.crash(1)
    c.heal()
    # (b) node 5 wins term 2 with 3 and 4, appends its no-op at A's index, then crashes
    # before replicating it.
    five = _campaign(c, 5, keep=lambda s, d, m: s == 5 and isinstance(m, AppendEntries))
    assert five.term == 2 and five.log.term(a_index) == 2
    c.drop_queued()
    c.crash(5)
    # (c) node 1 restarts and wins term 3 with 2, 3, 4; it re-replicates A (term 1) one
    # entry per message to 3 and 4, but its own no-op (term 3) reaches nobody.
    c.restart(1)

    def own_entry_accepted(src: int, dst: int, msg: Message) -> bool:
        if not (isinstance(msg, AppendEntries) and src == 1):
            return False
        receiver = c.nodes[dst]
        accepts = receiver is not None and receiver.log.term(msg.prev_index) == msg.prev_term
        return accepts and any(e.term == 3 for e in msg.entries)

    one = _campaign(c, 1, keep=own_entry_accepted)
    assert one.term == 3
    assert [c.node(i).log.term(a_index) for i in (1, 3, 4)] == [1, 1, 1], "A on a majority"
    committed_by_1 = one.log.term(a_index) if one.commit >= a_index else None
    applied_a = any(isinstance(item, Apply) and item.index == a_index for item in c.applied[1][-3:])
    c.drop_queued()
    c.crash(1)
    # (d) node 5 restarts and wins term 4 with 2, 3, 4 (its last term 2 beats their 1).
    c.restart(5)
    five = _campaign(c, 5)
    c.settle(2)
    assert five.term == 4 and five.commit >= a_index
    final = five.log.term(a_index)
    assert final is not None
    return a_index, committed_by_1, final, applied_a


def test_figure_8_correct_code_never_commits_the_overwritten_entry() -> None:
    _, committed_by_1, final, applied_a = _figure_8(frozenset())
    assert committed_by_1 is None and not applied_a, "A was only counted, never committed"
    assert final == 2, "node 5's term-2 entry legally replaces the uncommitted A"


def test_figure_8_mutant_overwrites_a_committed_entry() -> None:
    _, committed_by_1, final, applied_a = _figure_8(frozenset({COUNT_PREVIOUS_TERM_ENTRIES}))
    assert committed_by_1 == 1 and applied_a, "A committed by counting and applied"
    assert final == 2, "then a later leader overwrote it: state-machine safety broken"

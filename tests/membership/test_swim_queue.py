"""The piggyback queue of SwimNode: retransmit limit, order, replacement and bound."""

from __future__ import annotations

from collections import Counter

from pnyx.protocols.membership import SwimConfig, retransmit_limit
from pnyx.protocols.membership.messages import ALIVE, SUSPECT, Update
from pnyx.protocols.membership.swim import UpdateQueue


def alive(member_id: int, incarnation: int = 0) -> Update:
    return Update(member_id, incarnation, ALIVE, "", member_id)


def test_every_update_is_sent_exactly_limit_times() -> None:
    queue = UpdateQueue(max_entries=100)
    for member_id in range(10):
        queue.push(alive(member_id))
    sent: Counter[int] = Counter()
    for _ in range(1_000):
        batch = queue.take(3, limit=5)
        assert len(batch) <= 3 and len({u.member_id for u in batch}) == len(batch)
        sent.update(u.member_id for u in batch)
    assert sent == dict.fromkeys(range(10), 5)
    assert len(queue) == 0 and queue.take(3, 5) == []


def test_fewest_transmissions_first_then_newest() -> None:
    queue = UpdateQueue(max_entries=100)
    queue.push(alive(1))
    queue.push(alive(2))
    assert [u.member_id for u in queue.take(1, 10)] == [2]
    queue.push(alive(3))
    assert [u.member_id for u in queue.take(3, 10)] == [3, 1, 2]


def test_newer_update_about_a_member_replaces_the_queued_one() -> None:
    queue = UpdateQueue(max_entries=100)
    queue.push(alive(1))
    queue.take(1, 10)
    queue.push(Update(1, 0, SUSPECT, "", 4))
    assert len(queue) == 1
    assert queue.take(5, 10) == [Update(1, 0, SUSPECT, "", 4)]


def test_queue_is_bounded_and_drops_the_most_sent_first() -> None:
    queue = UpdateQueue(max_entries=4)
    for member_id in range(4):
        queue.push(alive(member_id))
    queue.take(1, 10)  # member 3 now has one transmission
    queue.push(alive(9))
    assert len(queue) == 4 and queue.dropped == 1
    assert 3 not in queue and 9 in queue


def test_retransmit_limit_is_memberlists_formula() -> None:
    config = SwimConfig.lan(100)
    assert [retransmit_limit(config, n) for n in (1, 9, 10, 99, 100, 1_000)] == [
        4,
        4,
        8,
        8,
        12,
        16,
    ]

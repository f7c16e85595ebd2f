"""What a leader knows about one follower: match/next indices and flow-control state."""

from __future__ import annotations

from collections import deque

from pnyx.core import SnapshotSave

PROBE = "probe"
"""Next index unknown: one append at a time, until the follower accepts one."""
REPLICATE = "replicate"
"""Follower in sync: appends are pipelined, at most ``max_inflight_msgs`` unacknowledged."""
SNAPSHOT = "snapshot"
"""Follower needs entries the leader compacted: a snapshot is being streamed."""


class Progress:
    """Per-follower replication state, driven by the leader (etcd-raft's flow-control states)."""

    __slots__ = (
        "inflight",
        "match",
        "max_inflight",
        "next",
        "probe_sent",
        "recent_active",
        "snapshot",
        "snapshot_idle_ticks",
        "snapshot_offset",
        "state",
    )

    def __init__(self, next_index: int, max_inflight: int) -> None:
        assert max_inflight >= 1, f"max_inflight must be >= 1, got {max_inflight}"
        self.match = 0
        self.next = next_index
        self.state = PROBE
        self.probe_sent = False
        self.inflight: deque[int] = deque()
        self.max_inflight = max_inflight
        self.recent_active = False
        self.snapshot: SnapshotSave | None = None
        self.snapshot_offset = 0
        self.snapshot_idle_ticks = 0

    def __repr__(self) -> str:
        return f"Progress({self.state}, match={self.match}, next={self.next})"

    # -- state switches ------------------------------------------------------------------

    def become_probe(self) -> None:
        """Back to one-at-a-time: resume right after what is known to match."""
        self.state = PROBE
        self.next = self.match + 1
        self.probe_sent = False
        self.inflight.clear()
        self.snapshot = None

    def become_replicate(self) -> None:
        self.state = REPLICATE
        self.next = self.match + 1
        self.inflight.clear()
        self.snapshot = None

    def become_snapshot(self, snapshot: SnapshotSave) -> None:
        self.state = SNAPSHOT
        self.inflight.clear()
        self.snapshot = snapshot
        self.snapshot_offset = 0
        self.snapshot_idle_ticks = 0

    # -- events ---------------------------------------------------------------------------

    def can_send(self) -> bool:
        """May the leader send another append now?"""
        if self.state == REPLICATE:
            return len(self.inflight) < self.max_inflight
        if self.state == PROBE:
            return not self.probe_sent
        return False

    def sent(self, last_index: int, count: int) -> None:
        """An append ending at ``last_index`` (``count`` entries) went out."""
        if self.state == REPLICATE:
            if count:
                self.next = last_index + 1
                self.inflight.append(last_index)
                assert len(self.inflight) <= self.max_inflight
        elif self.state == PROBE:
            self.probe_sent = True

    def acked(self, index: int) -> bool:
        """The follower matches through ``index``; True when that is news."""
        self.probe_sent = False
        inflight = self.inflight
        while inflight and inflight[0] <= index:
            inflight.popleft()
        if index <= self.match:
            return False
        self.match = index
        if self.next <= index:
            self.next = index + 1
        return True

    def rejected(self, rejected_index: int, next_guess: int) -> bool:
        """The follower refused the append after ``rejected_index``; True if not stale."""
        if self.state == REPLICATE:
            if rejected_index <= self.match:
                return False  # an old message overtaken by later acks
            self.become_probe()
            self.next = max(self.match + 1, min(next_guess, rejected_index))
            return True
        if self.next - 1 != rejected_index:
            return False  # probing has moved on since this append was sent
        self.next = max(self.match + 1, min(next_guess, rejected_index))
        self.probe_sent = False
        return True

    def free_one(self) -> None:
        """A heartbeat answer while the window is full: let one more append through."""
        if self.inflight:
            self.inflight.popleft()

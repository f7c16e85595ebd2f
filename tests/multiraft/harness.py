"""A tiny deterministic driver of MultiRaftNode processes (no simulator): FIFO delivery,
every ready batch persisted into a per-process DurableState through the real WAL's op
codec (encoded and decoded, as a restart reads them back), crash = rebuild from it."""

from __future__ import annotations

import random
from collections import deque
from typing import Any

from pnyx.core import CLIENT_ID_BASE, ClientReply, DurableState, Message, is_client
from pnyx.protocols.multiraft import (
    META_GROUP,
    GroupRequest,
    MultiRaftConfig,
    MultiRaftNode,
    RangeDesc,
)
from pnyx.protocols.multiraft.messages import GroupOp
from pnyx.protocols.raft import LEADER, ClientRequest, KvOp, RaftConfig, ReadRequest
from pnyx.runtime.wal import PersistCodec

CLIENT = CLIENT_ID_BASE
MAX_BATCHES = 10_000
WAL_CODEC = PersistCodec(entry_type=GroupOp)


def config(**changes: Any) -> MultiRaftConfig:
    """Small Raft batches and snapshots; overrides as keyword arguments."""
    raft = RaftConfig(election_jitter_ticks=4, snapshot_threshold_entries=16)
    return MultiRaftConfig(raft=raft, **changes)


class Net:
    """Processes 1..n of one cluster and a client inbox."""

    def __init__(self, n: int, cfg: MultiRaftConfig) -> None:
        self.ids = tuple(range(1, n + 1))
        self.cfg = cfg
        self.disks = {i: DurableState() for i in self.ids}
        self.nodes = {i: self._build(i, 0) for i in self.ids}
        self.down: set[int] = set()
        self.queue: deque[tuple[int, int, Message]] = deque()
        self.replies: dict[int, ClientReply] = {}
        self._incarnation = dict.fromkeys(self.ids, 0)
        self._request_id = 0

    def _build(self, pid: int, incarnation: int) -> MultiRaftNode:
        rng = random.Random(f"{pid}:{incarnation}")
        return MultiRaftNode(pid, self.ids, rng, self.disks[pid].copy(), self.cfg)

    # -- driving --------------------------------------------------------------------------

    def pump(self, pid: int) -> None:
        node = self.nodes[pid]
        for _ in range(MAX_BATCHES):
            if not node.has_ready():
                return
            batch = node.ready()
            self.disks[pid].apply_all(
                [WAL_CODEC.decode(WAL_CODEC.encode(op)) for op in batch.persist]
            )
            for send in batch.send:
                if is_client(send.to):
                    if isinstance(send.msg, ClientReply):
                        self.replies[send.msg.request_id] = send.msg
                else:
                    self.queue.append((send.to, pid, send.msg))
            node.advance(batch)
        raise AssertionError(f"process {pid} never ran out of ready batches")

    def deliver(self) -> None:
        for _ in range(1_000_000):
            if not self.queue:
                return
            to, sender, msg = self.queue.popleft()
            if to in self.down or sender in self.down:
                continue
            self.nodes[to].step(msg, sender)
            self.pump(to)
        raise AssertionError("messages never stopped")

    def run(self, ticks: int) -> None:
        for _ in range(ticks):
            for pid in self.ids:
                if pid not in self.down:
                    self.nodes[pid].tick()
                    self.pump(pid)
            self.deliver()

    def crash(self, pid: int) -> None:
        self.down.add(pid)

    def restart(self, pid: int) -> None:
        self._incarnation[pid] += 1
        self.nodes[pid] = self._build(pid, self._incarnation[pid])
        self.down.discard(pid)
        self.pump(pid)

    # -- views and requests ---------------------------------------------------------------

    def leader(self, gid: int) -> int:
        found = [
            p
            for p in self.ids
            if p not in self.down
            and gid in self.nodes[p].groups
            and self.nodes[p].groups[gid].role == LEADER
        ]
        assert found, f"group {gid} has no leader"
        return max(found, key=lambda p: self.nodes[p].groups[gid].term)

    def meta_map(self, pid: int) -> list[RangeDesc]:
        return sorted(self.nodes[pid].meta.ranges.values(), key=lambda d: d.start)

    def owner(self, key: str) -> int:
        pid = self.leader(META_GROUP)
        found = [d.range_id for d in self.meta_map(pid) if d.contains(key)]
        assert len(found) == 1, f"key {key!r} in ranges {found}"
        return found[0]

    def send(self, pid: int, gid: int, request: Message) -> None:
        self.nodes[pid].step(GroupRequest(gid, request), CLIENT)  # type: ignore[arg-type]
        self.pump(pid)

    def next_id(self) -> int:
        self._request_id += 1
        return self._request_id

    def put(self, pid: int, gid: int, key: str, value: str) -> int:
        rid = self.next_id()
        self.send(pid, gid, ClientRequest(rid, KvOp("put", key, value)))
        return rid

    def get(self, pid: int, gid: int, key: str) -> int:
        rid = self.next_id()
        self.send(pid, gid, ReadRequest(rid, KvOp("get", key)))
        return rid

    def put_routed(self, key: str, value: str) -> ClientReply:
        """A write sent to the leader of the range that owns ``key``; runs until answered."""
        gid = self.owner(key)
        rid = self.put(self.leader(gid), gid, key, value)
        self.deliver()
        for _ in range(50):
            if rid in self.replies:
                return self.replies[rid]
            self.run(1)
        raise AssertionError(f"no reply to put {key!r}")

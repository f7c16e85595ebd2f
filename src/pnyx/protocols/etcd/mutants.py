"""Deliberately broken variants of the etcd service (fault testing only).

Shared by the simulator's etcd spec (``pnyx sim etcd+lease_expires_early``) and the real
service (``pnyx serve --protocol etcd --test-mutant lease_expires_early``), so both run the
same defect.  Raft's mutants are in :mod:`pnyx.protocols.raft.config`.
"""

from __future__ import annotations

from typing import Any

from pnyx.protocols.etcd.lease import Lessor
from pnyx.protocols.etcd.machine import EtcdStore

LEASE_EXPIRES_EARLY = "lease_expires_early"
"""A new leader's lessor counts each lease's TTL from when its node first saw the lease:
see :class:`ForgetfulLessor`."""

LOCAL_READS = "local_reads"
"""Reads served without ReadIndex: a linearizable Range (or any read) is answered from the
member's own applied state, as a serializable one would be — the member the client talks
to may be a follower that is behind, or cut off from the cluster.  Real processes only (the
simulator's etcd spec checks this path through its Raft mutants)."""

SERVICE_MUTANTS: frozenset[str] = frozenset({LEASE_EXPIRES_EARLY, LOCAL_READS})
"""The etcd service's mutants that run on real processes."""


class ForgetfulLessor(Lessor):
    """Mutant ``lease_expires_early``: a new leader counts each lease's TTL from when its
    node first saw the lease (as a follower), not from its promotion — as if nobody had
    kept the lease alive since: the keep-alives the old leader acknowledged are forgotten."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._first_seen_ms: dict[int, int] = {}

    def expired(self, now_ms: int) -> list[int]:
        if not self.primary:  # asked on every tick: note the leases this node knows of
            known = self.table.ttl_s
            for lease_id in [i for i in self._first_seen_ms if i not in known]:
                del self._first_seen_ms[lease_id]
            for lease_id in known:
                self._first_seen_ms.setdefault(lease_id, now_ms)
        return super().expired(now_ms)

    def promote(self, now_ms: int) -> None:
        super().promote(now_ms)
        for lease_id, seen_ms in self._first_seen_ms.items():
            if lease_id in self.deadline_ms:
                self.keep_alive(lease_id, seen_ms)  # the deadline becomes seen + TTL


def forgetful_lessor(store: EtcdStore, **options: Any) -> ForgetfulLessor:
    """A :class:`ForgetfulLessor` over ``store``'s lease table (``options`` as
    :class:`Lessor`'s)."""
    return ForgetfulLessor(store.leases, lambda: store.mvcc.current_revision, **options)


__all__ = [
    "LEASE_EXPIRES_EARLY",
    "LOCAL_READS",
    "SERVICE_MUTANTS",
    "ForgetfulLessor",
    "forgetful_lessor",
]

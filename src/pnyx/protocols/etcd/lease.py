"""etcd v3 leases: the replicated lease table and the leader's expiry clock.

Two halves, as etcd's ``server/lease/lessor.go`` has them:

* :class:`LeaseTable` is *replicated state* (every replica, part of the snapshot): which
  leases exist, their granted TTL, which keys are attached, and the deterministic
  generator of server-chosen ids.  It changes only by applying log commands
  (``LeaseGrantRequest``, ``LeaseRevokeRequest``, puts and deletes of leased keys).
* :class:`Lessor` is *leader-local* and not replicated: the deadline of every lease on
  the leader's monotonic clock.  It never reads a clock: the caller passes ``now_ms``.
  Keep-alives renew deadlines here (never through the log, as etcd); the runtime asks
  :meth:`Lessor.expired` on every tick and proposes a ``LeaseRevokeRequest`` per id; a
  node that becomes leader calls :meth:`Lessor.promote`, which restarts every lease's
  full TTL from ``now_ms`` (etcd's ``Promote``), so a failover never expires a lease
  early.

Pure: no I/O, no clock, no randomness.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable

from pnyx.protocols.etcd.errors import (
    ERR_LEASE_EXIST,
    ERR_LEASE_NOT_FOUND,
    ERR_LEASE_TTL_TOO_LARGE,
    ERR_NOT_LEADER,
    ErrorResult,
)
from pnyx.protocols.etcd.requests import (
    MAX_LEASE_TTL_S,
    Event,
    EventType,
    KeyValue,
    LeaseKeepAliveResponse,
    LeaseTimeToLiveRequest,
    LeaseTimeToLiveResponse,
    ResponseHeader,
)

NO_LEASE = 0
"""etcd's ``NoLease``: lease id 0 means "no lease" (a put without a lease)."""

DEFAULT_ELECTION_TICKS = 10
DEFAULT_HEARTBEAT_MS = 100
DEFAULT_REVOKE_RETRY_MS = 3_000
"""An expired lease is offered for revoking again after this long if it is still there
(the proposal was lost, e.g. to a leader change): etcd's ``expiredLeaseRetryInterval``."""
DEFAULT_MAX_REVOKES_PER_CALL = 1_000
"""At most this many ids per :meth:`Lessor.expired` call (etcd revokes at most
``leaseRevokeRate`` = 1000 leases per second)."""

_MASK_63 = (1 << 63) - 1
_MASK_64 = (1 << 64) - 1


def min_lease_ttl_s(election_ticks: int, heartbeat_ms: int) -> int:
    """etcd's minimum lease TTL: ``ceil(((3 * election_ticks) // 2) * heartbeat)`` in
    seconds (``server.go``: a lease must outlive an election).  10 ticks x 100 ms → 2 s."""
    if election_ticks < 1 or heartbeat_ms < 1:
        raise ValueError(f"election_ticks={election_ticks}, heartbeat_ms={heartbeat_ms}")
    min_ttl_ms = ((3 * election_ticks) // 2) * heartbeat_ms
    return -(-min_ttl_ms // 1000)


DEFAULT_MIN_LEASE_TTL_S = min_lease_ttl_s(DEFAULT_ELECTION_TICKS, DEFAULT_HEARTBEAT_MS)


def _mix64(x: int) -> int:
    """SplitMix64's finaliser: spreads a counter over 64 bits (deterministically)."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK_64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK_64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK_64
    return x ^ (x >> 31)


class LeaseTable:
    """The replicated lease state: ids, granted TTLs (s), attached keys.

    ``version`` changes whenever the set of leases changes (grant, revoke, restore), so a
    :class:`Lessor` can resynchronise its deadlines cheaply.
    """

    def __init__(self, min_ttl_s: int = DEFAULT_MIN_LEASE_TTL_S) -> None:
        if min_ttl_s < 1:
            raise ValueError(f"min_ttl_s={min_ttl_s}: at least 1")
        self.min_ttl_s = min_ttl_s
        self.ttl_s: dict[int, int] = {}
        """Granted TTL (seconds, after the minimum was applied) of every lease."""
        self.keys: dict[int, set[bytes]] = {}
        """Keys currently attached to each lease (rebuilt from the MVCC store on restore)."""
        self.id_seq = 0
        """How many server-chosen ids were drawn (the generator's deterministic state)."""
        self.version = 0
        self.granted_at: dict[int, int] = {}
        """The ``version`` each lease was granted at: tells a re-grant of a revoked id
        from the old lease (not replicated: only compared for change)."""

    def exists(self, lease_id: int) -> bool:
        """Is ``lease_id`` a live lease?"""
        return lease_id in self.ttl_s

    def granted_ttl_s(self, lease_id: int) -> int:
        """The granted TTL of a live lease (KeyError if there is none)."""
        return self.ttl_s[lease_id]

    def keys_of(self, lease_id: int) -> list[bytes]:
        """Keys attached to ``lease_id``, sorted."""
        return sorted(self.keys.get(lease_id, ()))

    def ids(self) -> list[int]:
        """Every live lease id, ascending."""
        return sorted(self.ttl_s)

    def grant(self, ttl_s: int, lease_id: int = NO_LEASE) -> tuple[int, int]:
        """Create a lease: ``(id, granted ttl_s)``.  ``lease_id`` 0 draws a fresh id from
        the deterministic generator; a TTL below the minimum is raised to it (etcd's
        ``lessor.Grant``).  Raises *too large lease TTL* / *lease already exists*."""
        if ttl_s > MAX_LEASE_TTL_S:
            raise ERR_LEASE_TTL_TOO_LARGE.fresh()
        if lease_id == NO_LEASE:
            lease_id = self._fresh_id()
        if lease_id in self.ttl_s:
            raise ERR_LEASE_EXIST.fresh()
        granted = max(ttl_s, self.min_ttl_s)
        self.ttl_s[lease_id] = granted
        self.keys[lease_id] = set()
        self.version += 1
        self.granted_at[lease_id] = self.version
        return lease_id, granted

    def remove(self, lease_id: int) -> None:
        """Forget a lease (its keys must already be deleted: see ``EtcdStore``)."""
        if lease_id not in self.ttl_s:
            raise ERR_LEASE_NOT_FOUND.fresh()
        del self.ttl_s[lease_id]
        self.keys.pop(lease_id, None)
        self.granted_at.pop(lease_id, None)
        self.version += 1

    def observe(self, events: Iterable[Event]) -> None:
        """Follow attachments through one revision's events: a put moves its key from the
        previous version's lease to its own; a delete detaches it."""
        for ev in events:
            kv, prev = ev.kv, ev.prev_kv
            if kv is None:
                continue
            if prev is not None and prev.lease != NO_LEASE:
                attached = self.keys.get(prev.lease)
                if attached is not None:
                    attached.discard(kv.key)
            if ev.type == EventType.PUT and kv.lease != NO_LEASE:
                self.keys.setdefault(kv.lease, set()).add(kv.key)

    def load(
        self, leases: Iterable[tuple[int, int]], id_seq: int, live_kvs: Iterable[KeyValue]
    ) -> None:
        """Replace the table (restore): ``(id, ttl_s)`` pairs, the generator state, and
        the store's current key-values to re-attach.  Raises ValueError (nothing changed)
        when a key names a lease that does not exist."""
        ttl_s = dict(leases)
        keys: dict[int, set[bytes]] = {lease_id: set() for lease_id in ttl_s}
        for kv in live_kvs:
            if kv.lease == NO_LEASE:
                continue
            if kv.lease not in keys:
                raise ValueError(f"key {kv.key!r} is attached to unknown lease {kv.lease}")
            keys[kv.lease].add(kv.key)
        self.ttl_s, self.keys, self.id_seq = ttl_s, keys, id_seq
        self.version += 1
        self.granted_at = dict.fromkeys(ttl_s, self.version)

    def _fresh_id(self) -> int:
        while True:
            self.id_seq += 1
            candidate = _mix64(self.id_seq) & _MASK_63
            if candidate != NO_LEASE and candidate not in self.ttl_s:
                return candidate


class Lessor:
    """The leader's lease clock: deadlines (ms on the caller's monotonic clock).

    Fed by the runtime with ``now_ms`` (monotonic milliseconds or ticks x tick length);
    it reads no clock.  Only a *primary* (leader) lessor renews, answers time-to-live and
    reports expiries; a follower's calls get *not leader* (the server forwards them).
    """

    def __init__(
        self,
        table: LeaseTable,
        current_revision: Callable[[], int] = lambda: 0,
        *,
        revoke_retry_ms: int = DEFAULT_REVOKE_RETRY_MS,
        max_revokes_per_call: int = DEFAULT_MAX_REVOKES_PER_CALL,
    ) -> None:
        if revoke_retry_ms < 1 or max_revokes_per_call < 1:
            raise ValueError(f"revoke_retry_ms={revoke_retry_ms}, max={max_revokes_per_call}")
        self.table = table
        self.current_revision = current_revision
        self.revoke_retry_ms = revoke_retry_ms
        self.max_revokes_per_call = max_revokes_per_call
        self.primary = False
        self.deadline_ms: dict[int, int] = {}
        """When each lease expires unless renewed (primary only)."""
        self._offered_ms: dict[int, int] = {}
        self._granted_at: dict[int, int] = {}
        self._due_ms: dict[int, int] = {}
        """When each lease is next due: its deadline, or a retry after being offered."""
        self._heap: list[tuple[int, int]] = []
        """``(due_ms, lease_id)``, lazily cleaned: an entry whose due time is no longer
        ``_due_ms[lease_id]`` is stale and skipped."""
        self._seen_version = -1

    # ----------------------------------------------------------------- leadership

    def promote(self, now_ms: int) -> None:
        """This node became leader: every lease gets its full TTL from ``now_ms``."""
        self.demote()
        self.primary = True
        for lease_id, ttl in self.table.ttl_s.items():
            self._set_deadline(lease_id, now_ms + 1000 * ttl)
        self._granted_at = dict(self.table.granted_at)
        self._seen_version = self.table.version

    def demote(self) -> None:
        """This node is no longer leader: forget every deadline."""
        self.primary = False
        self.deadline_ms = {}
        self._offered_ms = {}
        self._granted_at = {}
        self._due_ms = {}
        self._heap = []
        self._seen_version = -1

    # ----------------------------------------------------------------- leader calls

    def keep_alive(self, lease_id: int, now_ms: int) -> LeaseKeepAliveResponse | ErrorResult:
        """Renew ``lease_id`` to ``now_ms + TTL`` (etcd's ``Renew``): the response carries
        the granted TTL, or TTL 0 when the lease does not exist or already expired (as
        etcd's keep-alive stream answers).  *not leader* on a follower."""
        if not self.primary:
            return ERR_NOT_LEADER.result()
        self._sync(now_ms)
        header = ResponseHeader(revision=self.current_revision())
        deadline = self.deadline_ms.get(lease_id)
        if deadline is None or deadline <= now_ms:
            return LeaseKeepAliveResponse(header=header, ID=lease_id, TTL=0)
        ttl_s = self.table.granted_ttl_s(lease_id)
        self._set_deadline(lease_id, now_ms + 1000 * ttl_s)
        return LeaseKeepAliveResponse(header=header, ID=lease_id, TTL=ttl_s)

    def time_to_live(
        self, request: LeaseTimeToLiveRequest, now_ms: int
    ) -> LeaseTimeToLiveResponse | ErrorResult:
        """etcd's ``LeaseTimeToLive``: remaining whole seconds (truncated, never below 0),
        granted TTL, and the attached keys (sorted) when asked; TTL -1 for an unknown
        lease (as etcd's gRPC layer answers).  *not leader* on a follower."""
        if not self.primary:
            return ERR_NOT_LEADER.result()
        self._sync(now_ms)
        header = ResponseHeader(revision=self.current_revision())
        lease_id = request.ID
        deadline = self.deadline_ms.get(lease_id)
        if deadline is None:
            return LeaseTimeToLiveResponse(header=header, ID=lease_id, TTL=-1)
        return LeaseTimeToLiveResponse(
            header=header,
            ID=lease_id,
            TTL=max(0, deadline - now_ms) // 1000,
            grantedTTL=self.table.granted_ttl_s(lease_id),
            keys=self.table.keys_of(lease_id) if request.keys else [],
        )

    def remaining_ms(self, lease_id: int, now_ms: int) -> int | None:
        """Milliseconds until ``lease_id`` expires (None: unknown lease or not leader)."""
        if not self.primary:
            return None
        self._sync(now_ms)
        deadline = self.deadline_ms.get(lease_id)
        return None if deadline is None else deadline - now_ms

    def expired(self, now_ms: int) -> list[int]:
        """Leases to revoke now (earliest deadline first, at most
        ``max_revokes_per_call``): the runtime proposes ``LeaseRevokeRequest(ID=id)`` for
        each.  An id is offered again only after ``revoke_retry_ms`` if its revoke has not
        been applied by then.  Empty on a follower."""
        if not self.primary:
            return []
        self._sync(now_ms)
        out: list[int] = []
        heap = self._heap
        while heap and heap[0][0] <= now_ms and len(out) < self.max_revokes_per_call:
            due, lease_id = heapq.heappop(heap)
            if self._due_ms.get(lease_id) != due:
                continue  # stale: renewed, re-offered or revoked since
            out.append(lease_id)
            self._offered_ms[lease_id] = now_ms
            self._push(lease_id, now_ms + self.revoke_retry_ms)
        return out

    def next_deadline_ms(self) -> int | None:
        """When :meth:`expired` will next have something (None: nothing pending or not
        leader), for a runtime that schedules instead of polling."""
        if not self.primary:
            return None
        heap = self._heap
        while heap and self._due_ms.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def _set_deadline(self, lease_id: int, deadline_ms: int) -> None:
        self.deadline_ms[lease_id] = deadline_ms
        self._offered_ms.pop(lease_id, None)
        self._push(lease_id, deadline_ms)

    def _push(self, lease_id: int, due_ms: int) -> None:
        self._due_ms[lease_id] = due_ms
        heapq.heappush(self._heap, (due_ms, lease_id))
        if len(self._heap) > 4 * len(self._due_ms) + 64:  # drop stale entries
            self._heap = [(d, i) for i, d in self._due_ms.items()]
            heapq.heapify(self._heap)

    def _sync(self, now_ms: int) -> None:
        """Follow the replicated table: a lease granted since the last call (a re-grant
        of a revoked id too) starts its TTL now; a revoked one is forgotten."""
        table = self.table
        if table.version == self._seen_version:
            return
        for lease_id in [i for i in self.deadline_ms if i not in table.ttl_s]:
            del self.deadline_ms[lease_id]
            self._offered_ms.pop(lease_id, None)
            self._granted_at.pop(lease_id, None)
            self._due_ms.pop(lease_id, None)
        for lease_id, ttl in table.ttl_s.items():
            granted_at = table.granted_at.get(lease_id, 0)
            if self._granted_at.get(lease_id) != granted_at:
                self._set_deadline(lease_id, now_ms + 1000 * ttl)
                self._granted_at[lease_id] = granted_at
        self._seen_version = table.version


EPOCH_NODE_BITS = 16
"""Bits of a lease epoch that hold the node id of a ballot (see :func:`ballot_epoch`)."""


def ballot_epoch(round_: int, node_id: int) -> int:
    """A Paxos ballot ``(round, node)`` as one lease epoch, in the ballots' order."""
    if not 0 <= node_id < 1 << EPOCH_NODE_BITS or round_ < 0:
        raise ValueError(f"ballot ({round_}, {node_id}) out of range for a lease epoch")
    return round_ << EPOCH_NODE_BITS | node_id

"""The state machine an etcd-service node runs: A's :class:`EtcdStateMachine` plus the
node-local parts etcd keeps outside its replicated state.

:class:`ServedMachine` wraps the replicated machine (what every replica applies) with

- the leader's lease clock (:class:`~pnyx.protocols.etcd.lease.Lessor`): a
  ``LeaseKeepAliveRequest`` or ``LeaseTimeToLiveRequest`` arriving as a *read* query (a
  ``ReadRequest``, answered by the leader after its ReadIndex round) is answered by this
  node's lessor, with the node's monotonic clock.  So a follower's server forwards
  keep-alives to the leader over the Raft client path, and a deposed leader cannot answer
  one (its ReadIndex round fails);
- hooks run after every applied command or restored snapshot (the watch hub).

Lease queries never change replicated state: every replica's ``snapshot`` stays the same.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import msgspec

from pnyx.protocols.etcd import EtcdStateMachine
from pnyx.protocols.etcd.lease import Lessor
from pnyx.protocols.etcd.requests import LeaseKeepAliveRequest, LeaseTimeToLiveRequest

LeaseQuery = LeaseKeepAliveRequest | LeaseTimeToLiveRequest
_LEASE_QUERY_TAGS = frozenset({"lease_keep_alive", "lease_time_to_live"})


def monotonic_ms() -> int:
    """The lease clock: monotonic milliseconds."""
    return time.monotonic_ns() // 1_000_000


class ServedMachine:
    """``EtcdStateMachine`` + this node's lessor + after-apply hooks (a StateMachine)."""

    def __init__(
        self,
        inner: EtcdStateMachine,
        *,
        clock_ms: Callable[[], int] = monotonic_ms,
    ) -> None:
        self.inner = inner
        self.clock_ms = clock_ms
        self.lessor: Lessor = inner.store.new_lessor()
        self.is_leader: Callable[[], bool] = lambda: False
        """Set by the server once its node runs: whether the node leads now."""
        self.after_apply: list[Callable[[], None]] = []

    # -- StateMachine ------------------------------------------------------------------------

    def apply(self, command: Any) -> Any:
        """A lease query is answered by the lessor; anything else by the replicated
        machine, after which the hooks run."""
        query = lease_query(command)
        if query is not None:
            return self.answer_lease_query(query)
        result = self.inner.apply(command)
        self._after()
        return result

    def snapshot(self) -> bytes:
        return self.inner.snapshot()

    def restore(self, data: bytes) -> None:
        self.inner.restore(data)  # the lease table is loaded in place: the lessor follows it
        self._after()

    def _after(self) -> None:
        for hook in self.after_apply:
            hook()

    # -- leases ---------------------------------------------------------------------------------

    def sync_leadership(self) -> None:
        """Promote the lessor when the node leads and it does not, demote it when the node
        no longer leads (a new leader restarts every lease's TTL: none expires early)."""
        leading = self.is_leader()
        if leading and not self.lessor.primary:
            self.lessor.promote(self.clock_ms())
        elif not leading and self.lessor.primary:
            self.lessor.demote()

    def answer_lease_query(self, query: LeaseQuery) -> Any:
        """Keep-alive or time-to-live on this node's lessor (``not leader`` on a follower)."""
        self.sync_leadership()
        now = self.clock_ms()
        if isinstance(query, LeaseKeepAliveRequest):
            return self.lessor.keep_alive(query.ID, now)
        return self.lessor.time_to_live(query, now)

    def expired_leases(self) -> list[int]:
        """Leases the leader must revoke now (empty on a follower)."""
        self.sync_leadership()
        return self.lessor.expired(self.clock_ms())


def lease_query(command: Any) -> LeaseQuery | None:
    """``command`` as a lease query, typed or in its untyped wire form; None otherwise."""
    if isinstance(command, LeaseKeepAliveRequest | LeaseTimeToLiveRequest):
        return command
    if isinstance(command, dict) and command.get("type") in _LEASE_QUERY_TAGS:
        try:
            query: LeaseQuery = msgspec.convert(command, LeaseQuery)
            return query
        except msgspec.ValidationError:
            return None
    return None


__all__ = ["LeaseQuery", "ServedMachine", "lease_query", "monotonic_ms"]

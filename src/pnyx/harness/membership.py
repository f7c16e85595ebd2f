"""Membership changes while a workload runs: the ``member`` nemesis and the etcd Cluster
API calls behind it.

``start()`` removes a random member that does not lead (``MemberRemove``), then stops its
process and wipes its data directory: it is no longer a member.  ``stop()`` adds it back
as a new member (``MemberAdd`` with its peer URL) and starts it with an empty data
directory joining the running cluster, then waits (bounded) until it serves.  A majority
of the original cluster always runs: with ``n`` nodes at most ``(n - 1) // 2`` are out at
once (one of three).  A change the cluster refuses (no leader, quorum would be lost, an
unhealthy cluster) is recorded as the nemesis doing nothing, with the reason.

The per-system parts (how a wiped node joins a running cluster) live in the adapters
(:meth:`pnyx.harness.systems.ProcessSystem.remove_member` / ``add_member``); this module
holds what both share: the gRPC calls of etcd's ``Cluster`` service (stock etcd and pnyx
speak the same API) and the nemesis.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import grpc  # type: ignore[import-untyped]
from aetcd.rpc import rpc_pb2, rpc_pb2_grpc  # type: ignore[import-untyped]

from pnyx.harness.api import Host, Nemesis, NemesisUnavailable, Net, System

__all__ = [
    "MEMBER_RPC_TIMEOUT_S",
    "Member",
    "MemberChangeRefused",
    "MemberNemesis",
    "MemberSystem",
    "find_member",
    "member_add",
    "member_list",
    "member_remove",
]

MEMBER_RPC_TIMEOUT_S = 5.0
"""Bound on one MemberList / MemberRemove / MemberAdd call (pnyx's voter add waits up to
2 s for its learner to catch up before answering)."""


class MemberChangeRefused(RuntimeError):
    """The cluster refused a membership change, or no member could be asked; the message
    says which and why (e.g. ``etcdserver: unhealthy cluster``)."""


@dataclass(frozen=True)
class Member:
    """One entry of a member list."""

    member_id: int
    name: str
    peer_urls: tuple[str, ...]
    learner: bool

    @classmethod
    def from_proto(cls, member: Any) -> Member:
        return cls(
            member_id=int(member.ID),
            name=str(member.name),
            peer_urls=tuple(str(u) for u in member.peerURLs),
            learner=bool(member.isLearner),
        )


def _rpc_error(exc: grpc.RpcError) -> str:
    code = exc.code() if hasattr(exc, "code") else None
    details = exc.details() if hasattr(exc, "details") else str(exc)
    return f"{getattr(code, 'name', code)}: {details}"


def _cluster_call(endpoint: str, method: str, request: Any, timeout_s: float) -> Any:
    """One call of etcd's Cluster service on ``endpoint``; a gRPC error becomes
    :class:`MemberChangeRefused` naming the endpoint and the error."""
    try:
        with grpc.insecure_channel(endpoint) as channel:
            stub = rpc_pb2_grpc.ClusterStub(channel)
            return getattr(stub, method)(request, timeout=timeout_s)
    except grpc.RpcError as exc:
        raise MemberChangeRefused(f"{method} on {endpoint}: {_rpc_error(exc)}") from None


def member_list(endpoints: Sequence[str], timeout_s: float = MEMBER_RPC_TIMEOUT_S) -> list[Member]:
    """The member list of the first of ``endpoints`` that answers (each bounded by
    ``timeout_s``); :class:`MemberChangeRefused` when none does."""
    errors = []
    for endpoint in endpoints:
        try:
            reply = _cluster_call(endpoint, "MemberList", rpc_pb2.MemberListRequest(), timeout_s)
        except MemberChangeRefused as exc:
            errors.append(str(exc))
            continue
        return [Member.from_proto(m) for m in reply.members]
    raise MemberChangeRefused("no member answered: " + ("; ".join(errors) or "no endpoints"))


def find_member(members: Sequence[Member], peer_url: str) -> Member | None:
    """The member whose peer URLs include ``peer_url``, if listed."""
    return next((m for m in members if peer_url in m.peer_urls), None)


def member_remove(endpoint: str, member_id: int, timeout_s: float = MEMBER_RPC_TIMEOUT_S) -> None:
    """``MemberRemove`` of ``member_id`` through ``endpoint``."""
    _cluster_call(endpoint, "MemberRemove", rpc_pb2.MemberRemoveRequest(ID=member_id), timeout_s)


def member_add(
    endpoint: str, peer_url: str, timeout_s: float = MEMBER_RPC_TIMEOUT_S
) -> tuple[Member, list[Member]]:
    """``MemberAdd`` of a voter with ``peer_url`` through ``endpoint``: the new member and
    the members after the change."""
    request = rpc_pb2.MemberAddRequest(peerURLs=[peer_url], isLearner=False)
    reply = _cluster_call(endpoint, "MemberAdd", request, timeout_s)
    return Member.from_proto(reply.member), [Member.from_proto(m) for m in reply.members]


@runtime_checkable
class MemberSystem(System, Protocol):
    """A system whose members can be removed and added back while it runs
    (:class:`~pnyx.harness.systems.ProcessSystem`)."""

    @property
    def removed(self) -> set[str]:
        """Names of the hosts removed from the cluster now."""
        ...

    def running(self, host: Host) -> bool: ...

    def remove_member(self, host: Host) -> str:
        """Remove the node on ``host`` from the cluster, stop it and wipe its data; the
        description; :class:`MemberChangeRefused` when the cluster refuses."""
        ...

    def add_member(self, host: Host) -> str:
        """Add ``host`` back as a new member and start it empty, joining the cluster; the
        description; :class:`MemberChangeRefused` when the cluster refuses."""
        ...


class MemberNemesis:
    """``start``: remove a random member that does not lead (keeping a majority of the
    original cluster running); ``stop``: add every removed one back."""

    name = "member"

    def __init__(self, net: Net, system: System, rng: random.Random) -> None:
        if not isinstance(system, MemberSystem):
            raise NemesisUnavailable(
                f"membership changes need an adapter with remove_member/add_member; "
                f"{system.name}'s has none"
            )
        self.net = net
        self.system: MemberSystem = system
        self.rng = rng
        self.out: list[Host] = []

    @property
    def max_out(self) -> int:
        """At most this many members out at once: a majority of the original cluster runs."""
        return (len(self.net.hosts) - 1) // 2

    def _candidates(self) -> tuple[list[Host], str]:
        """The hosts one may remove now, or none and why."""
        hosts = self.net.hosts
        out = len(self.system.removed)
        if out >= self.max_out:
            return [], f"{out} of {len(hosts)} members out already (at most {self.max_out})"
        running = [h for h in hosts if h.name not in self.system.removed and self.system.running(h)]
        if len(running) - 1 < len(hosts) // 2 + 1:
            names = " ".join(h.name for h in running)
            return [], f"only {names} run: removing one would leave no majority running"
        leader = self.system.leader()
        if leader is None:
            return [], "no leader known"
        return [h for h in running if h != leader], ""

    def start(self) -> str:
        candidates, why = self._candidates()
        if not candidates:
            return f"nothing removed: {why}"
        host = self.rng.choice(candidates)
        try:
            what = self.system.remove_member(host)
        except MemberChangeRefused as exc:
            return f"nothing removed: {host.name}: {exc}"
        self.out.append(host)
        return what

    def stop(self) -> str:
        """Add back every host removed (also any the adapter lists as removed); a refused
        add leaves the host out for the next stop (or the heal's restart) to retry."""
        pending = list(self.out)
        pending += [h for h in self.net.hosts if h.name in self.system.removed and h not in pending]
        if not pending:
            return "nothing to add back"
        done = []
        for host in pending:
            try:
                done.append(self.system.add_member(host))
            except MemberChangeRefused as exc:
                done.append(f"could not add {host.name} back: {exc}")
        self.out = [h for h in self.out if h.name in self.system.removed]
        return "; ".join(done)


def _conforms(nemesis: MemberNemesis) -> Nemesis:
    """Static check (mypy): the nemesis implements :class:`~pnyx.harness.api.Nemesis`."""
    return nemesis

"""etcd's ``Cluster`` service mapped onto Raft membership changes (``AdminRequest``).

pnyx nodes are the ones named in ``--peers`` (the transport dials only those), so
``MemberAdd`` accepts a peer URL of a configured node that is not in the Raft
configuration now (never added, or removed earlier).  It joins as a learner; a voter add
(not ``--learner``) then promotes it once it has caught up — at once when it is running
and current, else in the background (bounded) while the response already names it.
``MemberRemove``, ``MemberPromote`` are the Raft changes of the same names (joint
consensus for voters); ``MemberUpdate`` accepts only the URLs a member already has.
Members are listed from this node's view of the configuration, sorted by id as etcd does.
Over Multi-Paxos or VR (``--consensus``) the members are the fixed ``--peers``: Add, Remove
and Promote answer ``UNIMPLEMENTED`` (:meth:`ClusterService._check_membership`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import grpc  # type: ignore[import-untyped]
import msgspec
from aetcd.rpc import rpc_pb2, rpc_pb2_grpc  # type: ignore[import-untyped]

from pnyx.protocols.raft import ConfigData
from pnyx.protocols.raft.messages import ADD_LEARNER, PROMOTE, REMOVE
from pnyx.services.etcd.auth_service import authorize_admin
from pnyx.services.etcd.convert import to_proto
from pnyx.services.etcd.gateway import GatewayError, RefusedError
from pnyx.services.etcd.rpc import (
    MSG_LEARNER_NOT_READY,
    MSG_MEMBER_NOT_FOUND,
    MSG_NOT_ENOUGH_STARTED,
    MSG_NOT_LEARNER,
    MSG_PEER_URL_EXISTS,
    MSG_UNHEALTHY,
    RpcFailure,
    unary,
)

if TYPE_CHECKING:
    from pnyx.services.etcd.server import EtcdServer

log = logging.getLogger("pnyx.etcd.cluster")

RETRY_S = 0.05
PROMOTE_NOW_S = 2.0
"""A voter add waits this long for its learner to catch up before answering."""
PROMOTE_LATER_S = 300.0
"""...and keeps trying this long in the background."""

_ERRORS: dict[str, tuple[Any, str]] = {
    "not_learner": (grpc.StatusCode.FAILED_PRECONDITION, MSG_NOT_LEARNER),
    "learner_behind": (grpc.StatusCode.FAILED_PRECONDITION, MSG_LEARNER_NOT_READY),
    "not_member": (grpc.StatusCode.NOT_FOUND, MSG_MEMBER_NOT_FOUND),
    "already_member": (grpc.StatusCode.FAILED_PRECONDITION, MSG_PEER_URL_EXISTS),
    "too_few_voters": (grpc.StatusCode.UNKNOWN, MSG_NOT_ENOUGH_STARTED),
    "config_change_pending": (grpc.StatusCode.UNAVAILABLE, MSG_UNHEALTHY),
    "transferring": (grpc.StatusCode.UNAVAILABLE, MSG_UNHEALTHY),
}


def config_of(raw: Any) -> ConfigData:
    """A configuration from an admin reply or a status report."""
    if isinstance(raw, ConfigData):
        return raw
    if isinstance(raw, dict):
        return ConfigData(
            voters=tuple(raw.get("voters", ())),
            outgoing=tuple(raw.get("outgoing", ())),
            learners=tuple(raw.get("learners", ())),
        )
    return msgspec.convert(raw, ConfigData)


class ClusterService(rpc_pb2_grpc.ClusterServicer):  # type: ignore[misc]
    """The ``etcdserverpb.Cluster`` service of one member."""

    def __init__(self, server: EtcdServer) -> None:
        self.server = server
        self.on_status = server.on_status
        self.promotions: set[asyncio.Task[None]] = set()

    # -- views --------------------------------------------------------------------------------

    def _config(self) -> ConfigData:
        return config_of(self.server.status().get("members") or {})

    def _member(self, node: int, learner: bool) -> Any:
        d = self.server.directory
        return rpc_pb2.Member(
            ID=d.member_id(node),
            name=d.name(node),
            peerURLs=d.peer_urls(node),
            clientURLs=d.client_urls(node),
            isLearner=learner,
        )

    def _members(self, conf: ConfigData) -> list[Any]:
        """The members of ``conf`` (of the new configuration while a change is joint: a
        member being removed is gone from the list at once)."""
        learners = set(conf.learners)
        nodes = {*conf.voters, *learners}
        members = [self._member(n, n in learners) for n in nodes]
        return sorted(members, key=lambda m: m.ID)

    def _header(self) -> Any:
        return to_proto(self.server.header())

    def _node(self, member_id: int, conf: ConfigData) -> int:
        node = self.server.directory.node_of(member_id)
        if node is None or node not in {*conf.voters, *conf.outgoing, *conf.learners}:
            raise RpcFailure(grpc.StatusCode.NOT_FOUND, MSG_MEMBER_NOT_FOUND)
        return node

    # -- requests -------------------------------------------------------------------------------

    @unary
    async def MemberList(self, request: Any, context: Any) -> Any:
        return rpc_pb2.MemberListResponse(
            header=self._header(), members=self._members(self._config())
        )

    @unary
    async def MemberAdd(self, request: Any, context: Any) -> Any:
        await authorize_admin(self.server, context)
        self._check_membership("MemberAdd")
        node = self._node_for_urls(request.peerURLs)
        conf = self._config()
        if node in {*conf.voters, *conf.outgoing, *conf.learners}:
            raise RpcFailure(grpc.StatusCode.FAILED_PRECONDITION, MSG_PEER_URL_EXISTS)
        conf = await self._change(ADD_LEARNER, node)
        learner = True
        if not request.isLearner:
            promoted = await self._promote_within(node, PROMOTE_NOW_S)
            if promoted is None:
                self._promote_later(node)
            else:
                conf, learner = promoted, False
        return rpc_pb2.MemberAddResponse(
            header=self._header(), member=self._member(node, learner), members=self._members(conf)
        )

    def _node_for_urls(self, urls: Iterable[str]) -> int:
        found = {self.server.directory.node_by_peer_url(u) for u in urls}
        if len(found) != 1 or None in found:
            peers = sorted(
                u for n in self.server.directory.peers for u in self.server.directory.peer_urls(n)
            )
            raise RpcFailure(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"pnyx: a new member's peer URL must be the address of one node of --peers "
                f"({', '.join(peers)}); got {list(urls)}",
            )
        node = found.pop()
        assert node is not None
        return node

    @unary
    async def MemberRemove(self, request: Any, context: Any) -> Any:
        await authorize_admin(self.server, context)
        self._check_membership("MemberRemove")
        node = self._node(request.ID, self._config())
        conf = await self._change(REMOVE, node)
        return rpc_pb2.MemberRemoveResponse(header=self._header(), members=self._members(conf))

    @unary
    async def MemberPromote(self, request: Any, context: Any) -> Any:
        await authorize_admin(self.server, context)
        self._check_membership("MemberPromote")
        conf = self._config()
        node = self._node(request.ID, conf)
        if node not in conf.learners:
            raise RpcFailure(grpc.StatusCode.FAILED_PRECONDITION, MSG_NOT_LEARNER)
        conf = await self._change(PROMOTE, node)
        return rpc_pb2.MemberPromoteResponse(header=self._header(), members=self._members(conf))

    @unary
    async def MemberUpdate(self, request: Any, context: Any) -> Any:
        await authorize_admin(self.server, context)
        conf = self._config()
        node = self._node(request.ID, conf)
        if sorted(request.peerURLs) != self.server.directory.peer_urls(node):
            raise RpcFailure(
                grpc.StatusCode.FAILED_PRECONDITION,
                "pnyx: a member's peer URL is its --peers address and cannot change while "
                "the cluster runs",
            )
        return rpc_pb2.MemberUpdateResponse(header=self._header(), members=self._members(conf))

    def _check_membership(self, method: str) -> None:
        """``UNIMPLEMENTED`` unless the consensus has Raft's learner and joint-consensus
        membership changes (Multi-Paxos here has a fixed set of acceptors; VR reconfigures
        by epochs, with no learners to add and promote)."""
        consensus = self.server.consensus
        if not consensus.membership:
            raise RpcFailure(grpc.StatusCode.UNIMPLEMENTED, consensus.refusal(method))

    # -- Raft changes --------------------------------------------------------------------------

    async def _change(self, action: str, node: int) -> ConfigData:
        """One membership change; a pending change is waited out (bounded)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.server.gateway.options.deadline_s
        while True:
            try:
                return config_of(await self.server.gateway.admin(action, node))
            except RefusedError as exc:
                retry = exc.error in ("config_change_pending", "transferring")
                if not retry or loop.time() > deadline:
                    code, message = _ERRORS.get(exc.error, (grpc.StatusCode.UNKNOWN, exc.error))
                    raise RpcFailure(code, message) from exc
            await asyncio.sleep(RETRY_S)

    async def _promote_within(self, node: int, within_s: float) -> ConfigData | None:
        """Promote learner ``node`` once it caught up; None if it did not within ``within_s``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within_s
        while True:
            try:
                return await self._change(PROMOTE, node)
            except RpcFailure as exc:
                if exc.message != MSG_LEARNER_NOT_READY or loop.time() > deadline:
                    if exc.message == MSG_LEARNER_NOT_READY:
                        return None
                    raise
            await asyncio.sleep(RETRY_S * 4)

    def _promote_later(self, node: int) -> None:
        task = asyncio.ensure_future(self._promote_in_background(node))
        self.promotions.add(task)
        task.add_done_callback(self.promotions.discard)

    async def _promote_in_background(self, node: int) -> None:
        try:
            promoted = await self._promote_within(node, PROMOTE_LATER_S)
        except (RpcFailure, GatewayError) as exc:
            log.warning("member_promote_failed node=%d error=%s", node, exc)
            return
        if promoted is None:
            log.warning("member_promote_gave_up node=%d after %.0f s", node, PROMOTE_LATER_S)
        else:
            log.info("member_promoted node=%d", node)


__all__ = ["ClusterService", "config_of"]

"""One node of the etcd service: a consensus node (``NodeRunner``: Raft by default, or
Multi-Paxos or VR, see :mod:`pnyx.services.etcd.consensus`) and, in the same process and
event loop, a ``grpc.aio`` server speaking etcd's v3 API on the node's client port.

::

    server = EtcdServer(RunnerConfig(node_id=1, data_dir=..., peers=...),
                        EtcdOptions(client_port=2379))
    await server.start()          # the Raft node first, then the gRPC port
    ...
    await server.stop()           # bounded: gRPC, background tasks, gateway, node

Requests reach the group through a :class:`~pnyx.services.etcd.gateway.Gateway` (writes
with server-side sessions, linearizable reads by ReadIndex, membership changes), so every
member serves every request; serializable reads and ``HashKV`` are answered from this
node's own state.  The services live in ``kv_service``, ``lease_service``,
``watch_service``, ``maintenance`` and ``cluster``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc  # type: ignore[import-untyped]
import msgspec
from prometheus_client import Counter

from pnyx.protocols.etcd import (
    DEFAULT_MAX_REQUEST_BYTES,
    DEFAULT_MAX_TXN_OPS,
    CompactionRequest,
    ErrorResult,
    EtcdStateMachine,
    ResponseHeader,
    check_request_size,
)
from pnyx.protocols.etcd.lease import DEFAULT_MIN_LEASE_TTL_S, Lessor
from pnyx.protocols.etcd.machine import decode_result
from pnyx.protocols.etcd.mutants import LEASE_EXPIRES_EARLY, LOCAL_READS, forgetful_lessor
from pnyx.protocols.etcd.requests import (
    LeaseEpochRequest,
    LeaseExpireRequest,
    LeaseRevokeRequest,
)
from pnyx.protocols.etcd.watch import DEFAULT_MAX_PENDING_RESPONSES, WatchHub
from pnyx.protocols.raft.config import MUTANTS as RAFT_MUTANTS
from pnyx.protocols.raft.sessions import OPEN_SESSION, SESSION_EXPIRED, SessionCommand
from pnyx.runtime.node_runner import NodeRunner, RunnerConfig
from pnyx.runtime.tls import TlsConfig, client_ssl_context
from pnyx.runtime.transport import Address
from pnyx.services.client import run_bounded, wait_cancelled
from pnyx.services.etcd.consensus import (
    DEFAULT_CONSENSUS,
    DEFAULT_HEARTBEAT_TICKS,
    NodeTuning,
    get_consensus,
)
from pnyx.services.etcd.gateway import (
    Gateway,
    GatewayError,
    GatewayOptions,
    RefusedError,
    SessionCodec,
)
from pnyx.services.etcd.machine import ServedMachine, WriteBatch
from pnyx.services.etcd.members import MemberDirectory
from pnyx.services.etcd.metrics import EtcdCollector
from pnyx.services.etcd.rpc import MSG_NO_SPACE, RpcFailure, raise_error
from pnyx.services.etcd.watch_service import WatchStreams

log = logging.getLogger("pnyx.etcd.server")

GRPC_OVERHEAD_BYTES = 512 * 1024
"""etcd accepts gRPC messages up to ``max_request_bytes`` plus this (``grpcOverheadBytes``);
bigger ones gRPC itself refuses (RESOURCE_EXHAUSTED) before they are decoded."""
DEFAULT_QUOTA_BACKEND_BYTES = 2 * 1024**3
"""etcd's default ``--quota-backend-bytes`` (2 GiB)."""
DEFAULT_CLIENT_PORT = 2379
"""etcd's client port."""
ETCD_VERSION = "3.4.23"
"""The etcd version this server reports (``Status.version``): the API it follows."""
STOP_STEP_S = 5.0
"""Each step of :meth:`EtcdServer.stop` is bounded by this (twice, when cancelled)."""
CONSENSUS_FILE = "etcd-consensus"
"""A file in the data directory naming the consensus whose log is there."""
REVOKE_OPTIONS = GatewayOptions(max_lanes=16, connections=1, flights=1, deadline_s=5.0)
"""The lease clock's own gateway: to this node only (see :meth:`EtcdServer._revoke`)."""

SESSIONS = SessionCodec(
    open_command=SessionCommand(0, 0, OPEN_SESSION),
    command=SessionCommand,
    is_expired=lambda result: result == SESSION_EXPIRED,
    batch=lambda commands: WriteBatch(commands=commands),
)
"""How :class:`EtcdStateMachine` sessions look on the log (``pnyx.protocols.raft.sessions``)."""


@dataclass(frozen=True)
class EtcdOptions:
    """The etcd-facing settings of one node (the consensus side is its ``RunnerConfig``)."""

    consensus: str = DEFAULT_CONSENSUS
    """The consensus under the state machine: ``raft``, ``paxos``, ``vr`` or ``vr-durable``
    (:mod:`pnyx.services.etcd.consensus`)."""

    client_host: str = "127.0.0.1"
    client_port: int = DEFAULT_CLIENT_PORT
    """The gRPC port (0 picks a free one: see :attr:`EtcdServer.client_address`)."""
    client_addresses: Mapping[int, Address] = field(default_factory=dict)
    """Other members' client addresses, for ``MemberList`` (this node's is added)."""
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    """etcd's ``--max-request-bytes``: a larger proposal gets *request is too large*."""
    quota_backend_bytes: int = DEFAULT_QUOTA_BACKEND_BYTES
    """etcd's ``--quota-backend-bytes``: writes beyond it raise the NOSPACE alarm."""
    max_txn_ops: int = DEFAULT_MAX_TXN_OPS
    min_lease_ttl_s: int = DEFAULT_MIN_LEASE_TTL_S
    election_timeout_ms: int | None = None
    """Election timeout (Paxos: phase-1 timeout, VR: view-change timeout); None keeps the
    runtime default (Raft 10 ticks, Paxos 30, VR 50)."""
    heartbeat_interval_ms: int | None = None
    """Heartbeat interval (VR: idle Commit interval); None: every tick
    (``DEFAULT_HEARTBEAT_TICKS``; Paxos: its runtime default, 5 ticks: it sends a Commit
    notice whenever its commit index moves)."""
    snapshot_threshold_entries: int | None = None
    """Log entries between snapshots of the state machine; None keeps the runtime's."""
    lease_check_ms: int = 100
    """How often the leader looks for expired leases."""
    max_concurrent_rpcs: int = 4096
    """gRPC calls (unary and streams) served at once; more are refused by gRPC
    (RESOURCE_EXHAUSTED) instead of queueing without bound."""
    max_watch_streams: int = 1024
    """Open watch streams (per node); more are refused with RESOURCE_EXHAUSTED."""
    watch_pending_responses: int = DEFAULT_MAX_PENDING_RESPONSES
    """Responses queued per watch stream for a client that does not read; beyond it its
    watchers catch up from the history once it reads again."""
    watch_progress_interval_s: float = 600.0
    """Progress notifications for ``progress_notify`` watchers (etcd's default: 10 min)."""
    client_tls: TlsConfig | None = None
    """TLS on the client port with this certificate (etcd's ``--cert-file`` /
    ``--key-file``; the CA is ``--trusted-ca-file``); None: plaintext."""
    client_cert_auth: bool = False
    """With ``client_tls``: clients must present a certificate of the CA (etcd's
    ``--client-cert-auth``)."""
    gateway: GatewayOptions = field(default_factory=GatewayOptions)
    test_mutants: frozenset[str] = frozenset()
    """Fault testing only: deliberately broken variants, Raft's
    (:data:`pnyx.protocols.raft.config.MUTANTS`) and the service's
    (:data:`pnyx.protocols.etcd.mutants.SERVICE_MUTANTS`)."""


class EtcdServer:
    """A consensus node with the etcd v3 gRPC API on its client port (see the module doc)."""

    def __init__(
        self, config: RunnerConfig, options: EtcdOptions | None = None, **runner_options: Any
    ) -> None:
        self.config = config
        self.options = options or EtcdOptions()
        self.consensus = get_consensus(self.options.consensus)
        """How this server runs over its consensus (raises ValueError for an unknown one)."""
        self._lead_term: int | None = None
        self._revoke_gateway: Gateway | None = None
        self._epoch_claim: asyncio.Task[None] | None = None
        self._runner_options = runner_options
        inner = EtcdStateMachine(
            max_txn_ops=self.options.max_txn_ops, min_lease_ttl_s=self.options.min_lease_ttl_s
        )
        self.machine = ServedMachine(inner, lessor=_lessor(inner, self.options.test_mutants))
        self._runner: NodeRunner | None = None
        self._gateway: Gateway | None = None
        self._grpc: Any = None
        self._client_port = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._revokes: set[asyncio.Task[None]] = set()
        self._stopping = False
        self.alarms: set[tuple[int, int]] = set()
        """Active alarms of this member: (member id, ``AlarmType``)."""
        self._grpc_requests: Counter | None = None
        self._apply_waiters: list[tuple[Callable[[], bool], asyncio.Future[None]]] = []
        self.machine.after_apply.append(self._wake_apply_waiters)
        self.watch_streams = WatchStreams(
            WatchHub(
                self.machine.inner.store,
                max_pending_responses=self.options.watch_pending_responses,
                max_response_bytes=self.options.max_request_bytes,
            ),
            self.options.max_watch_streams,
        )
        self.machine.after_apply.append(self.watch_streams.applied)
        self.proposals_failed = 0
        """Writes of this member that timed out or were refused (a metric)."""
        self.services: dict[str, Any] = {}
        """The gRPC servicers by etcd service name (after :meth:`start`)."""
        self.directory = MemberDirectory(cluster=config.transport.cluster, peers=config.peers)

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the Raft node, then serve gRPC; on failure, stop what started and raise."""
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        service = self.consensus.runnable()
        if self.config.data_dir is not None:
            _claim_data_dir(self.config.data_dir, self.consensus.name)
        runner = NodeRunner.for_protocol(
            service,
            self.config,
            state_machine=self.machine,
            make_node=self._node_factory(),
            **self._runner_options,
        )
        self._runner = runner
        self.machine.is_leader = self._leading
        await runner.start()
        if runner.fault_clock is not None:  # fault testing: leases on the node's clock too
            self.machine.clock_ms = runner.fault_clock.now_ms
        self._grpc_requests = Counter(
            "grpc_server_handled",
            "etcd gRPC requests answered, by method and status code",
            ["grpc_method", "grpc_code"],
            registry=runner.metrics.registry,
        )
        peer_tls = self.config.transport.tls
        ssl = client_ssl_context(peer_tls.ca_file) if peer_tls else None
        self._gateway = Gateway(
            self._group_addresses(), service.message_types, SESSIONS, self.options.gateway, ssl=ssl
        )
        own = {self.config.node_id: self.runner.address}
        self._revoke_gateway = Gateway(
            own, service.message_types, SESSIONS, REVOKE_OPTIONS, ssl=ssl
        )
        runner.metrics.registry.register(EtcdCollector(self))
        await self._start_grpc()
        self._tasks = [
            asyncio.ensure_future(self._lease_clock()),
            asyncio.ensure_future(self._watch_progress()),
        ]
        log.info(
            "etcd_started node=%d client=%s:%d member_id=%x cluster_id=%x",
            self.config.node_id,
            self.options.client_host,
            self._client_port,
            self.member_id,
            self.directory.cluster_id,
        )

    def _node_factory(self) -> Any:
        """Nodes of the chosen consensus with the runtime tuning, a heartbeat every tick
        unless configured (a follower learns the commit index of a write it forwarded from
        the next append or heartbeat: every tick halves that wait; Paxos sends a Commit
        notice whenever its commit index moves) and the configured timeouts."""
        tick = self.config.tick_ms
        options = self.options
        election = options.election_timeout_ms
        heartbeat = options.heartbeat_interval_ms
        tuning = NodeTuning(
            election_timeout_ticks=max(2, election // tick) if election is not None else None,
            heartbeat_ticks=max(1, heartbeat // tick) if heartbeat is not None else None,
            snapshot_threshold_entries=options.snapshot_threshold_entries,
            raft_mutants=options.test_mutants & RAFT_MUTANTS,
        )
        return self.consensus.node_factory(tuning)

    def _leading(self) -> bool:
        """Whether this node leads now (the lessor's question).  A new term (ballot round,
        view) of this node's leadership demotes the lessor first, so that its promotion
        restarts every TTL: the keep-alives of a leader in between never reached it."""
        runner = self._runner
        term = self.consensus.leader_term(runner.node) if runner is not None else None
        if term is None:
            return False
        if term != self._lead_term:
            self._lead_term = term
            if self.machine.lessor.primary:
                self.machine.lessor.demote()
        if self.consensus.epochs:
            return self.machine.inner.store.lease_epoch == term
        return True

    def _claim_epoch(self) -> None:
        """With lease epochs (Multi-Paxos), while this node leads in a term the store has
        not applied as its lease epoch: propose it (one proposal at a time, to this node
        only).  Until it is applied the lessor stays demoted (see ``Consensus.epochs``)."""
        runner = self._runner
        if not self.consensus.epochs or runner is None:
            return
        term = self.consensus.leader_term(runner.node)
        if term is None or self.machine.inner.store.lease_epoch >= term:
            return
        if self._epoch_claim is not None and not self._epoch_claim.done():
            return
        self._epoch_claim = asyncio.ensure_future(
            self._propose_locally(LeaseEpochRequest(epoch=term))
        )
        self._revokes.add(self._epoch_claim)
        self._epoch_claim.add_done_callback(self._revokes.discard)

    async def _propose_locally(self, request: Any) -> Any:
        """``request`` through this node only (None when it failed: offered again later)."""
        gateway = self._revoke_gateway
        if gateway is None:
            return None
        try:
            raw = await gateway.write(request, len(msgspec.msgpack.encode(request)))
            return _typed(request, raw)
        except (GatewayError, RefusedError, RpcFailure) as exc:
            log.info(
                "lease_proposal_failed request=%r error=%s (offered again later)", request, exc
            )
            return None

    def _group_addresses(self) -> dict[int, Address]:
        """Every member's pnyx address (this node's real one, even when it picked a port)."""
        addresses = dict(self.config.peers)
        addresses[self.config.node_id] = self.runner.address
        return addresses

    async def _start_grpc(self) -> None:
        from pnyx.services.etcd.services import add_services

        limit = self.options.max_request_bytes + GRPC_OVERHEAD_BYTES
        server = grpc.aio.server(
            maximum_concurrent_rpcs=self.options.max_concurrent_rpcs,
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", 2**31 - 1),
                ("grpc.so_reuseport", 0),
            ],
        )
        self.services = add_services(server, self)
        address = f"{self.options.client_host}:{self.options.client_port}"
        try:
            port = self._listen(server, address)
        except RuntimeError as exc:
            raise OSError(f"cannot listen for etcd clients on {address}: {exc}") from exc
        if not port:
            raise OSError(f"cannot listen for etcd clients on {address}")
        self._grpc = server
        await server.start()
        self._client_port = int(port)
        clients = dict(self.options.client_addresses)
        clients[self.config.node_id] = self.client_address
        self.directory = MemberDirectory(
            cluster=self.config.transport.cluster,
            peers=self._group_addresses(),
            clients=clients,
            client_scheme="https" if self.options.client_tls else "http",
            peer_scheme="https" if self.config.transport.tls else "http",
        )

    def _listen(self, server: Any, address: str) -> int:
        """Bind the client port, with TLS when configured; the port bound."""
        tls = self.options.client_tls
        if tls is None:
            return int(server.add_insecure_port(address))
        credentials = grpc.ssl_server_credentials(
            [(Path(tls.key_file).read_bytes(), Path(tls.cert_file).read_bytes())],
            root_certificates=Path(tls.ca_file).read_bytes(),
            require_client_auth=self.options.client_cert_auth,
        )
        return int(server.add_secure_port(address, credentials))

    async def stop(self) -> None:
        """Stop serving, then stop the node; bounded (each step at most ``2 * STOP_STEP_S``).
        Safe to call twice; the caller's cancellation propagates."""
        if self._stopping:
            return
        self._stopping = True
        if self._grpc is not None:
            await _bounded(self._grpc.stop(STOP_STEP_S / 2), "stopping the gRPC server")
        cluster = self.services.get("Cluster")
        tasks = [*self._tasks, *self._revokes, *(cluster.promotions if cluster else ())]
        await wait_cancelled(tasks, STOP_STEP_S, "etcd background")
        if self._gateway is not None:
            await _bounded(self._gateway.close(), "closing the gateway")
        if self._revoke_gateway is not None:
            await _bounded(self._revoke_gateway.close(), "closing the lease gateway")
        if self._runner is not None:
            await _bounded(self._runner.stop(), "stopping the node")

    async def wait_stopped(self) -> None:
        """Until the node stops; raises ``NodeFailed`` if it failed."""
        await self.runner.wait_stopped()

    async def __aenter__(self) -> EtcdServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- accessors --------------------------------------------------------------------------

    @property
    def runner(self) -> NodeRunner:
        """The Raft node's runner (after :meth:`start`)."""
        assert self._runner is not None, "server not started"
        return self._runner

    @property
    def gateway(self) -> Gateway:
        """The way into the Raft group (after :meth:`start`)."""
        assert self._gateway is not None, "server not started"
        return self._gateway

    @property
    def client_address(self) -> Address:
        """Where etcd clients connect (after :meth:`start`)."""
        return (self.options.client_host, self._client_port)

    @property
    def member_id(self) -> int:
        """This node's etcd member id."""
        return self.directory.member_id(self.config.node_id)

    def status(self) -> dict[str, Any]:
        """The node's status report in Raft's shape (role, leader, term, commit/applied
        index, members as voters/outgoing/learners), whatever the consensus."""
        return self.consensus.status(self._runner.node) if self._runner is not None else {}

    def header(self, revision: int = 0) -> ResponseHeader:
        """A response header as this member fills it."""
        term = self.status().get("term", 0)
        return ResponseHeader(
            cluster_id=self.directory.cluster_id,
            member_id=self.member_id,
            revision=revision,
            raft_term=int(term or 0),
        )

    def on_status(self, method: str, code: Any) -> None:
        """Count one answered gRPC request (``grpc_server_handled_total``)."""
        if self._grpc_requests is not None:
            self._grpc_requests.labels(method, code.name).inc()

    # -- requests ---------------------------------------------------------------------------

    async def write(self, request: Any, size: int, *, needs_space: bool = False) -> Any:
        """Propose ``request`` (a write) and return its typed response.

        ``size`` is its encoded size (``--max-request-bytes``); ``needs_space`` refuses it
        while the NOSPACE alarm is raised or when it would exceed the quota.  An
        ``ErrorResult`` of the state machine is raised as its gRPC status."""
        check_request_size(proposal_size(size), self.options.max_request_bytes)
        if needs_space:
            self._check_space(size)
        try:
            raw = await self.gateway.write(request, size)
        except (GatewayError, RefusedError):
            self.proposals_failed += 1
            raise
        result = _typed(request, raw)
        await self.wait_applied(request, result)
        return result

    async def read(self, request: Any, *, serializable: bool = False) -> Any:
        """Answer a read-only ``request``: linearizable (ReadIndex on the leader) unless
        ``serializable`` (this node's applied state, possibly stale)."""
        if serializable or LOCAL_READS in self.options.test_mutants:
            return _typed(request, self.machine.inner.store.apply(request))
        raw = await self.gateway.read(request)
        return _typed(request, raw)

    async def wait_applied(self, request: Any, result: Any) -> None:
        """Until this node applied the write ``request`` answered with ``result`` (bounded
        by the gateway deadline), so that a client reads its own write here, as etcd
        answers a write only once the member it was sent to applied it.  A compaction
        is waited for by its compact revision (it makes no new revision)."""
        store = self.machine.inner.store
        if isinstance(request, CompactionRequest):
            wanted = request.revision
            await self._wait_for(lambda: store.mvcc.compact_revision >= wanted)
        else:
            revision = result.header.revision
            await self._wait_for(lambda: store.current_revision >= revision)

    async def _wait_for(self, applied: Callable[[], bool]) -> None:
        """Until ``applied()`` holds after an apply; returns quietly when the bound passes."""
        if applied():
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._apply_waiters.append((applied, future))
        try:
            await asyncio.wait([future], timeout=self.options.gateway.deadline_s)
        finally:
            if not future.done():
                future.cancel()  # _wake_apply_waiters drops it

    def _wake_apply_waiters(self) -> None:
        """After-apply hook: release the writes this node has now applied."""
        if not self._apply_waiters:
            return
        waiting = []
        for applied, future in self._apply_waiters:
            if future.done():
                continue
            if applied():
                future.set_result(None)
            else:
                waiting.append((applied, future))
        self._apply_waiters = waiting

    def read_local(self, request: Any) -> Any:
        """Answer a read-only ``request`` from this node's state at once."""
        return _typed(request, self.machine.inner.store.apply(request))

    # -- space --------------------------------------------------------------------------------

    def db_size(self) -> int:
        """The state machine's size in bytes (see :meth:`ServedMachine.db_size`)."""
        return self.machine.db_size()

    def _check_space(self, size: int) -> None:
        from aetcd.rpc import rpc_pb2  # type: ignore[import-untyped]

        nospace = int(rpc_pb2.NOSPACE)
        if any(alarm == nospace for _, alarm in self.alarms):
            raise RpcFailure(grpc.StatusCode.RESOURCE_EXHAUSTED, MSG_NO_SPACE)
        if self.db_size() + size > self.options.quota_backend_bytes:
            self.alarms.add((self.member_id, nospace))
            log.warning(
                "alarm_raised alarm=NOSPACE db_size=%d quota=%d",
                self.db_size(),
                self.options.quota_backend_bytes,
            )
            raise RpcFailure(grpc.StatusCode.RESOURCE_EXHAUSTED, MSG_NO_SPACE)

    # -- leases ---------------------------------------------------------------------------------

    async def _lease_clock(self) -> None:
        """On the leader: revoke (through the log) every lease whose TTL ran out."""
        period_s = self.options.lease_check_ms / 1000
        while True:
            await asyncio.sleep(period_s)
            self._claim_epoch()
            for lease_id in self.machine.expired_leases():
                task = asyncio.ensure_future(self._revoke(lease_id))
                self._revokes.add(task)
                task.add_done_callback(self._revokes.discard)

    async def _watch_progress(self) -> None:
        while True:
            await asyncio.sleep(self.options.watch_progress_interval_s)
            self.watch_streams.progress_tick()

    async def _revoke(self, lease_id: int) -> None:
        """Propose the expiry of ``lease_id`` to *this* node only (its own gateway knows no
        other member), never forwarded to a newer leader whose lessor may have renewed the
        lease.  Raft and VR choose it only while this node still leads (a deposed
        leader's entry is overwritten or ordered before any later leader's reads); with
        lease epochs (Multi-Paxos, whose next phase 1 may adopt a deposed leader's value)
        it is a ``LeaseExpireRequest`` of this leadership's epoch, which the store refuses
        once a later epoch began."""
        epoch = self._lead_term
        request: Any = LeaseRevokeRequest(ID=lease_id)
        if self.consensus.epochs and epoch is not None:
            request = LeaseExpireRequest(ID=lease_id, epoch=epoch)
        result = await self._propose_locally(request)
        if result is not None:
            log.info("lease_expired lease=%x revision=%d", lease_id, result.header.revision)


def _claim_data_dir(data_dir: Path, consensus: str) -> None:
    """Record the consensus whose log ``data_dir`` holds; OSError when another one's does
    (its WAL could not be read back: the entry types differ)."""
    path = Path(data_dir) / CONSENSUS_FILE
    if path.exists():
        found = path.read_text().strip()
    elif (Path(data_dir) / "wal").exists():
        found = DEFAULT_CONSENSUS  # written before the file existed: by Raft
    else:
        found = consensus
    if found != consensus:
        raise OSError(
            f"{data_dir} holds the log of an etcd node over {found!r}: start it with "
            f"--consensus {found}, or use a new --data-dir for --consensus {consensus}"
        )
    if not path.exists():
        Path(data_dir).mkdir(parents=True, exist_ok=True)
        path.write_text(consensus + "\n")


def proposal_size(request_bytes: int) -> int:
    """The size etcd checks against ``--max-request-bytes``: the request inside its raft
    envelope (``InternalRaftRequest``: a header with the request id, the field tag)."""
    return request_bytes + 14 + _varint_len(request_bytes)


def _varint_len(value: int) -> int:
    return max(1, (value.bit_length() + 6) // 7)


def _typed(request: Any, raw: Any) -> Any:
    """The state machine's answer to ``request``, typed; an error is raised as its status."""
    result = decode_result(request, raw)
    if isinstance(result, ErrorResult):
        raise_error(result)
    if isinstance(result, dict) and "error" in result:
        raise GatewayError(f"the state machine answered {result!r}")
    return result


def _lessor(inner: EtcdStateMachine, mutants: frozenset[str]) -> Lessor | None:
    """The ``lease_expires_early`` mutant's lessor when asked for; None: the default."""
    if LEASE_EXPIRES_EARLY in mutants:
        return forgetful_lessor(inner.store)
    return None


async def _bounded(coro: Any, what: str) -> None:
    try:
        await run_bounded(coro, STOP_STEP_S, what)
    except TimeoutError as exc:
        log.error("etcd_stop_step_stuck %s", exc)
    except Exception:
        log.exception("etcd_stop_step_failed %s", what)


__all__ = [
    "CONSENSUS_FILE",
    "DEFAULT_CLIENT_PORT",
    "DEFAULT_HEARTBEAT_TICKS",
    "DEFAULT_QUOTA_BACKEND_BYTES",
    "ETCD_VERSION",
    "GRPC_OVERHEAD_BYTES",
    "EtcdOptions",
    "EtcdServer",
    "proposal_size",
]

"""etcd in the simulator: the MVCC, lease and watch state machine over Raft, under all faults.

``pnyx sim etcd`` runs :class:`~pnyx.protocols.etcd.EtcdStateMachine` as the state machine
of :class:`~pnyx.protocols.raft.node.RaftNode` s, with the clients of
:mod:`pnyx.protocols.etcd.sim_client` (KV and txn operations, a lease each, a watch each).

**The node** (:class:`EtcdNode`) is a pure wrapper around a ``RaftNode`` with the same node
contract; it adds what etcd's server keeps beside the replicated state, as
``pnyx.services.etcd`` does in the real runtime:

* the leader's lease clock: :class:`SimEtcdMachine` (the runtime's state machine) holds a
  :class:`~pnyx.protocols.etcd.Lessor` fed with ``now_ms`` = the node's tick count x
  :data:`ETCD_TICK_MS` (lease time runs faster than virtual time: see there), promoted
  and demoted as the Raft node's role changes.  A keep-alive is a linearizable
  ``ReadRequest`` carrying ``LeaseKeepAliveRequest``: the leader answers it from its
  lessor after its ReadIndex round (or lease), so a deposed leader cannot renew.
  On every tick the node asks the lessor for expired leases and proposes a bare
  ``LeaseRevokeRequest`` for each through its Raft node (a local proposal, no session:
  a revoke is idempotent);
* a :class:`~pnyx.protocols.etcd.WatchHub` over its store, advanced after every batch of
  applied entries, serving the clients' watch streams (:class:`WatchOpen` /
  :class:`WatchData`), with a progress notification every :data:`PROGRESS_TICKS`.

The runner builds the node and its state machine separately; the node asks for them to be
joined with a service request (``Ready.services``), which :func:`serve` answers (as it
answers Raft's ``TakeSnapshot``), and asks again after every applied batch to advance the
watch hub.  A crash loses the lessor and the hub with the node (clients re-create watches).

**The monitor** (:class:`EtcdMonitor`) keeps every Raft invariant and liveness condition of
:class:`~pnyx.protocols.raft.spec.RaftMonitor` (applied to the wrapped Raft nodes) and adds:

* ``revision-divergence``: every node's MVCC store produces the same events at each
  revision (the first node to apply a revision gives the authoritative event log);
* ``lease-early-expiry``: a lease is revoked by expiry (the first apply of the leader's
  revoke, anywhere) no earlier than its TTL after the *invocation* of any grant or
  keep-alive the client saw acknowledged with that TTL.  Clock assumption: the leader
  measures TTLs in its own ticks, which run at most :data:`~pnyx.sim.schedule.MAX_DRIFT`
  fast, and a deadline is rounded to a tick; so the bound allowed is
  ``TTL x (1 - MAX_DRIFT) - 2 ticks``.  A paused node's missed ticks come back at most as
  fast as they were missed (catch-up ticks and ``clock_stalled``), never ahead of time.
  (Counting from the invocation, not the answer, is what a ReadIndex-confirmed renewal
  can promise: a later leader is elected after the leader's confirming heartbeat left, so
  after the invocation.)  etcd checks nothing of the kind;
* ``watch-order`` (at the end): every event a client's watch accepted — across streams
  re-created on other nodes from the last revision seen — is exactly the authoritative
  event log of the watched range from the watch's start revision, in revision order, with
  no gap and no duplicate, up to the last revision it accepted; and a watch canceled as
  compacted needed history from the compact revision or before (it then starts anew at
  the compact revision; clients compact only in ``etcd-compact``);
* ``linearizability`` (at the end): the clients' KV and txn operations per key against
  the ``kv`` model (a checker time-out is counted as unknown, as for Raft).

**Mutants** (tests and ``pnyx sim etcd+MUTANT``; see :data:`MUTANTS`):
``lease_expires_early`` (a new leader's lessor counts each lease's TTL from when its node
first saw the lease, forgetting the old leader's keep-alives) and ``watch_gap`` (a hub
that drops the first event of a watch resumed from history); Raft's mutants are accepted
too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from pnyx.core import (
    CLIENT_ID_BASE,
    Apply,
    DurableState,
    HistoryEvent,
    Node,
    Ready,
    Restore,
    Rng,
    Send,
)
from pnyx.core.node import StateMachine
from pnyx.protocols.etcd import EtcdStateMachine, EtcdStore, Lessor, WatchHub
from pnyx.protocols.etcd.mutants import LEASE_EXPIRES_EARLY, ForgetfulLessor, forgetful_lessor
from pnyx.protocols.etcd.requests import (
    LeaseEpochRequest,
    LeaseExpireRequest,
    LeaseKeepAliveRequest,
    LeaseRevokeRequest,
    LeaseRevokeResponse,
    WatchCreateRequest,
    WatchRequest,
    WatchResponse,
)
from pnyx.protocols.etcd.sim_client import (
    KV_FUNCTIONS,
    EtcdClient,
    WatchClose,
    WatchData,
    WatchOpen,
    WatchRecord,
)
from pnyx.protocols.raft import CLIENT_MESSAGE_TYPES, PEER_MESSAGE_TYPES, ClientRequest
from pnyx.protocols.raft.config import MUTANTS as RAFT_MUTANTS
from pnyx.protocols.raft.config import RaftConfig
from pnyx.protocols.raft.messages import HARD_STATE_KEY, Entry, HardState
from pnyx.protocols.raft.node import LEADER, RaftNode
from pnyx.protocols.raft.services import serve as raft_serve
from pnyx.protocols.raft.spec import (
    CLIENT_SETTINGS,
    NEMESIS_RULES,
    SIM_CONFIG,
    STREAM_NEMESIS_RULES,
    RaftMonitor,
    RaftNemesis,
    draw_raft_settings,
    draw_raft_stream_settings,
    raft_node_factory,
)
from pnyx.sim.schedule import MAX_DRIFT, Schedule
from pnyx.sim.spec import (
    Monitor,
    ProtocolDef,
    RuntimeDef,
    ServiceHandler,
    SimRandom,
    Violation,
    World,
)

ETCD_TICK_MS = 40
"""Milliseconds of the lease clock per tick.  The simulator's nominal tick is 10 ms: lease
time runs 4x faster than the rest of the run, so that a 1 s lease (the smallest TTL)
lasts 25 ticks, 2.5 election timeouts, and many leases expire in a 3 s fault phase."""
MIN_LEASE_TTL_S = 1
"""The state machine's minimum lease TTL (etcd's is 2 s with its default timeouts)."""
REVOKE_RETRY_MS = 1_000
"""The lessor offers an expired lease again after this long if its revoke was lost."""
PROGRESS_TICKS = 10
"""A node sends quiet synced watchers a progress notification this often."""
LEASE_TICK_SLACK = 2
"""Ticks of rounding the lease check allows (a deadline is counted in whole ticks)."""

WATCH_GAP = "watch_gap"
ETCD_MUTANTS: frozenset[str] = frozenset({LEASE_EXPIRES_EARLY, WATCH_GAP})
MUTANTS: frozenset[str] = ETCD_MUTANTS | RAFT_MUTANTS
"""Names ``etcd+NAME[,NAME]`` accepts: the etcd mutants and Raft's."""
MUTANT_PROPERTIES: dict[str, str] = {
    LEASE_EXPIRES_EARLY: "lease-early-expiry",
    WATCH_GAP: "watch-order",
}
"""etcd mutant -> the violation that must catch it."""

ETCD_CHUNK_SCALE = 32
"""An etcd snapshot (MVCC history, leases, sessions) is some 50x a Raft KV one: snapshot
chunk sizes are scaled by this, so that a stream has about as many chunks as Raft's."""
SIM_ETCD_CONFIG = dataclasses.replace(
    SIM_CONFIG,
    initial_voters=None,
    snapshot_chunk_bytes=SIM_CONFIG.snapshot_chunk_bytes * ETCD_CHUNK_SCALE // 8,
)
"""Raft's simulator settings (small batches, windows, snapshots), every node a voter,
snapshot chunks of 1 KiB."""

_BIND = "etcd-bind"
_AFTER_APPLY = "etcd-after-apply"
"""Service requests of :class:`EtcdNode` (answered by :func:`serve`)."""


# -- the runtime's state machine: replicated machine + the node's lessor ----------------------


class SimEtcdMachine:
    """``EtcdStateMachine`` + this node's lessor (a StateMachine; the simulator's
    counterpart of ``pnyx.services.etcd.machine.ServedMachine``).  A
    ``LeaseKeepAliveRequest`` query is answered by the lessor, anything else by the
    replicated machine."""

    def __init__(self, inner: EtcdStateMachine, lessor: Lessor) -> None:
        self.inner = inner
        self.lessor = lessor
        self.clock_ms: Callable[[], int] = lambda: 0
        self.is_leader: Callable[[], bool] = lambda: False
        """Set by the node when it is joined to this machine."""

    @property
    def store(self) -> EtcdStore:
        return self.inner.store

    def apply(self, command: Any) -> Any:
        if type(command) is LeaseKeepAliveRequest:
            self.sync_leadership()
            return self.lessor.keep_alive(command.ID, self.clock_ms())
        return self.inner.apply(command)

    def snapshot(self) -> bytes:
        return self.inner.snapshot()

    def restore(self, data: bytes) -> None:
        self.inner.restore(data)  # the lease table is loaded in place: the lessor follows

    def sync_leadership(self) -> None:
        """Promote the lessor when the node leads, demote it when it no longer does."""
        leading = self.is_leader()
        if leading and not self.lessor.primary:
            self.lessor.promote(self.clock_ms())
        elif not leading and self.lessor.primary:
            self.lessor.demote()

    def expired_leases(self) -> list[int]:
        self.sync_leadership()
        return self.lessor.expired(self.clock_ms())


def _new_lessor(store: EtcdStore) -> Lessor:
    return store.new_lessor(revoke_retry_ms=REVOKE_RETRY_MS)


# -- the consensus under the node ------------------------------------------------------------------

LEASE_CLIENT_ID = 2**31 - 1
"""The client id under which an :class:`EtcdNode` proposes its lease expiries to a node
with no local proposal call (Multi-Paxos, VR); the node's replies to it are dropped."""


@dataclass(frozen=True)
class Inner:
    """How an :class:`EtcdNode` drives the consensus node it wraps (Raft by default;
    :mod:`pnyx.protocols.etcd.spec_consensus` has Multi-Paxos and VR)."""

    name: str
    leading: Callable[[Any], bool]
    """Whether the node leads now (its lessor expires leases then)."""
    propose: Callable[[Any, Any, int], None]
    """Propose ``command`` (with a request id) through the node, as its leader; dropped by
    the protocol when the node does not lead."""
    serve: ServiceHandler
    """The protocol's own service handler (snapshots), for the requests of the node."""
    client_proposals: bool = False
    """``propose`` steps a ``ClientRequest`` from :data:`LEASE_CLIENT_ID`: the node's
    replies to it are dropped, and its applies are not answered."""
    epoch: Callable[[Any], int] | None = None
    """Lease epochs (see :class:`~pnyx.protocols.etcd.requests.LeaseEpochRequest`): the
    leader's epoch, increasing with each leadership.  A consensus that can choose a
    deposed leader's proposal *after* a later leader served reads (Multi-Paxos: a value
    accepted by a minority at an old ballot is adopted by the next phase 1, in a slot the
    leader in between never used) needs them, or that deposed leader's expiry revoke
    deletes a lease the leader in between renewed.  With epochs a leader's lessor runs
    only once its own ``LeaseEpochRequest`` is applied, and its revokes are
    ``LeaseExpireRequest(epoch)``, refused by the store once a later epoch began.  None:
    bare ``LeaseRevokeRequest``s (Raft and VR order such a proposal before the reads of
    any later leader: its log wins, or the proposal is dropped)."""
    epoch_retry_ticks: int = 20
    """A leader proposes its epoch again after this many ticks without seeing it applied."""


def _raft_propose(node: Any, command: Any, request_id: int) -> None:
    node.propose([command])


def propose_as_client(node: Any, command: Any, request_id: int) -> None:
    """``propose`` of a node that takes proposals only from clients (see :class:`Inner`)."""
    node.step(ClientRequest(request_id, command), LEASE_CLIENT_ID)


RAFT_INNER = Inner(
    name="raft",
    leading=lambda node: node.role == LEADER,
    propose=_raft_propose,
    serve=raft_serve,
)


# -- the node ------------------------------------------------------------------------------------


class _Stream:
    __slots__ = ("hub_stream", "seq")

    def __init__(self, hub_stream: int) -> None:
        self.hub_stream = hub_stream
        self.seq = 0


class EtcdNode:
    """A consensus node (Raft unless ``inner`` says otherwise) with etcd's node-local parts:
    lessor driving, watch streams (a :class:`pnyx.core.Node`; the wrapped node is
    :attr:`consensus`)."""

    def __init__(
        self,
        consensus: Any,
        make_hub: Callable[[EtcdStore], WatchHub] = WatchHub,
        inner: Inner = RAFT_INNER,
    ) -> None:
        self.node_id: int = consensus.node_id
        self.consensus = consensus
        self.inner = inner
        self._revokes = 0
        self._make_hub = make_hub
        self.machine: SimEtcdMachine | None = None
        self.hub: WatchHub | None = None
        self._sends: list[Send] = []
        self._streams: dict[tuple[int, int], _Stream] = {}
        """(client, ref) -> its hub stream (insertion ordered: deterministic)."""
        self._last_ref: dict[int, int] = {}
        """client -> the latest stream it opened here (refs only grow)."""
        self._waiting: list[tuple[int, WatchOpen]] = []
        """Watch requests that came before the node was joined to its state machine."""
        self._bind_asked = False
        self._ticks = 0
        self._epoch_asked = (0, 0)
        """(epoch, tick) of this node's last ``LeaseEpochRequest``."""
        self.invariants = consensus.invariants

    @property
    def raft(self) -> Any:
        """The wrapped node (a ``RaftNode`` over Raft): :attr:`consensus`."""
        return self.consensus

    # -- node contract ----------------------------------------------------------------------

    def step(self, msg: Any, from_id: int) -> None:
        kind = type(msg)
        if kind is WatchOpen:
            self._open(from_id, msg)
        elif kind is WatchClose:
            self._close(from_id, msg.ref)
        else:
            self.consensus.step(msg, from_id)

    def tick(self) -> None:
        self.consensus.tick()
        self._ticks += 1
        machine = self.machine
        if machine is None:
            return
        epoch = self._claim_epoch()
        for lease_id in machine.expired_leases():
            self._revokes += 1
            revoke: Any = LeaseRevokeRequest(ID=lease_id)
            if epoch is not None:
                revoke = LeaseExpireRequest(ID=lease_id, epoch=epoch)
            self.inner.propose(self.consensus, revoke, self._revokes)
        if self._ticks % PROGRESS_TICKS == 0 and self.hub is not None and self._streams:
            self.hub.progress_tick()
            self._flush()

    def has_ready(self) -> bool:
        return bool(self._sends) or not self._bind_asked or self.consensus.has_ready()

    def ready(self) -> Ready:
        inner = self.consensus
        batch = inner.ready() if inner.has_ready() else Ready()
        if self.inner.client_proposals:
            _drop_lease_client(batch)
        if self._sends:
            batch.send.extend(self._sends)
            self._sends = []
        if not self._bind_asked:
            self._bind_asked = True
            batch.services.append(_BIND)
        if batch.apply and self._streams:
            batch.services.append(_AFTER_APPLY)
        return batch

    def advance(self, ready: Ready) -> None:
        self.consensus.advance(ready)

    def clock_stalled(self, missed_ticks: int) -> None:
        stalled = getattr(self.consensus, "clock_stalled", None)
        if stalled is not None:
            stalled(missed_ticks)

    def status(self) -> dict[str, Any]:
        status: dict[str, Any] = self.consensus.status()
        return status

    def clock_ms(self) -> int:
        """The lease clock: the wrapped node's ticks x ETCD_TICK_MS (Raft counts a stall's
        missed ticks too; a node that does not runs its lease clock late: leases then
        expire later, never earlier)."""
        ticks: int = self.consensus.tick_now
        return ticks * ETCD_TICK_MS

    def leading(self) -> bool:
        """Whether this node's lessor may run: it leads (and, with lease epochs, the store
        applied its epoch)."""
        if not self.inner.leading(self.consensus):
            return False
        epoch_of = self.inner.epoch
        if epoch_of is None:
            return True
        machine = self.machine
        return machine is not None and machine.store.lease_epoch == epoch_of(self.consensus)

    def _claim_epoch(self) -> int | None:
        """With lease epochs, while leading: propose this leadership's epoch until applied;
        the epoch (None: no epochs, or not leading)."""
        epoch_of = self.inner.epoch
        if epoch_of is None or not self.inner.leading(self.consensus):
            return None
        epoch = epoch_of(self.consensus)
        machine = self.machine
        applied = machine is not None and machine.store.lease_epoch >= epoch
        asked, at = self._epoch_asked
        if not applied and (asked != epoch or self._ticks - at >= self.inner.epoch_retry_ticks):
            self._epoch_asked = (epoch, self._ticks)
            self._revokes += 1
            self.inner.propose(self.consensus, LeaseEpochRequest(epoch=epoch), self._revokes)
        return epoch

    # -- runtime services -------------------------------------------------------------------

    def bind(self, machine: SimEtcdMachine) -> None:
        """Join the node to the state machine the runtime built for it."""
        if self.machine is machine:
            return
        self.machine = machine
        machine.clock_ms = self.clock_ms
        machine.is_leader = self.leading
        self.hub = self._make_hub(machine.store)
        waiting, self._waiting = self._waiting, []
        for client, msg in waiting:
            self._open(client, msg)

    def after_apply(self) -> None:
        """After a batch of applied entries: watchers get the new revisions."""
        if self.hub is not None:
            self.hub.advance()
            self._flush()

    # -- watches ----------------------------------------------------------------------------

    def _open(self, client: int, msg: WatchOpen) -> None:
        hub = self.hub
        if hub is None:
            self._waiting = [(c, m) for c, m in self._waiting if c != client]
            self._waiting.append((client, msg))
            return
        if msg.ref <= self._last_ref.get(client, 0):
            return  # a copy the network duplicated, or a late one: a stream opens once
        self._last_ref[client] = msg.ref
        for other in [k for k in self._streams if k[0] == client]:
            self._close(*other)  # a client watches from one stream per node at most
        stream = _Stream(hub.open_stream())
        self._streams[(client, msg.ref)] = stream
        create = WatchCreateRequest(
            key=msg.key,
            range_end=msg.range_end,
            start_revision=msg.start_revision,
            progress_notify=True,
        )
        hub.request(stream.hub_stream, WatchRequest(create_request=create))
        self._flush()

    def _close(self, client: int, ref: int) -> None:
        stream = self._streams.pop((client, ref), None)
        if stream is not None and self.hub is not None:
            self.hub.close_stream(stream.hub_stream)

    def _flush(self) -> None:
        hub = self.hub
        assert hub is not None
        for (client, ref), stream in self._streams.items():
            if not hub.has_output(stream.hub_stream):
                continue
            responses = hub.take(stream.hub_stream)
            if responses:
                self._sends.append(Send(client, WatchData(ref, stream.seq, tuple(responses))))
                stream.seq += 1


def _drop_lease_client(batch: Ready) -> None:
    """Drop the wrapped node's replies to :data:`LEASE_CLIENT_ID` and its applies' answers."""
    if any(send.to == LEASE_CLIENT_ID for send in batch.send):
        batch.send = [send for send in batch.send if send.to != LEASE_CLIENT_ID]
    if any(_to_lease_client(item) for item in batch.apply):
        batch.apply = [
            msgspec.structs.replace(item, reply_to=None, request_id=0)
            if _to_lease_client(item)
            else item
            for item in batch.apply
        ]


def _to_lease_client(item: Apply | Restore) -> bool:
    return isinstance(item, Apply) and item.reply_to == LEASE_CLIENT_ID


def serve(node: Node, sm: StateMachine | None, request: Any) -> None:
    """Runtime services of :class:`EtcdNode`: join it to its state machine, advance its
    watch hub after applies, and the wrapped protocol's own (Raft's snapshots)."""
    assert isinstance(node, EtcdNode) and isinstance(sm, SimEtcdMachine)
    if request == _BIND:
        node.bind(sm)
    elif request == _AFTER_APPLY:
        node.bind(sm)
        node.after_apply()
    else:
        node.inner.serve(node.consensus, sm, request)


# -- mutants ---------------------------------------------------------------------------------------


def _forgetful_lessor(store: EtcdStore) -> Lessor:
    return forgetful_lessor(store, revoke_retry_ms=REVOKE_RETRY_MS)


class GapWatchHub(WatchHub):
    """Mutant ``watch_gap``: a watcher created with a start revision already in the
    history (a client resuming after a reconnect) loses the first event of its catch-up."""

    def __init__(self, store: EtcdStore, **kwargs: Any) -> None:
        super().__init__(store, **kwargs)
        self._resumed: set[int] = set()

    def request(self, stream_id: int, request: WatchRequest) -> None:
        create = request.create_request
        if create is not None and 1 < create.start_revision <= self.mvcc.current_revision:
            self._resumed.add(stream_id)
        super().request(stream_id, request)

    def take(self, stream_id: int, max_responses: int | None = None) -> list[WatchResponse]:
        out = super().take(stream_id, max_responses)
        if stream_id in self._resumed:
            for i, response in enumerate(out):
                if response.events:
                    self._resumed.discard(stream_id)
                    out[i] = msgspec.structs.replace(response, events=response.events[1:])
                    break
        return out


# -- the monitor ----------------------------------------------------------------------------------


class _RaftView:
    """The world as the wrapped protocol's monitor and nemesis expect it: nodes are the
    wrapped consensus nodes (RaftNodes over Raft)."""

    def __init__(self, world: World) -> None:
        self.world = world

    @property
    def now_us(self) -> int:
        return self.world.now_us

    @property
    def node_ids(self) -> tuple[int, ...]:
        return self.world.node_ids

    @property
    def healing(self) -> bool:
        return self.world.healing

    @property
    def client_ids(self) -> tuple[int, ...]:
        return self.world.client_ids

    @property
    def tick_us(self) -> int:
        return self.world.tick_us

    @property
    def schedule(self) -> Schedule:
        return self.world.schedule

    @property
    def history(self) -> list[HistoryEvent]:
        return self.world.history

    def node(self, node_id: int) -> Node | None:
        node = self.world.node(node_id)
        return node.consensus if isinstance(node, EtcdNode) else node

    def durable(self, node_id: int) -> DurableState:
        return self.world.durable(node_id)

    def state_machine(self, node_id: int) -> StateMachine | None:
        return self.world.state_machine(node_id)

    def stopped(self, node_id: int) -> bool:
        return self.world.stopped(node_id)


def _view(cache: list[_RaftView], world: World) -> _RaftView:
    if not cache or cache[0].world is not world:
        cache[:] = [_RaftView(world)]
    return cache[0]


LINEARIZABILITY_TIMEOUT_S = 20.0


class EtcdMonitor(Monitor):
    """The consensus's invariants (Raft's unless ``consensus`` is given) + revision
    agreement, lease safety, watch order, linearizability."""

    def __init__(self, node_ids: tuple[int, ...], consensus: Monitor | None = None) -> None:
        self.raft: Monitor = consensus if consensus is not None else RaftMonitor(node_ids)
        """The wrapped protocol's monitor (``RaftMonitor`` over Raft), fed the wrapped nodes."""
        self._views: list[_RaftView] = []
        self.revisions: dict[int, list[tuple[int, Any]]] = {}
        """revision -> its events as (type, KeyValue), from the first node to apply it."""
        self._node_rev: dict[int, int] = {}
        self.protected_us: dict[int, int] = {}
        """lease -> the earliest time (virtual us) an expiry may revoke it."""
        self.protected_by: dict[int, str] = {}
        self.expired_us: dict[int, int] = {}
        """lease -> when its expiry revoke was first applied."""
        self._invoked: dict[int, int] = {}
        """process -> invocation time (ns) of its lease operation in flight."""
        self._cursor = 0
        self.unknown: list[str] = []

    # -- hooks --------------------------------------------------------------------------------

    def on_restart(self, world: World, node_id: int) -> None:
        self.raft.on_restart(_view(self._views, world), node_id)
        self._node_rev.pop(node_id, None)

    def on_apply(
        self, world: World, node_id: int, item: Apply | Restore, result: Any
    ) -> Violation | None:
        violation = self.raft.on_apply(_view(self._views, world), node_id, item, result)
        if violation is not None:
            return violation
        sm = world.state_machine(node_id)
        if not isinstance(sm, SimEtcdMachine):
            return None
        mvcc = sm.store.mvcc
        if isinstance(item, Restore):
            self._node_rev[node_id] = mvcc.current_revision
            return None
        if item.read_only:
            return None
        current = mvcc.current_revision
        if current != self._node_rev.get(node_id, 1):
            self._node_rev[node_id] = current
            violation = self._observe_revision(node_id, current, mvcc.recent)
            if violation is not None:
                return violation
        if type(result) is LeaseRevokeResponse:
            lease_id = _expiry_revoke(item.command)
            if lease_id is not None and lease_id not in self.expired_us:
                self.expired_us[lease_id] = world.now_us
                return self._check_lease(world, lease_id)
        return None

    def _observe_revision(self, node_id: int, current: int, recent: Any) -> Violation | None:
        events: list[tuple[int, Any]] | None = None
        for rev, evs in reversed(recent):
            if rev == current:
                events = [(ev.type, ev.kv) for ev in evs]
                break
        if events is None:
            return Violation("revision-divergence", f"node {node_id}: no events at {current}")
        known = self.revisions.setdefault(current, events)
        if known != events:
            return Violation(
                "revision-divergence",
                f"node {node_id} made revision {current} {events!r}; "
                f"another node made it {known!r}",
            )
        return None

    def after_event(self, world: World) -> Violation | None:
        violation = self.raft.after_event(_view(self._views, world))
        if violation is not None:
            return violation
        return self._scan_leases(world)

    def liveness(self, world: World) -> str | None:
        return self.raft.liveness(_view(self._views, world))

    def unknowns(self) -> list[str]:
        return self.raft.unknowns() + self.unknown

    def at_end(self, world: World) -> Violation | None:
        violation = self._scan_leases(world)
        if violation is None:
            violation = self._check_watches(world)
        if violation is None:
            violation = self._check_linearizable(world)
        return violation

    # -- leases ------------------------------------------------------------------------------

    def _scan_leases(self, world: World) -> Violation | None:
        """Read the lease acknowledgements recorded since the last call."""
        history = world.history
        if self._cursor == len(history):
            return None
        ttl_factor = 1.0 - MAX_DRIFT
        slack_us = LEASE_TICK_SLACK * world.tick_us
        us_per_s = 1000 // ETCD_TICK_MS * world.tick_us
        for event in history[self._cursor :]:
            f = event.f
            if f != "lease_grant" and f != "keep_alive":
                continue
            if event.type == "invoke":
                self._invoked[event.process] = event.time
                continue
            invoked_ns = self._invoked.pop(event.process, None)
            if event.type != "ok" or invoked_ns is None:
                continue
            if f == "lease_grant":
                lease_id, ttl_s = event.value
            else:
                lease_id, ttl_s = self._keep_alive_lease(history, event), event.value
            if ttl_s <= 0 or lease_id is None:
                continue
            until = invoked_ns // 1000 + int(ttl_s * us_per_s * ttl_factor) - slack_us
            if until > self.protected_us.get(lease_id, 0):
                self.protected_us[lease_id] = until
                self.protected_by[lease_id] = (
                    f"{f} by process {event.process} invoked at {invoked_ns // 1000} us, "
                    f"TTL {ttl_s} s = {ttl_s * us_per_s // 1000} ms of virtual time"
                )
            if lease_id in self.expired_us:
                self._cursor = len(history)
                return self._check_lease(world, lease_id)
        self._cursor = len(history)
        return None

    def _keep_alive_lease(self, history: list[HistoryEvent], ok: HistoryEvent) -> int | None:
        """The lease a keep-alive completion is about (its invocation's value)."""
        for event in reversed(history):
            if event.process == ok.process and event.type == "invoke" and event.f == "keep_alive":
                value: int = event.value
                return value
        return None

    def _check_lease(self, world: World, lease_id: int) -> Violation | None:
        expired = self.expired_us[lease_id]
        until = self.protected_us.get(lease_id)
        if until is None or expired >= until:
            return None
        return Violation(
            "lease-early-expiry",
            f"lease {lease_id:x} revoked by expiry at {expired} us, before {until} us "
            f"(TTL less drift and rounding after the {self.protected_by[lease_id]})",
        )

    # -- watches ------------------------------------------------------------------------------

    def _check_watches(self, world: World) -> Violation | None:
        for client_id in world.client_ids:
            client = world.node(client_id)
            if not isinstance(client, EtcdClient):
                continue
            for record in client.watch_log:
                violation = self.check_watch(client_id, record)
                if violation is not None:
                    return violation
        return None

    def check_watch(self, client_id: int, record: WatchRecord) -> Violation | None:
        """The ``watch-order`` property of one logical watch (None: it holds)."""
        what = f"client {client_id} watch {_describe_range(record)} from {record.start}"
        if record.compacted and record.needed > record.compacted:
            return Violation(
                "watch-order",
                f"{what}: canceled as compacted at {record.compacted}, though it needed "
                f"only revisions from {record.needed} on",
            )
        got = record.events
        if not got:
            return None
        last = max(ev.kv.mod_revision for ev in got if ev.kv is not None)
        expected: list[tuple[int, Any]] = []
        for rev in range(max(record.start, 1), last + 1):
            events = self.revisions.get(rev)
            if events is None:
                if rev > 1:
                    return Violation("watch-order", f"revision {rev} was never applied")
                continue
            expected.extend(e for e in events if _covers(record, e[1].key))
        for i, ev in enumerate(got):
            seen = (ev.type, ev.kv)
            if i >= len(expected) or seen != expected[i]:
                want = _describe_event(expected[i]) if i < len(expected) else "nothing"
                return Violation(
                    "watch-order",
                    f"{what} (re-created {record.recreated} times): event {i} is "
                    f"{_describe_event(seen)}, expected {want}",
                )
        if len(got) != len(expected):
            return Violation(
                "watch-order",
                f"{what}: accepted {len(got)} events through revision {last}, expected "
                f"{len(expected)}: next missing {_describe_event(expected[len(got)])}",
            )
        return None

    # -- linearizability ------------------------------------------------------------------------

    def _check_linearizable(self, world: World) -> Violation | None:
        from pnyx.check.history import History
        from pnyx.check.linearizability import check_linearizable
        from pnyx.check.models import KVModel

        events = [e for e in world.history if e.f in KV_FUNCTIONS]
        result = check_linearizable(
            History.from_events(events), KVModel(), timeout_s=LINEARIZABILITY_TIMEOUT_S
        )
        if result.verdict == "not-linearizable":
            return Violation("linearizability", result.explain())
        if result.verdict != "linearizable":
            self.unknown.append(f"linearizability {result.verdict}: {result.explain()}")
        return None


def _expiry_revoke(command: Any) -> int | None:
    """The lease of a leader's expiry revoke (a bare ``LeaseRevokeRequest`` or
    ``LeaseExpireRequest``; a client's revoke travels in a session command), typed or
    untyped after a disk round trip."""
    if type(command) is LeaseRevokeRequest or type(command) is LeaseExpireRequest:
        return command.ID
    if isinstance(command, dict) and command.get("type") in ("lease_revoke", "lease_expire"):
        lease_id = command.get("ID", 0)
        return lease_id if isinstance(lease_id, int) else None
    return None


def _covers(record: WatchRecord, key: bytes) -> bool:
    """etcd's range rule (as ``Watcher.covers``)."""
    if not record.range_end:
        return key == record.key
    if record.range_end == b"\0":
        return key >= record.key
    return record.key <= key < record.range_end


def _describe_range(record: WatchRecord) -> str:
    if not record.range_end:
        return repr(record.key.decode())
    return f"[{record.key!r}, {record.range_end!r})"


def _describe_event(event: tuple[int, Any]) -> str:
    kind, kv = event
    name = "put" if kind == 0 else "delete"
    if kv is None:
        return name
    value = f"={kv.value.decode()!r}" if kind == 0 else ""
    return f"{name} {kv.key.decode()!r}{value} at revision {kv.mod_revision}"


# -- nemesis: Raft's, looking at the wrapped nodes -------------------------------------------------


class EtcdNemesis:
    """The wrapped protocol's protocol-aware nemesis (:class:`RaftNemesis` unless
    ``make_inner`` builds another) over the wrapped nodes."""

    def __init__(
        self, rules: frozenset[str], make_inner: Callable[[frozenset[str]], Any] = RaftNemesis
    ) -> None:
        self.raft = make_inner(rules)
        self._views: list[_RaftView] = []

    def on_batch(self, world: World, node_id: int, ready: Ready, rng: SimRandom) -> Any:
        return self.raft.on_batch(_view(self._views, world), node_id, ready, rng)

    def stream_strike(
        self, world: World, node_id: int, ready: Ready, rngs: Mapping[str, SimRandom]
    ) -> Any:
        strike = getattr(self.raft, "stream_strike", None)
        if strike is None:
            return None
        return strike(_view(self._views, world), node_id, ready, rngs)

    def stream_struck(self, hit: Any) -> None:
        struck = getattr(self.raft, "stream_struck", None)
        if struck is not None:
            struck(hit)


# -- the spec --------------------------------------------------------------------------------------


def etcd_hub_factory(mutants: frozenset[str]) -> Callable[[EtcdStore], WatchHub]:
    """The watch hub of a node (the ``watch_gap`` mutant's when asked for)."""
    return GapWatchHub if WATCH_GAP in mutants else WatchHub


def etcd_client_factory(compactions: bool) -> Callable[[int, tuple[int, ...], Rng], Any]:
    """etcd's simulated clients (the first one is the admin); ``compactions``: they compact."""

    def make_client(client_id: int, node_ids: tuple[int, ...], rng: Rng) -> Any:
        admin = client_id == CLIENT_ID_BASE
        return EtcdClient(
            client_id, node_ids, rng, tick_ms=ETCD_TICK_MS, admin=admin, compactions=compactions
        )

    return make_client


def etcd_machine_factory(mutants: frozenset[str]) -> Callable[[], StateMachine]:
    """A node's state machine: the etcd machine with its lessor (the ``lease_expires_early``
    mutant's when asked for)."""
    make_lessor = _forgetful_lessor if LEASE_EXPIRES_EARLY in mutants else _new_lessor

    def make_sm() -> StateMachine:
        inner = EtcdStateMachine(min_lease_ttl_s=MIN_LEASE_TTL_S)
        return SimEtcdMachine(inner, make_lessor(inner.store))

    return make_sm


def draw_etcd_settings(rng: SimRandom) -> dict[str, Any]:
    """Swarm: Raft's protocol settings (the client mix of Raft's ``KvClient`` is dropped)."""
    return {k: v for k, v in draw_raft_settings(rng).items() if k not in CLIENT_SETTINGS}


def draw_etcd_stream_settings(rng: SimRandom) -> dict[str, Any]:
    """Swarm: Raft's stream settings, with snapshot chunks scaled to etcd's snapshots."""
    settings = draw_raft_stream_settings(rng)
    if "snapshot_chunk_bytes" in settings:
        settings["snapshot_chunk_bytes"] *= ETCD_CHUNK_SCALE
    return settings


def etcd_spec(
    mutants: frozenset[str] = frozenset(),
    config: RaftConfig | None = None,
    name: str = "etcd",
    compactions: bool = False,
) -> ProtocolDef:
    """The etcd spec; ``mutants`` (names from :data:`MUTANTS`) breaks it on purpose.

    ``compactions``: clients also compact, a few revisions behind the latest they saw (off
    in ``etcd``: see :data:`ETCD_COMPACT`)."""
    unknown = mutants - MUTANTS
    assert not unknown, f"unknown mutants {sorted(unknown)}; valid: {sorted(MUTANTS)}"
    base = config or SIM_ETCD_CONFIG
    node_config = dataclasses.replace(base, mutants=mutants & RAFT_MUTANTS)
    make_hub = etcd_hub_factory(mutants)

    def make_node(node_id: int, peers: tuple[int, ...], rng: Rng, durable: DurableState) -> Any:
        return EtcdNode(RaftNode(node_id, peers, rng, durable, node_config), make_hub)

    make_client = etcd_client_factory(compactions)
    make_sm = etcd_machine_factory(mutants)

    def configure(settings: Mapping[str, Any]) -> ProtocolDef:
        protocol = {k: v for k, v in settings.items() if k not in CLIENT_SETTINGS}
        return etcd_spec(mutants, dataclasses.replace(base, **protocol), name, compactions)

    return ProtocolDef(
        name=name,
        summary="etcd over Raft: MVCC, txns, leases (leader expiry), watches",
        make_node=make_node,
        make_client=make_client,
        make_monitor=EtcdMonitor,
        make_state_machine=make_sm,
        serve=serve,
        default_nodes=5,
        default_clients=3,
        broken=bool(mutants),
        draw_settings=draw_etcd_settings,
        draw_stream_settings=draw_etcd_stream_settings,
        configure=configure,
        make_nemesis=EtcdNemesis,
        nemesis_rules=NEMESIS_RULES,
        stream_nemesis_rules=STREAM_NEMESIS_RULES,
        swarm_nodes=(3, 5, 5, 7),
    )


ETCD = dataclasses.replace(
    etcd_spec(),
    runtime=RuntimeDef(
        peer_message_types=PEER_MESSAGE_TYPES,
        client_message_types=CLIENT_MESSAGE_TYPES,
        entry_type=Entry,
        record_types={HARD_STATE_KEY: HardState},
        make_node=raft_node_factory(),
        serve=raft_serve,
    ),
)
"""``pnyx sim etcd``.  As real processes (``pnyx serve --protocol etcd``) plain Raft nodes
run with the runtime tuning, and :mod:`pnyx.services.etcd` serves the gRPC client port and
hands the runner its own state machine (the simulator's node and machine wrappers stand in
for that service)."""


def etcd_mutant_spec(mutants: frozenset[str], name: str) -> ProtocolDef:
    """``etcd+MUTANT[,MUTANT]``: etcd broken by its own or Raft's mutants; KeyError naming the
    valid ones."""
    unknown = sorted(mutants - MUTANTS)
    if unknown:
        raise KeyError(
            f"unknown protocol {name!r}: unknown mutants {unknown}; "
            f"valid: {', '.join(sorted(MUTANTS))}"
        )
    return etcd_spec(mutants=mutants, name=name)


ETCD_COMPACT = etcd_spec(name="etcd-compact", compactions=True)
"""``pnyx sim etcd-compact``: clients compact too.  Seed 33 found a watch resumed at
exactly the compact revision missing the delete there (compaction dropped every tombstone,
as etcd 3.4 does); the store now keeps a tombstone written at the compact revision."""

__all__ = [
    "ETCD",
    "ETCD_COMPACT",
    "ETCD_MUTANTS",
    "ETCD_TICK_MS",
    "LEASE_EXPIRES_EARLY",
    "MUTANTS",
    "MUTANT_PROPERTIES",
    "WATCH_GAP",
    "EtcdMonitor",
    "EtcdNode",
    "ForgetfulLessor",
    "GapWatchHub",
    "SimEtcdMachine",
    "etcd_spec",
    "serve",
]

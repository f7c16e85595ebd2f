"""Embedded replicated objects: a class whose mutating methods are replicated through Raft.

Decorate mutating methods with :func:`replicated` and read-only ones that must be
linearizable with :func:`query`; plain methods read the local replica.  A :class:`Replica`
hosts one member of the group: a Raft node (in a background thread, or on the caller's
asyncio loop), the object wrapped as its state machine, and a proposer that batches calls
into log entries.  See ``docs/OBJECTS.md``.

Calls travel in client sessions (``SessionStateMachine``), so a retry after a timeout or a
leader change is applied once.  Each of a replica's ``max_inflight_batches`` lanes owns a
session and has at most one batch in flight, which keeps exactly-once sound while batches
are pipelined.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import pickle
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, overload

import msgspec

from pnyx.catalog import get_runnable
from pnyx.core import DurableState, Message, Node, NodeFactory, Rng
from pnyx.protocols.raft import ClientRequest, RaftConfig, RaftNode, ReadRequest
from pnyx.protocols.raft.sessions import (
    OPEN_SESSION,
    SESSION_EXPIRED,
    SessionCommand,
    SessionStateMachine,
)
from pnyx.protocols.raft.spec import RAFT_RUNTIME_CONFIG_FIELDS
from pnyx.runtime import NodeRunner, RunnerConfig, WalConfig
from pnyx.runtime.transport import Address
from pnyx.services.client import (
    AsyncClient,
    ClientError,
    LoopThread,
    run_bounded,
    wait_cancelled,
)
from pnyx.sim.spec import ProtocolDef

log = logging.getLogger("pnyx.replica")

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

WRITE = "write"
QUERY = "query"
QUERY_TAG = "q"
"""First element of a query (``["q", method, args]``): never mistaken for a session command."""

BUSY_ERRORS = frozenset({"busy", "transferring"})
"""Leader replies that mean: nothing happened, send the same command again shortly."""
BUSY_BACKOFF_S = 0.005
SESSION_REOPENS = 3
STOP_STEPS = 6
"""``Replica.stop`` waits at most this many ``stop_timeout_s`` (lanes, clients, node: two
each at most, when a step must be cancelled)."""


class ReplicaError(Exception):
    """A call could not be completed (no leader before the deadline, replica stopped).

    The call may or may not have been applied.
    """


class Overloaded(ReplicaError):
    """``submit`` found the replica's queue of pending calls full: the call was not sent."""


class ReplicatedCallError(Exception):
    """The method raised while being applied; the message carries the remote exception.

    Every replica raised the same way, so state changes made before the raise stay.
    """


# -- the decorators ---------------------------------------------------------------------


class ReplicatedMethod(Generic[P, R]):
    """A method of a :class:`ReplicatedObject` that runs through the replicated log (or is a
    linearizable query); accessed on an instance it is a :class:`BoundCall`."""

    def __init__(self, func: Callable[Concatenate[Any, P], R], kind: str) -> None:
        assert kind in (WRITE, QUERY), f"kind {kind!r} must be {WRITE!r} or {QUERY!r}"
        self.func = func
        self.kind = kind
        self.name = func.__name__
        self.__doc__ = func.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, obj: None, owner: type) -> ReplicatedMethod[P, R]: ...

    @overload
    def __get__(self, obj: object, owner: type) -> BoundCall[P, R]: ...

    def __get__(self, obj: object | None, owner: type) -> ReplicatedMethod[P, R] | BoundCall[P, R]:
        if obj is None:
            return self
        assert isinstance(obj, ReplicatedObject), (
            f"@{self.kind} method {self.name} used on {type(obj).__name__}, which does not "
            "derive from ReplicatedObject"
        )
        return BoundCall(obj, self)


def replicated(func: Callable[Concatenate[Any, P], R]) -> ReplicatedMethod[P, R]:
    """Mark a mutating method: calls go through the Raft log and run on every replica.

    Arguments and the return value must be msgpack-encodable (None, bool, int, float, str,
    bytes, list/tuple, dict); tuples arrive as lists.  The method must be deterministic:
    use :attr:`ReplicatedObject.log_time_s` instead of the clock, no randomness, no I/O.
    """
    return ReplicatedMethod(func, WRITE)


def query(func: Callable[Concatenate[Any, P], R]) -> ReplicatedMethod[P, R]:
    """Mark a read-only method whose calls are linearizable (a ReadIndex read on the leader).

    ``obj.m.local(...)`` runs it on the local replica instead (fast, possibly stale).
    """
    return ReplicatedMethod(func, QUERY)


class BoundCall(Generic[P, R]):
    """``obj.method``: call it (blocks), ``await .call_async(...)`` or ``.submit(...)``."""

    __slots__ = ("_method", "_obj")

    def __init__(self, obj: ReplicatedObject, method: ReplicatedMethod[P, R]) -> None:
        self._obj = obj
        self._method = method

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the call through the group and return its result (blocks the caller).

        Not on the replica's own event loop: use ``await obj.method.call_async(...)`` there.
        """
        replica = _replica_of(self._obj)
        result: R = replica.run_sync(self._invoke(replica, args, kwargs))
        return result

    async def call_async(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the call through the group; waits for queue space (backpressure)."""
        replica = _replica_of(self._obj)
        result: R = await replica.run_async(self._invoke(replica, args, kwargs))
        return result

    def submit(self, *args: P.args, **kwargs: P.kwargs) -> asyncio.Future[R]:
        """Queue a ``@replicated`` call without waiting (on the replica's loop only).

        Raises :class:`Overloaded` at once when the queue of pending calls is full.
        """
        assert self._method.kind == WRITE, f"submit() is for @replicated methods, not {self.name}"
        return _replica_of(self._obj).submit(_encode_call(self.name, args, kwargs))

    def try_submit(self, *args: P.args, **kwargs: P.kwargs) -> asyncio.Future[R] | None:
        """Like :meth:`submit` but None instead of raising when the queue is full (cheap
        for open-loop load generators)."""
        assert self._method.kind == WRITE, f"try_submit() is for @replicated, not {self.name}"
        replica = _replica_of(self._obj)
        if replica.queue_full:
            return None  # refused before paying for the encoding
        return replica.try_submit(_encode_call(self.name, args, kwargs))

    def local(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run a ``@query`` method on the local replica's state (may be stale)."""
        assert self._method.kind == QUERY, f"local() is for @query methods, not {self.name}"
        return self._method.func(self._obj, *args, **kwargs)

    @property
    def name(self) -> str:
        """The method's name."""
        return self._method.name

    async def _invoke(self, replica: Replica, args: tuple[Any, ...], kw: dict[str, Any]) -> Any:
        if self._method.kind == WRITE:
            return await replica.propose(_encode_call(self.name, args, kw))
        query_: list[Any] = [QUERY_TAG, self.name, list(args)]
        return await replica.read([*query_, kw] if kw else query_)


_ENCODE = msgspec.msgpack.Encoder().encode
_DECODE = msgspec.msgpack.Decoder().decode


def _encode_call(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
    """One call as msgpack ``[name, args(, kwargs)]``; TypeError names what cannot travel."""
    call = [name, list(args), kwargs] if kwargs else [name, list(args)]
    try:
        return _ENCODE(call)
    except (TypeError, msgspec.EncodeError) as exc:
        raise TypeError(
            f"arguments of {name}() must be msgpack-encodable (None, bool, int, float, str, "
            f"bytes, list, tuple, dict): {exc}"
        ) from exc


def _pack_calls(calls: list[bytes]) -> bytes:
    """Encoded calls joined into one msgpack array (no re-encoding of the items)."""
    count = len(calls)
    if count < 16:
        head = bytes((0x90 | count,))
    elif count < 1 << 16:
        head = b"\xdc" + count.to_bytes(2, "big")
    else:
        head = b"\xdd" + count.to_bytes(4, "big")
    return head + b"".join(calls)


# -- the object and its state machine ---------------------------------------------------


class ReplicatedObject:
    """Base class of replicated objects.

    State is whatever the methods keep in attributes.  Snapshots pickle the instance
    ``__dict__`` by default (trusted clusters only: unpickling runs code); override
    :meth:`dump_state` / :meth:`load_state` for a safer or smaller format.
    """

    _pnyx_replica: Replica | None = None
    _pnyx_log_time_ms: int = 0

    @property
    def log_time_s(self) -> float:
        """The group's clock while applying: the latest proposer timestamp applied so far.

        Identical on every replica and never decreasing; proposer clock skew shifts it.
        """
        return self._pnyx_log_time_ms / 1000.0

    def dump_state(self) -> bytes:
        """The object's state for a snapshot (default: pickle of the public ``__dict__``)."""
        state = {k: v for k, v in vars(self).items() if not k.startswith("_pnyx_")}
        return pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)

    def load_state(self, data: bytes) -> None:
        """Replace the object's state with one produced by :meth:`dump_state`."""
        state = pickle.loads(data)
        for key in [k for k in vars(self) if not k.startswith("_pnyx_")]:
            delattr(self, key)
        vars(self).update(state)


def _encode_results(calls: list[Any], values: list[Any], errors: list[list[Any]]) -> bytes:
    try:
        return _ENCODE([values, errors])
    except (TypeError, msgspec.EncodeError):
        pass
    for position, value in enumerate(values):  # rare: find the culprits, deterministically
        try:
            _ENCODE(value)
        except (TypeError, msgspec.EncodeError) as exc:
            values[position] = None
            message = f"TypeError: the result of {calls[position][0]}() is not msgpack-encodable"
            errors.append([position, f"{message}: {exc}"])
    return _ENCODE([values, errors])


def _methods(cls: type, kind: str) -> dict[str, Callable[..., Any]]:
    found: dict[str, Callable[..., Any]] = {}
    for klass in reversed(cls.__mro__):
        for name, attr in vars(klass).items():
            if isinstance(attr, ReplicatedMethod):
                if attr.kind == kind:
                    found[name] = attr.func
                else:
                    found.pop(name, None)
    return found


class _Image(msgspec.Struct, array_like=True):
    log_time_ms: int
    state: bytes


class ObjectStateMachine:
    """A :class:`ReplicatedObject` as a :class:`pnyx.core.StateMachine`.

    Commands are batches ``[time_ms, calls]`` where ``calls`` is the msgpack encoding of
    ``[[method, args(, kwargs)], ...]``: kept as bytes, a log entry is one object however
    many calls it carries (cheap to relay, cheap for the garbage collector).  The result is
    the msgpack encoding of ``[values, errors]``, ``errors`` being ``[position, "Type:
    message"]`` pairs.  Queries are ``["q", method, args(, kwargs)]`` and return the value.
    """

    def __init__(self, obj: ReplicatedObject) -> None:
        self.obj = obj
        self._writes = _methods(type(obj), WRITE)
        self._queries = _methods(type(obj), QUERY)

    def apply(self, command: Any) -> Any:
        if command[0] == QUERY_TAG:
            return self._query(command)
        stamp_ms, packed = command
        calls = _DECODE(packed)
        obj = self.obj
        if stamp_ms > obj._pnyx_log_time_ms:
            obj._pnyx_log_time_ms = stamp_ms
        writes = self._writes
        values: list[Any] = []
        errors: list[list[Any]] = []
        for position, call in enumerate(calls):
            try:
                func = writes[call[0]]
                if len(call) == 2:
                    values.append(func(obj, *call[1]))
                else:
                    values.append(func(obj, *call[1], **call[2]))
            except Exception as exc:  # deterministic: the same on every replica
                values.append(None)
                errors.append([position, self._describe(call, exc)])
        return _encode_results(calls, values, errors)

    def _query(self, command: Any) -> Any:
        func = self._queries.get(command[1])
        if func is None:
            raise ValueError(
                f"{command[1]!r} is not a @query method of {type(self.obj).__name__}; "
                f"queries: {sorted(self._queries)}"
            )
        kwargs = command[3] if len(command) > 3 else {}
        return func(self.obj, *command[2], **kwargs)

    def _describe(self, call: Any, exc: Exception) -> str:
        if isinstance(exc, KeyError) and call[0] not in self._writes:
            return (
                f"UnknownMethod: {call[0]!r} is not a @replicated method of "
                f"{type(self.obj).__name__}"
            )
        return f"{type(exc).__name__}: {exc}"

    def snapshot(self) -> bytes:
        obj = self.obj
        return msgspec.msgpack.encode(_Image(obj._pnyx_log_time_ms, obj.dump_state()))

    def restore(self, data: bytes) -> None:
        image = msgspec.msgpack.decode(data, type=_Image)
        self.obj._pnyx_log_time_ms = image.log_time_ms
        self.obj.load_state(image.state)


# -- the replica host -------------------------------------------------------------------


@dataclass(frozen=True)
class ReplicaOptions:
    """Tuning of a :class:`Replica` (defaults suit loopback and LAN groups)."""

    tick_ms: int = 10
    """Wall-clock milliseconds per Raft tick (election timeout: 10-20 ticks)."""
    fsync: bool = True
    """With a ``data_dir``: fdatasync every WAL batch (False: benchmarks only)."""
    max_batch_calls: int = 1024
    """Calls carried by one log entry."""
    max_inflight_batches: int = 8
    """Batches in flight at once (each lane has its own session)."""
    max_pending_calls: int = 8_192
    """Bound of the queue of calls waiting for a lane; beyond it callers wait or are refused."""
    snapshot_threshold_entries: int = 2_000
    """Log entries (batches) between snapshots of the object; bounds the log kept in memory."""
    request_timeout_s: float = 2.0
    deadline_s: float = 30.0
    """How long a call keeps retrying (leader changes, busy leader) before ReplicaError."""
    stop_timeout_s: float = 5.0
    """Bound of each step of :meth:`Replica.stop` (proposer, connections, node): a step
    still running after it is cancelled, and one still running after as long again makes
    ``stop`` raise ReplicaError.  Whatever the peers do, ``stop`` returns within about five
    times this."""


class _Lane:
    __slots__ = ("client", "seq", "session")

    def __init__(self, client: AsyncClient) -> None:
        self.client = client
        self.session = 0
        self.seq = 0


_Pending = tuple[bytes, "asyncio.Future[Any]"]


class Replica:
    """One member of a replicated object's group.

    ``members`` maps every member id (this one included) to its address; the replica
    listens on ``members[self_id]`` unless ``listen_sock`` is given.  ``data_dir`` makes it
    durable (WAL, fsync); None keeps it in memory: a restarted in-memory replica rejoins
    empty and catches up from its peers (safe while a majority keeps running).

    Sync use: ``with Replica(obj, 1, members): obj.incr(1)`` runs the node in a background
    thread.  Asyncio use: ``async with Replica(...)`` runs it on the caller's loop.
    """

    def __init__(
        self,
        obj: ReplicatedObject,
        self_id: int,
        members: Mapping[int, Address],
        *,
        data_dir: Path | None = None,
        options: ReplicaOptions | None = None,
        listen_sock: Any = None,
    ) -> None:
        if self_id not in members:
            raise ValueError(f"self_id {self_id} is not among the members {sorted(members)}")
        if obj._pnyx_replica is not None:
            raise ValueError(f"{type(obj).__name__} object is already hosted by a replica")
        self.obj = obj
        self.self_id = self_id
        self.members = dict(members)
        self.data_dir = data_dir
        self.options = options or ReplicaOptions()
        self._listen_sock = listen_sock
        self.state_machine = SessionStateMachine(ObjectStateMachine(obj))
        self._service: ProtocolDef = get_runnable("raft")
        self._runner: NodeRunner | None = None
        self._clients: _ClientPool | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: LoopThread | None = None
        self._pending: deque[_Pending] = deque()
        self._work: asyncio.Event | None = None
        self._space: asyncio.Event | None = None
        self._lanes: list[asyncio.Task[None]] = []
        self._closed = False
        obj._pnyx_replica = self

    # -- lifecycle -----------------------------------------------------------------------

    async def start_async(self) -> None:
        """Start the node and the proposer on the running event loop."""
        assert self._loop is None, "replica already started"
        self._loop = asyncio.get_running_loop()
        self._work, self._space = asyncio.Event(), asyncio.Event()
        self._space.set()
        opts = self.options
        host, port = self.members[self.self_id]
        config = RunnerConfig(
            node_id=self.self_id,
            data_dir=self.data_dir,
            peers=self.members,
            listen_host=host,
            listen_port=port,
            tick_ms=opts.tick_ms,
            wal=WalConfig(fsync=opts.fsync),
        )
        service = self._service
        self._runner = NodeRunner.for_protocol(
            service,
            config,
            state_machine=self.state_machine,
            make_node=_raft_factory(opts.snapshot_threshold_entries),
            listen_sock=self._listen_sock,
        )
        await self._runner.start()
        self._clients = _ClientPool(self.members, service.message_types, opts)
        self._lanes = [
            asyncio.ensure_future(self._lane(_Lane(self._clients.new())))
            for _ in range(opts.max_inflight_batches)
        ]

    async def stop_async(self) -> None:
        """Stop proposing (pending calls fail with ReplicaError) and stop the node.

        Bounded whatever the peers do (see :attr:`ReplicaOptions.stop_timeout_s`); raises
        ReplicaError if a step would not end.  The caller's cancellation propagates.
        """
        if self._closed:
            return
        self._closed = True
        bound_s = self.options.stop_timeout_s
        try:
            lanes, self._lanes = self._lanes, []
            stuck = await wait_cancelled(lanes, bound_s, "proposer lane")
            self._fail_pending()
            problems = [f"{len(stuck)} proposer lane(s) ignored cancellation"] if stuck else []
            if self._clients is not None:
                problems += await _bounded_step(self._clients.close(), bound_s, "closing clients")
            if self._runner is not None:
                problems += await _bounded_step(self._runner.stop(), bound_s, "stopping the node")
        finally:
            self.obj._pnyx_replica = None
        if problems:
            raise ReplicaError(f"replica {self.self_id} stopped uncleanly: {'; '.join(problems)}")

    def _fail_pending(self) -> None:
        """Queued calls never sent, and callers waiting for queue space, fail now."""
        while self._pending:
            _, future = self._pending.popleft()
            if not future.done():
                future.set_exception(ReplicaError("the replica stopped before the call was sent"))
        if self._space is not None:
            self._space.set()  # wakes propose() callers, who see the replica closed

    def start(self) -> None:
        """Start the node in a background thread (for synchronous callers)."""
        assert self._thread is None, "replica already started"
        self._thread = LoopThread(f"pnyx-replica-{self.self_id}")
        try:
            self._thread.run(self.start_async())
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop a replica started with :meth:`start` (bounded, like :meth:`stop_async`)."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        bound_s = self.options.stop_timeout_s
        try:
            thread.run(self.stop_async(), timeout_s=STOP_STEPS * bound_s)
        except TimeoutError as exc:
            raise ReplicaError(f"replica {self.self_id} did not stop within the bound") from exc
        finally:
            thread.close(timeout_s=bound_s)

    def __enter__(self) -> Replica:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> Replica:
        await self.start_async()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop_async()

    # -- state ---------------------------------------------------------------------------

    @property
    def runner(self) -> NodeRunner:
        """The node runner (after start)."""
        assert self._runner is not None, "replica not started"
        return self._runner

    @property
    def leader_id(self) -> int | None:
        """The leader this replica knows of, if any."""
        leader = getattr(self.runner.node, "leader", 0)
        return int(leader) if leader else None

    @property
    def is_leader(self) -> bool:
        """True while this replica is the leader it knows of."""
        return self.leader_id == self.self_id

    async def wait_ready_async(self, timeout_s: float = 10.0) -> None:
        """Wait until this replica knows a leader; ReplicaError after ``timeout_s``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self.leader_id is None:
            if loop.time() > deadline:
                raise ReplicaError(
                    f"replica {self.self_id} knows no leader after {timeout_s} s; are a "
                    f"majority of the members {sorted(self.members)} running?"
                )
            await asyncio.sleep(0.01)

    def wait_ready(self, timeout_s: float = 10.0) -> None:
        """Blocking :meth:`wait_ready_async`."""
        self.run_sync(self.wait_ready_async(timeout_s))

    # -- calls ---------------------------------------------------------------------------

    def run_sync(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the replica's loop from another thread and wait for its result."""
        loop = self._require_loop()
        if _running_loop() is loop:
            coro.close()
            raise RuntimeError(
                "a blocking replicated call on the replica's own event loop would deadlock; "
                "use `await obj.method.call_async(...)` there"
            )
        return asyncio.run_coroutine_threadsafe(coro, loop).result()

    async def run_async(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the replica's loop from any loop."""
        loop = self._require_loop()
        if _running_loop() is loop:
            return await coro
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, loop))

    @property
    def queue_full(self) -> bool:
        """True while ``max_pending_calls`` calls wait for a lane (submit would refuse)."""
        return len(self._pending) >= self.options.max_pending_calls

    def submit(self, call: bytes) -> asyncio.Future[Any]:
        """Queue one encoded write call; its future resolves to the method's result.

        Raises :class:`Overloaded` when ``max_pending_calls`` calls are already queued.
        """
        future = self.try_submit(call)
        if future is None:
            raise Overloaded(
                f"{len(self._pending)} calls are pending (max_pending_calls="
                f"{self.options.max_pending_calls}); slow down or await call_async()"
            )
        return future

    def try_submit(self, call: bytes) -> asyncio.Future[Any] | None:
        """:meth:`submit`, returning None instead of raising when the queue is full."""
        loop = self._loop
        if loop is None or self._closed:
            self._require_loop()  # raises the explanation
        assert loop is not None and self._work is not None and self._space is not None
        assert _running_loop() is loop, "submit() must be called on the replica's event loop"
        if len(self._pending) >= self.options.max_pending_calls:
            self._space.clear()
            return None
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append((call, future))
        self._work.set()
        return future

    async def propose(self, call: bytes) -> Any:
        """Send one encoded write call through the log, waiting for queue space first."""
        assert self._space is not None
        while True:
            try:
                future = self.submit(call)
            except Overloaded:
                await self._space.wait()
                continue  # submit raises ReplicaError once the replica stopped
            return await future

    async def read(self, query_: list[Any]) -> Any:
        """A linearizable read: ``query_`` is evaluated on the leader after a ReadIndex round."""
        assert self._clients is not None, "replica not started"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.options.deadline_s
        while True:
            try:
                async with self._clients.borrow() as client:
                    reply = await client.call(lambda rid: ReadRequest(rid, query_))
            except ClientError as exc:
                raise ReplicaError(str(exc)) from exc
            if reply.ok:
                return reply.result
            if reply.error not in BUSY_ERRORS or loop.time() > deadline:
                raise ReplicatedCallError(f"query {query_[1]!r} failed: {reply.error}")
            await asyncio.sleep(BUSY_BACKOFF_S)

    # -- the proposer --------------------------------------------------------------------

    async def _lane(self, lane: _Lane) -> None:
        assert self._work is not None and self._space is not None
        pending = self._pending
        limit = self.options.max_batch_calls
        while True:
            while not pending:
                self._work.clear()
                await self._work.wait()
            batch = [pending.popleft() for _ in range(min(limit, len(pending)))]
            self._space.set()
            try:
                values, errors = await self._send_batch(lane, [call for call, _ in batch])
            except ReplicaError as exc:
                _fail(batch, str(exc))
                continue
            except asyncio.CancelledError:
                _fail(batch, "the replica stopped with the call in flight (applied or not)")
                raise
            _resolve(batch, values, errors)

    async def _send_batch(self, lane: _Lane, calls: list[bytes]) -> tuple[list[Any], list[Any]]:
        client = lane.client
        op = [time.time_ns() // 1_000_000, _pack_calls(calls)]
        for _ in range(SESSION_REOPENS):
            if lane.session == 0:
                lane.session, lane.seq = await self._open_session(client), 0
            lane.seq += 1
            result = await self._submit_command(client, SessionCommand(lane.session, lane.seq, op))
            if result == SESSION_EXPIRED:
                lane.session = 0  # an expired session never applied the command: redo
                continue
            values, errors = _DECODE(result)
            return values, errors
        raise ReplicaError("the group keeps expiring this replica's sessions")

    async def _open_session(self, client: AsyncClient) -> int:
        session = await self._submit_command(client, SessionCommand(0, 0, OPEN_SESSION))
        if not isinstance(session, int) or session <= 0:
            raise ReplicaError(f"open_session answered {session!r}")
        return session

    async def _submit_command(self, client: AsyncClient, command: SessionCommand) -> Any:
        """One command through the log, resent as is while the leader is busy."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.options.deadline_s
        while True:
            try:
                reply = await client.call(functools.partial(ClientRequest, command=command))
            except ClientError as exc:
                raise ReplicaError(str(exc)) from exc
            if reply.ok:
                return reply.result
            if reply.error not in BUSY_ERRORS or loop.time() > deadline:
                raise ReplicaError(f"the leader refused the batch: {reply.error}")
            await asyncio.sleep(BUSY_BACKOFF_S)

    def _require_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None or self._closed:
            raise ReplicaError(
                f"replica {self.self_id} is not running; start it with `with Replica(...)`, "
                "`async with Replica(...)` or start()/start_async()"
            )
        return self._loop


def _raft_factory(snapshot_threshold_entries: int) -> NodeFactory:
    """The ``pnyx serve`` Raft tuning, with the replica's own snapshot threshold."""
    config = RaftConfig(
        **{**RAFT_RUNTIME_CONFIG_FIELDS, "snapshot_threshold_entries": snapshot_threshold_entries}
    )

    def make_node(node_id: int, peers: tuple[int, ...], rng: Rng, durable: DurableState) -> Node:
        return RaftNode(node_id, peers, rng, durable, config)

    return make_node


def _fail(batch: list[_Pending], message: str) -> None:
    for _, future in batch:
        if not future.done():
            future.set_exception(ReplicaError(message))


async def _bounded_step(coro: Coroutine[Any, Any, None], bound_s: float, what: str) -> list[str]:
    """Run one step of a stop within its bound; what went wrong (empty when nothing did)."""
    try:
        await run_bounded(coro, bound_s, what)
    except TimeoutError as exc:
        log.error("replica_stop_step_stuck %s", exc)
        return [str(exc)]
    except Exception as exc:  # report and go on: the next steps must still run
        log.exception("replica_stop_step_failed %s", what)
        return [f"{what} failed: {exc!r}"]
    return []


def _resolve(batch: list[_Pending], values: list[Any], errors: list[Any]) -> None:
    failed = {position: message for position, message in errors}
    for position, (_, future) in enumerate(batch):
        if future.done():
            continue  # the caller gave up (cancelled); the call was applied regardless
        if position in failed:
            future.set_exception(ReplicatedCallError(failed[position]))
        else:
            future.set_result(values[position])


def _replica_of(obj: ReplicatedObject) -> Replica:
    replica = obj._pnyx_replica
    if replica is None:
        raise ReplicaError(
            f"this {type(obj).__name__} is not hosted by a replica; pass it to "
            "Replica(obj, self_id, members) and start the replica"
        )
    return replica


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class _ClientPool:
    """Connections to the group, one per concurrent caller.

    An :class:`AsyncClient` retries by dropping its connection, which would fail every
    other call sharing it; so each lane and each concurrent read gets its own.
    """

    def __init__(
        self,
        members: Mapping[int, Address],
        message_types: tuple[type[Message], ...],
        options: ReplicaOptions,
    ) -> None:
        self._members = members
        self._message_types = message_types
        self._options = options
        self._idle: list[AsyncClient] = []
        self._all: list[AsyncClient] = []

    def new(self) -> AsyncClient:
        """A connection of its own (closed with the pool)."""
        client = AsyncClient(
            self._members,
            self._message_types,
            request_timeout_s=self._options.request_timeout_s,
            deadline_s=self._options.deadline_s,
        )
        self._all.append(client)
        return client

    @contextlib.asynccontextmanager
    async def borrow(self) -> AsyncIterator[AsyncClient]:
        """An idle connection (or a new one) for the duration of one call."""
        client = self._idle.pop() if self._idle else self.new()
        try:
            yield client
        finally:
            if len(self._idle) < self._options.max_inflight_batches:
                self._idle.append(client)
            else:
                self._all.remove(client)
                await client.close()

    async def close(self) -> None:
        """Close every connection (all at once: each close is bounded on its own)."""
        clients, self._all = self._all, []
        self._idle.clear()
        results = await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                log.warning("client_close_failed error=%r", result)


__all__ = [
    "BoundCall",
    "ObjectStateMachine",
    "Overloaded",
    "Replica",
    "ReplicaError",
    "ReplicaOptions",
    "ReplicatedCallError",
    "ReplicatedMethod",
    "ReplicatedObject",
    "query",
    "replicated",
]

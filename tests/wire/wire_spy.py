"""What a simulated protocol sends and persists, checked against the real runtime's codecs.

The simulator hands messages and durable writes over as Python objects; real processes
encode them (:func:`pnyx.runtime.transport.make_wire_codec` with the frame format of
:mod:`pnyx.runtime.framing` on the wire, :class:`pnyx.runtime.wal.PersistCodec` in the
WAL).  :func:`spied` wraps a definition's node and client factories so that every batch a
process hands out is checked on its way: the message's type must be one the receiving
connection accepts (its :class:`~pnyx.sim.spec.RuntimeDef` lists), and the message or
persist operation must come back from the codec carrying the same data.  With
``deliver_decoded`` the run then continues with the decoded values, as on real processes
(node-bound messages and durable writes; replies reach the simulator's clients as sent,
since those stand in for the real client libraries, which convert replies themselves).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import msgspec

from pnyx.core import ClientReply, Codec, Message, Node, PersistOp, Ready, Send, is_client
from pnyx.runtime.framing import FrameDecoder, encode_frame
from pnyx.runtime.transport import make_wire_codec
from pnyx.runtime.wal import PersistCodec
from pnyx.sim.spec import ProtocolDef, RuntimeDef
from tests.wire.strategies import is_fully_typed

MAX_PROBLEMS = 20
"""Problems kept per run (the first ones; enough to name every broken type)."""


def wire_codec(runtime: RuntimeDef) -> Codec[Message]:
    """The codec of a real node's connections (and of its clients): the protocol's
    message types plus ``ClientReply`` and the runtime's control messages."""
    return make_wire_codec((*runtime.message_types, ClientReply))


def wal_codec(runtime: RuntimeDef) -> PersistCodec:
    """The op codec a real node's WAL uses (as ``NodeRunner.for_protocol`` builds it)."""
    return PersistCodec(runtime.entry_type, runtime.record_types)


def over_the_wire(codec: Codec[Message], msg: Message) -> Message:
    """``msg`` framed, split by a frame decoder and decoded, as a receiving node sees it."""
    payloads = FrameDecoder().feed(encode_frame(codec.encode(msg)))
    if len(payloads) != 1:
        raise AssertionError(f"one frame of {type(msg).__name__} gave {len(payloads)} payloads")
    return codec.decode(payloads[0])


def through_the_wal(codec: PersistCodec, op: PersistOp) -> PersistOp:
    """``op`` written and read back by the WAL's op codec, as a restarting node sees it."""
    return codec.decode(codec.encode(op))


def unfaithful(sent: Any, got: Any) -> str:
    """Why ``got`` (decoded) does not carry what ``sent`` did; empty when it does.

    The type must be the same and the msgpack data equal; where the type has no ``Any``
    part the decoded value must also equal the sent one (an ``Any`` part decodes as plain
    msgpack data, which the receiving code converts itself)."""
    if type(got) is not type(sent):
        return f"sent a {type(sent).__name__}, decoded a {type(got).__name__}"
    if _plain(got) != _plain(sent):
        return f"data changed: sent {sent!r}, decoded {got!r}"
    if is_fully_typed(type(sent)) and got != sent:
        return f"sent {sent!r}, decoded {got!r}"
    return ""


def _plain(value: Any) -> Any:
    return msgspec.msgpack.decode(msgspec.msgpack.encode(value))


@dataclasses.dataclass
class WireLog:
    """What the processes of one run sent and persisted, and what did not check out."""

    runtime: RuntimeDef
    sim_only: frozenset[type[Message]] = frozenset()
    """Types the simulator's stand-ins exchange that real processes never see."""
    sent: dict[tuple[str, str], int] = dataclasses.field(default_factory=dict)
    """(route, type name) -> count; route is ``peer``, ``to-client`` or ``from-client``."""
    persisted: dict[str, int] = dataclasses.field(default_factory=dict)
    """Persist op type name (with the entry or record type) -> count."""
    problems: list[str] = dataclasses.field(default_factory=list)

    def problem(self, text: str) -> None:
        """Keep ``text`` (up to :data:`MAX_PROBLEMS`)."""
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(text)

    def accepted(self, route: str) -> tuple[type[Message], ...]:
        """The types a real connection of ``route`` accepts."""
        if route == "peer":
            return self.runtime.peer_message_types
        if route == "from-client":
            return self.runtime.client_message_types
        if route == "to-client":
            return (*self.runtime.message_types, ClientReply)
        return ()


def route_of(src: int, dst: int) -> str:
    """``peer``, ``to-client`` or ``from-client`` for a message from ``src`` to ``dst``."""
    if is_client(src):
        return "from-client" if not is_client(dst) else "client-to-client"
    return "to-client" if is_client(dst) else "peer"


class _Checker:
    """Checks (and with ``deliver_decoded`` replaces) each batch a process hands out."""

    def __init__(self, log: WireLog, deliver_decoded: bool) -> None:
        self.log = log
        self.deliver_decoded = deliver_decoded
        self.codec = wire_codec(log.runtime)
        self.wal = wal_codec(log.runtime)

    def batch(self, src: int, ready: Ready) -> None:
        ready.send = [self._send(src, send) for send in ready.send]
        ready.persist = [self._persist(src, op) for op in ready.persist]

    def _send(self, src: int, send: Send) -> Send:
        msg, log = send.msg, self.log
        route = route_of(src, send.to)
        key = (route, type(msg).__name__)
        log.sent[key] = log.sent.get(key, 0) + 1
        if type(msg) in log.sim_only:
            return send
        if type(msg) not in log.accepted(route):
            log.problem(f"{route} {type(msg).__name__} from {src} is not declared: {msg!r}")
            return send
        try:
            got = over_the_wire(self.codec, msg)
        except (msgspec.MsgspecError, ValueError, TypeError, OverflowError) as exc:
            log.problem(f"{route} {type(msg).__name__} from {src} refused by the codec: {exc}")
            return send
        why = unfaithful(msg, got)
        if why:
            log.problem(f"{route} {type(msg).__name__} from {src}: {why}")
        if self.deliver_decoded and route in ("peer", "from-client"):
            return Send(send.to, got)
        return send

    def _persist(self, src: int, op: PersistOp) -> PersistOp:
        log = self.log
        name = type(op).__name__
        log.persisted[name] = log.persisted.get(name, 0) + 1
        try:
            got = through_the_wal(self.wal, op)
        except (msgspec.MsgspecError, ValueError, TypeError, OverflowError) as exc:
            log.problem(f"persist {name} of {src} refused by the WAL codec: {exc}: {op!r}")
            return op
        why = unfaithful(op, got)
        if why:
            log.problem(f"persist {name} of {src}: {why}")
        return got if self.deliver_decoded else op


def _spying(factory: Callable[..., Node], checker: _Checker) -> Callable[..., Node]:
    def make(*args: Any) -> Node:
        node = factory(*args)
        take = node.ready

        def ready() -> Ready:
            batch = take()
            checker.batch(node.node_id, batch)
            return batch

        node.ready = ready  # type: ignore[method-assign]
        return node

    return make


def spied(
    spec: ProtocolDef,
    *,
    deliver_decoded: bool,
    runtime_nodes: bool = False,
    sim_only: frozenset[type[Message]] = frozenset(),
) -> tuple[ProtocolDef, WireLog]:
    """``spec`` with its nodes and clients checked (see the module docstring), and the log
    the run fills.  ``runtime_nodes``: nodes from the real processes' factory."""
    runtime = spec.runtime
    if runtime is None:
        raise ValueError(f"{spec.name} has no RuntimeDef: it does not run as real processes")
    log = WireLog(runtime, sim_only)
    checker = _Checker(log, deliver_decoded)
    make_node = (runtime.make_node or spec.make_node) if runtime_nodes else spec.make_node
    spec = dataclasses.replace(
        spec,
        make_node=_spying(make_node, checker),
        make_client=_spying(spec.make_client, checker),
    )
    return spec, log

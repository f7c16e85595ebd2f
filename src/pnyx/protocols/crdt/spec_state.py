"""Simulator specs for the state-based CRDTs: ``crdt-counter``, ``crdt-set``, ``crdt-map``.

Replicas (:class:`~pnyx.protocols.crdt.replica.CrdtReplica`) apply random operations sent
by simulated clients and sync by delta-interval anti-entropy under every fault.  Each
applied operation reaches the monitor (``Apply`` of its log entry) with its causal past
(the op ids its replica had seen), so the monitor can state what the value *must* be
without trusting any merge.  After heal, the run ends once every live replica has
received every op; the monitor then checks, per replica, the family's intent (what the
value must be given the ops and their causality) and then strong eventual convergence
(equal state, equal value).  During the heal phase it also compares every two replicas
that have received the same ops.

Mutants: ``crdt-counter-broken`` (G-Counter merge sums entries instead of taking the max)
and ``crdt-set-broken`` (the add-wins set is in fact remove-wins).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Self

from pnyx.core import Apply, EventType, HistoryEvent, OneAtATimeClient, Restore, Rng
from pnyx.protocols.crdt import (
    AWORSet,
    CausalContext,
    Dot,
    GCounter,
    GSet,
    LWWRegister,
    ORMap,
    PNCounter,
    ReplicaId,
    RWORSet,
    StateCRDT,
    TwoPSet,
)
from pnyx.protocols.crdt.messages import ClientOp, LocalOp
from pnyx.protocols.crdt.replica import Bundle, CrdtReplica, OpHandler
from pnyx.sim.spec import Monitor, ProtocolDef, Violation, World

TIMEOUT_TICKS = 10
"""Ticks without a reply after which a client records ``info`` and moves on."""
MAX_THINK_TICKS = 6
"""Upper bound on a client's idle ticks between two operations."""
ELEMENTS = 4
"""Set elements / map keys are drawn from ``range(ELEMENTS)``: small, so ops collide."""
MAX_AMOUNT = 5


@dataclass(frozen=True)
class OpRecord:
    """One applied op as the monitor knows it."""

    op_id: Dot
    op: tuple[Any, ...]
    past: CausalContext
    result: Any


IntentCheck = Callable[[dict[str, Any], list[OpRecord]], str | None]
"""``(replica value, ops it has received) -> what is wrong`` (None: intent holds)."""


@dataclass(frozen=True)
class Family:
    """A type family: its parts, its random ops, how they apply, and its intent check."""

    name: str
    parts: Callable[[ReplicaId], dict[str, StateCRDT]]
    draw_op: Callable[[Rng], list[Any]]
    apply_op: OpHandler
    intent: IntentCheck
    intent_prop: Callable[[str], str]
    """Property name of an intent failure, from its description."""


def _pick(rng: Rng, options: tuple[Any, ...]) -> Any:
    return options[rng.randrange(0, len(options))]


def _op(op: Any, arity: int) -> tuple[Any, ...]:
    if not isinstance(op, list | tuple) or len(op) != arity:
        raise ValueError(f"op must be a list of {arity} items, got {op!r}")
    return tuple(op)


def _maximal(group: list[OpRecord]) -> list[OpRecord]:
    """Ops of ``group`` that no other op of the group has in its causal past."""
    return [o for o in group if not any(o.op_id in p.past for p in group if p is not o)]


# -- counters ----------------------------------------------------------------------------


def _counter_parts(replica: ReplicaId) -> dict[str, StateCRDT]:
    return {"g": GCounter(replica), "pn": PNCounter(replica)}


def _counter_draw(rng: Rng) -> list[Any]:
    kind, part = _pick(rng, (("inc", "g"), ("inc", "pn"), ("dec", "pn")))
    return [kind, part, rng.randrange(1, MAX_AMOUNT + 1)]


def _counter_apply(state: Bundle, op: Any) -> tuple[dict[str, StateCRDT], Any]:
    kind, part, amount = _op(op, 3)
    target = state.parts.get(part)
    if kind == "inc" and isinstance(target, GCounter | PNCounter):
        return {part: target.increment(amount)}, None
    if kind == "dec" and isinstance(target, PNCounter):
        return {part: target.decrement(amount)}, None
    raise ValueError(f"unknown counter op {op!r}")


def _counter_intent(value: dict[str, Any], ops: list[OpRecord]) -> str | None:
    expected = {"g": 0, "pn": 0}
    for record in ops:
        kind, part, amount = record.op
        expected[part] += amount if kind == "inc" else -amount
    for part, want in expected.items():
        if value[part] != want:
            return f"counter {part!r} reads {value[part]}, ops sum to {want} ({len(ops)} ops)"
    return None


COUNTER = Family(
    "counter",
    _counter_parts,
    _counter_draw,
    _counter_apply,
    _counter_intent,
    lambda _detail: "counter-intent",
)

# -- sets --------------------------------------------------------------------------------

_SET_OPS = (
    ("add", "aw"),
    ("rm", "aw"),
    ("add", "rw"),
    ("rm", "rw"),
    ("add", "2p"),
    ("rm", "2p"),
    ("add", "g"),
)


def _set_parts(replica: ReplicaId) -> dict[str, StateCRDT]:
    return {
        "aw": AWORSet(replica),
        "rw": RWORSet(replica),
        "2p": TwoPSet(replica),
        "g": GSet(replica),
    }


def _set_draw(rng: Rng) -> list[Any]:
    kind, part = _pick(rng, _SET_OPS)
    return [kind, part, rng.randrange(0, ELEMENTS)]


def _set_apply(state: Bundle, op: Any) -> tuple[dict[str, StateCRDT], Any]:
    kind, part, element = _op(op, 3)
    target = state.parts.get(part)
    if kind == "add" and isinstance(target, AWORSet | RWORSet | TwoPSet | GSet):
        return {part: target.add(element)}, None
    if kind == "rm" and isinstance(target, AWORSet | RWORSet | TwoPSet):
        return {part: target.remove(element)}, None
    raise ValueError(f"unknown set op {op!r}")


def _by_target(ops: list[OpRecord], key: Callable[[OpRecord], Any]) -> dict[Any, list[OpRecord]]:
    groups: dict[Any, list[OpRecord]] = {}
    for record in ops:
        groups.setdefault(key(record), []).append(record)
    return groups


def _expected_sets(ops: list[OpRecord]) -> dict[str, set[Any]]:
    """The set each part must hold, from the ops and their causal pasts."""
    expected: dict[str, set[Any]] = {"aw": set(), "rw": set(), "2p": set(), "g": set()}
    groups = _by_target(ops, lambda r: (r.op[1], r.op[2]))
    for (part, element), group in sorted(groups.items()):
        kinds = [r.op[0] for r in _maximal(group)]
        if part == "aw":
            present = "add" in kinds  # add-wins: some add no remove has seen
        elif part == "rw":
            present = bool(kinds) and all(k == "add" for k in kinds)  # remove-wins
        elif part == "2p":
            present = all(r.op[0] == "add" for r in group)
        else:
            present = True
        if present:
            expected[part].add(element)
    return expected


def _set_intent(value: dict[str, Any], ops: list[OpRecord]) -> str | None:
    expected = _expected_sets(ops)
    for part in ("aw", "rw", "2p", "g"):
        have = set(value[part])
        missing = expected[part] - have
        if missing:
            return f"{part}: missing {sorted(missing)} that must survive (holds {sorted(have)})"
        extra = have - expected[part]
        if extra:
            return f"{part}: holds {sorted(extra)} that were removed (holds {sorted(have)})"
    return None


def _set_prop(detail: str) -> str:
    if detail.startswith("aw: missing"):
        return "add-wins"
    if detail.startswith("rw: holds"):
        return "remove-wins"
    return "set-intent"


SET = Family("set", _set_parts, _set_draw, _set_apply, _set_intent, _set_prop)

# -- maps --------------------------------------------------------------------------------

_MAP_OPS = ("madd", "madd", "mrm", "mdel", "rset", "rset", "rdel", "lww")


def _map_parts(replica: ReplicaId) -> dict[str, StateCRDT]:
    return {
        "m": ORMap(replica, "orset"),
        "r": ORMap(replica, "mvreg"),
        "lww": LWWRegister(replica),
    }


def _map_draw(rng: Rng) -> list[Any]:
    kind = _pick(rng, _MAP_OPS)
    return [kind, rng.randrange(0, ELEMENTS), rng.randrange(0, ELEMENTS)]


def _map_apply(state: Bundle, op: Any) -> tuple[dict[str, StateCRDT], Any]:
    kind, key, arg = _op(op, 3)
    m, r, lww = state.parts["m"], state.parts["r"], state.parts["lww"]
    assert isinstance(m, ORMap) and isinstance(r, ORMap) and isinstance(lww, LWWRegister)
    if kind == "madd":
        return {"m": m.update(key, lambda s: s.add(arg))}, None
    if kind == "mrm":
        return {"m": m.update(key, lambda s: s.remove(arg))}, None
    if kind == "mdel":
        return {"m": m.remove(key)}, None
    if kind == "rset":
        return {"r": r.update(key, lambda reg: reg.write(arg))}, None
    if kind == "rdel":
        return {"r": r.remove(key)}, None
    if kind == "lww":
        delta = lww.set([key, arg])
        return {"lww": delta}, delta.timestamp
    raise ValueError(f"unknown map op {op!r}")


def _expected_map_sets(ops: list[OpRecord]) -> dict[Any, frozenset[Any]]:
    by_key = _by_target([o for o in ops if o.op[0] in ("madd", "mrm", "mdel")], lambda o: o.op[1])
    out: dict[Any, frozenset[Any]] = {}
    for key, group in sorted(by_key.items()):
        present = set()
        for element in sorted({o.op[2] for o in group if o.op[0] != "mdel"}):
            relevant = [o for o in group if o.op[0] == "mdel" or o.op[2] == element]
            if any(o.op[0] == "madd" for o in _maximal(relevant)):
                present.add(element)
        if present:
            out[key] = frozenset(present)
    return out


def _expected_map_registers(ops: list[OpRecord]) -> dict[Any, list[Any]]:
    by_key = _by_target([o for o in ops if o.op[0] in ("rset", "rdel")], lambda o: o.op[1])
    out: dict[Any, list[Any]] = {}
    for key, group in sorted(by_key.items()):
        values = sorted(o.op[2] for o in _maximal(group) if o.op[0] == "rset")
        if values:
            out[key] = values
    return out


def _expected_lww(ops: list[OpRecord]) -> Any:
    writes = [o for o in ops if o.op[0] == "lww"]
    if not writes:
        return None
    last = max(writes, key=lambda o: (o.result, o.op_id[0]))
    return [last.op[1], last.op[2]]


def _map_intent(value: dict[str, Any], ops: list[OpRecord]) -> str | None:
    want_sets = _expected_map_sets(ops)
    if value["m"] != want_sets:
        return f"map of sets: {value['m']} but the ops give {want_sets}"
    have_regs = {k: sorted(v) for k, v in value["r"].items()}
    want_regs = _expected_map_registers(ops)
    if have_regs != want_regs:
        return f"map of registers: {have_regs} but the ops give {want_regs}"
    want_lww = _expected_lww(ops)
    if value["lww"] != want_lww:
        return f"lww register: {value['lww']!r} but the last write is {want_lww!r}"
    return None


MAP = Family("map", _map_parts, _map_draw, _map_apply, _map_intent, lambda _d: "map-intent")

# -- mutants -----------------------------------------------------------------------------


class _SummingGCounter(GCounter):
    """Broken on purpose: merge adds the other replica's entries instead of taking the max
    (not idempotent: a re-delivered or re-shipped delta counts twice)."""

    def absorb(self, other: Self) -> bool:
        self._check_same(other)
        changed = False
        for replica, count in other.counts.items():
            if count:
                self.counts[replica] = self.counts.get(replica, 0) + count
                changed = True
        return changed


class _RemoveWinsAsAddWins(RWORSet):
    """Broken on purpose: a remove-wins set standing where an add-wins set must be."""


def _broken_counter_parts(replica: ReplicaId) -> dict[str, StateCRDT]:
    return {"g": _SummingGCounter(replica), "pn": PNCounter(replica)}


def _broken_set_parts(replica: ReplicaId) -> dict[str, StateCRDT]:
    parts = _set_parts(replica)
    parts["aw"] = _RemoveWinsAsAddWins(replica)
    return parts


COUNTER_BROKEN = Family(
    "counter-broken",
    _broken_counter_parts,
    _counter_draw,
    _counter_apply,
    _counter_intent,
    lambda _detail: "counter-intent",
)
SET_BROKEN = Family("set-broken", _broken_set_parts, _set_draw, _set_apply, _set_intent, _set_prop)

# -- client ------------------------------------------------------------------------------


class CrdtClient(OneAtATimeClient[ClientOp]):
    """Sends one random op at a time to a random replica (implements :class:`pnyx.core.Node`)."""

    def __init__(self, client_id: int, node_ids: tuple[int, ...], rng: Rng, family: Family) -> None:
        super().__init__(
            client_id, node_ids, rng, timeout_ticks=TIMEOUT_TICKS, max_think_ticks=MAX_THINK_TICKS
        )
        self._family = family

    def _begin_op(self, request_id: int) -> tuple[int, ClientOp, HistoryEvent]:
        op = ClientOp(request_id, self._family.draw_op(self._rng))  # draws before the node
        target = self.pick_node()
        return target, op, HistoryEvent(self.node_id, "invoke", self._family.name, op.op)

    def _completion(self, outcome: EventType, op: ClientOp, result: Any) -> HistoryEvent:
        return HistoryEvent(self.node_id, outcome, self._family.name, op.op, result)


# -- monitor -----------------------------------------------------------------------------


class CrdtMonitor(Monitor):
    """Strong eventual convergence and the family's intent, from the applied ops.

    A node stopped on a damaged disk is faulty: ops only it had may be lost, and it owes
    nothing.  Every op applied at any other node must reach every live replica.
    """

    def __init__(self, node_ids: tuple[int, ...], family: Family) -> None:
        self.node_ids = node_ids
        self.family = family
        self.ops: dict[Dot, OpRecord] = {}
        self._found: Violation | None = None

    def on_apply(
        self, world: World, node_id: int, item: Apply | Restore, result: Any
    ) -> Violation | None:
        if not isinstance(item, Apply) or not isinstance(item.command, LocalOp):
            return Violation("log", f"node {node_id} applied unexpected {item!r}")
        entry = item.command
        op_id = (entry.op_id[0], entry.op_id[1])
        if op_id[0] != str(node_id):
            return Violation("no-creation", f"node {node_id} applied op {op_id} of another node")
        known = self.ops.get(op_id)
        record = OpRecord(op_id, tuple(entry.op), CausalContext.from_wire(entry.past), entry.result)
        if known is None:
            self.ops[op_id] = record
        elif known != record:
            return Violation("op-id-reuse", f"op id {op_id} names {known.op} and {record.op}")
        return None

    def _replicas(self, world: World) -> dict[int, CrdtReplica | None]:
        out: dict[int, CrdtReplica | None] = {}
        for node_id in self.node_ids:
            if world.stopped(node_id):
                continue
            node = world.node(node_id)
            out[node_id] = node if isinstance(node, CrdtReplica) else None
        return out

    def _owed(self, world: World) -> set[Dot]:
        """Ops every live replica must end up with (those of nodes not stopped)."""
        stopped = {str(n) for n in self.node_ids if world.stopped(n)}
        return {op_id for op_id in self.ops if op_id[0] not in stopped}

    def liveness(self, world: World) -> str | None:
        replicas = self._replicas(world)
        if not replicas:
            return None
        self._compare_same_updates(replicas)
        owed = self._owed(world)
        for node_id, replica in replicas.items():
            if replica is None:
                return f"node {node_id} is down"
            seen = replica.state.ops
            missing = [op_id for op_id in owed if op_id not in seen]
            if missing:
                return f"node {node_id} lacks {len(missing)} ops, e.g. {sorted(missing)[:3]}"
        first = next(iter(replicas.values()))
        assert first is not None
        for node_id, replica in replicas.items():
            assert replica is not None
            if replica.state.ops != first.state.ops:
                return f"node {node_id} has received other ops than node {first.node_id}"
        return None

    def _compare_same_updates(self, replicas: dict[int, CrdtReplica | None]) -> None:
        live = [(n, r) for n, r in replicas.items() if r is not None]
        for i, (a, ra) in enumerate(live):
            for b, rb in live[i + 1 :]:
                if self._found is None and ra.state.ops == rb.state.ops:
                    self._found = _convergence(a, ra, b, rb)

    def at_end(self, world: World) -> Violation | None:
        replicas = {n: r for n, r in self._replicas(world).items() if r is not None}
        for node_id, replica in sorted(replicas.items()):
            violation = self._check_replica(node_id, replica)
            if violation is not None:
                return violation
        if self._found is not None:
            return self._found
        live = sorted(replicas.items())
        for (a, ra), (b, rb) in itertools.pairwise(live):
            found = _convergence(a, ra, b, rb)
            if found is not None:
                return found
        return None

    def _check_replica(self, node_id: int, replica: CrdtReplica) -> Violation | None:
        seen = replica.state.ops
        unknown = [d for d in seen.dots() if d not in self.ops]
        if unknown:
            return Violation("no-creation", f"node {node_id} holds unknown ops {unknown[:3]}")
        ops = [self.ops[d] for d in seen.dots()]
        problem = self.family.intent(replica.state.value(), ops)
        if problem is not None:
            prop = self.family.intent_prop(problem)
            return Violation(prop, f"node {node_id}: {problem}")
        return None


def _convergence(a: int, ra: CrdtReplica, b: int, rb: CrdtReplica) -> Violation | None:
    """A violation when two replicas that received the same ops differ."""
    if ra.state.ops != rb.state.ops:
        return Violation("convergence", f"nodes {a} and {b} received different ops after heal")
    if ra.state.value() != rb.state.value():
        return Violation(
            "convergence",
            f"nodes {a} and {b} received the same ops but read {ra.state.value()} "
            f"and {rb.state.value()}",
        )
    if ra.state != rb.state:
        return Violation("convergence", f"nodes {a} and {b}: same ops, different states")
    return None


# -- specs -------------------------------------------------------------------------------


def _make_spec(name: str, family: Family, summary: str, broken: bool = False) -> ProtocolDef:
    def template(replica: ReplicaId) -> Bundle:
        return Bundle(replica, family.parts(replica))

    def make_client(client_id: int, node_ids: tuple[int, ...], rng: Rng) -> CrdtClient:
        return CrdtClient(client_id, node_ids, rng, family)

    def make_monitor(node_ids: tuple[int, ...]) -> CrdtMonitor:
        return CrdtMonitor(node_ids, family)

    return ProtocolDef(
        name=name,
        summary=summary,
        make_node=functools.partial(CrdtReplica, template=template, apply_op=family.apply_op),
        make_client=make_client,
        make_monitor=make_monitor,
        default_nodes=3,
        default_clients=2,
        broken=broken,
    )


CRDT_COUNTER = _make_spec(
    "crdt-counter", COUNTER, "G-/PN-Counter replicas, delta-interval anti-entropy"
)
CRDT_SET = _make_spec(
    "crdt-set", SET, "add-wins/remove-wins OR-Sets, 2P-Set, G-Set, delta anti-entropy"
)
CRDT_MAP = _make_spec(
    "crdt-map", MAP, "OR-Map of OR-Sets and of MV-Registers, LWW register, delta anti-entropy"
)
CRDT_COUNTER_BROKEN = _make_spec(
    "crdt-counter-broken",
    COUNTER_BROKEN,
    "deliberately broken: G-Counter merge sums entries instead of max",
    broken=True,
)
CRDT_SET_BROKEN = _make_spec(
    "crdt-set-broken",
    SET_BROKEN,
    "deliberately broken: the add-wins OR-Set lets a concurrent remove win",
    broken=True,
)

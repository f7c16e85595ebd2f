"""Simulator specs for causal broadcast and the op-based CRDTs disseminated over it.

``causal-broadcast`` (and its broken variant ``causal-broadcast-broken``) checks the
broadcast itself: causal order of deliveries, no duplication, no creation, agreement
after heal.  The ``crdt-*`` specs run op-based CRDT replicas over it and add strong
eventual convergence and type-specific intent checks.
"""

from __future__ import annotations

from typing import Any

from pnyx.core import Apply, Restore
from pnyx.protocols.broadcast import CausalEntry, make_causal_node, make_unchecked_causal_node
from pnyx.protocols.broadcast.client import make_client
from pnyx.protocols.broadcast.spec import BroadcastMonitor
from pnyx.protocols.crdt.oplog.client import (
    make_counter_client,
    make_set_client,
    make_text_client,
)
from pnyx.protocols.crdt.oplog.messages import OpPayload
from pnyx.protocols.crdt.oplog.node import (
    CounterReplica,
    EditReplica,
    ReplicaFactory,
    SetReplica,
    make_counter_node,
    make_set_node,
)
from pnyx.protocols.crdt.oplog.orset import AddOp, RemoveOp
from pnyx.protocols.crdt.oplog.text import TextReplica, make_text_node
from pnyx.sim.spec import ProtocolDef, Violation, World


class CausalMonitor(BroadcastMonitor):
    """Causal order, no duplication, no creation (safety); agreement after heal (liveness).

    Messages are named by a key the client chose (its ``msg_id``/``edit_id``, which the
    history's ``invoke`` events list).  When a node delivers its own message ``m`` (the
    moment it broadcasts it), what it had delivered before is ``m``'s causal past; every
    node must have delivered all of it before delivering ``m``.  A restarted node replays
    its log, so its delivered set is per incarnation.  A node stopped on a damaged disk is
    faulty and owes nothing.
    """

    def __init__(self, node_ids: tuple[int, ...]) -> None:
        super().__init__(node_ids)
        self.past: dict[str, frozenset[str]] = {}
        """message key -> keys its origin had delivered before broadcasting it."""
        self.identity: dict[str, tuple[int, int, Any]] = {}
        """message key -> (origin, seq, payload) as first delivered."""

    def key_of(self, entry: CausalEntry) -> str:
        """The client-chosen name of a delivered message."""
        payload = entry.payload
        return str(payload[0]) if isinstance(payload, list | tuple) and payload else "?"

    def on_apply(
        self, world: World, node_id: int, item: Apply | Restore, result: Any
    ) -> Violation | None:
        if not isinstance(item, Apply) or not isinstance(item.command, CausalEntry):
            return Violation("no-creation", f"node {node_id} applied {item!r}")
        entry = item.command
        key = self.key_of(entry)
        mine = self.delivered[node_id]
        if key in mine:
            return Violation("no-duplication", f"node {node_id} delivered {key} twice")
        if not self._was_broadcast(world, key):
            return Violation("no-creation", f"node {node_id} delivered unknown {key}")
        ident = (entry.origin, entry.seq, entry.payload)
        first = self.identity.setdefault(key, ident)
        if first != ident:
            detail = f"node {node_id} delivered {key} as {ident}, first seen as {first}"
            return Violation("no-creation", detail)
        if entry.origin == node_id and key not in self.past:
            self.past[key] = frozenset(mine)
        missing = self.past.get(key, frozenset()) - mine
        if missing:
            return Violation(
                "causal-order",
                f"node {node_id} delivered {key} before {sorted(missing)[:3]}, which its origin "
                f"{entry.origin} had delivered before broadcasting it",
            )
        self._mark_delivered(node_id, key)
        return self.on_delivered(world, node_id, entry, key)

    def on_delivered(
        self, world: World, node_id: int, entry: CausalEntry, key: str
    ) -> Violation | None:
        """Hook for subclasses: ``entry`` passed the checks above and counts as delivered."""
        return None

    def owed(self, world: World) -> set[str]:
        """What every live node must have delivered once liveness is reached."""
        live = [n for n in self.node_ids if not world.stopped(n)]
        return set().union(*(self.ever[n] for n in live))


CAUSAL_BROADCAST = ProtocolDef(
    name="causal-broadcast",
    summary="reliable broadcast with vector-clock causal delivery (Birman-Schiper-Stephenson)",
    make_node=make_causal_node,
    make_client=make_client,
    make_monitor=CausalMonitor,
)

CAUSAL_BROADCAST_BROKEN = ProtocolDef(
    name="causal-broadcast-broken",
    summary="deliberately broken causal broadcast: delivers on arrival, no causal check",
    make_node=make_unchecked_causal_node,
    make_client=make_client,
    make_monitor=CausalMonitor,
    broken=True,
)


class OpCrdtMonitor(CausalMonitor):
    """Strong eventual convergence of op-based replicas, on top of :class:`CausalMonitor`.

    The monitor keeps a mirror replica per node, fed only by that node's delivery stream
    (the ``Apply`` items), so "replicas that delivered the same set of ops have the same
    value" is checked at every delivery, over the orders the simulator produced.  At the
    end every live node's own replica must equal its mirror and all of them agree; then
    :meth:`intent` checks the type's meaning.
    """

    make_replica: ReplicaFactory = CounterReplica

    def __init__(self, node_ids: tuple[int, ...]) -> None:
        super().__init__(node_ids)
        self.mirrors: dict[int, EditReplica] = {n: self.make_replica(str(n)) for n in node_ids}
        self.ops: dict[str, Any] = {}
        """edit key -> its op, as first delivered."""

    def key_of(self, entry: CausalEntry) -> str:
        payload = entry.payload
        return payload.edit_id if isinstance(payload, OpPayload) else "?"

    def liveness(self, world: World) -> str | None:
        missing = super().liveness(world)
        if missing is not None:
            return missing
        for node_id in self.node_ids:
            node = world.node(node_id)
            engine = getattr(node, "engine", None)
            if engine is not None and len(engine.entries) != len(self.delivered[node_id]):
                return f"node {node_id} has deliveries not yet durable"
        return None

    def on_restart(self, world: World, node_id: int) -> None:
        super().on_restart(world, node_id)
        self.mirrors[node_id] = self.make_replica(str(node_id))

    def on_delivered(
        self, world: World, node_id: int, entry: CausalEntry, key: str
    ) -> Violation | None:
        assert isinstance(entry.payload, OpPayload)
        op = entry.payload.op
        first = key not in self.ops
        if first:
            self.ops[key] = op
        mirror = self.mirrors[node_id]
        if first:
            self.on_first(node_id, key, op, mirror)
        else:
            mirror.effect(op, False)
        return self._converged(node_id)

    def on_first(self, node_id: int, key: str, op: Any, mirror: EditReplica) -> None:
        """An op delivered for the first time (at its origin): apply it to the mirror."""
        mirror.effect(op, False)

    def _converged(self, node_id: int) -> Violation | None:
        mine = self.delivered[node_id]
        value = self.mirrors[node_id].value()
        for other in self.node_ids:
            theirs = self.delivered[other]
            if other == node_id or len(theirs) != len(mine) or theirs != mine:
                continue
            other_value = self.mirrors[other].value()
            if other_value != value:
                return Violation(
                    "convergence",
                    f"nodes {node_id} and {other} delivered the same {len(mine)} ops but "
                    f"differ: {_short(value)} vs {_short(other_value)}",
                )
        return None

    def at_end(self, world: World) -> Violation | None:
        owed = self.owed(world)
        values: dict[int, Any] = {}
        for node_id in self.node_ids:
            node = world.node(node_id)
            if world.stopped(node_id) or node is None:
                continue
            if self.delivered[node_id] != owed:
                return Violation("agreement", f"node {node_id} did not deliver every op")
            value = node.value()  # type: ignore[attr-defined]
            mirrored = self.mirrors[node_id].value()
            if value != mirrored:
                return Violation(
                    "convergence",
                    f"node {node_id}'s replica {_short(value)} differs from the value of "
                    f"its deliveries {_short(mirrored)}",
                )
            values[node_id] = value
        if not values:
            return None
        first = next(iter(values.values()))
        if any(v != first for v in values.values()):
            return Violation("convergence", f"replicas differ after heal: {_short(values)}")
        return self.intent(owed, first)

    def intent(self, owed: set[str], value: Any) -> Violation | None:
        """The type's meaning, given every op owed to everyone and the converged value."""
        return None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 160 else text[:157] + "..."


class CounterMonitor(OpCrdtMonitor):
    """Op-based counter: the converged value is the sum of every delivered increment."""

    make_replica = CounterReplica

    def intent(self, owed: set[str], value: Any) -> Violation | None:
        total = sum(self.ops[key].amount for key in owed)
        if value != total:
            return Violation("intent", f"counter is {value}, the ops delivered sum to {total}")
        return None


class SetMonitor(OpCrdtMonitor):
    """Add-wins OR-Set: ``e`` is present iff some add of ``e`` is in the causal past of no
    remove of ``e`` (an add concurrent with a remove survives)."""

    make_replica = SetReplica

    def intent(self, owed: set[str], value: Any) -> Violation | None:
        adds: dict[str, list[str]] = {}
        removes: dict[str, list[str]] = {}
        for key in sorted(owed):
            op = self.ops[key]
            book = adds if isinstance(op, AddOp) else removes
            assert isinstance(op, AddOp | RemoveOp)
            book.setdefault(op.element, []).append(key)
        expected = {
            element
            for element, added in adds.items()
            if any(
                all(add not in self.past[rm] for rm in removes.get(element, ())) for add in added
            )
        }
        if value != expected:
            return Violation(
                "intent", f"set is {sorted(value)}, add-wins semantics give {sorted(expected)}"
            )
        return None


CRDT_OPCOUNTER = ProtocolDef(
    name="crdt-opcounter",
    summary="op-based counter over causal broadcast (convergence, value = sum of ops)",
    make_node=make_counter_node,
    make_client=make_counter_client,
    make_monitor=CounterMonitor,
    default_nodes=3,
    default_clients=2,
)

CRDT_OPSET = ProtocolDef(
    name="crdt-opset",
    summary="op-based add-wins OR-Set over causal broadcast (convergence, add wins)",
    make_node=make_set_node,
    make_client=make_set_client,
    make_monitor=SetMonitor,
    default_nodes=3,
    default_clients=3,
)


class TextMonitor(OpCrdtMonitor):
    """Op-based text: convergence plus the editing intent.

    From each op's first application (at its origin's mirror) the monitor learns which
    characters it inserted (every inserted character is unique), between which neighbours,
    and which characters it deleted.  At the end: the text holds exactly the inserted
    characters that no delivered op deleted; each insert's characters sit between its
    neighbours, in order; and a typing run (inserts by one replica, each right after the
    previous one, nothing else applied there in between) is not interleaved with any
    character whose op did not causally follow part of the run (Fugue's promise).
    """

    make_replica = TextReplica

    def __init__(self, node_ids: tuple[int, ...]) -> None:
        super().__init__(node_ids)
        self.inserted_by: dict[str, str] = {}
        """character -> key of the op that inserted it."""
        self.deleted_by: dict[str, set[str]] = {}
        self.chains: list[tuple[str, list[str]]] = []
        """(op key, [left neighbour,] inserted characters [, right neighbour])."""
        self.runs: list[tuple[list[str], list[str]]] = []
        """Typing runs: (op keys, characters in typing order)."""
        self._open_run: dict[int, tuple[int, int]] = {}
        """node -> (index in runs, position just after its last character)."""

    def on_restart(self, world: World, node_id: int) -> None:
        super().on_restart(world, node_id)
        self._open_run.pop(node_id, None)

    def on_delivered(
        self, world: World, node_id: int, entry: CausalEntry, key: str
    ) -> Violation | None:
        if key in self.ops:
            self._open_run.pop(node_id, None)  # another op applied here: a run ends
        return super().on_delivered(world, node_id, entry, key)

    def on_first(self, node_id: int, key: str, op: Any, mirror: EditReplica) -> None:
        before = mirror.value()
        mirror.effect(op, False)
        after = mirror.value()
        if len(after) > len(before):
            self._inserted(node_id, key, before, after)
        else:
            self._open_run.pop(node_id, None)
            gone = set(before) - set(after)
            if gone:
                self.deleted_by[key] = gone

    def _inserted(self, node_id: int, key: str, before: str, after: str) -> None:
        old = set(before)
        at = next(i for i, c in enumerate(after) if c not in old)
        chars = list(after[at : at + len(after) - len(before)])
        for char in chars:
            self.inserted_by[char] = key
        chain = ([after[at - 1]] if at else []) + chars
        if at + len(chars) < len(after):
            chain.append(after[at + len(chars)])
        self.chains.append((key, chain))
        run = self._open_run.get(node_id)
        if run is not None and run[1] == at:
            keys, typed = self.runs[run[0]]
            keys.append(key)
            typed.extend(chars)
            index = run[0]
        else:
            index = len(self.runs)
            self.runs.append(([key], chars))
        self._open_run[node_id] = (index, at + len(chars))

    def intent(self, owed: set[str], value: Any) -> Violation | None:
        text = str(value)
        where = {char: i for i, char in enumerate(text)}
        if len(where) != len(text):
            return Violation("intent", "a character appears twice in the converged text")
        inserted = {c for c, key in self.inserted_by.items() if key in owed}
        deleted = set().union(*(d for key, d in self.deleted_by.items() if key in owed))
        expected = inserted - deleted
        if set(where) != expected:
            lost, extra = sorted(expected - set(where)), sorted(set(where) - expected)
            return Violation(
                "intent", f"text lost {len(lost)} live characters, has {len(extra)} unexpected"
            )
        return self._order(owed, where) or self._interleaving(owed, text, where)

    def _order(self, owed: set[str], where: dict[str, int]) -> Violation | None:
        for key, chain in self.chains:
            if key not in owed:
                continue
            positions = [where[c] for c in chain if c in where]
            if positions != sorted(positions):
                return Violation("intent", f"insert {key} is out of place among its neighbours")
        return None

    def _interleaving(self, owed: set[str], text: str, where: dict[str, int]) -> Violation | None:
        for keys, typed in self.runs:
            if len(typed) < 2 or any(key not in owed for key in keys):
                continue
            run_keys, run_chars = set(keys), set(typed)
            positions = [where[c] for c in typed if c in where]
            if len(positions) < 2:
                continue
            for char in text[min(positions) : max(positions) + 1]:
                if char in run_chars:
                    continue
                past = self.past[self.inserted_by[char]]
                if run_keys.isdisjoint(past):
                    return Violation(
                        "interleaving",
                        f"{self.inserted_by[char]} (concurrent) landed inside the typing run "
                        f"{keys[0]}..{keys[-1]}",
                    )
        return None


CRDT_TEXT = ProtocolDef(
    name="crdt-text",
    summary="op-based Fugue text over causal broadcast (convergence, intent, no interleaving)",
    make_node=make_text_node,
    make_client=make_text_client,
    make_monitor=TextMonitor,
    default_nodes=3,
    default_clients=3,
)

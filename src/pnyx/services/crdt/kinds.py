"""The field kinds a document offers, their typed handles, and edits by name (control API).

Kinds (the name is what ``pnyx crdt edit KIND`` and the wire use):

========== ============================================ ==================================
kind       CRDT (``pnyx.protocols.crdt``)                handle (``doc.<accessor>(name)``)
========== ============================================ ==================================
text       ``FugueText`` (sequence, Fugue)              ``doc.text``: insert, delete
pncounter  ``PNCounter``                                ``doc.counter``: increment, decrement
gcounter   ``GCounter``                                 ``doc.gcounter``: increment
orset      ``AWORSet`` (add-wins)                       ``doc.set``: add, remove
rwset      ``RWORSet`` (remove-wins)                    ``doc.rwset``: add, remove
gset       ``GSet``                                     ``doc.gset``: add
2pset      ``TwoPSet``                                  ``doc.twopset``: add, remove
lww        ``LWWRegister``                              ``doc.register``: assign
mvreg      ``MVRegister``                               ``doc.mvregister``: assign
ormap      ``ORMap`` of ``mvreg`` values                ``doc.map``: assign(key, v), remove
========== ============================================ ==================================

Sync of the state-based kinds (:class:`StateField`): each field keeps a version vector
over its replicas' mutation counters (``(replica, seq)`` per local mutation).  A local
mutation's delta is pushed as ``["d", replica, seq, delta]``; a peer whose digest shows
an older version gets the deltas it lacks from a bounded in-memory buffer of recent
deltas per origin when that covers its gap, else the full state ``["s", version, state]``
(a join, so any state is a valid answer).  The text kind syncs by its own version vector
and ``encode_since``.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Self, TypeVar

import msgspec

from pnyx.protocols.crdt import (
    AWORSet,
    GCounter,
    GSet,
    LWWRegister,
    MVRegister,
    ORMap,
    PNCounter,
    RWORSet,
    TwoPSet,
)
from pnyx.protocols.crdt.state import StateCRDT, element_order
from pnyx.services.crdt.fields import FieldState, dominated

if TYPE_CHECKING:
    from pnyx.services.crdt.doc import CrdtDoc

T = TypeVar("T", bound=StateCRDT)

_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder()
MAX_BUFFERED_DELTAS = 1024
"""Recent deltas a state-based field keeps (all origins together) to answer lagging peers."""
MAX_DELTAS_PER_ANSWER = 256
"""A peer lacking more deltas than this gets the full state instead."""


def plain(value: Any) -> Any:
    """``value`` as plain msgpack/JSON-like data: sets become sorted lists, tuples lists."""
    if isinstance(value, frozenset | set):
        return [plain(v) for v in sorted(value, key=element_order)]
    if isinstance(value, tuple | list):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


class StateField(FieldState, Generic[T]):
    """A field holding a state-based CRDT, with a version vector over its mutations.

    Recent deltas are kept per origin (``(origin, seq)`` → payload, contiguous up to
    ``vv[origin]``, at most :data:`MAX_BUFFERED_DELTAS` in all, in memory only): a peer
    whose gap they cover gets those deltas, any other the full state.
    """

    def __init__(self, replica: str) -> None:
        super().__init__(replica)
        self.state: T = self.new_state(replica)
        self.vv: dict[str, int] = {}
        self._deltas: dict[str, deque[bytes]] = {}
        """Per origin, the payloads of its deltas ``vv[origin] - len + 1 .. vv[origin]``."""
        self._buffered = 0

    def new_state(self, replica: str) -> T:
        """The bottom state of this kind's CRDT."""
        raise NotImplementedError

    def version(self) -> dict[str, int]:
        return dict(self.vv)

    def updates_since(self, version: Mapping[str, int], max_bytes: int) -> list[bytes]:
        """The buffered deltas a replica at ``version`` lacks when they cover its whole gap
        (and are not many), else the full state."""
        if dominated(self.vv, version):
            return []
        payloads: list[bytes] = []
        for origin, counter in sorted(self.vv.items()):
            have = version.get(origin, 0)
            if counter <= have:
                continue
            buffered = self._deltas.get(origin, ())
            missing = counter - have
            if len(buffered) < missing or len(payloads) + missing > MAX_DELTAS_PER_ANSWER:
                return [self._full()]
            payloads.extend(list(buffered)[len(buffered) - missing :])
        return payloads

    def _full(self) -> bytes:
        return _ENCODER.encode(["s", self.vv, self.state.to_wire()])

    def mutate(self, mutation: Callable[[T], T]) -> bytes:
        """Apply a local mutation (which returns its delta); return the update payload."""
        delta = mutation(self.state)
        seq = self.vv.get(self.replica, 0) + 1
        self.vv[self.replica] = seq
        payload = _ENCODER.encode(["d", self.replica, seq, delta.to_wire()])
        self._remember(self.replica, payload)
        return payload

    def _remember(self, origin: str, payload: bytes) -> None:
        """Buffer the delta that just advanced ``vv[origin]`` by one (evicting old ones)."""
        self._deltas.setdefault(origin, deque()).append(payload)
        self._buffered += 1
        while self._buffered > MAX_BUFFERED_DELTAS:
            longest = max(sorted(self._deltas), key=lambda o: len(self._deltas[o]))
            self._deltas[longest].popleft()
            self._buffered -= 1

    def _forget(self, origin: str) -> None:
        """``vv[origin]`` jumped (a full state): its buffered deltas no longer reach it."""
        dropped = self._deltas.pop(origin, None)
        if dropped:
            self._buffered -= len(dropped)

    def apply(self, payload: bytes) -> bool:
        tag, origin_or_vv, *rest = _decode_update(payload)
        if tag == "d" and len(rest) == 2:
            return self._apply_delta(origin_or_vv, rest[0], rest[1])
        if tag == "s" and len(rest) == 1:
            return self._apply_state(origin_or_vv, rest[0])
        raise ValueError(f"unknown update {payload[:64]!r}")

    def _apply_delta(self, origin: Any, seq: Any, wire: Any) -> bool:
        if not isinstance(origin, str) or not origin:
            raise ValueError(f"delta origin must be a replica name, got {origin!r}")
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
            raise ValueError(f"delta seq must be an int >= 1, got {seq!r}")
        changed = self._absorb(wire)
        if self.vv.get(origin, 0) == seq - 1:
            self.vv[origin] = seq
            self._remember(origin, _ENCODER.encode(["d", origin, seq, wire]))
            changed = True
        return changed

    def _apply_state(self, vv: Any, wire: Any) -> bool:
        checked = _check_version(vv)
        changed = self._absorb(wire)
        for replica, counter in checked.items():
            if counter > self.vv.get(replica, 0):
                self.vv[replica] = counter
                self._forget(replica)
                changed = True
        return changed

    def _absorb(self, wire: Any) -> bool:
        try:
            other = type(self.state).from_wire(self.replica, wire)
            return bool(self.state.absorb(other))
        except (TypeError, ValueError) as exc:  # WireError is a ValueError
            raise ValueError(f"bad {self.kind} state: {exc}") from exc

    def encode(self) -> bytes:
        return self._full()

    @classmethod
    def decode(cls, replica: str, data: bytes) -> Self:
        field = cls(replica)
        field.apply(data)
        return field

    def value(self) -> Any:
        return plain(self.state.value())


def _decode_update(payload: bytes) -> list[Any]:
    try:
        raw = _DECODER.decode(payload)
    except msgspec.MsgspecError as exc:
        raise ValueError(f"update is not msgpack: {exc}") from exc
    if not isinstance(raw, list) or len(raw) < 3:
        raise ValueError(f"update must be a list ['d'|'s', ...], got {raw!r:.100}")
    return raw


def _check_version(vv: Any) -> dict[str, int]:
    if not isinstance(vv, dict) or not all(
        isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 0
        for k, v in vv.items()
    ):
        raise ValueError(f"version must map replica names to counters, got {vv!r:.100}")
    return vv


class PNCounterField(StateField[PNCounter]):
    """``pncounter``: a counter that goes up and down."""

    kind: ClassVar[str] = "pncounter"

    def new_state(self, replica: str) -> PNCounter:
        return PNCounter(replica)


class GCounterField(StateField[GCounter]):
    """``gcounter``: a grow-only counter."""

    kind: ClassVar[str] = "gcounter"

    def new_state(self, replica: str) -> GCounter:
        return GCounter(replica)


class ORSetField(StateField[AWORSet]):
    """``orset``: add-wins observed-remove set."""

    kind: ClassVar[str] = "orset"

    def new_state(self, replica: str) -> AWORSet:
        return AWORSet(replica)


class RWSetField(StateField[RWORSet]):
    """``rwset``: remove-wins observed-remove set."""

    kind: ClassVar[str] = "rwset"

    def new_state(self, replica: str) -> RWORSet:
        return RWORSet(replica)


class GSetField(StateField[GSet]):
    """``gset``: grow-only set."""

    kind: ClassVar[str] = "gset"

    def new_state(self, replica: str) -> GSet:
        return GSet(replica)


class TwoPSetField(StateField[TwoPSet]):
    """``2pset``: two-phase set (a removed element never comes back)."""

    kind: ClassVar[str] = "2pset"

    def new_state(self, replica: str) -> TwoPSet:
        return TwoPSet(replica)


class LWWField(StateField[LWWRegister]):
    """``lww``: last-writer-wins register."""

    kind: ClassVar[str] = "lww"

    def new_state(self, replica: str) -> LWWRegister:
        return LWWRegister(replica)


class MVRegField(StateField[MVRegister]):
    """``mvreg``: multi-value register (concurrent writes kept side by side)."""

    kind: ClassVar[str] = "mvreg"

    def new_state(self, replica: str) -> MVRegister:
        return MVRegister(replica)


class ORMapField(StateField[ORMap]):
    """``ormap``: observed-remove map of multi-value registers."""

    kind: ClassVar[str] = "ormap"

    def new_state(self, replica: str) -> ORMap:
        return ORMap(replica, "mvreg")


# -- handles -------------------------------------------------------------------------------


class Handle(Generic[T]):
    """Base of typed handles: a field of a document and the way to commit local edits."""

    field_class: ClassVar[type[StateField[Any]]]

    def __init__(self, doc: CrdtDoc, name: str) -> None:
        self._doc = doc
        self.name = name
        self._field: StateField[T] = doc.typed_field(name, self.field_class)

    def _mutate(self, mutation: Callable[[T], T]) -> None:
        field = self._field
        self._doc.commit_local(self.name, field, lambda: field.mutate(mutation))

    def value(self) -> Any:
        """The field's current value (plain data)."""
        return self._field.value()

    def version(self) -> dict[str, int]:
        """The field's version (replica → mutation counter)."""
        return self._field.version()


class CounterHandle(Handle[PNCounter]):
    """A PN-counter field: ``increment``/``decrement`` (durable when they return)."""

    field_class = PNCounterField

    def increment(self, amount: int = 1) -> None:
        """Add ``amount`` (≥ 0)."""
        self._mutate(lambda c: c.increment(amount))

    def decrement(self, amount: int = 1) -> None:
        """Subtract ``amount`` (≥ 0)."""
        self._mutate(lambda c: c.decrement(amount))

    def value(self) -> int:
        """The counter's value."""
        return int(self._field.value())


class GCounterHandle(Handle[GCounter]):
    """A grow-only counter field."""

    field_class = GCounterField

    def increment(self, amount: int = 1) -> None:
        """Add ``amount`` (≥ 0)."""
        self._mutate(lambda c: c.increment(amount))


class SetHandle(Handle[AWORSet]):
    """An add-wins set field: elements are str, int or bytes."""

    field_class = ORSetField

    def add(self, element: str | int | bytes) -> None:
        """Insert ``element``."""
        self._mutate(lambda s: s.add(element))

    def remove(self, element: str | int | bytes) -> None:
        """Remove ``element`` as seen here (a concurrent add elsewhere wins)."""
        self._mutate(lambda s: s.remove(element))

    def __contains__(self, element: object) -> bool:
        return element in self._field.state


class RWSetHandle(Handle[RWORSet]):
    """A remove-wins set field."""

    field_class = RWSetField

    def add(self, element: str | int | bytes) -> None:
        """Insert ``element``."""
        self._mutate(lambda s: s.add(element))

    def remove(self, element: str | int | bytes) -> None:
        """Remove ``element`` (wins over a concurrent add)."""
        self._mutate(lambda s: s.remove(element))


class GSetHandle(Handle[GSet]):
    """A grow-only set field."""

    field_class = GSetField

    def add(self, element: str | int | bytes) -> None:
        """Insert ``element``."""
        self._mutate(lambda s: s.add(element))


class TwoPSetHandle(Handle[TwoPSet]):
    """A two-phase set field (a removed element cannot be added again)."""

    field_class = TwoPSetField

    def add(self, element: str | int | bytes) -> None:
        """Insert ``element``."""
        self._mutate(lambda s: s.add(element))

    def remove(self, element: str | int | bytes) -> None:
        """Remove ``element`` for good."""
        self._mutate(lambda s: s.remove(element))


class RegisterHandle(Handle[LWWRegister]):
    """A last-writer-wins register field; stamps are ``max(previous + 1, wall-clock µs)``
    (a hybrid clock: causally later writes win, concurrent ones by time, then writer)."""

    field_class = LWWField

    def assign(self, value: Any) -> None:
        """Write ``value`` (any msgpack-encodable data)."""
        stamp = max(self._field.state.timestamp + 1, time.time_ns() // 1000)
        self._mutate(lambda r: r.set(value, stamp))


class MVRegisterHandle(Handle[MVRegister]):
    """A multi-value register field: ``value()`` lists concurrent writes."""

    field_class = MVRegField

    def assign(self, value: Any) -> None:
        """Write ``value`` (replaces every value seen here)."""
        self._mutate(lambda r: r.write(value))


class MapHandle(Handle[ORMap]):
    """An observed-remove map field of multi-value registers: ``{key: [values]}``."""

    field_class = ORMapField

    def assign(self, key: str | int | bytes, value: Any) -> None:
        """Write ``value`` under ``key``."""
        self._mutate(lambda m: m.update(key, lambda r: r.write(value)))

    def remove(self, key: str | int | bytes) -> None:
        """Remove ``key`` as seen here (a concurrent write elsewhere survives)."""
        self._mutate(lambda m: m.remove(key))


HANDLES: dict[str, type[Handle[Any]]] = {
    h.field_class.kind: h
    for h in (
        CounterHandle,
        GCounterHandle,
        SetHandle,
        RWSetHandle,
        GSetHandle,
        TwoPSetHandle,
        RegisterHandle,
        MVRegisterHandle,
        MapHandle,
    )
}
"""Handle class of every state-based kind."""

STATE_KINDS: tuple[type[FieldState], ...] = tuple(h.field_class for h in HANDLES.values())

EDIT_ACTIONS: dict[str, dict[str, int]] = {
    "text": {"insert": 2, "delete": 2},
    "pncounter": {"increment": 1, "decrement": 1},
    "gcounter": {"increment": 1},
    "orset": {"add": 1, "remove": 1},
    "rwset": {"add": 1, "remove": 1},
    "gset": {"add": 1},
    "2pset": {"add": 1, "remove": 1},
    "lww": {"assign": 1},
    "mvreg": {"assign": 1},
    "ormap": {"assign": 2, "remove": 1},
}
"""Per kind, the edit actions and how many arguments each takes (text ``delete`` takes an
optional third: the text expected at that range, refused if it differs)."""


def apply_edit(doc: CrdtDoc, kind: str, name: str, args: list[Any]) -> None:
    """Carry out ``args = [action, *arguments]`` on field ``(name, kind)`` of ``doc``.

    Raises ``ValueError`` naming the offending value for an unknown kind or action, a
    wrong number of arguments, or arguments the CRDT refuses.
    """
    actions = EDIT_ACTIONS.get(kind)
    if actions is None:
        raise ValueError(f"unknown kind {kind!r}; kinds: {sorted(EDIT_ACTIONS)}")
    if not args or not isinstance(args[0], str) or args[0] not in actions:
        raise ValueError(f"{kind} action must be one of {sorted(actions)}, got {args[:1]!r}")
    action, rest = args[0], args[1:]
    optional = 1 if (kind, action) == ("text", "delete") else 0
    if not actions[action] <= len(rest) <= actions[action] + optional:
        raise ValueError(f"{kind} {action} takes {actions[action]} arguments, got {rest!r}")
    handle: Any = doc.text(name) if kind == "text" else HANDLES[kind](doc, name)
    getattr(handle, action)(*rest)


"""Sequential specifications (models) for the linearizability checker, and how to write one.

A model is a pure state machine over *hashable, immutable* states:

* ``init()`` -> the initial state;
* ``step(state, op)`` -> ``(allowed, next_state)``: may ``op`` take effect in ``state`` with
  the output it recorded, and what is the state after it? ``op.outcome == "info"`` means the
  output is unknown: accept any output (``fail`` operations never reach a model);
* ``partition(ops)`` -> independent sub-histories (default: none); ``unpartitioned()`` ->
  the model to use when checking the whole history at once;
* ``read_only(op)`` -> True only if ``op`` never changes any state (a read, a failed
  compare): the search then linearizes such an operation as soon as it is valid, without
  trying other orders (default False, always safe);
* ``pruner(ops)`` -> optionally ``hopeless(state, op, pending)``: True only if the read
  ``op`` can never become valid from ``state`` by the operations of ``ops`` still
  ``pending`` (e.g. a KV value only grows by appends unless a put resets it); the search
  backtracks from such a state at once;
* ``equal(a, b)`` -> state equality (default ``==``; states are also hashed, so keep
  ``hash`` consistent with it);
* ``describe_op(op)`` / ``describe_state(state)`` -> short text for reports.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from pnyx.check.history import Operation

S = TypeVar("S")
Hopeless = Callable[[S, Operation, Callable[[Operation], bool]], bool]
"""``hopeless(state, read, pending)``: True only if ``read`` can never become valid from
``state`` by the operations still ``pending`` (``pending(op)``: not yet linearized)."""


class Model(Generic[S]):
    """Base class of a sequential specification; subclass it and override ``init``/``step``."""

    name: str = "model"

    def init(self) -> S:
        """The state before any operation."""
        raise NotImplementedError

    def step(self, state: S, op: Operation) -> tuple[bool, S]:
        """Whether ``op`` may take effect in ``state``, and the resulting state."""
        raise NotImplementedError

    def partition(self, ops: Sequence[Operation]) -> list[list[Operation]]:
        """Split into independently checkable sub-histories (P-compositionality)."""
        return [list(ops)]

    def read_only(self, op: Operation) -> bool:
        """True only if ``op`` leaves every state unchanged (``step`` returns it as is).

        Such an operation, when valid in the current state, can always go first: moving it
        to the front of any linearization changes no state. Answer False when unsure."""
        return False

    def pruner(self, ops: Sequence[Operation]) -> Hopeless[S] | None:
        """Optionally, for the sub-history ``ops``, a test ``hopeless(state, op, pending)``
        that is True only if the read-only ``op`` can never become valid from ``state``
        whatever operations of ``ops`` still ``pending`` follow. None (the default): no such
        knowledge."""
        return None

    def unpartitioned(self) -> Model[Any]:
        """The model for checking all operations together (without ``partition``)."""
        return self

    def equal(self, a: S, b: S) -> bool:
        """State equality; override only with a matching ``__hash__`` on states."""
        return a == b

    def describe_op(self, op: Operation) -> str:
        """One-line text for ``op``: process, function, argument, result."""
        return describe_operation(op)

    def describe_state(self, state: S) -> str:
        """One-line text for a state."""
        return repr(state)


def describe_operation(op: Operation) -> str:
    """``p3 write 2 -> ok`` style text used by reports."""
    key = "" if op.key is None else f"[{op.key!r}] "
    arg = "" if op.value is None else f" {op.value!r}"
    if op.outcome == "ok":
        echo = op.output is None or op.output == op.value
        res = " -> ok" if echo else f" -> {op.output!r}"
    else:
        res = f" ({op.outcome})"
    return f"p{op.process} {key}{op.f}{arg}{res}"


class KeyedModel(Model[S]):
    """A model of one object per key: histories split by ``op.key``; keys are independent."""

    def partition(self, ops: Sequence[Operation]) -> list[list[Operation]]:
        groups: dict[Any, list[Operation]] = {}
        for op in ops:
            groups.setdefault(op.key, []).append(op)
        return list(groups.values())

    def unpartitioned(self) -> Model[Any]:
        return MapModel(self)


class MapModel(Model[tuple[Any, ...]]):
    """All keys at once: the state is a tuple of per-key states, one slot per key.

    Slots are numbered in the order keys are first seen; trailing slots in the initial
    state are trimmed so that equal maps are equal tuples.
    """

    def __init__(self, inner: Model[Any]) -> None:
        self.inner = inner
        self.name = f"{inner.name} (all keys together)"
        self.slots: dict[Any, int] = {}
        self.keys: list[Any] = []
        self.empty = inner.init()

    def init(self) -> tuple[Any, ...]:
        return ()

    def step(self, state: tuple[Any, ...], op: Operation) -> tuple[bool, tuple[Any, ...]]:
        slot = self.slots.get(op.key)
        if slot is None:
            slot = self.slots[op.key] = len(self.keys)
            self.keys.append(op.key)
        size = len(state)
        ok, new = self.inner.step(state[slot] if slot < size else self.empty, op)
        if not ok:
            return False, state
        if slot < size:
            result = (*state[:slot], new, *state[slot + 1:])
        else:
            result = (*state, *([self.empty] * (slot - size)), new)
        while result and result[-1] == self.empty:
            result = result[:-1]
        return True, result

    def describe_op(self, op: Operation) -> str:
        return self.inner.describe_op(op)

    def read_only(self, op: Operation) -> bool:
        return self.inner.read_only(op)

    def pruner(self, ops: Sequence[Operation]) -> Hopeless[tuple[Any, ...]] | None:
        inner = self.inner.pruner(ops)
        if inner is None:
            return None

        def hopeless(state: tuple[Any, ...], op: Operation,
                     pending: Callable[[Operation], bool]) -> bool:
            slot = self.slots.get(op.key)
            sub = state[slot] if slot is not None and slot < len(state) else self.empty
            return inner(sub, op, pending)
        return hopeless

    def describe_state(self, state: tuple[Any, ...]) -> str:
        inner = ", ".join(f"{self.keys[i]!r}: {self.inner.describe_state(v)}"
                          for i, v in enumerate(state))
        return "{" + inner + "}"


def _reject(kind: str, op: Operation, allowed: str) -> ValueError:
    return ValueError(f"{kind} model: operation {op.f!r} (process {op.process}) is not "
                      f"supported; use one of {allowed} or choose another --model")


class RegisterModel(KeyedModel[Any]):
    """A read/write register per key. ``read`` outputs the value; ``write`` takes it."""

    name = "register"

    def __init__(self, initial: Any = None) -> None:
        self.initial = initial

    def init(self) -> Any:
        return self.initial

    def step(self, state: Any, op: Operation) -> tuple[bool, Any]:
        f = op.f
        if f in ("read", "get", "r"):
            return op.outcome == "info" or op.output == state, state
        if f in ("write", "put", "w"):
            return True, op.value
        raise _reject(self.name, op, "read, write")

    def read_only(self, op: Operation) -> bool:
        return op.f in ("read", "get", "r") or _failed_compare(op)

    def setter_value(self, op: Operation) -> tuple[bool, Any]:
        """``(True, v)`` if ``op`` may set the value to ``v``; ``(False, None)`` if it is
        not an operation this model knows (no pruning then)."""
        if op.f in ("write", "put", "w"):
            return True, op.value
        return False, None

    def pruner(self, ops: Sequence[Operation]) -> Hopeless[Any] | None:
        """A read of ``v`` in a state other than ``v`` is hopeless when no pending
        operation may set ``v``."""
        by_value: dict[Any, list[Operation]] = {}
        for op in ops:
            if self.read_only(op):
                continue
            known, value = self.setter_value(op)
            if not known or not _hashable(value):
                return None
            by_value.setdefault(value, []).append(op)

        def hopeless(state: Any, op: Operation, pending: Callable[[Operation], bool]) -> bool:
            output = op.output
            if op.f not in ("read", "get", "r") or output == state or not _hashable(output):
                return False
            return not any(pending(s) for s in by_value.get(output, ()))
        return hopeless


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


class CASRegisterModel(RegisterModel):
    """A register with ``cas``: value ``[expected, new]``; an ``ok`` output of ``false``
    means the compare did not match (no effect); any other ``ok`` output means it swapped."""

    name = "cas-register"

    def step(self, state: Any, op: Operation) -> tuple[bool, Any]:
        if op.f != "cas":
            return super().step(state, op)
        expected, new = _pair(op)
        if op.outcome == "ok" and op.output is False:
            return state != expected, state
        return state == expected, new

    def setter_value(self, op: Operation) -> tuple[bool, Any]:
        if op.f == "cas" and isinstance(op.value, tuple) and len(op.value) == 2:
            return True, op.value[1]
        return super().setter_value(op)


def _failed_compare(op: Operation) -> bool:
    """An ``ok`` cas whose output says the compare did not match: it changed nothing."""
    return op.f == "cas" and op.outcome == "ok" and op.output is False


def _pair(op: Operation) -> tuple[Any, Any]:
    value = op.value
    if not (isinstance(value, tuple) and len(value) == 2):
        raise ValueError(f"cas by process {op.process} needs value [expected new], "
                         f"got {value!r}")
    return value[0], value[1]


class KVModel(KeyedModel[Any]):
    """A key-value map, one object per key: ``get``, ``put``, ``append``, ``cas``, ``delete``.

    ``get`` outputs the value (``initial`` if absent); ``put`` takes the new value;
    ``append`` concatenates its string argument (to a tuple value it adds one element);
    ``cas`` takes ``[expected, new]`` (``ok`` output ``false``: compare did not match);
    ``delete`` resets the key to ``initial``.
    """

    name = "kv"

    def __init__(self, initial: Any = "") -> None:
        self.initial = initial

    def init(self) -> Any:
        return self.initial

    def step(self, state: Any, op: Operation) -> tuple[bool, Any]:
        f = op.f
        if f in ("get", "read"):
            return op.outcome == "info" or op.output == state, state
        if f in ("put", "write"):
            return True, op.value
        if f == "append":
            return True, _append(state, op.value)
        if f == "cas":
            expected, new = _pair(op)
            if op.outcome == "ok" and op.output is False:
                return state != expected, state
            return state == expected, new
        if f == "delete":
            return True, self.initial
        raise _reject(self.name, op, "get, put, append, cas, delete")

    def read_only(self, op: Operation) -> bool:
        return op.f in ("get", "read") or _failed_compare(op)

    def pruner(self, ops: Sequence[Operation]) -> Hopeless[Any] | None:
        """Values are strings (or nil): an ``append`` only lengthens one, so a read whose
        output does not start with the state is hopeless unless a pending ``put``, ``cas``
        or ``delete`` could set a value its output starts with."""
        if not _str_or_none(self.initial):
            return None
        setters: list[tuple[Operation, Any]] = []
        for op in ops:
            kind = _kv_kind(op, self.initial)
            if kind is None:
                return None
            if kind != "keep":
                setters.append((op, kind[1]))
        enablers = _enablers(ops, setters)

        def hopeless(state: Any, op: Operation, pending: Callable[[Operation], bool]) -> bool:
            if state is None or op.f not in ("get", "read"):
                return False
            output = op.output
            if output is not None and output.startswith(state):
                return False  # appends can still grow the state into the output
            return not any(pending(s) for s in enablers.get(op.index, ()))
        return hopeless


def _str_or_none(value: Any) -> bool:
    return value is None or isinstance(value, str)


def _kv_kind(op: Operation, initial: Any) -> str | tuple[str, Any] | None:
    """``"keep"`` (a read, an append or a failed compare), ``("set", value)`` for an
    operation that may set the value, None for anything the prefix rule cannot reason on."""
    f = op.f
    if f in ("get", "read"):
        return "keep" if op.outcome != "ok" or _str_or_none(op.output) else None
    if f == "append":
        return "keep" if isinstance(op.value, str) else None
    if _failed_compare(op):
        return "keep"
    if f in ("put", "write"):
        return ("set", op.value) if _str_or_none(op.value) else None
    if f == "cas" and isinstance(op.value, tuple) and len(op.value) == 2:
        return ("set", op.value[1]) if _str_or_none(op.value[1]) else None
    if f == "delete":
        return ("set", initial)
    return None


def _grows_into(start: Any, output: Any) -> bool:
    """Whether appends alone can take the value ``start`` to ``output``."""
    if start is None:
        return True
    return output is not None and output.startswith(start)


def _enablers(ops: Sequence[Operation],
              setters: list[tuple[Operation, Any]]) -> dict[int, list[Operation]]:
    """For each ``ok`` read, the operations that may set a value it can grow from."""
    out: dict[int, list[Operation]] = {}
    for op in ops:
        if op.f in ("get", "read") and op.outcome == "ok":
            out[op.index] = [s for s, value in setters if _grows_into(value, op.output)]
    return out


def _append(state: Any, value: Any) -> Any:
    if state is None:
        return value
    if isinstance(state, tuple):
        return (*state, value)
    return state + value


class SetModel(KeyedModel[frozenset[Any]]):
    """A grow-only set per key: ``add`` an element; ``read`` outputs all elements."""

    name = "set"

    def init(self) -> frozenset[Any]:
        return frozenset()

    def step(self, state: frozenset[Any], op: Operation) -> tuple[bool, frozenset[Any]]:
        if op.f == "add":
            return True, state | {op.value}
        if op.f == "read":
            if op.outcome == "info":
                return True, state
            return frozenset(op.output or ()) == state, state
        raise _reject(self.name, op, "add, read")

    def read_only(self, op: Operation) -> bool:
        return op.f == "read"

    def pruner(self, ops: Sequence[Operation]) -> Hopeless[frozenset[Any]] | None:
        """Grow-only: a read that misses an element already in the state is hopeless."""
        return _hopeless_subset if all(op.f in ("add", "read") for op in ops) else None


def _hopeless_subset(state: frozenset[Any], op: Operation,
                     pending: Callable[[Operation], bool]) -> bool:
    return op.f == "read" and not state <= frozenset(op.output or ())


def _counter_pruner(ops: Sequence[Operation]) -> Hopeless[int] | None:
    """With no negative increments, a read below the current count is hopeless."""
    for op in ops:
        if op.f not in ("add", "incr", "read"):
            return None
        if op.f != "read" and not (op.value is None or
                                   (isinstance(op.value, int) and op.value >= 0)):
            return None
        if op.f == "read" and op.outcome == "ok" and not isinstance(op.output, int):
            return None
    return _hopeless_below


def _hopeless_below(state: int, op: Operation, pending: Callable[[Operation], bool]) -> bool:
    return op.f == "read" and op.output < state


class CounterModel(KeyedModel[int]):
    """A counter per key: ``add``/``incr`` by the value (1 if none); ``read`` outputs it."""

    name = "counter"

    def init(self) -> int:
        return 0

    def step(self, state: int, op: Operation) -> tuple[bool, int]:
        if op.f in ("add", "incr"):
            return True, state + (1 if op.value is None else int(op.value))
        if op.f == "read":
            return op.outcome == "info" or op.output == state, state
        raise _reject(self.name, op, "add, incr, read")

    def read_only(self, op: Operation) -> bool:
        return op.f == "read"

    def pruner(self, ops: Sequence[Operation]) -> Hopeless[int] | None:
        """With no negative increments, a read below the current count is hopeless."""
        return _counter_pruner(ops)


class QueueModel(KeyedModel[tuple[Any, ...]]):
    """A FIFO queue per key: ``enqueue`` a value; ``dequeue`` outputs the head (nil: empty)."""

    name = "queue"

    def init(self) -> tuple[Any, ...]:
        return ()

    def step(self, state: tuple[Any, ...], op: Operation) -> tuple[bool, tuple[Any, ...]]:
        if op.f == "enqueue":
            return True, (*state, op.value)
        if op.f == "dequeue":
            if op.outcome == "info":
                return bool(state), state[1:]
            if not state:
                return op.output is None, state
            return op.output == state[0], state[1:]
        raise _reject(self.name, op, "enqueue, dequeue")


MODELS: dict[str, Callable[[], Model[Any]]] = {
    "register": RegisterModel,
    "cas-register": CASRegisterModel,
    "kv": KVModel,
    "set": SetModel,
    "counter": CounterModel,
    "queue": QueueModel,
}


def get_model(name: str) -> Model[Any]:
    """A built-in model by name; raises ``KeyError`` naming the valid choices."""
    try:
        return MODELS[name]()
    except KeyError:
        raise KeyError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}") from None

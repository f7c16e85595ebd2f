"""Random concurrent histories with a known verdict, for testing ``pnyx.check``.

``generate(seed, Params(...))`` simulates clients of a real atomic object (a register, a
compare-and-set register, or a key-value map with get/put/append on strings, as in the
Jepsen/Porcupine files), optionally over several independent keys. Each operation takes
effect at one random instant inside its ``[invoke, complete]`` interval, so a clean history
is linearizable by construction, and the instants themselves are a witness
(``Generated.witness``). ``info`` operations (unknown outcome) take effect or not, at a
random instant after their invocation (possibly after their completion, possibly never
completed); ``fail`` operations certainly did not take effect (a cas whose expected value
did not match, or any operation that failed before taking effect).

An anomaly (``Params.anomaly``, see ``ANOMALIES``) is injected on one key, chosen so that
*no* linearization can exist; each injector's docstring says why. ``Generated`` carries the
ground truth: ``anomalous_keys``.

Deterministic: everything is drawn from ``random.Random(seed)``. Only stdlib and ``pnyx``
are imported, so ``bench/`` can load this file by path.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from pnyx.check.history import History, Operation
from pnyx.check.models import Model, get_model
from pnyx.core.history import HistoryEvent

KINDS = ("register", "cas-register", "kv")
ANOMALIES: dict[str, tuple[str, ...]] = {
    "register": ("never-written", "stale-read"),
    "cas-register": ("never-written", "stale-read", "bad-cas"),
    "kv": ("never-written", "stale-read", "lost-append"),
}
READ = {"register": "read", "cas-register": "read", "kv": "get"}
WRITE = {"register": "write", "cas-register": "write", "kv": "put"}
MIX: dict[str, tuple[tuple[str, float], ...]] = {
    "register": (("read", 0.5), ("write", 0.5)),
    "cas-register": (("read", 0.4), ("write", 0.3), ("cas", 0.3)),
    "kv": (("get", 0.4), ("put", 0.2), ("append", 0.4)),
}
NEVER_REGISTER = "never-written"  # registers hold ints or nil: no operation writes a str
NEVER_KV = "!never!"  # no put/append argument contains "!": no reachable state does


@dataclass(frozen=True)
class Params:
    """What to generate.

    ``ops`` operations (5..10,000) by ``clients`` clients (2..50) over ``keys`` keys;
    ``p_info`` / ``p_fail``: probability that an operation has an unknown outcome / fails
    before taking effect; ``values``: register values are drawn from ``range(values)``
    (KV values are unique ``"x C N y"`` tokens); ``overlap`` in (0, 1): the fraction of
    time a client has an operation in flight, so about ``clients * overlap`` operations
    are concurrent; ``anomaly``: one of ``ANOMALIES[kind]`` or ``None`` (clean).
    """

    kind: str = "register"
    ops: int = 50
    clients: int = 5
    keys: int = 1
    p_info: float = 0.0
    p_fail: float = 0.0
    values: int = 5
    overlap: float = 0.5
    anomaly: str | None = None


@dataclass
class GenOp:
    """One simulated operation; ``effect`` is the instant it took effect (``None``: never).

    ``ret`` is ``None`` for an operation never completed (it is ``info``).
    """

    process: int
    f: str
    key: Any
    value: Any
    call: float
    ret: float | None
    outcome: str = "ok"
    effect: float | None = None
    output: Any = None


@dataclass
class Generated:
    """A generated history and its ground truth."""

    seed: int
    params: Params
    ops: list[GenOp]
    anomalous_keys: frozenset[Any] = field(default_factory=frozenset)

    @property
    def model_name(self) -> str:
        """The ``get_model`` name to check it with."""
        return self.params.kind

    def model(self) -> Model[Any]:
        """A fresh model to check it with."""
        return get_model(self.params.kind)

    @property
    def keys(self) -> list[Any]:
        """The keys that occur, in order of first invocation."""
        return list(dict.fromkeys(op.key for op in sorted(self.ops, key=lambda o: o.call)))

    def events(self) -> list[HistoryEvent]:
        """Invocations and completions in real-time order, stamped with their rank."""
        timed = [(op.call, op, "invoke") for op in self.ops]
        timed += [(op.ret, op, op.outcome) for op in self.ops if op.ret is not None]
        timed.sort(key=lambda p: p[0])
        return [_event(op, kind, rank) for rank, (_, op, kind) in enumerate(timed)]

    def history(self) -> History:
        """The events as a ``History`` (operations in invocation order)."""
        return History.from_events(self.events(), source=f"generated seed={self.seed}")

    def pairs(self) -> list[tuple[GenOp, Operation]]:
        """Each simulated operation with the ``Operation`` it became in ``history()``."""
        ordered = sorted(self.ops, key=lambda o: o.call)
        return list(zip(ordered, self.history().operations, strict=True))

    def witness(self) -> list[Operation]:
        """The operations that took effect, in the order they did (clean histories only)."""
        took = [(g.effect, op) for g, op in self.pairs() if g.effect is not None]
        return [op for _, op in sorted(took, key=lambda p: p[0])]


def _event(op: GenOp, kind: str, time: int) -> HistoryEvent:
    value = op.value
    if kind == "ok" and op.f in ("read", "get"):
        value = op.output
    return HistoryEvent(op.process, kind, op.f, _wire(value), op.key, time)  # type: ignore[arg-type]


def _wire(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


# -- schedule: who invokes what, when -------------------------------------------------------


def _key_names(p: Params) -> list[Any]:
    if p.keys == 1 and p.kind != "kv":
        return [None]
    return [str(i) for i in range(p.keys)]


class _Tokens:
    """Argument factory: register values from a range, unique KV tokens ``"x C N y"``."""

    def __init__(self, rng: random.Random, p: Params) -> None:
        self.rng, self.p, self.n = rng, p, 0

    def value(self, client: int) -> Any:
        if self.p.kind != "kv":
            return self.rng.randrange(self.p.values)
        self.n += 1
        return f"x {client} {self.n} y"

    def args(self, f: str, client: int) -> Any:
        if f in ("read", "get"):
            return None
        if f == "cas":
            return (self.rng.randrange(self.p.values), self.rng.randrange(self.p.values))
        return self.value(client)


def _pick_f(rng: random.Random, kind: str) -> str:
    fs, weights = zip(*MIX[kind], strict=True)
    return rng.choices(fs, weights)[0]


def _schedule(rng: random.Random, p: Params) -> list[GenOp]:
    """Client loops: invoke, wait a random duration, complete, pause, repeat."""
    busy = min(max(p.overlap, 0.01), 0.99)
    keys, tokens = _key_names(p), _Tokens(rng, p)
    free = [(rng.expovariate(1 / (1 - busy)), c) for c in range(p.clients)]
    heapq.heapify(free)
    process = list(range(p.clients))
    ops: list[GenOp] = []
    for _ in range(p.ops):
        t, c = heapq.heappop(free)
        f = _pick_f(rng, p.kind)
        ret = t + rng.expovariate(1 / busy)
        op = GenOp(process[c], f, rng.choice(keys), tokens.args(f, c), t, ret)
        _decide_outcome(rng, p, op)
        if op.outcome == "info":
            process[c] += p.clients  # Jepsen: a crashed process is replaced by a new one
        ops.append(op)
        heapq.heappush(free, (ret + rng.expovariate(1 / (1 - busy)), c))
    _place_info_effects(rng, ops)
    return ops


def _decide_outcome(rng: random.Random, p: Params, op: GenOp) -> None:
    roll = rng.random()
    if roll < p.p_fail:
        op.outcome = "fail"
    elif roll < p.p_fail + p.p_info:
        op.outcome = "info"
        if rng.random() < 0.3:
            op.ret = None  # never completed: still open at the end of the history
    else:
        op.effect = rng.uniform(op.call, op.ret or op.call)


def _place_info_effects(rng: random.Random, ops: list[GenOp]) -> None:
    """An info operation takes effect (or not) at any instant after its invocation."""
    end = max((op.ret or op.call) for op in ops) + 1.0
    for op in ops:
        if op.outcome == "info" and rng.random() < 0.5:
            op.effect = rng.uniform(op.call, end)


# -- simulation of the atomic object --------------------------------------------------------


def _simulate(kind: str, ops: list[GenOp]) -> None:
    """Apply the operations in the order of their effect instants; record outputs."""
    initial = "" if kind == "kv" else None
    state: dict[Any, Any] = {}
    for op in sorted((o for o in ops if o.effect is not None), key=lambda o: o.effect or 0.0):
        current = state.get(op.key, initial)
        if op.f in ("read", "get"):
            op.output = current
        elif op.f in ("write", "put"):
            state[op.key] = op.value
        elif op.f == "append":
            state[op.key] = current + op.value
        elif current == op.value[0]:  # cas that matched
            state[op.key] = op.value[1]
        else:  # cas that did not match: no effect; recorded as fail (Jepsen) when known
            op.effect = None
            op.outcome = "fail" if op.outcome == "ok" else op.outcome


# -- anomalies ------------------------------------------------------------------------------

Corrupt = Callable[[], None]


def _completed(ops: Sequence[GenOp], key: Any) -> list[GenOp]:
    return [op for op in ops if op.key == key and op.ret is not None]


def _force(rng: random.Random, op: GenOp, f: str, value: Any) -> None:
    """Make ``op`` an ``ok`` operation ``f(value)`` taking effect inside its interval."""
    assert op.ret is not None
    op.f, op.value, op.outcome = f, value, "ok"
    op.effect = rng.uniform(op.call, op.ret)


def _fresh_ops(ops: list[GenOp], key: Any, count: int) -> list[GenOp]:
    """``count`` sequential operations of a new process, after everything else."""
    start = max((op.ret or op.call) for op in ops) + 1.0
    proc = max(op.process for op in ops) + 1
    new = [GenOp(proc, "read", key, None, start + 2 * i, start + 2 * i + 1)
           for i in range(count)]
    ops.extend(new)
    return new


def _chain(rng: random.Random, ops: list[GenOp], key: Any, length: int) -> list[GenOp]:
    """``length`` completed operations on ``key``, each invoked after the previous returned
    (so every linearization orders them so); fresh ones appended when there is no such chain.
    """
    done = sorted(_completed(ops, key), key=lambda o: o.call)
    for _ in range(20):
        chain: list[GenOp] = []
        for _ in range(length):
            after = chain[-1].ret or 0.0 if chain else -1.0
            later = [op for op in done if op.call > after]
            if not later:
                break
            chain.append(rng.choice(later[: max(1, len(later) // 2)]))
        if len(chain) == length:
            return chain
    return _fresh_ops(ops, key, length)


def _never_written(rng: random.Random, p: Params, ops: list[GenOp], key: Any) -> Corrupt:
    """An ``ok`` read returns a value no operation ever wrote and that is not the initial
    value. Every linearization must place the read somewhere, and no reachable state holds
    that value (registers only ever hold ints or nil; KV states are concatenations of
    arguments, none of which contains ``"!"``), so no linearization exists.
    """
    (read,) = _chain(rng, ops, key, 1)
    _force(rng, read, READ[p.kind], None)
    never = NEVER_KV if p.kind == "kv" else NEVER_REGISTER

    def corrupt() -> None:
        read.output = never
    return corrupt


def _stale_value(p: Params) -> Any:
    return "<stale>" if p.kind == "kv" else -1  # no other argument is "<...>" or negative


def _stale_read(rng: random.Random, p: Params, ops: list[GenOp], key: Any) -> Corrupt:
    """W1 writes a unique value v1; W2 (invoked after W1 returned) writes another value; R
    (invoked after W2 returned) reads v1. Real time forces W1 < W2 < R in every
    linearization. Only W1 can produce the state v1 (no other write, cas or put has v1 as
    argument; a KV append only lengthens a state, and states holding ``"<"`` all start with
    v1), W2 leaves a state other than v1, so R cannot read v1: no linearization exists.
    """
    w1, w2, read = _chain(rng, ops, key, 3)
    _force(rng, w1, WRITE[p.kind], _stale_value(p))
    _force(rng, w2, WRITE[p.kind], _Tokens(rng, p).value(w2.process))
    _force(rng, read, READ[p.kind], None)
    stale = w1.value

    def corrupt() -> None:
        read.output = stale
    return corrupt


def _bad_cas(rng: random.Random, p: Params, ops: list[GenOp], key: Any) -> Corrupt:
    """As the stale read, but the last operation is ``cas(v1, new)`` reported ``ok``: it
    needs the state v1 when it takes effect, which only W1 produces and W2 (certainly
    between them) overwrites; so no linearization exists.
    """
    w1, w2, cas = _chain(rng, ops, key, 3)
    _force(rng, w1, "write", _stale_value(p))
    _force(rng, w2, "write", rng.randrange(p.values))
    _force(rng, cas, "cas", (w1.value, rng.randrange(p.values)))

    def corrupt() -> None:  # the simulation found no match: it failed, without effect
        assert cas.outcome == "fail" and cas.effect is None
        cas.outcome = "ok"
    return corrupt


def _lost_append(rng: random.Random, p: Params, ops: list[GenOp], key: Any) -> Corrupt:
    """An ``ok`` append A of a unique token t, then a get R invoked after A returned, which
    returns its true value with t cut out. Every put on the key that could take effect
    between A and R (any non-failed put not returned before A's invocation, invoked before
    R returned) is turned into an append before the simulation, so in every linearization
    the state from A to R only grows and contains t: R cannot read a value without t.
    """
    append, read = _chain(rng, ops, key, 2)
    _force(rng, append, "append", f"x {append.process} lost y")
    _force(rng, read, "get", None)
    for op in ops:
        if op.key == key and op.f == "put" and _may_fall_between(op, append, read):
            op.f = "append"
    token = append.value

    def corrupt() -> None:
        assert token in read.output
        read.output = read.output.replace(token, "", 1)
        assert token not in read.output
    return corrupt


def _may_fall_between(op: GenOp, first: GenOp, last: GenOp) -> bool:
    if op.outcome == "fail" or last.ret is None or op.call > last.ret:
        return False
    return not (op.outcome == "ok" and op.ret is not None and op.ret < first.call)


INJECT: dict[str, Callable[[random.Random, Params, list[GenOp], Any], Corrupt]] = {
    "never-written": _never_written,
    "stale-read": _stale_read,
    "bad-cas": _bad_cas,
    "lost-append": _lost_append,
}


# -- entry points ---------------------------------------------------------------------------


def generate(seed: int, params: Params | None = None, **overrides: Any) -> Generated:
    """A random history for ``params`` (with ``overrides``), and its ground truth."""
    p = replace(params or Params(), **overrides)
    if p.anomaly is not None and p.anomaly not in ANOMALIES[p.kind]:
        raise ValueError(f"{p.anomaly!r} is not an anomaly of {p.kind}: {ANOMALIES[p.kind]}")
    rng = random.Random(seed)
    ops = _schedule(rng, p)
    corrupt, bad = None, frozenset()
    if p.anomaly is not None:
        key = rng.choice(_key_names(p))
        corrupt, bad = INJECT[p.anomaly](rng, p, ops, key), frozenset([key])
    _simulate(p.kind, ops)
    if corrupt is not None:
        corrupt()
    return Generated(seed, p, ops, bad)


def random_params(rng: random.Random, kind: str, *, max_ops: int = 200, max_keys: int = 5,
                  concurrency: float = 3.0, anomaly: str | None = None) -> Params:
    """Parameters drawn from ``rng`` within the ranges the issue asks for, with about
    ``concurrency`` operations in flight per key at a time (the checker's search grows
    exponentially with it)."""
    clients, keys = rng.randint(2, 50), rng.randint(1, max_keys)
    overlap = min(rng.uniform(0.1, 0.9), concurrency * keys / clients)
    return Params(kind=kind, ops=rng.randint(5, max_ops), clients=clients, keys=keys,
                  p_info=rng.choice([0.0, 0.05, 0.15]), p_fail=rng.choice([0.0, 0.1]),
                  values=rng.randint(2, 10), overlap=overlap, anomaly=anomaly)


def brute_force_linearizable(ops: Sequence[Operation], model: Model[Any]) -> bool:
    """An independent oracle for small histories: a depth-first search over every order
    that respects real time (an ``ok`` operation returned before another was invoked comes
    first), every ``ok`` operation placed, each ``info`` one placed or left out; states
    per key with ``model.step``. Failed configurations are remembered, nothing else pruned.
    """
    live = [op for op in ops if op.outcome != "fail"]
    must = [frozenset(i for i, a in enumerate(live) if a.outcome == "ok" and a.ret is not None
                      and a.ret < b.call) for b in live]
    oks = frozenset(i for i, op in enumerate(live) if op.outcome == "ok")
    dead: set[tuple[frozenset[int], tuple[Any, ...]]] = set()

    def search(done: frozenset[int], states: dict[Any, Any]) -> bool:
        if oks <= done:
            return True
        config = (done, tuple(sorted(states.items(), key=repr)))
        if config in dead:
            return False
        for i, op in enumerate(live):
            if i in done or not must[i] <= done:
                continue
            allowed, new = model.step(states.get(op.key, model.init()), op)
            if allowed and search(done | {i}, {**states, op.key: new}):
                return True
        dead.add(config)
        return False

    return search(frozenset(), {})


def hard_and_illegal_history(seed: int) -> Generated:
    """A 50-client KV history with one hard linearizable key (``"hard"``: many concurrent
    operations, many of them ``info``) invoked first, and one small plainly illegal key
    (``"bad"``: a read of a value never written). Ground truth: ``{"bad"}``.
    """
    hard = generate(seed, Params(kind="kv", **HARD_KEY))
    for op in hard.ops:
        op.key = "hard"
    bad = generate(seed + 1, Params(kind="kv", ops=8, clients=2, anomaly="never-written"))
    start = hard.ops[0].call + 1.0  # the hard key is seen first
    shift = max(op.process for op in hard.ops) + 1
    for op in bad.ops:
        op.key, op.process = "bad", op.process + shift
        op.call += start
        op.ret = None if op.ret is None else op.ret + start
        op.effect = None if op.effect is None else op.effect + start
    ops = sorted(hard.ops + bad.ops, key=lambda o: o.call)
    return Generated(seed, replace(hard.params, keys=2), ops, frozenset(["bad"]))


HARD_KEY: dict[str, Any] = {"ops": 400, "clients": 50, "keys": 1, "p_info": 0.3,
                            "overlap": 0.9}


def perturb(rng: random.Random, history: History) -> History:
    """One random local change of unknown effect on the verdict: a read's output replaced by
    another value of the history, or an outcome changed (ok/info/fail). For cross-checking
    the checker against ``brute_force_linearizable``; events keep their real-time order.
    """
    ops = list(history.operations)
    i = rng.randrange(len(ops))
    op = ops[i]
    seen = [o.value for o in ops if o.f not in ("read", "get", "cas")] + [None, ""]
    if op.f in ("read", "get") and op.outcome == "ok" and rng.random() < 0.7:
        ops[i] = replace_op(op, output=rng.choice(seen))
    else:
        ops[i] = _reoutcome(rng, op)
    return History.from_events(History(ops).to_events())


def _reoutcome(rng: random.Random, op: Operation) -> Operation:
    outcome = rng.choice([o for o in ("ok", "info", "fail") if o != op.outcome])
    if op.ret is None:  # an open operation can only become an info one ending later
        return op
    output = op.output if op.outcome == "ok" else (None if op.f in ("read", "get")
                                                   else op.value)
    return replace_op(op, outcome=outcome, output=output if outcome == "ok" else None)


def replace_op(op: Operation, **changes: Any) -> Operation:
    """``op`` with some fields changed (``Operation`` is a frozen msgspec struct)."""
    import msgspec

    return msgspec.structs.replace(op, **changes)

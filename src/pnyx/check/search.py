"""The Wing-Gong/Lowe search over one partition, resumable and with a memory estimate.

The search keeps ``ok`` operations in a time-ordered linked list of call/return entries
(Wing & Gong); a call entry before the first return entry may be linearized next. Visited
configurations ``(linearized set, state)`` are memoised (Lowe) with the linearized set as an
int bitset and states interned to ints. ``info`` operations have no return entry: they may be
linearized at any point after their invocation or never, and are tried only after the
``ok`` candidates. A configuration that has linearized a *superset* of optional ``info``
operations of an already visited one (same ``ok`` set, same state) is pruned: it can do
nothing the visited one could not.

Reads go first. An operation the model calls ``read_only`` (it changes no state) that is
valid in the current state is linearized at once and *alone*: no other candidate is tried in
that configuration, because any linearization from it can be rearranged to start with the
read (the read changes no state, and it may precede every pending operation). When the
search backtracks over such a forced read it backtracks further. ``info`` reads are dropped
before the search (they constrain nothing). This turns histories where a read pins down
the order of many concurrent writes from exponential into near-linear searches.
A model may also say when a read can never become valid from a state (``Model.pruner``:
e.g. a KV key that is only appended to can never drop a prefix); such a configuration is
a dead end and the search backtracks at once.

:meth:`Search.steps_iter` is a generator that yields every :data:`STEPS_PER_YIELD` search
steps, so a scheduler can interleave many partitions, stop at the first violation and
enforce time and memory bounds between slices; :meth:`Search.memory_bytes` estimates what
the memo, the transition caches and the interned states hold.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Generator
from functools import partial
from typing import Any, Literal

from pnyx.check.history import Operation
from pnyx.check.models import Model

SearchVerdict = Literal["linearizable", "not-linearizable"]
STEPS_PER_YIELD = 2048
_INT_BYTES = 28  # an int object's header; its digits are counted from its bits
_BITS_PER_4_BYTES = 30  # CPython ints store 30 bits in 4 bytes
_SET_SLOT_BYTES = 40  # one memo bitset in a set: hash + pointer, at a set's load factor
_INFO_ENTRY_BYTES = 100  # dict slot + a one-element list of info bitsets
_TRANSITION_BYTES = 75  # one cached (operation, state) -> state dict entry
_STACK_ENTRY_BYTES = 72  # one tuple on the search stack
_LOOKAHEAD_ENTRIES = 16  # entries after the first return scanned for a hopeless read


def _state_bytes(state: Any) -> int:
    size = sys.getsizeof(state)
    if isinstance(state, tuple | frozenset):
        size += sum(sys.getsizeof(s) for s in state)
    return size


class States:
    """Interns model states to small ints (by hash, or by ``model.equal`` if overridden)."""

    def __init__(self, model: Model[Any]) -> None:
        self.model = model
        self.by_value: dict[Any, int] = {}
        self.values: list[Any] = []
        self.custom_equal = type(model).equal is not Model.equal
        self._bytes = 0
        self._sized = 0

    def intern(self, state: Any) -> int:
        """The id of ``state``, adding it if it is new."""
        if self.custom_equal:
            for sid, other in enumerate(self.values):
                if self.model.equal(other, state):
                    return sid
        else:
            known = self.by_value.get(state)
            if known is not None:
                return known
            self.by_value[state] = len(self.values)
        self.values.append(state)
        return len(self.values) - 1

    def bytes_used(self) -> int:
        """Estimated bytes of the interned states (sized lazily, when asked)."""
        values = self.values
        self._bytes += sum(_state_bytes(v) for v in values[self._sized:])
        self._sized = len(values)
        return self._bytes

    def stepper(self) -> Callable[[Operation, int], int]:
        """``step(op, sid)`` -> the id of the state after ``op``, or -1 if not allowed."""
        values, by_value, model_step = self.values, self.by_value, self.model.step
        if self.custom_equal:
            def step_custom(op: Operation, sid: int) -> int:
                ok, new = model_step(values[sid], op)
                return self.intern(new) if ok else -1
            return step_custom

        def step(op: Operation, sid: int) -> int:
            ok, new = model_step(values[sid], op)
            if not ok:
                return -1
            known = by_value.get(new)
            if known is None:
                known = by_value[new] = len(values)
                values.append(new)
            return known
        return step


def _entries(oks: list[Operation]) -> tuple[list[int], list[int], list[int]]:
    """Linked list over entries 2i (call of ok op i) and 2i+1 (its return); head = 2n."""
    n = len(oks)
    events = []
    for i, op in enumerate(oks):
        if op.ret is None or op.ret <= op.call:
            raise ValueError(f"ok operation {op.index} has no return after its call")
        events.append((op.call, 2 * i))
        events.append((op.ret, 2 * i + 1))
    events.sort()
    nxt, prv, when = [-1] * (2 * n + 1), [-1] * (2 * n + 1), [0] * (2 * n + 1)
    last = 2 * n
    for t, e in events:
        nxt[last], prv[e], when[e] = e, last, t
        last = e
    return nxt, prv, when


class Search:
    """One Wing-Gong/Lowe search over the ``ok`` and ``info`` operations of a partition.

    ``prune=False`` turns off the forced reads and the model's dead-end test: slower, but its
    longest path reaches as far as any order can, which makes the clearer counterexample.

    Progress counters (``steps``, ``configurations``, ``transitions``, ``best``) are updated
    at every yield of :meth:`steps_iter` and when it finishes.
    """

    def __init__(self, ops: list[Operation], model: Model[Any], *, prune: bool = True) -> None:
        self.model = model
        self.oks = sorted((op for op in ops if op.outcome == "ok"), key=lambda o: o.call)
        self.infos = sorted((op for op in ops if op.outcome == "info"
                             and not (prune and model.read_only(op))), key=lambda o: o.call)
        self.read_only = [prune and model.read_only(op) for op in self.oks]
        self.hopeless = model.pruner(ops) if prune else None
        self._bit_of = {op.index: (i, False) for i, op in enumerate(self.oks)}
        self._bit_of.update({op.index: (j, True) for j, op in enumerate(self.infos)})
        self._lin = self._opt = 0  # the configuration _first_forced is looking at
        self._pending = self._is_pending  # bound once: no allocation per push
        self.states = States(model)
        self.init_sid = self.states.intern(model.init())
        self.steps = 0
        self.configurations = 0  # memo entries added
        self.transitions = 0  # (operation, state) results cached
        self.bitset_bits = 0  # bits of the memo's bitsets
        self._forced_transitions = 0
        self.best: list[int] = []  # longest linearization: i (ok op) or ~j (info op)
        self.released = False
        n, ni = len(self.oks), len(self.infos)
        self._config_bytes = _INT_BYTES + (_SET_SLOT_BYTES if not ni else _INFO_ENTRY_BYTES)
        self._fixed_bytes = (2 * n + 1) * 3 * 8 + (n + ni) * (64 + _STACK_ENTRY_BYTES)

    def memory_bytes(self) -> int:
        """Estimated bytes held by this search (memo, caches, states, lists), 0 once released."""
        if self.released:
            return 0
        return (self.configurations * self._config_bytes + self.bitset_bits // _BITS_PER_4_BYTES * 4
                + self.transitions * _TRANSITION_BYTES
                + self.states.bytes_used() + self._fixed_bytes)

    def release(self) -> None:
        """Forget the interned states (the generator's memo goes with the generator)."""
        self.released = True
        self.states = States(self.model)

    def _progress(self, steps: int, configurations: int, transitions: int,
                  bitset_bits: int) -> None:
        self.steps, self.configurations = steps, configurations
        self.transitions = transitions + self._forced_transitions
        self.bitset_bits = bitset_bits

    def steps_iter(self) -> Generator[None, None, SearchVerdict]:
        """Run the depth-first search, yielding every :data:`STEPS_PER_YIELD` steps."""
        if self.infos:
            return (yield from self._run_info())
        return (yield from self._run_plain())

    def run(self) -> SearchVerdict:
        """Run the search to its end, without bounds."""
        gen = self.steps_iter()
        while True:
            try:
                next(gen)
            except StopIteration as stop:
                verdict: SearchVerdict = stop.value
                return verdict

    def _first_forced(self, nxt: list[int], trans: list[dict[int, int]],
                      step: Callable[[Operation, int], int], memo: list[Any], entry: int,
                      sid: int, lin: int, opt: int) -> tuple[int, bool]:
        """Scan the candidates for reads: ``(e, True)`` for the first read valid in state
        ``sid`` (forced), ``(1, False)`` when a read can never become valid from ``sid``
        (the model's ``hopeless``: a dead end, backtrack), else ``(entry, False)``.

        ``lin`` / ``opt`` are the linearized ok / info bitsets. Called after every push
        while the partition has read-only operations."""
        e = entry
        hopeless = self.hopeless
        self._lin, self._opt = lin, opt  # what self._is_pending answers for
        while not e & 1:
            i = e >> 1
            if self.read_only[i]:
                ns = trans[i].get(sid)
                if ns is None:
                    ns = trans[i][sid] = step(self.oks[i], sid)
                    self._forced_transitions += 1
                    while len(memo) <= ns:
                        memo.append(type(memo[0])())
                if ns == sid:
                    return e, True
                if hopeless is not None and hopeless(self.states.values[sid], self.oks[i],
                                                     self._pending):
                    return 1, False
            e = nxt[e]
        if hopeless is not None and self._dead_ahead(e, nxt, sid):
            return 1, False
        return entry, False

    def _is_pending(self, op: Operation) -> bool:
        """Whether ``op`` of this partition is not linearized in the configuration that
        :meth:`_first_forced` is looking at."""
        bit, info = self._bit_of[op.index]
        return not ((self._opt if info else self._lin) >> bit) & 1

    def _dead_ahead(self, e: int, nxt: list[int], sid: int) -> bool:
        """Whether a read invoked soon after the candidates (within a few entries of the
        first return) is already hopeless: every ``ok`` read must take effect some time."""
        hopeless = self.hopeless
        if hopeless is None:
            return False
        state = self.states.values[sid]
        for _ in range(_LOOKAHEAD_ENTRIES):
            if e < 0:
                return False
            if not e & 1 and self.read_only[e >> 1] and hopeless(state, self.oks[e >> 1],
                                                                  self._pending):
                return True
            e = nxt[e]
        return False

    def _run_plain(self) -> Generator[None, None, SearchVerdict]:
        """The search without ``info`` operations: memo is a set of bitsets per state.

        One long function on purpose: this is the hot loop, written for CPython speed.
        """
        oks = self.oks
        n = len(oks)
        nxt, prv, _ = _entries(oks)
        head = 2 * n
        trans: list[dict[int, int]] = [{} for _ in range(n)]
        step = self.states.stepper()
        sid = self.init_sid
        lin = 0
        memo: list[set[int]] = [{0}]
        stack: list[tuple[int, int]] = []
        depth = best_len = pushes = new_trans = bits = 0
        dirty = forced = False
        ro = self.read_only
        has_ro = any(ro)
        scan = partial(self._first_forced, nxt, trans, step, memo)
        remaining = n
        entry = nxt[head]
        if has_ro:
            entry, forced = scan(entry, sid, lin, 0)
        steps = 0
        next_yield = STEPS_PER_YIELD
        while remaining:
            steps += 1
            if steps >= next_yield:
                next_yield += STEPS_PER_YIELD
                self._progress(steps, pushes, new_trans, bits)
                if dirty:
                    self.best, dirty = [e >> 1 for e, _ in stack], False
                yield
            if not entry & 1:
                t = trans[entry >> 1]
                ns = t.get(sid)
                if ns is None:
                    ns = t[sid] = step(oks[entry >> 1], sid)
                    new_trans += 1
                    while len(memo) <= ns:
                        memo.append(set())
                if ns >= 0:
                    nl = lin | (1 << (entry >> 1))
                    seen = memo[ns]
                    if nl not in seen:
                        seen.add(nl)
                        pushes += 1
                        bits += nl.bit_length()
                        stack.append((entry, ~sid if forced else sid))
                        forced = False
                        depth += 1
                        if depth > best_len:
                            best_len, dirty = depth, True
                        lin, sid = nl, ns
                        a, b = prv[entry], nxt[entry]
                        nxt[a] = b
                        if b >= 0:
                            prv[b] = a
                        entry += 1
                        a, b = prv[entry], nxt[entry]
                        nxt[a] = b
                        if b >= 0:
                            prv[b] = a
                        remaining -= 1
                        entry = nxt[head]
                        if has_ro:  # a read valid now goes first, alone (see module doc)
                            entry, forced = scan(entry, sid, lin, 0)
                        continue
                if forced:  # the forced read's configuration was explored: unwind
                    entry, forced = 1, False
                    continue
                entry = nxt[entry]
                continue
            if not stack:
                self._progress(steps, pushes, new_trans, bits)
                return "not-linearizable"
            if dirty:  # leaving the longest path found so far: keep it
                self.best, dirty = [e >> 1 for e, _ in stack], False
            entry, sid = stack.pop()
            depth -= 1
            unwind = sid < 0
            if unwind:
                sid = ~sid
            lin &= ~(1 << (entry >> 1))
            r = entry + 1
            a, b = prv[r], nxt[r]
            nxt[a] = r
            if b >= 0:
                prv[b] = r
            a, b = prv[entry], nxt[entry]
            nxt[a] = entry
            if b >= 0:
                prv[b] = entry
            remaining += 1
            entry = 1 if unwind else nxt[entry]  # 1: any return entry, i.e. backtrack
        self._progress(steps, pushes, new_trans, bits)
        return "linearizable"

    def _run_info(self) -> Generator[None, None, SearchVerdict]:
        """The search with optional ``info`` operations (see the module docstring).

        The memo maps, per state, an ok-bitset to the info-bitsets visited with it; a new
        configuration is pruned when a visited one used a subset of its info operations.
        ``depth`` counts the ``ok`` operations on the stack: the longest path kept for the
        counterexample is the one that linearized the most ``ok`` operations (a path with
        more ``info`` operations is not further along in time).
        One long function on purpose: this is the hot loop, written for CPython speed.
        """
        oks, infos = self.oks, self.infos
        n, ni = len(oks), len(infos)
        nxt, prv, when = _entries(oks)
        head = 2 * n
        icall = [op.call for op in infos]
        trans: list[dict[int, int]] = [{} for _ in range(n)]
        itrans: list[dict[int, int]] = [{} for _ in range(ni)]
        step = self.states.stepper()
        sid = self.init_sid
        lin = opt = 0  # bitsets of linearized ok ops / info ops
        memo: list[dict[int, list[int]]] = [{0: [0]}]
        stack: list[tuple[int, int, int]] = []  # (call entry or ~info, previous sid, resume)
        depth = best_len = pushes = new_trans = bits = 0
        dirty = forced = False
        ro = self.read_only
        has_ro = any(ro)
        scan = partial(self._first_forced, nxt, trans, step, memo)
        remaining = n
        entry = nxt[head]
        j = -1  # position in the info scan, while entry is a return
        if has_ro:
            entry, forced = scan(entry, sid, lin, opt)
            if entry & 1:
                j = ni - 1
        steps = 0
        next_yield = STEPS_PER_YIELD
        while remaining:
            steps += 1
            if steps >= next_yield:
                next_yield += STEPS_PER_YIELD
                self._progress(steps, pushes, new_trans, bits)
                if dirty:
                    self.best = [e >> 1 if e >= 0 else e for e, _, _ in stack]
                    dirty = False
                yield
            if not entry & 1:  # a call entry: try ok op entry>>1 next
                t = trans[entry >> 1]
                ns = t.get(sid)
                if ns is None:
                    ns = t[sid] = step(oks[entry >> 1], sid)
                    new_trans += 1
                    while len(memo) <= ns:
                        memo.append({})
                if ns >= 0:
                    nl = lin | (1 << (entry >> 1))
                    by_lin = memo[ns]
                    seen = by_lin.get(nl)
                    if seen is None:
                        by_lin[nl] = [opt]
                    else:
                        for x in seen:
                            if not x & ~opt:
                                break
                        else:
                            seen.append(opt)
                            x = -1
                        if x >= 0:  # dominated by a visited configuration
                            if forced:
                                entry, forced, j = 1, False, ni - 1
                            else:
                                entry = nxt[entry]
                            continue
                    pushes += 1
                    bits += nl.bit_length()
                    stack.append((entry, sid, -1 if forced else 0))
                    forced = False
                    depth += 1
                    if depth > best_len:
                        best_len, dirty = depth, True
                    lin, sid = nl, ns
                    a, b = prv[entry], nxt[entry]
                    nxt[a] = b
                    if b >= 0:
                        prv[b] = a
                    entry += 1
                    a, b = prv[entry], nxt[entry]
                    nxt[a] = b
                    if b >= 0:
                        prv[b] = a
                    remaining -= 1
                    entry = nxt[head]
                    if has_ro:  # a read valid now goes first, alone (see module doc)
                        entry, forced = scan(entry, sid, lin, opt)
                        if entry & 1:  # a dead end: no info operation can help either
                            j = ni - 1
                    continue
                if forced:  # the forced read's configuration was explored: unwind
                    entry, forced, j = 1, False, ni - 1
                    continue
                entry = nxt[entry]
                continue
            # a return entry: the ok candidates are exhausted; try optional info ops
            bound = when[entry]
            j += 1
            while j < ni and icall[j] < bound:
                if not (opt >> j) & 1:
                    t = itrans[j]
                    ns = t.get(sid)
                    if ns is None:
                        ns = t[sid] = step(infos[j], sid)
                        new_trans += 1
                        while len(memo) <= ns:
                            memo.append({})
                    if ns >= 0:
                        no = opt | (1 << j)
                        by_lin = memo[ns]
                        seen = by_lin.get(lin)
                        if seen is None:
                            by_lin[lin] = [no]
                            break
                        for x in seen:
                            if not x & ~no:
                                break
                        else:
                            seen.append(no)
                            break
                j += 1
            if j < ni and icall[j] < bound:  # info op j taken
                pushes += 1
                bits += (opt | (1 << j)).bit_length()
                stack.append((~j, sid, entry))
                opt |= 1 << j
                sid = itrans[j][sid]
                entry = nxt[head]
                j = -1
                if has_ro:
                    entry, forced = scan(entry, sid, lin, opt)
                    if entry & 1:  # a dead end: no info operation can help either
                        j = ni - 1
                continue
            if not stack:
                self._progress(steps, pushes, new_trans, bits)
                return "not-linearizable"
            if dirty:  # leaving the longest path found so far: keep it
                self.best, dirty = [e >> 1 if e >= 0 else e for e, _, _ in stack], False
            e, sid, resume = stack.pop()
            if e < 0:  # undo an info op; resume the info scan after it
                j = ~e
                opt &= ~(1 << j)
                entry = resume
                continue
            depth -= 1
            lin &= ~(1 << (e >> 1))
            r = e + 1
            a, b = prv[r], nxt[r]
            nxt[a] = r
            if b >= 0:
                prv[b] = r
            a, b = prv[e], nxt[e]
            nxt[a] = e
            if b >= 0:
                prv[b] = e
            remaining += 1
            if resume < 0:  # a forced read: its configuration has no other choice
                entry, j = 1, ni - 1
            else:
                entry, j = nxt[e], -1
        self._progress(steps, pushes, new_trans, bits)
        return "linearizable"

    def linearized_count(self) -> int:
        """Operations in the longest linearization found so far."""
        return len(self.best)

    def counterexample(self) -> tuple[list[Operation], list[str], str, list[Operation],
                                      int | None]:
        """Replay the longest linearization; find the operations that could not come next.

        Returns ``(prefix, states after each, final state, unplaced, fail time)``.
        """
        model, states = self.model, States(self.model)
        sid = states.intern(model.init())
        prefix: list[Operation] = []
        described: list[str] = []
        for k in self.best:
            op = self.oks[k] if k >= 0 else self.infos[~k]
            ok, new = model.step(states.values[sid], op)
            if not ok:
                raise RuntimeError(f"the recorded linearization does not replay at {op}")
            sid = states.intern(new)
            prefix.append(op)
            described.append(model.describe_state(states.values[sid]))
        final = states.values[sid]
        done = {op.index for op in prefix}
        pending = [op for op in self.oks if op.index not in done]
        if not pending:
            return prefix, described, model.describe_state(final), [], None
        blocking = min(pending, key=lambda o: o.ret if o.ret is not None else 0)
        bound = blocking.ret if blocking.ret is not None else 0
        stuck = [op for op in pending
                 if op.call < bound and op is not blocking and not model.step(final, op)[0]]
        hopeless = self.hopeless
        placed = {op.index for op in prefix}

        def unplaced(op: Operation) -> bool:
            return op.index not in placed
        doomed = [] if hopeless is None else [
            op for op in pending if model.read_only(op) and hopeless(final, op, unplaced)]
        if doomed:  # reads no later operation can satisfy: the real obstacle
            return (prefix, described, model.describe_state(final), doomed[:1],
                    doomed[0].ret)
        return prefix, described, model.describe_state(final), [blocking, *stuck], blocking.ret

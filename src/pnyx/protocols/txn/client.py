"""The transaction coordinator as a simulated client of the sharded store (pure): the
simulator's driver of :mod:`pnyx.protocols.txn.coordinator`, whose generators hold the
protocol (the same ones :class:`pnyx.services.txn.TxnStore` runs on real processes).
This module maps their effects to the simulated world: commands become messages routed
through the cached range map, waits become ticks, back-off and crash points draw from the
seeded RNG.

One transaction at a time, drawn from the workloads (bank and list-append, half each):

1. **start timestamp** from the allocator (an :class:`AllocTs` log command of the range
   holding :data:`TS_KEY`);
2. **reads** of every key the program reads, at the start timestamp, in parallel.  A read
   blocked by a lock waits ``lock_wait_ticks``, then asks the lock's primary how its
   transaction ended (:class:`CheckTxnStatus`, rolling a plain lock back) — for an
   async-commit lock, all its keys (:class:`CheckSecondaryLocks`) — and resolves the key
   (roll forward or back), then reads again.  With ``scan_share`` > 0 a share of the bank's
   reads of all accounts and of the list-append transactions read their keys with one
   :class:`Scan` instead: range by range in key order (the cached range map routes each
   page by its first key; ``key_not_in_range`` after a split refreshes the map and sends
   the page again), a lock stopping a page is resolved as for a get and the scan goes on
   from the locked key;
3. **commit**, by mode:

   - ``percolator``: prewrite every key (grouped by range, in parallel; the primary is the
     smallest key), then a commit timestamp from the allocator, then commit the primary
     (the commit point), then the secondaries without waiting;
   - ``async-commit``: prewrite with async locks (the primary lists the secondaries); the
     transaction is committed once every prewrite succeeded, at the largest
     ``min_commit_ts`` they returned; the keys are committed afterwards without waiting;
   - ``1pc``: as async commit, but a transaction whose keys all live in one range (per the
     cached range map) is one :class:`Prewrite` with ``one_pc`` (commits in one command);
   - ``2pc``: as ``percolator`` (prepare, decision record in the primary's group, phase 2),
     plus a read lock on every key read and not written (serializable) — every key the
     program reads and every key a scan listed.  Scans take no range lock: a key inserted
     into a scanned interval after the start timestamp (a phantom) is not prevented, so a
     transaction whose writes depend on the *absence* of keys it did not name is not
     serializable (the workloads name every key they depend on).

A refused prewrite (write conflict, another lock, rolled back) aborts the attempt: the
coordinator rolls its keys back, resolves the lock it met, backs off and retries (at most
``max_attempts``).  The history records ``fail`` only when the rollback was acknowledged
everywhere, ``ok`` when a rollback found the transaction committed (async commit: a
resolver may commit it first), ``info`` when unsure.

**Coordinator crashes**: before each step (after the start timestamp, after the reads,
after sending the first prewrite, before the commit timestamp, before the primary commit,
before the secondaries' commits) the coordinator crashes with ``crash_probability``: it
forgets the transaction (recorded ``info``), leaving its locks to readers, and restarts
after ``restart_ticks``.

Requests are routed by key with a cached range map as :mod:`pnyx.protocols.multiraft.client`
does; every command is idempotent, so a request whose answer is late is simply sent again.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

from pnyx.core import ClientReply, HistoryEvent, Message, Outbox, Quiesce, Record, Rng
from pnyx.core.history import EventType
from pnyx.protocols.multiraft.client import find_range, range_map_of, range_map_request
from pnyx.protocols.multiraft.messages import (
    GroupRequest,
    RangeDesc,
)
from pnyx.protocols.raft.messages import ClientRequest
from pnyx.protocols.txn import coordinator as core
from pnyx.protocols.txn.coordinator import (
    ACK_BEFORE_DURABLE,
    ASYNC_COMMIT,
    CLIENT_MUTANTS,
    COMMIT_TS_BEFORE_PREWRITE,
    MODES,
    ONE_PC,
    ONE_PC_SPLIT,
    PERCOLATOR,
    TWO_PC,
    merge_answers,
    split_command,
)
from pnyx.protocols.txn.messages import (
    AllocTs,
    Prewrite,
    Scan,
    TxnCommand,
    command_keys,
)
from pnyx.protocols.txn.workloads import (
    TS_KEY,
    BankConfig,
    ListAppendConfig,
    Program,
    draw_bank,
    draw_list_append,
)

CRASH_STEPS = ("start", "reads", "prewriting", "commit_ts", "primary", "secondaries")
RETRIED_ERRORS = frozenset({"not_leader", "busy", "transferring", "leadership_lost"})
STALE_ROUTE_ERRORS = frozenset({"key_not_in_range", "range_not_found"})


@dataclass(frozen=True)
class TxnClientConfig:
    """Knobs of a coordinator; times in ticks."""

    mode: str = PERCOLATOR
    attempt_ticks: int = 25
    """A request unanswered this long is sent again (to another replica)."""
    give_up_ticks: int = 400
    """A transaction still undecided this long after its invocation is given up."""
    lock_wait_ticks: int = 15
    """How long a reader waits on a lock before resolving it."""
    max_attempts: int = 4
    backoff_ticks: int = 6
    """Back-off before attempt n is drawn from ``[0, backoff_ticks * 2**n)``."""
    max_think_ticks: int = 3
    crash_probability: float = 0.02
    """Chance of a coordinator crash before each step of :data:`CRASH_STEPS`."""
    restart_ticks: int = 10
    bank: BankConfig = field(default_factory=BankConfig)
    lists: ListAppendConfig = field(default_factory=ListAppendConfig)
    bank_share: float = 0.5
    mutants: frozenset[str] = frozenset()
    scan_share: float = 0.0
    """Chance that a bank read of all accounts or a list-append transaction reads its keys
    with one scan instead of gets.  0 (the default) draws nothing from the RNG, so runs are
    those of a client without scans, seed for seed."""
    scan_limit: int = 3
    """Values one scan command lists at most (small, so that scans go on page by page)."""

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown transaction mode {self.mode!r}; valid: {', '.join(MODES)}")
        unknown = self.mutants - CLIENT_MUTANTS
        if unknown:
            raise ValueError(f"unknown client mutants {sorted(unknown)}")
        if not 0.0 <= self.scan_share <= 1.0:
            raise ValueError(f"scan_share {self.scan_share} not in [0, 1]")
        names = ("attempt_ticks", "give_up_ticks", "max_attempts", "restart_ticks", "scan_limit")
        for name in names:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.crash_probability < 1.0:
            raise ValueError(f"crash_probability {self.crash_probability} not in [0, 1)")


Done = Callable[[Any], None]
"""Called with a request's result, or None when it was given up."""


class _Call:
    __slots__ = ("command", "deadline_tick", "on_done", "request_id", "route_key", "sent_tick")

    def __init__(self, command: TxnCommand, on_done: Done, deadline_tick: int) -> None:
        self.command = command
        self.route_key = command_keys(command)[0]
        self.on_done = on_done
        self.deadline_tick = deadline_tick
        self.request_id = 0
        self.sent_tick = 0


class _Txn:
    """One transaction (all attempts), from invocation to its recorded outcome."""

    def __init__(self, program: Program, deadline_tick: int) -> None:
        self.program = program
        self.deadline_tick = deadline_tick
        self.values: dict[str, Any] = {}
        """The current attempt's reads (filled by the coordinator's generators)."""


class _Root:
    """One transaction's generator as it runs: attached to its transaction until the
    outcome is decided, then (committing the secondaries) detached."""

    def __init__(self, txn: _Txn) -> None:
        self.txn = txn
        self.detached = False
        self.dead = False


class _Task:
    """A generator of the coordinator being driven (the root or a forked child)."""

    __slots__ = ("alive", "gen", "on_error", "on_return", "root")

    def __init__(
        self,
        gen: Generator[Any, Any, Any],
        root: _Root,
        on_return: Callable[[Any], None],
        on_error: Callable[[Exception], None],
    ) -> None:
        self.gen = gen
        self.root = root
        self.on_return = on_return
        self.on_error = on_error
        self.alive = True


class TxnClient(Outbox):
    """A transaction coordinator (implements :class:`pnyx.core.Node` as a client process)."""

    def __init__(
        self, client_id: int, node_ids: tuple[int, ...], rng: Rng, config: TxnClientConfig
    ) -> None:
        if not node_ids:
            raise ValueError(f"client {client_id} needs at least one node")
        super().__init__()
        self.node_id = client_id
        self.cfg = config
        self._nodes = node_ids
        self._rng = rng
        self.ranges: list[RangeDesc] = []
        self._leaders: dict[int, int] = {}
        self._now = 0
        self._request_id = 0
        self._calls: dict[int, _Call] = {}
        self._parked: list[_Call] = []
        """Calls waiting for a fresh range map."""
        self._refreshing = 0
        self._refresh_sent = 0
        self._timers: list[tuple[int, int, Callable[[], None]]] = []
        self._timer_seq = 0
        self._txn: _Txn | None = None
        self._idle_until = rng.randrange(0, config.max_think_ticks + 1)
        self._stopped = False
        self._next_value = client_id * 1_000_000
        self.stats: dict[str, int] = {}
        """Counters: committed, aborted attempts, resolutions, crashes by step, ..."""

    # -- node contract ----------------------------------------------------------------------

    def step(self, msg: Message, from_id: int) -> None:
        if isinstance(msg, Quiesce):
            self._stopped = True
        elif isinstance(msg, ClientReply):
            self._on_reply(msg)

    def tick(self) -> None:
        self._now += 1
        if self._refreshing and self._now - self._refresh_sent >= self.cfg.attempt_ticks // 2:
            self._refresh()
        self._tick_calls()
        self._fire_timers()
        if self._txn is None and not self._stopped and self._now >= self._idle_until:
            self._start_txn()

    # -- bookkeeping ------------------------------------------------------------------------

    def _count(self, name: str, n: int = 1) -> None:
        self.stats[name] = self.stats.get(name, 0) + n

    def _after(self, ticks: int, fn: Callable[[], None]) -> None:
        self._timer_seq += 1
        self._timers.append((self._now + ticks, self._timer_seq, fn))

    def _fire_timers(self) -> None:
        due = sorted(t for t in self._timers if t[0] <= self._now)
        if not due:
            return
        self._timers = [t for t in self._timers if t[0] > self._now]
        for _, _, fn in due:
            fn()

    def _record(self, outcome: EventType, program: Program, value: Any) -> None:
        event = HistoryEvent(self.node_id, outcome, program.f, value)
        self._ready.record.append(Record(event))

    def _crashes(self, step: str) -> bool:
        """Maybe crash before ``step``: forget the transaction (outcome unknown)."""
        txn = self._txn
        if txn is None or self._rng.random() >= self.cfg.crash_probability:
            return False
        self._count(f"crash_{step}")
        self._record("info", txn.program, txn.program.invocation())
        self._txn = None
        self._calls.clear()
        self._parked.clear()
        self._timers.clear()
        self._idle_until = self._now + self.cfg.restart_ticks
        return True

    def _finish(self, txn: _Txn, outcome: EventType, value: Any) -> None:
        if self._txn is not txn:
            return
        self._count(f"txn_{outcome}")
        self._record(outcome, txn.program, value)
        self._txn = None
        self._idle_until = self._now + self._rng.randrange(0, self.cfg.max_think_ticks + 1)

    # -- a transaction ----------------------------------------------------------------------

    def _draw(self) -> Program:
        if self._rng.random() < self.cfg.bank_share:
            return draw_bank(self.cfg.bank, self._rng)
        program = draw_list_append(self.cfg.lists, self._rng, self._next_value)
        self._next_value += 10
        return program

    def _start_txn(self) -> None:
        program = self._draw()
        txn = self._txn = _Txn(program, self._now + self.cfg.give_up_ticks)
        self._record("invoke", program, program.invocation())
        ctx = core.Context(self.cfg.mode, mutants=self.cfg.mutants, count=self._count)
        gen = core.run_program(
            ctx, program, self._rng, self.cfg.scan_share, self.cfg.scan_limit, txn.values
        )
        root = _Root(txn)
        task = _Task(gen, root, lambda result: self._on_program_end(root, result), _reraise)
        self._advance(task, None)

    def _on_program_end(self, root: _Root, result: Any) -> None:
        """The program's generator returned its outcome, or None when the outcome was decided
        (and recorded) before."""
        if result is None:
            return
        outcome, txn = result, root.txn
        if outcome.kind == core.OK:
            self._decided(root, outcome)
        elif outcome.kind == core.INDETERMINATE:
            self._finish(txn, "info", None)
        else:
            self._finish(txn, "fail", None)

    def _decided(self, root: _Root, outcome: core.Outcome) -> None:
        txn = root.txn
        if outcome.wrote:
            self._count(f"committed_{self.cfg.mode}")
        root.detached = True
        self._finish(txn, "ok", txn.program.output(txn.values))

    # -- driving the coordinator's generators --------------------------------------------------

    def _live(self, task: _Task) -> bool:
        """True while ``task`` runs: not abandoned, its transaction not crashed (a detached
        task lives on until it crashes itself)."""
        root = task.root
        if not task.alive or root.dead:
            return False
        return root.detached or self._txn is root.txn

    def _resume(self, task: _Task) -> Callable[[Any], None]:
        return lambda value: self._advance(task, value)

    def _advance(self, task: _Task, value: Any, error: Exception | None = None) -> None:
        """Run ``task`` until it waits for an answer (or ends)."""
        for _ in range(1_000_000):  # bounded: every effect answered at once is a step
            if not self._live(task):
                return
            try:
                effect = task.gen.throw(error) if error is not None else task.gen.send(value)
            except StopIteration as stop:
                task.alive = False
                task.on_return(stop.value)
                return
            except (core.NoAnswer, core.LockedOut) as exc:
                task.alive = False
                task.on_error(exc)
                return
            error = None
            done, value = self._effect(task, effect)
            if not done:
                return
        raise RuntimeError("a coordinator generator ran 1000000 steps without waiting")

    def _effect(self, task: _Task, effect: Any) -> tuple[bool, Any]:
        """Carry out ``effect``: (True, answer) when answered at once, (False, None) when
        the answer comes later (the task is resumed then)."""
        kind = type(effect)
        if kind is core.Groups:
            return True, self._group_keys(list(effect.keys))
        if kind is core.OneRange:
            return True, self._one_range(list(effect.keys))
        if kind is core.Retry:
            return True, self._backoff(task.root.txn, effect.attempt)
        if kind is core.Decided:
            self._decided(task.root, effect.outcome)
            return True, None
        if kind is core.Crash:
            return self._crash_point(task, effect.step), None
        if kind is core.Calls and not effect.wait:
            for command in effect.commands:
                self._call(command, None, lambda r: None)
            return True, None
        self._wait_for(task, effect)
        return False, None

    def _wait_for(self, task: _Task, effect: Any) -> None:
        kind = type(effect)
        txn = None if task.root.detached else task.root.txn
        if kind is core.Call:
            self._call(effect.command, txn, self._resume(task))
        elif kind is core.Timestamp:
            self._call(AllocTs(TS_KEY), txn, self._resume(task))
        elif kind is core.Calls:
            self._parallel(task, effect.commands, txn)
        elif kind is core.LockWait:
            self._after(self.cfg.lock_wait_ticks, lambda: self._advance(task, None))
        elif kind is core.Sleep:
            self._after(int(effect.delay), lambda: self._advance(task, None))
        elif kind is core.Fork:
            self._fork(task, effect)
        else:
            raise TypeError(f"unknown coordinator effect {effect!r}")

    def _parallel(self, task: _Task, commands: tuple[TxnCommand, ...], txn: _Txn | None) -> None:
        answers: list[Any] = [None] * len(commands)
        left = [len(commands)]

        def answer(i: int) -> Done:
            def done(result: Any) -> None:
                if not self._live(task):
                    return
                answers[i] = result
                left[0] -= 1
                if left[0] == 0:
                    self._advance(task, answers)

            return done

        if not commands:
            self._advance(task, answers)
        for i, command in enumerate(commands):
            self._call(command, txn, answer(i))

    def _fork(self, parent: _Task, fork: core.Fork) -> None:
        children: list[_Task] = []
        left = [len(fork.tasks)]

        def returned(_result: Any) -> None:
            left[0] -= 1
            if left[0] == 0:
                self._advance(parent, None)

        def failed(exc: Exception) -> None:
            for child in children:
                child.alive = False
            self._advance(parent, None, exc)

        if not fork.tasks:
            self._advance(parent, None)
        for i, gen in enumerate(fork.tasks):
            child = _Task(gen, parent.root, returned, failed)
            children.append(child)
            self._advance(child, None)
            step = fork.crash_after_first
            if i == 0 and step and not self._crash_point(parent, step):
                return

    def _crash_point(self, task: _Task, step: str) -> bool:
        """A crash point: True to go on, False when the coordinator crashed here."""
        root = task.root
        if not root.detached:
            return not self._crashes(step)
        # After the outcome was recorded: the rest of the commit is lost.
        if self._rng.random() >= self.cfg.crash_probability:
            return True
        root.dead = True
        self._count(f"crash_{step}")
        if step == "secondaries":
            self._calls.clear()
            self._parked.clear()
            self._timers.clear()
        self._idle_until = self._now + self.cfg.restart_ticks
        return False

    def _backoff(self, txn: _Txn, attempt: int) -> int | None:
        """Ticks before attempt ``attempt + 1``, or None when there is none."""
        retry = attempt < self.cfg.max_attempts and not self._stopped
        if not (retry and self._now < txn.deadline_tick):
            return None
        return self._rng.randrange(0, self.cfg.backoff_ticks * 2**attempt)

    # -- requests and routing ---------------------------------------------------------------------

    def _call(self, command: TxnCommand, txn: _Txn | None, on_done: Done) -> None:
        deadline = txn.deadline_tick if txn is not None else self._now + self.cfg.give_up_ticks
        call = _Call(command, on_done, deadline)
        self._send_call(call)

    def _send_call(self, call: _Call) -> None:
        desc = self._lookup(call.route_key)
        if desc is None:
            call.request_id = 0
            self._parked.append(call)
            if not self._refreshing:
                self._refresh()
            return
        target = self._leaders.get(desc.range_id)
        if target is None or target not in desc.replicas:
            target = desc.replicas[self._rng.randrange(0, len(desc.replicas))]
        self._request_id += 1
        call.request_id = self._request_id
        call.sent_tick = self._now
        self._calls[call.request_id] = call
        request = ClientRequest(call.request_id, call.command)
        self._send(target, GroupRequest(desc.range_id, request))

    def _tick_calls(self) -> None:
        for rid in sorted(self._calls):
            call = self._calls.get(rid)
            if call is None or self._now - call.sent_tick < self.cfg.attempt_ticks:
                continue
            del self._calls[rid]
            desc = self._lookup(call.route_key)
            if desc is not None:
                self._leaders.pop(desc.range_id, None)
            self._resend_or_give_up(call)

    def _resend_or_give_up(self, call: _Call) -> None:
        if self._now >= call.deadline_tick:
            call.on_done(None)
        else:
            self._send_call(call)

    def _on_reply(self, reply: ClientReply) -> None:
        if reply.request_id == self._refreshing:
            self._on_map(reply)
            return
        call = self._calls.pop(reply.request_id, None)
        if call is None:
            return
        if reply.ok:
            call.on_done(reply.result)
            return
        desc = self._lookup(call.route_key)
        if reply.error in STALE_ROUTE_ERRORS:
            if type(call.command) is Scan:
                self._count("scan_reroutes")
            if type(call.command) is Prewrite and call.command.one_pc:
                call.on_done({"error": ONE_PC_SPLIT})
                if not self._refreshing:
                    self._refresh()
                return
            if len(command_keys(call.command)) > 1:
                self._split_call(call)
                return
            self._parked.append(call)
            self._refresh()
            return
        if reply.error in RETRIED_ERRORS and desc is not None:
            hint = reply.leader_hint
            if hint is not None and hint in desc.replicas:
                self._leaders[desc.range_id] = hint
            else:
                self._leaders.pop(desc.range_id, None)
            self._resend_or_give_up(call)
            return
        call.on_done(None)  # refused outright (e.g. malformed): a bug, reported as unknown

    def _split_call(self, call: _Call) -> None:
        """A multi-key command met a split: send it again key by key, answering once all
        answered (results merged)."""
        cmd = call.command
        keys = command_keys(cmd)
        parts: list[Any] = [None] * len(keys)
        left = [len(keys)]

        def part(i: int) -> Done:
            def done(result: Any) -> None:
                parts[i] = result
                left[0] -= 1
                if left[0] == 0:
                    call.on_done(merge_answers(cmd, parts))

            return done

        for i, key in enumerate(keys):
            sub = split_command(cmd, key)
            sub_call = _Call(sub, part(i), call.deadline_tick)
            self._parked.append(sub_call)
        self._refresh()

    def _one_range(self, keys: list[str]) -> bool:
        descs = {d.range_id for k in keys if (d := self._lookup(k)) is not None}
        return len(descs) == 1 and all(self._lookup(k) is not None for k in keys)

    def _group_keys(self, keys: list[str]) -> list[list[str]]:
        """``keys`` grouped by the range the cached map puts them in (unknown: alone)."""
        groups: dict[int, list[str]] = {}
        alone: list[list[str]] = []
        for key in keys:
            desc = self._lookup(key)
            if desc is None:
                alone.append([key])
            else:
                groups.setdefault(desc.range_id, []).append(key)
        return [groups[r] for r in sorted(groups)] + alone

    def _lookup(self, key: str) -> RangeDesc | None:
        return find_range(self.ranges, key)

    def _refresh(self) -> None:
        self._count("map_refreshes")
        self._request_id += 1
        self._refreshing = self._request_id
        self._refresh_sent = self._now
        node = self._nodes[self._rng.randrange(0, len(self._nodes))]
        self._send(node, range_map_request(self._request_id))

    def _on_map(self, reply: ClientReply) -> None:
        self._refreshing = 0
        self.ranges = range_map_of(reply, self.ranges)
        parked, self._parked = self._parked, []
        for call in parked:
            self._resend_or_give_up(call)



def _reraise(exc: Exception) -> None:
    raise exc


__all__ = [
    "ACK_BEFORE_DURABLE",
    "ASYNC_COMMIT",
    "CLIENT_MUTANTS",
    "COMMIT_TS_BEFORE_PREWRITE",
    "CRASH_STEPS",
    "MODES",
    "ONE_PC",
    "PERCOLATOR",
    "TWO_PC",
    "TxnClient",
    "TxnClientConfig",
]

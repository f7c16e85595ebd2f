"""The transaction coordinator as a simulated client of the sharded store (pure).

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

from collections.abc import Callable
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
from pnyx.protocols.txn.messages import (
    ALREADY_COMMITTED,
    COMMITTED,
    LOCKED,
    ROLLED_BACK,
    AllocTs,
    CheckSecondaryLocks,
    CheckTxnStatus,
    Get,
    GetResult,
    Lock,
    Mutation,
    Prewrite,
    PrewriteResult,
    Resolve,
    ResolveResult,
    Scan,
    ScanResult,
    TxnCommand,
    TxnStatus,
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

PERCOLATOR = "percolator"
TWO_PC = "2pc"
"""Two-phase commit over the Raft groups, serializable: as ``percolator`` (prepare = the
prewrites, the decision record = the primary's commit record in its own group, phase 2 =
the secondaries), and every key read but not written is validated and read-locked in the
prepare (no write since the start timestamp, none until the commit)."""
ASYNC_COMMIT = "async-commit"
ONE_PC = "1pc"
MODES = (PERCOLATOR, ASYNC_COMMIT, ONE_PC, TWO_PC)
TWO_PHASE_MODES = (PERCOLATOR, TWO_PC)
"""Modes whose commit point is the primary's commit record at a timestamp from the
allocator."""

COMMIT_TS_BEFORE_PREWRITE = "commit_ts_before_prewrite"
"""Mutant (percolator mode): the commit timestamp is taken before the prewrites are sent,
so a reader between the two timestamps may miss a lock that lands after its read."""
ACK_BEFORE_DURABLE = "ack_before_durable"
"""Mutant (2pc mode): the coordinator acknowledges the commit before the decision record
is durable (before the primary's commit answered), so a crash or a resolver may still
abort an acknowledged transaction."""
CLIENT_MUTANTS: frozenset[str] = frozenset({COMMIT_TS_BEFORE_PREWRITE, ACK_BEFORE_DURABLE})

CRASH_STEPS = ("start", "reads", "prewriting", "commit_ts", "primary", "secondaries")
ONE_PC_SPLIT = "one_pc_split"
"""The client's own marker: a 1PC prewrite met a split (its keys now span ranges)."""
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
        self.attempt = 0
        self.start_ts = 0
        self.commit_ts = 0
        self.values: dict[str, Any] = {}
        self.writes: dict[str, Any] = {}
        self.mutations: dict[str, Mutation] = {}
        """What the prewrites lock, by key: the writes, and in 2pc mode read locks."""
        self.primary = ""
        self.waiting = 0
        """Answers still awaited in the current step."""
        self.refused: PrewriteResult | None = None
        self.min_commit_ts = 0
        self.one_pc_done = False
        """A prewrite of all keys answered committed (1PC, or resolved by a reader)."""
        self.rollback_committed = False
        self.scanned: tuple[str, ...] = ()
        """Keys a scan of this attempt listed (2pc read-locks them too)."""


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

    def _live(self, txn: _Txn, attempt: int) -> bool:
        """True while ``txn``'s attempt ``attempt`` is the one running (no crash since)."""
        return self._txn is txn and txn.attempt == attempt

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
        self._begin_attempt(txn)

    def _begin_attempt(self, txn: _Txn) -> None:
        txn.attempt += 1
        txn.values, txn.writes, txn.mutations, txn.refused = {}, {}, {}, None
        txn.start_ts = txn.commit_ts = txn.min_commit_ts = 0
        txn.one_pc_done = False
        txn.scanned = ()
        attempt = txn.attempt
        self._call(AllocTs(TS_KEY), txn, lambda ts: self._on_start_ts(txn, attempt, ts))

    def _on_start_ts(self, txn: _Txn, attempt: int, ts: Any) -> None:
        if not self._live(txn, attempt):
            return
        if not isinstance(ts, int):
            self._finish(txn, "fail", None)  # nothing written yet
            return
        txn.start_ts = ts
        if self._crashes("start"):
            return
        keys = txn.program.reads()
        if self._scans(txn.program):
            self._scan_reads(txn, attempt, keys)
            return
        txn.waiting = len(keys)
        for key in keys:
            self._read(txn, attempt, key)

    def _scans(self, program: Program) -> bool:
        """Whether this attempt reads by scan (no RNG draw when scans are off)."""
        if self.cfg.scan_share <= 0.0 or program.f not in ("read", "txn"):
            return False
        return self._rng.random() < self.cfg.scan_share

    def _scan_reads(self, txn: _Txn, attempt: int, keys: tuple[str, ...]) -> None:
        """Read ``keys`` (sorted) with one scan of ``[keys[0], keys[-1]]``, page by page;
        a key the scan does not list is absent (None)."""
        self._count("scans")
        found: dict[str, Any] = {}
        end = keys[-1] + "\x00"  # the smallest key after the last one

        def page(cursor: str) -> None:
            if self._live(txn, attempt):
                cmd = Scan(cursor, end, txn.start_ts, self.cfg.scan_limit)
                self._count("scan_pages")
                self._call(cmd, txn, done)

        def done(result: Any) -> None:
            if not self._live(txn, attempt):
                return
            if not isinstance(result, ScanResult):
                self._finish(txn, "fail", None)  # given up before writing anything
                return
            found.update(result.items)
            lock, resume = result.lock, result.resume
            if lock is not None:
                self._count("scans_blocked")
                self._after(
                    self.cfg.lock_wait_ticks,
                    lambda: self._resolve_lock(txn, attempt, resume, lock, lambda: page(resume)),
                )
            elif resume:
                page(resume)
            else:
                txn.values = {k: found.get(k) for k in keys}
                txn.scanned = tuple(sorted(found))
                self._on_reads(txn, attempt)

        page(keys[0])

    def _read(self, txn: _Txn, attempt: int, key: str) -> None:
        def done(result: Any) -> None:
            if not self._live(txn, attempt):
                return
            if not isinstance(result, GetResult):
                self._finish(txn, "fail", None)  # given up before writing anything
            elif result.lock is not None:
                self._count("reads_blocked")
                lock = result.lock
                self._after(
                    self.cfg.lock_wait_ticks,
                    lambda: self._resolve_lock(txn, attempt, key, lock, lambda: again()),
                )
            else:
                txn.values[key] = result.value
                txn.waiting -= 1
                if txn.waiting == 0:
                    self._on_reads(txn, attempt)

        def again() -> None:
            if self._live(txn, attempt):
                self._read(txn, attempt, key)

        self._call(Get(key, txn.start_ts), txn, done)

    def _on_reads(self, txn: _Txn, attempt: int) -> None:
        if self._crashes("reads"):
            return
        txn.writes = txn.program.writes(txn.values)
        if not txn.writes:
            self._finish(txn, "ok", txn.program.output(txn.values))  # read-only: its snapshot
            return
        txn.mutations = {k: Mutation(k, v) for k, v in txn.writes.items()}
        if self.cfg.mode == TWO_PC:
            read = txn.program.reads()
            if txn.scanned:
                read = tuple(sorted({*read, *txn.scanned}))
            for key in read:
                if key not in txn.writes:
                    txn.mutations[key] = Mutation(key, None, read_only=True)
        txn.primary = min(txn.writes)
        if COMMIT_TS_BEFORE_PREWRITE in self.cfg.mutants and self.cfg.mode == PERCOLATOR:
            self._call(AllocTs(TS_KEY), txn, lambda ts: self._early_commit_ts(txn, attempt, ts))
            return
        self._prewrite(txn, attempt)

    def _early_commit_ts(self, txn: _Txn, attempt: int, ts: Any) -> None:
        if not self._live(txn, attempt):
            return
        if not isinstance(ts, int):
            self._finish(txn, "fail", None)
            return
        txn.commit_ts = ts
        self._prewrite(txn, attempt)

    # -- prewrite -------------------------------------------------------------------------------

    def _prewrite(self, txn: _Txn, attempt: int) -> None:
        keys = sorted(txn.mutations)
        one_range = self._one_range(keys)
        use_async = self.cfg.mode not in TWO_PHASE_MODES
        secondaries = tuple(k for k in keys if k != txn.primary) if use_async else ()
        one_pc = self.cfg.mode == ONE_PC and one_range
        groups = [keys] if one_pc else self._group_keys(keys)
        txn.waiting = len(groups)
        for i, group in enumerate(groups):
            muts = tuple(txn.mutations[k] for k in group)
            mine = secondaries if txn.primary in group else ()
            cmd = Prewrite(txn.start_ts, txn.primary, muts, use_async, mine, one_pc)
            self._call(cmd, txn, self._prewrite_done(txn, attempt, group))
            if i == 0 and self._crashes("prewriting"):
                return

    def _prewrite_done(self, txn: _Txn, attempt: int, group: list[str]) -> Done:
        def done(result: Any) -> None:
            self._on_prewrite(txn, attempt, group, result)

        return done

    def _on_prewrite(self, txn: _Txn, attempt: int, group: list[str], result: Any) -> None:
        if not self._live(txn, attempt):
            return
        if isinstance(result, dict) and result.get("error") == ONE_PC_SPLIT:
            # The 1PC command met a split: prewrite the keys key by key instead (async).
            secondaries = tuple(k for k in sorted(txn.mutations) if k != txn.primary)
            for key in group:
                txn.waiting += 1
                mine = secondaries if key == txn.primary else ()
                muts = (txn.mutations[key],)
                cmd = Prewrite(txn.start_ts, txn.primary, muts, True, mine)
                self._call(cmd, txn, self._prewrite_done(txn, attempt, [key]))
        elif not isinstance(result, PrewriteResult):
            txn.refused = txn.refused or PrewriteResult(ROLLED_BACK)  # unknown: roll back
        elif not result.ok:
            if txn.refused is None or result.lock is not None:
                txn.refused = result
        elif result.status == COMMITTED:
            txn.min_commit_ts = max(txn.min_commit_ts, result.commit_ts)
            txn.one_pc_done = txn.one_pc_done or len(group) == len(txn.mutations)
        else:
            txn.min_commit_ts = max(txn.min_commit_ts, result.min_commit_ts)
        txn.waiting -= 1
        if txn.waiting == 0:
            self._on_prewrites(txn, attempt)

    def _on_prewrites(self, txn: _Txn, attempt: int) -> None:
        if txn.refused is not None:
            self._abort(txn, attempt)
            return
        if self.cfg.mode in TWO_PHASE_MODES:
            if txn.commit_ts:  # the mutant took it before the prewrites
                self._commit_primary(txn, attempt)
                return
            if self._crashes("commit_ts"):
                return
            self._call(AllocTs(TS_KEY), txn, lambda ts: self._on_commit_ts(txn, attempt, ts))
            return
        # async commit / 1PC: every prewrite is durable — the transaction is committed
        txn.commit_ts = txn.min_commit_ts
        self._committed(txn)
        if not txn.one_pc_done:
            self._commit_keys(txn, sorted(txn.mutations))

    def _on_commit_ts(self, txn: _Txn, attempt: int, ts: Any) -> None:
        if not self._live(txn, attempt):
            return
        if not isinstance(ts, int):
            txn.refused = PrewriteResult(ROLLED_BACK)
            self._abort(txn, attempt)
            return
        txn.commit_ts = ts
        self._commit_primary(txn, attempt)

    def _commit_primary(self, txn: _Txn, attempt: int) -> None:
        if ACK_BEFORE_DURABLE in self.cfg.mutants and self.cfg.mode == TWO_PC:
            self._ack_then_commit(txn)
            return
        if self._crashes("primary"):
            return

        def done(result: Any) -> None:
            if not self._live(txn, attempt):
                return
            if not isinstance(result, ResolveResult):
                self._finish(txn, "info", None)  # the commit point may have been passed
            elif result.status:
                txn.refused = PrewriteResult(ROLLED_BACK)  # a resolver rolled it back
                self._abort(txn, attempt)
            else:
                self._committed(txn)
                self._commit_keys(txn, [k for k in sorted(txn.mutations) if k != txn.primary])

        self._call(Resolve((txn.primary,), txn.start_ts, txn.commit_ts), txn, done)

    def _ack_then_commit(self, txn: _Txn) -> None:
        """The mutant: acknowledge first, then make the decision durable (maybe never)."""
        self._committed(txn)
        if self._rng.random() < self.cfg.crash_probability:
            self._count("crash_primary")
            self._idle_until = self._now + self.cfg.restart_ticks
            return
        secondaries = [k for k in sorted(txn.mutations) if k != txn.primary]

        def done(result: Any) -> None:
            if isinstance(result, ResolveResult) and not result.status:
                self._commit_keys(txn, secondaries)

        self._call(Resolve((txn.primary,), txn.start_ts, txn.commit_ts), None, done)

    def _committed(self, txn: _Txn) -> None:
        self._count(f"committed_{self.cfg.mode}")
        self._finish(txn, "ok", txn.program.output(txn.values))

    def _commit_keys(self, txn: _Txn, keys: list[str]) -> None:
        """Commit the remaining keys, not waiting for the answers (readers resolve the rest)."""
        if not keys:
            return
        if self._rng.random() < self.cfg.crash_probability:
            # A crash after the commit point (already recorded): the keys stay locked.
            self._count("crash_secondaries")
            self._calls.clear()
            self._parked.clear()
            self._timers.clear()
            self._idle_until = self._now + self.cfg.restart_ticks
            return
        for group in self._group_keys(keys):
            self._call(Resolve(tuple(group), txn.start_ts, txn.commit_ts), None, lambda r: None)

    # -- abort -----------------------------------------------------------------------------------

    def _abort(self, txn: _Txn, attempt: int) -> None:
        """Roll every key back; then retry, or record the outcome."""
        self._count("aborted_attempts")
        groups = self._group_keys(sorted(txn.mutations))
        txn.waiting = len(groups)
        txn.rollback_committed = False
        unsure = [False]

        def done(result: Any) -> None:
            if not self._live(txn, attempt):
                return
            if not isinstance(result, ResolveResult):
                unsure[0] = True
            elif result.status == ALREADY_COMMITTED:
                txn.rollback_committed = True
            txn.waiting -= 1
            if txn.waiting == 0:
                self._after_rollback(txn, attempt, unsure[0])

        for group in groups:
            self._call(Resolve(tuple(group), txn.start_ts, 0), txn, done)

    def _after_rollback(self, txn: _Txn, attempt: int, unsure: bool) -> None:
        if txn.rollback_committed:
            self._count("committed_by_resolver")
            self._committed(txn)
            return
        if unsure:
            self._finish(txn, "info", None)
            return
        refused = txn.refused
        retry = (
            txn.attempt < self.cfg.max_attempts
            and not self._stopped
            and self._now < txn.deadline_tick
        )
        if not retry:
            self._finish(txn, "fail", None)
            return
        backoff = self._rng.randrange(0, self.cfg.backoff_ticks * 2**txn.attempt)
        if refused is not None and refused.lock is not None:
            lock = refused.lock
            key = refused.key or lock.primary
            self._after(
                self.cfg.lock_wait_ticks,
                lambda: self._resolve_lock(
                    txn, attempt, key, lock, lambda: self._retry(txn, attempt, backoff)
                ),
            )
            return
        self._retry(txn, attempt, backoff)

    def _retry(self, txn: _Txn, attempt: int, backoff: int) -> None:
        def begin() -> None:
            if self._live(txn, attempt):
                self._begin_attempt(txn)

        if self._live(txn, attempt):
            self._after(backoff, begin)

    # -- lock resolution ---------------------------------------------------------------------------

    def _resolve_lock(
        self, txn: _Txn, attempt: int, key: str, lock: Lock, then: Callable[[], None]
    ) -> None:
        """Decide ``lock``'s transaction from its primary (and, for an async lock, all its
        keys), resolve ``key`` and the primary accordingly, then call ``then``."""
        if not self._live(txn, attempt):
            return
        self._count("resolutions")

        def status(result: Any) -> None:
            if not self._live(txn, attempt):
                return
            if not isinstance(result, TxnStatus):
                then()
            elif result.state == LOCKED and result.lock is not None:
                self._check_secondaries(txn, attempt, key, result.lock, then)
            else:
                commit_ts = result.commit_ts if result.state == COMMITTED else 0
                self._settle(txn, attempt, lock, (key,), commit_ts, then)

        self._call(CheckTxnStatus(lock.primary, lock.start_ts, True), txn, status)

    def _check_secondaries(
        self, txn: _Txn, attempt: int, key: str, primary_lock: Lock, then: Callable[[], None]
    ) -> None:
        keys = sorted({primary_lock.primary, *primary_lock.secondaries})
        groups = self._group_keys(keys)
        states: list[TxnStatus] = []
        left = [len(groups)]
        start_ts = primary_lock.start_ts

        def done(result: Any) -> None:
            if not self._live(txn, attempt):
                return
            if isinstance(result, tuple):
                states.extend(s for s in result if isinstance(s, TxnStatus))
            else:
                states.append(TxnStatus(LOCKED, 0, None))  # unknown: decide nothing
            left[0] -= 1
            if left[0] > 0:
                return
            if any(s.state == LOCKED and s.lock is None for s in states):
                then()
                return
            if any(s.state == ROLLED_BACK for s in states):
                commit_ts = 0
            else:
                commit_ts = max(
                    s.commit_ts if s.state == COMMITTED else s.lock.min_commit_ts  # type: ignore[union-attr]
                    for s in states
                )
            self._settle(txn, attempt, primary_lock, (primary_lock.primary, key), commit_ts, then)

        for group in groups:
            self._call(CheckSecondaryLocks(tuple(group), start_ts), txn, done)

    def _settle(
        self,
        txn: _Txn,
        attempt: int,
        lock: Lock,
        keys: tuple[str, ...],
        commit_ts: int,
        then: Callable[[], None],
    ) -> None:
        self._count("rolled_forward" if commit_ts else "rolled_back")
        groups = self._group_keys(sorted(set(keys)))
        left = [len(groups)]

        def done(_result: Any) -> None:
            if not self._live(txn, attempt):
                return
            left[0] -= 1
            if left[0] == 0:
                then()

        for group in groups:
            self._call(Resolve(tuple(group), lock.start_ts, commit_ts), txn, done)

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
                    call.on_done(_merge(cmd, parts))

            return done

        for i, key in enumerate(keys):
            sub = _single(cmd, key)
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


def _single(cmd: TxnCommand, key: str) -> TxnCommand:
    """The part of multi-key ``cmd`` about ``key``."""
    if type(cmd) is Prewrite:
        muts = tuple(m for m in cmd.mutations if m.key == key)
        secondaries = cmd.secondaries if key == cmd.primary else ()
        return Prewrite(cmd.start_ts, cmd.primary, muts, cmd.use_async, secondaries, False)
    if type(cmd) is Resolve:
        return Resolve((key,), cmd.start_ts, cmd.commit_ts)
    if type(cmd) is CheckSecondaryLocks:
        return CheckSecondaryLocks((key,), cmd.start_ts)
    raise TypeError(f"{type(cmd).__name__} has one key")


def _merge(cmd: TxnCommand, parts: list[Any]) -> Any:
    """One answer for a command that was sent key by key (None if any part was lost)."""
    if any(p is None or isinstance(p, dict) for p in parts):
        return None
    if type(cmd) is CheckSecondaryLocks:
        return tuple(s for p in parts for s in p)
    if type(cmd) is Resolve:
        odd = [p for p in parts if p.status]
        if not odd:
            return ResolveResult("", (), cmd.commit_ts)
        keys = tuple(k for p in odd for k in p.keys)
        return ResolveResult(odd[0].status, keys, cmd.commit_ts)
    refused = [p for p in parts if not p.ok]
    if refused:
        return refused[0]
    # A part a resolver already committed answers its commit timestamp (the largest
    # min_commit_ts of all the transaction's locks): keep it.
    return PrewriteResult("", max(max(p.min_commit_ts, p.commit_ts) for p in parts))


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

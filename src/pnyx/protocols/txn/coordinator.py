"""The transaction coordinator's logic, once, sans I/O: generators that yield effects.

Both coordinators run these generators: the simulated client
(:class:`pnyx.protocols.txn.client.TxnClient`, ticks, messages, its cached range map, the
seeded RNG) and the real one (:class:`pnyx.services.txn.TxnStore`, asyncio, a
``RangeClient``, seconds).  A generator yields an effect, the driver carries it out in its
world and sends the answer back in:

- :class:`Call` — one command to the range holding its first key; answer: the result
  (typed, e.g. :class:`GetResult`), or None when no answer came in time;
- :class:`Calls` — commands in parallel; answer: their results in order (``wait=False``:
  the driver may resume at once and drop the answers);
- :class:`Fork` — sub-generators in parallel (started in order); answer: None once all
  returned.  One raising :class:`NoAnswer` or :class:`LockedOut` ends the fork at once
  (the others are abandoned) and the exception is thrown into the parent;
- :class:`Groups` / :class:`OneRange` — the driver's range map grouping keys;
- :class:`Timestamp` — a fresh timestamp from the allocator (None: no answer);
- :class:`LockWait` — wait the driver's lock wait before resolving a lock;
- :class:`Crash` — a crash point (the simulator may crash here and never resume);
- :class:`Retry` — whether another attempt follows and after what delay (driver units;
  None: none does);
- :class:`Sleep` — wait that delay;
- :class:`Decided` — the outcome is known (record / acknowledge it); what follows only
  finishes the commit (secondaries), in the background if the driver likes.

Pieces (all Percolator's, Peng & Dabek 2010, with TiKV's async commit and 1PC):
:func:`read` (lock met: wait, resolve, read again), :func:`scan_page`,
:func:`resolve_lock` (``CheckTxnStatus``; async locks ``CheckSecondaryLocks``; then
``Resolve``), :func:`commit` (prewrites grouped per range, the mode's commit, abort and
rollback, the outcome's classification) and :func:`run_program` (a workload program's
attempts, the simulator's transaction).
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import Any

from pnyx.core import Rng
from pnyx.protocols.txn.messages import (
    ALREADY_COMMITTED,
    COMMITTED,
    LOCKED,
    ROLLED_BACK,
    WRITE_CONFLICT,
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
from pnyx.protocols.txn.workloads import Program

PERCOLATOR = "percolator"
TWO_PC = "2pc"
ASYNC_COMMIT = "async-commit"
ONE_PC = "1pc"
MODES = (PERCOLATOR, ASYNC_COMMIT, ONE_PC, TWO_PC)
TWO_PHASE_MODES = (PERCOLATOR, TWO_PC)
"""Modes whose commit point is the primary's commit record at a timestamp from the
allocator."""

COMMIT_TS_BEFORE_PREWRITE = "commit_ts_before_prewrite"
"""Mutant (percolator mode): the commit timestamp is taken before the prewrites."""
ACK_BEFORE_DURABLE = "ack_before_durable"
"""Mutant (2pc mode): the commit is acknowledged before the decision record is durable."""
CLIENT_MUTANTS: frozenset[str] = frozenset({COMMIT_TS_BEFORE_PREWRITE, ACK_BEFORE_DURABLE})
ONE_PC_SPLIT = "one_pc_split"
"""A driver's answer to a 1PC prewrite that met a split (its keys now span ranges)."""

OK = "ok"
FAIL = "fail"
INDETERMINATE = "indeterminate"

# -- effects ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """Send ``command`` to the range holding :func:`route_key` of it; answer: its result."""

    command: TxnCommand


@dataclass(frozen=True)
class Calls:
    """Send ``commands`` in parallel; answer: their results in order (None: no answer)."""

    commands: tuple[TxnCommand, ...]
    wait: bool = True


@dataclass(frozen=True)
class Fork:
    """Run ``tasks`` in parallel, started in order; ``crash_after_first``: a crash point
    (:class:`Crash`) once the first task yielded its first effect."""

    tasks: tuple[Generator[Any, Any, Any], ...]
    crash_after_first: str = ""


@dataclass(frozen=True)
class Groups:
    """``keys`` (sorted) grouped by the range holding them; answer: ``list[list[str]]``."""

    keys: tuple[str, ...]


@dataclass(frozen=True)
class OneRange:
    """Whether the driver's map puts every key of ``keys`` in one range; answer: bool."""

    keys: tuple[str, ...]


@dataclass(frozen=True)
class Timestamp:
    """A timestamp above every one handed out before; answer: int, or None."""


@dataclass(frozen=True)
class LockWait:
    """Give a lock's owner the driver's lock wait before resolving it."""


@dataclass(frozen=True)
class Crash:
    """A point where the coordinator may crash (before ``step``)."""

    step: str


@dataclass(frozen=True)
class Retry:
    """Whether attempt ``attempt + 1`` follows; answer: its back-off delay, or None."""

    attempt: int


@dataclass(frozen=True)
class Sleep:
    """Wait ``delay`` (the driver's unit, as answered to :class:`Retry`)."""

    delay: Any


@dataclass(frozen=True)
class Decided:
    """The transaction's outcome is known (acknowledge it now)."""

    outcome: Outcome


Effect = (
    Call | Calls | Fork | Groups | OneRange | Timestamp | LockWait | Crash | Retry | Sleep | Decided
)
"""Everything a coordinator generator yields."""
Gen = Generator[Any, Any, Any]


class NoAnswer(Exception):
    """A command needed to go on got no answer in time (nothing decided by it)."""


class LockedOut(Exception):
    """A read met locks more than ``max_lock_rounds`` times."""


@dataclass(frozen=True)
class Outcome:
    """How a transaction (attempt) ended: ``kind`` ok / fail / indeterminate."""

    kind: str
    commit_ts: int = 0
    wrote: bool = False
    """ok: it committed writes (not a read-only snapshot)."""
    conflict: bool = False
    """fail: met another transaction (retrying may succeed)."""
    reason: str = ""
    retry_after: Any = None
    """fail: the driver's delay before the next attempt (None: no next attempt)."""
    by_resolver: bool = False
    """ok: found committed by a resolver while rolling back."""


@dataclass
class Context:
    """What the pieces need besides effects: the mode, bounds, mutants and a counter
    (``count(name)``: the driver's statistics)."""

    mode: str = PERCOLATOR
    max_lock_rounds: int = 1 << 30
    mutants: frozenset[str] = frozenset()
    count: Callable[[str], None] = field(default=lambda name: None)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown transaction mode {self.mode!r}; valid: {', '.join(MODES)}")
        if self.max_lock_rounds < 1:
            raise ValueError(f"max_lock_rounds must be >= 1, got {self.max_lock_rounds}")


RESULT_TYPES: dict[type, Any] = {
    Get: GetResult,
    Scan: ScanResult,
    Prewrite: PrewriteResult,
    Resolve: ResolveResult,
    CheckTxnStatus: TxnStatus,
    CheckSecondaryLocks: tuple[TxnStatus, ...],
    AllocTs: int,
}
"""The result type of each command (for drivers that decode answers from the wire)."""


def route_key(command: TxnCommand) -> str:
    """The key a command is routed by (its first key; a scan: its start)."""
    return command_keys(command)[0]


# -- reads -------------------------------------------------------------------------------------


def read(ctx: Context, key: str, start_ts: int) -> Gen:
    """The value of ``key`` at ``start_ts`` (None: absent), past any lock: wait, resolve
    it, read again.  Raises NoAnswer, LockedOut."""
    for _ in range(ctx.max_lock_rounds):
        result = yield Call(Get(key, start_ts))
        if not isinstance(result, GetResult):
            raise NoAnswer(f"read of {key!r} at {start_ts}: no answer")
        if result.lock is None:
            return result.value
        ctx.count("reads_blocked")
        yield LockWait()
        yield from resolve_lock(ctx, key, result.lock)
    raise LockedOut(f"read of {key!r}: still locked after {ctx.max_lock_rounds} rounds")


def scan_page(ctx: Context, cursor: str, end: str, start_ts: int, limit: int) -> Gen:
    """One ``Scan`` of ``[cursor, end)`` (the range holding ``cursor`` answers its part);
    a lock that stopped it is waited for and resolved.  Returns the :class:`ScanResult`
    (go on at its ``resume``; "" done).  Raises NoAnswer."""
    ctx.count("scan_pages")
    result = yield Call(Scan(cursor, end, start_ts, limit))
    if not isinstance(result, ScanResult):
        raise NoAnswer(f"scan from {cursor!r} at {start_ts}: no answer")
    if result.lock is not None:
        ctx.count("scans_blocked")
        yield LockWait()
        yield from resolve_lock(ctx, result.resume, result.lock)
    return result


def scan_reads(
    ctx: Context, keys: tuple[str, ...], start_ts: int, limit: int, values: dict[str, Any]
) -> Gen:
    """Read ``keys`` (sorted) into ``values`` with one scan of ``[keys[0], keys[-1]]``
    page by page (a key not listed is absent); returns the keys the scan listed."""
    ctx.count("scans")
    found: dict[str, Any] = {}
    end = keys[-1] + "\x00"  # the smallest key after the last one
    cursor = keys[0]
    while True:  # bounded: every page lists a value, passes a lock or ends a range
        page = yield from scan_page(ctx, cursor, end, start_ts, limit)
        found.update(page.items)
        if not page.resume:
            break
        cursor = page.resume
    values.update({k: found.get(k) for k in keys})
    return tuple(sorted(found))


# -- lock resolution ---------------------------------------------------------------------------


def resolve_lock(ctx: Context, key: str, lock: Lock) -> Gen:
    """Decide ``lock``'s transaction from its primary (an async lock: from all its keys)
    and roll ``key`` forward or back; True if decided (False: read again later)."""
    ctx.count("resolutions")
    status = yield Call(CheckTxnStatus(lock.primary, lock.start_ts, True))
    if not isinstance(status, TxnStatus):
        return False
    if status.state == LOCKED and status.lock is not None:
        commit_ts = yield from decide_async(status.lock)
        if commit_ts is None:
            return False
        yield from settle(ctx, lock.start_ts, (status.lock.primary, key), commit_ts)
        return True
    commit_ts = status.commit_ts if status.state == COMMITTED else 0
    yield from settle(ctx, lock.start_ts, (key,), commit_ts)
    return True


def decide_async(primary_lock: Lock) -> Gen:
    """An async-commit transaction's fate from all its keys (``CheckSecondaryLocks``): its
    commit timestamp (the largest ``min_commit_ts``), 0 (a key rolled back) or None (some
    key did not answer)."""
    keys = tuple(sorted({primary_lock.primary, *primary_lock.secondaries}))
    groups = yield Groups(keys)
    start_ts = primary_lock.start_ts
    answers = yield Calls(tuple(CheckSecondaryLocks(tuple(g), start_ts) for g in groups))
    states: list[TxnStatus] = []
    for answer in answers:
        if isinstance(answer, tuple):
            states.extend(s for s in answer if isinstance(s, TxnStatus))
        else:
            states.append(TxnStatus(LOCKED, 0, None))  # unknown: decide nothing
    if any(s.state == LOCKED and s.lock is None for s in states):
        return None
    if any(s.state == ROLLED_BACK for s in states):
        return 0
    return max(
        s.commit_ts if s.state == COMMITTED or s.lock is None else s.lock.min_commit_ts
        for s in states
    )


def settle(ctx: Context, start_ts: int, keys: tuple[str, ...], commit_ts: int) -> Gen:
    """Commit (``commit_ts`` > 0) or roll back ``start_ts`` on ``keys``, per range."""
    ctx.count("rolled_forward" if commit_ts else "rolled_back")
    groups = yield Groups(tuple(sorted(set(keys))))
    yield Calls(tuple(Resolve(tuple(g), start_ts, commit_ts) for g in groups))


# -- commit ------------------------------------------------------------------------------------


def mutations_of(
    mode: str, writes: Mapping[str, Any], read_keys: tuple[str, ...]
) -> dict[str, Mutation]:
    """What the prewrites lock: the writes, and in 2pc mode a read lock on every key read
    and not written."""
    mutations = {k: Mutation(k, v) for k, v in writes.items()}
    if mode == TWO_PC:
        for key in read_keys:
            if key not in writes:
                mutations[key] = Mutation(key, None, read_only=True)
    return mutations


class _Prewrites:
    """The prewrites' answers, folded in the order they arrive."""

    def __init__(self, mutations: int) -> None:
        self.mutations = mutations
        self.refused: PrewriteResult | None = None
        self.unanswered = False
        self.min_commit_ts = 0
        self.one_pc_done = False

    def add(self, group: tuple[str, ...], result: Any) -> None:
        if not isinstance(result, PrewriteResult):
            self.unanswered = True
        elif not result.ok:
            if self.refused is None or result.lock is not None:
                self.refused = result
        elif result.status == COMMITTED:
            self.min_commit_ts = max(self.min_commit_ts, result.commit_ts)
            self.one_pc_done = self.one_pc_done or len(group) == self.mutations
        else:
            self.min_commit_ts = max(self.min_commit_ts, result.min_commit_ts)


@dataclass
class _Attempt:
    """One attempt's commit: its timestamps, keys and prewrite answers."""

    ctx: Context
    start_ts: int
    mutations: dict[str, Mutation]
    primary: str
    commit_ts: int = 0
    attempt: int = 1

    @property
    def keys(self) -> tuple[str, ...]:
        """Every key the attempt locks, sorted."""
        return tuple(sorted(self.mutations))


def commit(
    ctx: Context,
    start_ts: int,
    mutations: dict[str, Mutation],
    attempt: int = 1,
    commit_ts: int = 0,
) -> Gen:
    """Commit ``mutations`` (at least one write) by ``ctx.mode``; returns the
    :class:`Outcome` (yields :class:`Decided` first when the outcome is ok)."""
    writes = [k for k, m in mutations.items() if not m.read_only]
    if not writes:
        raise ValueError("commit needs at least one write")
    state = _Attempt(ctx, start_ts, mutations, min(writes), commit_ts, attempt)
    acc = _Prewrites(len(mutations))
    yield from _prewrite_all(state, acc)
    if acc.refused is not None or acc.unanswered:
        async_mode = ctx.mode not in TWO_PHASE_MODES
        return (yield from abort(state, acc.refused, async_mode and acc.unanswered))
    if ctx.mode in TWO_PHASE_MODES:
        return (yield from _two_phase(state))
    outcome = Outcome(OK, acc.min_commit_ts, wrote=True)
    yield Decided(outcome)  # every prewrite is durable: the transaction is committed
    if not acc.one_pc_done:
        yield from _commit_keys(state, state.keys, acc.min_commit_ts)
    return outcome


def _prewrite_all(state: _Attempt, acc: _Prewrites) -> Gen:
    ctx, keys = state.ctx, state.keys
    use_async = ctx.mode not in TWO_PHASE_MODES
    one_pc = ctx.mode == ONE_PC and bool((yield OneRange(keys)))
    groups = [list(keys)] if one_pc else (yield Groups(keys))
    tasks = tuple(_prewrite(state, acc, tuple(g), use_async, one_pc) for g in groups)
    yield Fork(tasks, crash_after_first="prewriting")


def _prewrite(
    state: _Attempt, acc: _Prewrites, group: tuple[str, ...], use_async: bool, one_pc: bool
) -> Gen:
    keys = state.keys
    secondaries = tuple(k for k in keys if k != state.primary) if use_async else ()
    mine = secondaries if state.primary in group else ()
    muts = tuple(state.mutations[k] for k in group)
    cmd = Prewrite(state.start_ts, state.primary, muts, use_async, mine, one_pc)
    result = yield Call(cmd)
    if isinstance(result, dict) and result.get("error") == ONE_PC_SPLIT:
        # The 1PC command met a split: prewrite key by key instead (async commit).
        yield Fork(tuple(_prewrite(state, acc, (k,), True, False) for k in group))
        return
    acc.add(group, result)


def _two_phase(state: _Attempt) -> Gen:
    """Percolator / 2pc after the prewrites: commit timestamp, primary, secondaries."""
    if not state.commit_ts:  # (the mutant took it before the prewrites)
        yield Crash("commit_ts")
        ts = yield Timestamp()
        if not isinstance(ts, int):
            return (yield from abort(state, None, False, "no commit timestamp"))
        state.commit_ts = ts
    ctx = state.ctx
    secondaries = tuple(k for k in state.keys if k != state.primary)
    if ACK_BEFORE_DURABLE in ctx.mutants and ctx.mode == TWO_PC:
        outcome = Outcome(OK, state.commit_ts, wrote=True)
        yield Decided(outcome)  # the mutant: acknowledged first
        yield Crash("primary")
        result = yield Call(Resolve((state.primary,), state.start_ts, state.commit_ts))
        if isinstance(result, ResolveResult) and not result.status:
            yield from _commit_keys(state, secondaries, state.commit_ts)
        return outcome
    yield Crash("primary")
    result = yield Call(Resolve((state.primary,), state.start_ts, state.commit_ts))
    if not isinstance(result, ResolveResult):
        return Outcome(
            INDETERMINATE,
            reason=f"transaction {state.start_ts}: the commit of its primary "
            f"{state.primary!r} got no answer; it may or may not have committed",
        )
    if result.status:  # a resolver rolled it back
        refused = PrewriteResult(result.status or ROLLED_BACK)
        return (yield from abort(state, refused, False, "", f"primary: {result.status}"))
    outcome = Outcome(OK, state.commit_ts, wrote=True)
    yield Decided(outcome)
    yield from _commit_keys(state, secondaries, state.commit_ts)
    return outcome


def _commit_keys(state: _Attempt, keys: tuple[str, ...], commit_ts: int) -> Gen:
    """Commit the keys after the commit point, not waiting (readers resolve the rest)."""
    if not keys:
        return
    yield Crash("secondaries")
    groups = yield Groups(keys)
    yield Calls(tuple(Resolve(tuple(g), state.start_ts, commit_ts) for g in groups), wait=False)


def abort(
    state: _Attempt,
    refused: PrewriteResult | None,
    may_have_committed: bool,
    failure: str = "",
    conflict: str = "",
) -> Gen:
    """Roll every key back and classify: ok (the rollback found it committed),
    indeterminate (the rollback got no answer where it may have committed), fail (with
    ``conflict`` and a retry delay when another transaction blocked it: its lock is
    resolved before the retry)."""
    ctx = state.ctx
    ctx.count("aborted_attempts")
    groups = yield Groups(state.keys)
    answers = yield Calls(tuple(Resolve(tuple(g), state.start_ts, 0) for g in groups))
    if any(isinstance(a, ResolveResult) and a.status == ALREADY_COMMITTED for a in answers):
        ctx.count("committed_by_resolver")
        outcome = Outcome(OK, wrote=True, by_resolver=True)
        yield Decided(outcome)
        return outcome
    unsure = any(not isinstance(a, ResolveResult) for a in answers)
    if unsure and may_have_committed:
        return Outcome(
            INDETERMINATE,
            reason=f"transaction {state.start_ts}: its prewrites and rollback got no answer; "
            "it may or may not have committed",
        )
    if failure or refused is None:
        why = failure or "a prewrite got no answer"
        return Outcome(FAIL, reason=f"transaction {state.start_ts} rolled back: {why}")
    status = conflict or refused.status or WRITE_CONFLICT
    why = f"transaction {state.start_ts} rolled back: {status}"
    delay = yield Retry(state.attempt)
    if delay is None:
        return Outcome(FAIL, conflict=True, reason=why)
    if refused.lock is not None:
        yield LockWait()
        yield from resolve_lock(ctx, refused.key or refused.lock.primary, refused.lock)
    return Outcome(FAIL, conflict=True, reason=why, retry_after=delay)


# -- a program (the simulator's transactions) -----------------------------------------------------


def run_program(
    ctx: Context,
    program: Program,
    rng: Rng,
    scan_share: float,
    scan_limit: int,
    values: dict[str, Any],
) -> Gen:
    """Run a workload program's attempts: start timestamp, reads into ``values`` (or a
    scan, with probability ``scan_share``: ``rng`` draws only when it is > 0), the
    commit, a back-off and a new attempt after a conflict; returns the :class:`Outcome`,
    or None when it was :class:`Decided` before."""
    attempt = 0
    while True:
        attempt += 1
        values.clear()
        outcome = yield from _program_attempt(
            ctx, program, rng, scan_share, scan_limit, attempt, values
        )
        if outcome is None or outcome.retry_after is None:
            return outcome
        yield Sleep(outcome.retry_after)


def _program_attempt(
    ctx: Context,
    program: Program,
    rng: Rng,
    scan_share: float,
    scan_limit: int,
    attempt: int,
    values: dict[str, Any],
) -> Gen:
    start_ts = yield Timestamp()
    if not isinstance(start_ts, int):
        return Outcome(FAIL, reason="no start timestamp")
    yield Crash("start")
    keys = program.reads()
    scanned: tuple[str, ...] = ()
    scans = scan_share > 0.0 and program.f in ("read", "txn") and rng.random() < scan_share
    try:
        if scans:
            scanned = yield from scan_reads(ctx, keys, start_ts, scan_limit, values)
        else:
            yield Fork(tuple(_read_into(ctx, k, start_ts, values) for k in keys))
    except (NoAnswer, LockedOut) as exc:
        return Outcome(FAIL, reason=str(exc))  # nothing written yet
    yield Crash("reads")
    writes = program.writes(values)
    if not writes:
        return Outcome(OK)  # read-only: its snapshot
    read_keys = tuple(sorted({*keys, *scanned})) if scanned else keys
    mutations = mutations_of(ctx.mode, writes, read_keys)
    commit_ts = 0
    if COMMIT_TS_BEFORE_PREWRITE in ctx.mutants and ctx.mode == PERCOLATOR:
        ts = yield Timestamp()
        if not isinstance(ts, int):
            return Outcome(FAIL, reason="no commit timestamp")
        commit_ts = ts
    outcome = yield from commit(ctx, start_ts, mutations, attempt, commit_ts)
    return None if outcome.kind == OK else outcome


def _read_into(ctx: Context, key: str, start_ts: int, values: dict[str, Any]) -> Gen:
    values[key] = yield from read(ctx, key, start_ts)


# -- commands met by a split (drivers) -------------------------------------------------------------


def split_command(cmd: TxnCommand, key: str) -> TxnCommand:
    """The part of multi-key ``cmd`` about ``key`` (sent again key by key after a split)."""
    if type(cmd) is Prewrite:
        muts = tuple(m for m in cmd.mutations if m.key == key)
        secondaries = cmd.secondaries if key == cmd.primary else ()
        return Prewrite(cmd.start_ts, cmd.primary, muts, cmd.use_async, secondaries, False)
    if type(cmd) is Resolve:
        return Resolve((key,), cmd.start_ts, cmd.commit_ts)
    if type(cmd) is CheckSecondaryLocks:
        return CheckSecondaryLocks((key,), cmd.start_ts)
    raise TypeError(f"{type(cmd).__name__} has one key")


def merge_answers(cmd: TxnCommand, parts: list[Any]) -> Any:
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
    "FAIL",
    "INDETERMINATE",
    "MODES",
    "OK",
    "ONE_PC",
    "ONE_PC_SPLIT",
    "PERCOLATOR",
    "RESULT_TYPES",
    "TWO_PC",
    "TWO_PHASE_MODES",
    "Call",
    "Calls",
    "Context",
    "Crash",
    "Decided",
    "Effect",
    "Fork",
    "Groups",
    "LockWait",
    "LockedOut",
    "NoAnswer",
    "OneRange",
    "Outcome",
    "Retry",
    "Sleep",
    "Timestamp",
    "abort",
    "commit",
    "decide_async",
    "merge_answers",
    "mutations_of",
    "read",
    "resolve_lock",
    "route_key",
    "run_program",
    "scan_page",
    "scan_reads",
    "settle",
    "split_command",
]

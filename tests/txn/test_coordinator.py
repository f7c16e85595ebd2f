"""The sans-IO coordinator (:mod:`pnyx.protocols.txn.coordinator`) driven by a scripted
driver: two ranges of real MVCC columns (split at ``"m"``), effects answered at once
(forked tasks run one after the other), answers that can be lost.  The same generators
run in the simulator (:class:`pnyx.protocols.txn.client.TxnClient`) and on real
processes (:class:`pnyx.services.txn.TxnStore`)."""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

import pytest

from pnyx.core import SplitMix64
from pnyx.protocols.txn import coordinator as core
from pnyx.protocols.txn.messages import (
    AllocTs,
    CheckSecondaryLocks,
    CheckTxnStatus,
    Mutation,
    Prewrite,
    Resolve,
    Scan,
    ScanResult,
    TxnCommand,
)
from pnyx.protocols.txn.mvcc import MvccStore
from pnyx.protocols.txn.workloads import ListAppendTxn

SPLIT = "m"


class Script:
    """Answers a coordinator generator's effects from two in-memory ranges."""

    def __init__(self, mode: str = core.PERCOLATOR, retry: Any = 1) -> None:
        self.left, self.right = MvccStore(), MvccStore()
        self.counts: dict[str, int] = {}
        self.ctx = core.Context(mode, count=self._count)
        self.effects: list[Any] = []
        self.sent: list[TxnCommand] = []
        self.lose: Callable[[TxnCommand], bool] = lambda c: False
        self.retry = retry
        self.decided: list[core.Outcome] = []

    def _count(self, name: str) -> None:
        self.counts[name] = self.counts.get(name, 0) + 1

    def range_of(self, key: str) -> MvccStore:
        return self.left if key < SPLIT else self.right

    def ts(self) -> int:
        result = self.left.apply(AllocTs("!ts"))
        assert isinstance(result, int)
        return result

    def run(self, gen: Generator[Any, Any, Any]) -> Any:
        """Drive ``gen`` to its end (bounded); its return value."""
        value: Any = None
        error: Exception | None = None
        for _ in range(10_000):
            try:
                effect = gen.throw(error) if error is not None else gen.send(value)
            except StopIteration as stop:
                return stop.value
            self.effects.append(effect)
            value, error = None, None
            try:
                value = self.answer(effect)
            except (core.NoAnswer, core.LockedOut) as exc:
                error = exc
        raise AssertionError("the generator did not end within 10000 effects")

    def answer(self, effect: Any) -> Any:
        if isinstance(effect, core.Call):
            return self.apply(effect.command)
        if isinstance(effect, core.Calls):
            return [self.apply(c) for c in effect.commands]
        if isinstance(effect, core.Groups):
            return [g for g in self.groups(effect.keys) if g]
        if isinstance(effect, core.OneRange):
            return len([g for g in self.groups(effect.keys) if g]) == 1
        if isinstance(effect, core.Fork):
            for task in effect.tasks:
                self.run(task)
            return None
        if isinstance(effect, core.Timestamp):
            return self.ts()
        if isinstance(effect, core.Retry):
            return self.retry
        if isinstance(effect, core.Decided):
            self.decided.append(effect.outcome)
        return None

    def groups(self, keys: tuple[str, ...]) -> list[list[str]]:
        return [[k for k in keys if k < SPLIT], [k for k in keys if k >= SPLIT]]

    def apply(self, command: TxnCommand) -> Any:
        self.sent.append(command)
        if self.lose(command):
            return None
        if type(command) is Scan and command.start < SPLIT:
            clipped = Scan(command.start, SPLIT, command.read_ts, command.limit)
            result = self.left.apply(clipped)
            if result.resume or result.lock is not None:
                return result
            return ScanResult(result.items, None, SPLIT if command.end != SPLIT else "")
        return self.range_of(core.route_key(command)).apply(command)

    def write(self, **values: Any) -> int:
        """Commit ``values`` directly (a finished transaction); its commit timestamp."""
        start = self.ts()
        muts = {k: Mutation(k, v) for k, v in values.items()}
        outcome = self.run(core.commit(core.Context(), start, muts))
        assert outcome.kind == core.OK
        return int(outcome.commit_ts)

    def abandon(self, use_async: bool, commit_primary: bool, prewrite_z: bool = True) -> int:
        """Another coordinator prewrote ``a`` (primary) and ``z``, then vanished (after
        committing the primary, if asked); its start timestamp."""
        start = self.ts()
        secondaries = ("z",) if use_async else ()
        self.left.apply(Prewrite(start, "a", (Mutation("a", "new"),), use_async, secondaries))
        if prewrite_z:
            self.right.apply(Prewrite(start, "a", (Mutation("z", "new"),), use_async))
        if commit_primary:
            self.left.apply(Resolve(("a",), start, self.ts()))
        return start


@pytest.mark.parametrize(
    ("commit_primary", "expected", "counter"),
    [(True, "new", "rolled_forward"), (False, "old", "rolled_back")],
    ids=["forward", "back"],
)
def test_a_read_waits_for_a_lock_then_resolves_it_and_reads_again(
    commit_primary: bool, expected: str, counter: str
) -> None:
    s = Script()
    s.write(z="old")
    s.abandon(use_async=False, commit_primary=commit_primary)
    assert s.run(core.read(s.ctx, "z", s.ts())) == expected
    kinds = [type(e).__name__ for e in s.effects]
    assert kinds.index("LockWait") < kinds.index("Call", kinds.index("LockWait"))
    checks = [c for c in s.sent if type(c) is CheckTxnStatus]
    assert len(checks) == 1 and checks[0].primary == "a" and checks[0].force_rollback
    assert s.right.record("z").lock is None
    assert s.counts == {"reads_blocked": 1, "resolutions": 1, counter: 1}


@pytest.mark.parametrize(
    ("prewrite_z", "expected", "counter"),
    [(True, "new", "rolled_forward"), (False, "old", "rolled_back")],
    ids=["all-locked", "one-missing"],
)
def test_an_async_lock_is_decided_by_check_secondary_locks(
    prewrite_z: bool, expected: str, counter: str
) -> None:
    s = Script(core.ASYNC_COMMIT)
    s.write(a="old")
    start = s.abandon(use_async=True, commit_primary=False, prewrite_z=prewrite_z)
    assert s.run(core.read(s.ctx, "a", s.ts())) == expected
    checked = [c for c in s.sent if type(c) is CheckSecondaryLocks]
    assert {k for c in checked for k in c.keys} == {"a", "z"}
    assert s.counts.get(counter) == 1
    assert s.left.record("a").lock is None
    if prewrite_z:  # committed: z (not the key read, not the primary) is left to its readers
        assert s.right.record("z").lock is not None
        assert s.run(core.read(s.ctx, "z", s.ts())) == "new"
    else:  # the missing key got a rollback record: no late prewrite can revive it
        assert s.right.record("z").rolled_back(start)


def test_a_refused_prewrite_rolls_back_resolves_the_blocker_then_the_retry_commits() -> None:
    s = Script()
    s.abandon(use_async=False, commit_primary=False, prewrite_z=True)  # z locked by another
    start = s.ts()
    muts = {"b": Mutation("b", 1), "z": Mutation("z", 2)}
    outcome = s.run(core.commit(s.ctx, start, muts))
    assert (outcome.kind, outcome.conflict, outcome.retry_after) == (core.FAIL, True, 1)
    assert "locked" in outcome.reason
    assert s.left.record("b").lock is None and s.left.record("b").rolled_back(start)
    assert s.right.record("z").lock is None  # the blocker rolled back after the wait
    assert s.counts["aborted_attempts"] == 1 and s.counts["rolled_back"] == 1
    assert not s.decided
    retry = s.run(core.commit(s.ctx, s.ts(), muts, attempt=2))
    assert retry.kind == core.OK and s.decided == [retry]
    assert (s.left.record("b").visible(2**62), s.right.record("z").visible(2**62)) == (1, 2)


def test_no_retry_means_a_conflict_fails_without_resolving_the_blocker() -> None:
    s = Script(retry=None)
    s.abandon(use_async=False, commit_primary=False)
    outcome = s.run(core.commit(s.ctx, s.ts(), {"z": Mutation("z", 2)}))
    assert (outcome.kind, outcome.conflict, outcome.retry_after) == (core.FAIL, True, None)
    assert s.right.record("z").lock is not None  # left to its own resolution later
    assert not [c for c in s.sent if type(c) is CheckTxnStatus]


def test_a_scan_goes_page_by_page_across_ranges() -> None:
    s = Script()
    s.write(a=1, b=2, c=3, n=4, p=5, z=6)
    values: dict[str, Any] = {}
    keys = ("a", "c", "d", "p", "z")
    listed = s.run(core.scan_reads(s.ctx, keys, s.ts(), 2, values))
    assert values == {"a": 1, "c": 3, "d": None, "p": 5, "z": 6}
    assert listed == ("a", "b", "c", "n", "p", "z")
    starts = [c.start for c in s.sent if type(c) is Scan]
    assert starts == ["a", "c", SPLIT, "z"]  # 2 values a page; the range's end
    assert s.counts["scan_pages"] == 4


def test_a_scan_stopped_by_a_lock_resolves_it_and_goes_on_from_the_key() -> None:
    s = Script()
    s.write(y=1, z="old")
    s.abandon(use_async=False, commit_primary=True)
    values: dict[str, Any] = {}
    s.run(core.scan_reads(s.ctx, ("y", "z"), s.ts(), 5, values))
    assert values == {"y": 1, "z": "new"}
    assert [c.start for c in s.sent if type(c) is Scan] == ["y", "z"]
    assert s.counts["scans_blocked"] == 1 and s.counts["rolled_forward"] == 1


@pytest.mark.parametrize("mode", [core.PERCOLATOR, core.ASYNC_COMMIT, core.ONE_PC, core.TWO_PC])
def test_each_mode_commits_and_decides_once(mode: str) -> None:
    s = Script(mode)
    start = s.ts()
    outcome = s.run(core.commit(s.ctx, start, {"b": Mutation("b", 1), "c": Mutation("c", 2)}))
    assert outcome.kind == core.OK and s.decided == [outcome]
    assert outcome.commit_ts > start
    assert not s.left.locks()
    one_pc = [c for c in s.sent if type(c) is Prewrite and c.one_pc]
    assert len(one_pc) == (1 if mode == core.ONE_PC else 0)


def test_a_one_pc_prewrite_met_by_a_split_falls_back_to_async_commit_key_by_key() -> None:
    s = Script(core.ONE_PC)
    apply = s.apply

    def split_once(command: TxnCommand) -> Any:
        if type(command) is Prewrite and command.one_pc:
            s.sent.append(command)
            return {"error": core.ONE_PC_SPLIT}
        return apply(command)

    s.apply = split_once  # type: ignore[method-assign]
    outcome = s.run(core.commit(s.ctx, s.ts(), {"b": Mutation("b", 1), "c": Mutation("c", 2)}))
    assert outcome.kind == core.OK
    async_ones = [c for c in s.sent if type(c) is Prewrite and not c.one_pc]
    assert [len(c.mutations) for c in async_ones] == [1, 1]
    assert all(c.use_async for c in async_ones)
    assert (s.left.record("b").visible(2**62), s.left.record("c").visible(2**62)) == (1, 2)


def test_outcomes_are_classified_ok_fail_indeterminate() -> None:
    # percolator: the primary's commit unanswered -> indeterminate (never retried)
    s = Script()
    s.lose = lambda c: type(c) is Resolve and c.commit_ts > 0
    outcome = s.run(core.commit(s.ctx, s.ts(), {"b": Mutation("b", 1)}))
    assert outcome.kind == core.INDETERMINATE and not s.decided
    # percolator: a prewrite unanswered -> a definite failure, not a conflict
    s = Script()
    s.lose = lambda c: type(c) is Prewrite and c.mutations[0].key == "z"
    outcome = s.run(core.commit(s.ctx, s.ts(), {"b": Mutation("b", 1), "z": Mutation("z", 2)}))
    assert (outcome.kind, outcome.conflict) == (core.FAIL, False)
    # async: a prewrite and the rollback unanswered -> indeterminate (all may have landed)
    s = Script(core.ASYNC_COMMIT)
    s.lose = lambda c: type(c) in (Prewrite, Resolve) and "z" in core.command_keys(c)
    outcome = s.run(core.commit(s.ctx, s.ts(), {"b": Mutation("b", 1), "z": Mutation("z", 2)}))
    assert outcome.kind == core.INDETERMINATE
    # async: a rollback that finds the transaction committed (by a resolver) -> ok
    s = Script(core.ASYNC_COMMIT)
    start = s.ts()
    s.lose = lambda c: type(c) is Prewrite and c.mutations[0].key == "z"
    resolve = s.apply

    def committed_meanwhile(command: TxnCommand) -> Any:
        if type(command) is Resolve and command.commit_ts == 0:
            s.lose = lambda c: False
            s.left.apply(Resolve(("b",), start, start + 100))
            s.right.apply(Resolve(("z",), start, start + 100))
        return resolve(command)

    s.apply = committed_meanwhile  # type: ignore[method-assign]
    outcome = s.run(core.commit(s.ctx, start, {"b": Mutation("b", 1), "z": Mutation("z", 2)}))
    assert outcome.kind == core.OK and outcome.by_resolver and s.decided == [outcome]


def test_a_program_read_with_no_answer_fails_before_writing() -> None:
    s = Script()
    s.lose = lambda c: type(c).__name__ == "Get" and c.key == "list2"  # type: ignore[attr-defined]
    program = ListAppendTxn((("r", "list1", None), ("r", "list2", None), ("append", "list3", 1)))
    values: dict[str, Any] = {}
    outcome = s.run(core.run_program(s.ctx, program, SplitMix64(1), 0.0, 3, values))
    assert outcome.kind == core.FAIL and "list2" in outcome.reason
    assert not [c for c in s.sent if type(c) is Prewrite]


def test_the_2pc_program_read_locks_what_it_read() -> None:
    s = Script(core.TWO_PC)
    program = ListAppendTxn((("r", "list1", None), ("append", "list3", 7)))
    values: dict[str, Any] = {}
    assert s.run(core.run_program(s.ctx, program, SplitMix64(1), 0.0, 3, values)) is None
    (prewrite,) = [c for c in s.sent if type(c) is Prewrite]
    assert {m.key: m.read_only for m in prewrite.mutations} == {"list1": True, "list3": False}
    assert s.decided and s.decided[0].kind == core.OK


def test_a_bad_context_is_refused_with_the_value() -> None:
    with pytest.raises(ValueError, match="'3pc'"):
        core.Context("3pc")
    with pytest.raises(ValueError, match="got 0"):
        core.Context(max_lock_rounds=0)
    with pytest.raises(ValueError, match="at least one write"):
        Script().run(core.commit(core.Context(), 5, {"a": Mutation("a", None, read_only=True)}))

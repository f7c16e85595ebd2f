"""The serializable ``2pc`` mode on a real 3-process ``txn`` cluster with 8 ranges.

- **Write skew**: two transactions each read ``x`` and ``y`` (in different ranges; by gets
  or by one scan) and each writes one of them, both reading before either commits.
  Under ``percolator`` both commit (snapshot isolation allows write skew: the invariant
  ``x + y >= 1`` both checked is broken); under ``2pc`` the read locks make exactly one
  commit and the other raise TxnConflict (the invariant holds).
- **Bank in 2pc**: concurrent sessions transfer money after reading the bank's metadata
  (a read lock on it in every transfer), an auditor reads every account and writes the
  total it saw (read locks on every account), a reader reads every account: every read
  and the final state conserve the total.
- **CLI**: ``pnyx txn --mode 2pc`` transfers and checks the bank; its help says which
  modes are serializable.
- **What the prepare locks** (in-process ranges of test_store's ``FakeRouter``, no
  cluster): the keys gets read and a scan returned (not those past its limit), not the
  written ones; nothing for a read-only transaction; write skew likewise.
"""

from __future__ import annotations

import asyncio
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from pnyx.cli.cluster_cmd import members_of
from pnyx.cli.txn_cmd import txn
from pnyx.protocols.txn.messages import Prewrite
from pnyx.runtime.transport import Address
from pnyx.services.multiraft import spread_key
from pnyx.services.txn import (
    MODES,
    PERCOLATOR,
    TWO_PC,
    Transaction,
    TxnConflict,
    TxnError,
    TxnIndeterminate,
    TxnStore,
    bank_init,
    bank_meta,
    bank_problem,
    bank_read,
    bank_transfer,
)
from tests.txn_real.test_store import FakeRouter

ACCOUNTS = 8
INITIAL = 100
SESSIONS = 4
"""Concurrent transferring sessions of the bank run."""
MIN_TRANSFERS = 20
MIN_READS = 5
MIN_AUDITS = 2
WORKLOAD_BOUND_S = 120.0
"""The bank run stops after this at most (a slow machine does less; goals checked)."""
STOP_BOUND_S = 60.0
MAX_TXNS = 100_000
AUDIT_KEY = "audit.2pc"
MAX_PAIR_CANDIDATES = 200


# -- write skew -------------------------------------------------------------------------------


@dataclass
class SkewResult:
    """What one write-skew round did."""

    committed: list[str] = field(default_factory=list)
    """Which transactions committed (``t1`` / ``t2``)."""
    conflict: str = ""
    """The TxnConflict's message, if one was raised."""
    final: tuple[int, int] = (0, 0)
    read_locks: int = 0


async def _key_pair(store: TxnStore, tag: str) -> tuple[str, str]:
    """Two fresh keys held by different ranges."""
    for n in range(5000, 5000 + MAX_PAIR_CANDIDATES):
        x, y = f"{spread_key(n)}.{tag}", f"{spread_key(n + 1)}.{tag}"
        if len(await store.ranges.group_keys([x, y])) == 2:
            return x, y
    raise AssertionError(f"no two keys of different ranges among {MAX_PAIR_CANDIDATES}")


async def _read_both(tx: Transaction, x: str, y: str, by_scan: bool) -> tuple[int, int]:
    """``x`` and ``y`` as ``tx`` sees them: two gets, or one scan over both."""
    if not by_scan:
        return await tx.get(x), await tx.get(y)
    low, high = min(x, y), max(x, y)
    pairs = dict(await tx.scan(low, high + "\x00"))
    return pairs[x], pairs[y]


async def _write_skew(members: dict[int, Address], mode: str, by_scan: bool) -> SkewResult:
    """Doctors ``x`` and ``y`` are both on call (1); each transaction goes off call (0) if
    the other is on call in its snapshot.  ``t2`` commits first, then ``t1``."""
    result = SkewResult()
    async with TxnStore(members, mode=mode, deadline_s=30.0) as store:
        x, y = await _key_pair(store, f"skew-{mode}-{int(by_scan)}")
        async with store.transaction() as init:
            init.put(x, 1)
            init.put(y, 1)
        try:
            async with store.transaction() as t1:
                async with store.transaction() as t2:
                    seen1 = await _read_both(t1, x, y, by_scan)
                    seen2 = await _read_both(t2, x, y, by_scan)
                    assert seen1 == seen2 == (1, 1)
                    t1.put(x, 0)  # t1 checked y is on call
                    t2.put(y, 0)  # t2 checked x is on call
                result.committed.append("t2")
            result.committed.append("t1")
        except TxnConflict as exc:
            result.conflict = str(exc)
        result.read_locks = store.stats.read_locks
        async with store.transaction() as check:
            result.final = (await check.get(x), await check.get(y))
    return result


def test_write_skew_commits_under_percolator_and_one_side_aborts_under_2pc(
    txn_cluster: Path,
) -> None:
    members = members_of(txn_cluster)
    for by_scan in (False, True):  # read by gets, then by one scan (one cluster for both)
        si = asyncio.run(_write_skew(members, PERCOLATOR, by_scan))
        assert si.committed == ["t2", "t1"] and si.conflict == "", (by_scan, si)
        assert si.final == (0, 0), "snapshot isolation: both went off call (write skew)"
        assert si.read_locks == 0
        serial = asyncio.run(_write_skew(members, TWO_PC, by_scan))
        assert serial.committed == ["t2"], (by_scan, serial)
        assert "write_conflict" in serial.conflict, serial.conflict
        assert serial.final == (1, 0), "2pc: t1's read of y was invalidated by t2's commit"
        assert serial.read_locks >= 1  # t2 read-locked x (a scan: also keys in between)


# -- the bank in 2pc ----------------------------------------------------------------------------


@dataclass
class BankRun:
    """What the 2pc bank sessions saw."""

    transfers: int = 0
    declined: int = 0
    gave_up: int = 0
    failed: int = 0
    indeterminate: int = 0
    reads: list[list[int]] = field(default_factory=list)
    audits: list[int] = field(default_factory=list)
    """The totals the auditor saw and wrote (committed audits only)."""
    read_locks: int = 0
    conflicts: int = 0

    def done(self) -> bool:
        return (
            self.transfers >= MIN_TRANSFERS
            and len(self.reads) >= MIN_READS
            and len(self.audits) >= MIN_AUDITS
        )


async def _checked_transfer(tx: Transaction, source: int, target: int, amount: int) -> bool:
    """As ``pnyx txn transfer``: the bank's metadata (read-locked in 2pc), then the move."""
    accounts, _ = await bank_meta(tx)
    if max(source, target) >= accounts:
        raise TxnError(f"accounts {source}, {target}: the bank has {accounts}")
    return await bank_transfer(tx, source, target, amount)


async def _audit(tx: Transaction) -> int:
    """Read every account and write the total seen (an update transaction: in 2pc every
    account is read-locked and validated at its commit)."""
    balances, _ = await bank_read(tx)
    tx.put(AUDIT_KEY, sum(balances))
    return sum(balances)


async def _session(store: TxnStore, seed: int, run: BankRun, stop: asyncio.Event) -> None:
    rng = random.Random(seed)
    for _ in range(MAX_TXNS):
        if stop.is_set():
            return
        source, target = rng.sample(range(ACCOUNTS), 2)
        amount = rng.randint(1, 30)

        async def fn(tx: Transaction, s: int = source, t: int = target, a: int = amount) -> bool:
            return await _checked_transfer(tx, s, t, a)

        try:
            moved = await store.run(fn, retries=30)
        except TxnIndeterminate:
            run.indeterminate += 1
            continue
        except TxnConflict:
            run.gave_up += 1
            continue
        except TxnError:
            run.failed += 1
            await asyncio.sleep(0.1)
            continue
        run.transfers += int(moved)
        run.declined += int(not moved)


async def _observer(store: TxnStore, run: BankRun, stop: asyncio.Event) -> None:
    """Alternately an audit (update) and a read-only read of every account."""
    for n in range(MAX_TXNS):
        if stop.is_set():
            return
        try:
            if n % 2:
                run.audits.append(await store.run(_audit, retries=30))
            else:
                run.reads.append((await store.run(bank_read, retries=30))[0])
        except TxnError:
            await asyncio.sleep(0.1)
            continue
        await asyncio.sleep(0.05)


async def _bank_2pc(members: dict[int, Address]) -> tuple[BankRun, list[int]]:
    run = BankRun()
    async with TxnStore(members, mode=TWO_PC, deadline_s=30.0) as store:
        await store.run(lambda tx: bank_init(tx, ACCOUNTS, INITIAL), retries=5)
        stop = asyncio.Event()
        tasks = [asyncio.ensure_future(_session(store, s, run, stop)) for s in range(SESSIONS)]
        tasks.append(asyncio.ensure_future(_observer(store, run, stop)))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WORKLOAD_BOUND_S
        try:
            while not run.done() and loop.time() < deadline:
                await asyncio.sleep(0.1)
        finally:
            stop.set()
            await asyncio.wait(tasks, timeout=STOP_BOUND_S)
        for task in tasks:
            if not task.done():
                raise RuntimeError(f"a bank session did not end {STOP_BOUND_S} s after the stop")
            task.result()
        run.read_locks = store.stats.read_locks
        run.conflicts = store.stats.conflicts
        final, _ = await store.run(bank_read, retries=30)
    return run, final


def test_bank_in_2pc_conserves_money_and_the_cli_runs_2pc(txn_cluster: Path) -> None:
    run, final = asyncio.run(_bank_2pc(members_of(txn_cluster)))
    print(
        f"2pc bank: transfers {run.transfers} declined {run.declined} reads {len(run.reads)} "
        f"audits {len(run.audits)} gave_up {run.gave_up} failed {run.failed} "
        f"indeterminate {run.indeterminate} conflicts {run.conflicts} "
        f"read_locks {run.read_locks}"
    )
    total = ACCOUNTS * INITIAL
    problems = [p for b in run.reads if (p := bank_problem(b, total))]
    assert problems == [], f"{len(problems)} bad reads of {len(run.reads)}: {problems[:3]}"
    assert run.audits and all(seen == total for seen in run.audits), run.audits
    assert bank_problem(final, total) == ""
    assert run.done(), f"too little progress: {run}"
    assert final != [INITIAL] * ACCOUNTS, "no money moved"
    # Every committed transfer read-locked the metadata, every audit each account and it;
    # nothing else this store committed read a key it did not write.
    assert run.read_locks == run.transfers + len(run.audits) * (ACCOUNTS + 1), run
    _cli_2pc(txn_cluster, total)


def _cli_2pc(data_dir: Path, total: int) -> None:
    runner = CliRunner()
    target = ["--data-dir", str(data_dir), "--mode", "2pc"]
    shown = runner.invoke(txn, ["--help"])
    assert shown.exit_code == 0 and "serializable" in shown.output, shown.output
    moved = runner.invoke(txn, [*target, "transfer", "0", "1", "1"])
    assert moved.exit_code == 0 and moved.output.strip() == "OK", moved.output
    too_much = runner.invoke(txn, [*target, "transfer", "0", "1", str(total + 1)])
    assert too_much.exit_code == 1 and "less than" in too_much.output, too_much.output
    checked = runner.invoke(txn, [*target, "bank-check"])
    assert checked.exit_code == 0, checked.output
    assert f"{ACCOUNTS} accounts, total {total}" in checked.output
    audited = runner.invoke(txn, [*target, "get", AUDIT_KEY])
    assert audited.exit_code == 0 and json.loads(audited.output) == total, audited.output


def test_every_store_mode_is_a_cli_mode() -> None:
    from pnyx.cli import txn_cmd

    choices = next(p for p in txn_cmd.txn.params if p.name == "mode").type
    assert isinstance(choices, click.Choice)
    assert tuple(choices.choices) == MODES
    with pytest.raises(ValueError, match="'3pc'"):
        TxnStore({1: ("127.0.0.1", 1)}, mode="3pc")


# -- what the prepare locks (in-process ranges, no cluster) -------------------------------------


def _locked(router: FakeRouter) -> set[tuple[str, bool]]:
    """Every key the prewrites sent, with whether as a read lock."""
    sent = [c for c in router.sent if type(c) is Prewrite]
    return {(m.key, m.read_only) for c in sent for m in c.mutations}


def test_the_2pc_prepare_read_locks_gets_and_scanned_keys_only() -> None:
    async def scenario() -> None:
        store, router = _fake_store(TWO_PC)
        async with store.transaction() as init:
            for key in ("a", "b", "c", "x", "y"):
                init.put(key, 1)
        router.sent.clear()
        async with store.transaction() as tx:
            assert await tx.get("y") == 1
            assert await tx.scan("a", "", limit=2) == [("a", 1), ("b", 1)]
            tx.put("x", 2)
            tx.put("b", 2)  # read by the scan, then written: a write lock
        assert _locked(router) == {("a", True), ("b", False), ("x", False), ("y", True)}
        assert store.stats.read_locks == 2
        assert not router.left.locks() and not router.right.locks()  # read locks released
        router.sent.clear()
        async with store.transaction() as read_only:
            assert await read_only.get("a") == 1
        assert _locked(router) == set()  # a read-only transaction commits nothing

    asyncio.run(scenario())


@pytest.mark.parametrize("mode", [PERCOLATOR, TWO_PC])
def test_write_skew_in_process(mode: str) -> None:
    async def scenario() -> None:
        store, router = _fake_store(mode)
        async with store.transaction() as init:
            init.put("a", 1)
            init.put("y", 1)
        router.sent.clear()
        conflict = ""
        try:
            async with store.transaction() as t1, store.transaction() as t2:
                assert (await t1.get("a"), await t1.get("y")) == (1, 1)
                assert (await t2.get("a"), await t2.get("y")) == (1, 1)
                t1.put("a", 0)
                t2.put("y", 0)
        except TxnConflict as exc:
            conflict = str(exc)
        async with store.transaction() as check:
            final = (await check.get("a"), await check.get("y"))
        if mode == PERCOLATOR:
            assert (conflict, final) == ("", (0, 0))  # write skew
            assert _locked(router) == {("a", False), ("y", False)}
        else:
            assert "write_conflict" in conflict and final == (1, 0), (conflict, final)
            # t2 prepared y and a read lock on a; t1 a and a read lock on y (refused).
            assert _locked(router) == {("y", False), ("a", True), ("a", False), ("y", True)}
            assert store.stats.read_locks == 1 and store.stats.conflicts == 1

    asyncio.run(scenario())


def _fake_store(mode: str) -> tuple[TxnStore, FakeRouter]:
    store = TxnStore({1: ("127.0.0.1", 1)}, mode=mode, lock_wait_s=0.0)
    router = FakeRouter()
    store._router = router  # type: ignore[assignment]
    return store, router

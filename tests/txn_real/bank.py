"""The bank workload against a real ``txn`` cluster: coordinators transfer money between
accounts spread over every range while a reader reads all accounts in one transaction,
list-append coordinators (Elle) record a history for the snapshot-isolation checker, and a
blocking nemesis (kill -9 and restart) runs in a thread."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from pnyx.core import HistoryEvent
from pnyx.protocols.txn.workloads import ListAppendTxn
from pnyx.runtime.transport import Address
from pnyx.services.multiraft import spread_key
from pnyx.services.txn import (
    MODES,
    Transaction,
    TxnConflict,
    TxnError,
    TxnIndeterminate,
    TxnStore,
    bank_init,
    bank_read,
    bank_transfer,
)

STOP_BOUND_S = 60.0
"""Every worker ends this long after the stop at most (each command has a deadline)."""
MAX_TXNS_PER_WORKER = 100_000
PROGRESS_BOUND_S = 60.0


@dataclass
class BankResult:
    """What the workload saw."""

    accounts: int
    total: int
    transfers: int = 0
    """Committed transfers (money moved)."""
    declined: int = 0
    """Committed transfers that moved nothing (the source held too little)."""
    gave_up: int = 0
    """Transfers still in conflict after their retries (did not commit)."""
    failed: int = 0
    """Transfers without an answer (TxnError: did not commit)."""
    indeterminate: int = 0
    reads: list[list[int]] = field(default_factory=list)
    """Every committed read of all balances (besides the final one)."""
    final: list[int] = field(default_factory=list)
    conflicts: int = 0
    retries: int = 0
    lock_resolutions: int = 0
    faults: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0
    history: list[HistoryEvent] = field(default_factory=list)
    """The list-append transactions (invoke, then ok / fail / info)."""


LIST_KEYS = tuple(f"{spread_key(1000 + i)}.list" for i in range(5))
LIST_PROCESS_BASE = 100


async def _appends(
    members: Mapping[int, Address], mode: str, worker: int, result: BankResult, stop: asyncio.Event
) -> None:
    """List-append transactions of 1-4 reads and appends of unique values."""
    rng = random.Random(worker)
    process = LIST_PROCESS_BASE + worker
    async with TxnStore(members, mode=mode, request_timeout_s=1.0, deadline_s=8.0) as store:
        for n in range(MAX_TXNS_PER_WORKER):
            if stop.is_set():
                break
            mops = tuple(
                ("r", rng.choice(LIST_KEYS), None)
                if rng.random() < 0.5
                else ("append", rng.choice(LIST_KEYS), process * 1_000_000 + n * 10 + i)
                for i in range(rng.randint(1, 4))
            )
            program = ListAppendTxn(mops)
            result.history.append(HistoryEvent(process, "invoke", "txn", program.invocation()))

            async def body(tx: Transaction, p: ListAppendTxn = program) -> object:
                values = {k: await tx.get(k) for k in p.reads()}
                for key, value in p.writes(values).items():
                    tx.put(key, value)
                return p.output(values)

            try:
                output = await store.run(body, retries=20)
            except TxnIndeterminate:
                result.history.append(HistoryEvent(process, "info", "txn", program.invocation()))
                result.indeterminate += 1
                continue
            except TxnError:
                result.history.append(HistoryEvent(process, "fail", "txn", program.invocation()))
                continue
            result.history.append(HistoryEvent(process, "ok", "txn", output))
        _add_stats(result, store)


async def _transfers(
    members: Mapping[int, Address], mode: str, seed: int, result: BankResult, stop: asyncio.Event
) -> None:
    rng = random.Random(seed)
    async with TxnStore(members, mode=mode, request_timeout_s=1.0, deadline_s=8.0) as store:
        for _ in range(MAX_TXNS_PER_WORKER):
            if stop.is_set():
                break
            source, target = rng.sample(range(result.accounts), 2)
            amount = rng.randint(1, 30)

            async def transfer(
                tx: Transaction, s: int = source, t: int = target, a: int = amount
            ) -> bool:
                return await bank_transfer(tx, s, t, a)

            try:
                moved = await store.run(transfer, retries=20)
            except TxnIndeterminate:
                result.indeterminate += 1
                continue
            except TxnConflict:
                result.gave_up += 1
                continue
            except TxnError:
                result.failed += 1
                await asyncio.sleep(0.1)
                continue
            if moved:
                result.transfers += 1
            else:
                result.declined += 1
        _add_stats(result, store)


async def _reader(members: Mapping[int, Address], result: BankResult, stop: asyncio.Event) -> None:
    async with TxnStore(members, request_timeout_s=1.0, deadline_s=8.0) as store:
        for _ in range(MAX_TXNS_PER_WORKER):
            if stop.is_set():
                break
            try:
                balances, _ = await store.run(bank_read, retries=20)
            except TxnError:
                await asyncio.sleep(0.1)
                continue
            result.reads.append(balances)
            await asyncio.sleep(0.05)
        _add_stats(result, store)


def _add_stats(result: BankResult, store: TxnStore) -> None:
    result.conflicts += store.stats.conflicts
    result.retries += store.stats.retries
    result.lock_resolutions += store.stats.lock_resolutions


async def _progress(result: BankResult, min_transfers: int, min_reads: int) -> None:
    """Wait (bounded) until the workload made that much progress (a slow machine does less
    per kill interval)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + PROGRESS_BOUND_S
    while result.transfers < min_transfers or len(result.reads) < min_reads:
        if loop.time() > deadline:
            return
        await asyncio.sleep(0.1)


async def run_bank(
    members: Mapping[int, Address],
    *,
    accounts: int,
    initial: int,
    clients: int,
    nemesis: Callable[[random.Random], str],
    rounds: int,
    interval_s: float,
    seed: int,
    min_transfers: int = 0,
    min_reads: int = 0,
    appenders: int = 2,
) -> BankResult:
    """``clients`` transferring coordinators (modes in turn), one reader and
    ``appenders`` list-append coordinators while
    ``nemesis`` runs ``rounds`` times, ``interval_s`` apart, and until ``min_transfers``
    transfers and ``min_reads`` reads of all committed (at most :data:`PROGRESS_BOUND_S`
    more); then a final read of all."""
    result = BankResult(accounts, accounts * initial)
    async with TxnStore(members, deadline_s=30.0) as store:
        await store.run(lambda tx: bank_init(tx, accounts, initial), retries=5)
    stop = asyncio.Event()
    started = time.monotonic()
    tasks = [
        asyncio.ensure_future(_transfers(members, MODES[c % len(MODES)], seed + c, result, stop))
        for c in range(clients)
    ]
    tasks.append(asyncio.ensure_future(_reader(members, result, stop)))
    tasks += [
        asyncio.ensure_future(_appends(members, MODES[w % len(MODES)], w, result, stop))
        for w in range(appenders)
    ]
    rng = random.Random(seed)
    try:
        for _ in range(rounds):
            await asyncio.sleep(interval_s)
            result.faults.append(await asyncio.to_thread(nemesis, rng))
        await asyncio.sleep(interval_s)
        await _progress(result, min_transfers, min_reads)
    finally:
        stop.set()
        await asyncio.wait(tasks, timeout=STOP_BOUND_S)
    result.elapsed_s = time.monotonic() - started
    for task in tasks:
        if not task.done():
            raise RuntimeError(f"a bank worker did not end {STOP_BOUND_S} s after the stop")
        task.result()
    async with TxnStore(members, deadline_s=30.0) as store:
        result.final, _ = await store.run(bank_read, retries=20)
    return result

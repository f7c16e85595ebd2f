"""Scans and batched timestamps on a real 3-process ``txn`` cluster with 8 ranges: a scan
of the whole keyspace during concurrent transfers always sees the conserved total, a scan
sees its own writes, a scan with a stale range map crosses fresh splits, the locks of a
coordinator killed with -9 (before or after its commit point) are resolved by a scan, and
concurrent timestamp callers share allocator requests while keeping real-time order."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import random
import signal
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from pnyx.cli.cluster_cmd import members_of
from pnyx.cli.txn_cmd import txn
from pnyx.runtime.transport import Address
from pnyx.services.txn import (
    ASYNC_COMMIT,
    PERCOLATOR,
    Transaction,
    TxnError,
    TxnStore,
    bank_account_key,
    bank_init,
    bank_transfer,
)
from tests.txn_real.abandon import abandoned_keys
from tests.txn_real.conftest import RANGES

ROOT = Path(__file__).resolve().parents[2]
ACCOUNTS = 16
INITIAL = 100
MIN_SCANS = 8
MIN_TRANSFERS = 10
WORKLOAD_BOUND_S = 120.0
"""The concurrent phase ends after this at most (a slow machine does less)."""
SPLIT_KEYS = 300
"""Keys written into one range (it splits above 128)."""
SPLIT_BOUND_S = 60.0
START_BOUND_S = 60.0
"""How long the coordinator to be killed may take to prewrite."""


def test_scans_and_batched_timestamps_on_a_real_cluster(txn_cluster: Path) -> None:
    members = members_of(txn_cluster)
    asyncio.run(_timestamps(members))
    asyncio.run(_own_writes(members))
    asyncio.run(_scans_during_transfers(members))
    asyncio.run(_scan_across_splits(members))
    for mode, commit_primary, committed in (
        (PERCOLATOR, False, False),
        (PERCOLATOR, True, True),
        (ASYNC_COMMIT, False, True),
    ):
        tag = f"{mode}-{int(commit_primary)}"
        _kill_coordinator_after_prewrites(txn_cluster, mode, tag, commit_primary)
        asyncio.run(_scan_resolves(members, tag, committed))
    runner = CliRunner()
    target = ["--data-dir", str(txn_cluster)]
    listed = runner.invoke(txn, [*target, "scan", "", "1", "--limit", "3"])
    assert listed.exit_code == 0, listed.output
    lines = listed.output.splitlines()
    assert len(lines) == 3 and all(line.startswith('["0') for line in lines), lines
    bad = runner.invoke(txn, [*target, "scan", "b", "a"])
    assert bad.exit_code == 2 and "must be above start" in bad.output


async def _timestamps(members: dict[int, Address]) -> None:
    """Concurrent callers: unique timestamps, fewer requests than timestamps, and a
    timestamp asked after another was returned is larger."""
    async with TxnStore(members, deadline_s=30.0) as store:
        clock = itertools.count()
        seen: list[tuple[int, int, int]] = []  # (asked, ts, returned) on one event clock

        async def caller() -> None:
            for _ in range(25):
                asked = next(clock)
                ts = await store._alloc_ts()
                seen.append((asked, ts, next(clock)))

        await asyncio.gather(*(caller() for _ in range(8)))
        stamps = [ts for _, ts, _ in seen]
        assert len(set(stamps)) == len(stamps) == 200
        assert store.stats.timestamps == 200 and store.stats.ts_requests < 200, vars(store.stats)
        late = [
            (a, b)
            for a in seen
            for b in seen
            if a[2] < b[0] and not a[1] < b[1]  # returned before b asked, not smaller
        ]
        assert late == []
        print(f"200 timestamps from {store.stats.ts_requests} AllocTs requests")


async def _own_writes(members: dict[int, Address]) -> None:
    keys = [bank_account_key(a).replace(".bank", ".own") for a in range(ACCOUNTS)]
    async with TxnStore(members, deadline_s=30.0) as store:

        async def write(tx: Transaction) -> None:
            for i, key in enumerate(keys):
                tx.put(key, i)

        await store.run(write)
        async with store.transaction() as tx:
            tx.put(keys[0], "mine")
            tx.delete(keys[1])
            tx.put("zz.own", "new")
            got = dict(await tx.scan())
            tx.delete(keys[0])
        own = {k: v for k, v in got.items() if k.endswith(".own")}
        expected = {k: i for i, k in enumerate(keys) if i > 1}
        assert own == {**expected, keys[0]: "mine", "zz.own": "new"}
        async with store.transaction() as tx:
            after = dict(await tx.scan())
        assert keys[0] not in after and keys[1] not in after and after["zz.own"] == "new"


async def _scans_during_transfers(members: dict[int, Address]) -> None:
    """Whole-keyspace scans (pages across all 8 ranges) while transfers run: every scan
    sees every account and the total."""
    async with TxnStore(members, deadline_s=30.0) as store:
        await store.run(lambda tx: bank_init(tx, ACCOUNTS, INITIAL))
        assert len(await store.ranges.refresh()) >= RANGES
    stop = asyncio.Event()
    moved = [0]

    async def transfers(seed: int) -> None:
        rng = random.Random(seed)
        async with TxnStore(members, deadline_s=10.0) as store:
            while not stop.is_set():
                s, t = rng.sample(range(ACCOUNTS), 2)
                with contextlib.suppress(TxnError):
                    fn = lambda tx, s=s, t=t: bank_transfer(tx, s, t, 7)  # noqa: E731
                    if await store.run(fn, retries=20):
                        moved[0] += 1

    async def scan_total(tx: Transaction) -> list[int]:
        return [v for k, v in await tx.scan() if k.endswith(".bank")]

    workers = [asyncio.ensure_future(transfers(seed)) for seed in range(3)]
    scans: list[list[int]] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WORKLOAD_BOUND_S
    try:
        async with TxnStore(members, deadline_s=30.0) as store:
            sent = _count_commands(store)
            while (len(scans) < MIN_SCANS or moved[0] < MIN_TRANSFERS) and loop.time() < deadline:
                scans.append(await store.run(scan_total, retries=20))
            met, resolutions = store.stats.locks_met, store.stats.lock_resolutions
    finally:
        stop.set()
        await asyncio.wait(workers, timeout=60.0)
    for worker in workers:
        assert worker.done(), "a transfer worker did not stop"
        worker.result()
    bad = [s for s in scans if len(s) != ACCOUNTS or sum(s) != ACCOUNTS * INITIAL or min(s) < 0]
    assert bad == [], bad[:3]
    assert len(scans) >= MIN_SCANS and moved[0] >= MIN_TRANSFERS, (len(scans), moved[0])
    assert sent["Scan"] >= RANGES * len(scans), sent  # every scan went through every range
    print(
        f"{len(scans)} scans ({sent['Scan']} Scan commands, {met} locks met, {resolutions} "
        "resolved) "
        f"during {moved[0]} transfers, all conserved"
    )


async def _scan_across_splits(members: dict[int, Address]) -> None:
    """Keys enough to split their range (above 128 keys) written while a store with the
    old range map waits; its scan meets the splits (stale routes refreshed) and lists every
    key once, in order."""
    keys = [f"zx{i:04d}.split" for i in range(SPLIT_KEYS)]
    async with TxnStore(members, deadline_s=30.0) as stale, TxnStore(members) as writer:
        before = len(await stale.ranges.refresh())
        for chunk in range(0, SPLIT_KEYS, 50):

            async def write(tx: Transaction, part: list[str] = keys[chunk : chunk + 50]) -> None:
                for key in part:
                    tx.put(key, key)

            await writer.run(write)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SPLIT_BOUND_S
        while len(await writer.ranges.refresh()) == before and loop.time() < deadline:
            await asyncio.sleep(0.2)
        after = len(writer.ranges._map)
        assert after > before, f"no split within {SPLIT_BOUND_S} s ({before} ranges)"
        refreshes = stale.ranges.refreshes
        async with stale.transaction() as tx:
            got = await tx.scan("zx", "zy")
        assert got == [(k, k) for k in keys]
        assert stale.ranges.refreshes > refreshes  # a stale route met and refreshed
        print(f"scan of {SPLIT_KEYS} keys across a split ({before} -> {after} ranges)")


def _count_commands(store: TxnStore) -> Counter[str]:
    """Count the commands ``store`` sends, by type."""
    sent: Counter[str] = Counter()
    router = store._router
    call = router.call

    async def counting(command: Any, route_key: str) -> Any:
        sent[type(command).__name__] += 1
        return await call(command, route_key)

    router.call = counting  # type: ignore[method-assign]
    return sent


def _kill_coordinator_after_prewrites(
    data_dir: Path, mode: str, tag: str, commit_primary: bool
) -> None:
    """Start ``tests.txn_real.abandon``, wait (bounded) until its locks are in place, kill -9."""
    argv = [sys.executable, "-m", "tests.txn_real.abandon", str(data_dir), mode, tag]
    child = subprocess.Popen(
        [*argv, "1" if commit_primary else "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(child.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    reader.join(START_BOUND_S)
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=30.0)
    assert line and line[0].startswith("prewritten"), (line, child.stderr.read())  # type: ignore[union-attr]


async def _scan_resolves(members: dict[int, Address], tag: str, committed: bool) -> None:
    keys = abandoned_keys(tag)
    async with TxnStore(members, deadline_s=30.0, lock_wait_s=0.05) as store:
        async with store.transaction() as tx:
            got: dict[str, Any] = {k: v for k, v in await tx.scan() if k.endswith(f".{tag}")}
        assert got == ({k: i for i, k in enumerate(keys)} if committed else {}), (tag, got)
        assert store.stats.lock_resolutions > 0
        if committed:
            assert store.stats.rolled_forward > 0
        else:
            assert store.stats.rolled_back > 0
    async with TxnStore(members, deadline_s=30.0) as again:
        async with again.transaction() as tx:
            await tx.scan()
        assert again.stats.lock_resolutions == 0, f"{tag}: locks left after the scan"

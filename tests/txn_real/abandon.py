"""A coordinator that stops half-way, to be killed with -9 by a test: it prewrites
``KEYS`` keys ``{spread_key(i)}.{tag}`` (spread over the ranges) in one transaction,
commits the primary when asked, prints ``prewritten START_TS`` and sleeps until killed.

``python -m tests.txn_real.abandon DATA_DIR MODE TAG COMMIT_PRIMARY(0|1)``
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from pnyx.cli.cluster_cmd import members_of
from pnyx.services.multiraft import spread_key
from pnyx.services.txn import PERCOLATOR, Transaction, TxnStore

KEYS = 8
SLEEP_S = 600.0
"""Longer than any test waits: the test kills the process first."""


def abandoned_keys(tag: str) -> list[str]:
    """The keys the coordinator writes for ``tag`` (value: their index)."""
    return [f"{spread_key(i)}.{tag}" for i in range(KEYS)]


async def _main(data_dir: Path, mode: str, tag: str, commit_primary: bool) -> None:
    store = TxnStore(members_of(data_dir), mode=mode, deadline_s=30.0)
    tx = Transaction(store, await store._alloc_ts())
    for i, key in enumerate(abandoned_keys(tag)):
        tx.put(key, i)
    groups = await store._router.groups(list(tx._writes))
    results = await tx._send_prewrites(groups, mode != PERCOLATOR)
    if not all(r is not None and r.ok for r in results):
        raise SystemExit(f"prewrites refused: {results}")
    if commit_primary:
        commit_ts = await store._alloc_ts()
        outcome = await store._resolve([min(tx._writes)], tx.start_ts, commit_ts)
        if outcome:
            raise SystemExit(f"primary commit answered {outcome!r}")
    print(f"prewritten {tx.start_ts} ranges {len(groups)}", flush=True)
    await asyncio.sleep(SLEEP_S)


if __name__ == "__main__":
    directory, mode_arg, tag_arg, commit_arg = sys.argv[1:5]
    asyncio.run(_main(Path(directory), mode_arg, tag_arg, commit_arg == "1"))

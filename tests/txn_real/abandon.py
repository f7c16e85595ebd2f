"""A coordinator that stops half-way, to be killed with -9 by a test: it prewrites
``KEYS`` keys ``{spread_key(i)}.{tag}`` (spread over the ranges) in one transaction,
commits the primary when asked, prints ``prewritten START_TS`` and sleeps until killed.
It runs the real coordinator (:mod:`pnyx.protocols.txn.coordinator`, driven by
``TxnStore``) and stops at the crash point ``commit_ts`` (every prewrite answered), or
once the outcome is decided (the primary committed; async commit: every prewrite
durable), before the secondaries.

``python -m tests.txn_real.abandon DATA_DIR MODE TAG COMMIT_PRIMARY(0|1)``
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

from pnyx.cli.cluster_cmd import members_of
from pnyx.protocols.txn import coordinator as core
from pnyx.services.multiraft import spread_key
from pnyx.services.txn import TxnStore

KEYS = 8
SLEEP_S = 600.0
"""Longer than any test waits: the test kills the process first."""


def abandoned_keys(tag: str) -> list[str]:
    """The keys the coordinator writes for ``tag`` (value: their index)."""
    return [f"{spread_key(i)}.{tag}" for i in range(KEYS)]


async def _main(data_dir: Path, mode: str, tag: str, commit_primary: bool) -> None:
    store = TxnStore(members_of(data_dir), mode=mode, deadline_s=30.0)
    start_ts = await store._alloc_ts()
    writes = {key: i for i, key in enumerate(abandoned_keys(tag))}
    stop_at = "" if commit_primary else "commit_ts"
    gen = core.commit(store._ctx, start_ts, core.mutations_of(mode, writes, ()))
    value: Any = None
    while True:
        try:
            effect = gen.send(value)
        except StopIteration as stop:
            raise SystemExit(f"the commit ended: {stop.value}") from None
        if isinstance(effect, core.Crash) and effect.step == stop_at:
            break
        if isinstance(effect, core.Decided):
            if mode != core.PERCOLATOR or commit_primary:
                break  # the primary committed (async commit: every prewrite durable)
            raise SystemExit(f"decided past the stop: {effect.outcome}")
        if isinstance(effect, core.Retry):
            raise SystemExit("prewrites refused")
        value = await store._effect(effect)
    groups = await store._router.groups(list(writes))
    print(f"prewritten {start_ts} ranges {len(groups)}", flush=True)
    await asyncio.sleep(SLEEP_S)


if __name__ == "__main__":
    directory, mode_arg, tag_arg, commit_arg = sys.argv[1:5]
    asyncio.run(_main(Path(directory), mode_arg, tag_arg, commit_arg == "1"))

"""Helpers the real-process benchmarks share (imported by ``bench_*.py``; ``make bench``
runs only the ``bench_*.py`` scripts, so this module is never run on its own)."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

from pnyx.cli.cluster_cmd import is_our_process, load_state, pid_alive
from pnyx.runtime.transport import Address
from pnyx.services.multiraft import RangeClient

SETTLE_POLL_S = 0.2


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values`` (nearest rank); 0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def settle_ranges(members: dict[int, Address], ranges: int, settle_s: float) -> None:
    """Wait (at most ``settle_s``) until a multi-Raft cluster has ``ranges`` ranges, each
    with a leader."""
    client = RangeClient(members, deadline_s=30.0)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settle_s
    try:
        while True:
            infos = await client.ranges()
            if len(infos) >= ranges and all(i.leader is not None for i in infos):
                return
            if loop.time() > deadline:
                raise RuntimeError(f"ranges not settled after {settle_s} s: {infos}")
            await asyncio.sleep(SETTLE_POLL_S)
    finally:
        await client.close()


def kill_leftovers(data_dir: Path) -> None:
    """SIGKILL this cluster's processes that ``cluster down`` left (by their pids)."""
    state = load_state(data_dir)
    for node in (state or {}).get("nodes", []):
        pid = node["pid"]
        if pid_alive(pid) and is_our_process(pid, data_dir):
            os.kill(pid, signal.SIGKILL)


def replace_section(doc: Path, begin_mark: str, end_mark: str, body: str) -> None:
    """Replace what ``doc`` holds between its two marker lines with ``body``."""
    text = doc.read_text()
    if begin_mark not in text or end_mark not in text:
        raise SystemExit(f"{doc}: no {begin_mark} ... {end_mark} section to replace")
    before, rest = text.split(begin_mark, 1)
    after = rest.split(end_mark, 1)[1]
    doc.write_text(f"{before}{begin_mark}\n{body}{end_mark}{after}")

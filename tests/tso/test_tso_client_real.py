"""``AsyncTsoClient.next()`` on a real 3-process TSO cluster: real-time order across two
clients (a ``next()`` that starts after another returned gets a larger timestamp) and
coalescing (many concurrent callers over one connection cost fewer requests than
timestamps)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from pnyx.cli.cluster_cmd import local_cluster_up, members_of
from pnyx.services.tso import AsyncTsoClient

ROUNDS = 100
CONCURRENT = 256


async def _check(members: dict[int, tuple[str, int]]) -> None:
    one = AsyncTsoClient(members, deadline_s=60.0)
    two = AsyncTsoClient(members, deadline_s=60.0)
    try:
        await one.get_batch(5_000)  # a window fetched earlier must not serve later calls
        last = 0
        for i in range(ROUNDS):  # alternate the clients: each call starts after the last ended
            value = await (one if i % 2 else two).next()
            assert value > last, f"round {i}: {value} after {last}"
            last = value
        before = one.requests_sent
        burst = await asyncio.gather(*(one.next() for _ in range(CONCURRENT)))
        requests = one.requests_sent - before
        assert len(set(burst)) == CONCURRENT
        assert min(burst) > last, "a concurrent caller got a timestamp from before it asked"
        assert requests < CONCURRENT, f"{requests} requests for {CONCURRENT} callers"
        after = await two.next()
        assert after > max(burst)
    finally:
        await one.close()
        await two.close()


def test_next_is_ordered_in_real_time_across_clients_and_coalesces(tmp_path: Path) -> None:
    data_dir = tmp_path / "tso"
    local_cluster_up(data_dir, protocol="tso")
    asyncio.run(_check(members_of(data_dir)))

"""A Jepsen-style workload against a real multi-Raft cluster: asyncio workers, each with its
own :class:`RangeClient`, append unique tokens to and read keys spread over every range,
recording a history for :mod:`pnyx.check`; a blocking nemesis runs in a thread meanwhile."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pnyx.core import HistoryEvent
from pnyx.runtime.transport import Address
from pnyx.services.multiraft import Indeterminate, RangeClient, RangeError, RangeInfo, spread_key

FINAL_READER = 999
SETTLE_S = 90.0
"""How long the end of a run waits for every range to have a leader and answer."""


@dataclass
class Result:
    """What a run produced."""

    keys: tuple[str, ...]
    history: list[HistoryEvent] = field(default_factory=list)
    acked: list[tuple[str, str]] = field(default_factory=list)
    final: dict[str, str] = field(default_factory=dict)
    faults: list[str] = field(default_factory=list)
    ranges: list[RangeInfo] = field(default_factory=list)
    indeterminate: int = 0

    def lost_writes(self) -> list[tuple[str, str]]:
        """Acknowledged appends missing from the final values."""
        return [(k, t) for k, t in self.acked if t not in self.final.get(k, "")]


def _note(result: Result, process: int, kind: str, f: str, key: str, value: Any) -> None:
    event = HistoryEvent(process, kind, f, value, key, time.monotonic_ns())  # type: ignore[arg-type]
    result.history.append(event)


async def _worker(
    members: Mapping[int, Address], process: int, result: Result, stop: asyncio.Event, seed: int
) -> None:
    rng = random.Random(f"{seed}:{process}")
    client = RangeClient(members, request_timeout_s=1.5, deadline_s=10.0)
    n = 0
    try:
        while not stop.is_set():
            n += 1
            key = result.keys[rng.randrange(len(result.keys))]
            if rng.random() < 0.5:
                await _read(client, result, process, key)
            else:
                await _append(client, result, process, key, f"{process}.{n};")
    finally:
        await client.close()


async def _read(client: RangeClient, result: Result, process: int, key: str) -> None:
    _note(result, process, "invoke", "get", key, None)
    try:
        value = await client.get(key)
    except RangeError:
        _note(result, process, "fail", "get", key, None)
        await asyncio.sleep(0.05)
        return
    _note(result, process, "ok", "get", key, value)


async def _append(client: RangeClient, result: Result, process: int, key: str, token: str) -> None:
    _note(result, process, "invoke", "append", key, token)
    try:
        await client.append(key, token)
    except Indeterminate:
        result.indeterminate += 1
        _note(result, process, "info", "append", key, token)
        return
    except RangeError:
        _note(result, process, "fail", "append", key, token)
        await asyncio.sleep(0.05)
        return
    result.acked.append((key, token))
    _note(result, process, "ok", "append", key, token)


async def run_workload(
    members: Mapping[int, Address],
    *,
    key_count: int,
    workers: int,
    nemesis: Callable[[random.Random], str],
    rounds: int,
    interval_s: float,
    seed: int,
) -> Result:
    """``workers`` clients while ``nemesis`` runs ``rounds`` times, ``interval_s`` apart;
    then, once every range has a leader, a linearizable read of every key."""
    result = Result(tuple(spread_key(i) for i in range(key_count)))
    stop = asyncio.Event()
    tasks = [asyncio.ensure_future(_worker(members, p, result, stop, seed)) for p in range(workers)]
    rng = random.Random(seed)
    try:
        for _ in range(rounds):
            await asyncio.sleep(interval_s)
            result.faults.append(await asyncio.to_thread(nemesis, rng))
        await asyncio.sleep(interval_s)
    finally:
        stop.set()
        await asyncio.wait(tasks, timeout=60.0)  # each operation ends within its deadline
    for task in tasks:
        if not task.done():
            raise RuntimeError("a workload worker did not end 60 s after the stop")
        task.result()
    await _final(members, result)
    return result


async def _final(members: Mapping[int, Address], result: Result) -> None:
    """Wait until every range has a leader, then read every key (recorded)."""
    client = RangeClient(members, request_timeout_s=2.0, deadline_s=30.0)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SETTLE_S
    try:
        while True:
            result.ranges = await client.ranges()
            if all(r.leader is not None for r in result.ranges) or loop.time() > deadline:
                break
            await asyncio.sleep(0.2)
        for key in result.keys:
            _note(result, FINAL_READER, "invoke", "get", key, None)
            value = await client.get(key)
            _note(result, FINAL_READER, "ok", "get", key, value)
            result.final[key] = value
    finally:
        await client.close()

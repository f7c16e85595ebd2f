"""An asyncio KV workload against a real cluster of any scheme, recording a history.

``workers`` concurrent clients (one :func:`~pnyx.services.schemes_client.open_kv` session
each) issue random operations on a few keys until told to stop: ``get`` and ``append``
(unique tokens, so a final read shows whether an acknowledged write was lost) for schemes
with append, ``get`` and ``put`` (unique values) for Dynamo.  Every operation is recorded
as an invoke/complete pair for :mod:`pnyx.check` and timed for benchmarks.  A nemesis
coroutine (e.g. ``kill -9`` of a chain's head) runs meanwhile; the workload ends when it
returns (plus ``settle_s``) or after ``duration_s``.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from pnyx.core import HistoryEvent
from pnyx.runtime.transport import Address
from pnyx.services.client import ClientError
from pnyx.services.kv import KvError
from pnyx.services.schemes_client import KvApi, open_kv

KEYS: tuple[str, ...] = ("a", "b", "c")
FINAL_READER = 999
"""Process id of the final reads in the history."""
ERROR_PAUSE_S = 0.05
"""A worker whose operation failed waits this long before the next one."""
STOP_BOUND_S = 30.0
"""How long the end of a run waits for workers to finish their operation in flight
(each is bounded by its client's ``deadline_s``)."""

Nemesis = Callable[[], Awaitable[list[str]]]
"""Injects faults (and heals them) and describes what it did."""


@dataclass
class Sample:
    """One finished operation: its kind, whether it succeeded, its latency."""

    f: str
    ok: bool
    latency_s: float


@dataclass
class SchemeRun:
    """What a workload run produced."""

    history: list[HistoryEvent] = field(default_factory=list)
    acked: list[tuple[str, str]] = field(default_factory=list)
    """Every acknowledged write: (key, token appended or value put)."""
    final: dict[str, str] = field(default_factory=dict)
    """Value of every key read after the run (by a fresh client)."""
    samples: list[Sample] = field(default_factory=list)
    faults: list[str] = field(default_factory=list)
    duration_s: float = 0.0

    def lost_writes(self) -> list[tuple[str, str]]:
        """Acknowledged appends whose token is missing from the key's final value (only
        meaningful for a run of appends)."""
        return [(k, t) for k, t in self.acked if t not in str(self.final.get(k) or "")]


@dataclass(frozen=True)
class WorkloadPlan:
    """Who runs: ``workers`` clients for at most ``duration_s`` (``read_fraction`` gets)."""

    protocol: str
    members: Mapping[int, Address]
    workers: int = 3
    duration_s: float = 5.0
    read_fraction: float = 0.5
    seed: int = 1
    request_timeout_s: float = 1.0
    deadline_s: float = 10.0
    settle_s: float = 0.5
    """After the nemesis returns, the workload runs this much longer."""
    keys: tuple[str, ...] = KEYS
    write: str = "auto"
    """``append`` (unique tokens), ``put`` (unique values; values stay small, for
    benchmarks) or ``auto``: append where the scheme has it, else put."""

    def write_kind(self) -> str:
        """The write operation the workers issue."""
        if self.write not in ("auto", "append", "put"):
            raise ValueError(f"write must be auto, append or put, got {self.write!r}")
        if self.write == "auto":
            return "put" if self.protocol == "dynamo" else "append"
        return self.write


async def run_scheme_workload(plan: WorkloadPlan, nemesis: Nemesis | None = None) -> SchemeRun:
    """Run ``plan`` (and ``nemesis``), then read every key with a fresh client."""
    if plan.workers < 1 or plan.duration_s <= 0:
        raise ValueError(f"need workers >= 1 and duration_s > 0, got {plan}")
    run = SchemeRun()
    stop = asyncio.Event()
    started = time.monotonic()
    workers = [asyncio.ensure_future(_worker(plan, p, run, stop)) for p in range(plan.workers)]
    try:
        await _drive(plan, nemesis, run)
    finally:
        stop.set()
        done, pending = await asyncio.wait(workers, timeout=STOP_BOUND_S)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=STOP_BOUND_S)
    for task in done:
        task.result()  # a bug in a worker fails the run
    if pending:
        raise RuntimeError(f"{len(pending)} workload workers still ran {STOP_BOUND_S} s after stop")
    run.duration_s = time.monotonic() - started
    run.final = await _final_reads(plan, run)
    return run


async def _drive(plan: WorkloadPlan, nemesis: Nemesis | None, run: SchemeRun) -> None:
    if nemesis is None:
        await asyncio.sleep(plan.duration_s)
        return
    async with asyncio.timeout(plan.duration_s):
        run.faults.extend(await nemesis())
    await asyncio.sleep(plan.settle_s)


async def _final_reads(plan: WorkloadPlan, run: SchemeRun) -> dict[str, str]:
    client = _client(plan, FINAL_READER, run.history, deadline_s=30.0)
    try:
        return {key: await client.get(key) for key in plan.keys}
    finally:
        await client.close()


def _client(
    plan: WorkloadPlan, process: int, history: list[HistoryEvent], *, deadline_s: float
) -> KvApi:
    return open_kv(
        plan.protocol, plan.members, history=history, process=process,
        request_timeout_s=plan.request_timeout_s, deadline_s=deadline_s,
        seed=plan.seed * 1000 + process,
    )  # fmt: skip


async def _worker(plan: WorkloadPlan, process: int, run: SchemeRun, stop: asyncio.Event) -> None:
    rng = random.Random(f"{plan.seed}:{process}")
    client = _client(plan, process, run.history, deadline_s=plan.deadline_s)
    write = plan.write_kind()
    try:
        n = 0
        while not stop.is_set():
            n += 1
            key = plan.keys[rng.randrange(len(plan.keys))]
            token = f"{process}.{n};"
            read = rng.random() < plan.read_fraction
            f = "get" if read else write
            began = time.monotonic()
            ok = await _one(client, f, key, token)
            run.samples.append(Sample(f, ok, time.monotonic() - began))
            if ok and not read:
                run.acked.append((key, token))
            if not ok:
                await asyncio.sleep(ERROR_PAUSE_S)
    finally:
        await client.close()


async def _one(client: KvApi, f: str, key: str, token: str) -> bool:
    try:
        if f == "get":
            await client.get(key)
        elif f == "append":
            await client.append(key, token)
        else:
            await client.put(key, token)
    except (ClientError, KvError):
        return False
    return True

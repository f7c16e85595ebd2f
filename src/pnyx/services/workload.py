"""A Jepsen-style KV workload against a real cluster: concurrent clients, a nemesis, a history.

Each worker thread owns one :class:`~pnyx.services.kv.KvClient` session and issues random
``get`` / ``append`` operations on a few keys, recording every operation; a nemesis
callback injects faults (e.g. ``kill -9`` and restart) meanwhile.  Appends carry unique
tokens, so a final read of every key shows whether an acknowledged write was lost, and
the history can be checked for linearizability with :mod:`pnyx.check`.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from pnyx.core import HistoryEvent
from pnyx.runtime.transport import Address
from pnyx.services.client import ClientError
from pnyx.services.kv import KvClient, KvError

KEYS: tuple[str, ...] = ("a", "b", "c")
FINAL_READER = 999
"""Process id of the final reads in the history."""


@dataclass
class WorkloadResult:
    """What a workload run produced."""

    history: list[HistoryEvent] = field(default_factory=list)
    acked: list[tuple[str, str]] = field(default_factory=list)
    """Every acknowledged append: (key, token)."""
    final: dict[str, str] = field(default_factory=dict)
    """Value of every key read linearizably after the run."""
    faults: list[str] = field(default_factory=list)
    duration_s: float = 0.0

    def lost_writes(self) -> list[tuple[str, str]]:
        """Acknowledged appends missing from the final values."""
        return [(k, t) for k, t in self.acked if t not in self.final.get(k, "")]


Nemesis = Callable[[random.Random], str]
"""Injects one fault (and heals it) and describes what it did."""


def run_kv_workload(
    members: Mapping[int, Address],
    *,
    workers: int = 3,
    duration_s: float = 5.0,
    nemesis: Nemesis | None = None,
    nemesis_interval_s: float = 1.0,
    nemesis_rounds: int | None = None,
    seed: int = 1,
    keys: Sequence[str] = KEYS,
    think_s: float = 0.0,
) -> WorkloadResult:
    """Run ``workers`` clients while calling ``nemesis`` every interval.

    The run lasts ``duration_s``, or — when ``nemesis_rounds`` is given — until the nemesis
    has run that many times (then one more interval for the cluster to settle).  Each
    worker picks one of ``keys`` per operation and pauses ``think_s`` between operations:
    appended values grow with the appends per key, and the history (and its
    linearizability check) with both, so a fast system under a long run wants more keys
    and some think time.
    """
    if workers < 1 or duration_s <= 0 or not keys or think_s < 0:
        raise ValueError(
            f"workers {workers} must be >= 1, duration_s {duration_s} > 0, keys non-empty "
            f"({len(keys)}), think_s {think_s} >= 0"
        )
    result = WorkloadResult()
    stop = threading.Event()
    lock = threading.Lock()
    threads = [
        threading.Thread(
            target=_worker,
            args=(members, p, result, lock, stop, seed, tuple(keys), think_s),
            daemon=True,
            name=f"pnyx-workload-{p}",
        )
        for p in range(workers)
    ]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    try:
        _drive_nemesis(result, nemesis, nemesis_interval_s, nemesis_rounds, duration_s, seed)
    finally:
        stop.set()
        _join_workers(threads)
    result.duration_s = time.monotonic() - started
    with KvClient(members, history=result.history, process=FINAL_READER, deadline_s=30.0) as kv:
        result.final = {key: kv.get(key) for key in keys}
    return result


WORKER_JOIN_S = 60.0
"""How long the end of a run waits for the workers (each operation is bounded by its
client's 15 s deadline, so a worker ends within about that after the stop signal)."""


def _join_workers(threads: list[threading.Thread]) -> None:
    deadline = time.monotonic() + WORKER_JOIN_S
    for thread in threads:
        thread.join(timeout=max(0.0, deadline - time.monotonic()))
    running = [t.name for t in threads if t.is_alive()]
    if running:  # their operations would land in the history after the final reads
        raise RuntimeError(f"workload workers {running} still run {WORKER_JOIN_S} s after stop")


def _drive_nemesis(
    result: WorkloadResult,
    nemesis: Nemesis | None,
    interval_s: float,
    rounds: int | None,
    duration_s: float,
    seed: int,
) -> None:
    rng = random.Random(seed)
    if rounds is None or nemesis is None:
        deadline = time.monotonic() + duration_s
        while (left := deadline - time.monotonic()) > 0:
            time.sleep(min(interval_s, left))
            if nemesis is not None and deadline - time.monotonic() > 0:
                result.faults.append(nemesis(rng))
        return
    for _ in range(rounds):
        time.sleep(interval_s)
        result.faults.append(nemesis(rng))
    time.sleep(interval_s)


def _worker(
    members: Mapping[int, Address],
    process: int,
    result: WorkloadResult,
    lock: threading.Lock,
    stop: threading.Event,
    seed: int,
    keys: tuple[str, ...],
    think_s: float,
) -> None:
    rng = random.Random(f"{seed}:{process}")
    local: list[HistoryEvent] = []
    with KvClient(
        members, history=local, process=process, request_timeout_s=1.0, deadline_s=15.0
    ) as kv:
        n = 0
        while not stop.is_set():
            n += 1
            key = keys[rng.randrange(len(keys))]
            token = f"{process}.{n};"
            try:
                if rng.random() < 0.5:
                    kv.get(key)
                else:
                    kv.append(key, token)
                    with lock:
                        result.acked.append((key, token))
            except (ClientError, KvError):
                time.sleep(0.05)
            with lock:
                result.history.extend(local)
            local.clear()
            if think_s:
                stop.wait(think_s)

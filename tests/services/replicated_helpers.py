"""Helpers for replicated-object tests: 3-replica groups on 127.0.0.1, bounded polling."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path

from pnyx.runtime import bind_listen_socket
from pnyx.services.replicated import Replica, ReplicaOptions, ReplicatedObject

FAST = ReplicaOptions(tick_ms=5, request_timeout_s=1.0, deadline_s=10.0)


def bind_group(size: int = 3) -> tuple[dict[int, tuple[str, int]], dict[int, socket.socket]]:
    """Listening sockets on free ports, and the member map they make."""
    socks = {i: bind_listen_socket() for i in range(1, size + 1)}
    members = {i: sock.getsockname()[:2] for i, sock in socks.items()}
    return members, socks


def make_replicas(
    objs: Sequence[ReplicatedObject],
    members: dict[int, tuple[str, int]],
    socks: dict[int, socket.socket],
    data_dirs: Sequence[Path | None] | None = None,
    options: ReplicaOptions = FAST,
) -> list[Replica]:
    """One replica per member, hosting ``objs[i]`` (not started)."""
    dirs = data_dirs or [None] * len(objs)
    return [
        Replica(obj, i, members, data_dir=d, options=options, listen_sock=socks[i])
        for i, obj, d in zip(sorted(members), objs, dirs, strict=True)
    ]


@contextlib.contextmanager
def sync_group(replicas: Sequence[Replica]) -> Iterator[Sequence[Replica]]:
    """Start every replica in its own background thread; stop them all afterwards."""
    started: list[Replica] = []
    try:
        for replica in replicas:
            replica.start()
            started.append(replica)
        replicas[0].wait_ready()
        yield replicas
    finally:
        for replica in started:
            replica.stop()


@contextlib.asynccontextmanager
async def async_group(replicas: Sequence[Replica]) -> AsyncIterator[Sequence[Replica]]:
    """Start every replica on the running loop; stop them all afterwards."""
    started: list[Replica] = []
    try:
        for replica in replicas:
            await replica.start_async()
            started.append(replica)
        await replicas[0].wait_ready_async()
        yield replicas
    finally:
        for replica in started:
            await replica.stop_async()


def poll(condition: Callable[[], bool], timeout_s: float = 5.0, what: str = "condition") -> None:
    """Poll ``condition`` every 5 ms (blocking); AssertionError after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.005)

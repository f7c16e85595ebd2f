"""Replica.stop() ends within a bound whatever the peers do (blackholed, refusing, killed)."""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pnyx.services.objects import ReplicatedCounter
from pnyx.services.replicated import Replica, ReplicaError, ReplicaOptions
from tests.services.replicated_helpers import bind_group, poll

REPO = Path(__file__).resolve().parents[2]
STOP_BOUND_S = 30.0
"""stop() must return within this (the old code hung for minutes); normal: well under 1 s."""
ANSWER_BOUND_S = 60.0
"""A child replica must answer one command within this, even on a busy machine."""
OPTIONS = ReplicaOptions(tick_ms=5, request_timeout_s=1.0, deadline_s=10.0, stop_timeout_s=3.0)


@contextlib.contextmanager
def _blackhole() -> Iterator[tuple[str, int]]:
    """The address of a listening socket that never accepts, its backlog full: connects
    to it hang (later SYNs are dropped)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    fillers: list[socket.socket] = []
    try:
        sock.bind(("127.0.0.1", 0))
        sock.listen(0)
        for _ in range(4):
            filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            fillers.append(filler)
            filler.setblocking(False)
            filler.connect_ex(sock.getsockname())
        host, port = sock.getsockname()[:2]
        yield (str(host), int(port))
    finally:
        for filler in fillers:
            filler.close()
        sock.close()


def _stop_in_thread(replica: Replica) -> tuple[float, BaseException | None]:
    """(seconds stop() took, what it raised); AssertionError if it ran past the bound."""
    outcome: list[BaseException | None] = []

    def stop() -> None:
        try:
            replica.stop()
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=stop, daemon=True)
    started = time.monotonic()
    thread.start()
    thread.join(STOP_BOUND_S)
    took_s = time.monotonic() - started
    assert not thread.is_alive(), f"Replica.stop() still runs after {STOP_BOUND_S} s"
    return took_s, outcome[0]


@pytest.mark.parametrize("calls_in_flight", [0, 8, 64])
def test_stop_is_bounded_while_peers_blackhole_or_refuse(calls_in_flight: int) -> None:
    """Member 2 blackholes connections, nothing listens for member 3; calls keep retrying."""
    with _blackhole() as hole:
        _stop_bounded_with_peers(hole, calls_in_flight)


def _stop_bounded_with_peers(hole: tuple[str, int], calls_in_flight: int) -> None:
    members, socks = bind_group()
    socks[2].close()
    socks[3].close()  # nothing listens on 3's port
    members[2] = hole
    counter = ReplicatedCounter()
    replica = Replica(counter, 1, members, options=OPTIONS, listen_sock=socks[1])
    errors: list[BaseException] = []

    def call() -> None:
        try:
            counter.incr(1)
        except BaseException as exc:
            errors.append(exc)

    callers = [threading.Thread(target=call, daemon=True) for _ in range(calls_in_flight)]
    replica.start()
    for caller in callers:
        caller.start()
    time.sleep(0.5)  # let the calls retry against the peers for a while
    took_s, raised = _stop_in_thread(replica)
    assert raised is None, f"stop() raised {raised!r}"
    for caller in callers:
        caller.join(STOP_BOUND_S)
        assert not caller.is_alive(), "a call still waits after the replica stopped"
    assert len(errors) == calls_in_flight
    assert all(isinstance(e, ReplicaError) for e in errors), errors
    print(f"stop took {took_s:.2f} s with {calls_in_flight} calls in flight")


class _Child:
    """One replica process (tests/services/replica_child.py)."""

    def __init__(self, node_id: int, members: dict[int, tuple[str, int]], data_dir: Path):
        self.node_id = node_id
        self.argv = [
            sys.executable,
            "-m",
            "tests.services.replica_child",
            str(node_id),
            json.dumps({str(k): list(v) for k, v in members.items()}),
            str(data_dir),
        ]
        self.proc = self._spawn()

    def _spawn(self) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            self.argv,
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self.proc = proc
        assert self._read() == "started"
        return proc

    def _read(self) -> str:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], ANSWER_BOUND_S)
        assert ready, f"replica {self.node_id} did not answer within {ANSWER_BOUND_S} s"
        line = self.proc.stdout.readline()
        assert line, f"replica {self.node_id} exited ({self.proc.poll()})"
        return line.strip()

    def ask(self, command: str) -> str:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self._read()

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(ANSWER_BOUND_S)

    def restart(self) -> None:
        self._spawn()

    def stop(self) -> str:
        answer = self.ask("stop")
        self.proc.wait(ANSWER_BOUND_S)
        return answer

    def reap(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(ANSWER_BOUND_S)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()


def _leader_of(children: list[_Child], among: list[_Child], not_: _Child | None = None) -> _Child:
    """The replica (not ``not_``) every one of ``among`` names as leader (polled)."""
    found: list[_Child] = []

    def agreed() -> bool:
        named = {int(child.ask("leader")) for child in among}
        if len(named) != 1 or 0 in named or (not_ is not None and not_.node_id in named):
            return False
        found[:] = [c for c in children if c.node_id in named]
        return bool(found)

    poll(agreed, timeout_s=ANSWER_BOUND_S, what="a leader every replica knows")
    return found[0]


def test_stop_of_the_new_leader_after_kill9_and_restart_of_the_old_is_bounded(
    tmp_path: Path,
) -> None:
    """The issue's scenario: kill -9 the leader replica, restart it, stop the new leader."""
    members, socks = bind_group()
    for sock in socks.values():
        sock.close()  # the child processes bind these ports
    children: list[_Child] = []
    try:
        for node_id in sorted(members):
            children.append(_Child(node_id, members, tmp_path / f"r{node_id}"))
        old = _leader_of(children, children)
        assert all(child.ask("incr").isdigit() for child in children)
        old.kill()
        survivors = [c for c in children if c is not old]
        new = _leader_of(children, survivors, not_=old)
        old.restart()
        assert old.ask("incr").isdigit()  # the restarted replica works with the new leader
        answer = new.stop()
        kind, seconds = answer.split()[:2]
        assert kind == "stopped", answer
        assert float(seconds) < STOP_BOUND_S, answer
        for child in children:
            if child is not new:
                assert child.stop().startswith("stopped")
    finally:
        for child in children:
            child.reap()

"""``pnyx members up|serve`` as a user runs them: a group forms and its changes are printed,
SIGTERM stops every member it started; bad arguments get one-line errors and start nothing."""

from __future__ import annotations

import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import IO

from pnyx.cli.cluster_state import pid_alive
from tests.cli.cli_helpers import assert_one_line_error, pnyx

STOP_BOUND_S = 40.0
"""``up`` gives members 10 s to leave, then kills them; generous for a loaded machine."""
START_TIMEOUT_S = 60.0
ALIVE_LINE = re.compile(r"node=(\d+) member=(\d+) addr=\S+ state=alive incarnation=\d+$")
PID_LINE = re.compile(r"^member (\d+): pid (\d+), udp 127\.0\.0\.1:(\d+)")


def free_udp_run(count: int) -> int:
    """A base port with ``count`` consecutive free UDP ports (and TCP, for metrics)."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20_000, 60_000)
        if all(_free(base + i) for i in range(count)):
            return base
    raise AssertionError(f"no {count} consecutive free ports found")


def _free(port: int) -> bool:
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_INET, kind) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


class Output:
    """Collects a process's stdout and stderr lines in threads."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        assert process.stdout is not None and process.stderr is not None
        self._threads = [
            threading.Thread(target=self._read, args=(process.stdout, self.stdout), daemon=True),
            threading.Thread(target=self._read, args=(process.stderr, self.stderr), daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    @staticmethod
    def _read(stream: IO[str], into: list[str]) -> None:
        for line in stream:
            into.append(line.rstrip("\n"))

    def join(self) -> None:
        for thread in self._threads:
            thread.join(10)


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached within {timeout_s} s")
        time.sleep(0.1)


def test_up_prints_the_group_forming_and_sigterm_stops_every_member() -> None:
    base = free_udp_run(3)
    process = subprocess.Popen(
        [sys.executable, "-m", "pnyx", "members", "up", "--nodes", "3", "--base-port", str(base),
         "--tick-ms", "20", "--probe-ms", "200"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    output = Output(process)
    pids: dict[int, int] = {}
    try:

        def formed() -> bool:
            pairs = {m.groups() for line in output.stdout if (m := ALIVE_LINE.search(line))}
            return len(pairs) == 6  # each of 3 members sees the 2 others alive

        wait_for(formed, START_TIMEOUT_S, "3 members see each other alive")
        for line in output.stderr:
            if match := PID_LINE.match(line):
                member, pid, port = map(int, match.groups())
                pids[member] = pid
                assert port == base + member - 1
        assert sorted(pids) == [1, 2, 3], output.stderr
        assert all(pid_alive(pid) for pid in pids.values())
        process.send_signal(signal.SIGTERM)
        assert process.wait(STOP_BOUND_S) == 0, output.stderr
        output.join()
        assert not [pid for pid in pids.values() if pid_alive(pid)]
        assert "stopped 3 member(s)" in output.stderr
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        for pid in pids.values():  # members left behind by a failed test: ours, by pid
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_up_refuses_bad_arguments_and_busy_ports_before_starting_anything() -> None:
    assert_one_line_error(pnyx("members", "up", "--nodes", "0"), 2, "--nodes 0: must be 1..999")
    assert_one_line_error(
        pnyx("members", "up", "--nodes", "3", "--base-port", "65534"), 2, "must lie in 1..65535"
    )
    base = free_udp_run(3)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", base + 1))
        result = pnyx("members", "up", "--nodes", "3", "--base-port", str(base))
    line = assert_one_line_error(result, 1, f"UDP port {base + 1} (member 2) is not free")
    assert "pick another --base-port" in line
    assert result.stdout == ""


def test_serve_refuses_bad_arguments_with_one_line() -> None:
    assert_one_line_error(pnyx("members", "serve", "--id", "1", "--listen", "nowhere"), 2,
                          "--listen: bad address 'nowhere'")  # fmt: skip
    assert_one_line_error(
        pnyx("members", "serve", "--id", "1", "--listen", "127.0.0.1:7946",
             "--seed", "1=127.0.0.1:7947"),
        2, "member 1 cannot be its own seed",
    )  # fmt: skip
    assert_one_line_error(
        pnyx("members", "serve", "--id", "1", "--listen", "127.0.0.1:7946",
             "--tick-ms", "100", "--probe-ms", "150"),
        2, "--probe-ms 150 must be at least two ticks",
    )  # fmt: skip
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", 0))
        port = busy.getsockname()[1]
        result = pnyx("members", "serve", "--id", "2", "--listen", f"127.0.0.1:{port}")
    assert_one_line_error(result, 1, f"member 2 cannot listen on 127.0.0.1:{port}/udp")


def test_members_exit_by_themselves_when_up_is_killed() -> None:
    base = free_udp_run(2)
    process = subprocess.Popen(
        [sys.executable, "-m", "pnyx", "members", "up", "--nodes", "2", "--base-port", str(base),
         "--tick-ms", "20", "--probe-ms", "200"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    output = Output(process)
    pids: list[int] = []
    try:
        wait_for(lambda: len([ln for ln in output.stdout if ALIVE_LINE.search(ln)]) >= 2,
                 START_TIMEOUT_S, "2 members see each other")  # fmt: skip
        pids = [int(m.group(2)) for line in output.stderr if (m := PID_LINE.match(line))]
        assert len(pids) == 2
        process.kill()  # no chance to stop its members: they notice they lost their parent
        process.wait(10)
        wait_for(lambda: not any(pid_alive(pid) for pid in pids), STOP_BOUND_S,
                 "the orphaned members exit")  # fmt: skip
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        for pid in pids:
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
        output.join()

"""``pnyx consistency table --jobs 2`` stopped with SIGTERM: its worker processes go too."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

WAIT_S = 120.0
"""Generous bound for each wait (a loaded 2-core machine starts Python slowly)."""


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text(encoding="utf-8")
        except OSError:
            continue  # gone meanwhile
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:
            found.add(int(entry.name))
    return found


def _workers(pid: int) -> set[int]:
    """The children of ``pid`` that are multiprocessing workers (not the resource tracker)."""
    found = set()
    for child in _children(pid):
        try:
            argv = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in argv:
            found.add(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8").rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {WAIT_S:.0f} s waiting for {what}")


def test_sigterm_stops_the_worker_processes() -> None:
    command = [sys.executable, "-m", "pnyx", "consistency", "table", "--seeds", "1..5000",
               "--scheme", "chain", "--jobs", "2"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(lambda: len(_workers(proc.pid)) >= 2, "the worker processes")
        workers = _children(proc.pid)  # the workers and the resource tracker
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=WAIT_S)
        assert proc.returncode != 0
        _wait_for(lambda: not any(_alive(w) for w in workers), "the workers to exit")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=WAIT_S)

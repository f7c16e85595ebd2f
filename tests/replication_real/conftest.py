"""Fixtures of the real-process replication scheme tests: a local cluster per test, and no
process left behind (whatever still runs from the test's temp dir is killed afterwards)."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest


def _pids_under(directory: Path) -> list[int]:
    """Pids of processes whose command line names a path inside ``directory``."""
    marker = str(directory)
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                argv = handle.read().decode(errors="replace").split("\0")
        except OSError:
            continue
        if any(arg.startswith(marker) for arg in argv):
            found.append(int(entry))
    return found


@pytest.fixture(autouse=True)
def _kill_leftovers(tmp_path: Path) -> Iterator[None]:
    yield
    for pid in _pids_under(tmp_path):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

"""Leave no process behind: after each test, kill what still runs from its temp dir."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest


def processes_under(directory: Path) -> list[int]:
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
def _reap_started_processes(tmp_path: Path) -> Iterator[None]:
    yield
    for pid in processes_under(tmp_path):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def raft_cluster(tmp_path: Path) -> Iterator[Path]:
    """A detached 3-process Raft KV cluster (``pnyx cluster up``); yields its data dir.

    Its processes are killed afterwards by ``_reap_started_processes``."""
    from pnyx.cli.cluster_cmd import local_cluster_up

    data_dir = tmp_path / "raft"
    local_cluster_up(data_dir)
    yield data_dir

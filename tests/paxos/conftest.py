"""Real Paxos clusters for the kill -9 test: started in the test's temp dir, and every
process still running from that dir is killed afterwards (by pid)."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest


def _processes_under(directory: Path) -> list[int]:
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


@pytest.fixture
def paxos_cluster(tmp_path: Path) -> Iterator[Path]:
    """A detached 3-process Multi-Paxos KV cluster (``pnyx cluster up --protocol paxos``);
    yields its data dir.  Its processes are killed afterwards, even when the test fails."""
    from pnyx.cli.cluster_cmd import local_cluster_up

    data_dir = tmp_path / "paxos"
    try:
        local_cluster_up(data_dir, protocol="paxos")
        yield data_dir
    finally:
        for pid in _processes_under(tmp_path):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

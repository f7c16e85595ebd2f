"""Real Paxos clusters for the kill -9 test: started in the test's temp dir; every process
still running from that dir is killed afterwards (the reaping fixture of tests/services)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.services.conftest import _reap_started_processes

__all__ = ["_reap_started_processes", "paxos_cluster"]


@pytest.fixture
def paxos_cluster(tmp_path: Path) -> Iterator[Path]:
    """A detached 3-process Multi-Paxos KV cluster (``pnyx cluster up --protocol paxos``);
    yields its data dir.  Its processes are killed afterwards by ``_reap_started_processes``,
    even when the test fails."""
    from pnyx.cli.cluster_cmd import local_cluster_up

    data_dir = tmp_path / "paxos"
    local_cluster_up(data_dir, protocol="paxos")
    yield data_dir

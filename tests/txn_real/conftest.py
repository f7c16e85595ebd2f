"""Real ``txn`` clusters, started in the test's temp dir; every process still running from
that dir is killed afterwards (the reaping fixture of tests/services)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.services.conftest import _reap_started_processes

__all__ = ["RANGES", "_reap_started_processes", "txn_cluster"]

RANGES = 8


@pytest.fixture
def txn_cluster(tmp_path: Path) -> Iterator[Path]:
    """A detached 3-process ``txn`` cluster with 8 ranges (``pnyx cluster up --protocol txn
    --nodes 3 --ranges 8``); yields its data dir.  Its processes are killed afterwards by
    ``_reap_started_processes``, even when the test fails."""
    from pnyx.cli.cluster_cmd import cluster_command

    data_dir = tmp_path / "txn"
    result = cluster_command(
        *("up", "--protocol", "txn", "--nodes", "3", "--ranges", str(RANGES)),
        *("--data-dir", str(data_dir), "--detach"),
    )
    if result.returncode != 0:
        raise RuntimeError(f"cluster did not start: {result.stderr.strip()}")
    yield data_dir

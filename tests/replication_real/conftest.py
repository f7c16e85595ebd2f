"""Real-process replication scheme tests: no process left behind (the same reaping fixture
as tests/services: whatever still runs from the test's temp dir is killed afterwards)."""

from tests.services.conftest import _reap_started_processes

__all__ = ["_reap_started_processes"]

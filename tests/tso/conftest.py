"""Leave no process behind (the same reaping fixture as tests/services)."""

from tests.services.conftest import _reap_started_processes

__all__ = ["_reap_started_processes"]

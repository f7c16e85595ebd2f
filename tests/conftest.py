"""Suite-wide pytest settings.

The default per-test timeout (``timeout`` in pyproject.toml, 600 s) bounds the tests of
``make test``.  A soak test (``@pytest.mark.soak``, run by ``make soak``) runs thousands of
seeds or hundreds of kills; on a busy machine it can outlast that bound without anything
being wrong, so a soak test without its own ``timeout`` marker gets :data:`SOAK_TIMEOUT_S`.
"""

from __future__ import annotations

import pytest

SOAK_TIMEOUT_S = 4 * 3600
"""Per-test bound of a soak test that sets none itself (still bounded: a hung soak fails)."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Give soak tests without a timeout marker the soak bound."""
    for item in items:
        if item.get_closest_marker("soak") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(SOAK_TIMEOUT_S))

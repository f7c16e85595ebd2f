"""Helpers for runtime tests: run a coroutine with a hard timeout, poll a condition."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run_async(main: Coroutine[Any, Any, T], timeout_s: float = 20.0) -> T:
    """Run ``main`` on a fresh event loop; fail instead of hanging past ``timeout_s``."""
    return asyncio.run(asyncio.wait_for(main, timeout_s))


async def wait_until(
    condition: Callable[[], bool], timeout_s: float = 5.0, what: str = "condition"
) -> None:
    """Poll ``condition`` every 5 ms until it holds; AssertionError after ``timeout_s``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.005)

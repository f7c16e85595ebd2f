"""Identifiers and logical time shared by every protocol and runtime."""

from typing import NewType

NodeId = NewType("NodeId", int)
"""Address of a protocol node or a client.  Nodes are small positive integers."""

Ticks = NewType("Ticks", int)
"""A count of logical clock ticks; the runtime maps one tick to wall-clock time."""

CLIENT_ID_BASE = 1_000
"""Client addresses start here so they never collide with node ids."""


def is_client(address: int) -> bool:
    """True when ``address`` belongs to a client rather than to a protocol node."""
    return address >= CLIENT_ID_BASE

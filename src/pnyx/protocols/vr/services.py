"""The runtime hook of a VR replica: it asks for no services (no snapshots)."""

from __future__ import annotations

from typing import Any

from pnyx.core import Node, StateMachine


def serve(node: Node, sm: StateMachine | None, request: Any) -> None:
    """VR puts nothing in ``Ready.services``; a request here is a bug, reported as such."""
    raise RuntimeError(f"a VR replica asked for an unknown service {request!r}")

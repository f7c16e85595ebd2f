"""The runtime hook of a VR replica: it asks only for checkpoints (``TakeCheckpoint``).

A replica configured with ``VrConfig.checkpoint_interval_ops`` asks its runtime for a
snapshot of the state machine every that many executed ops, then drops its log prefix
(:mod:`pnyx.protocols.vr.checkpoints`); anything else in ``Ready.services`` is a bug.
"""

from __future__ import annotations

from pnyx.protocols.vr.checkpoints import serve_checkpoint as serve

__all__ = ["serve"]

"""Convergent replicated data types: state-based/delta types, op-based types and text.

See ``docs/CRDT.md`` for the list of types and their guarantees.
"""

from pnyx.protocols.crdt.base import Dot, ReplicaId, VersionVector, WireError

__all__ = [
    "Dot",
    "ReplicaId",
    "VersionVector",
    "WireError",
]

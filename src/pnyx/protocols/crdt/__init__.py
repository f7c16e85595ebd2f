"""Convergent replicated data types: state-based/delta types, op-based types and text.

State-based types (each ``T(replica)``; mutators apply locally and return the delta;
``merge`` joins): :class:`GCounter`, :class:`PNCounter`, :class:`GSet`, :class:`TwoPSet`,
:class:`LWWRegister`, :class:`MVRegister`, :class:`AWORSet`, :class:`RWORSet`,
:class:`ORMap`; by short name in :data:`TYPES`.  :class:`DeltaAntiEntropy` ships them.
See ``docs/CRDT.md`` for the guarantees of each.
"""

from pnyx.protocols.crdt.anti_entropy import DeltaAntiEntropy, Shipment
from pnyx.protocols.crdt.base import Dot, ReplicaId, VersionVector, WireError
from pnyx.protocols.crdt.context import CausalContext
from pnyx.protocols.crdt.counters import GCounter, PNCounter
from pnyx.protocols.crdt.ormap import ORMap
from pnyx.protocols.crdt.orsets import AWORSet, RWORSet
from pnyx.protocols.crdt.registers import LWWRegister, MVRegister
from pnyx.protocols.crdt.registry import TYPES, new_crdt
from pnyx.protocols.crdt.sets import GSet, TwoPSet
from pnyx.protocols.crdt.state import Element, StateCRDT

__all__ = [
    "TYPES",
    "AWORSet",
    "CausalContext",
    "DeltaAntiEntropy",
    "Dot",
    "Element",
    "GCounter",
    "GSet",
    "LWWRegister",
    "MVRegister",
    "ORMap",
    "PNCounter",
    "RWORSet",
    "ReplicaId",
    "Shipment",
    "StateCRDT",
    "TwoPSet",
    "VersionVector",
    "WireError",
    "new_crdt",
]

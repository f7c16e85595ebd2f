"""The state-based types by short name (``TYPES``) and a factory for them."""

from __future__ import annotations

from pnyx.protocols.crdt.base import ReplicaId
from pnyx.protocols.crdt.counters import GCounter, PNCounter
from pnyx.protocols.crdt.ormap import ORMap
from pnyx.protocols.crdt.orsets import AWORSet, RWORSet
from pnyx.protocols.crdt.registers import LWWRegister, MVRegister
from pnyx.protocols.crdt.sets import GSet, TwoPSet
from pnyx.protocols.crdt.state import StateCRDT

TYPES: dict[str, type[StateCRDT]] = {
    "gcounter": GCounter,
    "pncounter": PNCounter,
    "gset": GSet,
    "2pset": TwoPSet,
    "lww": LWWRegister,
    "mvreg": MVRegister,
    "orset": AWORSet,
    "rwset": RWORSet,
    "ormap": ORMap,
}
"""Every state-based type, by the short name used on the wire and in ``ORMap`` value types."""


def new_crdt(type_name: str, replica: ReplicaId) -> StateCRDT:
    """A new (bottom) CRDT of ``type_name``; ``ormap/<value type>`` makes an :class:`ORMap`
    of that value type.  Raises ``ValueError`` naming the valid types."""
    if type_name.startswith("ormap/"):
        return ORMap(replica, type_name[len("ormap/") :])
    cls = TYPES.get(type_name)
    if cls is None:
        raise ValueError(f"unknown CRDT type {type_name!r}; valid: {', '.join(sorted(TYPES))}")
    return cls(replica)

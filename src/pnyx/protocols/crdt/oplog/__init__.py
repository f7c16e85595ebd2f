"""Operation-based CRDTs (CmRDTs, Shapiro et al. 2011) over causal broadcast.

Each type splits an update into ``prepare_*`` at the source (reads local state, returns an
op, changes nothing observable) and :meth:`effect` at every replica, the source included.
Convergence needs every op delivered exactly once and in causal order, which
:class:`pnyx.protocols.broadcast.CausalBroadcast` provides.  See ``README.md``.
"""

from pnyx.protocols.crdt.oplog.counter import CounterOp, OpCounter
from pnyx.protocols.crdt.oplog.orset import AddOp, OpORSet, RemoveOp, SetOp

__all__ = [
    "AddOp",
    "CounterOp",
    "OpCounter",
    "OpORSet",
    "RemoveOp",
    "SetOp",
]

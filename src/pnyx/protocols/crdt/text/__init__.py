"""Text CRDT: :class:`FugueText`, a Fugue sequence CRDT with run-length storage.

``FugueText(replica)``: ``insert(pos, text)`` / ``delete(pos, count)`` edit locally and
return the encoded update; ``apply_update(data)`` merges one (idempotent, any order;
ops with missing causal predecessors are buffered); ``version()``, ``encode_since(v)``,
``encode()`` / ``FugueText.decode(replica, data)``.  Positions are Unicode code points.

Op-level API (for op-based replication over a causal broadcast): ``ops_since(v)`` returns
:class:`TextOp` values and ``apply_op(op)`` merges one.  A :class:`TextOp` is a frozen
msgspec Struct (``array_like``): ``replica``, ``counter`` (first id used; a replica's ids
count 1, 2, ... over inserts and deletes alike) and either ``text`` (an insert: the code
points get consecutive ids, the first a child of ``(parent_replica, parent_counter)``
on side ``right``, counter 0 = the root) or ``targets`` (a delete: ``(replica, counter,
signed length)`` ranges of tombstoned characters, one id per character).  ``op.length``
is the number of ids.  Ops from one replica must be applied in counter order (the
text buffers them otherwise); ``TextOp`` encodes with ``msgspec.msgpack``.
See ``README.md`` for the algorithm.
"""

from pnyx.protocols.crdt.text.fugue import CHUNK_MAX_PIECES, DEFAULT_MAX_PENDING_OPS, FugueText
from pnyx.protocols.crdt.text.ops import TextOp, decode_ops, encode_ops

__all__ = [
    "CHUNK_MAX_PIECES",
    "DEFAULT_MAX_PENDING_OPS",
    "FugueText",
    "TextOp",
    "decode_ops",
    "encode_ops",
]

"""Replica names and how a group of named replicas maps onto the transport's node ids.

The pnyx transport addresses nodes by small integers.  A document's replicas are named by
strings; every replica numbers the group ``sorted(names)`` as 1, 2, ... and says which
group it numbered in the cluster id of its hellos (a digest of the sorted names and the
document id), so two replicas configured with different groups refuse each other's
connections (``wrong_cluster`` in the log) instead of misnaming each other.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

from pnyx.core import CLIENT_ID_BASE

MAX_NODE_ID = CLIENT_ID_BASE - 1
"""Node ids stay below the transport's client id range."""
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def check_replica_name(name: object, *, what: str = "replica name") -> str:
    """``name`` if it is 1-64 characters of ``A-Za-z0-9._-`` (not starting with . _ -)."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(
            f"bad {what} {name!r}: use 1-64 characters of A-Z a-z 0-9 . _ - "
            "(starting with a letter or digit)"
        )
    return name


def group_ids(names: Iterable[str]) -> dict[str, int]:
    """Node id of every replica of the group: its position in ``sorted(names)``, from 1."""
    ordered = sorted(set(names))
    if len(ordered) > MAX_NODE_ID:
        raise ValueError(f"a document has at most {MAX_NODE_ID} replicas, got {len(ordered)}")
    return {name: index + 1 for index, name in enumerate(ordered)}


def group_cluster_id(doc_id: str, names: Iterable[str]) -> str:
    """The cluster id every replica of the same document and group puts in its hellos."""
    digest = hashlib.sha256("\n".join([doc_id, *sorted(set(names))]).encode()).hexdigest()
    return f"crdt-{digest[:16]}"

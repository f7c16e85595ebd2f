"""Replicated CRDT documents for real processes: :class:`CrdtDoc`, its sync and its store.

``CrdtDoc`` holds named fields (text, counters, sets, registers, maps), persists them in a
CRC-checked snapshot + update log, syncs them with peers over the pnyx TCP transport by
anti-entropy, and reports changes to callbacks.  ``pnyx crdt serve`` runs one replica;
:class:`DocClient` (and ``pnyx crdt get|edit|status``) talks to it.  See README.md here.
"""

from pnyx.services.crdt.client import DocClient, DocRequestError
from pnyx.services.crdt.doc import (
    ChangeCallback,
    ChangeEvent,
    CrdtDoc,
    DocConfig,
    DocError,
    RemoteUpdateError,
)
from pnyx.services.crdt.fields import FieldState
from pnyx.services.crdt.kinds import (
    EDIT_ACTIONS,
    CounterHandle,
    GCounterHandle,
    GSetHandle,
    MapHandle,
    MVRegisterHandle,
    RegisterHandle,
    RWSetHandle,
    SetHandle,
    StateField,
    TwoPSetHandle,
)
from pnyx.services.crdt.store import StoreCorruptError, StoreError
from pnyx.services.crdt.text_field import TextField, TextHandle

__all__ = [
    "EDIT_ACTIONS",
    "ChangeCallback",
    "ChangeEvent",
    "CounterHandle",
    "CrdtDoc",
    "DocClient",
    "DocConfig",
    "DocError",
    "DocRequestError",
    "FieldState",
    "GCounterHandle",
    "GSetHandle",
    "MVRegisterHandle",
    "MapHandle",
    "RWSetHandle",
    "RegisterHandle",
    "RemoteUpdateError",
    "SetHandle",
    "StateField",
    "StoreCorruptError",
    "StoreError",
    "TextField",
    "TextHandle",
    "TwoPSetHandle",
]

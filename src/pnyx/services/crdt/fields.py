"""The one interface a document needs from a field's CRDT: versions, deltas, apply, encode.

A :class:`FieldState` is the replicated state of one named field.  The document keeps,
persists and syncs fields only through this interface, so every kind (text, counters, sets,
registers, maps — :mod:`pnyx.services.crdt.kinds` — or one registered by a program) is
handled the same way:

* :meth:`FieldState.version` summarises what the field has seen (replica → counter);
* :meth:`FieldState.updates_since` is what a replica at some version lacks;
* :meth:`FieldState.apply` merges an update (idempotent; ``ValueError`` on malformed data,
  leaving the field unchanged), and says whether anything was new;
* :meth:`FieldState.encode` / :meth:`FieldState.decode` the whole state (snapshots).

Local mutations are methods of the concrete kinds; each returns the update payload that the
document logs, pushes to peers and reports to change callbacks.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar, Self

MAX_FIELD_NAME_CHARS = 256


class FieldState(ABC):
    """Replicated state of one field of a document (see the module docstring)."""

    kind: ClassVar[str]
    """Short name of the field type, carried on the wire and in files (e.g. ``"text"``)."""

    def __init__(self, replica: str) -> None:
        self.replica = replica

    @abstractmethod
    def version(self) -> dict[str, int]:
        """Per replica, the highest counter of its updates this field holds contiguously."""

    @abstractmethod
    def updates_since(self, version: Mapping[str, int], max_bytes: int) -> list[bytes]:
        """Payloads that bring a replica at ``version`` up to this one ([] if nothing).

        Each payload should stay within ``max_bytes`` when the kind can split its updates;
        a kind that cannot returns one payload (the caller refuses it if it is too big).
        """

    @abstractmethod
    def apply(self, payload: bytes) -> bool:
        """Merge a payload from :meth:`updates_since` or a local mutation; True if it was new.

        Idempotent.  Raises ``ValueError`` (with what was wrong) on malformed data and then
        leaves the field as it was.
        """

    def logged_form(self, payload: bytes) -> bytes:
        """What to log for ``payload`` that :meth:`apply` just found new (default: itself).

        A kind that buffers updates until their predecessors arrive returns everything the
        payload released, so that replaying the log alone rebuilds what was applied.
        """
        return payload

    @abstractmethod
    def encode(self) -> bytes:
        """The whole state, for snapshots (read back by :meth:`decode`)."""

    @classmethod
    @abstractmethod
    def decode(cls, replica: str, data: bytes) -> Self:
        """Rebuild a field from :meth:`encode` output (``ValueError`` when malformed)."""

    @abstractmethod
    def value(self) -> Any:
        """The observable value as plain JSON-like data (str, int, list, dict, ...)."""


def dominated(mine: Mapping[str, int], theirs: Mapping[str, int]) -> bool:
    """True when ``theirs`` covers every counter of ``mine`` (nothing to send them)."""
    return all(theirs.get(replica, 0) >= counter for replica, counter in mine.items())


def check_field_name(name: object) -> str:
    """``name`` if it is a usable field name, else ``ValueError`` saying why."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"field name must be a non-empty string, got {name!r}")
    if len(name) > MAX_FIELD_NAME_CHARS:
        raise ValueError(
            f"field name of {len(name)} characters is longer than {MAX_FIELD_NAME_CHARS}"
        )
    return name

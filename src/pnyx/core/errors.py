"""Errors a protocol raises for its runtime to handle (no I/O here)."""

from __future__ import annotations


class InvalidMessage(ValueError):
    """A node refuses a message from a remote (peer or client).

    Raised from ``Node.step`` *before* the node changes any state, for a message that is
    well-formed on the wire but must not be processed (e.g. a field out of range, a term
    below zero, an entry list that does not match its indices).  The runtime treats it as
    the remote's mistake: it logs and counts it and closes that sender's connection, and
    the node keeps running.  Any other exception from ``step`` is a bug in the node and
    stops it (fail-stop).
    """

"""The simulated disk of one node: what is durable, the drive's volatile cache, and damage.

The real runtime writes ``Ready.persist`` to a checksummed write-ahead log and fsyncs it
before sending.  This model keeps the outcome of that log as a :class:`DurableState` fold
(the same fold both runtimes use) and adds the ways a disk goes wrong:

- ``torn`` (in the runner): a crash during an fsync keeps the unsynced batch whole or loses
  it whole (the real WAL's sync batches are atomic: recovery drops an incomplete last batch);
- ``corrupt``: a synced sector is damaged; the next recovery finds the checksum mismatch
  with valid records after it (not a torn tail) and refuses to start;
- ``misdirect``: a write lands on another record's place; the record it should have been
  is missing and the one it overwrote is out of sequence, so recovery refuses to start;
- ``lost-write`` (lying): the drive acknowledges a write it never makes.  Lost at the
  tail it is silent (an older hard state or a shorter log); a later write that leaves a
  gap makes the loss detectable and recovery refuses;
- ``lying-fsync`` (lying): fsync returns success while the data sits in the drive's
  volatile cache; a crash loses the cache.

Detected damage never yields a silently shorter log: a node whose recovery refuses stays
down (fail-stop, as the real runtime does), see :attr:`SimDisk.damage`.
"""

from __future__ import annotations

from pnyx.core import DurableState, LogAppend, PersistOp


class SimDisk:
    """One node's disk.  ``state`` holds what a recovery would read back."""

    __slots__ = ("cache", "damage", "lose_next", "lying", "misdirect_next", "records", "state")

    def __init__(self) -> None:
        self.state = DurableState()
        self.cache: list[PersistOp] = []
        """Writes a lying fsync acknowledged that are not on the platter yet."""
        self.damage = ""
        """Why recovery refuses this disk (empty while it is sound)."""
        self.records = 0
        """Durable write records on the disk (each ``PersistOp`` is one record)."""
        self.lying = False
        """While True, fsync succeeds without persisting (``lying-fsync``)."""
        self.lose_next = False
        """The next synced batch loses one write silently (``lost-write``)."""
        self.misdirect_next = False
        """The next synced batch has one write land on another record (``misdirect``)."""

    def sync(self, ops: list[PersistOp], victim: int) -> str:
        """An fsync of ``ops`` reported success; returns what went wrong ('' when nothing).

        ``victim`` picks which write of the batch an armed lost or misdirected write hits.
        """
        if self.lying:
            self.cache.extend(ops)
            return "lying-fsync"
        self._flush_cache()
        if self.misdirect_next and ops:
            self.misdirect_next = False
            lost = victim % len(ops)
            self._write([op for i, op in enumerate(ops) if i != lost])
            if not self.damage:
                self.damage = f"misdirected write: record {self.records} out of sequence"
            return "misdirect"
        if self.lose_next and ops:
            self.lose_next = False
            lost = victim % len(ops)
            self._write([op for i, op in enumerate(ops) if i != lost])
            return "lost-write"
        self._write(ops)
        return ""

    def write_torn(self, ops: list[PersistOp]) -> None:
        """A crash mid-write kept this prefix of an unsynced batch."""
        self._flush_cache()  # the drive flushes earlier data before later data
        self._write(ops)

    def corrupt_sector(self) -> bool:
        """Damage a synced record with valid records after it; False if there are too few."""
        if self.records < 2:
            return False
        if not self.damage:
            self.damage = f"checksum mismatch in record 1 of {self.records}, valid records follow"
        return True

    def power_loss(self) -> int:
        """A crash: the volatile cache is lost.  Returns how many writes were lost."""
        lost = len(self.cache)
        self.cache = []
        return lost

    def _flush_cache(self) -> None:
        if self.cache:
            cached, self.cache = self.cache, []
            self._write(cached)

    def _write(self, ops: list[PersistOp]) -> None:
        state = self.state
        for op in ops:
            if self.damage:
                return  # recovery stops at the damage anyway: later writes are moot
            if type(op) is LogAppend and op.first_index > state.last_index + 1:
                self.damage = (
                    f"gap: log record at {op.first_index} follows last index {state.last_index}"
                )
                return
            state.apply(op)
            self.records += 1

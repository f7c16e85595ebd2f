"""The in-memory Raft log: entries after a snapshot point, plus configuration history."""

from __future__ import annotations

from pnyx.protocols.raft.membership import Membership
from pnyx.protocols.raft.messages import ENTRY_CONFIG, Entry


class RaftLog:
    """Entries ``offset + 1 .. last_index``; ``offset``/``offset_term`` name the snapshot point.

    Also remembers every configuration entry after the snapshot point, so that the
    configuration in force at any retained index is known (snapshots record it).
    """

    __slots__ = ("configs", "entries", "generation", "offset", "offset_term", "snapshot_config")

    def __init__(self, offset: int, offset_term: int, snapshot_config: Membership) -> None:
        self.offset = offset
        self.offset_term = offset_term
        self.entries: list[Entry] = []
        self.snapshot_config = snapshot_config
        self.configs: list[tuple[int, Membership]] = []
        self.generation = 0
        """Bumped whenever existing entries are removed (truncation, snapshot install)."""

    @property
    def first_index(self) -> int:
        return self.offset + 1

    @property
    def last_index(self) -> int:
        return self.offset + len(self.entries)

    @property
    def last_term(self) -> int:
        return self.entries[-1].term if self.entries else self.offset_term

    def term(self, index: int) -> int | None:
        """Term of the entry at ``index``; None when compacted away or beyond the end."""
        if index == self.offset:
            return self.offset_term
        if index < self.offset or index > self.offset + len(self.entries):
            return None
        return self.entries[index - self.offset - 1].term

    def entry(self, index: int) -> Entry:
        assert self.offset < index <= self.last_index, (
            f"entry {index} outside ({self.offset}, {self.last_index}]"
        )
        return self.entries[index - self.offset - 1]

    def slice(self, lo: int, hi: int) -> tuple[Entry, ...]:
        """Entries ``lo .. hi - 1`` (all retained)."""
        assert self.offset < lo <= hi <= self.last_index + 1, f"slice [{lo}, {hi}) out of range"
        base = self.offset + 1
        return tuple(self.entries[lo - base : hi - base])

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Raft §5.4.1: is a log ending at (last_index, last_term) at least as up to date?"""
        mine = self.last_term
        return last_term > mine or (last_term == mine and last_index >= self.last_index)

    def config(self) -> Membership:
        """The latest configuration in the log (committed or not): the one in force."""
        return self.configs[-1][1] if self.configs else self.snapshot_config

    def config_at(self, index: int) -> Membership:
        """The configuration in force at ``index`` (index >= offset)."""
        found = self.snapshot_config
        for at, conf in self.configs:
            if at > index:
                break
            found = conf
        return found

    def append(self, entries: list[Entry] | tuple[Entry, ...]) -> None:
        first = self.last_index + 1
        self.entries.extend(entries)
        for k, e in enumerate(entries):
            if e.kind == ENTRY_CONFIG:
                self.configs.append((first + k, Membership.from_data(e.data)))

    def truncate_from(self, index: int) -> None:
        """Drop entries ``index ..`` (a conflicting, never-committed suffix)."""
        assert index > self.offset, f"truncating at {index} reaches into snapshot {self.offset}"
        del self.entries[index - self.offset - 1 :]
        while self.configs and self.configs[-1][0] >= index:
            self.configs.pop()
        self.generation += 1

    def compact_through(self, index: int, term: int, config: Membership) -> None:
        """Forget entries through ``index`` (now covered by a snapshot); keep what follows."""
        assert index >= self.offset, f"compaction to {index} behind offset {self.offset}"
        if index >= self.last_index or self.term(index) != term:
            self.entries = []
            self.configs = []
        else:
            del self.entries[: index - self.offset]
            self.configs = [(at, c) for at, c in self.configs if at > index]
        self.offset = index
        self.offset_term = term
        self.snapshot_config = config
        self.generation += 1

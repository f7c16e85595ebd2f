"""Simulator specs for atomic commitment: ``2pc`` and ``3pc``.

The monitor checks, after every applied vote or decision:

- **atomicity**: no transaction is committed at one node and aborted at another, and no node
  changes its decision (across restarts too);
- **validity**: a transaction commits only if every participant voted yes.

Liveness (heal phase): every participant that voted yes has decided.  In 2PC a participant
whose coordinator is down for good (a damaged disk) stays in doubt: that is 2PC's blocking,
reported in :attr:`CommitMonitor.blocked`, not a violation.  A coordinator that halts while
alive (``2pc+coordinator_halts``) fails liveness with the list of blocked participants.

A violation's detail is a counterexample: who decided what, when and how, and the network
partitions that were in force during the transaction.
"""

from __future__ import annotations

from typing import Any

from pnyx.core import Apply, Restore
from pnyx.protocols.commit.client import make_client
from pnyx.protocols.commit.messages import Decided, Voted
from pnyx.protocols.commit.mutants import (
    MUTANTS,
    make_halting_2pc_node,
    make_halting_3pc_node,
)
from pnyx.protocols.commit.threepc import make_node as make_3pc_node
from pnyx.protocols.commit.twopc import make_node as make_2pc_node
from pnyx.sim.schedule import FaultEvent
from pnyx.sim.spec import Monitor, ProtocolDef, Violation, World

_Decision = tuple[bool, str, int]
"""(commit, how, virtual time in µs)."""


class CommitMonitor(Monitor):
    """Atomicity and validity of every transaction; blocking and liveness at the end."""

    def __init__(self, node_ids: tuple[int, ...], *, blocking_allowed: bool) -> None:
        self.node_ids = node_ids
        self.coordinator = min(node_ids)
        self.blocking_allowed = blocking_allowed
        self.votes: dict[int, dict[int, bool]] = {}
        self.decisions: dict[int, dict[int, _Decision]] = {}
        self.participants: dict[int, tuple[int, ...]] = {}
        self.first_seen_us: dict[int, int] = {}
        self.partitions: list[tuple[int, int | None, str]] = []
        """(start µs, end µs or None while in force, description) of every partition."""
        self.voted_at_us: dict[tuple[int, int], int] = {}
        """(txn, participant) -> when it voted yes."""
        self.longest_doubt: tuple[int, int, int] = (0, 0, 0)
        """(µs, participant, txn): the longest a participant waited in doubt for a decision."""
        self.blocked: list[tuple[int, int]] = []
        """(participant, txn) in doubt at the end while the coordinator was down for good."""

    # -- collecting ----------------------------------------------------------------------

    def on_fault(self, world: World, event: FaultEvent, started: bool) -> None:
        if event.kind != "partition":
            return
        if started:
            self.partitions.append((world.now_us, None, event.describe()))
            return
        for i, (start, end, text) in enumerate(self.partitions):
            if end is None and text == event.describe():
                self.partitions[i] = (start, world.now_us, text)
                break

    def on_apply(
        self, world: World, node_id: int, item: Apply | Restore, result: Any
    ) -> Violation | None:
        if not isinstance(item, Apply):
            return Violation("unexpected", f"node {node_id} restored a snapshot")
        event = item.command
        if isinstance(event, Voted):
            self._seen(world, event.txn, event.participants)
            self.votes.setdefault(event.txn, {})[node_id] = event.yes
            if event.yes:
                self.voted_at_us.setdefault((event.txn, node_id), world.now_us)
            return self._check(world, event.txn)
        if isinstance(event, Decided):
            self._seen(world, event.txn, event.participants)
            mine = self.decisions.setdefault(event.txn, {})
            before = mine.get(node_id)
            if before is not None and before[0] != event.commit:
                return Violation(
                    "atomicity",
                    f"node {node_id} changed its decision on txn {event.txn} "
                    f"({_word(before[0])} by {before[1]}, now {_word(event.commit)} by {event.by})",
                )
            if before is None:
                mine[node_id] = (event.commit, event.by, world.now_us)
                self._waited(world, event.txn, node_id)
            return self._check(world, event.txn)
        return Violation("unexpected", f"node {node_id} applied {event!r}")

    def _waited(self, world: World, txn: int, node: int) -> None:
        voted = self.voted_at_us.get((txn, node))
        if voted is not None and world.now_us - voted > self.longest_doubt[0]:
            self.longest_doubt = (world.now_us - voted, node, txn)

    def _seen(self, world: World, txn: int, participants: tuple[int, ...]) -> None:
        self.participants.setdefault(txn, participants)
        self.first_seen_us.setdefault(txn, world.now_us)

    # -- checks --------------------------------------------------------------------------

    def _check(self, world: World, txn: int) -> Violation | None:
        decided = self.decisions.get(txn, {})
        outcomes = {commit for commit, _, _ in decided.values()}
        if len(outcomes) > 1:
            return Violation("atomicity", self.counterexample(world, txn))
        if True in outcomes:
            votes = self.votes.get(txn, {})
            missing = [p for p in self.participants[txn] if not votes.get(p, False)]
            if missing:
                return Violation(
                    "validity",
                    f"txn {txn} committed without a yes vote from {missing}; "
                    + self.counterexample(world, txn),
                )
        return None

    def counterexample(self, world: World, txn: int) -> str:
        """Who decided what on ``txn`` (when, how) and the partitions during it."""
        parts = self.participants.get(txn, ())
        lines = [
            f"txn {txn} over participants {list(parts)} (coordinator {self.coordinator}), "
            f"first vote at {self.first_seen_us.get(txn, 0) / 1000:.1f} ms"
        ]
        votes = self.votes.get(txn, {})
        decided = self.decisions.get(txn, {})
        for node in sorted({*parts, *decided}):
            vote = votes.get(node)
            said = "" if vote is None else f"voted {'yes' if vote else 'no'}, "
            if node in decided:
                commit, how, at_us = decided[node]
                said += f"{_word(commit)} at {at_us / 1000:.1f} ms by {how}"
            else:
                said += "undecided"
            lines.append(f"node {node}: {said}")
        since = self.first_seen_us.get(txn, 0)
        cuts = [
            f"{text} (in force {start / 1000:.0f}-{_ms(end)} ms)"
            for start, end, text in self.partitions
            if end is None or end >= since
        ]
        lines.append("partitions: " + ("; ".join(cuts) if cuts else "none during the transaction"))
        return " | ".join(lines)

    def in_doubt(self) -> list[tuple[int, int]]:
        """(participant, txn) pairs that voted yes and have not decided, in txn order."""
        stuck: list[tuple[int, int]] = []
        for txn in sorted(self.votes):
            decided = self.decisions.get(txn, {})
            for node, yes in sorted(self.votes[txn].items()):
                if yes and node not in decided:
                    stuck.append((node, txn))
        return stuck

    def liveness(self, world: World) -> str | None:
        stuck = [(n, t) for n, t in self.in_doubt() if not world.stopped(n)]
        if self.blocking_allowed and world.stopped(self.coordinator):
            self.blocked = stuck  # 2PC blocks without its coordinator: expected, reported
            return None
        if not stuck:
            return None
        shown = ", ".join(f"node {n} on txn {t}" for n, t in stuck[:6])
        return f"{len(stuck)} participants in doubt (blocked): {shown}"


def _ms(end_us: int | None) -> str:
    return "now" if end_us is None else f"{end_us / 1000:.0f}"


def _word(commit: bool) -> str:
    return "committed" if commit else "aborted"


def _monitor_2pc(node_ids: tuple[int, ...]) -> CommitMonitor:
    return CommitMonitor(node_ids, blocking_allowed=True)


def _monitor_3pc(node_ids: tuple[int, ...]) -> CommitMonitor:
    return CommitMonitor(node_ids, blocking_allowed=False)


TWO_PC = ProtocolDef(
    name="2pc",
    summary="two-phase commit, presumed abort (atomic; blocks while the coordinator is down)",
    make_node=make_2pc_node,
    make_client=make_client,
    make_monitor=_monitor_2pc,
)

THREE_PC = ProtocolDef(
    name="3pc",
    summary="three-phase commit with Skeen's termination protocol (non-blocking; not "
    "atomic under partitions: the simulator finds one side committing, the other aborting)",
    make_node=make_3pc_node,
    make_client=make_client,
    make_monitor=_monitor_3pc,
)


def commit_mutant_spec(*, mutants: frozenset[str], name: str) -> ProtocolDef:
    """``2pc+coordinator_halts`` / ``3pc+coordinator_halts``: the coordinator stops for good
    at its worst moment.  2PC then fails liveness (blocked participants); 3PC terminates."""
    unknown = sorted(mutants - MUTANTS)
    base = name.partition("+")[0]
    if unknown or not mutants or base not in ("2pc", "3pc"):
        raise KeyError(
            f"unknown protocol {name!r}: 2pc+NAME or 3pc+NAME; unknown mutants {unknown}; "
            f"valid: {', '.join(sorted(MUTANTS))}"
        )
    two = base == "2pc"
    return ProtocolDef(
        name=name,
        summary=f"{base} whose coordinator halts for good before deciding",
        make_node=make_halting_2pc_node if two else make_halting_3pc_node,
        make_client=make_client,
        make_monitor=_monitor_2pc if two else _monitor_3pc,
        broken=True,
    )

"""Protocol-aware faults: a nemesis sees each Ready batch as it is carried out and strikes.

Random schedules rarely line a fault up with the moment a protocol is vulnerable (a crash
right after a vote is granted, a partition the instant a joint configuration is appended,
a pause just before a leader answers a read).  A :class:`Nemesis` looks at every batch a
node is about to carry out and may answer with one :class:`Strike`:

- ``crash``: carry the batch out (its messages leave), then crash the node; it restarts
  from its disk after ``duration_us``;
- ``halt``: crash the node between the batch's fsync and its sends (the persist is
  durable, nothing else of the batch happens); it restarts after ``duration_us``;
- ``pause``: pause the node *before* the batch is carried out (its persist is already
  durable; sends, applies and replies wait) and resume it after ``duration_us``; with
  ``isolate_us`` the node is also cut off from its peers (not from clients) that long;
- ``isolate``: cut the node off from every other node for ``duration_us``, then carry
  the batch out (its peer messages are lost);
- ``split``: cut ``group`` (which holds the node) off from the other nodes for
  ``duration_us``, then carry the batch out;
- ``drop``: carry the batch out without its peer messages (client replies still go);
- ``echo``: carry the batch out and deliver its peer messages once more, ``duration_us``
  later (a very late duplicate);
- ``inject``: carry the batch out, then deliver ``message`` from ``source`` (a client)
  ``duration_us`` later: the nemesis acting as a client at the vulnerable moment (e.g. a
  leadership transfer just as a joint configuration is appended), or steering a client
  (``node`` is then that client);
- ``cut``: cut the links between ``node`` and each node of ``group``, both ways, for
  ``duration_us``, then carry the batch out.

A strike may bring ``also`` strikes, carried out right after the batch (``crash``,
``isolate``, ``cut``, ``inject``; their ``node`` may be any node or client): one moment, several
faults, as when a rack power-cycles while a switch port fails.  A ``followup`` strike is
the next step of a sequence a stream rule started (e.g. cut, then restart voters when the
cut-off node campaigns, then steer a client): it is not subject to the rule's budget or
firing draw, so a sequence that began is carried to its end.

An ``inject`` may also be a stale copy of a peer's earlier message that the network held
back (``source`` is then that peer).

Which rules run, how often they may fire and how many strikes a run gets are drawn per
seed (:mod:`pnyx.sim.swarm`); the nemesis's own randomness is a separate RNG stream, so a
seed replays exactly.  Strikes happen only in the fault phase.

*Stream rules* (``ProtocolDef.stream_nemesis_rules``) were added after the seed tables
were measured and must not reshuffle them: each has an RNG stream of its own
(:func:`rule_stream`) for being drawn into a run, for its strikes' parameters and for
firing, and the simulator asks a :class:`StreamNemesis` for them only at a batch where no
other rule proposed a strike.  A run in which no stream rule fires is therefore the same,
byte for byte, as one without them.  Stream rules may also strike in the heal phase, but
only with kinds that start no fault (:data:`LATE_KINDS`): a late copy of a message, which
a correct protocol ignores and must still reach liveness after.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from pnyx.core import Ready
from pnyx.sim.spec import World

STRIKE_KINDS: tuple[str, ...] = (
    "crash",
    "halt",
    "pause",
    "isolate",
    "split",
    "drop",
    "echo",
    "inject",
    "cut",
)

ALSO_KINDS: tuple[str, ...] = ("crash", "isolate", "cut", "inject")
"""Kinds an ``also`` strike may have (each acts on its own ``node`` after the batch)."""

LATE_KINDS: tuple[str, ...] = ("echo", "inject")
"""Strike kinds that only deliver messages (no fault): stream rules may use them after the
heal too."""


def rule_stream(seed: int, rule: str) -> random.Random:
    """The RNG stream of stream rule ``rule`` in the run of ``seed``."""
    return random.Random(f"pnyx-nemesis:{seed}:rule:{rule}")


@dataclass(frozen=True)
class Strike:
    """What the nemesis does to ``node`` at this batch, and for how long."""

    kind: str
    node: int
    duration_us: int
    rule: str
    group: tuple[int, ...] = ()
    """``split``: the nodes cut off together (the others form the other side)."""
    isolate_us: int = 0
    """``pause``: also cut the node off from its peers for this long (0: not)."""
    message: Any = None
    """``inject``: the message to deliver to the node."""
    source: int = 0
    """``inject``: who the message comes from (a client id)."""
    also: tuple[Strike, ...] = ()
    """Further strikes carried out right after the batch (see the module doc)."""
    followup: bool = False
    """The next step of a sequence its rule started: no budget or firing draw."""

    def __post_init__(self) -> None:
        if self.kind not in STRIKE_KINDS:
            raise ValueError(f"unknown strike {self.kind!r}; valid: {', '.join(STRIKE_KINDS)}")
        if self.duration_us < 0 or self.isolate_us < 0:
            raise ValueError(f"strike durations must not be negative: {self!r}")
        if self.kind == "split" and self.node not in self.group:
            raise ValueError(f"split group {self.group} must hold node {self.node}")
        if self.kind == "cut" and (not self.group or self.node in self.group):
            raise ValueError(f"cut group {self.group} must be other nodes than {self.node}")
        for extra in self.also:
            if extra.kind not in ALSO_KINDS or extra.also:
                raise ValueError(f"an also-strike is one of {ALSO_KINDS}, not {extra!r}")
        if self.kind == "inject" and (self.message is None or self.source <= 0):
            raise ValueError("an inject strike needs a message and a source")

    def describe(self) -> str:
        """One line for humans."""
        span = f"{self.duration_us / 1000:.1f} ms"
        line = f"nemesis {self.rule}: {self.kind} node {self.node} for {span}"
        for extra in self.also:
            line += f"; {extra.kind} node {extra.node} for {extra.duration_us / 1000:.1f} ms"
        return line


class Nemesis(Protocol):
    """Looks at each batch a node is about to carry out and proposes a strike.

    The simulator decides whether a proposed strike happens (the run's firing probability
    and strike budget); a nemesis proposes only for the rules it was built with.
    """

    def on_batch(
        self, world: World, node_id: int, ready: Ready, rng: random.Random
    ) -> Strike | None:
        """A strike at this batch of ``node_id``, or None."""
        ...


class StreamNemesis(Protocol):
    """A nemesis with stream rules: asked only where no other rule proposed a strike."""

    def stream_strike(
        self, world: World, node_id: int, ready: Ready, rngs: Mapping[str, random.Random]
    ) -> Strike | None:
        """A strike of a stream rule at this batch (``rngs``: each active stream rule's
        stream; a rule draws only from its own), or None.  In the heal phase only kinds of
        :data:`LATE_KINDS` are carried out."""
        ...

    def stream_struck(self, hit: Strike) -> None:
        """``hit`` (proposed by :meth:`stream_strike`) is being carried out: a proposal the
        run's budget or firing draw turned down is never reported, so a sequence advances
        only on what happened."""
        ...


@dataclass(frozen=True)
class NemesisPlan:
    """Which rules run in a run, how likely each fires at a matching batch, and each rule's
    budget of strikes (spread over the fault phase)."""

    rules: frozenset[str]
    fire_p: float = 0.5
    max_strikes: int = 4

    def describe(self) -> str:
        """One line for humans."""
        if not self.rules:
            return "nemesis: off"
        names = ", ".join(sorted(self.rules))
        budget = f"at most {self.max_strikes} strikes per rule"
        return f"nemesis: {names} (fire p={self.fire_p:.2f}, {budget})"


NO_NEMESIS = NemesisPlan(frozenset(), 0.0, 0)

"""Swarm testing: each seed draws its own fault mix, intensity and protocol settings.

Running every seed with every fault at a fixed intensity tests one corner of the space
over and over: some bugs need few faults (a quiet network lets a rare interleaving
happen), some need a setting switched on (lease reads, no pre-vote) or off.  With
``SimConfig(swarm=True)`` a seed draws, from its own RNG stream:

- a subset of the allowed fault kinds and an intensity (network fault probabilities and
  the number of discrete events scale with it);
- the cluster size and the number of clients (unless given explicitly);
- protocol settings from the spec's ``draw_settings`` (e.g. Raft's pre-vote,
  check-quorum, lease reads, in-flight window, snapshot threshold, client mix, BUGGIFY);
- which protocol-aware nemesis rules run, how often they fire and their strike budget;
- how many missed ticks a resumed process gets at once (the runtime's catch-up bound).

Settings and nemesis rules added after the mutant table was measured are drawn from
streams of their own (``draw_stream_settings``, ``stream_nemesis_rules``), after the main
stream's draws, which stay as they were: a seed that draws none of them runs as before.

Same seed ⇒ same draw, so ``pnyx sim P --seed N --swarm`` replays a swarm run exactly.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import Any

from pnyx.sim.nemesis import NemesisPlan
from pnyx.sim.schedule import FAULT_KINDS
from pnyx.sim.spec import ProtocolDef

KEEP_KIND_P = 0.6
"""Chance that each allowed fault kind is part of a seed's mix."""
INTENSITIES: tuple[float, ...] = (0.25, 0.5, 1.0, 1.0, 1.5, 2.5)
"""Scale of fault probabilities and event counts (1.0 twice: the classic draw is common)."""
CATCH_UP_TICKS: tuple[int, ...] = (1, 2, 4, 16, 16)
"""Missed ticks a resumed process gets at once (the rest are reported as a clock stall)."""
FIRE_P: tuple[float, ...] = (0.2, 0.5, 1.0)
MAX_STRIKES = 6
RULE_P = 0.6
"""Chance that each nemesis rule of the protocol runs in a seed."""
STREAM_RULE_P = 0.6
"""Chance that each stream nemesis rule of the protocol runs in a seed (its own stream)."""


@dataclass(frozen=True)
class SwarmDraw:
    """Everything a swarm seed drew (printed with a failure)."""

    seed: int
    faults: frozenset[str]
    intensity: float
    nodes: int
    clients: int
    settings: tuple[tuple[str, Any], ...]
    nemesis: NemesisPlan
    catch_up_ticks: int

    def describe(self) -> list[str]:
        """Lines for humans."""
        kinds = ",".join(k for k in FAULT_KINDS if k in self.faults) or "none"
        settings = " ".join(f"{k}={v}" for k, v in self.settings) or "defaults"
        return [
            f"swarm seed {self.seed}: faults {kinds} at intensity {self.intensity}",
            f"{self.nodes} nodes, {self.clients} clients, catch-up {self.catch_up_ticks} ticks",
            f"settings: {settings}",
            self.nemesis.describe(),
        ]

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form (for ``--json`` output)."""
        return {
            "faults": sorted(self.faults),
            "intensity": self.intensity,
            "nodes": self.nodes,
            "clients": self.clients,
            "settings": dict(self.settings),
            "nemesis": sorted(self.nemesis.rules),
            "nemesis_fire_p": self.nemesis.fire_p,
            "nemesis_max_strikes": self.nemesis.max_strikes,
            "catch_up_ticks": self.catch_up_ticks,
        }


def draw_swarm(
    seed: int,
    spec: ProtocolDef,
    allowed: frozenset[str],
    nodes: int | None = None,
    clients: int | None = None,
) -> SwarmDraw:
    """The swarm draw of ``seed``: a pure function of its arguments."""
    base_name = spec.name.partition("+")[0]  # raft+MUTANT draws what raft draws
    rng = random.Random(f"pnyx-swarm:{seed}:{base_name}")
    ordered = [k for k in FAULT_KINDS if k in allowed]
    kept = [k for k in ordered if rng.random() < KEEP_KIND_P]
    if ordered and not kept:
        kept = [ordered[rng.randrange(0, len(ordered))]]
    intensity = INTENSITIES[rng.randrange(0, len(INTENSITIES))]
    sizes = spec.swarm_nodes or (spec.default_nodes,)
    drawn_nodes = sizes[rng.randrange(0, len(sizes))]
    drawn_clients = rng.randrange(1, spec.default_clients + 2)
    settings = spec.draw_settings(rng) if spec.draw_settings is not None else {}
    rules = frozenset(r for r in spec.nemesis_rules if rng.random() < RULE_P)
    plan = NemesisPlan(
        rules,
        fire_p=FIRE_P[rng.randrange(0, len(FIRE_P))],
        max_strikes=rng.randrange(1, MAX_STRIKES + 1),
    )
    catch_up = CATCH_UP_TICKS[rng.randrange(0, len(CATCH_UP_TICKS))]
    settings.update(_stream_settings(seed, spec, base_name))
    plan = replace(plan, rules=rules | _stream_rules(seed, spec, base_name))
    return SwarmDraw(
        seed=seed,
        faults=frozenset(kept),
        intensity=intensity,
        nodes=nodes if nodes is not None else drawn_nodes,
        clients=clients if clients is not None else drawn_clients,
        settings=tuple(sorted(settings.items())),
        nemesis=plan,
        catch_up_ticks=catch_up,
    )


def _stream_settings(seed: int, spec: ProtocolDef, base_name: str) -> dict[str, Any]:
    """Settings drawn from their own stream (they override the main stream's)."""
    if spec.draw_stream_settings is None:
        return {}
    return spec.draw_stream_settings(random.Random(f"pnyx-swarm:{seed}:{base_name}:settings"))


def _stream_rules(seed: int, spec: ProtocolDef, base_name: str) -> frozenset[str]:
    """The stream nemesis rules that run in the seed, each drawn from its own stream."""
    return frozenset(
        rule
        for rule in spec.stream_nemesis_rules
        if random.Random(f"pnyx-swarm:{seed}:{base_name}:rule:{rule}").random() < STREAM_RULE_P
    )

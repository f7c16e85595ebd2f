"""Fault kinds and fault schedules: what goes wrong in a simulated run, and when.

A schedule is drawn from the seed (its own RNG stream) and can also be written out,
edited by the shrinker and replayed exactly.  Network faults are probabilities active
during the fault phase; discrete faults are events with a start and an end.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

FAULT_KINDS: tuple[str, ...] = (
    "delay",
    "drop",
    "duplicate",
    "reorder",
    "partition",
    "crash",
    "torn",
    "pause",
    "skew",
    "corrupt",
    "misdirect",
    "lost-write",
    "lying-fsync",
    "slow",
)
"""Every fault the simulator can inject, by name (``--faults`` accepts these)."""

LYING_KINDS: frozenset[str] = frozenset({"lost-write", "lying-fsync"})
"""Disk faults no checksum can detect (a disk that lies): off unless named explicitly,
since no protocol that trusts fsync survives them."""
EXPLICIT_KINDS: frozenset[str] = LYING_KINDS | {"slow"}
"""Kinds that ``all`` leaves out: the lying disk ones, and slow members (added after the
seed tables were measured; a seed that does not name it replays as before)."""
DEFAULT_KINDS: frozenset[str] = frozenset(FAULT_KINDS) - EXPLICIT_KINDS
"""What ``--faults all`` means: every kind except :data:`EXPLICIT_KINDS`."""
DISK_KINDS: tuple[str, ...] = ("corrupt", "misdirect", "lost-write", "lying-fsync")
"""Disk faults drawn as events (from their own RNG stream: adding them leaves the other
draws of a seed unchanged)."""

FAULT_HELP: dict[str, str] = {
    "delay": "long-tail message latency spikes",
    "drop": "messages lost",
    "duplicate": "messages delivered twice",
    "reorder": "no per-link FIFO: wide latency jitter lets messages overtake",
    "partition": "network partitions (halves, isolate one, bridge, one-way) that heal",
    "crash": "process crash (loses all volatile state) and restart from disk",
    "torn": "a crash mid-fsync: the unsynced batch survives whole or is lost whole (the WAL's "
    "sync batches are atomic)",
    "pause": "process pause (GC/VM stall) and resume",
    "skew": "per-node clock drift: tick rates differ by up to MAX_DRIFT",
    "corrupt": "a synced sector is damaged, then the node crashes; recovery detects it and "
    "the node stays down (fail-stop)",
    "misdirect": "a synced write lands on another record; the next recovery detects it and "
    "the node stays down (fail-stop)",
    "lost-write": "lying disk (off in 'all'): a synced write silently never reaches the disk",
    "lying-fsync": "lying disk (off in 'all'): fsync succeeds, data stays in a volatile cache "
    "that a crash loses",
    "slow": "slow member (off in 'all'): a node processes every message it receives late "
    "(an overloaded process with a backlog)",
}

PARTITION_SHAPES: tuple[str, ...] = ("halves", "isolate", "bridge", "one-way", "isolate-leader")
SHORT_FAULT_P = 0.3
"""Share of discrete faults that are short (log-uniform from 1 ms), the rest span 5-33%
of the fault phase."""
LEADER_TARGET_P = 0.5
"""Share of crashes and pauses aimed at whichever node leads when the fault starts
(Jepsen-style targeting; protocols report their leader through an optional ``status()``)."""
DISCRETE_KINDS: tuple[str, ...] = ("partition", "crash", "pause")
DISK_FAULT_CRASH_US = (1_000, 200_000)
"""A disk fault event ends with a crash of its node this long (uniform) after it starts, so
that recovery reads the damaged disk."""
MAX_DRIFT = 0.05
"""Bound on per-node clock drift: a node's tick period is within ±5% of nominal."""
SLOW_LAG_US = (50_000, 2_000_000)
"""Range of the processing lag of a slow member drawn by :func:`generate` (log-uniform)."""


class FaultSpecError(ValueError):
    """A ``--faults`` list names something that is not a fault kind."""


def parse_faults(text: str) -> frozenset[str]:
    """Parse ``all``, ``none`` or a comma-separated list of fault kinds."""
    text = text.strip()
    if text == "all":
        return DEFAULT_KINDS
    if text in ("none", ""):
        return frozenset()
    names = [part.strip() for part in text.split(",") if part.strip()]
    kinds: set[str] = set()
    for name in names:
        if name == "all":
            kinds |= DEFAULT_KINDS
        elif name in FAULT_KINDS:
            kinds.add(name)
        else:
            raise FaultSpecError(
                f"unknown fault {name!r}; valid: {', '.join(FAULT_KINDS)}, all, none"
            )
    return frozenset(kinds)


def format_faults(faults: frozenset[str]) -> str:
    """The ``--faults`` spelling of a fault set (stable order)."""
    if not faults:
        return "none"
    if faults == DEFAULT_KINDS:
        return "all"
    if faults > DEFAULT_KINDS:
        return ",".join(["all", *(k for k in FAULT_KINDS if k in faults - DEFAULT_KINDS)])
    return ",".join(k for k in FAULT_KINDS if k in faults)


@dataclass(frozen=True)
class NetworkFaults:
    """Per-message fault probabilities and latencies during the fault phase."""

    drop_p: float = 0.0
    duplicate_p: float = 0.0
    delay_p: float = 0.0
    delay_max_us: int = 0
    reorder: bool = False


@dataclass(frozen=True)
class FaultEvent:
    """A discrete fault over ``[start_us, end_us)``: a partition, a crash or a pause.

    For partitions ``links`` lists the blocked directed (from, to) pairs and ``shape``
    says how they were chosen; crashes and pauses name their ``node``.  ``target="leader"``
    (and the ``isolate-leader`` shape) means: the node that leads when the fault starts,
    with ``node`` as the fallback when no leader is known.
    """

    kind: str
    start_us: int
    end_us: int
    node: int = 0
    shape: str = ""
    links: tuple[tuple[int, int], ...] = ()
    target: str = ""
    lag_us: int = 0
    """``slow``: how late the node processes each message it receives."""

    def describe(self) -> str:
        """One line for humans."""
        span = f"{self.start_us / 1000:.0f}-{self.end_us / 1000:.0f} ms"
        if self.kind == "slow":
            return f"slow node {self.node} (+{self.lag_us / 1000:.0f} ms per message) at {span}"
        if self.shape.startswith("nemesis:"):
            return f"{self.shape} {self.kind} node {self.node} at {span}"
        if self.shape == "isolate-leader":
            return f"partition isolate-leader at {span} (fallback node {self.node})"
        if self.kind == "partition":
            cut = " ".join(f"{a}->{b}" for a, b in self.links)
            return f"partition {self.shape} at {span}: blocks {cut}"
        who = f"leader (fallback {self.node})" if self.target == "leader" else str(self.node)
        return f"{self.kind} node {who} at {span}"


@dataclass(frozen=True)
class Schedule:
    """A complete, replayable description of what goes wrong in one run."""

    nodes: int
    clients: int
    fault_ms: int
    faults: frozenset[str]
    network: NetworkFaults = field(default_factory=NetworkFaults)
    drift: tuple[float, ...] = ()
    events: tuple[FaultEvent, ...] = ()

    def fault_count(self) -> int:
        """Number of distinct faults: discrete events plus each active network fault."""
        net = self.network
        active = [net.drop_p > 0, net.duplicate_p > 0, net.delay_p > 0, net.reorder]
        return len(self.events) + sum(active) + (1 if any(self.drift) else 0)

    def kinds_used(self) -> frozenset[str]:
        """Fault kinds that actually occur in this schedule."""
        net = self.network
        used = {e.kind for e in self.events}
        flags = {
            "drop": net.drop_p > 0,
            "duplicate": net.duplicate_p > 0,
            "delay": net.delay_p > 0,
            "reorder": net.reorder,
            "skew": any(self.drift),
            "torn": "torn" in self.faults and bool(used & {"crash", *DISK_KINDS}),
        }
        used.update(k for k, on in flags.items() if on)
        return frozenset(used)

    def describe(self) -> list[str]:
        """Lines for humans: the network faults, drift and every event."""
        net = self.network
        lines = [f"{self.nodes} nodes, {self.clients} clients, fault phase {self.fault_ms} ms"]
        if net.drop_p:
            lines.append(f"drop p={net.drop_p:.3f}")
        if net.duplicate_p:
            lines.append(f"duplicate p={net.duplicate_p:.3f}")
        if net.delay_p:
            lines.append(f"delay p={net.delay_p:.3f} up to {net.delay_max_us / 1000:.0f} ms")
        if net.reorder:
            lines.append("reorder: per-link FIFO off")
        if any(self.drift):
            drift = ", ".join(f"n{i + 1}:{d:+.3f}" for i, d in enumerate(self.drift))
            lines.append(f"clock drift {drift}")
        if "torn" in self.faults:
            lines.append("torn: crashes keep a random prefix of unsynced writes")
        lines.extend(e.describe() for e in self.events)
        return lines

    def to_json(self) -> str:
        """Serialise (inverse of :meth:`from_json`)."""
        data = asdict(self)
        data["faults"] = sorted(self.faults)
        return json.dumps(data, indent=1, sort_keys=True)

    @staticmethod
    def from_json(text: str) -> Schedule:
        """Parse a schedule written by :meth:`to_json`; raises ValueError when malformed."""
        try:
            data: dict[str, Any] = json.loads(text)
            events = tuple(
                FaultEvent(
                    kind=e["kind"],
                    start_us=int(e["start_us"]),
                    end_us=int(e["end_us"]),
                    node=int(e.get("node", 0)),
                    shape=str(e.get("shape", "")),
                    links=tuple((int(a), int(b)) for a, b in e.get("links", ())),
                    target=str(e.get("target", "")),
                    lag_us=int(e.get("lag_us", 0)),
                )
                for e in data["events"]
            )
            return Schedule(
                nodes=int(data["nodes"]),
                clients=int(data["clients"]),
                fault_ms=int(data["fault_ms"]),
                faults=frozenset(data["faults"]),
                network=NetworkFaults(**data["network"]),
                drift=tuple(float(d) for d in data["drift"]),
                events=events,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed schedule: {exc!r}") from exc

    def save(self, path: Path) -> None:
        """Write to ``path`` as JSON."""
        path.write_text(self.to_json() + "\n", encoding="utf-8")

    @staticmethod
    def load(path: Path) -> Schedule:
        """Read a schedule file; raises ValueError naming the file when it is malformed."""
        try:
            return Schedule.from_json(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ValueError(f"cannot read schedule {path}: {exc.strerror}") from exc
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from exc

    def without_event(self, index: int) -> Schedule:
        """This schedule minus one discrete event."""
        events = self.events[:index] + self.events[index + 1 :]
        return replace(self, events=events)


def generate(
    seed: int,
    nodes: int,
    clients: int,
    fault_ms: int,
    faults: frozenset[str],
    intensity: float = 1.0,
) -> Schedule:
    """Draw a schedule from ``seed`` (its own RNG stream, independent of the run's).

    ``intensity`` scales the network fault probabilities and the number of discrete events
    (swarm testing); at 1.0 the draws are the classic ones.
    """
    rng = random.Random(f"pnyx-schedule:{seed}")
    node_ids = list(range(1, nodes + 1))
    net = NetworkFaults(
        drop_p=_scaled(rng.uniform(0.02, 0.2), intensity) if "drop" in faults else 0.0,
        duplicate_p=_scaled(rng.uniform(0.01, 0.08), intensity) if "duplicate" in faults else 0.0,
        delay_p=_scaled(rng.uniform(0.01, 0.08), intensity) if "delay" in faults else 0.0,
        delay_max_us=rng.randrange(20_000, 300_000) if "delay" in faults else 0,
        reorder="reorder" in faults,
    )
    drift = tuple(rng.uniform(-MAX_DRIFT, MAX_DRIFT) for _ in node_ids) if "skew" in faults else ()
    events: list[FaultEvent] = []
    fault_us = fault_ms * 1000
    for kind in DISCRETE_KINDS:
        if kind not in faults:
            continue
        count = rng.randrange(1, max(2, fault_ms // 600) + 1)
        for _ in range(max(1, round(count * intensity))):
            events.append(_draw_event(rng, kind, node_ids, fault_us))
    events += _draw_disk_events(seed, faults, node_ids, fault_us)
    events += _draw_slow_events(seed, faults, node_ids, fault_us)
    events.sort(key=lambda e: (e.start_us, e.kind, e.node))
    return Schedule(nodes, clients, fault_ms, faults, net, drift, tuple(events))


def _scaled(p: float, intensity: float) -> float:
    return min(0.5, p * intensity)


def _draw_disk_events(
    seed: int, faults: frozenset[str], node_ids: list[int], fault_us: int
) -> list[FaultEvent]:
    """At most one disk fault per kind and run, each ending in a crash of its node.

    Detected damage stops a node for good, so ``corrupt`` and ``misdirect`` together hit a
    single node: a run never loses more than one node to a damaged disk.
    """
    rng = random.Random(f"pnyx-disk-schedule:{seed}")
    damaged = node_ids[rng.randrange(0, len(node_ids))]
    events: list[FaultEvent] = []
    for kind in DISK_KINDS:
        if kind not in faults or rng.random() < 0.5:
            continue
        node = damaged if kind in ("corrupt", "misdirect") else rng.choice(node_ids)
        start_us = rng.randrange(fault_us // 10, max(fault_us // 10 + 1, fault_us * 8 // 10))
        lo, hi = DISK_FAULT_CRASH_US
        end_us = min(start_us + rng.randrange(lo, hi), fault_us)
        events.append(FaultEvent(kind, start_us, end_us, node=node))
    return events


def _draw_slow_events(
    seed: int, faults: frozenset[str], node_ids: list[int], fault_us: int
) -> list[FaultEvent]:
    """Slow members, from an RNG stream of their own (a seed without ``slow`` is unchanged):
    one to three spans in which a node receives every message late by a drawn lag."""
    if "slow" not in faults:
        return []
    rng = random.Random(f"pnyx-slow-schedule:{seed}")
    events: list[FaultEvent] = []
    lo, hi = SLOW_LAG_US
    for _ in range(rng.randrange(1, 4)):
        start_us = rng.randrange(0, max(1, fault_us * 9 // 10))
        end_us = min(fault_us, start_us + rng.randrange(fault_us // 20 + 1, fault_us // 3 + 2))
        lag_us = int(lo * (hi / lo) ** rng.random())
        node = node_ids[rng.randrange(0, len(node_ids))]
        events.append(FaultEvent("slow", start_us, end_us, node=node, lag_us=lag_us))
    return events


def _draw_event(rng: random.Random, kind: str, node_ids: list[int], fault_us: int) -> FaultEvent:
    start_us = rng.randrange(0, max(1, fault_us * 9 // 10))
    long_min_us = fault_us // 20 + 1
    if rng.random() < SHORT_FAULT_P:
        # Short: log-uniform from 1 ms (a crash and restart inside one election).
        length_us = int(1_000 * (max(1_001, long_min_us) / 1_000) ** rng.random())
    else:
        length_us = rng.randrange(long_min_us, fault_us // 3 + 2)
    end_us = min(start_us + length_us, fault_us)
    node = node_ids[rng.randrange(0, len(node_ids))]
    if kind == "partition":
        shape = PARTITION_SHAPES[rng.randrange(0, len(PARTITION_SHAPES))]
        if shape == "isolate-leader":
            return FaultEvent(kind, start_us, end_us, node=node, shape=shape, target="leader")
        return FaultEvent(kind, start_us, end_us, shape=shape, links=_cut(rng, shape, node_ids))
    target = "leader" if rng.random() < LEADER_TARGET_P else ""
    return FaultEvent(kind, start_us, end_us, node=node, target=target)


def isolate(node: int, node_ids: tuple[int, ...]) -> tuple[tuple[int, int], ...]:
    """Links that cut ``node`` from every other node, both ways."""
    return split((node,), node_ids)


def split(group: tuple[int, ...], node_ids: tuple[int, ...]) -> tuple[tuple[int, int], ...]:
    """Links that cut the nodes of ``group`` from every node outside it, both ways."""
    inside = set(group)
    others = [n for n in node_ids if n not in inside]
    links = {(a, b) for a in inside for b in others} | {(b, a) for a in inside for b in others}
    return tuple(sorted(links))


def _cut(rng: random.Random, shape: str, node_ids: list[int]) -> tuple[tuple[int, int], ...]:
    """Directed links blocked by a partition of the given shape."""
    order = node_ids[:]
    rng.shuffle(order)
    if len(order) < 2:
        return ()
    if shape == "isolate":
        return isolate(order[0], tuple(order))
    split = rng.randrange(1, len(order))
    side_a, side_b = order[:split], order[split:]
    if shape == "bridge" and len(order) >= 3:
        # One node keeps talking to both sides; the sides cannot talk directly.
        bridge = order[-1]
        side_a = [n for n in side_a if n != bridge]
        side_b = [n for n in side_b if n != bridge]
    links = {(a, b) for a in side_a for b in side_b}
    if shape != "one-way":
        links |= {(b, a) for a in side_a for b in side_b}
    return tuple(sorted(links))

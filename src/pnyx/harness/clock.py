"""Clock nemeses: skew the rate of nodes' clocks and make them jump (``--nemesis skew``).

pnyx only: a :class:`~pnyx.harness.systems.PnyxSystem` started with ``fault_clock=True``
runs each node with ``pnyx serve --fault-clock <dir>/<host>.clock``; the runtime takes its
ticks, the etcd lease clock and token expiry from that file's clock
(:mod:`pnyx.runtime.faultclock`).  Building the nemesis before the system starts (as
``pnyx test`` does) turns that on.

Each ``start()`` picks, with the nemesis's seeded generator, one of

- ``rate``: one to ``n - 1`` random nodes run at a rate from :data:`RATES` (0.25x to 4x);
- ``jump``: one node (the leader or a random node, even odds) jumps forward 2-8 s;
- ``back``: one node (likewise) steps back 2-8 s: its clock holds that long;

and says what it did, e.g. ``"clock: n2 rate x2, n3 rate x0.5"`` or ``"clock: n1 +5300 ms
(leader)"``.  ``stop()`` resets every node's clock: no step from its reading now, real
speed (a hold ends).

For real etcd the nemesis is unavailable (:class:`NemesisUnavailable` when built):
libfaketime cannot move a Go binary's clock, and the namespaces share the kernel's clock.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from pnyx.harness.api import Host, NemesisUnavailable, Net, System
from pnyx.runtime.faultclock import RESET, ClockSetting, write_setting

__all__ = ["KINDS", "RATES", "ClockNemesis", "FaultClockSystem"]

KINDS = ("rate", "jump", "back")
"""What a start may do (see the module docstring)."""
RATES = (0.25, 0.5, 2.0, 4.0)
"""Clock rates a ``rate`` start picks from."""
JUMP_MS = (2_000, 8_000)
"""Bounds of a jump, either way (a multiple of 100 ms)."""

ETCD_REASON = (
    "libfaketime cannot move a Go binary's clock (Go reads the vDSO, not libc), and the "
    "namespaces share the kernel's real-time clock"
)


@runtime_checkable
class FaultClockSystem(System, Protocol):
    """A system whose nodes can take their time from a clock file (``PnyxSystem``)."""

    fault_clock: bool
    hosts: tuple[Host, ...]

    def clock_file(self, host: Host) -> Path: ...


def _unavailable(system: System) -> NemesisUnavailable:
    if system.name == "etcd":
        reason = ETCD_REASON
    else:
        reason = "its adapter gives the nodes no fault clock (PnyxSystem does)"
    return NemesisUnavailable(f"clock skew is not available for {system.name}: {reason}")


class ClockNemesis:
    """Clock skew and jumps on pnyx nodes (see the module docstring).

    ``kinds``: the subset of :data:`KINDS` a start picks from; ``target``: ``"any"`` (a
    jump hits the leader or a random node, even odds), ``"leader"`` or ``"random"``.
    """

    def __init__(
        self,
        net: Net,
        system: System,
        rng: random.Random,
        *,
        name: str = "skew",
        kinds: Sequence[str] = KINDS,
        target: str = "any",
    ) -> None:
        if not isinstance(system, FaultClockSystem):
            raise _unavailable(system)
        if not kinds or set(kinds) - set(KINDS):
            raise ValueError(f"clock kinds {list(kinds)!r}: some of {', '.join(KINDS)}")
        if target not in ("any", "leader", "random"):
            raise ValueError(f"target {target!r}: any, leader or random")
        if not system.fault_clock:
            if system.hosts:
                raise NemesisUnavailable(
                    f"the {system.name} nodes run without a fault clock: build the clock "
                    "nemesis before the system starts (or start it with fault_clock=True)"
                )
            system.fault_clock = True  # the nodes get --fault-clock when they start
        self.name = name
        self.net = net
        self.system: FaultClockSystem = system
        self.rng = rng
        self.kinds = tuple(kinds)
        self.target = target

    def set_clock(self, host: Host, setting: ClockSetting) -> None:
        """Write ``setting`` to the clock file of ``host``'s node (read within ~50 ms)."""
        write_setting(self.system.clock_file(host), setting)

    def start(self) -> str:
        kind = self.rng.choice(self.kinds)
        if kind == "rate":
            return "clock: " + self._rates()
        host, why = self._one()
        low, high = JUMP_MS
        jump_ms = self.rng.randrange(low, high + 1, 100) * (1 if kind == "jump" else -1)
        self.set_clock(host, ClockSetting(jump_ms=jump_ms))
        held = " (held)" if jump_ms < 0 else ""
        return f"clock: {host.name} {jump_ms:+d} ms{held}{why}"

    def _rates(self) -> str:
        hosts = list(self.net.hosts)
        self.rng.shuffle(hosts)
        count = self.rng.randint(1, max(1, len(hosts) - 1))
        chosen = sorted(hosts[:count], key=lambda h: h.name)
        parts = []
        for host in chosen:
            rate = self.rng.choice(RATES)
            self.set_clock(host, ClockSetting(rate=rate))
            parts.append(f"{host.name} rate x{rate:g}")
        return ", ".join(parts)

    def _one(self) -> tuple[Host, str]:
        """The node a jump hits, and why it was chosen."""
        leader_wanted = self.target == "leader" or (
            self.target == "any" and self.rng.random() < 0.5
        )
        if leader_wanted:
            leader = self.system.leader()
            if leader is not None:
                return leader, " (leader)"
            return self.rng.choice(self.net.hosts), " (no leader known: random)"
        return self.rng.choice(self.net.hosts), ""

    def stop(self) -> str:
        for host in self.net.hosts:
            self.set_clock(host, RESET)
        return "clocks reset: " + " ".join(h.name for h in self.net.hosts)

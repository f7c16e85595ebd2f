"""Crash nemeses: SIGKILL several nodes at the same moment (Jepsen's ``kill`` with ``:all``
or ``:majority`` targets), the closest a test gets to a power failure of the cluster.

- ``kill-all``: every running node is killed at once; ``stop`` restarts them all (same
  data directories).
- ``kill-majority``: a random majority of the nodes is killed at once; ``stop`` restarts
  them.

A single ``kill`` never loses acknowledged data of a correct system *or* of one that
acknowledges before fsync: the survivors keep it.  Killing every node at once does, when
the nodes run with ``--test-lose-unsynced`` (pnyx: WAL writes stay in memory until
fsynced, so a SIGKILL loses what a power failure would) — see docs/HARNESS.md, "Broken
builds".  The signals go out from one thread per node, so they land within about a
millisecond of each other.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from pnyx.harness.api import Host, Net, System

__all__ = ["CRASH_NEMESES", "CrashNemesis"]


def _running(system: System, host: Host) -> bool:
    """Whether the node on ``host`` runs (True when the system cannot tell)."""
    running = getattr(system, "running", None)
    return bool(running(host)) if callable(running) else True


class CrashNemesis:
    """SIGKILL ``target`` nodes at once (``all`` or a random ``majority``); ``stop``
    restarts every node it killed."""

    def __init__(self, net: Net, system: System, target: str, rng: random.Random) -> None:
        if target not in ("all", "majority"):
            raise ValueError(f"target {target!r}: all or majority")
        self.name = f"kill-{target}"
        self.net = net
        self.system = system
        self.target = target
        self.rng = rng
        self.victims: list[Host] = []

    def _choose(self) -> list[Host]:
        hosts = list(self.net.hosts)
        if self.target == "majority":
            hosts = sorted(self.rng.sample(hosts, len(hosts) // 2 + 1), key=hosts.index)
        return [h for h in hosts if _running(self.system, h)]

    def _each(self, hosts: list[Host], call: Callable[[Host], None]) -> None:
        """``call(host)`` for every host, all at the same time (one thread each)."""
        if not hosts:
            return
        with ThreadPoolExecutor(max_workers=len(hosts)) as pool:
            for future in [pool.submit(call, h) for h in hosts]:
                future.result()

    def start(self) -> str:
        victims = self._choose()
        self._each(victims, self.system.kill)
        crash_storage = getattr(self.system, "crash_storage", None)
        if callable(crash_storage):  # lose what was not fsynced, as a power failure would
            self._each(victims, crash_storage)
        self.victims = victims
        if not victims:
            return "no node running: nothing killed"
        return f"killed {' '.join(h.name for h in victims)} at once"

    def stop(self) -> str:
        victims, self.victims = self.victims, []
        for host in victims:
            self.system.start_node(host)
        if not victims:
            return "nothing to restart"
        return f"restarted {' '.join(h.name for h in victims)}"


CRASH_NEMESES: dict[str, Callable[[Net, System, random.Random], CrashNemesis]] = {
    "kill-all": lambda n, s, r: CrashNemesis(n, s, "all", r),
    "kill-majority": lambda n, s, r: CrashNemesis(n, s, "majority", r),
}
"""``--nemesis`` name -> factory (net, system, rng); merged into
:data:`pnyx.harness.nemeses.NEMESES`."""

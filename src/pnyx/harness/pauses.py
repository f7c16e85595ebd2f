"""``pause-holder``: SIGSTOP the member a lock holder's client is connected to.

Jepsen's etcd 3.4.3 analysis found etcd's locks unsafe under process pauses: a lock is a
key under the holder's session lease (a TTL of 2 s in Jepsen's test and in the ``lock``
workload), kept alive through the member the holder's client talks to.  Pause that member
for longer than the TTL and the lease expires, the lock key goes with it and the next
waiter gets the lock, while the first holder, which nobody told, is still inside its
critical section.  A random ``pause`` rarely shows it: the paused member has to be the
holder's (the clients' failover gathers them on one member, often the leader) at a moment
when the holder still has long to hold (docs/HARNESS.md, *The lock under pauses alone*).

This nemesis aims: ``start`` waits (at most :data:`HOLDER_WAIT_S`) for the next client to
enter the critical section of the ``lock`` / ``lock-fenced`` workload
(:data:`pnyx.harness.workloads.LOCK_HOLDERS`) and at once pauses the member that client is
connected to, the worst moment for a lease-based lock, which a long random run meets by
chance.  The lease then expires about the TTL later when that member is a follower, and
about 4 to 5 s later when it leads (the others elect a leader, which extends every lease by
an election timeout).  With nobody entering (another workload, or none within the wait)
it pauses the member of whoever holds the lock then, else a random member.  ``stop``
resumes it (SIGCONT).  The pause should outlast the holder's keep-alive, which gives up
about 2.7 s in (one every TTL/3, then the client's 2 s call time-out) rather than resume:
a ``--nemesis-duration`` of 4 s or more.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from pnyx.harness.api import Host, Net, System
from pnyx.harness.workloads import LOCK_HOLDERS, LockHolders

__all__ = ["HOLDER_WAIT_S", "PAUSE_NEMESES", "HolderPauseNemesis"]

HOLDER_WAIT_S = 8.0
"""How long ``start`` waits for a client to enter the critical section (longer than the
lock workload's longest hold, 5 s)."""


def _endpoint(text: str) -> str:
    return text.strip().removeprefix("http://")


class HolderPauseNemesis:
    """SIGSTOP the member of the next client to take the lock (see the module docstring);
    ``stop`` sends SIGCONT."""

    name = "pause-holder"

    def __init__(self, net: Net, system: System, rng: random.Random,
                 holders: LockHolders = LOCK_HOLDERS,
                 wait_s: float = HOLDER_WAIT_S) -> None:  # fmt: skip
        self.net = net
        self.system = system
        self.rng = rng
        self.holders = holders
        self.wait_s = wait_s
        self.victims: list[Host] = []

    def _hosts_by_endpoint(self) -> dict[str, Host]:
        """Client endpoint -> host (``System.endpoints`` is in host order)."""
        return {_endpoint(e): h for e, h in zip(self.system.endpoints(), self.net.hosts,
                                                 strict=False)}  # fmt: skip

    def _choose(self) -> tuple[Host, str]:
        hosts = self._hosts_by_endpoint()
        leader = self.system.leader() if self.holders.active else None
        holder = self.holders.next_entry(self.wait_s)
        host = None if holder is None else hosts.get(_endpoint(holder.endpoint))
        if holder is None or host is None:
            return self.rng.choice(self.net.hosts), "no lock holder: a random member"
        role = "" if leader is None else (", the leader" if host == leader else ", a follower")
        return host, f"member of lock holder p{holder.process}{role}"

    def start(self) -> str:
        host, why = self._choose()
        self.system.pause(host)
        self.victims.append(host)
        return f"paused {host.name} ({why})"

    def stop(self) -> str:
        victims, self.victims = self.victims, []
        for host in victims:
            self.system.resume(host)
        if not victims:
            return "nothing to resume"
        return f"resumed {' '.join(h.name for h in victims)}"


PAUSE_NEMESES: dict[str, Callable[[Net, System, random.Random], HolderPauseNemesis]] = {
    "pause-holder": lambda n, s, r: HolderPauseNemesis(n, s, r),
}
"""``--nemesis`` name -> factory (net, system, rng); merged into
:data:`pnyx.harness.nemeses.NEMESES`."""

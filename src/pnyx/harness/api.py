"""The harness's contracts: a system under test, the hosts it runs on, a nemesis.

``pnyx test`` (see docs/HARNESS.md) runs a cluster of real processes of some system on
separate network hosts, drives a workload through the system's client API, injects
faults, records a history and checks it.  The pieces meet here:

- :class:`Host`: one network host: a Linux network namespace with its own address (or,
  without root, a loopback address and port range on this machine).  Commands run "on"
  a host by running inside its namespace.
- :class:`Net`: creates and removes hosts, and cuts/heals links between them (nftables
  rules inside the namespaces); :meth:`Net.close` removes everything it created.
- :class:`System`: an adapter for one system under test (pnyx, etcd, ... a user's own):
  install/start/stop/kill/pause/resume a node on a host, its client endpoints and logs.
- :class:`Nemesis`: a fault kind the scheduler starts and stops; each start/stop is
  recorded in the history as a ``nemesis`` event.

Implementations: ``net.py`` (namespaces, bridge, nftables), ``systems.py`` (pnyx, etcd),
``nemeses.py``; the workloads, runner, report and CLI build on these.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class Host:
    """One network host of a test run."""

    name: str
    """e.g. ``n1``; also the node's name in reports."""
    address: str
    """The host's IP address (inside its namespace, or 127.0.0.1 in loopback mode)."""
    netns: str | None
    """The network namespace commands run in, or None in loopback mode."""
    port_base: int
    """First of the ports this host's processes may listen on (namespaces: any base)."""

    def command(self, argv: list[str]) -> list[str]:
        """``argv`` as run on this host (``ip netns exec NS ...`` with a namespace)."""
        if self.netns is None:
            return list(argv)
        return ["ip", "netns", "exec", self.netns, *argv]


class NemesisUnavailable(RuntimeError):
    """A fault this machine or mode cannot inject (e.g. a partition without network
    namespaces, link delay without ``sch_netem``, clock skew for a Go binary); the message
    says why and what would make it available.  Raised when a nemesis is built or a cut
    is asked of a net that cannot drop packets."""


class Net(Protocol):
    """The network of a run: hosts and the links between them."""

    @property
    def hosts(self) -> tuple[Host, ...]:
        """Every host, in order (``n1``, ``n2``, ...)."""
        ...

    @property
    def isolated(self) -> bool:
        """True with real namespaces (partitions drop packets); False in loopback mode."""
        ...

    def cut(self, links: list[tuple[Host, Host]]) -> None:
        """Drop every packet from the first host of each pair to the second (one-way);
        raises :class:`NemesisUnavailable` when the net is not isolated (loopback mode)."""
        ...

    def heal(self) -> None:
        """Remove every cut."""
        ...

    def close(self) -> None:
        """Remove everything created (namespaces, links, rules); idempotent, bounded."""
        ...


class System(Protocol):
    """A system under test, on the hosts of a run (one node per host)."""

    name: str

    def start(self, hosts: tuple[Host, ...], directory: Path) -> None:
        """Create data directories under ``directory`` and start a node on every host;
        return once the cluster serves (bounded wait) or raise with the logs' tail."""
        ...

    def start_node(self, host: Host) -> None:
        """(Re)start the node on ``host`` after a kill, with its data directory."""
        ...

    def kill(self, host: Host) -> None:
        """SIGKILL the node's process on ``host`` (only processes this adapter started)."""
        ...

    def pause(self, host: Host) -> None:
        """SIGSTOP the node's process on ``host``."""
        ...

    def resume(self, host: Host) -> None:
        """SIGCONT the node's process on ``host``."""
        ...

    def endpoints(self) -> list[str]:
        """Client endpoints (``host:port``) of every node, in host order."""
        ...

    def leader(self) -> Host | None:
        """The host whose node leads now, if the system can tell (bounded query)."""
        ...

    def logs(self) -> dict[str, Path]:
        """Host name -> the node's log file."""
        ...

    def stop(self) -> None:
        """Stop every process this adapter started (TERM, then KILL after a bound)."""
        ...


class Nemesis(Protocol):
    """One fault kind, started and stopped by the scheduler."""

    name: str

    def start(self) -> str:
        """Start the fault; return a short description for the history and the report."""
        ...

    def stop(self) -> str:
        """End the fault (heal, restart, resume); return a short description."""
        ...

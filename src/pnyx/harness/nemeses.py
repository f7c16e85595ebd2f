"""Nemeses: the faults ``pnyx test`` injects, each started and stopped by the scheduler.

Every nemesis's ``start()`` / ``stop()`` returns a short description (recorded in the
history as a ``nemesis`` event).  Random choices come from the ``random.Random`` given
(:func:`make_nemesis` seeds one), so a run's fault choices repeat with its seed as far as
the system lets them (which node leads is up to the system).

=====================  ===============================================================
name                   fault
=====================  ===============================================================
partition-halves       two random halves (the larger one a majority) cannot talk
partition-leader       the current leader cut off from every other node
partition-random       a random node cut off from every other node
partition-bridge       two halves that cannot talk, and one node both halves hear
partition-ring         majorities ring: each node hears a majority (itself and its
                       ring neighbours), no two nodes the same majority (a real cut
                       needs 4 or more nodes)
partition-one-way      a random node hears no one, everyone hears it (TCP breaks both
                       ways: the replies are dropped; datagrams show the direction)
partition              one of the six above, chosen at random each start
kill / kill-leader     SIGKILL a random node / the leader; stop restarts it
kill-all /             SIGKILL every node / a random majority at once; stop restarts
kill-majority          them (:mod:`pnyx.harness.crash`)
pause / pause-leader   SIGSTOP a random node / the leader; stop sends SIGCONT
loss                   20 % of the packets between nodes dropped at random (nftables
                       ``numgen``: no netem needed); stop removes the loss
delay                  50 ms ± 20 ms delay on links between nodes: netem where the
                       kernel has ``sch_netem`` (probed), else a userspace TCP proxy per
                       host (:class:`ProxyDelayNemesis`), as on the machine this was
                       written on
skew                   pnyx: node clocks at another rate, or jumping forward or back
                       (:mod:`pnyx.harness.clock`); stop resets them.  Unavailable for
                       etcd (a Go binary: libfaketime cannot move its clock)
=====================  ===============================================================

A partition is a *grudge*: host name -> the hosts whose packets it drops; the cut links
are ``(sender, receiver)`` pairs given to :meth:`Net.cut`.  Partitions need an isolated
net (:class:`~pnyx.harness.net.NamespaceNet`); in loopback mode they raise
:class:`NemesisUnavailable` when built, as do the link and clock nemeses.
"""

from __future__ import annotations

import os
import random
import selectors
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

from pnyx.harness.api import Host, Nemesis, NemesisUnavailable, Net, System
from pnyx.harness.clock import ClockNemesis
from pnyx.harness.crash import CRASH_NEMESES
from pnyx.harness.membership import MemberNemesis
from pnyx.harness.pauses import PAUSE_NEMESES

__all__ = [
    "NEMESES",
    "PARTITIONS",
    "ClockNemesis",
    "Grudge",
    "KillNemesis",
    "LinkNemesis",
    "LossNemesis",
    "LossyNet",
    "PartitionNemesis",
    "PauseNemesis",
    "ProxyDelayNemesis",
    "ProxyNet",
    "grudge_bridge",
    "grudge_halves",
    "grudge_isolate",
    "grudge_links",
    "grudge_one_way",
    "grudge_ring",
    "make_nemesis",
    "netem_support",
]

Grudge = dict[str, frozenset[str]]
"""Host name -> names of the hosts it may not hear from."""

TC_TIMEOUT_S = 10.0


def _names(hosts: Sequence[Host]) -> list[str]:
    return [h.name for h in hosts]


def _apart(side_a: Sequence[str], side_b: Sequence[str]) -> Grudge:
    """Neither side hears the other."""
    grudge: dict[str, frozenset[str]] = {}
    for a in side_a:
        grudge[a] = frozenset(side_b)
    for b in side_b:
        grudge[b] = frozenset(side_a)
    return grudge


def grudge_halves(hosts: Sequence[Host], rng: random.Random) -> Grudge:
    """Two random halves; the first (``n // 2 + 1`` nodes) is a majority."""
    names = _names(hosts)
    rng.shuffle(names)
    cut = len(names) // 2 + 1
    return _apart(names[:cut], names[cut:])


def grudge_isolate(hosts: Sequence[Host], target: Host) -> Grudge:
    """``target`` and every other node cannot talk."""
    return _apart([target.name], [n for n in _names(hosts) if n != target.name])


def grudge_bridge(hosts: Sequence[Host], rng: random.Random) -> Grudge:
    """Two halves that cannot talk, and one node (the bridge) that talks to both."""
    names = _names(hosts)
    rng.shuffle(names)
    if len(names) < 3:
        return {}
    bridge, rest = names[0], names[1:]
    half = len(rest) // 2
    grudge = _apart(rest[:half], rest[half:])
    grudge.pop(bridge, None)
    return grudge


def grudge_ring(hosts: Sequence[Host], rng: random.Random) -> Grudge:
    """Majorities ring: the hosts in a random ring, each hears its ``k`` neighbours on both
    sides (``k`` the smallest with ``2k + 1`` a majority), so each hears a majority and no
    two the same one.  Symmetric (TCP needs both directions); with fewer than 4 hosts
    every host is a neighbour: nothing is cut."""
    names = _names(hosts)
    rng.shuffle(names)
    n = len(names)
    k = (n // 2 + 1) // 2  # ceil((majority - 1) / 2)
    grudge: dict[str, frozenset[str]] = {}
    for i, name in enumerate(names):
        hears = {names[(i + d) % n] for d in range(-k, k + 1)}
        others = frozenset(set(names) - hears)
        if others:
            grudge[name] = others
    return grudge


def grudge_one_way(hosts: Sequence[Host], target: Host) -> Grudge:
    """``target`` hears no one; everyone hears ``target``."""
    return {target.name: frozenset(n for n in _names(hosts) if n != target.name)}


def grudge_links(hosts: Sequence[Host], grudge: Grudge) -> list[tuple[Host, Host]]:
    """The ``(sender, receiver)`` links a grudge cuts, for :meth:`Net.cut`."""
    by_name = {h.name: h for h in hosts}
    return [
        (by_name[sender], by_name[receiver])
        for receiver in sorted(grudge)
        for sender in sorted(grudge[receiver])
    ]


def _describe(grudge: Grudge) -> str:
    if not grudge:
        return "nothing cut"
    parts = [f"{r} hears no {'/'.join(sorted(s))}" for r, s in sorted(grudge.items())]
    return "; ".join(parts)


PARTITIONS = ("halves", "leader", "random", "bridge", "ring", "one-way")


class PartitionNemesis:
    """A partition of kind ``mode`` (one of :data:`PARTITIONS`, or ``"any"``: a random
    one each start), cut with nftables; ``stop`` heals every cut."""

    def __init__(self, net: Net, system: System, mode: str, rng: random.Random) -> None:
        if mode not in (*PARTITIONS, "any"):
            raise ValueError(f"partition {mode!r}: one of {', '.join(PARTITIONS)}, any")
        if not net.isolated:
            raise NemesisUnavailable(
                "partitions need network namespaces (root); this run uses loopback hosts"
            )
        self.name = "partition" if mode == "any" else f"partition-{mode}"
        self.net = net
        self.system = system
        self.mode = mode
        self.rng = rng
        self.grudge: Grudge = {}

    def _grudge(self, mode: str) -> tuple[Grudge, str]:
        hosts = self.net.hosts
        if mode == "halves":
            return grudge_halves(hosts, self.rng), "halves"
        if mode == "bridge":
            return grudge_bridge(hosts, self.rng), "bridge"
        if mode == "ring":
            return grudge_ring(hosts, self.rng), "majorities ring"
        if mode == "leader":
            leader = self.system.leader()
            if leader is not None:
                return grudge_isolate(hosts, leader), f"isolate leader {leader.name}"
            target = self.rng.choice(hosts)
            return grudge_isolate(hosts, target), f"isolate {target.name} (no leader known)"
        target = self.rng.choice(hosts)
        if mode == "one-way":
            return grudge_one_way(hosts, target), f"one-way: {target.name} hears no one"
        return grudge_isolate(hosts, target), f"isolate {target.name}"

    def start(self) -> str:
        mode = self.rng.choice(PARTITIONS) if self.mode == "any" else self.mode
        self.grudge, what = self._grudge(mode)
        links = grudge_links(self.net.hosts, self.grudge)
        self.net.cut(links)
        return f"partition {what}: {_describe(self.grudge)} ({len(links)} links cut)"

    def stop(self) -> str:
        self.net.heal()
        self.grudge = {}
        return "partition healed"


class _ProcessNemesis:
    """Signal one node (random or the leader) at start, undo it at stop."""

    verb = ""
    undo = ""

    def __init__(self, net: Net, system: System, target: str, rng: random.Random) -> None:
        if target not in ("random", "leader"):
            raise ValueError(f"target {target!r}: random or leader")
        self.net = net
        self.system = system
        self.target = target
        self.rng = rng
        self.victims: list[Host] = []

    def _choose(self) -> tuple[Host, str]:
        if self.target == "leader":
            leader = self.system.leader()
            if leader is not None:
                return leader, " (leader)"
            return self.rng.choice(self.net.hosts), " (no leader known: random)"
        return self.rng.choice(self.net.hosts), ""

    def _do(self, host: Host) -> None:
        raise NotImplementedError

    def _undo(self, host: Host) -> None:
        raise NotImplementedError

    def start(self) -> str:
        host, why = self._choose()
        self._do(host)
        self.victims.append(host)
        return f"{self.verb} {host.name}{why}"

    def stop(self) -> str:
        victims, self.victims = self.victims, []
        for host in victims:
            self._undo(host)
        if not victims:
            return f"nothing to {self.undo}"
        return f"{self.undo} {' '.join(h.name for h in victims)}"


class KillNemesis(_ProcessNemesis):
    """SIGKILL a random node or the leader; ``stop`` restarts it (same data directory)."""

    verb = "killed"
    undo = "restarted"

    def __init__(self, net: Net, system: System, target: str, rng: random.Random) -> None:
        super().__init__(net, system, target, rng)
        self.name = "kill" if target == "random" else "kill-leader"

    def _do(self, host: Host) -> None:
        self.system.kill(host)

    def _undo(self, host: Host) -> None:
        self.system.start_node(host)


class PauseNemesis(_ProcessNemesis):
    """SIGSTOP a random node or the leader; ``stop`` sends SIGCONT."""

    verb = "paused"
    undo = "resumed"

    def __init__(self, net: Net, system: System, target: str, rng: random.Random) -> None:
        super().__init__(net, system, target, rng)
        self.name = "pause" if target == "random" else "pause-leader"

    def _do(self, host: Host) -> None:
        self.system.pause(host)

    def _undo(self, host: Host) -> None:
        self.system.resume(host)


_NETEM_MISSING = (
    "link faults need the kernel's netem queueing discipline (sch_netem), and this kernel "
    "has none ({detail}); a userspace link proxy per peer link is not built yet"
)


def netem_support(host: Host) -> str | None:
    """None when ``tc ... netem`` works in ``host``'s namespace, else why not (probed by
    adding and removing a netem qdisc on its loopback)."""
    if host.netns is None:
        return "link faults need network namespaces (root); this run uses loopback hosts"
    add = host.command(["tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"])
    try:
        done = subprocess.run(add, capture_output=True, text=True, timeout=TC_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return _NETEM_MISSING.format(detail=f"tc: {exc}")
    if done.returncode != 0:
        return _NETEM_MISSING.format(detail=f"tc: {done.stderr.strip() or done.returncode}")
    subprocess.run(
        host.command(["tc", "qdisc", "del", "dev", "lo", "root"]),
        capture_output=True,
        timeout=TC_TIMEOUT_S,
    )
    return None


LINK_FAULTS = {
    "delay": ["delay", "50ms", "20ms", "distribution", "normal"],
}
"""netem arguments of each link fault (delay with jitter; loss is :class:`LossNemesis`,
with nftables).  Duplication is left out: TCP discards duplicate segments, so it shows
nothing here."""


@runtime_checkable
class LossyNet(Net, Protocol):
    """A net that can drop a share of the packets between hosts (``NamespaceNet``)."""

    def lose(self, percent: int) -> None: ...


class LossNemesis:
    """``percent`` % of the packets between nodes dropped at random while started
    (:meth:`NamespaceNet.lose`: an nftables rule, no netem needed); clients unaffected."""

    name = "loss"

    def __init__(self, net: Net, percent: int = 20) -> None:
        if not net.isolated or not isinstance(net, LossyNet):
            raise NemesisUnavailable(
                "packet loss needs network namespaces (root); this run uses loopback hosts"
            )
        self.net: LossyNet = net
        self.percent = percent

    def start(self) -> str:
        self.net.lose(self.percent)
        return f"loss: {self.percent}% of the packets between nodes dropped"

    def stop(self) -> str:
        self.net.lose(0)
        return "loss removed"


class LinkNemesis:
    """netem on every host's interface (``pnyx-eth0``) while started; probed at
    construction, :class:`NemesisUnavailable` when the kernel has no ``sch_netem``."""

    def __init__(self, net: Net, kind: str) -> None:
        if kind not in LINK_FAULTS:
            raise ValueError(f"link fault {kind!r}: one of {', '.join(LINK_FAULTS)}")
        reason = netem_support(net.hosts[0])
        if reason is not None:
            raise NemesisUnavailable(reason)
        self.name = kind
        self.net = net
        self.kind = kind

    def _tc(self, host: Host, args: list[str]) -> None:
        argv = host.command(["tc", "qdisc", *args])
        done = subprocess.run(argv, capture_output=True, text=True, timeout=TC_TIMEOUT_S)
        if done.returncode != 0 and args[0] != "del":
            raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip()}")

    def start(self) -> str:
        netem = LINK_FAULTS[self.kind]
        for host in self.net.hosts:
            self._tc(host, ["replace", "dev", "pnyx-eth0", "root", "netem", *netem])
        return f"{self.kind}: netem {' '.join(netem)} on every host's link"

    def stop(self) -> str:
        for host in self.net.hosts:
            self._tc(host, ["del", "dev", "pnyx-eth0", "root"])
        return f"{self.kind} removed"


PROXY_PORT_OFFSET = 9
"""The link proxy listens on ``port_base + 9`` in each host's namespace."""
PROXY_MARK = 0x706E
"""Firewall mark of the proxy's upstream sockets (the redirect skips them)."""
PROXY_READY_S = 20.0


@runtime_checkable
class ProxyNet(Net, Protocol):
    """A net that can run helpers in its hosts and redirect their links (``NamespaceNet``)."""

    def spawn(self, host: Host, argv: list[str]) -> subprocess.Popen[str]: ...

    def redirect(self, host: Host, port: int, mark: int) -> None: ...


class ProxyDelayNemesis:
    """Delay and jitter without netem: a userspace TCP proxy
    (:mod:`pnyx.harness.linkproxy`) in every host's namespace, with every TCP connection
    between hosts redirected through it **from construction on** (build it before the
    system starts, as ``pnyx test`` does, so the nodes' peer connections all pass it; a
    connection made earlier bypasses it).  Off, it forwards at once; ``start`` holds each
    chunk ``delay ± jitter`` ms in each direction, ``stop`` lets them through again.  The
    proxies are the net's helpers: :meth:`NamespaceNet.close` kills them."""

    name = "delay"

    def __init__(
        self, net: Net, delay_ms: float = 50.0, jitter_ms: float = 20.0, seed: int = 0
    ) -> None:
        if not net.isolated or not isinstance(net, ProxyNet):
            raise NemesisUnavailable(
                "link delay needs network namespaces (root); this run uses loopback hosts"
            )
        self.net = net
        self.delay_ms = delay_ms
        self.jitter_ms = jitter_ms
        self.procs: list[subprocess.Popen[str]] = []
        for i, host in enumerate(net.hosts):
            port = host.port_base + PROXY_PORT_OFFSET
            argv = [
                sys.executable, "-m", "pnyx.harness.linkproxy",
                "--port", str(port), "--mark", str(PROXY_MARK),
                "--delay-ms", str(delay_ms), "--jitter-ms", str(jitter_ms),
                "--seed", str(seed * 1000 + i),
            ]  # fmt: skip
            self.procs.append(net.spawn(host, argv))
        for host, proc in zip(net.hosts, self.procs, strict=True):
            self._wait_ready(host, proc)
            net.redirect(host, host.port_base + PROXY_PORT_OFFSET, PROXY_MARK)

    @staticmethod
    def _wait_ready(host: Host, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        ready = selectors.DefaultSelector()
        ready.register(proc.stdout, selectors.EVENT_READ)
        try:
            if not ready.select(PROXY_READY_S) or proc.stdout.readline().strip() != "ready":
                raise RuntimeError(
                    f"the link proxy on {host.name} did not start (exit {proc.poll()})"
                )
        finally:
            ready.close()

    def _signal(self, signum: int) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.kill(proc.pid, signum)

    def start(self) -> str:
        self._signal(signal.SIGUSR1)
        return (
            f"delay: {self.delay_ms:g} ms ± {self.jitter_ms:g} ms each way on every link "
            "between nodes (userspace proxy)"
        )

    def stop(self) -> str:
        self._signal(signal.SIGUSR2)
        return "delay removed"


def _delay(net: Net, rng: random.Random) -> Nemesis:
    """netem where the kernel has it, else the userspace link proxy."""
    if net.isolated and netem_support(net.hosts[0]) is None:
        return LinkNemesis(net, "delay")
    return ProxyDelayNemesis(net, seed=rng.randrange(1 << 20))


_Factory = Callable[[Net, System, random.Random], Nemesis]

NEMESES: dict[str, _Factory] = {
    **{
        f"partition-{mode}": (lambda m: lambda n, s, r: PartitionNemesis(n, s, m, r))(mode)
        for mode in PARTITIONS
    },
    "partition": lambda n, s, r: PartitionNemesis(n, s, "any", r),
    "kill": lambda n, s, r: KillNemesis(n, s, "random", r),
    "kill-leader": lambda n, s, r: KillNemesis(n, s, "leader", r),
    **CRASH_NEMESES,
    "pause": lambda n, s, r: PauseNemesis(n, s, "random", r),
    "pause-leader": lambda n, s, r: PauseNemesis(n, s, "leader", r),
    **PAUSE_NEMESES,
    "delay": lambda n, s, r: _delay(n, r),
    "loss": lambda n, s, r: LossNemesis(n),
    "skew": lambda n, s, r: ClockNemesis(n, s, r),
    "member": lambda n, s, r: MemberNemesis(n, s, r),
}
"""``--nemesis`` name -> factory (net, system, rng)."""


def make_nemesis(name: str, net: Net, system: System, seed: int | random.Random = 0) -> Nemesis:
    """The nemesis ``name`` (a key of :data:`NEMESES`) with its own random generator
    (``seed``: an int, or a generator to share); raises :class:`NemesisUnavailable` when
    this machine or mode cannot inject it, ``ValueError`` for an unknown name."""
    factory = NEMESES.get(name)
    if factory is None:
        raise ValueError(f"unknown nemesis {name!r}; valid: {', '.join(NEMESES)}")
    rng = seed if isinstance(seed, random.Random) else random.Random(f"{seed}/{name}")
    return factory(net, system, rng)

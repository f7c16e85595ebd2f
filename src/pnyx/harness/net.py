"""The network of a test run: hosts in Linux network namespaces, or on loopback.

:class:`NamespaceNet` (needs root, iproute2 and nftables)::

    root namespace                 pnyx-<run>-sw ("switch")          pnyx-<run>-n1 ...
    pnyx-<run> 10.213.x.254 <-veth-> pnyx-ctl ┐
                                            br0 ├ pnyx-n1 <-veth-> pnyx-eth0 10.213.x.1
                                                └ pnyx-n2 <-veth-> pnyx-eth0 10.213.x.2 (n2)

The bridge lives in a dedicated *switch* namespace, not in the root namespace: the hosts'
traffic never crosses the machine's own network stack (no bridge, no forwarding, no
firewall rule of the host is touched, and the host's firewall cannot interfere).  The only
thing added to the root namespace is one veth named ``pnyx-<run>`` with the address
``10.213.x.254/24``, so that the test process (the clients of a workload) reaches every
node; partitions never cut that link (like Jepsen's control node, clients always reach
their node).  ``x`` is derived from the run id and moved on when any address or route of
the root namespace already overlaps ``10.213.x.0/24``.

Every name carries the run id: namespaces ``pnyx-<run>-sw`` / ``pnyx-<run>-n<i>``, the root
link ``pnyx-<run>``, and links inside the run's own namespaces; so :func:`leftovers` and
:func:`remove_leftovers` find exactly what one run created and nothing else.

Cuts are nftables rules in the *receiving* host's namespace: one table ``inet
pnyx_harness`` per host namespace, chain ``input``, one ``ip saddr A drop`` rule per cut
link ``A -> B``.  Random packet loss between hosts (:meth:`NamespaceNet.lose`) is a
``numgen random`` drop rule in the same table's ``loss`` chain: it needs no netem.  A
one-way cut still breaks TCP both ways (the SYN or the SYN-ACK is dropped); datagrams
show the direction.

:class:`LoopbackNet` (no root): every host is ``127.0.0.1`` with its own port range;
``isolated`` is False and :meth:`LoopbackNet.cut` raises :class:`NemesisUnavailable`.

:func:`open_net` picks one.  Both are context managers; :meth:`NamespaceNet.close` is
idempotent, bounded, and registered with :mod:`atexit` (a run loop that also wants
SIGTERM/SIGHUP to clean up turns them into ``SystemExit``, e.g. with
:func:`exit_on_signals`).
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import ipaddress
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from types import FrameType
from typing import Self

from pnyx.harness.api import Host, NemesisUnavailable, Net

__all__ = [
    "LoopbackNet",
    "NamespaceNet",
    "NemesisUnavailable",
    "exit_on_signals",
    "is_root",
    "leftovers",
    "namespace_support",
    "new_run_id",
    "open_net",
    "remove_leftovers",
]

PREFIX = "pnyx-"
TABLE = "pnyx_harness"
NAMESPACE_PORT_BASE = 20000
"""Every namespace host listens from this port (each host has its own address)."""
COMMAND_TIMEOUT_S = 10.0
"""Bound on one ``ip`` / ``nft`` command."""
CLOSE_TIMEOUT_S = 15.0
"""Bound on :meth:`NamespaceNet.close` waiting for the kernel to drop what it deleted."""
_RUN_ID = re.compile(r"^[a-z0-9]{1,10}$")


def new_run_id() -> str:
    """A fresh run id: 8 hex digits (names stay within Linux's 15-character link names)."""
    return os.urandom(4).hex()


def is_root() -> bool:
    return os.geteuid() == 0


def namespace_support() -> str | None:
    """None when :class:`NamespaceNet` can work here, else why not (one line)."""
    if not is_root():
        return (
            "network namespaces need root (run as root, e.g. sudo; without root only the "
            "loopback mode and the faults that need no namespaces are available)"
        )
    missing = [tool for tool in ("ip", "nft") if shutil.which(tool) is None]
    if missing:
        return f"{' and '.join(missing)} not found (Debian: apt-get install iproute2 nftables)"
    return None


def _check_run_id(run_id: str) -> str:
    if not _RUN_ID.match(run_id):
        raise ValueError(f"run id {run_id!r}: 1 to 10 characters of [a-z0-9]")
    return run_id


def _run(argv: list[str], *, stdin: str | None = None, check: bool = True) -> str:
    """Run a command (bounded); its stdout; RuntimeError with stderr when it fails."""
    try:
        done = subprocess.run(
            argv, input=stdin, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S
        )
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"{' '.join(argv)}: no answer after {COMMAND_TIMEOUT_S:.0f} s") from exc
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {done.returncode}: {done.stderr.strip()}")
    return done.stdout


def _namespaces() -> list[str]:
    return [line.split()[0] for line in _run(["ip", "netns", "list"]).splitlines() if line]


def _root_links() -> list[str]:
    names = []
    for line in _run(["ip", "-o", "link", "show"]).splitlines():
        parts = line.split(":", 2)
        if len(parts) >= 2:
            names.append(parts[1].strip().split("@")[0])
    return names


def _run_namespaces(run_id: str) -> list[str]:
    mine = f"{PREFIX}{run_id}-"
    return [ns for ns in _namespaces() if ns.startswith(mine)]


def leftovers(run_id: str) -> list[str]:
    """What of run ``run_id`` still exists: namespaces, the root link, nftables tables
    (``[]`` when everything is gone; also ``[]`` without root: nothing can have been made)."""
    _check_run_id(run_id)
    if not is_root():
        return []
    found = [f"netns {ns}" for ns in _run_namespaces(run_id)]
    found += [f"link {link}" for link in _root_links() if link == f"{PREFIX}{run_id}"]
    for ns in _run_namespaces(run_id):
        tables = _run(["ip", "netns", "exec", ns, "nft", "list", "tables"], check=False)
        found += [f"nft {ns}: {line.strip()}" for line in tables.splitlines() if TABLE in line]
    return found


def remove_leftovers(run_id: str) -> list[str]:
    """Remove whatever run ``run_id`` left (e.g. after a ``kill -9`` of the harness);
    what was removed."""
    found = leftovers(run_id)
    link = f"{PREFIX}{run_id}"
    if f"link {link}" in found:
        _run(["ip", "link", "del", link], check=False)
    for ns in _run_namespaces(run_id):
        _run(["ip", "netns", "del", ns], check=False)
    return found


def _subnet_in_use(net: ipaddress.IPv4Network) -> bool:
    """Whether an address or route of the root namespace overlaps ``net``."""
    text = _run(["ip", "-4", "-o", "addr", "show"]) + _run(["ip", "-4", "route", "show"])
    for token in re.findall(r"\b\d+\.\d+\.\d+\.\d+(?:/\d+)?\b", text):
        with contextlib.suppress(ValueError):
            if ipaddress.ip_network(token, strict=False).overlaps(net):
                return True
    return False


def _choose_subnet(run_id: str) -> ipaddress.IPv4Network:
    start = int.from_bytes(hashlib.sha256(run_id.encode()).digest()[:2], "big") % 250
    for step in range(250):
        net = ipaddress.IPv4Network(f"10.213.{(start + step) % 250 + 1}.0/24")
        if not _subnet_in_use(net):
            return net
    raise RuntimeError("no free 10.213.x.0/24 subnet: every one overlaps an address or route")


@contextlib.contextmanager
def _subnet_lock() -> Iterator[None]:
    """An exclusive lock between harness processes of this machine (``flock``)."""
    directory = "/run/lock" if os.path.isdir("/run/lock") else tempfile.gettempdir()
    with open(os.path.join(directory, "pnyx-harness-subnets.lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class NamespaceNet:
    """``n`` hosts, each in its own network namespace, on a bridge in a switch namespace
    (see the module docstring).  Needs root; creates everything in ``__init__`` (and
    removes what it made if that fails)."""

    isolated = True

    def __init__(self, n: int, run_id: str) -> None:
        if not 1 <= n <= 200:
            raise ValueError(f"{n} hosts: 1 to 200")
        reason = namespace_support()
        if reason is not None:
            raise NemesisUnavailable(reason)
        self.run_id = _check_run_id(run_id)
        if leftovers(run_id):
            raise RuntimeError(f"run id {run_id!r} is in use: {', '.join(leftovers(run_id))}")
        self.switch = f"{PREFIX}{run_id}-sw"
        self.root_link = f"{PREFIX}{run_id}"
        self.subnet = ipaddress.IPv4Network("10.213.0.0/24")  # chosen in _create
        self.control_address = ""
        self._n = n
        self._hosts: tuple[Host, ...] = ()
        self._cuts: set[tuple[str, str]] = set()
        self.loss_percent = 0
        self._helpers: list[subprocess.Popen[str]] = []
        self._closed = False
        atexit.register(self.close)
        try:
            self._create()
        except BaseException:
            self.close()
            raise

    def _create(self) -> None:
        sw = ["ip", "-n", self.switch]
        _run(["ip", "netns", "add", self.switch])
        with _subnet_lock():  # two runs starting at once never pick the same subnet
            self.subnet = _choose_subnet(self.run_id)
            addresses = list(self.subnet.hosts())
            self.control_address = str(addresses[-1])
            _run(["ip", "link", "add", self.root_link, "type", "veth",
                  "peer", "name", f"{PREFIX}ctl", "netns", self.switch])  # fmt: skip
            _run(["ip", "addr", "add", f"{self.control_address}/24", "dev", self.root_link])
        self._hosts = tuple(
            Host(
                name=f"n{i}",
                address=str(addresses[i - 1]),
                netns=f"{PREFIX}{self.run_id}-n{i}",
                port_base=NAMESPACE_PORT_BASE,
            )
            for i in range(1, self._n + 1)
        )
        prefix = self.subnet.prefixlen
        _run([*sw, "link", "add", "br0", "type", "bridge"])
        _run([*sw, "link", "set", "br0", "up"])
        _run([*sw, "link", "set", "lo", "up"])
        for host in self._hosts:
            assert host.netns is not None
            ns = ["ip", "-n", host.netns]
            _run(["ip", "netns", "add", host.netns])
            _run([*sw, "link", "add", f"{PREFIX}{host.name}", "type", "veth",
                  "peer", "name", f"{PREFIX}eth0", "netns", host.netns])  # fmt: skip
            _run([*sw, "link", "set", f"{PREFIX}{host.name}", "master", "br0", "up"])
            _run([*ns, "addr", "add", f"{host.address}/{prefix}", "dev", f"{PREFIX}eth0"])
            _run([*ns, "link", "set", f"{PREFIX}eth0", "up"])
            _run([*ns, "link", "set", "lo", "up"])
            _run(
                ["ip", "netns", "exec", host.netns, "nft", "-f", "-"],
                stdin=f"table inet {TABLE} {{\n"
                "  chain input { type filter hook input priority -10; policy accept; }\n"
                "  chain loss { type filter hook input priority -5; policy accept; }\n"
                "}\n",
            )
        _run([*sw, "link", "set", f"{PREFIX}ctl", "master", "br0", "up"])
        _run(["ip", "link", "set", self.root_link, "up"])

    @property
    def hosts(self) -> tuple[Host, ...]:
        return self._hosts

    def host(self, name: str) -> Host:
        return next(h for h in self._hosts if h.name == name)

    @property
    def cuts(self) -> frozenset[tuple[str, str]]:
        """The cut links now, as (from host name, to host name)."""
        return frozenset(self._cuts)

    def cut(self, links: list[tuple[Host, Host]]) -> None:
        """Drop every packet from the first host of each pair to the second: an ``ip
        saddr`` drop rule in the second host's namespace (added to earlier cuts)."""
        self._check_open()
        by_receiver: dict[Host, list[Host]] = {}
        for src, dst in links:
            if src == dst or (src.name, dst.name) in self._cuts:
                continue
            by_receiver.setdefault(dst, []).append(src)
        for dst, sources in by_receiver.items():
            assert dst.netns is not None
            rules = "".join(
                f"add rule inet {TABLE} input ip saddr {s.address} drop\n" for s in sources
            )
            _run(["ip", "netns", "exec", dst.netns, "nft", "-f", "-"], stdin=rules)
            self._cuts.update((s.name, dst.name) for s in sources)

    def heal(self) -> None:
        """Remove every cut (flush each host's ``input`` chain)."""
        self._check_open()
        for host in self._hosts:
            assert host.netns is not None
            _run(["ip", "netns", "exec", host.netns, "nft", "flush", "chain", "inet", TABLE,
                  "input"])  # fmt: skip
        self._cuts.clear()

    def lose(self, percent: int) -> None:
        """Drop ``percent`` % of the packets between hosts at random (each host drops that
        share of what the other hosts send it: an nftables ``numgen random`` rule in the
        ``loss`` chain); 0 removes the loss.  Independent of cuts (``heal`` keeps it);
        the control link (the clients) is never affected."""
        self._check_open()
        if not 0 <= percent <= 100:
            raise ValueError(f"loss {percent}%: 0 to 100")
        for host in self._hosts:
            assert host.netns is not None
            others = ", ".join(h.address for h in self._hosts if h != host)
            script = f"flush chain inet {TABLE} loss\n"
            if percent and others:
                chance = f"numgen random mod 100 < {percent} " if percent < 100 else ""
                script += f"add rule inet {TABLE} loss ip saddr {{ {others} }} {chance}drop\n"
            _run(["ip", "netns", "exec", host.netns, "nft", "-f", "-"], stdin=script)
        self.loss_percent = percent

    def spawn(self, host: Host, argv: list[str]) -> subprocess.Popen[str]:
        """Start a helper process (e.g. a link proxy) in ``host``'s namespace, stdout piped
        (text), stderr discarded; :meth:`close` kills it (by pid) before removing the
        namespaces."""
        self._check_open()
        proc = subprocess.Popen(
            host.command(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        self._helpers.append(proc)
        return proc

    def redirect(self, host: Host, port: int, mark: int) -> None:
        """Send ``host``'s outgoing TCP connections to the other hosts to its local port
        ``port`` instead (an nftables ``redirect`` in table ``ip pnyx_harness_nat``),
        except those of sockets marked ``mark`` (the proxy's own)."""
        self._check_open()
        assert host.netns is not None
        others = ", ".join(h.address for h in self._hosts if h != host)
        if not others:
            return
        script = (
            f"table ip {TABLE}_nat {{\n"
            "  chain output { type nat hook output priority -100; policy accept; }\n"
            "}\n"
            f"flush chain ip {TABLE}_nat output\n"
            f"add rule ip {TABLE}_nat output meta mark != {mark} ip daddr {{ {others} }} "
            f"tcp dport != {port} redirect to :{port}\n"
        )
        _run(["ip", "netns", "exec", host.netns, "nft", "-f", "-"], stdin=script)

    def rules(self, host: Host, chain: str = "input") -> list[str]:
        """The drop rules of ``chain`` (``input``: cuts, ``loss``) in ``host``'s
        namespace now (for tests and reports)."""
        assert host.netns is not None
        text = _run(["ip", "netns", "exec", host.netns, "nft", "list", "chain", "inet", TABLE,
                     chain])  # fmt: skip
        return [line.strip() for line in text.splitlines() if "drop" in line]

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"net of run {self.run_id} is closed")

    def close(self) -> None:
        """Kill the helper processes it spawned (by pid), remove the root link and every
        namespace of this run (their links and rules go with them), then wait (bounded)
        until :func:`leftovers` is empty.  Idempotent; stop the system's processes
        first."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        for proc in self._helpers:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(COMMAND_TIMEOUT_S)
            if proc.stdout is not None:
                proc.stdout.close()
        remove_leftovers(self.run_id)
        deadline = time.monotonic() + CLOSE_TIMEOUT_S
        while (left := leftovers(self.run_id)) and time.monotonic() < deadline:
            time.sleep(0.05)  # the kernel drops a namespace's links asynchronously
            remove_leftovers(self.run_id)
        if left:
            raise RuntimeError(f"run {self.run_id}: could not remove {', '.join(left)}")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _ports_free(base: int, count: int) -> bool:
    sockets: list[socket.socket] = []
    try:
        for port in range(base, base + count):
            s = socket.socket()
            sockets.append(s)
            s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        for s in sockets:
            s.close()


class LoopbackNet:
    """``n`` hosts on ``127.0.0.1``, each with its own range of ``ports_per_host`` free
    ports (``port_base`` onwards); no namespaces, so no partitions: ``cut`` raises
    :class:`NemesisUnavailable`.  Kill and pause nemeses work."""

    isolated = False

    def __init__(self, n: int, ports_per_host: int = 10) -> None:
        if not 1 <= n <= 200:
            raise ValueError(f"{n} hosts: 1 to 200")
        rng = int.from_bytes(os.urandom(2), "big")
        span = n * ports_per_host
        for attempt in range(200):
            base = 30000 + ((rng + attempt * 997) * 10) % (28000 - span)
            if _ports_free(base, span):
                break
        else:
            raise RuntimeError(f"no {span} consecutive free ports on 127.0.0.1")
        self._hosts = tuple(
            Host(
                name=f"n{i}",
                address="127.0.0.1",
                netns=None,
                port_base=base + (i - 1) * ports_per_host,
            )
            for i in range(1, n + 1)
        )

    @property
    def hosts(self) -> tuple[Host, ...]:
        return self._hosts

    def host(self, name: str) -> Host:
        return next(h for h in self._hosts if h.name == name)

    @property
    def cuts(self) -> frozenset[tuple[str, str]]:
        return frozenset()

    def cut(self, links: list[tuple[Host, Host]]) -> None:
        reason = namespace_support() or "this run uses the loopback mode"
        raise NemesisUnavailable(
            f"partitions need network namespaces: every host is 127.0.0.1 in loopback mode "
            f"({reason})"
        )

    def heal(self) -> None:
        """Nothing to heal."""

    def lose(self, percent: int) -> None:
        raise NemesisUnavailable(
            "packet loss needs network namespaces (root); this run uses loopback hosts"
        )

    def close(self) -> None:
        """Nothing to remove."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_net(n: int, run_id: str, *, loopback: bool = False) -> NamespaceNet | LoopbackNet:
    """A :class:`NamespaceNet` when this machine supports one (root, ``ip``, ``nft``) and
    ``loopback`` is False, else a :class:`LoopbackNet`."""
    if loopback or namespace_support() is not None:
        return LoopbackNet(n)
    return NamespaceNet(n, run_id)


@contextlib.contextmanager
def exit_on_signals(*signums: int) -> Iterator[None]:
    """Within the block, turn SIGTERM and SIGHUP (or ``signums``) into ``SystemExit`` so
    ``finally`` blocks and ``with`` exits (and :mod:`atexit`) clean up; Ctrl-C already
    raises ``KeyboardInterrupt``.  Main thread only."""
    wanted = signums or (signal.SIGTERM, signal.SIGHUP)

    def handler(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    previous = {s: signal.signal(s, handler) for s in wanted}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


def _conforms(namespaces: NamespaceNet, loopback: LoopbackNet) -> tuple[Net, Net]:
    """Static check (mypy): both nets implement :class:`~pnyx.harness.api.Net`."""
    return namespaces, loopback

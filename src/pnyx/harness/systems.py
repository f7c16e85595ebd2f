"""Systems under test: pnyx's etcd service and real etcd 3.4, one node per host.

Both speak etcd's v3 gRPC API, so one workload runs against either.  A node runs on its
host through ``Host.command`` (``ip netns exec NS argv`` with namespaces: ``ip`` enters
the namespace and *execs* the target, so the child's pid is the node's own pid), in its own
session, with stdout and stderr appended to ``<directory>/<host>.log`` and its data in
``<directory>/<host>/``.  Ports: the peer port is ``host.port_base``, the client port
``host.port_base + 1``, both on ``host.address``.

Only processes an adapter started are ever signalled, by pid, and only while the
``Popen`` handle says they have not been reaped (a reaped pid may belong to someone else).

Adding a system: subclass :class:`ProcessSystem`, set ``name``, and implement
``_argv(host)`` (the command line of the node on ``host``, data dir
``self.data_dir(host)``); clients reach ``self.endpoints()``.  If the system does not speak
etcd's API, also override ``serving(host)`` and ``leader()``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc  # type: ignore[import-untyped]
from aetcd.rpc import rpc_pb2, rpc_pb2_grpc  # type: ignore[import-untyped]

from pnyx.harness.api import Host, System
from pnyx.harness.lazyfs import LazyFs
from pnyx.harness.membership import (
    Member,
    MemberChangeRefused,
    find_member,
    member_add,
    member_list,
    member_remove,
)

__all__ = ["ETCD_BIN", "SYSTEMS", "EtcdSystem", "NodeStatus", "PnyxSystem", "ProcessSystem"]

ETCD_BIN = os.environ.get("PNYX_ETCD_BIN") or shutil.which("etcd") or "/usr/bin/etcd"
START_TIMEOUT_S = 90.0
"""Bound on a cluster starting to serve (generous: a busy 2-core machine)."""
STOP_TIMEOUT_S = 10.0
"""Bound between SIGTERM and SIGKILL in :meth:`ProcessSystem.stop`."""
REAP_TIMEOUT_S = 10.0
"""Bound on a SIGKILLed process being reaped."""
PAUSE_WAIT_S = 5.0
"""Bound on a SIGSTOPped process showing as stopped."""
RPC_TIMEOUT_S = 1.0
"""Bound on one Status/Range call."""
ADD_TIMEOUT_S = 10.0
"""Bound on getting a removed member added back (MemberAdd retried while refused)."""
JOIN_TIMEOUT_S = 15.0
"""Bound on a re-added member serving; with :data:`ADD_TIMEOUT_S` under the run loop's
30 s per nemesis call."""
REMOVE_RETRY_S = 6.0
"""Bound on retrying a MemberRemove refused as unavailable."""
RETRY_PAUSE_S = 0.5
"""Pause between refused MemberAdd / MemberRemove attempts."""


class NodeStatus:
    """One node's answer to Maintenance.Status."""

    def __init__(self, host: Host, response: Any) -> None:
        self.host = host
        self.member_id = int(response.header.member_id)
        self.leader_id = int(response.leader)
        self.term = int(response.raftTerm)


def _proc_state(pid: int) -> str | None:
    """The process's state letter in ``/proc/PID/stat`` (``T``: stopped), or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def _status(endpoint: str, timeout_s: float) -> Any | None:
    try:
        with grpc.insecure_channel(endpoint) as channel:
            stub = rpc_pb2_grpc.MaintenanceStub(channel)
            return stub.Status(rpc_pb2.StatusRequest(), timeout=timeout_s)
    except grpc.RpcError:
        return None


def _serving(endpoint: str, timeout_s: float) -> bool:
    """A leader is known and a linearizable Range goes through."""
    try:
        with grpc.insecure_channel(endpoint) as channel:
            status = rpc_pb2_grpc.MaintenanceStub(channel).Status(
                rpc_pb2.StatusRequest(), timeout=timeout_s
            )
            if status.leader == 0:
                return False
            rpc_pb2_grpc.KVStub(channel).Range(
                rpc_pb2.RangeRequest(key=b"pnyx-harness-probe"), timeout=timeout_s
            )
    except grpc.RpcError:
        return False
    return True


class ProcessSystem:
    """A cluster of one process per host (see the module docstring); subclasses give the
    command line."""

    name = "process"
    stop_one_at_a_time = False
    """Stop nodes one after the other (see :meth:`stop`)."""

    def __init__(self, *, start_timeout_s: float = START_TIMEOUT_S) -> None:
        self.start_timeout_s = start_timeout_s
        self.hosts: tuple[Host, ...] = ()
        self.directory = Path()
        self.cluster_token = "pnyx-" + secrets.token_hex(6)
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._paused: set[str] = set()
        self.removed: set[str] = set()
        """Hosts removed from the cluster by :meth:`remove_member`, not added back yet."""
        self._membership_lock = threading.Lock()

    # -- to implement -------------------------------------------------------------------

    def _argv(self, host: Host) -> list[str]:
        raise NotImplementedError

    # -- addresses ----------------------------------------------------------------------

    def peer_port(self, host: Host) -> int:
        return host.port_base

    def client_port(self, host: Host) -> int:
        return host.port_base + 1

    def endpoint(self, host: Host) -> str:
        return f"{host.address}:{self.client_port(host)}"

    def endpoints(self) -> list[str]:
        return [self.endpoint(h) for h in self.hosts]

    def data_dir(self, host: Host) -> Path:
        return self.directory / host.name

    def log_path(self, host: Host) -> Path:
        return self.directory / f"{host.name}.log"

    def logs(self) -> dict[str, Path]:
        return {h.name: self.log_path(h) for h in self.hosts}

    def log_tail(self, lines: int = 20) -> str:
        parts = []
        for name, path in self.logs().items():
            with contextlib.suppress(OSError):
                tail = path.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"--- {name} ({path})\n" + "\n".join(tail))
        return "\n".join(parts)

    def pids(self) -> dict[str, int]:
        """Host name -> pid of the node process running now (started by this adapter)."""
        return {name: p.pid for name, p in self._procs.items() if p.poll() is None}

    def host(self, name: str) -> Host:
        return next(h for h in self.hosts if h.name == name)

    # -- lifecycle ----------------------------------------------------------------------

    def start(self, hosts: tuple[Host, ...], directory: Path) -> None:
        """Start a node on every host; return once each serves (a leader is known and a
        linearizable read goes through), or stop them and raise with the logs' tail."""
        self.hosts = tuple(hosts)
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        try:
            for host in self.hosts:
                self.start_node(host)
            self.wait_serving(self.hosts, self.start_timeout_s)
        except BaseException:
            self.stop()
            raise

    def start_node(self, host: Host) -> None:
        """Launch the node on ``host`` (again, after a kill: same data directory); returns
        once launched, without waiting for it to serve (see :meth:`wait_serving`).  A host
        removed by :meth:`remove_member` is added back instead (:meth:`add_member`, which
        waits, bounded, until it serves)."""
        if host.name in self.removed:
            self.add_member(host)
            return
        self._launch(host)

    def _launch(self, host: Host) -> None:
        running = self._procs.get(host.name)
        if running is not None and running.poll() is None:
            raise RuntimeError(f"{self.name} node on {host.name} runs (pid {running.pid})")
        self.data_dir(host).parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path(host), "ab") as out:
            out.write(f"=== pnyx harness: starting {self.name} on {host.name}\n".encode())
            out.flush()
            self._procs[host.name] = subprocess.Popen(
                host.command(self._argv(host)),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._paused.discard(host.name)

    def wait_serving(self, hosts: tuple[Host, ...] | None = None, timeout_s: float = 60.0) -> None:
        """Wait (bounded) until every node of ``hosts`` (default: all) serves; raise with
        the logs' tail when one exits or the bound passes."""
        pending = list(hosts if hosts is not None else self.hosts)
        deadline = time.monotonic() + timeout_s
        while pending:
            for host in pending:
                proc = self._procs.get(host.name)
                if proc is None or proc.poll() is not None:
                    code = None if proc is None else proc.returncode
                    raise RuntimeError(
                        f"{self.name} node on {host.name} is not running (exit {code})\n"
                        f"{self.log_tail()}"
                    )
            pending = [h for h in pending if not self.serving(h)]
            if not pending:
                return
            if time.monotonic() > deadline:
                names = ", ".join(h.name for h in pending)
                raise RuntimeError(
                    f"{self.name} nodes {names} not serving after {timeout_s:.0f} s\n"
                    f"{self.log_tail()}"
                )
            time.sleep(0.1)  # poll interval

    def serving(self, host: Host) -> bool:
        """Whether the node on ``host`` serves now (bounded by :data:`RPC_TIMEOUT_S`)."""
        return _serving(self.endpoint(host), RPC_TIMEOUT_S)

    def _signal(self, host: Host, signum: int) -> subprocess.Popen[bytes]:
        proc = self._procs.get(host.name)
        if proc is None or proc.poll() is not None:
            raise RuntimeError(f"{self.name} node on {host.name} is not running")
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signum)
        return proc

    def kill(self, host: Host) -> None:
        """SIGKILL the node on ``host`` and wait (bounded) until it is reaped."""
        proc = self._signal(host, signal.SIGKILL)
        proc.wait(REAP_TIMEOUT_S)
        self._paused.discard(host.name)

    def pause(self, host: Host) -> None:
        """SIGSTOP the node on ``host``; returns once the kernel shows it stopped (bounded
        by :data:`PAUSE_WAIT_S`: every thread of a multi-threaded process stops
        asynchronously)."""
        proc = self._signal(host, signal.SIGSTOP)
        self._paused.add(host.name)
        deadline = time.monotonic() + PAUSE_WAIT_S
        while _proc_state(proc.pid) not in ("T", None) and time.monotonic() < deadline:
            time.sleep(0.01)  # poll interval

    def resume(self, host: Host) -> None:
        self._signal(host, signal.SIGCONT)
        self._paused.discard(host.name)

    def running(self, host: Host) -> bool:
        proc = self._procs.get(host.name)
        return proc is not None and proc.poll() is None

    def paused(self, host: Host) -> bool:
        return host.name in self._paused and self.running(host)

    def stop(self) -> None:
        """Stop every node this adapter started: SIGTERM (and SIGCONT, in case it is
        paused), then SIGKILL whatever is left once :data:`STOP_TIMEOUT_S` has passed.
        With ``stop_one_at_a_time`` each node is waited for before the next is told.
        Bounded; idempotent."""
        procs = [p for p in self._procs.values() if p.poll() is None]
        self._paused.clear()
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
                os.kill(proc.pid, signal.SIGCONT)
            if self.stop_one_at_a_time:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(max(0.0, deadline - time.monotonic()))
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.0, deadline - time.monotonic()))
        for proc in procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(REAP_TIMEOUT_S)

    def crash_storage(self, host: Host) -> None:
        """After a kill: lose what the node had written but not fsynced, as a power
        failure would (the ``kill-all`` / ``kill-majority`` nemeses call it).  Default:
        nothing — a killed process's writes survive in the page cache; pnyx under
        ``lose_unsynced`` held them in its own memory, so they are gone already."""

    def stop_node(self, host: Host) -> None:
        """Stop the node on ``host``: SIGTERM (and SIGCONT), SIGKILL after
        :data:`STOP_TIMEOUT_S`, reaped; nothing when it does not run.  Bounded."""
        proc = self._procs.get(host.name)
        self._paused.discard(host.name)
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
            os.kill(proc.pid, signal.SIGCONT)
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(REAP_TIMEOUT_S)

    # -- membership (the ``member`` nemesis: pnyx.harness.membership) -------------------

    start_before_add = False
    """Launch a re-added member before its MemberAdd (pnyx: the add then promotes the
    running learner at once) instead of after it (etcd: a joining member must be listed)."""

    def peer_url(self, host: Host) -> str:
        """The node's peer URL as the cluster lists it."""
        return f"http://{host.address}:{self.peer_port(host)}"

    def _member_endpoints(self, but: Host | None = None) -> list[str]:
        """Client endpoints of the members running now (not paused, not ``but``)."""
        return [
            self.endpoint(h)
            for h in self.hosts
            if h != but and h.name not in self.removed and self.running(h) and not self.paused(h)
        ]

    def members(self) -> list[Member]:
        """The member list, asked of the running members in turn (bounded each)."""
        return member_list(self._member_endpoints())

    def remove_member(self, host: Host) -> str:
        """``MemberRemove`` the node on ``host`` (through another member), then stop it
        and wipe its data directory: it is no longer a member.  Raises
        :class:`MemberChangeRefused` (nothing changed) when the cluster refuses."""
        with self._membership_lock:
            if host.name in self.removed:
                raise MemberChangeRefused(f"{host.name} is removed already")
            endpoints = self._member_endpoints(host)
            member = find_member(member_list(endpoints), self.peer_url(host))
            if member is None:
                raise MemberChangeRefused(f"{host.name} ({self.peer_url(host)}) is no member")
            self._remove(endpoints, host, member)
            self.removed.add(host.name)
            self.stop_node(host)
            shutil.rmtree(self.data_dir(host), ignore_errors=True)
        return f"removed {host.name} (member id {member.member_id:x})"

    def _remove(self, endpoints: list[str], host: Host, member: Member) -> None:
        """MemberRemove through the members in turn, retried while unavailable (bounded by
        :data:`REMOVE_RETRY_S`: etcd refuses as an "unhealthy cluster" until its members
        have been connected for 5 s); a failed call whose change happened anyway (the
        reply was lost) counts as done."""
        deadline = time.monotonic() + REMOVE_RETRY_S
        attempt = 0
        while True:
            try:
                member_remove(endpoints[attempt % len(endpoints)], member.member_id)
                return
            except MemberChangeRefused as exc:
                with contextlib.suppress(MemberChangeRefused):
                    if find_member(member_list(endpoints), self.peer_url(host)) is None:
                        return
                if "UNAVAILABLE" not in str(exc) or time.monotonic() > deadline:
                    raise
            attempt += 1
            time.sleep(RETRY_PAUSE_S)

    def add_member(self, host: Host, join_timeout_s: float = JOIN_TIMEOUT_S) -> str:
        """Add the removed ``host`` back as a new member (``MemberAdd`` with its peer URL,
        retried while refused, bounded by :data:`ADD_TIMEOUT_S`), start it with an empty
        data directory joining the running cluster, and wait (bounded by
        ``join_timeout_s``) until it serves as a voter.  Raises
        :class:`MemberChangeRefused` when the cluster refuses (it stays removed); a host
        not removed (e.g. added back meanwhile by another caller) is left alone."""
        began = time.monotonic()
        with self._membership_lock:
            if host.name not in self.removed:
                return f"{host.name} is a member (not removed)"
            member = self._rejoin(host)
            self.removed.discard(host.name)
        joined = self._wait_joined(host, began, join_timeout_s)
        return f"added {host.name} back as member id {member.member_id:x} ({joined})"

    def _rejoin(self, host: Host) -> Member:
        """Launch and MemberAdd in this system's order; on failure the node is stopped and
        its data wiped again."""
        try:
            if self.start_before_add:
                self._launch(host)
                self._wait_answering(host, ADD_TIMEOUT_S / 2)
                member, _ = self._add(host)
            else:
                member, members = self._add(host)
                self._prepare_join(host, members)
                self._launch(host)
        except BaseException:
            self.stop_node(host)
            shutil.rmtree(self.data_dir(host), ignore_errors=True)
            raise
        return member

    def _add(self, host: Host) -> tuple[Member, list[Member]]:
        """``MemberAdd`` of ``host``'s peer URL, retried while refused (bounded by
        :data:`ADD_TIMEOUT_S`); already listed (a lost reply) counts.  The member and the
        member list."""
        deadline = time.monotonic() + ADD_TIMEOUT_S
        attempt = 0
        while True:
            endpoints = self._member_endpoints(host)
            try:
                members = member_list(endpoints)
                found = find_member(members, self.peer_url(host))
                if found is not None:
                    return found, members
                return member_add(endpoints[attempt % len(endpoints)], self.peer_url(host))
            except MemberChangeRefused:
                if time.monotonic() > deadline:
                    raise
            attempt += 1
            time.sleep(RETRY_PAUSE_S)

    def _prepare_join(self, host: Host, members: list[Member]) -> None:
        """Before a re-added member is launched (after its MemberAdd, with the members
        now): whatever ``_argv`` needs to join the running cluster.  Default: nothing."""

    def _wait_answering(self, host: Host, timeout_s: float) -> None:
        """Until the node answers Status (bounded; it may still be unready after)."""
        deadline = time.monotonic() + timeout_s
        while self.running(host) and time.monotonic() < deadline:
            if _status(self.endpoint(host), RPC_TIMEOUT_S) is not None:
                return
            time.sleep(0.1)  # poll interval

    def _wait_joined(self, host: Host, began: float, timeout_s: float) -> str:
        """Wait (bounded by ``timeout_s``) until the re-added node serves and is listed as
        a voter; says how long after ``began`` (the add's start) it did, or what it did
        not do in time."""
        deadline = time.monotonic() + timeout_s
        try:
            self.wait_serving((host,), timeout_s)
            while not self._voter(host):
                if time.monotonic() > deadline:
                    raise RuntimeError("listed as a learner still")
                time.sleep(0.1)  # poll interval
        except RuntimeError as exc:
            reason = str(exc).splitlines()[0]
            return f"not serving {time.monotonic() - began:.1f} s after the add: {reason}"
        return f"serving {time.monotonic() - began:.1f} s after the add began"

    def _voter(self, host: Host) -> bool:
        with contextlib.suppress(MemberChangeRefused):
            member = find_member(self.members(), self.peer_url(host))
            return member is not None and not member.learner
        return False

    # -- observation --------------------------------------------------------------------

    def statuses(self, timeout_s: float = RPC_TIMEOUT_S) -> list[NodeStatus]:
        """Every answering node's Status, asked in parallel (bounded by ``timeout_s``)."""
        if not self.hosts:
            return []
        with ThreadPoolExecutor(max_workers=len(self.hosts)) as pool:
            answers = list(pool.map(lambda h: _status(self.endpoint(h), timeout_s), self.hosts))
        return [NodeStatus(h, a) for h, a in zip(self.hosts, answers, strict=True) if a]

    def leader(self) -> Host | None:
        """The leader named by the answering node of the highest Raft term (member ids
        mapped to hosts by each node's own header), if any; bounded."""
        statuses = self.statuses()
        hosts_by_id = {s.member_id: s.host for s in statuses}
        named = [s for s in statuses if s.leader_id != 0]
        if not named:
            return None
        best = max(named, key=lambda s: s.term)
        return hosts_by_id.get(best.leader_id)


class PnyxSystem(ProcessSystem):
    """pnyx's etcd service: ``pnyx serve --protocol etcd`` per host."""

    name = "pnyx"
    start_before_add = True
    """A re-added node keeps its node id (only ``--peers`` nodes exist) and so its member
    id; wiped, it starts as a follower with no log and waits to be added."""

    def __init__(
        self,
        *,
        tick_ms: int = 10,
        extra_args: tuple[str, ...] = (),
        start_timeout_s: float = START_TIMEOUT_S,
        fault_clock: bool = False,
        mutants: tuple[str, ...] = (),
        lose_unsynced: bool = False,
    ) -> None:
        super().__init__(start_timeout_s=start_timeout_s)
        self.tick_ms = tick_ms
        self.extra_args = extra_args
        self.mutants = tuple(mutants)
        """Deliberately broken variants every node runs (``--test-mutant``; names:
        ``pnyx.cli.serve_cmd.TEST_MUTANTS``)."""
        self.lose_unsynced = lose_unsynced
        """Nodes hold WAL writes in memory until fsynced (``--test-lose-unsynced``): a kill
        loses what a power failure would."""
        self.fault_clock = fault_clock
        """Nodes take their time from ``clock_file(host)`` (``--fault-clock``; set before
        :meth:`start`, as the clock nemeses do when built)."""

    def clock_file(self, host: Host) -> Path:
        """The fault clock file of the node on ``host`` (next to its log)."""
        return self.directory / f"{host.name}.clock"

    def _argv(self, host: Host) -> list[str]:
        ids = {h.name: i for i, h in enumerate(self.hosts, start=1)}
        peers = ",".join(f"{ids[h.name]}={h.address}:{self.peer_port(h)}" for h in self.hosts)
        clients = ",".join(f"{ids[h.name]}={self.endpoint(h)}" for h in self.hosts)
        return [
            sys.executable, "-m", "pnyx", "serve",
            "--protocol", "etcd",
            "--id", str(ids[host.name]),
            "--peers", peers,
            "--cluster-id", self.cluster_token,
            "--data-dir", str(self.data_dir(host)),
            "--tick-ms", str(self.tick_ms),
            "--client-host", host.address,
            "--client-port", str(self.client_port(host)),
            "--client-endpoints", clients,
            *(["--fault-clock", str(self.clock_file(host))] if self.fault_clock else []),
            *[arg for name in self.mutants for arg in ("--test-mutant", name)],
            *(["--test-lose-unsynced"] if self.lose_unsynced else []),
            *self.extra_args,
        ]  # fmt: skip


class EtcdSystem(ProcessSystem):
    """Real etcd (Debian ``etcd-server`` 3.4): ``etcd`` per host, a static initial cluster
    on the hosts' addresses; a restarted member finds its data dir and rejoins."""

    name = "etcd"
    stop_one_at_a_time = True
    """etcd members all told to stop at once take seconds (the leader tries to hand over
    to members that are going away); one at a time they stop in well under a second."""

    def __init__(
        self,
        *,
        binary: str = ETCD_BIN,
        extra_args: tuple[str, ...] = (),
        start_timeout_s: float = START_TIMEOUT_S,
        lazyfs: bool = False,
    ) -> None:
        super().__init__(start_timeout_s=start_timeout_s)
        self.lazyfs = lazyfs
        """Each node's data dir on its own :class:`~pnyx.harness.lazyfs.LazyFs` (backing
        ``<dir>/<host>.lazy``): :meth:`crash_storage` drops what etcd did not fsync."""
        self._fs: dict[str, LazyFs] = {}
        if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
            raise RuntimeError(
                f"etcd not found at {binary}: install Debian etcd-server (apt-get install "
                f"etcd-server etcd-client) or set PNYX_ETCD_BIN"
            )
        self.binary = binary
        self.extra_args = extra_args
        self._join_cluster: dict[str, str] = {}
        """Host name -> ``--initial-cluster`` of a member added back (state existing)."""

    def _peer_url(self, host: Host) -> str:
        return f"http://{host.address}:{self.peer_port(host)}"

    def _launch(self, host: Host) -> None:
        if self.lazyfs and host.name not in self._fs:
            fs = LazyFs(self.directory / f"{host.name}.lazy", self.data_dir(host),
                        log_path=self.directory / f"{host.name}.lazyfs.log")  # fmt: skip
            fs.start()
            self._fs[host.name] = fs
        super()._launch(host)

    def crash_storage(self, host: Host) -> None:
        """With ``lazyfs``: the node's filesystem crashes (everything etcd wrote but did
        not fsync is gone) and is mounted again for the restart."""
        fs = self._fs.get(host.name)
        if fs is not None:
            fs.crash()

    def stop(self) -> None:
        """The nodes (see :meth:`ProcessSystem.stop`), then their lazy filesystems."""
        try:
            super().stop()
        finally:
            filesystems, self._fs = list(self._fs.values()), {}
            for fs in filesystems:
                fs.stop()

    def _prepare_join(self, host: Host, members: list[Member]) -> None:
        """A member added back starts with ``--initial-cluster-state existing`` and the
        current members (each named by its host) in ``--initial-cluster``."""
        names = {self.peer_url(h): h.name for h in self.hosts}
        self._join_cluster[host.name] = ",".join(
            f"{names.get(url, m.name)}={url}" for m in members for url in m.peer_urls
        )

    def _argv(self, host: Host) -> list[str]:
        joining = self._join_cluster.get(host.name)
        initial = joining or ",".join(f"{h.name}={self._peer_url(h)}" for h in self.hosts)
        client = f"http://{self.endpoint(host)}"
        return [
            self.binary,
            "--name", host.name,
            "--data-dir", str(self.data_dir(host)),
            "--listen-client-urls", client,
            "--advertise-client-urls", client,
            "--listen-peer-urls", self._peer_url(host),
            "--initial-advertise-peer-urls", self._peer_url(host),
            "--initial-cluster", initial,
            "--initial-cluster-state", "existing" if joining else "new",
            "--initial-cluster-token", self.cluster_token,
            *self.extra_args,
        ]  # fmt: skip


SYSTEMS: dict[str, type[ProcessSystem]] = {"pnyx": PnyxSystem, "etcd": EtcdSystem}
"""``--system`` name -> adapter class (constructed without arguments for defaults)."""


def _conforms(pnyx: PnyxSystem, etcd: EtcdSystem) -> tuple[System, System]:
    """Static check (mypy): both adapters implement :class:`~pnyx.harness.api.System`."""
    return pnyx, etcd

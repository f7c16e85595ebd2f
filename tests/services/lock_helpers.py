"""Shared pieces of the lock and election tests (``test_etcd_lock.py``,
``test_etcd_election.py``): a 3-node pnyx etcd cluster and a real etcd 3.4, both per test
module; gRPC stubs for either; background processes with bounded waits; and the
normalisation that makes two clusters' answers comparable (revisions relative to the
scenario's start, lease ids as labels in order of appearance, no cluster/member ids)."""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from aetcd.rpc import rpc_pb2, rpc_pb2_grpc

from pnyx.services.etcd.lock_service import prefix_end
from pnyx.services.etcd.proto import (
    v3election_pb2_grpc,
    v3lock_pb2_grpc,
)
from tests.etcd.realetcd import ETCDCTL_BIN, start_pnyx_etcd, start_real_etcd

WAIT_S = 30.0
"""Bound of every wait for something the cluster must do (generous: 2 busy cores)."""
CALL_S = 30.0
"""Deadline of one gRPC call that must not block."""
POLL_S = 0.05


@dataclass
class Target:
    """One cluster under test: its name (``pnyx`` / ``etcd``) and client endpoints."""

    name: str
    endpoints: list[str]
    cluster: Any = None
    """The pnyx ``EtcdCluster`` (None for real etcd)."""
    _channels: list[Any] = field(default_factory=list)

    @property
    def csv(self) -> str:
        return ",".join(self.endpoints)

    def connect(self, index: int = 0) -> Any:
        channel = grpc.insecure_channel(self.endpoints[index % len(self.endpoints)])
        self._channels.append(channel)
        return channel

    def kv(self, index: int = 0) -> Any:
        return rpc_pb2_grpc.KVStub(self.connect(index))

    def lease(self, index: int = 0) -> Any:
        return rpc_pb2_grpc.LeaseStub(self.connect(index))

    def lock(self, index: int = 0) -> Any:
        return v3lock_pb2_grpc.LockStub(self.connect(index))

    def election(self, index: int = 0) -> Any:
        return v3election_pb2_grpc.ElectionStub(self.connect(index))

    def grant(self, ttl: int) -> int:
        response = self.lease().LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=ttl), timeout=CALL_S)
        return int(response.ID)

    def revision(self) -> int:
        response = self.kv().Range(rpc_pb2.RangeRequest(key=b"/never-written"), timeout=CALL_S)
        return int(response.header.revision)

    def keys(self, prefix: bytes) -> list[Any]:
        """The kvs under ``prefix`` (linearizable), oldest first (create revision order:
        key order depends on the lease ids, which differ between clusters)."""
        response = self.kv().Range(
            rpc_pb2.RangeRequest(key=prefix, range_end=prefix_end(prefix)), timeout=CALL_S
        )
        return sorted(response.kvs, key=lambda kv: kv.create_revision)

    def close(self) -> None:
        for channel in self._channels:
            channel.close()
        self._channels.clear()


@pytest.fixture(scope="module")
def targets() -> Iterator[dict[str, Target]]:
    """A 3-node pnyx etcd cluster (``EtcdCluster``: real processes) and a 1-member real
    etcd 3.4, both on loopback, for the whole test module (its tests use distinct key
    prefixes and leave no keys behind); stopped (by pid) afterwards."""
    pnyx = start_pnyx_etcd(3)
    try:
        real = start_real_etcd(1)
        try:
            found = {
                "pnyx": Target("pnyx", pnyx.endpoints, pnyx.cluster),
                "etcd": Target("etcd", real.endpoints),
            }
            try:
                yield found
            finally:
                for target in found.values():
                    target.close()
        finally:
            real.stop()
    finally:
        pnyx.stop()


def on_both(targets: dict[str, Target], fn: Callable[[Target], Any]) -> dict[str, Any]:
    """``fn(target)`` for pnyx and real etcd at the same time (two threads: the wall time
    of the slower); name -> result.  A failure in either is raised."""
    with ThreadPoolExecutor(len(targets)) as pool:
        futures = {name: pool.submit(fn, target) for name, target in targets.items()}
        return {name: future.result(timeout=300) for name, future in futures.items()}


def wait_for(what: str, check: Callable[[], Any], timeout_s: float = WAIT_S) -> Any:
    """Poll ``check`` until it returns something truthy (bounded); that value."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(POLL_S)


def rpc_error(call: Callable[[], Any]) -> tuple[str, str]:
    """(status code name, details) of a call that must fail."""
    try:
        call()
    except grpc.RpcError as exc:
        return exc.code().name, exc.details()
    raise AssertionError("the call succeeded")


def deadline_passed(outcome: tuple[str, str]) -> bool:
    """Whether a call's ``rpc_error`` outcome is its deadline passing: gRPC's
    DEADLINE_EXCEEDED, or etcd's server ending the call first with its context's error."""
    return outcome[0] == "DEADLINE_EXCEEDED" or outcome == ("UNKNOWN", "context deadline exceeded")


class InBackground:
    """``fn()`` in a thread; :meth:`result` waits for it (bounded) and returns or raises."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self._out: queue.Queue[tuple[bool, Any]] = queue.Queue()

        def run() -> None:
            try:
                self._out.put((True, fn()))
            except BaseException as exc:  # handed to the test thread
                self._out.put((False, exc))

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def result(self, timeout_s: float = WAIT_S) -> Any:
        ok, value = self._out.get(timeout=timeout_s)
        if not ok:
            raise value
        return value


class Labels:
    """Stable names for values that differ between clusters (lease ids, ...)."""

    def __init__(self, base_revision: int) -> None:
        self.base = base_revision
        self._names: dict[int, str] = {}

    def lease(self, lease_id: int) -> str:
        if lease_id == 0:
            return "-"
        return self._names.setdefault(lease_id, f"L{len(self._names) + 1}")

    def rev(self, revision: int) -> int:
        """A revision relative to the scenario's start (0 stays 0)."""
        return revision - self.base if revision else 0

    def key(self, key: bytes) -> str:
        """``name/<lease hex>`` with the lease as its label."""
        name, _, suffix = key.decode().rpartition("/")
        try:
            return f"{name}/{self.lease(int(suffix, 16))}"
        except ValueError:
            return key.decode()

    def kv(self, kv: Any) -> dict[str, Any]:
        return {
            "key": self.key(kv.key),
            "value": kv.value.decode(),
            "create": self.rev(kv.create_revision),
            "mod": self.rev(kv.mod_revision),
            "version": kv.version,
            "lease": self.lease(kv.lease),
        }


class Proc:
    """A child process (its own process group) whose stdout lines arrive on a queue;
    signalled and killed by pid only."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.argv = argv
        self.p = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            start_new_session=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.stderr: list[str] = []
        threading.Thread(
            target=self._pump, args=(self.p.stdout, self.lines.put), daemon=True
        ).start()
        threading.Thread(
            target=self._pump, args=(self.p.stderr, self.stderr.append), daemon=True
        ).start()

    @staticmethod
    def _pump(stream: Any, put: Callable[[str], None]) -> None:
        for line in stream:
            put(line.rstrip("\n"))

    def take(self, n: int, timeout_s: float = WAIT_S) -> list[str]:
        """The next ``n`` stdout lines (bounded wait)."""
        out: list[str] = []
        deadline = time.monotonic() + timeout_s
        while len(out) < n:
            try:
                out.append(self.lines.get(timeout=max(0.01, deadline - time.monotonic())))
            except queue.Empty:
                raise AssertionError(
                    f"{self.argv}: got {out} of {n} lines in {timeout_s:.0f} s; rc="
                    f"{self.p.poll()} stderr={self.stderr[-5:]}"
                ) from None
        return out

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.p.pid, sig)

    def wait(self, timeout_s: float = WAIT_S) -> int:
        return self.p.wait(timeout_s)

    def stop(self) -> None:
        """SIGKILL it (by pid) if it still runs, and reap it."""
        if self.p.poll() is None:
            self.signal(signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.p.wait(10)


@contextlib.contextmanager
def processes() -> Iterator[list[Proc]]:
    """A list to add started :class:`Proc` s to; all killed (by pid) on the way out."""
    started: list[Proc] = []
    try:
        yield started
    finally:
        for proc in started:
            proc.stop()


def etcdctl_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
    env["ETCDCTL_API"] = "3"
    return env


def etcdctl(target: Target, *args: str) -> list[str]:
    """argv of a stock etcdctl against ``target``'s endpoints."""
    return [
        ETCDCTL_BIN,
        f"--endpoints={target.csv}",
        "--dial-timeout=10s",
        "--command-timeout=30s",
        *args,
    ]


def run_etcdctl(
    target: Target, *args: str, timeout_s: float = 60.0
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        etcdctl(target, *args),
        capture_output=True,
        text=True,
        env=etcdctl_env(),
        timeout=timeout_s,
    )


__all__ = [
    "CALL_S",
    "WAIT_S",
    "InBackground",
    "Labels",
    "Proc",
    "Target",
    "deadline_passed",
    "etcdctl",
    "etcdctl_env",
    "on_both",
    "processes",
    "rpc_error",
    "run_etcdctl",
    "targets",
    "wait_for",
]

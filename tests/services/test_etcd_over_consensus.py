"""The etcd service over Multi-Paxos and VR (``pnyx serve --protocol etcd --consensus``):
3 real processes each (sockets, WAL with fsync), driven by stock ``etcdctl`` 3.4 and
``pnyx.etcdclient``.

Per consensus, on one cluster: put / get / range / delete, a compare-and-swap txn, a watch
from a past revision, a lease granted, kept alive, then left to expire (its key goes), a
lock; what the consensus lacks (member add/remove, MoveLeader) is refused with
``Unimplemented``; then the leader (primary) is killed with SIGKILL while a client writes,
the others keep serving, no acknowledged write is lost, and the killed member rejoins and
catches up (disk-less VR through its recovery protocol).

Every wait is bounded; only the processes the cluster started are signalled, by pid.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from pnyx.etcdclient import AsyncEtcdClient, EtcdError
from tests.etcd.realetcd import ETCDCTL_BIN
from tests.services.etcd_cluster import EtcdCluster

T = TypeVar("T")
CONSENSUSES = ("paxos", "vr")
CTL_TIMEOUT_S = 60.0
"""One etcdctl command (generous: 2 busy cores)."""
BOUND_S = 120.0
"""One test's async part."""
RETRY_WITHIN_S = 30.0
"""A write retried across a leader change."""


@pytest.fixture(params=CONSENSUSES)
def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EtcdCluster]:
    """A started 3-node etcd cluster over ``--consensus PARAM``; stopped and removed
    afterwards."""
    if not (os.path.isfile(ETCDCTL_BIN) and os.access(ETCDCTL_BIN, os.X_OK)):
        pytest.fail(f"etcdctl not found at {ETCDCTL_BIN}: `make test` installs etcd-client")
    directory = tmp_path / f"etcd-{request.param}"  # the reaping fixture watches tmp_path
    with EtcdCluster(directory, nodes=3, extra_args=("--consensus", request.param)) as started:
        yield started
    shutil.rmtree(directory, ignore_errors=True)


def ctl(
    cluster: EtcdCluster, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``etcdctl ARGS`` against every endpoint of ``cluster`` (bounded)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
    env.update(
        ETCDCTL_API="3",
        ETCDCTL_ENDPOINTS=cluster.endpoints_csv,
        ETCDCTL_DIAL_TIMEOUT="10s",
        ETCDCTL_COMMAND_TIMEOUT="30s",
    )
    return subprocess.run(
        [ETCDCTL_BIN, *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=CTL_TIMEOUT_S,
        check=False,
    )


def ok(cluster: EtcdCluster, *args: str, stdin: str | None = None) -> str:
    """``etcdctl ARGS``'s output; the test fails with its stderr when it fails."""
    out = ctl(cluster, *args, stdin=stdin)
    assert out.returncode == 0, f"etcdctl {' '.join(args)} failed: {out.stderr[-2000:]}"
    return out.stdout


def run(body: Callable[[], Awaitable[T]]) -> T:
    async def bounded() -> T:
        async with asyncio.timeout(BOUND_S):
            return await body()

    return asyncio.run(bounded())


async def retrying(call: Callable[[], Awaitable[T]], within_s: float = RETRY_WITHIN_S) -> T:
    """``call()`` until it succeeds (a new leader may be being chosen), bounded."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while True:
        try:
            return await call()
        except EtcdError:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.1)


# -- the API ----------------------------------------------------------------------------------


def test_etcd_api_refusals_and_a_leader_kill(cluster: EtcdCluster) -> None:
    """One cluster per consensus for all three parts (a cluster's start is most of the
    cost; one test keeps them together under ``pytest -n``)."""
    _kv_txn_watch_lease_lock(cluster)
    _membership_changes_and_move_leader_are_refused(cluster)
    _killing_the_leader_loses_no_acknowledged_write(cluster)


def _kv_txn_watch_lease_lock(cluster: EtcdCluster) -> None:
    # put / get / range / delete
    assert ok(cluster, "put", "/a/1", "one") == "OK\n"
    assert ok(cluster, "put", "/a/2", "two") == "OK\n"
    assert ok(cluster, "put", "/b", "bee") == "OK\n"
    assert ok(cluster, "get", "/a/1") == "/a/1\none\n"
    assert ok(cluster, "get", "/a/", "--prefix") == "/a/1\none\n/a/2\ntwo\n"
    assert ok(cluster, "del", "/a/1") == "1\n"
    assert ok(cluster, "get", "/a/", "--prefix", "--keys-only").split() == ["/a/2"]
    # compare-and-swap: the second one finds the value changed
    cas = 'value("/b") = "bee"\n\nput /b bee2\n\nget /b\n\n'
    assert ok(cluster, "txn", stdin=cas) == "SUCCESS\n\nOK\n"
    assert ok(cluster, "txn", stdin=cas) == "FAILURE\n\n/b\nbee2\n"
    # a watch from a past revision sees what happened since, in order
    header = json.loads(ok(cluster, "get", "/b", "-w", "json"))["header"]
    first = json.loads(ok(cluster, "put", "/w/x", "1", "-w", "json"))["header"]["revision"]
    ok(cluster, "put", "/w/y", "2")
    ok(cluster, "del", "/w/x")
    assert first == header["revision"] + 1
    events = run(lambda: _watch_events(cluster, b"/w/", first, count=3))
    assert events == [("PUT", b"/w/x", first), ("PUT", b"/w/y", first + 1),
                      ("DELETE", b"/w/x", first + 2)]  # fmt: skip
    # a lease: granted, kept alive, then left to expire with its key
    granted = ok(cluster, "lease", "grant", "2")
    match = re.match(r"lease ([0-9a-f]+) granted with TTL\((\d+)s\)", granted)
    assert match, granted
    lease = match.group(1)
    ok(cluster, "put", "--lease", lease, "/leased", "v")
    kept = ok(cluster, "lease", "keep-alive", "--once", lease)
    assert kept.startswith(f"lease {lease} keepalived with TTL("), kept
    run(lambda: _until_gone(cluster, b"/leased"))
    assert "already expired" in ok(cluster, "lease", "timetolive", lease)
    # a lock: the command runs holding it (its key, with a lease, exists), then it is freed
    holding = [ETCDCTL_BIN, "get", "--prefix", "/locks/L", "--keys-only"]
    held = ok(cluster, "lock", "/locks/L", "--", *holding)
    assert held.split()[0].startswith("/locks/L/"), held
    assert ok(cluster, "get", "--prefix", "/locks/L") == ""


async def _watch_events(
    cluster: EtcdCluster, prefix: bytes, start: int, count: int
) -> list[tuple[str, bytes, int]]:
    client = AsyncEtcdClient(cluster.endpoints[::-1])
    try:
        seen: list[tuple[str, bytes, int]] = []
        async with client.watch(prefix, prefix=True, start_revision=start) as watch:
            async for event in watch:
                seen.append((event.type, event.kv.key, event.revision))
                if len(seen) == count:
                    break
        return seen
    finally:
        await client.close()


async def _until_gone(cluster: EtcdCluster, key: bytes) -> None:
    """Until ``key`` is deleted (by the leader's lease expiry through the log)."""
    client = AsyncEtcdClient(cluster.endpoints)
    try:
        while await retrying(lambda: client.get(key)) is not None:
            await asyncio.sleep(0.2)
    finally:
        await client.close()


def _membership_changes_and_move_leader_are_refused(cluster: EtcdCluster) -> None:
    members = json.loads(ok(cluster, "member", "list", "-w", "json"))["members"]
    assert len(members) == 3
    add = ctl(cluster, "member", "add", "n4", "--peer-urls=http://127.0.0.1:1")
    assert add.returncode != 0
    assert "Unimplemented" in add.stderr and "MemberAdd is not supported" in add.stderr
    remove = ctl(cluster, "member", "remove", f"{members[0]['ID']:x}")
    assert remove.returncode != 0 and "MemberRemove is not supported" in remove.stderr
    leader = cluster.leader()
    other = next(n for n in cluster.node_ids if n != leader)
    move = ctl(cluster, "move-leader", f"{cluster._member_id(other):x}")
    assert move.returncode != 0
    assert "Unimplemented" in move.stderr and "MoveLeader" in move.stderr
    status = json.loads(ok(cluster, "endpoint", "status", "-w", "json"))
    leaders = {s["Status"]["leader"] for s in status}
    assert leaders == {cluster._member_id(leader)}
    assert cluster.leader() == leader  # nothing moved


# -- a leader killed ------------------------------------------------------------------------


def _killing_the_leader_loses_no_acknowledged_write(cluster: EtcdCluster) -> None:
    leader = cluster.leader()
    survivors = [n for n in cluster.node_ids if n != leader]
    acked: dict[bytes, bytes] = {}

    async def write_through_the_kill() -> None:
        client = AsyncEtcdClient([cluster.endpoint(n) for n in survivors])
        try:
            for i in range(30):
                if i == 10:
                    cluster.kill(leader)
                key, value = f"/k/{i:02}".encode(), f"v{i}".encode()
                await retrying(lambda key=key, value=value: client.put(key, value))
                acked[key] = value
            for node in survivors:
                one = AsyncEtcdClient([cluster.endpoint(node)])
                try:
                    got = await retrying(lambda one=one: one.range(b"/k/", prefix=True))
                finally:
                    await one.close()
                assert {kv.key: kv.value for kv in got.kvs} == acked, f"node {node}"
        finally:
            await client.close()

    run(write_through_the_kill)
    assert len(acked) == 30
    assert cluster.leader() in survivors
    cluster.restart(leader)

    async def caught_up() -> None:
        client = AsyncEtcdClient([cluster.endpoint(leader)])
        try:
            while True:
                got = await retrying(lambda: client.range(b"/k/", prefix=True, serializable=True))
                if len(got.kvs) == len(acked):
                    break
                await asyncio.sleep(0.1)
            assert {kv.key: kv.value for kv in got.kvs} == acked
        finally:
            await client.close()

    run(caught_up)

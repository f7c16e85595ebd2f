"""The ``member`` nemesis: on pnyx and on real etcd, 3 nodes in namespaces, a member that
does not lead is removed (the cluster still serves linearizable writes), then added back
as a new member (etcd: a new member id; pnyx: the same, its node id's) that serves and
reads what was written while it was out; kill, pause and the leader lookup work on it.
Then ``register`` runs under the nemesis on each system end ``valid`` with the cluster
whole.  Refusals are recorded, never raised (a refusing adapter without processes)."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable
from pathlib import Path

import grpc  # type: ignore[import-untyped]
import pytest
from aetcd.rpc import rpc_pb2, rpc_pb2_grpc  # type: ignore[import-untyped]

from pnyx.harness.api import Host, NemesisUnavailable
from pnyx.harness.membership import Member, MemberChangeRefused, MemberNemesis
from pnyx.harness.nemeses import make_nemesis
from pnyx.harness.net import LoopbackNet, NamespaceNet, leftovers, new_run_id
from pnyx.harness.run import run_test
from pnyx.harness.systems import EtcdSystem, PnyxSystem, ProcessSystem
from pnyx.harness.workloads import make_workload
from tests.harness.conftest import pids_gone, require_namespaces, wait_for

Factory = Callable[[str], tuple[NamespaceNet, ProcessSystem]]
SYSTEMS = ["pnyx", "etcd"]
WAIT_S = 60.0
"""Bound on every wait (generous: a busy 2-core machine)."""
CALL_S = 5.0




def put(endpoint: str, key: bytes, value: bytes) -> bool:
    """One Put through ``endpoint``; False when refused or unanswered."""
    try:
        with grpc.insecure_channel(endpoint) as channel:
            rpc_pb2_grpc.KVStub(channel).Put(
                rpc_pb2.PutRequest(key=key, value=value), timeout=CALL_S
            )
    except grpc.RpcError:
        return False
    return True


def get(endpoint: str, key: bytes) -> bytes | None:
    """A linearizable Range of ``key`` through ``endpoint``: its value, or None."""
    try:
        with grpc.insecure_channel(endpoint) as channel:
            reply = rpc_pb2_grpc.KVStub(channel).Range(
                rpc_pb2.RangeRequest(key=key), timeout=CALL_S
            )
    except grpc.RpcError:
        return None
    return bytes(reply.kvs[0].value) if reply.kvs else None


def ids_by_url(system: ProcessSystem) -> dict[str, int]:
    return {m.peer_urls[0]: m.member_id for m in system.members()}


def three_members(system: ProcessSystem) -> dict[str, int] | None:
    ids = ids_by_url(system)
    return ids if len(ids) == 3 else None


def status_ids(system: ProcessSystem) -> dict[str, int] | None:
    """Host name -> member id in each node's own Status, once all three answer."""
    statuses = system.statuses()
    return {s.host.name: s.member_id for s in statuses} if len(statuses) == 3 else None


def removed_one(nemesis: MemberNemesis) -> str | None:
    """The nemesis's start description when it removed a member (else None: retried)."""
    what = nemesis.start()
    return what if what.startswith("removed ") else None


# -- runs under the nemesis (first: they stop their own clusters) -----------------------------


class _MembersAtStop(ProcessSystem):
    """Lists the members when the run stops the system (after the heal)."""

    members_at_stop: list[Member] | None = None

    def stop(self) -> None:
        if self.members_at_stop is None:
            with contextlib.suppress(MemberChangeRefused):
                self.members_at_stop = self.members()
        super().stop()


class PnyxAtStop(_MembersAtStop, PnyxSystem):
    pass


class EtcdAtStop(_MembersAtStop, EtcdSystem):
    pass


@pytest.mark.root
@pytest.mark.parametrize("kind", SYSTEMS)
def test_register_under_member_changes_is_valid(tmp_path: Path, kind: str) -> None:
    require_namespaces()
    run_id = "m" + new_run_id()[:7]
    net = NamespaceNet(3, run_id)
    system: _MembersAtStop = PnyxAtStop() if kind == "pnyx" else EtcdAtStop()
    try:
        faults = [make_nemesis("member", net, system, 3)]
        # 14 s: the first removal comes at 2 s and is undone from 6 s; later ones add little
        result = run_test(system, net, make_workload("register", seed=3), faults, 14.0, 40,
                          4, 3, tmp_path / "run", nemesis_interval_s=2.0,
                          nemesis_duration_s=4.0, quiesce_s=1.0)  # fmt: skip
    finally:
        net.close()
    summary = (result.error, [c.summary for c in result.checks], result.intervals)
    assert result.verdict == "valid", summary
    assert result.cleanup_errors == []
    removals = [i for i in result.intervals if i.start.startswith("removed ")]
    assert removals, result.intervals
    for interval in removals:
        host = interval.start.split()[1]
        assert interval.stop.startswith(f"added {host} back as member id "), interval
        assert "serving" in interval.stop, interval
    assert system.members_at_stop is not None
    assert sorted(m.peer_urls[0] for m in system.members_at_stop) == sorted(
        system.peer_url(h) for h in net.hosts
    )
    assert not any(m.learner for m in system.members_at_stop)
    assert leftovers(run_id) == []
    assert not any(system.running(h) for h in net.hosts)


# -- one removal and re-add, step by step -----------------------------------------------------


@pytest.mark.root
@pytest.mark.parametrize("kind", SYSTEMS)
def test_a_member_is_removed_and_added_back(kind: str, cluster_factory: Factory) -> None:
    net, system = cluster_factory(kind)
    wait_for("a leader", system.leader)
    nemesis = make_nemesis("member", net, system, 7)
    assert isinstance(nemesis, MemberNemesis)
    before = ids_by_url(system)
    what = wait_for("a member removed", lambda: removed_one(nemesis))
    (host,) = nemesis.out
    url = system.peer_url(host)
    assert what == f"removed {host.name} (member id {before[url]:x})"
    assert system.removed == {host.name}
    assert not system.running(host) and not system.data_dir(host).exists()
    wait_for("the member unlisted", lambda: url not in ids_by_url(system))
    others = [system.endpoint(h) for h in net.hosts if h != host]
    key = f"pnyx-test/member/{kind}".encode()
    wait_for("a write while it is out", lambda: put(others[0], key, b"while-out"))
    assert get(others[1], key) == b"while-out"
    assert nemesis.start().startswith("nothing removed: 1 of 3 members out already")

    done = nemesis.stop()
    assert done.startswith(f"added {host.name} back as member id "), done
    assert "serving" in done, done
    after = wait_for("three members", lambda: three_members(system))
    assert set(after) == set(before)
    if kind == "etcd":
        assert after[url] != before[url]  # etcd: a new member
    else:
        assert after[url] == before[url]  # pnyx: the member id is the node id's
    assert f"member id {after[url]:x}" in done
    assert system.removed == set() and nemesis.out == []
    assert system.serving(host)
    assert get(system.endpoint(host), key) == b"while-out"  # linearizable, through it
    check_the_readded_node(net, system, host, after[url])
    assert nemesis.stop() == "nothing to add back"
    # the heal's restart of a removed node (start_node) adds it back
    assert wait_for("another removal", lambda: removed_one(nemesis)).startswith("removed ")
    (again,) = nemesis.out
    system.start_node(again)
    assert system.removed == set() and system.serving(again)
    assert len(wait_for("three members", lambda: three_members(system))) == 3


def check_the_readded_node(net: NamespaceNet, system: ProcessSystem, host: Host,
                           member_id: int) -> None:  # fmt: skip
    """The id -> host mapping (leader lookup), kill/restart and pause/resume on ``host``."""
    ids = wait_for("every node's status", lambda: status_ids(system))
    assert ids[host.name] == member_id
    assert wait_for("a leader", system.leader) in net.hosts
    pid = system.pids()[host.name]
    system.kill(host)
    assert pids_gone([pid])
    system.start_node(host)
    system.wait_serving((host,), WAIT_S)
    system.pause(host)
    assert system.paused(host)
    system.resume(host)
    system.wait_serving((host,), WAIT_S)
    assert len(system.members()) == 3


@pytest.mark.root
def test_no_removal_without_a_running_majority(cluster_factory: Factory) -> None:
    net, system = cluster_factory("pnyx")
    nemesis = make_nemesis("member", net, system, 1)
    victim = net.hosts[0]
    system.kill(victim)
    try:
        what = nemesis.start()
    finally:
        system.start_node(victim)
    assert what == "nothing removed: only n2 n3 run: removing one would leave no majority running"
    assert system.removed == set() and nemesis.stop() == "nothing to add back"
    system.wait_serving(net.hosts, WAIT_S)


# -- refusals, without processes ---------------------------------------------------------------


class RefusingSystem(ProcessSystem):
    """Three loopback hosts "running", n1 leading; the cluster refuses ``refusals`` changes."""

    def __init__(self, refusals: int) -> None:
        super().__init__()
        self.hosts = LoopbackNet(3).hosts
        self.refusals = refusals

    def running(self, host: Host) -> bool:
        return True

    def leader(self) -> Host | None:
        return self.hosts[0]

    def _refuse(self) -> None:
        if self.refusals > 0:
            self.refusals -= 1
            raise MemberChangeRefused(
                "MemberRemove on n1: UNAVAILABLE: etcdserver: unhealthy cluster"
            )

    def remove_member(self, host: Host) -> str:
        self._refuse()
        self.removed.add(host.name)
        return f"removed {host.name}"

    def add_member(self, host: Host, join_timeout_s: float = 0.0) -> str:
        self._refuse()
        self.removed.discard(host.name)
        return f"added {host.name} back"


def test_a_refused_change_is_recorded_not_raised() -> None:
    net = LoopbackNet(3)
    system = RefusingSystem(refusals=1)
    nemesis = MemberNemesis(net, system, random.Random(0))
    what = nemesis.start()
    assert what.startswith("nothing removed: n") and "unhealthy cluster" in what, what
    assert nemesis.stop() == "nothing to add back"
    what = nemesis.start()
    assert what in ("removed n2", "removed n3")  # never the leader, n1
    host = what.split()[1]
    system.refusals = 1
    assert nemesis.stop().startswith(f"could not add {host} back: ")
    assert system.removed == {host} and [h.name for h in nemesis.out] == [host]
    assert nemesis.start().startswith("nothing removed: 1 of 3 members out already")
    assert nemesis.stop() == f"added {host} back"
    assert system.removed == set() and nemesis.out == []


def test_no_leader_no_removal() -> None:
    class Leaderless(RefusingSystem):
        def leader(self) -> Host | None:
            return None

    nemesis = MemberNemesis(LoopbackNet(3), Leaderless(refusals=0), random.Random(0))
    assert nemesis.start() == "nothing removed: no leader known"


def test_a_system_without_membership_changes_is_unavailable() -> None:
    class Plain:
        name = "plain"

    with pytest.raises(NemesisUnavailable, match="remove_member"):
        MemberNemesis(LoopbackNet(3), Plain(), random.Random(0))  # type: ignore[arg-type]

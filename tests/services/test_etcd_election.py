"""etcd elections on a 3-node pnyx etcd cluster (real processes), side by side with real
etcd 3.4: stock ``etcdctl elect NAME proposal`` / ``etcdctl elect -l NAME``, and the
``v3electionpb.Election`` gRPC service (Campaign, Leader, Proclaim, Resign, Observe)
compared field by field with etcd's, including the waits' deadline and lease bounds; and
a waiting Lock and an Observe stream on followers across a pnyx leader kill."""

from __future__ import annotations

import signal
import threading
import time
from typing import Any

import grpc
import pytest

from pnyx.services.etcd.proto import v3election_pb2
from tests.services.lock_helpers import (  # noqa: F401 (fixture)
    CALL_S,
    InBackground,
    Labels,
    Proc,
    Target,
    deadline_passed,
    etcdctl,
    etcdctl_env,
    on_both,
    processes,
    rpc_error,
    targets,
    wait_for,
)

NAMES = ("pnyx", "etcd")


@pytest.mark.parametrize("name", NAMES)
def test_etcdctl_elect_and_listen(
    targets: dict[str, Target],  # noqa: F811
    name: str,
) -> None:
    """Two ``etcdctl elect`` campaigners and an ``etcdctl elect -l`` observer: the first
    wins, the second waits; when the first is interrupted (it resigns), the second leads
    and the observer prints each leader's key and proposal in turn."""
    target = targets[name]
    env = etcdctl_env()
    with processes() as started:
        first = Proc(etcdctl(target, "elect", "ctl", "alpha"), env)
        started.append(first)
        key_a, value_a = first.take(2)  # printed once elected
        listener = Proc(etcdctl(target, "elect", "-l", "ctl"), env)
        started.append(listener)
        assert listener.take(2) == [key_a, "alpha"]
        second = Proc(etcdctl(target, "elect", "ctl", "beta"), env)
        started.append(second)
        wait_for("the second candidate", lambda: len(target.keys(b"ctl/")) == 2)
        assert second.lines.empty()  # still waiting
        first.signal(signal.SIGINT)  # etcdctl resigns on an interrupt
        assert first.wait() == 0
        key_b, value_b = second.take(2)
        assert listener.take(2) == [key_b, "beta"]
        second.signal(signal.SIGINT)
        assert second.wait() == 0
    assert (value_a, value_b) == ("alpha", "beta")
    assert key_a.startswith("ctl/") and key_b.startswith("ctl/") and key_a != key_b
    wait_for("no candidates left", lambda: target.keys(b"ctl/") == [])


class Observer:
    """An Observe stream read by a thread; ``seen`` grows with each LeaderResponse."""

    def __init__(self, election: Any, name: bytes) -> None:
        self.call = election.Observe(v3election_pb2.LeaderRequest(name=name), timeout=120)
        self.seen: list[Any] = []
        self.ended: Any = None
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for response in self.call:
                self.seen.append(response)
        except grpc.RpcError as exc:
            self.ended = exc.code().name

    def wait(self, count: int) -> None:
        wait_for(f"{count} observed leader values", lambda: len(self.seen) >= count)

    def stop(self) -> None:
        self.call.cancel()
        self.thread.join(10)


def election_scenario(target: Target) -> list[Any]:
    """The Election service end to end; what a client observes, normalised."""
    election = target.election(1)
    labels = Labels(target.revision())
    out: list[Any] = []

    def leader_key(leader: Any) -> tuple[str, str, int, str]:
        return (
            leader.name.decode(),
            labels.key(leader.key),
            labels.rev(leader.rev),
            labels.lease(leader.lease),
        )

    def keys() -> list[dict[str, Any]]:
        return [labels.kv(kv) for kv in target.keys(b"el/")]

    def observed(observer: Observer) -> list[Any]:
        return [(labels.rev(r.header.revision), labels.kv(r.kv)) for r in observer.seen]

    l1, l2 = target.grant(30), target.grant(30)
    labels.lease(l1), labels.lease(l2)
    name = b"el"
    leader_of = v3election_pb2.LeaderRequest(name=name)
    out.append(("no leader", rpc_error(lambda: election.Leader(leader_of, timeout=CALL_S))))
    c1 = election.Campaign(
        v3election_pb2.CampaignRequest(name=name, lease=l1, value=b"v1"), timeout=CALL_S
    )
    out.append(("campaign", labels.rev(c1.header.revision), leader_key(c1.leader)))
    again = election.Campaign(
        v3election_pb2.CampaignRequest(name=name, lease=l1, value=b"v1b"), timeout=CALL_S
    )
    out.append(
        ("campaign again, new value", labels.rev(again.header.revision), leader_key(again.leader))
    )
    got = election.Leader(leader_of, timeout=CALL_S)
    out.append(("leader", labels.rev(got.header.revision), labels.kv(got.kv)))
    proclaimed = election.Proclaim(
        v3election_pb2.ProclaimRequest(leader=c1.leader, value=b"v2"), timeout=CALL_S
    )
    out.append(("proclaim", labels.rev(proclaimed.header.revision)))
    stale = v3election_pb2.LeaderKey()
    stale.CopyFrom(c1.leader)
    stale.rev = 1
    bad = v3election_pb2.ProclaimRequest(leader=stale, value=b"no")
    out.append(("proclaim, not leader", rpc_error(lambda: election.Proclaim(bad, timeout=CALL_S))))
    no_key = v3election_pb2.ProclaimRequest(value=b"no")
    out.append(("proclaim, no key", rpc_error(lambda: election.Proclaim(no_key, timeout=CALL_S))))
    out.append(
        ("resign, no key", rpc_error(lambda: election.Resign(v3election_pb2.ResignRequest())))
    )
    resigned = election.Resign(v3election_pb2.ResignRequest(leader=stale), timeout=CALL_S)
    out.append(("resign, not leader", labels.rev(resigned.header.revision)))
    unknown = v3election_pb2.CampaignRequest(name=name, lease=0x5EED, value=b"x")
    out.append(("unknown lease", rpc_error(lambda: election.Campaign(unknown, timeout=CALL_S))))
    late = v3election_pb2.CampaignRequest(name=name, lease=l2, value=b"late")
    out.append(
        ("deadline", deadline_passed(rpc_error(lambda: election.Campaign(late, timeout=2.0))))
    )
    wait_for("the abandoned candidate to go", lambda: len(target.keys(b"el/")) == 1)
    out.append(("keys", keys()))

    observer = Observer(target.election(2), name)
    try:
        observer.wait(1)
        election.Proclaim(
            v3election_pb2.ProclaimRequest(leader=c1.leader, value=b"v3"), timeout=CALL_S
        )
        observer.wait(2)
        waiting = InBackground(
            lambda: election.Campaign(
                v3election_pb2.CampaignRequest(name=name, lease=l2, value=b"w"), timeout=CALL_S
            )
        )
        wait_for("the second candidate", lambda: len(target.keys(b"el/")) == 2)
        out.append(("keys with a waiting candidate", keys()))
        resigned = election.Resign(v3election_pb2.ResignRequest(leader=c1.leader), timeout=CALL_S)
        out.append(("resign", labels.rev(resigned.header.revision)))
        c2 = waiting.result()
        out.append(("second leader", labels.rev(c2.header.revision), leader_key(c2.leader)))
        observer.wait(3)
        election.Resign(v3election_pb2.ResignRequest(leader=c2.leader), timeout=CALL_S)
        c3 = election.Campaign(
            v3election_pb2.CampaignRequest(name=name, lease=l1, value=b"x"), timeout=CALL_S
        )
        out.append(("third leader", labels.rev(c3.header.revision), leader_key(c3.leader)))
        observer.wait(4)
        election.Resign(v3election_pb2.ResignRequest(leader=c3.leader), timeout=CALL_S)
    finally:
        observer.stop()
    out.append(("observed", observed(observer)))
    out.append(("observer ended", observer.ended))
    return out


def test_election_service_answers_as_etcd(targets: dict[str, Target]) -> None:  # noqa: F811
    seen = on_both(targets, election_scenario)
    for pnyx, etcd in zip(seen["pnyx"], seen["etcd"], strict=True):
        assert pnyx == etcd, f"{pnyx[0]}: pnyx {pnyx[1:]} != etcd {etcd[1:]}"
    observed = dict((x[0], x[1]) for x in seen["pnyx"] if len(x) == 2)["observed"]
    assert [kv["value"] for _, kv in observed] == ["v2", "v3", "w", "x"]


def test_campaign_wait_ends_with_the_lease(targets: dict[str, Target]) -> None:  # noqa: F811
    """A Campaign waiting behind a leader whose own lease expires: pnyx answers
    'election: not leader' as soon as the lease is gone; etcd 3.4 goes on waiting and,
    once the leader resigns, answers with a key that no longer exists."""

    def one(target: Target) -> Any:
        election = target.election(2)
        held = election.Campaign(
            v3election_pb2.CampaignRequest(name=b"ttl-el", lease=target.grant(30), value=b"a"),
            timeout=CALL_S,
        )
        request = v3election_pb2.CampaignRequest(name=b"ttl-el", lease=target.grant(2), value=b"b")

        def attempt() -> Any:
            try:
                return ("elected", election.Campaign(request, timeout=40).leader.key)
            except grpc.RpcError as exc:
                return (exc.code().name, exc.details())

        started = time.monotonic()
        waiter = InBackground(attempt)
        resign = v3election_pb2.ResignRequest(leader=held.leader)
        if target.name == "pnyx":
            outcome = waiter.result(timeout_s=45)
            assert time.monotonic() - started < 20.0
            election.Resign(resign, timeout=CALL_S)
        else:
            wait_for("the waiting key", lambda: len(target.keys(b"ttl-el/")) == 2)
            wait_for("the short lease to expire", lambda: len(target.keys(b"ttl-el/")) == 1)
            election.Resign(resign, timeout=CALL_S)
            elected, key = waiter.result(timeout_s=45)
            outcome = (elected, key.startswith(b"ttl-el/"), target.keys(b"ttl-el/"))
        assert target.keys(b"ttl-el/") == []
        return outcome

    assert on_both(targets, one) == {
        "pnyx": ("UNKNOWN", "election: not leader"),
        "etcd": ("elected", True, []),
    }


def test_observe_ends_when_the_caller_cancels(targets: dict[str, Target]) -> None:  # noqa: F811
    """An Observe stream with no leader waits; its deadline ends it (bounded) and the
    member goes on serving."""

    def one(target: Target) -> tuple[str, str]:
        election = target.election(0)
        call = election.Observe(v3election_pb2.LeaderRequest(name=b"nobody"), timeout=1.5)
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as caught:
            list(call)
        assert time.monotonic() - started < 10.0
        no_leader = rpc_error(lambda: election.Leader(v3election_pb2.LeaderRequest(name=b"nobody")))
        assert no_leader == ("UNKNOWN", "election: no leader")
        return caught.value.code().name, caught.value.details()

    ended = on_both(targets, one)
    assert ended["pnyx"][0] == "DEADLINE_EXCEEDED"
    # etcd's server may end the stream first, with its context's error
    assert deadline_passed(ended["etcd"])


def test_waits_survive_a_leader_kill(targets: dict[str, Target]) -> None:  # noqa: F811
    """pnyx only: a Lock waiting on one follower and an Observe stream on the other go on
    across the leader's SIGKILL: the waiter gets the lock when the holder unlocks after
    the failover, and the observer sees the value proclaimed after it.  The killed node
    is restarted afterwards."""
    from pnyx.services.etcd.proto import v3lock_pb2

    target = targets["pnyx"]
    cluster = target.cluster
    leader = cluster.leader()
    first, second = (cluster.node_ids.index(i) for i in cluster.node_ids if i != leader)
    lock, waiting_lock = target.lock(first), target.lock(second)
    election = target.election(first)
    holder = lock.Lock(v3lock_pb2.LockRequest(name=b"fo", lease=target.grant(60)), timeout=CALL_S)
    campaign = v3election_pb2.CampaignRequest(name=b"fo-el", lease=target.grant(60), value=b"one")
    elected = election.Campaign(campaign, timeout=CALL_S)
    observer = Observer(target.election(second), b"fo-el")
    try:
        observer.wait(1)
        request = v3lock_pb2.LockRequest(name=b"fo", lease=target.grant(60))
        waiter = InBackground(lambda: waiting_lock.Lock(request, timeout=60))
        wait_for("the waiting key", lambda: len(target.keys(b"fo/")) == 2)
        cluster.kill(leader)
        try:
            cluster.leader(timeout_s=30)
            proclaim = v3election_pb2.ProclaimRequest(leader=elected.leader, value=b"two")
            election.Proclaim(proclaim, timeout=CALL_S)
            lock.Unlock(v3lock_pb2.UnlockRequest(key=holder.key), timeout=CALL_S)
            got = waiter.result(timeout_s=60)
            observer.wait(2)
        finally:
            cluster.restart(leader)
    finally:
        observer.stop()
    assert got.key == request.name + b"/" + format(request.lease, "x").encode()
    assert [r.kv.value for r in observer.seen] == [b"one", b"two"]
    waiting_lock.Unlock(v3lock_pb2.UnlockRequest(key=got.key), timeout=CALL_S)
    election.Resign(v3election_pb2.ResignRequest(leader=elected.leader), timeout=CALL_S)

"""etcd locks on a 3-node pnyx etcd cluster (real processes), side by side with real etcd
3.4: stock ``etcdctl lock`` (mutual exclusion of the commands it runs, release when the
holder is killed), the ``v3lockpb.Lock`` gRPC service (Lock/Unlock compared field by field
with etcd's), waits bounded by the caller's deadline and lease, the caller's permissions
checked with auth enabled (locks and elections), and the fencing-token example
``examples/fencing_token.py`` end to end."""

from __future__ import annotations

import itertools
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from aetcd.rpc import auth_pb2, rpc_pb2, rpc_pb2_grpc

from pnyx.services.etcd.lock_service import prefix_end
from pnyx.services.etcd.proto import v3lock_pb2
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

ROOT = Path(__file__).resolve().parents[2]
NAMES = ("pnyx", "etcd")


def _interval_command(path: Path) -> list[str]:
    """A command that records, in ``path``, its lock token and when it ran (ns)."""
    script = (
        'echo "$ETCD_LOCK_KEY $ETCD_LOCK_REV $(date +%s%N)" > "$1"; sleep 0.3; date +%s%N >> "$1"'
    )
    return ["sh", "-c", script, "sh", str(path)]


@pytest.mark.parametrize("name", NAMES)
def test_etcdctl_lock_runs_commands_one_at_a_time(
    targets: dict[str, Target],  # noqa: F811
    name: str,
    tmp_path: Path,
) -> None:
    target = targets[name]
    with processes() as started:
        files = [tmp_path / f"run-{i}" for i in range(3)]
        for path in files:
            started.append(
                Proc(etcdctl(target, "lock", "excl", "--", *_interval_command(path)), etcdctl_env())
            )
        for proc in started:
            assert proc.wait() == 0, (proc.stderr, name)
    runs = []
    for path in files:
        first, end = path.read_text().splitlines()
        key, token, start = first.split()
        runs.append((int(start), int(end), key, int(token)))
    runs.sort()
    for (_, end, _, token), (start, _, _, next_token) in itertools.pairwise(runs):
        assert end <= start, f"{name}: overlapping critical sections {runs}"
        assert next_token > token, f"{name}: fencing tokens not increasing {runs}"
    assert len({key for _, _, key, _ in runs}) == 3  # one session (lease) each
    assert all(key.startswith("excl/") for _, _, key, _ in runs)


@pytest.mark.parametrize("name", NAMES)
def test_lock_released_when_its_holder_is_killed(
    targets: dict[str, Target],  # noqa: F811
    name: str,
) -> None:
    target = targets[name]
    with processes() as started:
        holder = Proc(etcdctl(target, "lock", "--ttl=2", "killed"), etcdctl_env())
        started.append(holder)
        (key,) = holder.take(1)  # etcdctl prints the lock key once it holds it
        assert key.startswith("killed/")
        waiter = Proc(
            etcdctl(target, "lock", "killed", "--", "sh", "-c", "echo acquired $ETCD_LOCK_REV"),
            etcdctl_env(),
        )
        started.append(waiter)
        wait_for("the waiter's key", lambda: len(target.keys(b"killed/")) == 2)
        killed_at = time.monotonic()
        holder.signal(signal.SIGKILL)  # no unlock: only the lease's expiry frees the lock
        (line,) = waiter.take(1)
        waited = time.monotonic() - killed_at
        assert line.startswith("acquired ")
        assert waiter.wait() == 0
    assert waited < 20.0, f"{name}: the lock came free {waited:.1f} s after the kill"
    assert target.keys(b"killed/") == []


def lock_scenario(target: Target) -> list[Any]:
    """Lock and Unlock through the gRPC service; what a client observes, normalised."""
    lock, lease = target.lock(1), target.lease()
    labels = Labels(target.revision())
    out: list[Any] = []

    def keys(prefix: bytes) -> list[dict[str, Any]]:
        return [labels.kv(kv) for kv in target.keys(prefix)]

    def locked(r: Any) -> tuple[int, str]:
        return labels.rev(r.header.revision), labels.key(r.key)

    l1, l2 = target.grant(30), target.grant(30)
    labels.lease(l1), labels.lease(l2)
    first = lock.Lock(v3lock_pb2.LockRequest(name=b"sc", lease=l1), timeout=CALL_S)
    out.append(("lock", locked(first)))
    again = lock.Lock(v3lock_pb2.LockRequest(name=b"sc", lease=l1), timeout=CALL_S)
    out.append(("lock with the same lease", locked(again)))
    out.append(("keys", keys(b"sc/")))
    bad = v3lock_pb2.LockRequest(name=b"sc", lease=0x5EED)
    out.append(("unknown lease", rpc_error(lambda: lock.Lock(bad, timeout=CALL_S))))
    # a caller whose deadline passes while it waits: its key is removed again
    late = v3lock_pb2.LockRequest(name=b"sc", lease=l2)
    out.append(("deadline", deadline_passed(rpc_error(lambda: lock.Lock(late, timeout=2.0)))))
    wait_for("the abandoned key to go", lambda: len(target.keys(b"sc/")) == 1)
    out.append(("keys after the deadline", keys(b"sc/")))
    # a waiter gets the lock when the holder unlocks
    waiter = InBackground(
        lambda: lock.Lock(v3lock_pb2.LockRequest(name=b"sc", lease=l2), timeout=CALL_S)
    )
    wait_for("the waiter's key", lambda: len(target.keys(b"sc/")) == 2)
    out.append(("keys with a waiter", keys(b"sc/")))
    unlocked = lock.Unlock(v3lock_pb2.UnlockRequest(key=first.key), timeout=CALL_S)
    out.append(("unlock", labels.rev(unlocked.header.revision)))
    second = waiter.result()
    out.append(("waiter locked", locked(second)))
    out.append(("keys after unlock", keys(b"sc/")))
    for key in (second.key, second.key):  # unlocking twice is no error
        unlocked = lock.Unlock(v3lock_pb2.UnlockRequest(key=key), timeout=CALL_S)
        out.append(("unlock", labels.rev(unlocked.header.revision)))
    out.append(("unlock no key", rpc_error(lambda: lock.Unlock(v3lock_pb2.UnlockRequest()))))
    # no lease: the server grants one of etcd's default session TTL (60 s)
    own = lock.Lock(v3lock_pb2.LockRequest(name=b"sc2"), timeout=CALL_S)
    (kv,) = target.keys(b"sc2/")
    ttl = lease.LeaseTimeToLive(rpc_pb2.LeaseTimeToLiveRequest(ID=kv.lease), timeout=CALL_S)
    out.append(("no lease", locked(own), labels.kv(kv), ttl.grantedTTL))
    lock.Unlock(v3lock_pb2.UnlockRequest(key=own.key), timeout=CALL_S)
    return out


def test_lock_service_answers_as_etcd(targets: dict[str, Target]) -> None:  # noqa: F811
    seen = on_both(targets, lock_scenario)
    for pnyx, etcd in zip(seen["pnyx"], seen["etcd"], strict=True):
        assert pnyx == etcd, f"{pnyx[0]}: pnyx {pnyx[1:]} != etcd {etcd[1:]}"
    assert ("unknown lease", ("UNKNOWN", "etcdserver: requested lease not found")) in seen["pnyx"]


def test_lock_wait_ends_with_the_lease(targets: dict[str, Target]) -> None:  # noqa: F811
    """A Lock waiting behind a holder ends when its own lease expires: pnyx answers etcd
    3.5's 'mutex: session is expired' as soon as the lease is gone; etcd 3.4 goes on
    waiting and, once the holder unlocks, answers with a key that no longer exists."""

    def one(target: Target) -> Any:
        lock = target.lock(2)
        holder = lock.Lock(
            v3lock_pb2.LockRequest(name=b"ttl", lease=target.grant(30)), timeout=CALL_S
        )
        request = v3lock_pb2.LockRequest(name=b"ttl", lease=target.grant(2))

        def attempt() -> Any:
            try:
                return ("granted", lock.Lock(request, timeout=40).key)
            except grpc.RpcError as exc:
                return (exc.code().name, exc.details())

        started = time.monotonic()
        waiter = InBackground(attempt)
        if target.name == "pnyx":
            outcome = waiter.result(timeout_s=45)
            assert time.monotonic() - started < 20.0
            lock.Unlock(v3lock_pb2.UnlockRequest(key=holder.key), timeout=CALL_S)
        else:
            wait_for("the waiting key", lambda: len(target.keys(b"ttl/")) == 2)
            wait_for("the short lease to expire", lambda: len(target.keys(b"ttl/")) == 1)
            lock.Unlock(v3lock_pb2.UnlockRequest(key=holder.key), timeout=CALL_S)
            granted, key = waiter.result(timeout_s=45)
            outcome = (granted, key.startswith(b"ttl/"), target.keys(b"ttl/"))
        assert target.keys(b"ttl/") == []
        return outcome

    assert on_both(targets, one) == {
        "pnyx": ("UNKNOWN", "mutex: session is expired"),
        "etcd": ("granted", True, []),
    }


@pytest.mark.parametrize("name", NAMES)
def test_fencing_token_example(targets: dict[str, Target], name: str) -> None:  # noqa: F811
    example = ROOT / "examples" / "fencing_token.py"
    p = subprocess.run(
        [
            sys.executable,
            str(example),
            "--endpoints",
            targets[name].csv,
            "--resource",
            f"res-{name}",
        ],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert p.returncode == 0, (p.stdout, p.stderr)
    lines = p.stdout.splitlines()
    assert any(line.startswith("A writes with token") and "accepted" in line for line in lines)
    assert any(line.startswith("B writes with token") and "accepted" in line for line in lines)
    assert any(line.startswith("A writes with token") and "REFUSED" in line for line in lines)
    assert lines[-1] == "ok: the stale holder's write was refused", p.stdout


def test_grpc_deadline_status(targets: dict[str, Target]) -> None:  # noqa: F811
    """A Lock that cannot be granted before the caller's deadline ends with
    DEADLINE_EXCEEDED on both (and leaves no key behind: see the scenario)."""

    def one(target: Target) -> None:
        lock = target.lock(0)
        holder = lock.Lock(v3lock_pb2.LockRequest(name=b"dl", lease=target.grant(30)))
        request = v3lock_pb2.LockRequest(name=b"dl", lease=target.grant(30))
        started = time.monotonic()
        assert deadline_passed(rpc_error(lambda: lock.Lock(request, timeout=1.0)))
        assert time.monotonic() - started < 10.0
        wait_for("the abandoned key to go", lambda: len(target.keys(b"dl/")) == 1)
        lock.Unlock(v3lock_pb2.UnlockRequest(key=holder.key))

    on_both(targets, one)


def test_etcdctl_lock_prints_key_with_revision(targets: dict[str, Target]) -> None:  # noqa: F811
    """``etcdctl lock NAME`` without a command prints the held key; ``-w json`` gives its
    create revision (the fencing token) as etcd does."""
    import json

    tokens = {}
    for name in NAMES:
        target = targets[name]
        with processes() as started:
            proc = Proc(etcdctl(target, "lock", "-w", "json", "printed"), etcdctl_env())
            started.append(proc)
            (line,) = proc.take(1)
            data = json.loads(line)
            (kv,) = data["kvs"]
            tokens[name] = (
                kv["create_revision"] == kv["mod_revision"],
                kv["version"],
                data["count"],
            )
            proc.signal(signal.SIGINT)  # etcdctl unlocks on an interrupt
            assert proc.wait() == 0
        wait_for("the unlock", lambda t=target: t.keys(b"printed/") == [])
    assert tokens["pnyx"] == tokens["etcd"] == (True, 1, 1)


def enable_auth(auth: Any) -> None:
    """Users root (root role), bob (readwrite on ``guarded/`` and ``voted/``) and eve (no
    role); auth enabled."""
    readwrite = auth_pb2.Permission.READWRITE
    for name in ("root", "bob", "eve"):
        auth.UserAdd(rpc_pb2.AuthUserAddRequest(name=name, password=f"{name}pw"), timeout=CALL_S)
    auth.UserGrantRole(rpc_pb2.AuthUserGrantRoleRequest(user="root", role="root"), timeout=CALL_S)
    auth.RoleAdd(rpc_pb2.AuthRoleAddRequest(name="lockers"), timeout=CALL_S)
    for prefix in (b"guarded/", b"voted/"):
        permission = auth_pb2.Permission(
            permType=readwrite, key=prefix, range_end=prefix_end(prefix)
        )
        auth.RoleGrantPermission(
            rpc_pb2.AuthRoleGrantPermissionRequest(name="lockers", perm=permission), timeout=CALL_S
        )
    auth.UserGrantRole(rpc_pb2.AuthUserGrantRoleRequest(user="bob", role="lockers"), timeout=CALL_S)
    auth.AuthEnable(rpc_pb2.AuthEnableRequest(), timeout=CALL_S)


def auth_scenario(target: Target) -> list[Any]:
    """With auth enabled: a user with readwrite on the lock's prefix locks, unlocks and
    campaigns; one without gets etcd's permission error; a caller without a token too."""
    from pnyx.services.etcd.proto import v3election_pb2

    auth = rpc_pb2_grpc.AuthStub(target.connect(1))

    def token(user: str, password: str) -> Any:
        request = rpc_pb2.AuthenticateRequest(name=user, password=password)
        return (("token", auth.Authenticate(request, timeout=CALL_S).token),)

    enable_auth(auth)
    out: list[Any] = []
    try:
        bob, eve = token("bob", "bobpw"), token("eve", "evepw")
        lease = target.lease(1).LeaseGrant(
            rpc_pb2.LeaseGrantRequest(TTL=30), metadata=bob, timeout=CALL_S
        )
        lock, election = target.lock(2), target.election(2)
        guarded = v3lock_pb2.LockRequest(name=b"guarded", lease=lease.ID)
        for who, metadata in (("eve", eve), ("nobody", None)):
            out.append((who, rpc_error(lambda m=metadata: lock.Lock(guarded, metadata=m))))
        locked = lock.Lock(guarded, metadata=bob, timeout=CALL_S)
        out.append(("bob locks", locked.key.startswith(b"guarded/")))
        unlock = v3lock_pb2.UnlockRequest(key=locked.key)
        out.append(("eve unlocks", rpc_error(lambda: lock.Unlock(unlock, metadata=eve))))
        lock.Unlock(unlock, metadata=bob, timeout=CALL_S)
        campaign = v3election_pb2.CampaignRequest(name=b"voted", lease=lease.ID, value=b"b")
        out.append(("eve campaigns", rpc_error(lambda: election.Campaign(campaign, metadata=eve))))
        elected = election.Campaign(campaign, metadata=bob, timeout=CALL_S)
        leader = election.Leader(v3election_pb2.LeaderRequest(name=b"voted"), metadata=bob)
        out.append(("bob leads", leader.kv.value, elected.leader.rev == leader.kv.create_revision))
        resign = v3election_pb2.ResignRequest(leader=elected.leader)
        election.Resign(resign, metadata=bob, timeout=CALL_S)
    finally:
        auth.AuthDisable(rpc_pb2.AuthDisableRequest(), metadata=token("root", "rootpw"))
    return out


def test_lock_and_election_check_the_callers_permissions(
    targets: dict[str, Target],  # noqa: F811
) -> None:
    seen = on_both(targets, auth_scenario)
    assert seen["pnyx"] == seen["etcd"]
    assert seen["pnyx"][0] == ("eve", ("UNKNOWN", "etcdserver: permission denied"))

"""etcd auth on a 3-node pnyx cluster, side by side with real etcd 3.4 (one member).

- the stock ``etcdctl`` runs the same user / role / auth script against both (pnyx with
  all three endpoints, so its commands land on any member): stdout, the error lines and
  the exit code of every command are compared;
- a token issued by one member is accepted by the others at once; a bad token is etcd's
  *invalid auth token* on both;
- the ``aetcd`` client with user and password: allowed and denied calls give the same
  results and errors on both;
- the auth state survives a member's restart: a cluster member (WAL replay) and an
  in-process node restored from a Raft snapshot, whose files never hold a password.

Every etcdctl run and wait is bounded; the clusters are stopped by pid (fixtures).
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import aetcd
import grpc
import msgspec
import pytest
from aetcd.rpc import auth_pb2, rpc_pb2, rpc_pb2_grpc

from pnyx.protocols.etcd import EtcdStateMachine, LeaseGrantRequest, PutRequest, RangeRequest
from pnyx.protocols.etcd.auth import (
    AuthedRequest,
    AuthEnableRequest,
    AuthResponse,
    AuthRoleAddRequest,
    AuthRoleGrantPermissionRequest,
    AuthStore,
    AuthUserAddRequest,
    AuthUserGrantRoleRequest,
    AuthUserListRequest,
    Permission,
    PermType,
    SimpleTokens,
    covers,
    hash_password,
    token_seq,
    verify_password,
)
from pnyx.protocols.etcd.errors import ErrorResult
from pnyx.runtime.node_runner import RunnerConfig
from pnyx.runtime.transport import TransportConfig
from pnyx.services.etcd.server import EtcdOptions, EtcdServer
from tests.etcd.realetcd import (
    ETCDCTL_BIN,
    PnyxEtcd,
    RealEtcd,
    require_binaries,
    start_pnyx_etcd,
    start_real_etcd,
)

CTL_TIMEOUT = 60.0
RPC_TIMEOUT = 20.0

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def clusters() -> Iterator[dict[str, Any]]:
    """Real etcd and a pnyx cluster after :data:`SCRIPT` ran on both with the same
    results, so each test below also runs alone (``pytest file::test``)."""
    require_binaries()
    real = start_real_etcd(1)
    try:
        pnyx = start_pnyx_etcd(3)
        try:
            both_clusters = {"etcd": real, "pnyx": pnyx}
            for args, stdin, one in SCRIPT:
                both(both_clusters, *args, stdin=stdin, one=one)
            yield both_clusters
        finally:
            pnyx.stop()
    finally:
        real.stop()


def etcdctl(cluster: RealEtcd | PnyxEtcd, *args: str, stdin: str | None = None,
            endpoints: str | None = None) -> tuple[int, str, str]:  # fmt: skip
    """(exit code, stdout, stderr without the client's JSON retry logs), endpoints
    normalised to ``EP``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
    env["ETCDCTL_API"] = "3"
    p = subprocess.run(
        [
            ETCDCTL_BIN,
            f"--endpoints={endpoints or cluster.urls}",
            "--dial-timeout=10s",
            "--command-timeout=30s",
            *args,
        ],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=CTL_TIMEOUT,
    )
    err = "\n".join(ln for ln in p.stderr.splitlines() if not ln.startswith('{"level"'))
    norm = re.compile(r"(http://)?127\.0\.0\.1:\d+")
    return p.returncode, norm.sub("EP", p.stdout), norm.sub("EP", err)


def both(clusters: dict[str, Any], *args: str, stdin: str | None = None,
         one: bool = False) -> tuple[int, str, str]:  # fmt: skip
    """Run one etcdctl command on real etcd and on pnyx (all endpoints, or the first with
    ``one``); assert the same result; return it."""
    pnyx: PnyxEtcd = clusters["pnyx"]
    with ThreadPoolExecutor(2) as pool:  # both at once: half the wall time
        on_etcd = pool.submit(etcdctl, clusters["etcd"], *args, stdin=stdin)
        on_pnyx = pool.submit(
            etcdctl, pnyx, *args, stdin=stdin, endpoints=pnyx.endpoint if one else None
        )
        results = {"etcd": on_etcd.result(), "pnyx": on_pnyx.result()}
    assert results["pnyx"] == results["etcd"], f"etcdctl {' '.join(args)}: {results}"
    return results["etcd"]


ALICE = ("--user", "alice:apw")
ROOT = ("--user", "root:pw")

SCRIPT: list[tuple[tuple[str, ...], str | None, bool]] = [
    # setup while auth is off (a --user is ignored then)
    ((*ALICE, "get", "/b"), None, False),
    (("role", "add", "r"), None, False),
    (("role", "add", "r"), None, False),
    (("role", "add", ""), None, False),
    (("user", "add", "alice:apw"), None, False),
    (("user", "add", "alice:x"), None, False),
    (("user", "add", "cn", "--no-password"), None, False),
    (("role", "add", "all"), None, False),
    (("role", "grant-permission", "all", "read", "/k", "--from-key"), None, False),
    (("role", "grant-permission", "all", "write", "", "--prefix"), None, False),
    (("user", "grant-role", "cn", "all"), None, False),
    (("role", "grant-permission", "r", "readwrite", "/a/", "--prefix"), None, False),
    (("role", "grant-permission", "r", "read", "/b"), None, False),
    (("role", "grant-permission", "r", "write", "/c", "/e"), None, False),
    (("role", "grant-permission", "nope", "read", "/x"), None, False),
    (("user", "grant-role", "alice", "r"), None, False),
    (("user", "grant-role", "alice", "nope"), None, False),
    (("user", "grant-role", "bob", "r"), None, False),
    (("user", "grant-role", "alice", "root"), None, False),
    (("user", "revoke-role", "alice", "root"), None, False),
    (("user", "revoke-role", "alice", "root"), None, False),
    (("role", "revoke-permission", "r", "/zz"), None, False),
    (("role", "get", "r"), None, False),
    (("user", "get", "alice", "--detail"), None, False),
    (("user", "list"), None, False),
    (("role", "list"), None, False),
    (("auth", "enable"), None, False),  # no root user
    (("user", "add", "root:pw"), None, False),
    (("auth", "enable"), None, False),  # etcdctl adds the root role and grants it
    # auth on
    (("get", "/a/x"), None, False),
    (("user", "list"), None, False),
    ((*ALICE, "put", "/a/x", "1"), None, False),
    ((*ALICE, "put", "/b", "1"), None, False),
    ((*ALICE, "get", "/b"), None, False),
    (("--user", "alice:wrong", "get", "/b"), None, False),
    (("--user", "bob:x", "get", "/b"), None, False),
    (("--user", "cn:x", "get", "/b"), None, False),  # a user without password
    ((*ALICE, "user", "list"), None, False),
    ((*ROOT, "user", "list"), None, False),
    ((*ROOT, "role", "get", "root"), None, False),
    ((*ALICE, "user", "get", "alice"), None, False),
    ((*ALICE, "user", "get", "root"), None, False),
    ((*ALICE, "role", "get", "r"), None, False),
    ((*ALICE, "role", "get", "root"), None, False),
    ((*ALICE, "get", "/a", "--prefix"), None, False),
    ((*ALICE, "get", "/a/", "--prefix"), None, False),
    ((*ALICE, "put", "/c/1", "x"), None, False),
    ((*ALICE, "get", "/c/1"), None, False),
    ((*ALICE, "txn"), 'value("/x") = "1"\n\nput /a/t 2\n\n\n', False),
    ((*ALICE, "del", "/a/x"), None, False),
    ((*ROOT, "role", "get", "all"), None, False),
    ((*ROOT, "user", "delete", "cn"), None, False),
    ((*ROOT, "role", "delete", "all"), None, False),
    ((*ROOT, "user", "delete", "root"), None, False),
    ((*ROOT, "role", "delete", "root"), None, False),
    ((*ROOT, "user", "revoke-role", "root", "root"), None, False),
    ((*ALICE, "auth", "disable"), None, False),
    ((*ALICE, "endpoint", "hashkv"), None, True),
    ((*ALICE, "defrag"), None, True),
    ((*ALICE, "snapshot", "save", "/dev/null/x"), None, True),
    ((*ROOT, "user", "passwd", "alice", "--interactive=false"), "newpw\n", False),
    ((*ALICE, "get", "/b"), None, False),
    (("--user", "alice:newpw", "get", "/a/", "--prefix", "--keys-only"), None, False),
    ((*ROOT, "role", "revoke-permission", "r", "/a/", "--prefix"), None, False),
    (("--user", "alice:newpw", "put", "/a/x", "1"), None, False),
    ((*ROOT, "user", "revoke-role", "alice", "r"), None, False),
    ((*ROOT, "user", "get", "alice"), None, False),
]
"""(args, stdin, first endpoint only), run by the ``clusters`` fixture.  The state after
it is what the tests start from: auth enabled; users root and alice (password newpw, no
roles); role r: read /b, write [/c, /e)."""


def test_etcdctl_user_role_auth_as_real_etcd(clusters: dict[str, Any]) -> None:
    # the fixture ran SCRIPT, each command with the same result on both; now
    # a user without permission gets etcd's permission-denied error, here and there
    rc, _, err = both(clusters, "--user", "alice:newpw", "put", "/b", "x")
    assert (rc, err) == (1, "Error: etcdserver: permission denied")
    rc, _, err = both(clusters, "--user", "alice:newpw", "watch", "/zz")
    assert rc == 5
    assert err.startswith("watch was canceled (rpc error: code = PermissionDenied")


def _token_of(endpoint: str, name: str, password: str) -> str:
    with grpc.insecure_channel(endpoint) as ch:
        resp = rpc_pb2_grpc.AuthStub(ch).Authenticate(
            rpc_pb2.AuthenticateRequest(name=name, password=password), timeout=RPC_TIMEOUT
        )
    return str(resp.token)


def _range(endpoint: str, token: str | None, key: bytes) -> tuple[str, str]:
    """(status code name, details) of a Range with ``token``."""
    metadata = [("token", token)] if token is not None else None
    with grpc.insecure_channel(endpoint) as ch:
        try:
            rpc_pb2_grpc.KVStub(ch).Range(
                rpc_pb2.RangeRequest(key=key), timeout=RPC_TIMEOUT, metadata=metadata
            )
        except grpc.RpcError as exc:
            return exc.code().name, exc.details()
    return "OK", ""


def test_token_from_one_member_works_on_every_member(clusters: dict[str, Any]) -> None:
    pnyx: PnyxEtcd = clusters["pnyx"]
    real: RealEtcd = clusters["etcd"]
    for i, issuer in enumerate(pnyx.endpoints):
        token = _token_of(issuer, "root", "pw")
        # used at once on the others (they may not have applied it yet: they wait)
        for endpoint in pnyx.endpoints[i + 1 :] + pnyx.endpoints[: i + 1]:
            assert _range(endpoint, token, b"/b") == ("OK", "")
    # alice (no roles now) is known on a member that did not issue her token: denied
    alice = _token_of(pnyx.endpoints[1], "alice", "newpw")
    real_alice = _token_of(real.endpoint, "alice", "newpw")
    denied = ("PERMISSION_DENIED", "etcdserver: permission denied")
    assert _range(pnyx.endpoints[2], alice, b"/b") == _range(real.endpoint, real_alice, b"/b")
    assert _range(pnyx.endpoints[2], alice, b"/b") == denied
    invalid = ("UNAUTHENTICATED", "etcdserver: invalid auth token")
    assert _range(pnyx.endpoints[0], "bogus", b"/b") == _range(real.endpoint, "bogus", b"/b")
    assert _range(pnyx.endpoints[0], "bogus", b"/b") == invalid
    # a token of an Authenticate not applied (yet): etcd waits for that raft index until
    # the caller's deadline; pnyx waits APPLY_WAIT_S (5 s), then calls it invalid
    assert _range(pnyx.endpoints[0], "abcdefghijklmnop.999999", b"/b") == invalid
    assert _range(pnyx.endpoints[0], None, b"/b") == (
        "INVALID_ARGUMENT",
        "etcdserver: user name is empty",
    )


async def _aetcd_session(endpoint: str) -> list[Any]:
    host, port = endpoint.rsplit(":", 1)
    out: list[Any] = []
    async with aetcd.Client(
        host=host, port=int(port), username="alice", password="newpw", timeout=RPC_TIMEOUT
    ) as client:
        for call in (
            client.put(b"/c/aetcd", b"v"),
            client.get(b"/b"),
            client.get(b"/c/aetcd"),
            client.put(b"/b", b"v"),
            client.delete(b"/c/aetcd"),
        ):
            try:
                result = await call
                out.append(("ok", type(result).__name__))
            except aetcd.exceptions.ClientError as exc:
                out.append((type(exc).__name__, str(exc)))
    try:
        async with aetcd.Client(host=host, port=int(port), username="alice", password="no"):
            out.append("connected with a wrong password")
    except aetcd.exceptions.ClientError as exc:
        out.append((type(exc).__name__, str(exc)))
    return out


def test_aetcd_client_with_user_and_password(clusters: dict[str, Any]) -> None:
    both(clusters, *ROOT, "user", "grant-role", "alice", "r")
    real = asyncio.run(asyncio.wait_for(_aetcd_session(clusters["etcd"].endpoint), 120))
    pnyx = asyncio.run(asyncio.wait_for(_aetcd_session(clusters["pnyx"].endpoint), 120))
    assert pnyx == real
    assert real[0] == ("ok", "Put") and real[3][1].endswith("permission denied"), real


def test_auth_state_survives_a_member_restart(clusters: dict[str, Any]) -> None:
    pnyx: PnyxEtcd = clusters["pnyx"]
    cluster = pnyx.cluster
    for node in cluster.node_ids[2:]:
        cluster.kill(node)
        cluster.restart(node)
        endpoint = cluster.endpoint(node)
        rc, out, _ = etcdctl(pnyx, *ROOT, "user", "list", endpoints=endpoint)
        assert (rc, out) == (0, "alice\nroot\n")
        rc, out, _ = etcdctl(pnyx, *ROOT, "role", "get", "r", endpoints=endpoint)
        assert (rc, out) == (0, "Role r\nKV Read:\n\t/b\nKV Write:\n\t[/c, /e)\n")
        rc, _, err = etcdctl(pnyx, "--user", "alice:newpw", "put", "/b", "x", endpoints=endpoint)
        assert (rc, err) == (1, "Error: etcdserver: permission denied")
        rc, _, err = etcdctl(pnyx, "get", "/b", "--consistency=s", endpoints=endpoint)
        assert (rc, err) == (1, "Error: etcdserver: user name is empty")
    # and off again, as etcd
    assert both(clusters, *ROOT, "auth", "disable") == (0, "Authentication Disabled\n", "")
    assert both(clusters, "get", "/b")[0] == 0


# --------------------------------------------------------------------------- pure


def test_passwords_are_hashed_and_checked() -> None:
    stored = hash_password("secret", b"0123456789abcdef")
    assert b"secret" not in stored
    assert verify_password(stored, "secret")
    assert not verify_password(stored, "Secret")
    assert not verify_password(b"garbage", "secret")


def test_permission_intervals_as_etcd() -> None:
    a = AuthStore()
    a.execute(AuthRoleAddRequest(name="r"))
    grants = [
        (PermType.READ, b"/a/", b"/a0"),
        (PermType.READ, b"/a0", b"/b"),  # adjacent: [/a/, /b) together
        (PermType.WRITE, b"/w", b""),
        (PermType.READWRITE, b"/z", b"\0"),  # from /z on
    ]
    for t, key, end in grants:
        perm = Permission(permType=t, key=key, range_end=end)
        a.execute(AuthRoleGrantPermissionRequest(name="r", perm=perm))
    a.execute(AuthUserAddRequest(name="u", password=b"h"))
    a.execute(AuthUserGrantRoleRequest(user="u", role="r"))
    assert a.is_permitted("u", b"/a/x", b"", False)
    assert a.is_permitted("u", b"/a/", b"/b", False)
    assert not a.is_permitted("u", b"/a/", b"/b\0", False)
    assert not a.is_permitted("u", b"/a/x", b"", True)
    assert a.is_permitted("u", b"/w", b"", True) and not a.is_permitted("u", b"/w", b"", False)
    assert not a.is_permitted("u", b"/w", b"/w\0\0", True)
    assert a.is_permitted("u", b"/z", b"\0", True) and a.is_permitted("u", b"/zz", b"", False)
    assert not a.is_permitted("u", b"/y", b"\0", False)
    assert not a.is_permitted("nobody", b"/a/x", b"", False)
    a.execute(AuthUserGrantRoleRequest(user="u", role="root"))
    assert a.is_permitted("u", b"\0", b"\0", True)
    assert covers([(b"a", b"c"), (b"b", b"d")], b"a", b"d")
    assert not covers([(b"a", b"b"), (b"c", b"d")], b"a", b"d")


def test_auth_state_in_the_store_snapshot() -> None:
    sm = EtcdStateMachine()
    store = sm.store
    store.apply(AuthUserAddRequest(name="root", password=hash_password("pw", b"s" * 16)))
    store.apply(AuthUserGrantRoleRequest(user="root", role="root"))
    store.apply(AuthEnableRequest())
    image = sm.snapshot()
    other = EtcdStateMachine()
    other.restore(image)
    assert other.store.auth.enabled and other.store.auth.has_root_role("root")
    assert other.snapshot() == image
    denied = other.store.apply(AuthedRequest(user="", request=RangeRequest(key=b"k")))
    assert denied == ErrorResult(3, "etcdserver: user name is empty")


# --------------------------------------------------------------------------- snapshot


def _node_config(directory: Path) -> RunnerConfig:
    return RunnerConfig(
        node_id=1,
        data_dir=directory,
        peers={1: ("127.0.0.1", 0)},
        transport=TransportConfig(cluster="test-auth-restart"),
    )


async def _started(directory: Path) -> EtcdServer:
    server = EtcdServer(
        _node_config(directory), EtcdOptions(client_port=0, snapshot_threshold_entries=5)
    )
    await server.start()
    async with asyncio.timeout(10):
        while server.status().get("leader") != 1:
            await asyncio.sleep(0.01)  # poll interval
    return server


async def _status(call: Any) -> str:
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return f"{exc.code().name} {exc.details()}"
    return "OK"


PLAINTEXT = "plain-Secret-42"


async def _setup_auth(server: EtcdServer) -> None:
    host, port = server.client_address
    async with grpc.aio.insecure_channel(f"{host}:{port}") as ch:
        auth = rpc_pb2_grpc.AuthStub(ch)
        await auth.UserAdd(rpc_pb2.AuthUserAddRequest(name="root", password=PLAINTEXT))
        await auth.UserGrantRole(rpc_pb2.AuthUserGrantRoleRequest(user="root", role="root"))
        await auth.RoleAdd(rpc_pb2.AuthRoleAddRequest(name="r"))
        perm = auth_pb2.Permission(permType=auth_pb2.Permission.READWRITE, key=b"/a/")
        perm.range_end = b"/a0"
        await auth.RoleGrantPermission(rpc_pb2.AuthRoleGrantPermissionRequest(name="r", perm=perm))
        await auth.UserAdd(rpc_pb2.AuthUserAddRequest(name="alice", password=PLAINTEXT))
        await auth.UserGrantRole(rpc_pb2.AuthUserGrantRoleRequest(user="alice", role="r"))
        await auth.AuthEnable(rpc_pb2.AuthEnableRequest())
        token = await auth.Authenticate(
            rpc_pb2.AuthenticateRequest(name="alice", password=PLAINTEXT)
        )
        kv = rpc_pb2_grpc.KVStub(ch)
        md = [("token", token.token)]
        for i in range(10):  # more entries than the snapshot threshold
            await kv.Put(rpc_pb2.PutRequest(key=b"/a/%d" % i, value=b"v"), metadata=md)


async def _check_auth(server: EtcdServer) -> list[str]:
    host, port = server.client_address
    async with grpc.aio.insecure_channel(f"{host}:{port}") as ch:
        auth, kv = rpc_pb2_grpc.AuthStub(ch), rpc_pb2_grpc.KVStub(ch)
        alice = await auth.Authenticate(
            rpc_pb2.AuthenticateRequest(name="alice", password=PLAINTEXT)
        )
        root = await auth.Authenticate(rpc_pb2.AuthenticateRequest(name="root", password=PLAINTEXT))
        md = [("token", alice.token)]
        users = await auth.UserList(rpc_pb2.AuthUserListRequest(), metadata=[("token", root.token)])
        return [
            await _status(kv.Put(rpc_pb2.PutRequest(key=b"/a/new", value=b"v"), metadata=md)),
            await _status(kv.Put(rpc_pb2.PutRequest(key=b"/b", value=b"v"), metadata=md)),
            await _status(kv.Range(rpc_pb2.RangeRequest(key=b"/a/1"))),
            await _status(auth.UserList(rpc_pb2.AuthUserListRequest(), metadata=md)),
            await _status(
                auth.Authenticate(rpc_pb2.AuthenticateRequest(name="alice", password="x"))
            ),
            ",".join(users.users),
        ]


def test_auth_state_restored_from_a_raft_snapshot(tmp_path: Path) -> None:
    directory = tmp_path / "node"

    async def first() -> None:
        server = await _started(directory)
        try:
            await _setup_auth(server)
            assert server.runner.node.snapshot is not None
        finally:
            await server.stop()

    async def second() -> list[str]:
        server = await _started(directory)
        try:
            return await _check_auth(server)
        finally:
            await server.stop()

    asyncio.run(asyncio.wait_for(first(), 60))
    got = asyncio.run(asyncio.wait_for(second(), 60))
    assert got == [
        "OK",
        "PERMISSION_DENIED etcdserver: permission denied",
        "INVALID_ARGUMENT etcdserver: user name is empty",
        "PERMISSION_DENIED etcdserver: permission denied",
        "INVALID_ARGUMENT etcdserver: authentication failed, invalid user ID or password",
        "alice,root",
    ]
    # the password was hashed before it was proposed: no file of the node holds it
    for path in directory.rglob("*"):
        if path.is_file():
            assert PLAINTEXT.encode() not in path.read_bytes(), path


def test_auth_changes_are_refused_off_the_log() -> None:
    """Applied as a query (not a session command), an auth change or an authed write
    would change one replica only: refused."""
    sm = EtcdStateMachine()
    refused = ErrorResult(3, "pnyx: an auth change or authed write must be a session command")
    assert sm.apply(AuthUserAddRequest(name="x", password=b"h")) == refused
    put = AuthedRequest(user="", request=PutRequest(key=b"k", value=b"v"))
    assert sm.apply(msgspec.msgpack.decode(msgspec.msgpack.encode(put))) == refused
    assert not sm.store.auth.users and sm.store.current_revision == 1
    read = sm.apply(AuthedRequest(user="", request=RangeRequest(key=b"k")))
    assert read.count == 0


def test_requests_without_a_user_are_refused_while_auth_is_enabled() -> None:
    """A member that had not applied ``auth enable`` yet sends a client's request as is:
    applied, it is one without a user (etcd: a header without auth revision)."""
    store = EtcdStateMachine().store
    store.apply(AuthUserAddRequest(name="root", password=b"h"))
    store.apply(AuthUserGrantRoleRequest(user="root", role="root"))
    assert isinstance(store.apply(AuthEnableRequest()), AuthResponse)
    empty = ErrorResult(3, "etcdserver: user name is empty")
    assert store.apply(PutRequest(key=b"k", value=b"v")) == empty
    assert store.apply(RangeRequest(key=b"k")) == empty
    assert store.apply(AuthUserAddRequest(name="x", password=b"h")) == empty
    assert store.apply(AuthUserListRequest()) == empty
    assert store.apply(LeaseGrantRequest(TTL=10)).TTL == 10
    put = AuthedRequest(user="root", request=PutRequest(key=b"k", value=b"v"))
    assert store.apply(put).header.revision == 2


def test_simple_tokens_expire_after_their_ttl_since_last_use() -> None:
    now = [0]
    tokens = SimpleTokens(lambda: now[0], ttl_ms=1000)
    tokens.token_assigned("a.1", "alice")
    tokens.token_assigned("b.2", "bob")
    now[0] = 900
    assert tokens.user_of("a.1") == "alice"  # used: lives until 1900
    now[0] = 1500
    assert tokens.user_of("a.1") == "alice" and tokens.user_of("b.2") is None
    tokens.user_invalidated("alice")
    assert tokens.user_of("a.1") is None
    tokens.token_assigned("c.3", "carol")
    tokens.tokens_cleared()
    assert tokens.user_of("c.3") is None and len(tokens) == 0
    assert token_seq("abc.12") == 12 and token_seq("bogus") is None and token_seq(".1") is None

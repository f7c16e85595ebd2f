"""Two Python etcd v3 clients from the package index against a 3-node pnyx etcd cluster and
against real etcd 3.4: ``aetcd`` (asyncio) and ``etcd3aio`` (grpc.aio).

Each client runs the same workout — puts (prev_kv), gets, a prefix range, a delete, txns
with compares on value/version/create revision (both branches), a watch replaying history
and then live events, and a lease kept alive past its TTL by the client's keep-alive, then
revoked (its key disappears) — and reduces what it saw to a transcript with revisions
relative to the workout's start.  All four transcripts (2 clients x 2 servers) must be equal,
and equal to what etcd's semantics say.

``etcd3aio`` and ``aetcd`` both register etcd's proto messages in protobuf's default pool,
so they cannot live in one process: the etcd3aio workout runs in a child Python process
(bounded), the aetcd one here.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from typing import Any

import aetcd
import pytest

from tests.etcd.realetcd import PnyxEtcd, RealEtcd, pnyx_etcd3, real_etcd  # noqa: F401

TTL = 2
"""Lease TTL (s): the workouts keep it alive for longer than this."""
KEEP_ALIVE_FOR = 3.5
"""Seconds of keep-alives before checking the key is still there."""
STEP_TIMEOUT = 30.0
"""Bound on any one client call or awaited event."""
CHILD_TIMEOUT = 120.0


def expected(prefix: str) -> dict[str, Any]:
    """The transcript etcd's semantics give for the workout (relative revisions)."""
    return {
        "kv": [
            ["put", 1, None],
            ["put", 2, None],
            ["put", 3, "1"],
            ["get", "3", 2, 1, 3],
            ["prefix", [["a", "3"], ["b", "2"]], 2],
            ["delete", 1, ["2"], 4],
            ["get-missing", 0],
        ],
        "txn": [
            [True, ["4"]],
            [False, ["4"]],
            [True, ["created"]],
        ],
        "watch": [
            ["PUT", "w/1", "x", 1],
            ["PUT", "w/2", "y", 1],
            ["DELETE", "w/1", "", 0],
            ["PUT", "w/3", "live", 1],
        ],
        "lease": {
            "granted": TTL,
            "alive_after_keepalive": True,
            "keys": ["l/k"],
            "after_revoke": 0,
            "ttl_after_revoke": -1,
        },
    }


# ----------------------------------------------------------------- aetcd


async def aetcd_workout(endpoint: str, prefix: bytes) -> dict[str, Any]:
    host, port = endpoint.rsplit(":", 1)
    client = aetcd.Client(host=host, port=int(port), timeout=STEP_TIMEOUT)
    async with client as c:
        p = prefix
        base = (await c.put(p + b"!base", b"x")).header.revision

        def rel(r: int) -> int:
            return r - base

        kv: list[Any] = []
        for k, v in ((b"a", b"1"), (b"b", b"2")):
            r = await c.put(p + k, v, prev_kv=True)
            kv.append(["put", rel(r.header.revision), None])
        r = await c.put(p + b"a", b"3", prev_kv=True)
        kv.append(["put", rel(r.header.revision), r.prev_kv.value.decode()])
        g = await c.get(p + b"a")
        assert g is not None
        kv.append(["get", g.value.decode(), g.version, rel(g.create_revision),
                   rel(g.mod_revision)])
        rng = await c.get_prefix(p + b"", sort_order="ascend")
        items = [[kv_.key[len(p):].decode(), kv_.value.decode()] for kv_ in rng
                 if not kv_.key.endswith(b"!base")]
        kv.append(["prefix", items, len(items)])
        d = await c.delete(p + b"b", prev_kv=True)
        assert d is not None
        kv.append(["delete", d.deleted, [d.prev_kv.value.decode()], rel(d.header.revision)])
        kv.append(["get-missing", 0 if await c.get(p + b"b") is None else 1])

        t = c.transactions
        txns = []
        for _ in range(2):
            ok, resps = await c.transaction(
                compare=[t.value(p + b"a") == b"3", t.version(p + b"a") > 1],
                success=[t.put(p + b"a", b"4"), t.get(p + b"a")],
                failure=[t.get(p + b"a")],
            )
            txns.append([ok, [v.decode() for v, _ in resps[-1]]])
        ok, resps = await c.transaction(
            compare=[t.create(p + b"new") == 0],
            success=[t.put(p + b"new", b"created"), t.get(p + b"new")],
            failure=[],
        )
        txns.append([ok, [v.decode() for v, _ in resps[-1]]])

        # Watch: history from before the writes, then a live event.
        wbase = (await c.put(p + b"!wbase", b"x")).header.revision
        await c.put(p + b"w/1", b"x")
        await c.put(p + b"w/2", b"y")
        await c.delete(p + b"w/1")
        watch = await c.watch(p + b"w/", range_end=p + b"w0", start_revision=wbase + 1)
        events: list[Any] = []
        it = watch.__aiter__()

        async def take(n: int) -> None:
            while len(events) < n:
                ev = await asyncio.wait_for(it.__anext__(), STEP_TIMEOUT)
                events.append([ev.kind, ev.kv.key[len(p):].decode(), ev.kv.value.decode(),
                               ev.kv.version])

        await take(3)
        await c.put(p + b"w/3", b"live")
        await take(4)
        await watch.cancel()

        # Lease: keep-alives for longer than the TTL, then revoke.
        lease = await c.lease(TTL)
        await c.put(p + b"l/k", b"v", lease=lease)
        loop = asyncio.get_running_loop()
        end = loop.time() + KEEP_ALIVE_FOR
        while loop.time() < end:
            reply = await asyncio.wait_for(lease.refresh(), STEP_TIMEOUT)
            assert reply.TTL > 0, reply
            await asyncio.sleep(TTL / 4)  # keep-alive period (a quarter of the TTL)
        alive = await c.get(p + b"l/k") is not None
        info = await c.get_lease_info(lease.id, keys=True)
        keys = sorted(k[len(p):].decode() for k in info.keys)
        await lease.revoke()
        after = 0 if await c.get(p + b"l/k") is None else 1
        ttl_after = (await c.get_lease_info(lease.id, keys=False)).TTL
        return {
            "kv": kv,
            "txn": txns,
            "watch": events,
            "lease": {
                "granted": lease.ttl,
                "alive_after_keepalive": alive,
                "keys": keys,
                "after_revoke": after,
                "ttl_after_revoke": ttl_after,
            },
        }


# ----------------------------------------------------------------- etcd3aio (child process)

ETCD3AIO_WORKOUT = r'''
import asyncio, json, sys
import etcd3aio
from etcd3aio.kv import KVService, prefix_range_end
from etcd3aio._protobuf import Compare

TTL, KEEP_ALIVE_FOR, STEP = float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])

async def workout(endpoint, p):
    async with etcd3aio.Etcd3Client([endpoint]) as c:
        kvs = c.kv
        base = (await kvs.put(p + b"!base", b"x", timeout=STEP)).header.revision
        rel = lambda r: r - base
        kv = []
        for k, v in ((b"a", b"1"), (b"b", b"2")):
            r = await kvs.put(p + k, v, prev_kv=True, timeout=STEP)
            kv.append(["put", rel(r.header.revision),
                       r.prev_kv.value.decode() if r.HasField("prev_kv") else None])
        r = await kvs.put(p + b"a", b"3", prev_kv=True, timeout=STEP)
        kv.append(["put", rel(r.header.revision),
                   r.prev_kv.value.decode() if r.HasField("prev_kv") else None])
        g = (await kvs.get(p + b"a", timeout=STEP)).kvs[0]
        kv.append(["get", g.value.decode(), g.version, rel(g.create_revision),
                   rel(g.mod_revision)])
        rng = await kvs.get(p + b"a", prefix_range_end(p), timeout=STEP)
        items = [[x.key[len(p):].decode(), x.value.decode()] for x in rng.kvs]
        kv.append(["prefix", items, rng.count])
        d = await kvs.delete(p + b"b", prev_kv=True, timeout=STEP)
        kv.append(["delete", d.deleted, [x.value.decode() for x in d.prev_kvs],
                   rel(d.header.revision)])
        kv.append(["get-missing", (await kvs.get(p + b"b", timeout=STEP)).count])

        txns = []
        for _ in range(2):
            r = await kvs.txn(
                [KVService.txn_compare_value(p + b"a", b"3"),
                 KVService.txn_compare_version(p + b"a", 1, result=Compare.GREATER)],
                [KVService.txn_op_put(p + b"a", b"4"), KVService.txn_op_get(p + b"a")],
                [KVService.txn_op_get(p + b"a")], timeout=STEP)
            txns.append([r.succeeded,
                         [x.value.decode() for x in r.responses[-1].response_range.kvs]])
        r = await kvs.txn(
            [KVService.txn_compare_create_revision(p + b"new", 0)],
            [KVService.txn_op_put(p + b"new", b"created"), KVService.txn_op_get(p + b"new")],
            [], timeout=STEP)
        txns.append([r.succeeded, [x.value.decode() for x in r.responses[-1].response_range.kvs]])

        wbase = (await kvs.put(p + b"!wbase", b"x", timeout=STEP)).header.revision
        await kvs.put(p + b"w/1", b"x", timeout=STEP)
        await kvs.put(p + b"w/2", b"y", timeout=STEP)
        await kvs.delete(p + b"w/1", timeout=STEP)
        events = []
        stream = c.watch.watch(p + b"w/", p + b"w0", start_revision=wbase + 1)
        async def take(n):
            while len(events) < n:
                resp = await asyncio.wait_for(stream.__anext__(), STEP)
                for ev in resp.events:
                    events.append(["PUT" if ev.type == 0 else "DELETE",
                                   ev.kv.key[len(p):].decode(), ev.kv.value.decode(),
                                   ev.kv.version])
        await take(3)
        await kvs.put(p + b"w/3", b"live", timeout=STEP)
        await take(4)
        await stream.aclose()

        g = await c.lease.grant(int(TTL), timeout=STEP)
        await kvs.put(p + b"l/k", b"v", lease=g.ID, timeout=STEP)
        async with c.lease.keep_alive_context(g.ID, int(TTL)) as ka:
            await asyncio.sleep(KEEP_ALIVE_FOR)  # the client's own keep-alives run meanwhile
            still = ka.alive
        alive = still and (await kvs.get(p + b"l/k", timeout=STEP)).count == 1
        info = await c.lease.time_to_live(g.ID, keys=True, timeout=STEP)
        keys = sorted(k[len(p):].decode() for k in info.keys)
        await c.lease.revoke(g.ID, timeout=STEP)
        after = (await kvs.get(p + b"l/k", timeout=STEP)).count
        ttl_after = (await c.lease.time_to_live(g.ID, timeout=STEP)).TTL
        return {"kv": kv, "txn": txns, "watch": events,
                "lease": {"granted": g.TTL, "alive_after_keepalive": alive, "keys": keys,
                          "after_revoke": after, "ttl_after_revoke": ttl_after}}

async def main(jobs):
    names = list(jobs)
    done = await asyncio.gather(*(workout(ep, prefix.encode()) for ep, prefix in jobs.values()))
    return dict(zip(names, done))

print(json.dumps(asyncio.run(main(json.loads(sys.argv[1])))))
'''


def etcd3aio_start(jobs: dict[str, tuple[str, str]]) -> subprocess.Popen[str]:
    """The etcd3aio workout in a child process: ``jobs`` maps a server name to (endpoint,
    key prefix); the servers are exercised concurrently."""
    return subprocess.Popen(
        [sys.executable, "-c", ETCD3AIO_WORKOUT, json.dumps(jobs),
         str(TTL), str(KEEP_ALIVE_FOR), str(STEP_TIMEOUT)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def etcd3aio_result(proc: subprocess.Popen[str]) -> dict[str, Any]:
    try:
        out, err = proc.communicate(timeout=CHILD_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate(timeout=10)
        raise AssertionError(
            f"etcd3aio workout still running after {CHILD_TIMEOUT} s: {err}"
        ) from None
    assert proc.returncode == 0, f"etcd3aio workout failed:\n{err[-3000:]}"
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


@pytest.fixture(scope="module")
def servers(real_etcd: RealEtcd, pnyx_etcd3: PnyxEtcd) -> dict[str, str]:  # noqa: F811
    # The client talks to a follower-or-leader pnyx member (member 2), as a user would.
    return {"etcd": real_etcd.endpoint, "pnyx": pnyx_etcd3.endpoints[1]}


def test_two_clients_against_pnyx_and_real_etcd(servers: dict[str, str]) -> None:
    """Each client runs against both servers at once (one client at a time per server, so
    that relative revisions are the workout's own); all four transcripts must agree."""

    async def ours() -> list[dict[str, Any]]:
        return list(
            await asyncio.gather(
                *(aetcd_workout(ep, f"/clients/aetcd/{name}/".encode())
                  for name, ep in servers.items())
            )
        )

    results: dict[tuple[str, str], Any] = {}
    for name, r in zip(servers, asyncio.run(ours()), strict=True):
        results[(name, "aetcd")] = json.loads(json.dumps(r))  # tuples -> lists, as the child
    child = etcd3aio_start({n: (ep, f"/clients/etcd3aio/{n}/") for n, ep in servers.items()})
    for name, r in etcd3aio_result(child).items():
        results[(name, "etcd3aio")] = r
    want = expected("")
    for (server, client), got in sorted(results.items()):
        for section in want:
            assert got[section] == want[section], (
                f"{client} against {server}: {section}\n  got:  {got[section]}\n"
                f"  want: {want[section]}"
            )

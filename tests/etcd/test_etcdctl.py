"""Stock ``etcdctl`` (Debian etcd-client 3.4, ``ETCDCTL_API=3``) against a 3-node pnyx etcd
cluster, each command's output compared with the same command on real etcd 3.4 where the
output is deterministic (ids, URLs, remaining TTLs and absolute revisions are normalised).

Every etcdctl run has a bounded lifetime; ``etcdctl watch`` runs as a subprocess whose
lines are read until the expected ones arrived (bounded) and which is then stopped by pid.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.etcd.realetcd import (  # noqa: F401 (fixtures)
    ETCDCTL_BIN,
    pnyx_etcd3,
    real_etcd,
    require_binaries,
)

CTL_TIMEOUT = 60.0
"""Seconds one etcdctl command may take (generous: 2 busy cores)."""
WATCH_TIMEOUT = 30.0


@dataclass
class Out:
    rc: int
    stdout: str
    stderr: str

    @property
    def error(self) -> str:
        """Exit code and the ``Error:`` lines of stderr (without the client library's
        timestamped JSON retry logs)."""
        lines = [ln for ln in self.stderr.splitlines() if ln.startswith("Error:")]
        return f"{self.rc} " + " | ".join(lines)


class Ctl:
    """etcdctl against one cluster (all its endpoints)."""

    def __init__(self, name: str, urls: str) -> None:
        self.name = name
        self.urls = urls
        self.env = {**os.environ, "ETCDCTL_API": "3"}
        for var in list(self.env):
            if var.startswith("ETCDCTL_") and var != "ETCDCTL_API":
                del self.env[var]

    def argv(self, *args: str, endpoints: str | None = None) -> list[str]:
        return [
            ETCDCTL_BIN,
            f"--endpoints={endpoints or self.urls}",
            "--dial-timeout=10s",
            "--command-timeout=30s",
            *args,
        ]

    def run(self, *args: str, stdin: str | None = None, endpoints: str | None = None) -> Out:
        p = subprocess.run(
            self.argv(*args, endpoints=endpoints),
            input=stdin,
            capture_output=True,
            text=True,
            env=self.env,
            timeout=CTL_TIMEOUT,
        )
        return Out(p.returncode, p.stdout, p.stderr)

    def ok(self, *args: str, stdin: str | None = None, endpoints: str | None = None) -> str:
        out = self.run(*args, stdin=stdin, endpoints=endpoints)
        assert out.rc == 0, f"{self.name}: etcdctl {' '.join(args)} -> {out}"
        return out.stdout

    def revision(self) -> int:
        """The cluster's current revision (``get`` of a key that is never written)."""
        data = json.loads(self.ok("get", "/never-written", "-w", "json"))
        return int(data["header"]["revision"])

    @contextlib.contextmanager
    def watch(self, *args: str) -> Iterator[WatchProc]:
        proc = WatchProc(self.argv("watch", *args), self.env)
        try:
            yield proc
        finally:
            proc.stop()


class WatchProc:
    """``etcdctl watch`` as a child process; its stdout lines arrive on a queue."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.p = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.p.stdout is not None
        for line in self.p.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def take(self, n: int, timeout: float = WATCH_TIMEOUT) -> list[str]:
        """The next ``n`` lines (fails after ``timeout`` seconds or at end of output)."""
        got: list[str] = []
        deadline = time.monotonic() + timeout
        while len(got) < n:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(
                    f"watch: {len(got)} of {n} lines in {timeout} s: {got}"
                ) from None
            if line is None:
                err = self.p.stderr.read() if self.p.stderr else ""
                raise AssertionError(f"watch ended after {got}; stderr: {err}")
            got.append(line)
        return got

    def stop(self) -> None:
        if self.p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.p.pid, signal.SIGTERM)
            try:
                self.p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.p.pid, signal.SIGKILL)
                self.p.wait(timeout=10)
        for stream in (self.p.stdout, self.p.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture(scope="module")
def ctls(real_etcd: Any, pnyx_etcd3: Any) -> dict[str, Ctl]:  # noqa: F811
    require_binaries()
    return {"etcd": Ctl("real etcd", real_etcd.urls), "pnyx": Ctl("pnyx", pnyx_etcd3.urls)}


def both(ctls: dict[str, Ctl], fn: Any) -> dict[str, Any]:
    """Run ``fn(ctl)`` on real etcd and on pnyx; return both results."""
    return {name: fn(ctl) for name, ctl in ctls.items()}


def same(results: dict[str, Any]) -> Any:
    """Assert pnyx's result equals real etcd's; return it."""
    assert results["pnyx"] == results["etcd"], (
        f"pnyx and real etcd differ:\n  pnyx: {results['pnyx']!r}\n  etcd: {results['etcd']!r}"
    )
    return results["etcd"]


# ----------------------------------------------------------------- put / get / del


def test_put_get_del_prefix_limit_sort(ctls: dict[str, Ctl]) -> None:
    def run(c: Ctl) -> list[str]:
        p = "/kv/"
        out = [c.ok("put", f"{p}{k}", v) for k, v in
               [("b", "2"), ("a", "3"), ("c", "1"), ("a", "4"), ("d", "0")]]
        out.append(c.ok("put", f"{p}a", "5", "--prev-kv"))
        out.append(c.ok("get", f"{p}a"))
        out.append(c.ok("get", p, "--prefix"))
        out.append(c.ok("get", p, "--prefix", "--limit=2"))
        out.append(c.ok("get", p, "--prefix", "--keys-only"))
        out.append(c.ok("get", p, "--prefix", "--sort-by=VALUE", "--order=DESCEND"))
        out.append(c.ok("get", p, "--prefix", "--sort-by=MODIFY", "--order=ASCEND"))
        out.append(c.ok("get", p, "--prefix", "--sort-by=VERSION", "--order=DESCEND"))
        out.append(c.ok("get", p, "--prefix", "--sort-by=CREATE", "--order=DESCEND", "--limit=3"))
        out.append(c.ok("get", f"{p}b", "--from-key", "--keys-only"))
        out.append(c.ok("get", f"{p}a", f"{p}c"))
        out.append(c.ok("get", p, "--prefix", "--limit=1", "-w", "fields"))
        out.append(c.ok("del", f"{p}b", "--prev-kv"))
        out.append(c.ok("del", f"{p}zzz"))
        out.append(c.ok("del", p, "--prefix"))
        out.append(c.ok("get", p, "--prefix"))
        return [normalise_fields(o) for o in out]

    out = same(both(ctls, run))
    assert out[0] == "OK\n"
    assert out[5] == "OK\n/kv/a\n4\n"
    assert out[7] == "/kv/a\n5\n/kv/b\n2\n/kv/c\n1\n/kv/d\n0\n"
    assert out[8] == "/kv/a\n5\n/kv/b\n2\n"
    assert out[10].split("\n")[::2][:4] == ["/kv/a", "/kv/b", "/kv/c", "/kv/d"]
    assert '"Count" : 4' in out[16] and '"More" : true' in out[16], out[16]
    assert out[-3] == "0\n" and out[-2] == "3\n" and out[-1] == ""


def normalise_fields(text: str) -> str:
    """``-w fields`` output minus the header fields that differ between clusters."""
    return "\n".join(
        line for line in text.split("\n")
        if not re.match(
            r'"(ClusterID|MemberID|Revision|RaftTerm|CreateRevision|ModRevision)" :', line
        )
    )


def test_get_rev_and_compaction(ctls: dict[str, Ctl]) -> None:
    def run(c: Ctl) -> list[Any]:
        k = "/rev/k"
        base = c.revision()
        for v in ("v1", "v2", "v3"):
            c.ok("put", k, v)
        old = [c.ok("get", k, f"--rev={base + i}") for i in (1, 2, 3)]
        future = c.run("get", k, f"--rev={base + 10}")
        compact = c.ok("compaction", str(base + 2))
        compacted = c.run("get", k, f"--rev={base + 1}")
        still = c.ok("get", k, f"--rev={base + 2}")
        again = c.run("compaction", str(base + 2))
        return [
            old,
            future.error,
            compact.replace(str(base + 2), "R"),
            compacted.error,
            still,
            again.error,
        ]

    out = same(both(ctls, run))
    assert out[0] == ["/rev/k\nv1\n", "/rev/k\nv2\n", "/rev/k\nv3\n"]
    assert out[1] == "1 Error: etcdserver: mvcc: required revision is a future revision"
    assert out[2] == "compacted revision R\n"
    assert out[3] == "1 Error: etcdserver: mvcc: required revision has been compacted"
    assert out[4] == "/rev/k\nv2\n"
    assert out[5] == "1 Error: etcdserver: mvcc: required revision has been compacted"


# ----------------------------------------------------------------- txn

TXN_FILE = """\
value("/txn/a") = "1"
version("/txn/b") = "0"
mod("/txn/a") > "0"

put /txn/a 2
put /txn/b "first b"
get /txn/a

put /txn/failed yes

"""


def test_txn_from_file_and_interactive(ctls: dict[str, Ctl], tmp_path: Path) -> None:
    path = tmp_path / "txn.txt"
    path.write_text(TXN_FILE)

    def run(c: Ctl) -> list[str]:
        out = [c.ok("put", "/txn/a", "1")]
        with open(path) as f:
            out.append(c.ok("txn", stdin=f.read()))  # etcdctl txn < file
        with open(path) as f:
            out.append(c.ok("txn", stdin=f.read()))  # now the compares fail
        out.append(c.ok("txn", "-i", stdin=(
            # (no lease() compare: etcdctl 3.4 panics parsing one, "bad value")
            'create("/txn/b") > "0"\nmod("/txn/a") < "1000000"\n\n'
            "del /txn/b\nget /txn --prefix\n\nput /txn/x 1\n\n"
        )))
        out.append(c.ok("txn", "-w", "json", stdin='value("/txn/a") = "nope"\n\n\nget /txn/a\n\n'))
        out.append(c.ok("get", "/txn/", "--prefix"))
        return out

    out = both(ctls, run)
    for name in out:
        out[name][4] = normalise_json(out[name][4])
    res = same(out)
    assert res[1] == "SUCCESS\n\nOK\n\nOK\n\n/txn/a\n2\n"
    assert res[2] == "FAILURE\n\nOK\n"
    assert res[3].startswith("compares:\n")
    assert "SUCCESS\n\n1\n\n/txn/a\n2\n/txn/failed\nyes\n" in res[3]
    assert "succeeded" not in json.loads(res[4])  # false: omitted, as etcd's JSON does
    assert res[5] == "/txn/a\n2\n/txn/failed\nyes\n"


def normalise_json(text: str) -> str:
    """JSON output with the cluster-specific header fields and revisions removed."""
    data = json.loads(text)

    def scrub(x: Any) -> Any:
        if isinstance(x, dict):
            return {
                k: scrub(v) for k, v in x.items()
                if k not in ("cluster_id", "member_id", "raft_term", "revision",
                             "create_revision", "mod_revision")
            }
        if isinstance(x, list):
            return [scrub(v) for v in x]
        return x

    return json.dumps(scrub(data), sort_keys=True)


# ----------------------------------------------------------------- watch


def test_watch_history_and_prefix(ctls: dict[str, Ctl]) -> None:
    def run(c: Ctl) -> list[list[str]]:
        base = c.revision()
        c.ok("put", "/w/a", "1")
        c.ok("put", "/w/b", "2")
        c.ok("del", "/w/a")
        c.ok("put", "/other", "x")
        seen = []
        # History replay from a past revision, then live events, on a prefix.
        with c.watch("/w/", "--prefix", f"--rev={base + 1}") as w:
            seen.append(w.take(3 * 3))
            c.ok("put", "/w/c", "3")
            seen.append(w.take(3))
        # One key with prev_kv, from history.
        with c.watch("/w/b", f"--rev={base + 1}", "--prev-kv") as w:
            seen.append(w.take(3))
        # Live only: starts now, sees only what comes after.
        with c.watch("/w/live", "--prefix") as w:
            wait_watching(c, w, "/w/live")
            c.ok("put", "/w/live/1", "x")
            seen.append(w.take(3))
        return seen

    out = same(both(ctls, run))
    assert out[0] == ["PUT", "/w/a", "1", "PUT", "/w/b", "2", "DELETE", "/w/a", ""]
    assert out[1] == ["PUT", "/w/c", "3"]
    assert out[2] == ["PUT", "/w/b", "2"]
    assert out[3][:2] == ["PUT", "/w/live/1"]


def wait_watching(c: Ctl, w: WatchProc, prefix: str) -> None:
    """Make sure a live watch is established: write a marker under ``prefix`` until the
    watch reports one (bounded), then consume those lines."""
    deadline = time.monotonic() + WATCH_TIMEOUT
    marker = f"{prefix}/!ready"
    while True:
        c.ok("put", marker, "r")
        try:
            lines = w.take(3, timeout=0.5)
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            continue
        assert lines == ["PUT", marker, "r"], lines
        # Drain markers that arrived from earlier attempts.
        while True:
            try:
                more = w.lines.get(timeout=0.3)
            except queue.Empty:
                return
            assert more in ("PUT", marker, "r"), more


# ----------------------------------------------------------------- leases

LEASE_ID = re.compile(r"lease ([0-9a-f]+) ")


def test_lease_grant_keepalive_timetolive_revoke(ctls: dict[str, Ctl]) -> None:
    def run(c: Ctl) -> list[str]:
        granted = c.ok("lease", "grant", "600")
        m = LEASE_ID.search(granted)
        assert m, granted
        hex_id = m.group(1)
        out = [granted]
        out.append(c.ok("put", "/lease/a", "1", f"--lease={hex_id}"))
        out.append(c.ok("put", "/lease/b", "2", f"--lease={hex_id}"))
        out.append(c.ok("put", "/lease/c", "3"))
        out.append(c.ok("lease", "keep-alive", "--once", hex_id))
        out.append(c.ok("lease", "timetolive", hex_id, "--keys"))
        out.append(c.ok("lease", "timetolive", hex_id))
        out.append(c.ok("lease", "list"))
        out.append(c.ok("lease", "revoke", hex_id))
        out.append(c.ok("get", "/lease/", "--prefix"))
        out.append(c.ok("lease", "timetolive", hex_id))
        out.append(c.run("lease", "revoke", hex_id).error)
        out.append(c.run("put", "/lease/d", "4", f"--lease={hex_id}").error)
        # etcd lists a lease's attached keys in Go map order (random): sort them.
        out[5] = re.sub(
            r"attached keys\(\[(.*)\]\)",
            lambda m: "attached keys([" + " ".join(sorted(m.group(1).split())) + "])",
            out[5],
        )
        text = [o.replace(hex_id, "ID") for o in out]
        return [re.sub(r"remaining\(\d+s\)", "remaining(N)", t) for t in text]

    out = both(ctls, run)
    for name in out:  # lease list lists every lease of the cluster: keep only ours
        out[name][7] = "ID\n" if "ID\n" in out[name][7] else out[name][7]
    res = same(out)
    assert res[0] == "lease ID granted with TTL(600s)\n"
    assert res[4] == "lease ID keepalived with TTL(600)\n"
    assert res[5] == (
        "lease ID granted with TTL(600s), remaining(N), attached keys([/lease/a /lease/b])\n"
    )
    assert res[6] == "lease ID granted with TTL(600s), remaining(N)\n"
    assert res[8] == "lease ID revoked\n"
    assert res[9] == "/lease/c\n3\n"
    assert res[10] == "lease ID already expired\n"
    assert res[11] == "1 Error: failed to revoke lease (etcdserver: requested lease not found)"
    assert res[12] == "1 Error: etcdserver: requested lease not found"


def test_lease_expiry_deletes_keys(ctls: dict[str, Ctl]) -> None:
    """A short lease without keep-alives expires and its keys go (bounded wait)."""
    def run(c: Ctl) -> str:
        hex_id = LEASE_ID.search(c.ok("lease", "grant", "2")).group(1)  # type: ignore[union-attr]
        c.ok("put", "/expire/k", "v", f"--lease={hex_id}")
        deadline = time.monotonic() + 30
        while c.ok("get", "/expire/k", "--print-value-only"):
            assert time.monotonic() < deadline, f"{c.name}: lease 2 s still alive after 30 s"
            time.sleep(0.2)  # poll interval
        return c.ok("lease", "timetolive", hex_id).replace(hex_id, "ID")

    assert same(both(ctls, run)) == "lease ID already expired\n"


# ----------------------------------------------------------------- cluster / endpoints


def test_member_list(ctls: dict[str, Ctl], pnyx_etcd3: Any) -> None:  # noqa: F811
    data = json.loads(ctls["pnyx"].ok("member", "list", "-w", "json"))
    members = data["members"]
    assert len(members) == 3
    clients = sorted(u for m in members for u in m.get("clientURLs", []))
    assert clients == sorted(f"http://{e}" for e in pnyx_etcd3.endpoints)
    assert all(m.get("peerURLs") for m in members)
    assert len({m["ID"] for m in members}) == 3
    table = ctls["pnyx"].ok("member", "list")
    assert len(table.strip().split("\n")) == 3 and table.count("started") == 3
    # The same shape as real etcd's.
    real = json.loads(ctls["etcd"].ok("member", "list", "-w", "json"))
    assert set(real) == set(data)
    assert set(real["members"][0]) <= set(members[0]) | {"isLearner"}


def test_endpoint_health_status_hashkv(ctls: dict[str, Ctl], pnyx_etcd3: Any) -> None:  # noqa: F811
    c = ctls["pnyx"]
    health = json.loads(c.ok("endpoint", "health", "-w", "json"))
    assert sorted(h["endpoint"] for h in health) == sorted(c.urls.split(","))
    assert all(h["health"] is True for h in health), health
    # (etcdctl 3.4 prints the simple format's "is healthy" lines on stderr)
    simple = c.run("endpoint", "health")
    assert simple.rc == 0 and simple.stderr.count("is healthy") == 3, simple
    status = json.loads(c.ok("endpoint", "status", "-w", "json"))
    assert len(status) == 3
    leaders = {s["Status"]["leader"] for s in status}
    assert len(leaders) == 1 and leaders != {0}
    assert {s["Status"]["header"]["member_id"] for s in status} >= leaders
    assert all(s["Status"]["raftTerm"] >= 1 for s in status)
    assert all(s["Status"]["version"] == "3.4.23" for s in status)
    assert all(s["Status"]["raftIndex"] >= 1 and s["Status"]["dbSize"] > 0 for s in status)
    real = json.loads(ctls["etcd"].ok("endpoint", "status", "-w", "json"))
    assert set(real[0]["Status"]) <= set(status[0]["Status"]), (real, status)
    # Every member hashes the same history the same way, at a revision all have applied.
    c.ok("put", "/hash/k", "v")
    rev = c.revision()
    deadline = time.monotonic() + 30
    while True:
        hashes = json.loads(c.ok("endpoint", "hashkv", f"--rev={rev}", "-w", "json"))
        values = {h["HashKV"]["hash"] for h in hashes}
        if len(hashes) == 3 and len(values) == 1:
            break
        assert time.monotonic() < deadline, hashes
        time.sleep(0.2)
    assert all(h["HashKV"]["header"]["revision"] >= rev for h in hashes)


# ----------------------------------------------------------------- lock / elect


class Holder:
    """A long-running etcdctl (``lock NAME`` or ``elect NAME VALUE``) whose lines are read
    as they come; stopped with SIGTERM (etcdctl then releases the lock / resigns)."""

    def __init__(self, c: Ctl, *args: str) -> None:
        self.proc = WatchProc(c.argv(*args), c.env)

    def __enter__(self) -> WatchProc:
        return self.proc

    def __exit__(self, *exc: object) -> None:
        self.proc.stop()


def test_lock_fencing_token_and_contention(ctls: dict[str, Ctl]) -> None:
    def run(c: Ctl) -> list[Any]:
        base = c.revision()
        with Holder(c, "lock", "/locks/L") as first:
            key1 = first.take(1)[0]
            waiter = WatchProc(
                c.argv("lock", "/locks/L", "--", "sh", "-c", "echo $ETCD_LOCK_KEY $ETCD_LOCK_REV"),
                c.env,
            )
            try:
                # While the first holds the lock the second must not get it.
                try:
                    early = waiter.take(1, timeout=1.0)
                except AssertionError:
                    early = []
                first.stop()  # SIGTERM: etcdctl lock releases the lock
                key2, rev2 = waiter.take(1)[0].split()
            finally:
                waiter.stop()
        return [
            early,
            key1.rsplit("/", 1)[0],
            key2.rsplit("/", 1)[0],
            key1 != key2,
            int(rev2) - base,
        ]

    out = same(both(ctls, run))
    assert out[0] == []
    assert out[1] == out[2] == "/locks/L"
    assert out[3] is True
    # ETCD_LOCK_REV is the revision at which the waiter got the lock: its key was written
    # at base+2, the first holder's key deleted (released) at base+3.
    assert out[4] == 3


def test_elect_and_observe(ctls: dict[str, Ctl]) -> None:
    def run(c: Ctl) -> list[str]:
        with Holder(c, "elect", "/elect/E", "v1") as leader:
            won = leader.take(2)
            with Holder(c, "elect", "-l", "/elect/E") as observer:
                seen = observer.take(2)
        return [won[0].rsplit("/", 1)[0], won[1], seen[0] == won[0], seen[1]]

    assert same(both(ctls, run)) == ["/elect/E", "v1", True, "v1"]


# ----------------------------------------------------------------- not supported yet


def test_snapshot_save(ctls: dict[str, Ctl], tmp_path: Path) -> None:
    """``etcdctl snapshot save`` stores and verifies both (the SHA-256 trailer).  pnyx's
    image is its own format, not bbolt: ``snapshot status/restore`` read only etcd's
    (a documented difference, services/etcd/README.md)."""
    import hashlib

    for name, c in ctls.items():
        one = c.urls.split(",")[0]
        path = tmp_path / f"{name}.db"
        out = c.ok("snapshot", "save", str(path), endpoints=one)
        assert out == f"Snapshot saved at {path}\n"
        saved = path.read_bytes()
        assert len(saved) % 512 == 32
        assert hashlib.sha256(saved[:-32]).digest() == saved[-32:]
    etcd_db = str(tmp_path / "etcd.db")
    status = json.loads(ctls["etcd"].ok("snapshot", "status", etcd_db, "-w", "json"))
    assert status["totalKey"] >= 1


def test_user_role_auth(ctls: dict[str, Ctl]) -> None:
    """Users, roles, a key-range permission, auth enable/disable: outputs and the
    permission-denied error as etcd's.  Auth is disabled again whatever happens."""

    def run(c: Ctl) -> list[str]:
        out = [
            c.ok("user", "add", "root:rootpw"),
            c.ok("role", "add", "reader"),
            c.ok("role", "grant-permission", "reader", "read", "/auth/", "--prefix=true"),
            c.ok("role", "grant-permission", "reader", "readwrite", "/auth/w"),
            c.ok("user", "add", "alice:alicepw"),
            c.ok("user", "grant-role", "alice", "reader"),
            c.ok("user", "list"),
            c.ok("role", "get", "reader"),
            c.ok("user", "get", "alice"),
        ]
        root, alice = "--user=root:rootpw", "--user=alice:alicepw"
        try:
            out.append(c.ok("auth", "enable"))
            out.append(c.ok(root, "put", "/auth/x", "1"))
            out.append(c.ok(alice, "get", "/auth/x"))
            out.append(c.ok(alice, "put", "/auth/w", "2"))
            out.append(c.run(alice, "put", "/auth/x", "2").error)
            out.append(c.run(alice, "get", "/other").error)
            out.append(c.run("--user=alice:wrong", "get", "/auth/x").error)
            out.append(c.run("get", "/auth/x").error)
        finally:
            out.append(c.ok(root, "auth", "disable"))
        out.append(c.ok("get", "/auth/", "--prefix"))
        out.append(c.ok("user", "delete", "alice"))
        out.append(c.ok("role", "delete", "reader"))
        out.append(c.ok("user", "delete", "root"))
        return out

    out = same(both(ctls, run))
    assert out[0] == "User root created\n"
    assert out[9] == "Authentication Enabled\n"
    assert out[11] == "/auth/x\n1\n"
    assert out[13] == "1 Error: etcdserver: permission denied"
    assert out[14] == "1 Error: etcdserver: permission denied"
    assert out[15] == "2 Error: etcdserver: authentication failed, invalid user ID or password"
    assert out[16] == "1 Error: etcdserver: user name is empty"
    assert out[17] == "Authentication Disabled\n"
    assert out[18] == "/auth/w\n2\n/auth/x\n1\n"


def test_member_remove_add_learner_promote(ctls: dict[str, Ctl], pnyx_etcd3: Any) -> None:  # noqa: F811
    """Membership through etcdctl on pnyx (a member can only be re-added with the peer URL
    of a configured node); output formats are etcd 3.4's.  Leaves three voters again."""
    c = ctls["pnyx"]
    one = f"http://{pnyx_etcd3.endpoints[0]}"
    members = json.loads(c.ok("member", "list", "-w", "json", endpoints=one))["members"]
    victim = next(m for m in members if f"http://{pnyx_etcd3.endpoints[0]}" not in m["clientURLs"])
    vid, peer = format(victim["ID"], "x"), victim["peerURLs"][0]
    out = c.ok("member", "remove", vid, endpoints=one)
    # etcdctl prints ids with %16x: padded with spaces to 16 columns.
    assert re.fullmatch(rf"Member +{vid} removed from cluster +[0-9a-f]+\n", out), out
    listed = c.ok("member", "list", endpoints=one)
    assert vid not in listed and len(listed.strip().split("\n")) == 2
    out = c.ok("member", "add", victim["name"], "--learner", f"--peer-urls={peer}", endpoints=one)
    assert re.match(rf"Member +{vid} added to cluster +[0-9a-f]+\n", out), out
    assert f'ETCD_INITIAL_ADVERTISE_PEER_URLS="{peer}"' in out
    assert 'ETCD_INITIAL_CLUSTER_STATE="existing"' in out
    learners = [
        m for m in json.loads(c.ok("member", "list", "-w", "json", endpoints=one))["members"]
        if m.get("isLearner")
    ]
    assert [format(m["ID"], "x") for m in learners] == [vid]
    deadline = time.monotonic() + 30
    while True:  # promotion is refused until the learner has caught up
        res = c.run("member", "promote", vid, endpoints=one)
        if res.rc == 0:
            break
        assert "learner" in res.error, res.error
        assert time.monotonic() < deadline, res.error
        time.sleep(0.2)  # poll interval
    assert re.fullmatch(rf"Member +{vid} promoted in cluster +[0-9a-f]+\n", res.stdout)
    final = json.loads(c.ok("member", "list", "-w", "json", endpoints=one))["members"]
    assert len(final) == 3 and not any(m.get("isLearner") for m in final)
    health = json.loads(c.ok("endpoint", "health", "-w", "json"))
    assert all(h["health"] for h in health), health

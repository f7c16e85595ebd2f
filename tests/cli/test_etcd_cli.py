"""``pnyx etcd kv``, ``pnyx lease``, ``pnyx lock``, ``pnyx elect`` against a real 3-node pnyx
etcd cluster (one cluster for the module), and their errors.

One-shot commands run in this process (click's runner: a busy machine spends seconds
starting each Python child); exit statuses as a real process sees them are checked in child
processes too, and long-running commands (watch, lock holders, campaigns) run as children
with bounded waits, stopped by pid in ``finally``."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.cli_helpers import PNYX, assert_one_line_error
from tests.services.etcd_cluster import EtcdCluster, free_ports

WAIT_S = 30.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    with EtcdCluster(tmp_path_factory.mktemp("etcd-cli") / "cluster", nodes=3) as c:
        yield c


def etcd(cluster: EtcdCluster | None, *args: str, stdin: str | None = None,
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """``pnyx ARGS`` in this process, ETCDCTL_ENDPOINTS set to the cluster's (when given,
    else unset); the result as a finished child process's."""
    from click.testing import CliRunner

    from pnyx.cli.main import cli

    environ: dict[str, str | None] = {
        "ETCDCTL_ENDPOINTS": cluster.endpoints_csv if cluster is not None else None}
    environ.update(env or {})
    result = CliRunner().invoke(cli, list(args), input=stdin or "", env=environ,
                                catch_exceptions=False)  # fmt: skip
    return subprocess.CompletedProcess(list(args), result.exit_code, result.stdout,
                                       result.stderr)  # fmt: skip


def etcd_process(*args: str, env: dict[str, str] | None = None,
                 ) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """``pnyx ARGS`` as a child process (bounded)."""
    environ = {k: v for k, v in os.environ.items() if k != "ETCDCTL_ENDPOINTS"}
    environ.update(env or {})
    return subprocess.run([*PNYX, *args], stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=120, env=environ, check=False)  # fmt: skip


def ok(cluster: EtcdCluster, *args: str, stdin: str | None = None) -> list[str]:
    result = etcd(cluster, *args, stdin=stdin)
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result.stdout.splitlines()


def spawn(cluster: EtcdCluster, *args: str) -> subprocess.Popen[str]:
    environ = dict(os.environ, ETCDCTL_ENDPOINTS=cluster.endpoints_csv)
    return subprocess.Popen([*PNYX, *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=environ)  # fmt: skip


def stop(proc: subprocess.Popen[str]) -> None:
    """SIGTERM the child (by pid), SIGKILL it after a bound."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)


_readers: dict[int, queue.Queue[str | None]] = {}


def read_line(proc: subprocess.Popen[str], timeout_s: float = WAIT_S) -> str:
    """The child's next stdout line (bounded: SIGKILL and fail after ``timeout_s``).

    A thread per child reads its lines into a queue (a select on the pipe would miss lines
    already in the file object's buffer)."""
    lines = _readers.get(proc.pid)
    if lines is None:
        lines = _readers[proc.pid] = queue.Queue()
        assert proc.stdout is not None
        stream, sink = proc.stdout, lines

        def pump() -> None:
            for line in stream:
                sink.put(line.rstrip("\n"))
            sink.put(None)

        threading.Thread(target=pump, daemon=True).start()
    try:
        line = lines.get(timeout=timeout_s)
    except queue.Empty:
        proc.kill()
        raise AssertionError(f"no output from {proc.args!r} within {timeout_s} s") from None
    if line is None:
        raise AssertionError(f"{proc.args!r} ended its output (status {proc.poll()})")
    return line


# -- kv ----------------------------------------------------------------------------------------


def test_put_get_del_with_prefix_limit_rev(cluster: EtcdCluster) -> None:
    assert ok(cluster, "etcd", "kv", "put", "cli/a", "1") == ["OK"]
    assert ok(cluster, "etcd", "kv", "put", "cli/b", "2") == ["OK"]
    assert ok(cluster, "etcd", "kv", "put", "cli/a", "3", "--prev-kv") == ["OK", "cli/a", "1"]
    assert ok(cluster, "etcd", "kv", "get", "cli/", "--prefix") == ["cli/a", "3", "cli/b", "2"]
    page = json.loads(ok(cluster, "etcd", "kv", "get", "cli/", "--prefix", "--limit", "1",
                         "-w", "json")[0])  # fmt: skip
    assert page["count"] == 2 and page["more"] is True and len(page["kvs"]) == 1
    first = page["kvs"][0]
    assert first["key"] == "cli/a" and first["version"] == 2
    old = ok(cluster, "etcd", "kv", "get", "cli/a", "--rev", str(first["create_revision"]))
    assert old == ["cli/a", "1"]
    assert ok(cluster, "etcd", "kv", "get", "cli/", "--prefix", "--count-only") == ["2"]
    assert ok(cluster, "etcd", "kv", "get", "cli/", "--prefix", "--keys-only") == ["cli/a",
                                                                                   "cli/b"]
    assert ok(cluster, "etcd", "kv", "put", "cli/c", stdin="from stdin") == ["OK"]
    assert ok(cluster, "etcd", "kv", "get", "cli/c", "--print-value-only") == ["from stdin"]
    assert ok(cluster, "etcd", "kv", "del", "cli/", "--prefix") == ["3"]
    assert ok(cluster, "etcd", "kv", "get", "cli/", "--prefix") == []


def test_txn_from_text_and_json(cluster: EtcdCluster, tmp_path: Path) -> None:
    ok(cluster, "etcd", "kv", "put", "txn/k", "v1")
    spec = 'value("txn/k") = "v1"\n\nput txn/k v2\nget txn/k\n\nget txn/k\n'
    assert ok(cluster, "etcd", "kv", "txn", stdin=spec) == ["SUCCESS", "", "OK", "",
                                                             "txn/k", "v2"]  # fmt: skip
    # the same compare again fails: the failure branch runs
    assert ok(cluster, "etcd", "kv", "txn", stdin=spec) == ["FAILURE", "", "txn/k", "v2"]
    path = tmp_path / "txn.json"
    path.write_text(json.dumps({
        "compare": [{"key": "txn/k", "target": "version", "op": "=", "value": 2}],
        "success": [{"del": {"key": "txn/", "prefix": True}}],
        "failure": [],
    }))  # fmt: skip
    out = json.loads(ok(cluster, "etcd", "kv", "txn", "--file", str(path), "-w", "json")[0])
    assert out["succeeded"] is True and out["responses"] == [{"del": {"deleted": 1}}]
    bad = etcd(cluster, "etcd", "kv", "txn", stdin='nonsense("k") = "v"\n')
    assert_one_line_error(bad, 2, "bad compare")
    bad = etcd(cluster, "etcd", "kv", "txn", stdin='{"compare": [{"key": "k"}]}')
    assert_one_line_error(bad, 2, "needs key, target, op")


def test_watch_history_live_and_bounds(cluster: EtcdCluster) -> None:
    first = json.loads(ok(cluster, "etcd", "kv", "put", "w/a", "1", "-w", "json")[0])
    ok(cluster, "etcd", "kv", "put", "w/b", "2")
    ok(cluster, "etcd", "kv", "del", "w/a")
    rev = str(first["header"]["revision"])
    history = ok(cluster, "etcd", "kv", "watch", "w/", "--prefix", "--rev", rev, "--count", "3")
    assert history == ["PUT", "w/a", "1", "PUT", "w/b", "2", "DELETE", "w/a", ""]
    started = time.monotonic()
    assert ok(cluster, "etcd", "kv", "watch", "w/none", "--timeout", "0.5") == []
    assert time.monotonic() - started < 20
    now = json.loads(ok(cluster, "etcd", "kv", "get", "w/", "--prefix", "-w", "json")[0])
    after = str(now["header"]["revision"] + 1)  # however late the child starts, from here
    live = spawn(cluster, "etcd", "kv", "watch", "w/live", "--rev", after, "--count", "2",
                 "-w", "json")  # fmt: skip
    try:
        time.sleep(0.5)
        ok(cluster, "etcd", "kv", "put", "w/live", "x")
        ok(cluster, "etcd", "kv", "put", "w/live", "y")
        events = [json.loads(read_line(live)) for _ in range(2)]
        assert [e["kv"]["value"] for e in events] == ["x", "y"]
        assert events[0]["kv"]["mod_revision"] < events[1]["kv"]["mod_revision"]
        assert live.wait(WAIT_S) == 0
    finally:
        stop(live)


# -- lease ---------------------------------------------------------------------------------------


def test_lease_grant_keep_alive_revoke(cluster: EtcdCluster) -> None:
    line = ok(cluster, "lease", "grant", "30")[0]
    assert line.startswith("lease ") and line.endswith("granted with TTL(30s)")
    lease_id = line.split()[1]
    ok(cluster, "etcd", "kv", "put", "lease/k", "v", "--lease", lease_id)
    ttl = ok(cluster, "lease", "timetolive", lease_id, "--keys")[0]
    assert "granted with TTL(30s)" in ttl and "lease/k" in ttl
    assert ok(cluster, "lease", "keep-alive", lease_id, "--once") == [
        f"lease {lease_id} keepalived with TTL(30)"]
    assert ok(cluster, "lease", "revoke", lease_id) == [f"lease {lease_id} revoked"]
    assert ok(cluster, "etcd", "kv", "get", "lease/k") == []
    gone = etcd(cluster, "lease", "keep-alive", lease_id, "--once")
    assert_one_line_error(gone, 1, "requested lease not found")
    assert_one_line_error(etcd(cluster, "lease", "revoke", "zz"), 2, "bad lease id 'zz'")


# -- lock and elect --------------------------------------------------------------------------------


def test_lock_runs_the_command_with_the_fencing_token(cluster: EtcdCluster,
                                                      tmp_path: Path) -> None:  # fmt: skip
    log = tmp_path / "sections.log"
    body = (
        "import os, sys, time\n"
        f"log = open({str(log)!r}, 'a')\n"
        "log.write('start ' + os.environ['PNYX_LOCK_TOKEN'] + '\\n'); log.flush()\n"
        "time.sleep(0.5)\n"
        "log.write('end ' + os.environ['PNYX_LOCK_KEY'] + '\\n'); log.flush()\n"
        "sys.exit(3)\n"
    )
    holders = [spawn(cluster, "lock", "cli-lock", "--", sys.executable, "-c", body)
               for _ in range(3)]  # fmt: skip
    try:
        codes = [p.wait(WAIT_S) for p in holders]
    finally:
        for proc in holders:
            stop(proc)
    assert codes == [3, 3, 3]  # the command's exit status
    lines = log.read_text().splitlines()
    assert [line.split()[0] for line in lines] == ["start", "end"] * 3  # never interleaved
    tokens = [int(line.split()[1]) for line in lines[0::2]]
    assert tokens == sorted(tokens) and len(set(tokens)) == 3 and tokens[0] > 0
    assert all(line.split()[1].startswith("cli-lock/") for line in lines[1::2])
    # released: the lock prefix is empty again
    assert ok(cluster, "etcd", "kv", "get", "cli-lock/", "--prefix") == []


def test_lock_without_command_holds_until_sigterm(cluster: EtcdCluster) -> None:
    holder = spawn(cluster, "lock", "held-lock")
    try:
        key = read_line(holder)
        token = int(read_line(holder))
        assert key.startswith("held-lock/")
        kv = json.loads(ok(cluster, "etcd", "kv", "get", key, "-w", "json")[0])["kvs"][0]
        assert kv["create_revision"] == token
        waiting = etcd(cluster, "lock", "held-lock", "--timeout", "1", "--", "true")
        assert_one_line_error(waiting, 1, "timed out waiting for lock 'held-lock'")
        os.kill(holder.pid, signal.SIGTERM)
        assert holder.wait(WAIT_S) == 0
        assert ok(cluster, "etcd", "kv", "get", key) == []  # released on SIGTERM
    finally:
        stop(holder)


def test_elect_campaign_and_listen(cluster: EtcdCluster) -> None:
    leader = spawn(cluster, "elect", "cli-election", "first")
    follower = None
    try:
        key = read_line(leader)
        assert key.startswith("cli-election/") and read_line(leader) == "first"
        follower = spawn(cluster, "elect", "cli-election", "second")
        time.sleep(0.5)
        seen = ok(cluster, "elect", "cli-election", "--listen", "--count", "1", "--timeout", "20")
        assert seen == [key, "first"]
        os.kill(leader.pid, signal.SIGTERM)  # resigns: the second campaigner leads
        assert leader.wait(WAIT_S) == 0
        assert read_line(follower).startswith("cli-election/")
        assert read_line(follower) == "second"
    finally:
        stop(leader)
        if follower is not None:
            stop(follower)
    assert_one_line_error(etcd(cluster, "elect", "x"), 2, "give a PROPOSAL")


# -- errors ----------------------------------------------------------------------------------------


def test_unreachable_endpoints_and_bad_usage() -> None:
    [port] = free_ports(1)
    dead = f"127.0.0.1:{port}"
    # as a real process: exit status 1, one line on stderr
    result = etcd_process("etcd", "kv", "get", "k", "--endpoints", dead, "--dial-timeout", "0.3")
    assert_one_line_error(result, 1, f"cannot reach any endpoint ({dead})")
    usage = etcd_process("lease", "grant")
    assert usage.returncode == 2 and "Missing argument 'TTL'" in usage.stderr
    options = ["--endpoints", dead, "--dial-timeout", "0.3"]
    for args in (["etcd", "kv", "get", "k", *options], ["etcd", "kv", "put", "k", "v", *options],
                 ["lease", "grant", "5", *options], ["lock", *options, "l", "--", "true"]):
        result = etcd(None, *args)
        assert_one_line_error(result, 1, f"cannot reach the etcd cluster: cannot reach any "
                                         f"endpoint ({dead})")  # fmt: skip
    # ETCDCTL_ENDPOINTS is the default
    result = etcd(None, "etcd", "kv", "get", "k", "--dial-timeout", "0.3",
                  env={"ETCDCTL_ENDPOINTS": dead})  # fmt: skip
    assert_one_line_error(result, 1, dead)
    bad = etcd(None, "etcd", "kv", "get", "k", "--endpoints", "nonsense")
    assert_one_line_error(bad, 2, "--endpoints: bad endpoint 'nonsense'")
    missing = etcd(None, "etcd", "kv", "get")
    assert missing.returncode == 2 and "Missing argument 'KEY'" in missing.stderr
    both = etcd(None, "etcd", "kv", "get", "a", "b", "--prefix")
    assert_one_line_error(both, 2, "--prefix cannot be combined")
    unknown = etcd(None, "etcd", "kv", "get", "k", "--no-such-flag")
    assert unknown.returncode == 2 and "No such option" in unknown.stderr


def test_etcd_errors_exit_1(cluster: EtcdCluster) -> None:
    future = etcd(cluster, "etcd", "kv", "get", "k", "--rev", "1000000")
    assert_one_line_error(future, 1, "etcdserver: mvcc: required revision is a future revision")
    nothing = etcd(cluster, "lease", "revoke", "123abc")
    assert_one_line_error(nothing, 1, "etcdserver: requested lease not found")


@pytest.mark.skipif(shutil.which("etcdctl") is None, reason="needs etcdctl (Debian etcd-client)")
def test_lock_and_election_interoperate_with_etcdctl(cluster: EtcdCluster) -> None:
    """pnyx lock / elect are etcd's concurrency recipes: etcdctl sees the same queue."""
    env = dict(os.environ, ETCDCTL_API="3", ETCDCTL_ENDPOINTS=cluster.endpoints_csv)

    def etcdctl(*args: str, timeout_s: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["etcdctl", *args], capture_output=True, text=True, env=env,
                              timeout=timeout_s, check=False)  # fmt: skip

    holder = spawn(cluster, "lock", "interop-lock")
    try:
        key = read_line(holder)
        read_line(holder)
        blocked = subprocess.run(
            ["timeout", "2", "etcdctl", "lock", "interop-lock", "echo", "got-it"],
            capture_output=True, text=True, env=env, timeout=30, check=False)  # fmt: skip
        assert "got-it" not in blocked.stdout and blocked.returncode == 124
        os.kill(holder.pid, signal.SIGTERM)
        assert holder.wait(WAIT_S) == 0
        assert "got-it" in etcdctl("lock", "interop-lock", "echo", "got-it").stdout
        assert key.startswith("interop-lock/")
    finally:
        stop(holder)
    leader = spawn(cluster, "elect", "interop-election", "pnyx-proposal")
    try:
        read_line(leader)
        assert read_line(leader) == "pnyx-proposal"
        observed = subprocess.run(
            ["timeout", "3", "etcdctl", "elect", "-l", "interop-election"],
            capture_output=True, text=True, env=env, timeout=30, check=False)  # fmt: skip
        assert "pnyx-proposal" in observed.stdout.splitlines()
    finally:
        stop(leader)

"""etcd service: pnyx etcd vs real etcd 3.4, 3 nodes each, fsync on, same run (issue 17).

    .venv/bin/python bench/bench_etcd.py [--quick] [--check-loads s,m,l] [--clients 1,16,64,256]
        [--ops put,get,sget] [--seconds 5] [--repeat 3] [--procs 2] [--profile]
        [--out bench/results]

Starts a 3-member **real etcd** (``/usr/bin/etcd``, etcd's defaults: fsync on, heartbeat
100 ms, election 1 s) and a 3-node **pnyx etcd** cluster (``pnyx serve --protocol etcd``,
WAL + fdatasync, tick 10 ms), both on loopback with data in fresh temporary directories on
disk (not tmpfs), then, with both clusters up, alternating etcd and pnyx cell by cell so a
change in the machine's load hits both:

1. ``etcdctl check perf --load=s|m|l --auto-compact`` (etcdctl 3.4, 60 s each): PASS/FAIL and
   the writes/s it reports;
2. the load generator in ``bench/etcd_loadgen.py`` (``--procs`` worker processes, async
   ``grpc.aio`` with raw ``aetcd.rpc`` stubs, **one channel per client**, clients
   round-robin over the 3 endpoints, closed loop) at each client count for puts
   (256-byte values), linearizable gets and serializable gets: throughput and
   p50/p99/p999 latency; the 64- and 256-client puts are run ``--repeat`` times and the
   median is reported; between cells both clusters are compacted to their latest revision;
3. with ``--profile``, one more 64-client put cell on pnyx with ``py-spy record`` attached
   to the pnyx leader: the top functions by own and by total samples.

It prints a table, writes ``OUT/etcd.json`` and the throughput-vs-latency plot
``OUT/etcd-throughput-latency.png`` (matplotlib, Agg).  Every process it starts is stopped
by pid in ``finally`` (SIGTERM, SIGKILL after a bound) and both data directories are
removed.  The load average (``/proc/loadavg``) is recorded before and after each phase:
the load generator runs on the same 2 cores as both clusters, so its own CPU time is
reported per cell (``gen cpu``).  ``--quick`` (1 s cells, check perf s only, no repeats)
is the smoke mode.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pnyx.cli.cluster_cmd import free_ports

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from etcd_loadgen import GET_KEYS, VALUE, percentile  # noqa: E402

ETCD_BIN = os.environ.get("PNYX_ETCD_BIN") or shutil.which("etcd") or "/usr/bin/etcd"
ETCDCTL_BIN = os.environ.get("PNYX_ETCDCTL_BIN") or shutil.which("etcdctl") or "/usr/bin/etcdctl"
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 10.0
CHECK_PERF_TIMEOUT_S = 240.0
CELL_SLACK_S = 60.0
"""Bound on a load-generator cell beyond its own duration (start-up, drain)."""
TARGET_RATIO = 1.0
TARGET_P99_MS = 50.0
KEY_CLIENTS = (64, 256)
OP_NAMES = {"put": "put", "get": "get (linearizable)", "sget": "get (serializable)"}


def loadavg() -> str:
    """The 1/5/15-minute load averages."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())




# ------------------------------------------------------------------------- the clusters


@dataclass
class Cluster:
    """Three member processes this script started, their client endpoints and data dir."""

    name: str
    root: Path
    endpoints: list[str] = field(default_factory=list)
    idle_cpu: float = 0.0
    """Cores all members keep busy with no client load (ticks, heartbeats)."""
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def urls(self) -> str:
        return ",".join(f"http://{e}" for e in self.endpoints)

    def log_tail(self, lines: int = 20) -> str:
        out = []
        for log in sorted(self.root.glob("*.log")):
            with contextlib.suppress(OSError):
                text = log.read_text(errors="replace").splitlines()[-lines:]
                out.append(f"--- {log.name}\n" + "\n".join(text))
        return "\n".join(out)

    def check_alive(self) -> None:
        for proc in self.procs:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} member exited with {proc.returncode}\n{self.log_tail()}"
                )

    def stop(self) -> None:
        """SIGTERM every member (by pid), SIGKILL after a bound; remove the data dir."""
        try:
            for proc in self.procs:
                if proc.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(proc.pid, signal.SIGTERM)
            deadline = time.monotonic() + STOP_TIMEOUT_S
            for proc in self.procs:
                try:
                    proc.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(proc.pid, signal.SIGKILL)
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.wait(timeout=STOP_TIMEOUT_S)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def cpu_seconds(self) -> list[float]:
        """User + system CPU seconds each member has used so far (``/proc/PID/stat``)."""
        tick = os.sysconf("SC_CLK_TCK")
        out = []
        for proc in self.procs:
            try:
                fields = Path(f"/proc/{proc.pid}/stat").read_text().rpartition(")")[2].split()
                out.append((int(fields[11]) + int(fields[12])) / tick)
            except (OSError, IndexError, ValueError):
                out.append(0.0)
        return out

    def status(self, endpoint: str, timeout_s: float = 2.0) -> Any:
        import grpc
        from aetcd.rpc import rpc_pb2, rpc_pb2_grpc

        with grpc.insecure_channel(endpoint) as ch:
            try:
                return rpc_pb2_grpc.MaintenanceStub(ch).Status(
                    rpc_pb2.StatusRequest(), timeout=timeout_s
                )
            except grpc.RpcError:
                return None

    def leader_pid(self) -> int:
        """Pid of the member that is leader now (the one whose Status names itself)."""
        for endpoint, proc in zip(self.endpoints, self.procs, strict=True):
            st = self.status(endpoint)
            if st is not None and st.leader and st.leader == st.header.member_id:
                return proc.pid
        raise RuntimeError(f"{self.name}: no member says it is the leader")

    def wait_ready(self) -> None:
        """Until every member knows a leader and serves a linearizable read (bounded)."""
        import grpc
        from aetcd.rpc import rpc_pb2, rpc_pb2_grpc

        deadline = time.monotonic() + START_TIMEOUT_S
        pending = list(self.endpoints)
        while pending:
            self.check_alive()
            still = []
            for endpoint in pending:
                st = self.status(endpoint)
                ok = st is not None and st.leader != 0
                if ok:
                    with grpc.insecure_channel(endpoint) as ch:
                        try:
                            rpc_pb2_grpc.KVStub(ch).Range(
                                rpc_pb2.RangeRequest(key=b"health"), timeout=2.0
                            )
                        except grpc.RpcError:
                            ok = False
                if not ok:
                    still.append(endpoint)
            pending = still
            if pending and time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: {pending} not ready\n{self.log_tail()}")
            if pending:
                time.sleep(0.1)  # poll interval


def _launch(cluster: Cluster, argv: list[str], log_name: str,
            env: dict[str, str] | None = None) -> None:
    with open(cluster.root / log_name, "wb") as out:
        cluster.procs.append(
            subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                             stderr=subprocess.STDOUT, start_new_session=True, env=env)
        )


def start_real_etcd(root: Path) -> Cluster:
    """Three real etcd 3.4 members on loopback, etcd's defaults (fsync on)."""
    cluster = Cluster("etcd", root)
    ports = free_ports(6)
    names = ["e1", "e2", "e3"]
    peer = {n: f"http://127.0.0.1:{ports[3 + i]}" for i, n in enumerate(names)}
    client = {n: f"127.0.0.1:{ports[i]}" for i, n in enumerate(names)}
    initial = ",".join(f"{n}={u}" for n, u in peer.items())
    token = "pnyx-bench-" + secrets.token_hex(6)
    cluster.endpoints = [client[n] for n in names]
    try:
        for n in names:
            _launch(cluster, [
                ETCD_BIN, "--name", n, "--data-dir", str(root / n),
                "--listen-client-urls", f"http://{client[n]}",
                "--advertise-client-urls", f"http://{client[n]}",
                "--listen-peer-urls", peer[n],
                "--initial-advertise-peer-urls", peer[n],
                "--initial-cluster", initial,
                "--initial-cluster-state", "new",
                "--initial-cluster-token", token,
                "--log-level", "warn",
            ], f"{n}.log")  # fmt: skip
        cluster.wait_ready()
    except BaseException:
        cluster.stop()
        raise
    return cluster


def start_pnyx_etcd(root: Path, tick_ms: int, src: Path | None = None) -> Cluster:
    """Three ``pnyx serve --protocol etcd`` processes on loopback (WAL + fdatasync);
    with ``src``, pnyx is imported from that source tree (``PYTHONPATH``)."""
    cluster = Cluster("pnyx", root)
    env = {**os.environ, "PYTHONPATH": str(src)} if src else None
    ports = free_ports(6)
    ids = [1, 2, 3]
    peers = ",".join(f"{i}=127.0.0.1:{ports[2 + i]}" for i in ids)
    clients = ",".join(f"{i}=127.0.0.1:{ports[i - 1]}" for i in ids)
    cluster.endpoints = [f"127.0.0.1:{ports[i - 1]}" for i in ids]
    cluster_id = "bench-" + secrets.token_hex(6)
    try:
        for i in ids:
            _launch(cluster, [
                sys.executable, "-m", "pnyx", "serve", "--id", str(i), "--peers", peers,
                "--cluster-id", cluster_id, "--data-dir", str(root / f"node-{i}"),
                "--protocol", "etcd", "--tick-ms", str(tick_ms),
                "--client-port", str(ports[i - 1]), "--client-endpoints", clients,
                "--log-level", "warning",
            ], f"node-{i}.log", env)  # fmt: skip
        cluster.wait_ready()
    except BaseException:
        cluster.stop()
        raise
    return cluster


def preload(cluster: Cluster) -> None:
    """The keys the get workloads read."""
    import grpc
    from aetcd.rpc import rpc_pb2, rpc_pb2_grpc

    with grpc.insecure_channel(cluster.endpoints[0]) as ch:
        kv = rpc_pb2_grpc.KVStub(ch)
        for k in range(GET_KEYS):
            kv.Put(rpc_pb2.PutRequest(key=f"bench-get/{k}".encode(), value=VALUE), timeout=10)


def compact(cluster: Cluster) -> None:
    """Compact to the latest revision (keeps history, and pnyx's memory, bounded)."""
    import grpc
    from aetcd.rpc import rpc_pb2, rpc_pb2_grpc

    with grpc.insecure_channel(cluster.endpoints[0]) as ch:
        kv = rpc_pb2_grpc.KVStub(ch)
        try:
            rev = kv.Range(rpc_pb2.RangeRequest(key=b"health"), timeout=10).header.revision
            kv.Compact(rpc_pb2.CompactionRequest(revision=rev, physical=True), timeout=60)
        except grpc.RpcError as exc:
            print(f"  ({cluster.name}: compaction failed: {exc.code().name})", flush=True)


# ------------------------------------------------------------------------- check perf

_THROUGHPUT = re.compile(r"(PASS|FAIL):\s*Throughput (?:is|too low:) (\d+) writes/s")
_VERDICT_WORDS = ("PASS", "FAIL", "Throughput", "Slowest", "Stddev")


def check_perf(cluster: Cluster, load: str) -> dict[str, Any]:
    """``etcdctl check perf --load=LOAD`` against the cluster: verdict, writes/s, output."""
    env = {**os.environ, "ETCDCTL_API": "3"}
    argv = [ETCDCTL_BIN, "--endpoints", cluster.urls, "check", "perf", f"--load={load}",
            "--auto-compact"]
    load_before = loadavg()
    started = time.monotonic()
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, env=env,
                              timeout=CHECK_PERF_TIMEOUT_S, check=False)
        out = proc.stdout + proc.stderr
        code: int | None = proc.returncode
    except subprocess.TimeoutExpired as exc:
        out = f"timed out after {CHECK_PERF_TIMEOUT_S:.0f} s: {exc.stdout!r}"
        code = None
    lines = [ln.strip() for ln in out.replace("\r", "\n").splitlines() if ln.strip()]
    verdict_lines = [ln for ln in lines if ln.startswith(_VERDICT_WORDS)]
    match = _THROUGHPUT.search(out)
    verdict = "PASS" if code == 0 and lines and lines[-1] == "PASS" else "FAIL"
    return {
        "system": cluster.name,
        "load": load,
        "verdict": verdict,
        "writes_per_s": int(match.group(2)) if match else None,
        "lines": verdict_lines or lines[-5:],
        "seconds": round(time.monotonic() - started, 1),
        "load_before": load_before,
        "load_after": loadavg(),
    }


# ------------------------------------------------------------------------- load generator


class Workers:
    """``count`` persistent load-generator processes (``etcd_loadgen.py``)."""

    def __init__(self, count: int) -> None:
        self.procs = [
            subprocess.Popen([sys.executable, str(HERE / "etcd_loadgen.py")],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                             bufsize=1)
            for _ in range(count)
        ]

    def _read(self, proc: subprocess.Popen[str], deadline: float) -> dict[str, Any]:
        import select

        assert proc.stdout is not None
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("load generator did not answer in time")
            ready, _, _ = select.select([proc.stdout], [], [], left)
            if ready:
                line = proc.stdout.readline()
                if not line:
                    raise RuntimeError(f"load generator exited ({proc.poll()})")
                return json.loads(line)

    def run(self, cluster: Cluster, op: str, clients: int, seconds: float,
            warmup_s: float) -> dict[str, Any]:
        """One cell: ``clients`` clients split over the workers; merged figures."""
        used = self.procs[: max(1, min(len(self.procs), clients))]
        shares = [clients // len(used) + (1 if i < clients % len(used) else 0)
                  for i in range(len(used))]
        deadline = time.monotonic() + warmup_s + seconds + CELL_SLACK_S
        first = 0
        for proc, share in zip(used, shares, strict=True):
            assert proc.stdin is not None
            spec = {"endpoints": cluster.endpoints, "op": op, "first_client": first,
                    "clients": share, "seconds": seconds, "warmup_s": warmup_s}
            proc.stdin.write(json.dumps(spec) + "\n")
            first += share
        answers = [self._read(p, deadline) for p in used]
        failed = [a["error"] for a in answers if "error" in a]
        go = time.time() + 0.2
        if not failed:
            for proc in used:
                assert proc.stdin is not None
                proc.stdin.write(json.dumps({"go": go}) + "\n")
        results = [self._read(p, deadline) for p in used] if not failed else []
        failed += [r["error"] for r in results if "error" in r]
        if failed:
            raise RuntimeError(f"{cluster.name} {op} x{clients}: {failed}")
        hist: dict[int, int] = {}
        for r in results:
            for k, v in r["hist"].items():
                hist[int(k)] = hist.get(int(k), 0) + v
        ok = sum(r["ok"] for r in results)
        return {
            "system": cluster.name, "op": op, "clients": clients,
            "ops_per_s": ok / seconds,
            "errors": sum(r["errors"] for r in results),
            "error_sample": sorted({e for r in results for e in r["error_sample"]})[:3],
            "p50_ms": percentile(hist, 0.50) * 1000,
            "p99_ms": percentile(hist, 0.99) * 1000,
            "p999_ms": percentile(hist, 0.999) * 1000,
            "gen_cpu": sum(r["cpu_s"] for r in results) / seconds,
        }

    def close(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(OSError):
                assert proc.stdin is not None
                proc.stdin.close()
        for proc in self.procs:
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=STOP_TIMEOUT_S)


def measure_cell(workers: Workers, cluster: Cluster, op: str, clients: int, seconds: float,
                 warmup: float) -> dict[str, Any]:
    """One load-generator cell with the load average and the members' CPU use around it
    (``server_cpu``: cores each member kept busy over the cell, warm-up included)."""
    before, cpu0, t0 = loadavg(), cluster.cpu_seconds(), time.monotonic()
    row = workers.run(cluster, op, clients, seconds, warmup)
    wall = time.monotonic() - t0
    cpu1 = cluster.cpu_seconds()
    row.update(load_before=before, load_after=loadavg(),
               server_cpu=[round((b - a) / wall, 2) for a, b in zip(cpu0, cpu1, strict=True)])
    row["srv_cpu"] = sum(row["server_cpu"])
    idle = cluster.idle_cpu
    row["cpu_ms_per_req"] = (
        (row["srv_cpu"] - idle) * 1000 / row["ops_per_s"] if row["ops_per_s"] else 0.0
    )
    return row


# ------------------------------------------------------------------------- profile


SPY_RATE = 100
"""py-spy samples per second."""


def profile_cell(workers: Workers, pnyx: Cluster, out: Path, seconds: float,
                 clients: int, native: bool = False) -> dict[str, Any]:
    """A ``clients``-put cell on pnyx with ``py-spy record`` attached to the leader
    (collapsed stacks per thread, idle samples left out; ``native`` adds C frames)."""
    spy_bin = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not os.access(spy_bin, os.X_OK):
        return {"error": "py-spy not installed (pip install py-spy)"}
    pid = pnyx.leader_pid()
    raw = out / "etcd-pnyx-leader.pyspy.txt"
    # the load runs 1 s of warm-up plus ``seconds``; py-spy starts 2 s after the cell
    # is handed out (channels open, warm-up under way) and records ``seconds - 2``
    duration = max(1, int(seconds) - 2)
    argv = [spy_bin, "record", "--pid", str(pid), "--duration", str(duration),
            "--rate", str(SPY_RATE), "--format", "raw", "--output", str(raw), "--threads",
            *(["--native"] if native else ["--nonblocking"])]
    spy: list[subprocess.Popen[str]] = []

    def start_spy() -> None:
        spy.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                    text=True))

    timer = threading.Timer(2.0, start_spy)
    cpu0, t0 = pnyx.cpu_seconds(), time.monotonic()
    timer.start()
    try:
        row = workers.run(pnyx, "put", clients, seconds, 1.0)
    finally:
        timer.cancel()
        timer.join()
        for proc in spy:
            try:
                proc.wait(timeout=duration + 30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=STOP_TIMEOUT_S)
    wall = time.monotonic() - t0
    cpu = [round((b - a) / wall, 2) for a, b in zip(cpu0, pnyx.cpu_seconds(), strict=True)]
    err = spy[0].stderr.read() if spy and spy[0].stderr else "py-spy did not start"
    summary = (summarize_stacks(raw, SPY_RATE * duration) if raw.exists()
               else {"error": err or "no output"})
    return {"row": row, "server_cpu": cpu, "leader_pid": pid, "raw": str(raw),
            "native": native, **summary}


def _frame_name(frame: str) -> str:
    # py-spy raw frames look like "function (path/to/file.py:123)"; drop the line number
    return re.sub(r":\d+\)$", ")", frame.strip())


WAIT_LEAVES = (
    "Runner.run (asyncio/runners.py)",  # uvloop's C loop: its epoll wait has no Python frame
    "_worker (concurrent/futures/thread.py)",  # an executor thread waiting for work
    "Thread.run (threading.py)",  # grpc's poller thread (_poll_wrapper) waiting in C
    "epoll_wait", "epoll_pwait",  # --native: the same waits
)
"""Leaf frames py-spy counts as active that are waits (it recognises idle threads by their
Python frame, and these wait in C): reported apart as ``waiting``, not as work."""


PROFILE_GROUPS = (
    ("fdatasync (WAL thread)", ("_datasync", "fdatasync")),
    ("WAL write", ("WriteAheadLog.write", "_pwrite_all")),
    ("apply: etcd state machine", ("EtcdStateMachine.apply", "ServedMachine", "EtcdStore",
                                   "MvccStore", "decode_command")),
    ("raft: step / ready / advance", ("RaftNode.",)),
    ("gRPC handlers (KV.Put/Range, proto conversion)", (
        "KvService", "to_proto", "from_proto", "unary.<locals>", "respond",
        "EtcdServer.header")),
    ("gateway and its client (lanes, batches)", ("Gateway.", "AsyncClient", "FramedClient")),
    ("transport (socket writes/reads, framing, codec)", (
        "_pump", "Transport.", "FrameDecoder", "Codec.", "StreamWriter.write", "StreamReader")),
    ("metrics (prometheus_client)", ("prometheus_client",)),
    ("node runner loop", ("NodeRunner.",)),
)
"""Where a sample's work belongs: the group of the innermost frame that matches one."""


def summarize_stacks(raw: Path, wall_samples: int, top: int = 25) -> dict[str, Any]:
    """Per thread and per function: share of one core's wall time (``wall_samples`` =
    rate x duration) in samples py-spy counts as active; functions by own (leaf) and total
    samples, the waits of :data:`WAIT_LEAVES` apart."""
    waiting = 0
    groups: dict[str, int] = {}
    own: dict[str, int] = {}
    total: dict[str, int] = {}
    threads: dict[str, int] = {}
    samples = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame_name(f) for f in stack.split(";")]
        thread = frames[0] if frames[0].startswith(("thread", "process")) else "?"
        if thread != "?":
            frames = frames[1:] or [thread]
        # name a thread by its outermost pnyx/asyncio frame, so the table is readable
        label = next((f for f in frames if "threading.py" not in f and "runpy" not in f),
                     thread)
        threads[label] = threads.get(label, 0) + count
        samples += count
        if frames[-1].startswith(WAIT_LEAVES):
            waiting += count
            continue
        group = next((name for f in reversed(frames) for name, keys in PROFILE_GROUPS
                      if any(k in f for k in keys)), "other (asyncio, grpc, gc, ...)")
        groups[group] = groups.get(group, 0) + count
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for frame in set(frames):
            total[frame] = total.get(frame, 0) + count

    def ranked(table: dict[str, int]) -> list[tuple[str, float]]:
        items = sorted(table.items(), key=lambda kv: -kv[1])[:top]
        return [(name, round(100 * n / max(wall_samples, 1), 1)) for name, n in items]

    return {"samples": samples, "wall_samples": wall_samples,
            "busy_pct_of_one_core": round(100 * samples / max(wall_samples, 1), 1),
            "waiting_pct_of_one_core": round(100 * waiting / max(wall_samples, 1), 1),
            "groups": ranked(groups), "threads": ranked(threads), "top_own": ranked(own),
            "top_total": ranked(total)}


# ------------------------------------------------------------------------- report


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [op for op in OP_NAMES if any(r["op"] == op for r in rows)]
    fig, axes = plt.subplots(1, len(shown), figsize=(5 * len(shown), 4.8), sharey=True,
                             squeeze=False)
    axes = axes[0]
    colors = {"etcd": "tab:blue", "pnyx": "tab:red"}
    for ax, op in zip(axes, shown, strict=True):
        for system in ("etcd", "pnyx"):
            cells = sorted((r for r in rows if r["system"] == system and r["op"] == op),
                           key=lambda r: r["clients"])
            if not cells:
                continue
            xs = [r["ops_per_s"] for r in cells]
            for q, style in (("p50_ms", "--"), ("p99_ms", "-")):
                ax.plot(xs, [max(r[q], 0.01) for r in cells], style, marker="o",
                        color=colors[system], label=f"{system} {q[:-3]}")
            for r in cells:
                ax.annotate(str(r["clients"]), (r["ops_per_s"], max(r["p99_ms"], 0.01)),
                            textcoords="offset points", xytext=(4, 4), fontsize=8,
                            color=colors[system])
        ax.set_title(OP_NAMES[op])
        ax.set_xlabel("throughput (requests/s)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        ax.axhline(TARGET_P99_MS, color="grey", lw=0.8, ls=":")
    axes[0].set_ylabel("latency (ms), p50 dashed, p99 solid; labels = clients")
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def median_rows(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (system, op, clients): the median run by throughput, with all runs."""
    groups: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for c in cells:
        groups.setdefault((c["system"], c["op"], c["clients"]), []).append(c)
    out = []
    for runs in groups.values():
        med = dict(runs[0])
        if len(runs) > 1:  # the median of each figure on its own
            for q in ("ops_per_s", "p50_ms", "p99_ms", "p999_ms", "gen_cpu", "srv_cpu",
                      "cpu_ms_per_req"):
                med[q] = statistics.median(r[q] for r in runs)
            med["runs"] = [round(r["ops_per_s"]) for r in runs]
            med["runs_p99_ms"] = [round(r["p99_ms"], 1) for r in runs]
        out.append(med)
    return out


def table(rows: list[dict[str, Any]]) -> str:
    by = {(r["system"], r["op"], r["clients"]): r for r in rows}
    lines = [
        "| workload | clients | etcd req/s | pnyx req/s | pnyx/etcd | etcd p50/p99/p999 ms "
        "| pnyx p50/p99/p999 ms | cores: servers (gen) etcd / pnyx "
        "| server CPU ms/req etcd / pnyx | errors etcd/pnyx |",
        "|---|---:|---:|---:|---:|---|---|---|---|---|",
    ]
    keys = sorted({(r["op"], r["clients"]) for r in rows},
                  key=lambda k: (list(OP_NAMES).index(k[0]), k[1]))
    for op, clients in keys:
        e, p = by.get(("etcd", op, clients)), by.get(("pnyx", op, clients))
        if not e or not p:
            continue
        ratio = p["ops_per_s"] / e["ops_per_s"] if e["ops_per_s"] else float("nan")
        runs = ""
        if "runs" in e:
            runs = f" (runs {'/'.join(f'{x:,}' for x in e['runs'])} vs " \
                   f"{'/'.join(f'{x:,}' for x in p['runs'])})"

        def lat(r: dict[str, Any]) -> str:
            return f"{r['p50_ms']:.1f} / {r['p99_ms']:.1f} / {r['p999_ms']:.1f}"

        lines.append(
            f"| {OP_NAMES[op]}{runs} | {clients} | {e['ops_per_s']:,.0f} | {p['ops_per_s']:,.0f} "
            f"| {ratio:.2f}x | {lat(e)} | {lat(p)} | {e['srv_cpu']:.2f} ({e['gen_cpu']:.2f}) / "
            f"{p['srv_cpu']:.2f} ({p['gen_cpu']:.2f}) "
            f"| {e['cpu_ms_per_req']:.2f} / {p['cpu_ms_per_req']:.2f} "
            f"| {e['errors']} / {p['errors']} |"
        )
    return "\n".join(lines)


_SLOWEST = re.compile(r"Slowest request took(?: too long)?:? ([\d.]+)s")
_STDDEV = re.compile(r"Stddev (?:is|too high:) ([\d.]+)s")


def perf_table(perf: list[dict[str, Any]]) -> str:
    """``etcdctl check perf`` results as a markdown table, etcd and pnyx side by side."""
    lines = ["| load | etcd writes/s | slowest s | stddev s | verdict | pnyx writes/s "
             "| slowest s | stddev s | verdict | pnyx/etcd writes |",
             "|---|---:|---:|---:|---|---:|---:|---:|---|---:|"]

    def cells(c: dict[str, Any]) -> str:
        text = " ".join(c["lines"])
        slow, dev = _SLOWEST.search(text), _STDDEV.search(text)
        return (f"{c['writes_per_s']} | {slow.group(1)[:5] if slow else '-'} | "
                f"{dev.group(1)[:5] if dev else '-'} | **{c['verdict']}**")

    for load in dict.fromkeys(c["load"] for c in perf):
        e = next((c for c in perf if c["load"] == load and c["system"] == "etcd"), None)
        p = next((c for c in perf if c["load"] == load and c["system"] == "pnyx"), None)
        if not e or not p:
            continue
        ratio = (f"{p['writes_per_s'] / e['writes_per_s']:.2f}x"
                 if e["writes_per_s"] and p["writes_per_s"] is not None else "-")
        lines.append(f"| {load} | {cells(e)} | {cells(p)} | {ratio} |")
    return "\n".join(lines)


def verdict(rows: list[dict[str, Any]], perf: list[dict[str, Any]]) -> list[str]:
    by = {(r["system"], r["op"], r["clients"]): r for r in rows}
    out = []
    for clients in KEY_CLIENTS:
        e, p = by.get(("etcd", "put", clients)), by.get(("pnyx", "put", clients))
        if not e or not p:
            continue
        ratio = p["ops_per_s"] / e["ops_per_s"] if e["ops_per_s"] else 0.0
        ok = ratio >= TARGET_RATIO and p["p99_ms"] < TARGET_P99_MS
        out.append(f"put x{clients}: pnyx/etcd {ratio:.2f}x (target >= {TARGET_RATIO:.1f}x), "
                   f"pnyx p99 {p['p99_ms']:.1f} ms (target < {TARGET_P99_MS:.0f}): "
                   f"{'MET' if ok else 'NOT MET'}")
    for c in perf:
        if c["system"] == "pnyx" and c["load"] in ("s", "m"):
            out.append(f"check perf {c['load']} on pnyx: {c['verdict']}")
    return out


# ------------------------------------------------------------------------- main


def pnyx_version(src: Path | None) -> str:
    """Which pnyx the nodes run: the source tree given, or the repository's HEAD (and
    whether its ``src/`` has uncommitted changes)."""
    if src is not None:
        return f"source tree {src}"
    repo = HERE.parent
    try:
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--", "src"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}{' + uncommitted changes in src/' if dirty else ''}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 s cells, check perf s only")
    parser.add_argument("--check-loads", default=None, help="default s,m,l (quick: s)")
    parser.add_argument("--clients", default="1,16,64,256")
    parser.add_argument("--ops", default="put,get,sget")
    parser.add_argument("--seconds", type=float, default=None, help="default 5 (quick: 1)")
    parser.add_argument("--warmup", type=float, default=None, help="default 1 (quick: 0.5)")
    parser.add_argument("--repeat", type=int, default=None,
                        help="runs of the 64/256-client puts (default 3, quick 1)")
    parser.add_argument("--procs", type=int, default=2, help="load-generator processes")
    parser.add_argument("--tick-ms", type=int, default=10, help="pnyx tick")
    parser.add_argument("--profile", action="store_true",
                        help="py-spy the pnyx leader under the 64-client put load")
    parser.add_argument("--profile-native", action="store_true",
                        help="with --profile: py-spy --native (C frames too; pauses the node)")
    parser.add_argument("--systems", default="etcd,pnyx")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--pnyx-src", type=Path, default=None,
                        help="run the pnyx nodes from this source tree (e.g. a `git archive` "
                             "of a commit); default: the installed pnyx")
    parser.add_argument("--report", type=Path, default=None,
                        help="print the tables of an earlier run's JSON and exit")
    args = parser.parse_args()
    if args.report:
        earlier = json.loads(args.report.read_text())
        print(f"{earlier['date']}; pnyx {earlier.get('pnyx')}; load {earlier['load']}")
        print(perf_table(earlier["check_perf"]))
        print(table(earlier["rows"]))
        print("\n".join(earlier["verdict"]))
        return 0
    quick = args.quick
    loads = [x for x in (args.check_loads if args.check_loads is not None
                         else ("s" if quick else "s,m,l")).split(",") if x]
    seconds = args.seconds or (1.0 if quick else 5.0)
    warmup = args.warmup if args.warmup is not None else (0.5 if quick else 1.0)
    repeat = args.repeat or (1 if quick else 3)
    client_counts = [int(c) for c in args.clients.split(",")]
    ops = [o for o in args.ops.split(",") if o]
    systems = [s for s in args.systems.split(",") if s]
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    result: dict[str, Any] = {
        "date": stamp, "argv": sys.argv[1:], "load": {"start": loadavg()},
        "seconds": seconds, "warmup_s": warmup, "procs": args.procs, "tick_ms": args.tick_ms,
        "check_perf": [], "cells": [], "pnyx": pnyx_version(args.pnyx_src),
    }
    print(f"etcd service bench {stamp}; pnyx {result['pnyx']}; load average {loadavg()}",
          flush=True)
    clusters: dict[str, Cluster] = {}
    workers: Workers | None = None
    try:
        for system in systems:
            root = Path(tempfile.mkdtemp(prefix=f"pnyx-bench-{system}-"))
            clusters[system] = (start_real_etcd(root) if system == "etcd"
                                else start_pnyx_etcd(root, args.tick_ms, args.pnyx_src))
            print(f"  {system}: {clusters[system].urls} (data in {root})", flush=True)
        for c in clusters.values():
            preload(c)
        for c in clusters.values():
            cpu0, t0 = sum(c.cpu_seconds()), time.monotonic()
            time.sleep(3.0)  # a measurement window: the members' CPU with no client load
            c.idle_cpu = (sum(c.cpu_seconds()) - cpu0) / (time.monotonic() - t0)
            result.setdefault("idle_cpu", {})[c.name] = round(c.idle_cpu, 3)
            print(f"  {c.name}: idle members use {c.idle_cpu:.2f} cores", flush=True)
        workers = Workers(args.procs)

        for load in loads:
            for system in systems:
                row = check_perf(clusters[system], load)
                result["check_perf"].append(row)
                print(f"check perf --load={load} {system:>4}: {row['verdict']} "
                      f"{row['writes_per_s']} writes/s  ({'; '.join(row['lines'])}) "
                      f"load {row['load_before']} -> {row['load_after']}", flush=True)

        result["load"]["loadgen_start"] = loadavg()
        for op in ops:
            for clients in client_counts:
                runs = repeat if op == "put" and clients in KEY_CLIENTS else 1
                for _ in range(runs):
                    for system in systems:
                        row = measure_cell(workers, clusters[system], op, clients, seconds,
                                           warmup)
                        result["cells"].append(row)
                        print(f"  {system:>4} {op:>4} x{clients:<3} {row['ops_per_s']:>9,.0f}"
                              f" req/s  p50 {row['p50_ms']:6.1f}  p99 {row['p99_ms']:6.1f}"
                              f"  p999 {row['p999_ms']:6.1f} ms  errors {row['errors']}"
                              f"  gen cpu {row['gen_cpu']:.2f}  server cpu "
                              f"{'+'.join(f'{c:.2f}' for c in row['server_cpu'])}"
                              f"  load {row['load_after']}"
                              + (f"  {row['error_sample']}" if row["errors"] else ""),
                              flush=True)
                        if op == "put":
                            compact(clusters[system])
        result["load"]["loadgen_end"] = loadavg()

        if args.profile and "pnyx" in clusters:
            prof = profile_cell(workers, clusters["pnyx"], args.out, max(seconds * 2, 4.0),
                                64, native=args.profile_native)
            result["profile"] = prof
            print(f"profile (py-spy, pnyx leader pid {prof.get('leader_pid')}, 64-client puts"
                  f", {prof.get('row', {}).get('ops_per_s', 0):,.0f} req/s under the profiler,"
                  f" members' cores {prof.get('server_cpu')}): % of one core's wall time; "
                  f"active {prof.get('busy_pct_of_one_core')} %, of which waits in C "
                  f"{prof.get('waiting_pct_of_one_core')} %", flush=True)
            for kind in ("groups", "threads", "top_total", "top_own"):
                for name, pct in prof.get(kind, [])[:20]:
                    print(f"  {kind:<9} {pct:5.1f} %  {name}")
            if "error" in prof:
                print(f"  {prof['error']}")
    finally:
        if workers is not None:
            workers.close()
        for c in clusters.values():
            c.stop()
    result["load"]["end"] = loadavg()
    rows = median_rows(result["cells"])
    result["rows"] = rows
    result["verdict"] = verdict(rows, result["check_perf"])
    if result["check_perf"]:
        print(perf_table(result["check_perf"]))
    text = table(rows)
    print(text)
    for line in result["verdict"]:
        print(line)
    print(f"load average: start {result['load']['start']}, end {result['load']['end']}")
    name = "etcd-quick" if quick else "etcd"
    (args.out / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
    if rows:
        png = args.out / f"{name}-throughput-latency.png"
        plot(rows, png, f"pnyx etcd vs etcd 3.4.23, 3 nodes each, fsync on, closed loop, "
                        f"{stamp}, load {result['load']['start']} → {result['load']['end']}")
        print(f"wrote {args.out / (name + '.json')} and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

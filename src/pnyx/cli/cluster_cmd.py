"""``pnyx cluster up|status|down``: a local cluster of ``pnyx serve`` processes.

``up`` records every process it starts in ``DATA_DIR/cluster.json``; ``down`` stops exactly
those processes (checking each pid still runs our ``serve`` for this data directory).
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from pnyx.cli.errors import fail
from pnyx.services.catalog import service_names

STATE_FILE = "cluster.json"
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
POLL_S = 0.1


def free_ports(count: int) -> list[int]:
    """Distinct currently free TCP ports on 127.0.0.1."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


def pid_alive(pid: int) -> bool:
    """True when ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            state = handle.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def is_our_process(pid: int, data_dir: Path) -> bool:
    """True when ``pid`` runs ``pnyx serve`` on a node directory under ``data_dir``."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            argv = handle.read().decode(errors="replace").split("\0")
    except OSError:
        return False
    return "serve" in argv and any(a.startswith(str(data_dir.resolve())) for a in argv)


def fetch_health(port: int, timeout_s: float = 1.0) -> dict[str, Any] | None:
    """GET /health of a node's metrics server; None when unreachable."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=timeout_s) as r:
            data: dict[str, Any] = json.loads(r.read())
            return data
    except (OSError, urllib.error.URLError, ValueError):
        return None


def load_state(data_dir: Path) -> dict[str, Any] | None:
    """The cluster record in ``data_dir``, or None when there is none."""
    path = data_dir / STATE_FILE
    if not path.exists():
        return None
    try:
        state: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        fail(f"{path} is unreadable ({exc}); remove it after checking no node runs")
    return state


@click.group()
def cluster() -> None:
    """Start, inspect and stop a local cluster of pnyx processes."""


@cluster.command()
@click.option("--nodes", type=click.Choice(["1", "3", "5", "7"]), default="3", show_default=True)
@click.option("--data-dir", type=click.Path(path_type=Path), required=True)
@click.option("--protocol", default="broadcast", show_default=True)
@click.option("--tick-ms", type=click.IntRange(1, 10_000), default=10, show_default=True)
@click.option("--detach", is_flag=True, help="Return once the cluster is up.")
def up(nodes: str, data_dir: Path, protocol: str, tick_ms: int, detach: bool) -> None:
    """Start a local cluster; without --detach, run until Ctrl-C and then stop it."""
    if protocol not in service_names():
        fail(f"unknown protocol {protocol!r}; valid: {', '.join(service_names())}")
    data_dir = data_dir.resolve()
    existing = load_state(data_dir)
    if existing and any(pid_alive(n["pid"]) for n in existing["nodes"]):
        fail(
            f"a cluster already runs in {data_dir}; run `pnyx cluster down --data-dir "
            f"{data_dir}` first"
        )
    count = int(nodes)
    ports = free_ports(2 * count)
    peer_ports, metric_ports = ports[:count], ports[count:]
    peers = ",".join(f"{i + 1}=127.0.0.1:{p}" for i, p in enumerate(peer_ports))
    state: dict[str, Any] = {"protocol": protocol, "peers": peers, "nodes": []}
    data_dir.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        state["nodes"].append(_spawn(i + 1, peers, metric_ports[i], data_dir, protocol, tick_ms))
        _save_state(data_dir, state)
    if not _wait_healthy(state):
        _stop_all(data_dir, state)
        fail("cluster did not become healthy; see node.log in each node directory", 1)
    _print_status(data_dir, state)
    if detach:
        return
    click.echo("cluster running; Ctrl-C stops it")
    try:
        signal.signal(signal.SIGTERM, _interrupt)
        while any(pid_alive(n["pid"]) for n in state["nodes"]):
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    _stop_all(data_dir, state)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _spawn(
    node_id: int, peers: str, metrics_port: int, data_dir: Path, protocol: str, tick_ms: int
) -> dict[str, Any]:
    node_dir = data_dir / f"node-{node_id}"
    node_dir.mkdir(parents=True, exist_ok=True)
    argv = [
        sys.executable,
        "-m",
        "pnyx",
        "serve",
        "--id",
        str(node_id),
        "--peers",
        peers,
        "--data-dir",
        str(node_dir),
        "--protocol",
        protocol,
        "--metrics-port",
        str(metrics_port),
        "--tick-ms",
        str(tick_ms),
    ]
    proc = _launch(argv, node_dir)
    return {
        "id": node_id,
        "pid": proc.pid,
        "metrics_port": metrics_port,
        "argv": argv,
        "address": dict(p.split("=") for p in peers.split(","))[str(node_id)],
        "dir": str(node_dir),
    }


def _launch(argv: list[str], node_dir: Path) -> subprocess.Popen[bytes]:
    with open(node_dir / "node.log", "ab") as log_file:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _save_state(data_dir: Path, state: dict[str, Any]) -> None:
    temp = data_dir / (STATE_FILE + ".tmp")
    temp.write_text(json.dumps(state, indent=1) + "\n", encoding="utf-8")
    os.replace(temp, data_dir / STATE_FILE)


def _wait_healthy(state: dict[str, Any]) -> bool:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if not all(pid_alive(n["pid"]) for n in state["nodes"]):
            return False
        if all(fetch_health(n["metrics_port"]) for n in state["nodes"]):
            return True
        time.sleep(POLL_S)
    return False


@cluster.command()
@click.option("--data-dir", type=click.Path(path_type=Path), required=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per node per line.")
def status(data_dir: Path, as_json: bool) -> None:
    """Members, leader, term, commit and applied index of each node."""
    data_dir = data_dir.resolve()
    state = load_state(data_dir)
    if state is None:
        fail(f"no cluster in {data_dir} (no {STATE_FILE}); start one with `pnyx cluster up`")
    if as_json:
        for row in _status_rows(data_dir, state):
            click.echo(json.dumps(row, sort_keys=True))
        return
    _print_status(data_dir, state)


def _status_rows(data_dir: Path, state: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for n in state["nodes"]:
        alive = pid_alive(n["pid"]) and is_our_process(n["pid"], data_dir)
        health = fetch_health(n["metrics_port"]) if alive else None
        health = health or {}
        rows.append(
            {
                "id": n["id"],
                "pid": n["pid"],
                "address": n["address"],
                "state": "up" if health else ("starting" if alive else "down"),
                "leader": health.get("leader"),
                "term": health.get("term"),
                "commit_index": health.get("commit_index"),
                "applied_index": health.get("applied_index", health.get("last_applied")),
                "role": health.get("role"),
                "members": health.get("members"),
            }
        )
    return rows


def _print_status(data_dir: Path, state: dict[str, Any]) -> None:
    table = Table(title=f"pnyx cluster ({state['protocol']}) in {data_dir}")
    columns = (
        "id",
        "pid",
        "address",
        "state",
        "role",
        "leader",
        "term",
        "commit_index",
        "applied_index",
    )
    for column in columns:
        table.add_column(column, justify="right")
    for row in _status_rows(data_dir, state):
        table.add_row(*("-" if row[c] is None else str(row[c]) for c in columns))
    Console(width=140).print(table)


@cluster.command()
@click.option("--data-dir", type=click.Path(path_type=Path), required=True)
def down(data_dir: Path) -> None:
    """Stop exactly the processes `up` started (SIGTERM, then SIGKILL after a timeout)."""
    data_dir = data_dir.resolve()
    state = load_state(data_dir)
    if state is None:
        fail(f"no cluster in {data_dir} (no {STATE_FILE}); nothing to stop")
    stopped = _stop_all(data_dir, state)
    click.echo(f"stopped {stopped} process(es) of the cluster in {data_dir}")


def _find_node(data_dir: Path, node_id: int) -> tuple[dict[str, Any], dict[str, Any]]:
    state = load_state(data_dir)
    if state is None:
        fail(f"no cluster in {data_dir} (no {STATE_FILE}); start one with `pnyx cluster up`")
    for node in state["nodes"]:
        if node["id"] == node_id:
            return state, node
    ids = ", ".join(str(n["id"]) for n in state["nodes"])
    fail(f"no node {node_id} in the cluster in {data_dir}; nodes are {ids}")


def signal_node(data_dir: Path, node_id: int, sig: str) -> int:
    """Send SIG``sig`` to node ``node_id`` of the cluster in ``data_dir``; returns its pid."""
    _, node = _find_node(data_dir, node_id)
    pid = int(node["pid"])
    if not (pid_alive(pid) and is_our_process(pid, data_dir)):
        fail(f"node {node_id} (pid {pid}) is not running")
    os.kill(pid, getattr(signal, f"SIG{sig}"))
    return pid


def start_node(data_dir: Path, node_id: int) -> int:
    """Restart a stopped node with its original arguments; returns the new pid."""
    state, node = _find_node(data_dir, node_id)
    if pid_alive(node["pid"]) and is_our_process(node["pid"], data_dir):
        fail(f"node {node_id} already runs (pid {node['pid']})")
    node["pid"] = _launch(node["argv"], Path(node["dir"])).pid
    _save_state(data_dir, state)
    return int(node["pid"])


def members_of(data_dir: Path) -> dict[int, tuple[str, int]]:
    """Node id → (host, port) of the cluster in ``data_dir``."""
    state = load_state(data_dir)
    if state is None:
        fail(f"no cluster in {data_dir} (no {STATE_FILE}); start one with `pnyx cluster up`")
    members = {}
    for node in state["nodes"]:
        host, port = node["address"].rsplit(":", 1)
        members[int(node["id"])] = (host, int(port))
    return members


def cluster_command(*args: str, timeout_s: float = 120.0) -> subprocess.CompletedProcess[str]:
    """Run ``pnyx cluster ARGS...`` in a child process (for programs and tests)."""
    return subprocess.run(
        [sys.executable, "-m", "pnyx", "cluster", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def local_cluster_up(data_dir: Path, *, nodes: int = 3, protocol: str = "raft") -> None:
    """Start a detached local cluster in ``data_dir``; RuntimeError with its stderr if not."""
    up = cluster_command(
        "up",
        "--nodes",
        str(nodes),
        "--protocol",
        protocol,
        "--data-dir",
        str(data_dir),
        "--detach",
    )
    if up.returncode != 0:
        raise RuntimeError(f"cluster did not start: {up.stderr.strip()}")


class KillRestartNemesis:
    """Workload nemesis: ``kill -9`` a random node, wait, restart it from its data dir."""

    def __init__(self, data_dir: Path, down_s: float = 0.3) -> None:
        self.data_dir = data_dir.resolve()
        self.down_s = down_s
        self.kills = 0

    def __call__(self, rng: random.Random) -> str:
        victim = rng.choice(sorted(members_of(self.data_dir)))
        signal_node(self.data_dir, victim, "KILL")
        self.kills += 1
        time.sleep(self.down_s)
        start_node(self.data_dir, victim)
        return f"kill -9 node {victim}, restart after {self.down_s:.1f} s"


@cluster.command()
@click.option("--data-dir", type=click.Path(path_type=Path), required=True)
@click.option("--id", "node_id", type=int, required=True, help="The node to signal.")
@click.option(
    "--signal",
    "sig",
    type=click.Choice(["KILL", "TERM", "STOP", "CONT"]),
    default="KILL",
    show_default=True,
)
def kill(data_dir: Path, node_id: int, sig: str) -> None:
    """Send a signal to one node of the cluster (KILL: crash it; STOP/CONT: pause it)."""
    pid = signal_node(data_dir.resolve(), node_id, sig)
    click.echo(f"sent SIG{sig} to node {node_id} (pid {pid})")


@cluster.command()
@click.option("--data-dir", type=click.Path(path_type=Path), required=True)
@click.option("--id", "node_id", type=int, required=True, help="The node to (re)start.")
def start(data_dir: Path, node_id: int) -> None:
    """Restart a stopped node with its original arguments and data directory."""
    pid = start_node(data_dir.resolve(), node_id)
    click.echo(f"started node {node_id} (pid {pid})")


def _stop_all(data_dir: Path, state: dict[str, Any]) -> int:
    ours = [
        n["pid"]
        for n in state["nodes"]
        if pid_alive(n["pid"]) and is_our_process(n["pid"], data_dir)
    ]
    for pid in ours:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline and any(pid_alive(p) for p in ours):
        _reap()
        time.sleep(POLL_S)
    for pid in ours:
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
    _reap()
    (data_dir / STATE_FILE).unlink(missing_ok=True)
    return len(ours)


def _reap() -> None:
    """Collect exit statuses of children this process started (no zombies left behind)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return

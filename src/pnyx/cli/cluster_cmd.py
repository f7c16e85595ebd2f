"""``pnyx cluster up|status|down|kill|start``: a local cluster of ``pnyx serve`` processes.

``up`` records the cluster in ``DATA_DIR/cluster.json`` (protocol, members, cluster id, TLS
CA, and each node's command line and pid) *before* it launches anything, and again after
each launch; when a record cannot be written (a full disk), the process just launched is
killed and the command fails with one line.  ``down`` stops every process the record names
that still runs our ``serve`` for this data directory, plus any ``pnyx serve`` found running
on a directory inside it (one whose pid was never recorded), so nothing is left behind.

``up --protocol etcd`` also gives every node an etcd client port (gRPC) and prints an
``ETCDCTL_ENDPOINTS=...`` line for ``etcdctl``; ``status`` then shows each member's client
URL and data size.

``up --protocol chain|craq|primary-backup`` runs one extra process beside the ``--nodes``
data nodes: the configuration service of the scheme (chain/CRAQ master: the highest id;
primary-backup view manager: node 1); see :mod:`pnyx.services.schemes`.  The record names
it as ``config_node``.

``up`` on a directory left by an earlier cluster reuses its data only when every node
directory there was stamped for the same membership (``node.json``, see
:mod:`pnyx.runtime.datadir`); otherwise it refuses before launching anything and says how
to start fresh (``--fresh`` removes exactly the pnyx cluster files).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import click
from rich.console import Console
from rich.table import Table

from pnyx.catalog import get_runnable
from pnyx.cli import cluster_state
from pnyx.cli.cluster_state import (
    STATE_FILE,
    StateError,
    cluster_pids,
    is_our_process,
    node_processes,
    pid_alive,
)
from pnyx.cli.errors import fail
from pnyx.services.schemes import config_node, process_count

__all__ = [
    "STATE_FILE",
    "KillRestartNemesis",
    "cluster",
    "cluster_command",
    "fetch_health",
    "free_ports",
    "is_our_process",
    "load_state",
    "local_cluster_up",
    "members_of",
    "pid_alive",
    "signal_node",
    "start_node",
]

RUNTIME_ERROR = 1
"""Exit status when the command was right but the world refused (disk full, launch failed)."""
READY_TIMEOUT_S = 60.0
"""How long `up` waits for every node to answer /health (generous: a loaded 2-core machine
starting several clusters at once takes tens of seconds to import and start them all)."""
STOP_TIMEOUT_S = 10.0
KILL_WAIT_S = 5.0
POLL_S = 0.1
TLS_DIR = "tls"
NODE_DIR = re.compile(r"^node-([0-9]+)$")
_NODE_FILES = {"node.log", "lock", "node.json", "node.json.tmp"}
"""What a node directory holds before its node ever ran (or after a launch failed)."""


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


def fetch_health(port: int, timeout_s: float = 1.0) -> dict[str, Any] | None:
    """GET /health of a node's metrics server; None when unreachable."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=timeout_s) as r:
            data: dict[str, Any] = json.loads(r.read())
            return data
    except (OSError, urllib.error.URLError, ValueError):
        return None


def load_state(data_dir: Path) -> dict[str, Any] | None:
    """The cluster record in ``data_dir``, or None; a bad record is a one-line usage error."""
    try:
        return cluster_state.load_state(data_dir)
    except StateError as exc:
        fail(f"{exc}; remove it after checking no node runs (`pnyx cluster down` stops them)")


def _require_state(data_dir: Path) -> dict[str, Any]:
    state = load_state(data_dir)
    if state is None:
        fail(f"no cluster in {data_dir} (no {STATE_FILE}); start one with `pnyx cluster up`")
    return state


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _checked_data_dir(data_dir: Path) -> Path:
    """``data_dir`` made absolute; a usage error when it exists and is not a directory."""
    data_dir = data_dir.expanduser().resolve()
    if data_dir.exists() and not data_dir.is_dir():
        fail(f"--data-dir {data_dir} is not a directory")
    return data_dir


@click.group()
def cluster() -> None:
    """Start, inspect and stop a local cluster of pnyx processes."""


@cluster.command()
@click.option("--nodes", type=click.Choice(["1", "3", "5", "7"]), default="3", show_default=True)
@click.option("--data-dir", type=click.Path(path_type=Path), required=True)
@click.option(
    "--protocol",
    default="etcd",
    show_default=True,
    help="The service the nodes run: etcd (etcd v3 API on Raft, or on --consensus), raft "
    "(pnyx's Raft KV), paxos (Multi-Paxos KV), vr (Viewstamped Replication KV), tso "
    "(timestamp oracle on Raft), "
    "broadcast, or a replication scheme: chain, craq, primary-backup, dynamo.  chain and "
    "craq start one extra process, the configuration master (the highest id, N+1), and "
    "primary-backup one view manager (node 1; servers 2..N+1); it keeps the configuration "
    "in its fsynced WAL and stands in for a replicated configuration store.  dynamo runs N "
    "equal nodes (N=min(3,nodes) replicas per key, R=W=majority).",
)
@click.option("--tick-ms", type=click.IntRange(1, 10_000), default=10, show_default=True)
@click.option(
    "--consensus",
    type=click.Choice(["raft", "paxos", "vr", "vr-durable"]),
    default=None,
    help="--protocol etcd: the consensus under the etcd state machine (default raft).",
)
@click.option(
    "--ranges",
    type=click.IntRange(1, 256),
    default=None,
    help="--protocol multiraft: data ranges the cluster starts with (default 1).",
)
@click.option(
    "--split-bytes",
    type=click.IntRange(0),
    default=None,
    help="--protocol multiraft or txn: a range splits above this many bytes (default 64 MiB; "
    "0: by key count only).",
)
@click.option(
    "--phase1-quorum",
    type=int,
    default=None,
    help="--protocol paxos: Flexible Paxos phase-1 quorum (promises a leader needs; default "
    "majority, or N - Q2 + 1).  Q1 + Q2 must exceed --nodes; kept by `cluster start`.",
)
@click.option(
    "--phase2-quorum",
    type=int,
    default=None,
    help="--protocol paxos: Flexible Paxos phase-2 quorum (accepts that choose a value; "
    "default majority, or N - Q1 + 1).",
)
@click.option(
    "--tls", is_flag=True, help="Mutual TLS between nodes (CA and certs in DATA_DIR/tls)."
)
@click.option(
    "--fresh",
    is_flag=True,
    help="Remove the data an earlier cluster left in DATA_DIR (only pnyx's own files) first.",
)
@click.option("--detach", is_flag=True, help="Return once the cluster is up.")
def up(
    nodes: str,
    data_dir: Path,
    protocol: str,
    tick_ms: int,
    consensus: str | None,
    ranges: int | None,
    split_bytes: int | None,
    tls: bool,
    fresh: bool,
    detach: bool,
    phase1_quorum: int | None,
    phase2_quorum: int | None,
) -> None:
    """Start a local cluster; without --detach, run until Ctrl-C and then stop it."""
    try:
        get_runnable(protocol)
    except KeyError as exc:
        fail(str(exc.args[0]))
    if consensus is not None and protocol != ETCD_PROTOCOL:
        fail(f"--consensus {consensus}: only for --protocol etcd (the others are their own)")
    if ranges is not None and protocol not in ("multiraft", "txn"):
        fail(f"--ranges {ranges}: only for --protocol multiraft or txn")
    if split_bytes is not None and protocol not in ("multiraft", "txn"):
        fail(f"--split-bytes {split_bytes}: only for --protocol multiraft or txn")
    quorums = _quorums(protocol, int(nodes), phase1_quorum, phase2_quorum)
    data_dir = _checked_data_dir(data_dir)
    count = process_count(protocol, int(nodes))
    _refuse_running(data_dir)
    if fresh:
        _remove_cluster_files(data_dir)
    reused_id = _reusable_cluster_id(data_dir, count, int(nodes))
    if reused_id is not None and protocol == PAXOS_PROTOCOL:
        _refuse_changed_quorums(data_dir, count, quorums)
    cluster_id = reused_id or secrets.token_hex(8)
    _make_data_dir(data_dir)
    state = _plan(data_dir, count, protocol, tick_ms, cluster_id, tls)
    if consensus is not None:
        state["consensus"] = consensus
        for node in state["nodes"]:
            node["argv"] += ["--consensus", consensus]
    if ranges is not None:
        for node in state["nodes"]:
            node["argv"] += ["--ranges", str(ranges)]
    if split_bytes is not None:
        for node in state["nodes"]:
            node["argv"] += ["--split-bytes", str(split_bytes)]
    if quorums is not None:
        state["quorums"] = list(quorums)
        for node in state["nodes"]:
            node["argv"] += ["--phase1-quorum", str(quorums[0]), "--phase2-quorum", str(quorums[1])]
    _launch_all(data_dir, state)
    if not _wait_healthy(state):
        _stop_all(data_dir, state)
        fail("cluster did not become healthy; see node.log in each node directory", RUNTIME_ERROR)
    _print_status(data_dir, state)
    if state.get("client_endpoints"):
        click.echo(f"ETCDCTL_ENDPOINTS={state['client_endpoints']}")
        if state.get("tls"):
            click.echo(f"ETCDCTL_CACERT={state['tls']['ca']}")
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


PAXOS_PROTOCOL = "paxos"


def _quorums(
    protocol: str, nodes: int, phase1: int | None, phase2: int | None
) -> tuple[int, int] | None:
    """``--phase1-quorum`` / ``--phase2-quorum``: the sizes every node gets (None: not
    given); a usage error, before anything runs, for an invalid pair or another protocol."""
    if phase1 is None and phase2 is None:
        return None
    given = ((1, phase1), (2, phase2))
    shown = " ".join(f"--phase{i}-quorum {q}" for i, q in given if q is not None)
    if protocol != PAXOS_PROTOCOL:
        fail(f"{shown}: only for --protocol paxos (etcd over Paxos keeps majorities)")
    from pnyx.protocols.paxos.spec import checked_quorums

    try:
        return checked_quorums(nodes, phase1, phase2)
    except ValueError as exc:
        fail(f"{shown}: {exc}")


def _refuse_changed_quorums(data_dir: Path, count: int, quorums: tuple[int, int] | None) -> None:
    """A usage error when the Paxos data reused in ``data_dir`` was written under other
    quorum sizes (a value chosen by the old phase-2 quorum could escape a new phase 1)."""
    previous = load_state(data_dir)
    if previous is None or previous.get("protocol") != PAXOS_PROTOCOL:
        return
    majority = count // 2 + 1
    recorded = previous.get("quorums")
    before = tuple(recorded) if isinstance(recorded, list) else (majority, majority)
    now = quorums if quorums is not None else (majority, majority)
    if before != now:
        fail(
            f"the Paxos data in {data_dir} was written with quorums phase-1 {before[0]}, "
            f"phase-2 {before[1]}; this start asks for {now[0]}, {now[1]}: give the same "
            f"sizes, or {_fresh_hint(data_dir, count)}"
        )


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _refuse_running(data_dir: Path) -> None:
    if not data_dir.is_dir():
        return
    pids = cluster_pids(data_dir, load_state(data_dir))
    if pids:
        fail(
            f"a cluster already runs in {data_dir} (pids {', '.join(map(str, pids))}); run "
            f"`pnyx cluster down --data-dir {data_dir}` first"
        )


def _make_data_dir(data_dir: Path) -> None:
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        status = RUNTIME_ERROR if exc.errno in (errno.ENOSPC, errno.EIO) else 2
        fail(f"cannot create --data-dir {data_dir}: {_reason(exc)}", status)


def _node_dirs(data_dir: Path) -> Iterator[tuple[int, Path]]:
    if not data_dir.is_dir():
        return
    for entry in sorted(data_dir.iterdir()):
        match = NODE_DIR.match(entry.name)
        if match and entry.is_dir():
            yield int(match.group(1)), entry


def _fresh_hint(data_dir: Path, count: int) -> str:
    return (
        f"to start fresh: `pnyx cluster up --fresh --nodes {count} --data-dir {data_dir}` "
        f"(removes the old cluster's data) or `rm -r {data_dir}`"
    )


def _reusable_cluster_id(data_dir: Path, count: int, nodes_flag: int | None = None) -> str | None:
    """The cluster id of an earlier cluster in ``data_dir`` with the same membership
    (``count`` processes, started by ``--nodes nodes_flag``; default ``count``).

    A usage error, before anything is launched, when a node directory there belongs to
    another membership or cluster (reusing it would put old log entries under a new
    configuration), or when its ``node.json`` is unreadable."""
    from pnyx.runtime.datadir import DataDirError, read_stamp

    wanted = tuple(range(1, count + 1))
    flag = count if nodes_flag is None else nodes_flag
    clusters: dict[str, Path] = {}
    for node_id, node_dir in _node_dirs(data_dir):
        try:
            stamp = read_stamp(node_dir)
        except DataDirError as exc:
            fail(f"{exc}; {_fresh_hint(data_dir, flag)}")
        if stamp is None:
            continue
        if stamp.members != wanted or stamp.node_id != node_id:
            fail(
                f"{node_dir} holds node {stamp.node_id} of an earlier cluster with members "
                f"{list(stamp.members)}; `cluster up --nodes {flag}` would give it members "
                f"{list(wanted)}; {_fresh_hint(data_dir, flag)}"
            )
        clusters.setdefault(stamp.cluster, node_dir)
    if len(clusters) > 1:
        shown = ", ".join(f"{d.name}: {c!r}" for c, d in sorted(clusters.items()))
        fail(
            f"the node directories in {data_dir} belong to different clusters ({shown}); "
            f"{_fresh_hint(data_dir, flag)}"
        )
    return next(iter(clusters), None)


def _remove_cluster_files(data_dir: Path) -> None:
    """``--fresh``: remove an earlier cluster's files; refuse when anything else is there."""
    if not data_dir.is_dir():
        return
    foreign = [entry.name for entry in sorted(data_dir.iterdir()) if not _is_ours(entry)]
    if foreign:
        fail(
            f"--fresh removes only what `pnyx cluster` created, and {data_dir} also holds "
            f"{', '.join(foreign)}; pick another --data-dir or clean it by hand"
        )
    for entry in sorted(data_dir.iterdir()):
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except OSError as exc:
            fail(f"--fresh could not remove {entry}: {_reason(exc)}", RUNTIME_ERROR)
    click.echo(f"removed the earlier cluster's data in {data_dir}")


def _is_ours(entry: Path) -> bool:
    if entry.name in (STATE_FILE, STATE_FILE + ".tmp"):
        return entry.is_file()
    if entry.is_symlink() or not entry.is_dir():
        return False
    if entry.name == TLS_DIR:
        return all(re.fullmatch(r"(ca|node-[0-9]+)\.(pem|key)", f.name) for f in entry.iterdir())
    match = NODE_DIR.match(entry.name)
    return bool(match) and _is_node_dir(entry, int(match.group(1)) if match else 0)


def _is_node_dir(node_dir: Path, node_id: int) -> bool:
    """True when ``node.json`` says it is node ``node_id``'s, or it holds only launch files."""
    try:
        raw = json.loads((node_dir / "node.json").read_text())
    except FileNotFoundError:
        return {f.name for f in node_dir.iterdir()} <= _NODE_FILES
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return isinstance(raw, dict) and raw.get("node_id") == node_id


ETCD_PROTOCOL = "etcd"


def _plan(
    data_dir: Path, count: int, protocol: str, tick_ms: int, cluster_id: str, tls: bool
) -> dict[str, Any]:
    """The cluster record, every node's command line included, before anything runs."""
    etcd = protocol == ETCD_PROTOCOL
    ports = free_ports((3 if etcd else 2) * count)
    peer_ports, metric_ports, client_ports = (
        ports[:count],
        ports[count : 2 * count],
        ports[2 * count :],
    )
    peers = ",".join(f"{i + 1}=127.0.0.1:{p}" for i, p in enumerate(peer_ports))
    clients = ",".join(f"{i + 1}=127.0.0.1:{p}" for i, p in enumerate(client_ports))
    certs = _make_certs(data_dir, count) if tls else {}
    state: dict[str, Any] = {
        "protocol": protocol,
        "peers": peers,
        "cluster_id": cluster_id,
        "tls": {"ca": str(data_dir / TLS_DIR / "ca.pem")} if tls else None,
        "nodes": [],
    }
    config = config_node(protocol, tuple(range(1, count + 1)))
    if config is not None:
        state["config_node"] = config
    if etcd:
        scheme = "https://" if tls else ""
        state["client_endpoints"] = ",".join(f"{scheme}127.0.0.1:{p}" for p in client_ports)
    for i in range(count):
        node_id = i + 1
        node_dir = data_dir / f"node-{node_id}"
        argv = [
            *_serve_prefix(),
            "--id", str(node_id),
            "--peers", peers,
            "--cluster-id", cluster_id,
            "--data-dir", str(node_dir),
            "--protocol", protocol,
            "--metrics-port", str(metric_ports[i]),
            "--tick-ms", str(tick_ms),
            *certs.get(node_id, []),
        ]  # fmt: skip
        node: dict[str, Any] = {
            "id": node_id,
            "pid": None,
            "metrics_port": metric_ports[i],
            "argv": argv,
            "address": f"127.0.0.1:{peer_ports[i]}",
            "dir": str(node_dir),
        }
        if etcd:
            argv += ["--client-port", str(client_ports[i]), "--client-endpoints", clients]
            node["client_address"] = f"127.0.0.1:{client_ports[i]}"
        state["nodes"].append(node)
    return state


def _serve_prefix() -> list[str]:
    return [sys.executable, "-m", "pnyx", "serve"]


def _make_certs(data_dir: Path, count: int) -> dict[int, list[str]]:
    from pnyx.runtime.tls import generate_cluster_certs

    try:
        configs = generate_cluster_certs(data_dir / TLS_DIR, range(1, count + 1))
    except OSError as exc:
        fail(
            f"cannot write TLS certificates in {data_dir / TLS_DIR}: {_reason(exc)}", RUNTIME_ERROR
        )
    return {
        node_id: ["--tls-ca", str(c.ca_file), "--tls-cert", str(c.cert_file),
                  "--tls-key", str(c.key_file)]
        for node_id, c in configs.items()
    }  # fmt: skip


def _launch_all(data_dir: Path, state: dict[str, Any]) -> None:
    """Record the plan, then launch node by node, recording each pid; roll back on failure."""
    _record_or_fail(data_dir, state, "nothing was started")
    launched: list[int] = []
    for node in state["nodes"]:
        try:
            node_dir = Path(node["dir"])
            node_dir.mkdir(parents=True, exist_ok=True)
            node["pid"] = _launch(node["argv"], node_dir)
            launched.append(node["pid"])
            cluster_state.save_state(data_dir, state)
        except OSError as exc:
            for pid in launched:
                _kill_now(pid)
            fail(
                f"cannot start node {node['id']} of the cluster in {data_dir}: {_reason(exc)}; "
                f"stopped the {len(launched)} process(es) already started",
                RUNTIME_ERROR,
            )


def _record_or_fail(data_dir: Path, state: dict[str, Any], consequence: str) -> None:
    try:
        cluster_state.save_state(data_dir, state)
    except OSError as exc:
        fail(f"cannot write {data_dir / STATE_FILE}: {_reason(exc)}; {consequence}",
             RUNTIME_ERROR)  # fmt: skip


def _launch(argv: list[str], node_dir: Path) -> int:
    with open(node_dir / "node.log", "ab") as log_file:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        ).pid


def _kill_now(pid: int) -> None:
    """SIGKILL a process we just launched and wait (bounded) until it is gone."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + KILL_WAIT_S
    while time.monotonic() < deadline:
        _reap()
        if not pid_alive(pid):
            return
        time.sleep(POLL_S / 10)


def _wait_healthy(state: dict[str, Any]) -> bool:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if not all(pid_alive(n["pid"]) for n in state["nodes"]):
            return False
        if all(fetch_health(n["metrics_port"]) for n in state["nodes"]) and all(
            _accepts(n["client_address"]) for n in state["nodes"] if n.get("client_address")
        ):
            return True
        time.sleep(POLL_S)
    return False


def _accepts(address: str, timeout_s: float = 1.0) -> bool:
    """Whether ``HOST:PORT`` accepts a TCP connection now."""
    host, port = address.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            return True
    except OSError:
        return False


def _etcd_status(address: str, ca: str | None = None, timeout_s: float = 1.0) -> dict[str, Any]:
    """``dbSize`` and alarms of an etcd member (its Maintenance.Status); {} if it fails."""
    import grpc  # type: ignore[import-untyped]
    from aetcd.rpc import rpc_pb2, rpc_pb2_grpc  # type: ignore[import-untyped]

    try:
        if ca is None:
            channel = grpc.insecure_channel(address)
        else:
            credentials = grpc.ssl_channel_credentials(Path(ca).read_bytes())
            channel = grpc.secure_channel(address, credentials)
        with channel:
            stub = rpc_pb2_grpc.MaintenanceStub(channel)
            reply = stub.Status(rpc_pb2.StatusRequest(), timeout=timeout_s)
    except (grpc.RpcError, OSError):
        return {}
    return {"db_size": int(reply.dbSize), "alarms": list(reply.errors)}


@cluster.command()
@click.option("--data-dir", type=click.Path(path_type=Path), required=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per node per line.")
def status(data_dir: Path, as_json: bool) -> None:
    """Members, leader, term, commit and applied index of each node."""
    data_dir = _checked_data_dir(data_dir)
    state = _require_state(data_dir)
    if as_json:
        for row in _status_rows(data_dir, state):
            click.echo(json.dumps(row, sort_keys=True))
        return
    _print_status(data_dir, state)


def _node_pid(data_dir: Path, node: dict[str, Any]) -> int | None:
    """The pid running ``node`` now: the recorded one, else one found on its directory."""
    pid = node.get("pid")
    if pid and pid_alive(pid) and is_our_process(pid, Path(node["dir"])):
        return int(pid)
    found = node_processes(data_dir, Path(node["dir"]))
    return found[0] if found else None


def _status_rows(data_dir: Path, state: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for n in state["nodes"]:
        pid = _node_pid(data_dir, n)
        health = (fetch_health(n["metrics_port"]) if pid else None) or {}
        row = {
            "id": n["id"],
            "pid": pid if pid else n.get("pid"),
            "address": n["address"],
            "state": "up" if health else ("starting" if pid else "down"),
            "leader": health.get("leader"),
            "term": health.get("term"),
            "commit_index": health.get("commit_index"),
            "applied_index": health.get("applied_index", health.get("last_applied")),
            "role": health.get("role"),
            "members": health.get("members"),
        }
        client = n.get("client_address")
        if client:
            ca = (state.get("tls") or {}).get("ca")
            etcd = _etcd_status(client, ca) if health else {}
            row.update(
                client_url=f"{'https' if ca else 'http'}://{client}",
                db_size=etcd.get("db_size"),
                alarms=etcd.get("alarms"),
            )
        rows.append(row)
    return rows


def _print_status(data_dir: Path, state: dict[str, Any]) -> None:
    tls = " with TLS" if state.get("tls") else ""
    quorums = state.get("quorums")
    shape = f", quorums {quorums[0]}/{quorums[1]}" if isinstance(quorums, list) else ""
    table = Table(title=f"pnyx cluster ({state['protocol']}{tls}{shape}) in {data_dir}")
    columns: tuple[str, ...] = (
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
    if state.get("client_endpoints"):
        columns += ("client_url", "db_size")
    for column in columns:
        table.add_column(column, justify="right")
    for row in _status_rows(data_dir, state):
        table.add_row(*("-" if row.get(c) is None else str(row[c]) for c in columns))
    Console(width=140).print(table)


@cluster.command()
@click.option("--data-dir", type=click.Path(path_type=Path), required=True)
def down(data_dir: Path) -> None:
    """Stop every process of the cluster (SIGTERM, then SIGKILL after a timeout)."""
    data_dir = _checked_data_dir(data_dir)
    state = load_state(data_dir) if data_dir.is_dir() else None
    if state is None and not (data_dir.is_dir() and cluster_pids(data_dir, None)):
        fail(f"no cluster in {data_dir} (no {STATE_FILE}); nothing to stop")
    stopped = _stop_all(data_dir, state)
    click.echo(f"stopped {stopped} process(es) of the cluster in {data_dir}")


def _find_node(data_dir: Path, node_id: int) -> tuple[dict[str, Any], dict[str, Any]]:
    state = _require_state(data_dir)
    for node in state["nodes"]:
        if node["id"] == node_id:
            return state, node
    ids = ", ".join(str(n["id"]) for n in state["nodes"])
    fail(f"no node {node_id} in the cluster in {data_dir}; nodes are {ids}")


def signal_node(data_dir: Path, node_id: int, sig: str) -> int:
    """Send SIG``sig`` to node ``node_id`` of the cluster in ``data_dir``; returns its pid."""
    _, node = _find_node(data_dir, node_id)
    pid = _node_pid(data_dir, node)
    if pid is None:
        fail(f"node {node_id} is not running")
    os.kill(pid, getattr(signal, f"SIG{sig}"))
    return pid


def start_node(data_dir: Path, node_id: int) -> tuple[int, bool]:
    """(Re)start node ``node_id`` with its recorded arguments: (its pid, whether it started).

    A node that already runs (recorded or not) is left alone and its pid returned with
    False.  The record is written before the launch (a full disk fails here, nothing
    started) and after it; when the second write fails, the new process is killed."""
    state, node = _find_node(data_dir, node_id)
    running = _node_pid(data_dir, node)
    if running is not None:
        if node.get("pid") != running:
            node["pid"] = running
            with contextlib.suppress(OSError):  # adopting is best effort; it runs either way
                cluster_state.save_state(data_dir, state)
        return running, False
    _record_or_fail(data_dir, state, f"node {node_id} was not started")
    try:
        pid = _launch(node["argv"], Path(node["dir"]))
    except OSError as exc:
        fail(f"cannot start node {node_id}: {_reason(exc)}", RUNTIME_ERROR)
    node["pid"] = pid
    try:
        cluster_state.save_state(data_dir, state)
    except OSError as exc:
        _kill_now(pid)
        _roll_back_failed(data_dir, node_id, pid, exc)
    return pid, True


def _roll_back_failed(data_dir: Path, node_id: int, pid: int, exc: OSError) -> NoReturn:
    fail(
        f"cannot write {data_dir / STATE_FILE}: {_reason(exc)}; stopped node {node_id} "
        f"again (pid {pid}) so that no process runs untracked",
        RUNTIME_ERROR,
    )


def members_of(data_dir: Path) -> dict[int, tuple[str, int]]:
    """Node id → (host, port) of the cluster in ``data_dir``."""
    state = _require_state(data_dir)
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
    result = cluster_command(
        "up",
        "--nodes",
        str(nodes),
        "--protocol",
        protocol,
        "--data-dir",
        str(data_dir),
        "--detach",
    )
    if result.returncode != 0:
        raise RuntimeError(f"cluster did not start: {result.stderr.strip()}")


class KillRestartNemesis:
    """Workload nemesis: ``kill -9`` a random node, wait, restart it from its data dir."""

    def __init__(self, data_dir: Path, down_s: float = 0.3) -> None:
        self.data_dir = data_dir.resolve()
        self.down_s = down_s
        self.kills = 0

    def __call__(self, rng: random.Random) -> str:
        victim = rng.choice(sorted(members_of(self.data_dir)))
        pid = signal_node(self.data_dir, victim, "KILL")
        self.kills += 1
        _wait_gone(pid)
        time.sleep(self.down_s)
        start_node(self.data_dir, victim)
        return f"kill -9 node {victim}, restart after {self.down_s:.1f} s"


def _wait_gone(pid: int) -> None:
    deadline = time.monotonic() + KILL_WAIT_S
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(POLL_S / 10)


@cluster.command()
@click.option("--data-dir", type=click.Path(path_type=Path), required=True)
@click.option("--id", "node_id", type=click.IntRange(1, 999), required=True,
              help="The node to signal.")  # fmt: skip
@click.option(
    "--signal",
    "sig",
    type=click.Choice(["KILL", "TERM", "STOP", "CONT"]),
    default="KILL",
    show_default=True,
)
def kill(data_dir: Path, node_id: int, sig: str) -> None:
    """Send a signal to one node of the cluster (KILL: crash it; STOP/CONT: pause it)."""
    pid = signal_node(_checked_data_dir(data_dir), node_id, sig)
    click.echo(f"sent SIG{sig} to node {node_id} (pid {pid})")


@cluster.command()
@click.option("--data-dir", type=click.Path(path_type=Path), required=True)
@click.option("--id", "node_id", type=click.IntRange(1, 999), required=True,
              help="The node to (re)start.")  # fmt: skip
def start(data_dir: Path, node_id: int) -> None:
    """Restart a stopped node with its original arguments; a running node is left alone."""
    pid, started = start_node(_checked_data_dir(data_dir), node_id)
    if started:
        click.echo(f"started node {node_id} (pid {pid})")
    else:
        click.echo(f"node {node_id} already runs (pid {pid}); nothing started")


def _stop_all(data_dir: Path, state: dict[str, Any] | None) -> int:
    """Stop every process of the cluster, recorded or found; then remove the record."""
    ours = cluster_pids(data_dir, state)
    for pid in ours:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
            os.kill(pid, signal.SIGCONT)  # a paused node handles SIGTERM only once resumed
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline and any(pid_alive(p) for p in ours):
        _reap()
        time.sleep(POLL_S)
    for pid in ours:
        if pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    _reap()
    with contextlib.suppress(FileNotFoundError):
        (data_dir / STATE_FILE).unlink()
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

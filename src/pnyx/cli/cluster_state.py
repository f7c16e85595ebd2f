"""The record of a local cluster (``DATA_DIR/cluster.json``) and the processes it started.

The record is replaced atomically (temp file, fsync, rename, directory fsync), so a crash or a
full disk leaves either the old or the new record, never a torn one.  Processes are found two
ways: by the pids in the record, and by scanning ``/proc`` for ``pnyx serve`` processes whose
``--data-dir`` lies inside the cluster's data directory — the second finds a node whose pid
was never recorded (a launch that failed half-way), so nothing the CLI started goes untracked.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pnyx.cli.addresses import parse_peers
from pnyx.cli.errors import fail
from pnyx.runtime.snapshots import fsync_dir
from pnyx.runtime.transport import Address

STATE_FILE = "cluster.json"
_NODE_FIELDS: dict[str, tuple[type, ...]] = {
    "id": (int,),
    "metrics_port": (int,),
    "argv": (list,),
    "address": (str,),
    "dir": (str,),
}


class StateError(Exception):
    """The cluster record cannot be read or is not a pnyx cluster record."""


def load_state(data_dir: Path) -> dict[str, Any] | None:
    """The cluster record in ``data_dir``; None when there is none; StateError when bad."""
    path = data_dir / STATE_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise StateError(f"{path} is unreadable ({_reason(exc)})") from None
    try:
        state = json.loads(text)
    except ValueError as exc:
        raise StateError(f"{path} is not valid JSON ({exc})") from None
    problem = _state_problem(state)
    if problem:
        raise StateError(f"{path} is not a pnyx cluster record ({problem})")
    result: dict[str, Any] = state
    return result


def _state_problem(state: object) -> str | None:
    if not isinstance(state, dict):
        return "not an object"
    for key in ("protocol", "peers"):
        if not isinstance(state.get(key), str):
            return f"no {key!r} string"
    nodes = state.get("nodes")
    if not isinstance(nodes, list) or not nodes:
        return "no 'nodes' list"
    for node in nodes:
        if not isinstance(node, dict):
            return "a node entry is not an object"
        for key, types in _NODE_FIELDS.items():
            if not isinstance(node.get(key), types) or isinstance(node.get(key), bool):
                return f"a node entry has no valid {key!r}"
        pid = node.get("pid")
        if pid is not None and (not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0):
            return f"node {node['id']} has a bad pid {pid!r}"
    return None


def recorded_members(
    data_dir: Path, state: dict[str, Any]
) -> tuple[dict[int, Address], Path | None]:
    """The members a cluster record lists and the CA file its clients verify them with
    (None: plain TCP); a record whose peers do not parse exits with one line."""
    try:
        members = parse_peers(state["peers"])
    except ValueError as exc:
        fail(f"{data_dir}/{STATE_FILE}: {exc}")
    tls = state.get("tls")
    ca = Path(tls["ca"]) if isinstance(tls, dict) and isinstance(tls.get("ca"), str) else None
    return members, ca


def save_state(data_dir: Path, state: dict[str, Any]) -> None:
    """Replace the record atomically and durably; OSError (e.g. ENOSPC) when it cannot."""
    path = data_dir / STATE_FILE
    temp = data_dir / (STATE_FILE + ".tmp")
    data = (json.dumps(state, indent=1) + "\n").encode()
    try:
        with open(temp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except OSError:
        temp.unlink(missing_ok=True)
        raise
    fsync_dir(data_dir)


def _reason(exc: BaseException) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)


def pid_alive(pid: int) -> bool:
    """True when ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            state = handle.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _cmdline(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().decode(errors="replace").split("\0")
    except OSError:
        return None


def serve_data_dir(argv: list[str]) -> Path | None:
    """The ``--data-dir`` of a ``pnyx serve`` command line, None for any other command."""
    if "serve" not in argv:
        return None
    for i, arg in enumerate(argv):
        if arg == "--data-dir" and i + 1 < len(argv):
            return Path(argv[i + 1])
        if arg.startswith("--data-dir="):
            return Path(arg.partition("=")[2])
    return None


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def is_our_process(pid: int, data_dir: Path) -> bool:
    """True when ``pid`` runs ``pnyx serve`` on a node directory inside ``data_dir``."""
    argv = _cmdline(pid)
    node_dir = serve_data_dir(argv) if argv else None
    return node_dir is not None and _inside(_absolute(node_dir, pid), data_dir.resolve())


def _absolute(path: Path, pid: int) -> Path:
    if path.is_absolute():
        return path
    try:
        return Path(os.readlink(f"/proc/{pid}/cwd")) / path
    except OSError:
        return path


def serve_processes(data_dir: Path) -> dict[int, Path]:
    """Every live ``pnyx serve`` process on a directory inside ``data_dir``: pid → its dir."""
    root = data_dir.resolve()
    found: dict[int, Path] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        pid = int(entry)
        argv = _cmdline(pid)
        node_dir = serve_data_dir(argv) if argv else None
        if node_dir is None:
            continue
        node_dir = _absolute(node_dir, pid)
        if _inside(node_dir, root) and pid_alive(pid):
            found[pid] = node_dir
    return found


def node_processes(data_dir: Path, node_dir: Path) -> list[int]:
    """Pids of live ``pnyx serve`` processes on exactly ``node_dir``."""
    target = node_dir.resolve()
    return sorted(p for p, d in serve_processes(data_dir).items() if d == target)


def cluster_pids(data_dir: Path, state: dict[str, Any] | None) -> list[int]:
    """Recorded pids still running our serve, plus any untracked serve inside ``data_dir``."""
    pids = set(serve_processes(data_dir))
    for node in state["nodes"] if state else ():
        pid = node.get("pid")
        if pid and pid_alive(pid) and is_our_process(pid, data_dir):
            pids.add(pid)
    return sorted(pids)

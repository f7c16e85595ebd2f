"""Each replication scheme comes up as real processes (`pnyx cluster up`) and serves put/get
through `pnyx kv`; an operation a scheme does not offer is refused with one line.

The four clusters start concurrently (one `cluster up` child each) to keep the test short;
the CRAQ one runs with mutual TLS between nodes (and `pnyx kv` verifies the nodes with the
cluster's CA)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from pnyx.cli.cluster_cmd import load_state
from pnyx.cli.main import cli

SCHEMES = ("chain", "craq", "primary-backup", "dynamo")
UNSUPPORTED = {"chain": "delete", "craq": "delete", "dynamo": "append"}
WITH_TLS = "craq"
CLUSTER_TIMEOUT_S = 120.0


def _kv(data_dir: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["kv", "--data-dir", str(data_dir), *args])
    return result.exit_code, result.stdout, result.stderr


def _pnyx_cluster(tmp_path: Path, *args: str) -> None:
    """``pnyx cluster ARGS --data-dir DIR`` for every scheme at once (one child each)."""
    children = {
        protocol: subprocess.Popen(
            [sys.executable, "-m", "pnyx", "cluster", *(a.replace("{p}", protocol) for a in args),
             *(["--tls"] if args[0] == "up" and protocol == WITH_TLS else []),
             "--data-dir", str(tmp_path / protocol)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        for protocol in SCHEMES
        if args[0] == "up" or (tmp_path / protocol / "cluster.json").exists()
    }  # fmt: skip
    failed = []
    for protocol, child in children.items():
        try:
            _, err = child.communicate(timeout=CLUSTER_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            child.kill()
            _, err = child.communicate()
        if child.returncode != 0:
            failed.append(f"{protocol}: {err.strip()}")
    assert not failed, f"pnyx cluster {args[0]}: {failed}"


def _check_scheme(protocol: str, data_dir: Path) -> None:
    state = load_state(data_dir)
    assert state is not None
    extra = 0 if protocol == "dynamo" else 1  # the configuration process
    assert len(state["nodes"]) == 3 + extra
    assert bool(state.get("tls")) == (protocol == WITH_TLS)
    assert _kv(data_dir, "put", "greeting", "hello") == (0, "OK\n", ""), protocol
    assert _kv(data_dir, "put", "greeting", "world")[0] == 0, protocol
    code, out, _ = _kv(data_dir, "get", "greeting")
    assert (code, json.loads(out)) == (0, "world"), protocol
    assert json.loads(_kv(data_dir, "get", "absent")[1]) == "", protocol
    op = UNSUPPORTED.get(protocol)
    if op is not None:
        code, out, err = _kv(data_dir, op, "greeting", *(["x"] if op == "append" else []))
        assert code == 2 and out == "", (protocol, code, out)
        assert f"kv {op}: {protocol} offers" in err and len(err.strip().splitlines()) == 1


def test_every_scheme_serves_put_and_get_through_pnyx_kv(tmp_path: Path) -> None:
    try:
        _pnyx_cluster(tmp_path, "up", "--nodes", "3", "--protocol", "{p}", "--detach")
        for protocol in SCHEMES:
            _check_scheme(protocol, tmp_path / protocol)
    finally:
        _pnyx_cluster(tmp_path, "down")

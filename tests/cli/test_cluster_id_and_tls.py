"""Cluster ids and peer TLS through the CLI (issue 16 item 1, CLI side).

``cluster up`` generates a random cluster id, records it and passes it to every ``serve``;
``cluster up --tls`` creates a CA and node certificates under the data dir and ``pnyx kv``
connects with the CA from ``cluster.json``; ``serve`` without ``--cluster-id`` keeps the id
its data directory was stamped with."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pnyx.cli.cluster_cmd import fetch_health, free_ports
from tests.cli.cli_helpers import (
    PNYX,
    assert_one_line_error,
    one_leader,
    pnyx,
    read_state,
    wait_for,
)


def _argv_value(argv: list[str], option: str) -> str:
    return argv[argv.index(option) + 1]


def test_up_generates_one_cluster_id_for_every_node(tmp_path: Path) -> None:
    data_dir = tmp_path / "c"
    up = pnyx("cluster", "up", "--nodes", "3", "--protocol", "raft", "--data-dir", str(data_dir),
              "--detach")  # fmt: skip
    assert up.returncode == 0, up.stderr
    state = read_state(data_dir)
    cluster_id = state["cluster_id"]
    assert isinstance(cluster_id, str) and len(cluster_id) == 16
    for node in state["nodes"]:
        assert _argv_value(node["argv"], "--cluster-id") == cluster_id
        stamp = json.loads((Path(node["dir"]) / "node.json").read_text())
        assert stamp["cluster"] == cluster_id
    other = tmp_path / "other"
    up2 = pnyx("cluster", "up", "--nodes", "1", "--data-dir", str(other), "--detach")
    assert up2.returncode == 0, up2.stderr
    assert read_state(other)["cluster_id"] != cluster_id
    for d in (data_dir, other):
        assert pnyx("cluster", "down", "--data-dir", str(d)).returncode == 0


def _wait_for_value(kv: list[str], expected: str, what: str) -> None:
    """Retry ``get k`` until it answers ``expected``: a loaded machine may re-elect between
    the put and the get, and a get during an election fails without a value."""
    gets: list[subprocess.CompletedProcess[str]] = []

    def got() -> bool:
        gets.append(pnyx(*kv, "get", "k"))
        return gets[-1].returncode == 0 and gets[-1].stdout.strip() == json.dumps(expected)

    try:
        wait_for(got, 120, what)
    except AssertionError as failure:
        raise AssertionError(f"{failure}; last: {gets[-1].stdout!r} {gets[-1].stderr!r}") from None


def test_tls_cluster_elects_and_serves_kv_over_tls(tmp_path: Path) -> None:
    data_dir = tmp_path / "c"
    up = pnyx("cluster", "up", "--tls", "--nodes", "3", "--protocol", "raft", "--data-dir",
              str(data_dir), "--detach")  # fmt: skip
    assert up.returncode == 0, up.stderr
    state = read_state(data_dir)
    ca = Path(state["tls"]["ca"])
    assert ca == data_dir / "tls" / "ca.pem" and ca.is_file()
    for node in state["nodes"]:
        argv = node["argv"]
        assert Path(_argv_value(argv, "--tls-ca")) == ca
        assert Path(_argv_value(argv, "--tls-cert")) == data_dir / "tls" / f"node-{node['id']}.pem"
        assert Path(_argv_value(argv, "--tls-key")) == data_dir / "tls" / f"node-{node['id']}.key"
    assert (data_dir / "tls" / "node-1.key").stat().st_mode & 0o077 == 0
    wait_for(lambda: one_leader(data_dir), 60, "a leader over mutual TLS")

    kv = ["kv", "--data-dir", str(data_dir)]
    puts: list[subprocess.CompletedProcess[str]] = []

    def put_ok() -> bool:  # a loaded machine may re-elect meanwhile: retry (the put is a
        puts.append(pnyx(*kv, "put", "k", "over-tls"))  # plain overwrite, so retrying is fine)
        return puts[-1].returncode == 0 and puts[-1].stdout.strip() == "OK"

    wait_for(put_ok, 120, "a put over TLS")
    endpoints = state["peers"]
    _wait_for_value(kv, "over-tls", "a get over TLS via the data dir")
    _wait_for_value(["kv", "--endpoints", endpoints, "--tls-ca", str(ca)], "over-tls",
                    "a get over TLS via --endpoints and --tls-ca")  # fmt: skip
    plain = pnyx("kv", "--endpoints", endpoints, "get", "k")
    assert_one_line_error(plain, 1, "pnyx kv: get failed")
    assert pnyx("cluster", "down", "--data-dir", str(data_dir)).returncode == 0


@contextlib.contextmanager
def _serving(argv: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "ab") as out:
        proc = subprocess.Popen([*PNYX, *argv], stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def test_serve_keeps_the_stamped_cluster_id_and_refuses_a_second_process(
    tmp_path: Path,
) -> None:
    node_dir = tmp_path / "node"
    peer_port, metrics_port, other_port = free_ports(3)
    base = ["serve", "--id", "1", "--data-dir", str(node_dir), "--protocol", "raft",
            "--metrics-port", str(metrics_port)]  # fmt: skip
    first = [*base, "--peers", f"1=127.0.0.1:{peer_port}", "--cluster-id", "team-a"]
    with _serving(first, tmp_path / "first.log") as proc:
        wait_for(lambda: fetch_health(metrics_port) is not None, 60, "first serve healthy")
        second = pnyx("serve", "--id", "1", "--data-dir", str(node_dir), "--peers",
                      f"1=127.0.0.1:{other_port}", "--cluster-id", "team-a")  # fmt: skip
        assert_one_line_error(second, 1, "is in use by another process")
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    assert json.loads((node_dir / "node.json").read_text())["cluster"] == "team-a"

    log = tmp_path / "again.log"
    with _serving([*base, "--peers", f"1=127.0.0.1:{peer_port}"], log) as proc:
        wait_for(lambda: fetch_health(metrics_port) is not None, 60, "restarted serve healthy")
        assert "cluster id 'team-a' from" in log.read_text()
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=60) == 0

    wrong = pnyx(*base, "--peers", f"1=127.0.0.1:{peer_port}", "--cluster-id", "team-b")
    assert_one_line_error(wrong, 1, "of cluster 'team-a'")


@pytest.mark.parametrize("nodes", ["1"])
def test_single_node_without_cluster_id_gets_a_random_one(tmp_path: Path, nodes: str) -> None:
    node_dir = tmp_path / "node"
    peer_port, metrics_port = free_ports(2)
    argv = ["serve", "--id", nodes, "--data-dir", str(node_dir), "--peers",
            f"1=127.0.0.1:{peer_port}", "--metrics-port", str(metrics_port)]  # fmt: skip
    log = tmp_path / "serve.log"
    with _serving(argv, log) as proc:
        wait_for(lambda: fetch_health(metrics_port) is not None, 60, "serve healthy")
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    stamped = json.loads((node_dir / "node.json").read_text())["cluster"]
    assert len(stamped) == 16 and f"new cluster id {stamped!r}" in log.read_text()

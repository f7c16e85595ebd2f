"""``pnyx cluster up --protocol etcd`` and ``pnyx serve --protocol etcd`` from the command
line: client ports, the ETCDCTL_ENDPOINTS line, status with client URL and data size."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from aetcd.rpc import rpc_pb2, rpc_pb2_grpc

from pnyx.cli.cluster_cmd import pid_alive

PNYX = [sys.executable, "-m", "pnyx"]


def _run(*args: str, timeout_s: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PNYX, *args], capture_output=True, text=True, timeout=timeout_s)


@pytest.fixture
def cluster_dir(tmp_path: Path) -> Iterator[Path]:
    data_dir = tmp_path / "etcd-cli"
    yield data_dir
    state_file = data_dir / "cluster.json"
    if state_file.exists():  # whatever happened, stop what the record names
        for node in json.loads(state_file.read_text())["nodes"]:
            if node.get("pid") and pid_alive(node["pid"]):
                os.kill(node["pid"], signal.SIGKILL)
    shutil.rmtree(data_dir, ignore_errors=True)


def test_cluster_up_prints_endpoints_that_serve_etcd(cluster_dir: Path) -> None:
    up = _run("cluster", "up", "--nodes", "1", "--protocol", "etcd",
              "--data-dir", str(cluster_dir), "--detach")  # fmt: skip
    assert up.returncode == 0, up.stderr
    lines = [line for line in up.stdout.splitlines() if line.startswith("ETCDCTL_ENDPOINTS=")]
    assert len(lines) == 1
    (endpoint,) = lines[0].split("=", 1)[1].split(",")
    with grpc.insecure_channel(endpoint) as channel:
        kv = rpc_pb2_grpc.KVStub(channel)
        kv.Put(rpc_pb2.PutRequest(key=b"k", value=b"v"), timeout=20)
        got = kv.Range(rpc_pb2.RangeRequest(key=b"k"), timeout=20)
    assert [x.value for x in got.kvs] == [b"v"]
    status = _run("cluster", "status", "--data-dir", str(cluster_dir), "--json")
    (row,) = [json.loads(line) for line in status.stdout.splitlines()]
    assert row["client_url"] == f"http://{endpoint}" and row["db_size"] > 0
    down = _run("cluster", "down", "--data-dir", str(cluster_dir))
    assert down.returncode == 0 and "stopped 1" in down.stdout


def test_etcd_options_are_refused_for_other_protocols(tmp_path: Path) -> None:
    result = _run("serve", "--id", "1", "--peers", "1=127.0.0.1:7001", "--protocol", "raft",
                  "--client-port", "5", "--data-dir", str(tmp_path / "d"))  # fmt: skip
    assert result.returncode == 2
    assert "--client-port: only for --protocol etcd" in result.stderr

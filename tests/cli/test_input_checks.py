"""Issue 16 item 9: every bad option of ``pnyx serve | cluster | kv`` is one clear line.

Usage errors exit 2 (``pnyx: error: ...``), runtime failures exit 1; never a traceback."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pnyx.cli.addresses import check_cluster_id, format_peers, parse_peers
from tests.cli.cli_helpers import assert_one_line_error, pnyx


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("1=127.0.0.1:99999", "bad port '99999'"),
        ("1=127.0.0.1:0", "bad port '0'"),
        ("1=127.0.0.1:-5", "bad port '-5'"),
        ("1=127.0.0.1:", "bad port ''"),
        ("1=127.0.0.1", "bad address"),
        ("1=:7001", "bad address"),
        ("1=bad_host!:7001", "bad host 'bad_host!'"),
        ("1=999.1.1.1:7001", "bad host '999.1.1.1'"),
        ("1=-leading.dash:7001", "bad host"),
        ("1=::1:7001", "write an IPv6 host as [::1]:7001"),
        ("1=[127.0.0.1]:7001", "brackets are for IPv6"),
        ("0=127.0.0.1:7001", "bad peer id 0"),
        ("1000=127.0.0.1:7001", "bad peer id 1000"),
        ("x=127.0.0.1:7001", "bad peer 'x=127.0.0.1:7001'"),
        ("1=127.0.0.1:7001,1=127.0.0.1:7002", "peer id 1 appears twice"),
        ("1=127.0.0.1:7001,2=127.0.0.1:7001", "peers 1 and 2 both use 127.0.0.1:7001"),
        ("", "the member list is empty"),
        (" , ", "the member list is empty"),
    ],
)
def test_parse_peers_refuses(text: str, needle: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_peers(text)
    assert needle in str(caught.value)
    assert "\n" not in str(caught.value)


def test_parse_peers_accepts_names_and_ipv6() -> None:
    peers = parse_peers("1=127.0.0.1:1, 2=[::1]:65535,3=node-3.example:7003")
    assert peers == {1: ("127.0.0.1", 1), 2: ("::1", 65535), 3: ("node-3.example", 7003)}
    assert parse_peers(format_peers(peers)) == peers


@pytest.mark.parametrize("text", ["", "a b", "-x", "x" * 65, "é"])
def test_cluster_id_syntax(text: str) -> None:
    with pytest.raises(ValueError, match="bad cluster id"):
        check_cluster_id(text)
    assert check_cluster_id("a43abd899cd8e857") == "a43abd899cd8e857"


# -- pnyx serve ----------------------------------------------------------------------------


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port on 127.0.0.1 someone already listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def _serve(tmp_path: Path, *args: str, data_dir: Path | None = None) -> list[str]:
    return ["serve", *args, "--data-dir", str(data_dir or tmp_path / "node")]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--id", "1", "--peers", "1=127.0.0.1:99999"], "bad port '99999'"),
        (["--id", "1", "--peers", "1=300.0.0.1:7001"], "bad host '300.0.0.1'"),
        (["--id", "1", "--peers", "1=127.0.0.1:7001,1=127.0.0.1:7002"], "appears twice"),
        (["--id", "2", "--peers", "1=127.0.0.1:7001"], "--id 2 is not listed"),
        (["--id", "1", "--peers", "1=127.0.0.1:7001", "--cluster-id", "a b"], "bad cluster id"),
        (
            ["--id", "1", "--peers", "1=127.0.0.1:7001,2=127.0.0.1:7002"],
            "--cluster-id is required for a new node with peers",
        ),
        (["--id", "1", "--peers", "1=127.0.0.1:7001", "--tls-ca", "ca.pem"], "go together"),
    ],
)
def test_serve_usage_errors(tmp_path: Path, args: list[str], needle: str) -> None:
    result = pnyx(*_serve(tmp_path, *args))
    assert_one_line_error(result, 2, needle)
    assert not (tmp_path / "node").exists(), "nothing is created on a usage error"


def test_serve_refuses_missing_and_garbage_tls_files(tmp_path: Path) -> None:
    peers = ["--id", "1", "--peers", "1=127.0.0.1:7001"]
    tls = ["--tls-ca", str(tmp_path / "ca.pem"), "--tls-cert", str(tmp_path / "n.pem")]
    tls += ["--tls-key", str(tmp_path / "n.key")]
    assert_one_line_error(pnyx(*_serve(tmp_path, *peers, *tls)), 2, "does not exist")
    for name in ("ca.pem", "n.pem", "n.key"):
        (tmp_path / name).write_text("not a certificate\n")
    assert_one_line_error(pnyx(*_serve(tmp_path, *peers, *tls)), 2, "cannot load the TLS files")


def test_serve_data_dir_problems_are_one_line(tmp_path: Path) -> None:
    peers = ["--id", "1", "--peers", "1=127.0.0.1:7001"]
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert_one_line_error(pnyx(*_serve(tmp_path, *peers, data_dir=a_file)), 2, "not a directory")
    result = pnyx(*_serve(tmp_path, *peers, data_dir=Path("/proc/nope")))
    assert_one_line_error(result, 1, "cannot create data directory /proc/nope")
    result = pnyx(*_serve(tmp_path, *peers, data_dir=a_file / "sub"))
    assert_one_line_error(result, 1, "cannot start")


def test_serve_port_in_use_is_one_line(tmp_path: Path, busy_port: int) -> None:
    result = pnyx(*_serve(tmp_path, "--id", "1", "--peers", f"1=127.0.0.1:{busy_port}"))
    assert_one_line_error(result, 1, "node 1 cannot start")
    assert "in use" in result.stderr


def test_serve_metrics_port_in_use_is_one_line(tmp_path: Path, busy_port: int) -> None:
    [free] = _free_ports(1)
    args = ["--id", "1", "--peers", f"1=127.0.0.1:{free}", "--metrics-port", str(busy_port)]
    result = pnyx(*_serve(tmp_path, *args))
    assert_one_line_error(result, 1, "node 1 cannot start")


def test_serve_refuses_a_directory_of_another_node(tmp_path: Path) -> None:
    node_dir = tmp_path / "node"
    node_dir.mkdir()
    stamp = {"format": 2, "node_id": 2, "members": [1, 2], "cluster": "c1", "wal": False}
    (node_dir / "node.json").write_text(json.dumps(stamp))
    [p1, p2] = _free_ports(2)
    peers = f"1=127.0.0.1:{p1},2=127.0.0.1:{p2}"
    result = pnyx(*_serve(tmp_path, "--id", "1", "--peers", peers, "--cluster-id", "c1"))
    assert_one_line_error(result, 1, f"data directory {node_dir} belongs to node 2")


def _free_ports(count: int) -> list[int]:
    from pnyx.cli.cluster_cmd import free_ports

    return free_ports(count)


# -- pnyx cluster --------------------------------------------------------------------------


def test_cluster_up_bad_data_dirs(tmp_path: Path) -> None:
    result = pnyx("cluster", "up", "--nodes", "1", "--data-dir", "/proc/nope", "--detach")
    assert_one_line_error(result, 2, "cannot create --data-dir /proc/nope")
    a_file = tmp_path / "file"
    a_file.write_text("x")
    result = pnyx("cluster", "up", "--nodes", "1", "--data-dir", str(a_file), "--detach")
    assert_one_line_error(result, 2, "is not a directory")
    result = pnyx("cluster", "up", "--nodes", "1", "--data-dir", str(a_file / "d"), "--detach")
    assert_one_line_error(result, 2, "cannot create --data-dir")


BAD_RECORDS = [
    ("{not json", "is not valid JSON"),
    ("[]", "not an object"),
    ("{}", "no 'protocol' string"),
    ('{"protocol": "raft", "peers": "1=127.0.0.1:1", "nodes": []}', "no 'nodes' list"),
    ('{"protocol": "raft", "peers": "", "nodes": [{"id": 1}]}', "no valid 'metrics_port'"),
]
"""Damaged ``cluster.json`` records and the words of their one-line error."""
RECORD_COMMANDS = ["status", "down", "kill", "start", "up"]
_RECORD_EXTRA = {"kill": ["--id", "1"], "start": ["--id", "1"], "up": ["--nodes", "1", "--detach"]}


def _record_args(tmp_path: Path, record: str, command: str) -> list[str]:
    (tmp_path / "cluster.json").write_text(record)
    return ["cluster", command, "--data-dir", str(tmp_path), *_RECORD_EXTRA.get(command, [])]


@pytest.mark.parametrize(
    ("command", "record", "needle"),
    [(command, *BAD_RECORDS[i]) for i, command in enumerate(RECORD_COMMANDS)],
)
def test_bad_cluster_record_is_one_line(
    tmp_path: Path, record: str, needle: str, command: str
) -> None:
    """In a real ``pnyx`` process: every command once, every kind of damage once."""
    result = pnyx(*_record_args(tmp_path, record, command))
    assert_one_line_error(result, 2, needle)


@pytest.mark.parametrize(("record", "needle"), BAD_RECORDS)
@pytest.mark.parametrize("command", RECORD_COMMANDS)
def test_bad_cluster_record_is_one_line_for_every_command(
    tmp_path: Path, record: str, needle: str, command: str
) -> None:
    """Every command with every kind of damage, in this process (the same click command
    and error path as the child processes above, without 25 interpreter start-ups)."""
    from click.testing import CliRunner

    from pnyx.cli.main import cli

    result = CliRunner().invoke(cli, _record_args(tmp_path, record, command))
    assert isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == 2, (result.exit_code, result.stderr)
    assert "Traceback" not in result.stderr and result.stdout == "", result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pnyx: error: "), result.stderr
    assert needle in lines[0], lines[0]


def test_bad_pid_in_cluster_record(tmp_path: Path) -> None:
    node = {"id": 1, "pid": "12", "metrics_port": 1, "argv": [], "address": "a:1", "dir": "d"}
    state = {"protocol": "raft", "peers": "1=127.0.0.1:1", "nodes": [node]}
    (tmp_path / "cluster.json").write_text(json.dumps(state))
    result = pnyx("cluster", "status", "--data-dir", str(tmp_path))
    assert_one_line_error(result, 2, "node 1 has a bad pid '12'")


def test_cluster_node_ids_checked(tmp_path: Path) -> None:
    node: dict[str, Any] = {
        "id": 1,
        "pid": None,
        "metrics_port": 1,
        "argv": [],
        "address": "a:1",
        "dir": "d",
    }
    state = {"protocol": "raft", "peers": "1=127.0.0.1:1", "nodes": [node]}
    (tmp_path / "cluster.json").write_text(json.dumps(state))
    for command in ("kill", "start"):
        result = pnyx("cluster", command, "--data-dir", str(tmp_path), "--id", "9")
        assert_one_line_error(result, 2, "no node 9 in the cluster")
        result = pnyx("cluster", command, "--data-dir", str(tmp_path), "--id", "0")
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert "0 is not in the range 1<=x<=999" in result.stderr
    result = pnyx("cluster", "kill", "--data-dir", str(tmp_path), "--id", "1")
    assert_one_line_error(result, 2, "node 1 is not running")


# -- pnyx kv -------------------------------------------------------------------------------


def test_kv_bad_endpoints_and_ca(tmp_path: Path) -> None:
    result = pnyx("kv", "--endpoints", "1=127.0.0.1:99999", "get", "k")
    assert_one_line_error(result, 2, "--endpoints: bad peer '1=127.0.0.1:99999'")
    result = pnyx(
        "kv", "--endpoints", "1=127.0.0.1:7001", "--tls-ca", str(tmp_path / "x"), "get", "k"
    )
    assert_one_line_error(result, 2, "does not exist")
    result = pnyx("kv", "get", "k")
    assert_one_line_error(result, 2, "give --data-dir")


def test_kv_against_a_broadcast_cluster_record(tmp_path: Path) -> None:
    node: dict[str, Any] = {
        "id": 1,
        "pid": None,
        "metrics_port": 1,
        "argv": [],
        "address": "a:1",
        "dir": "d",
    }
    state = {"protocol": "broadcast", "peers": "1=127.0.0.1:1", "nodes": [node]}
    (tmp_path / "cluster.json").write_text(json.dumps(state))
    result = pnyx("kv", "--data-dir", str(tmp_path), "get", "k")
    assert_one_line_error(result, 2, "runs 'broadcast', not the raft KV")


def test_kv_with_nobody_listening_is_one_line_runtime_error() -> None:
    [port] = _free_ports(1)
    result = pnyx("kv", "--endpoints", f"1=127.0.0.1:{port}", "get", "k")
    assert_one_line_error(result, 1, "pnyx kv: get failed")

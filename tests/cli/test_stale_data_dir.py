"""Issue 16 item 6: ``cluster up`` refuses, before launching anything, a data directory whose
node directories were stamped for another membership; ``--fresh`` removes only pnyx's files."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from pnyx.cli.cluster_state import pid_alive, serve_processes
from tests.cli.cli_helpers import (
    assert_one_line_error,
    one_leader,
    pnyx,
    read_state,
    wait_for,
)


def _up(data_dir: Path, nodes: int, *extra: str) -> subprocess.CompletedProcess[str]:
    args = ["--nodes", str(nodes), "--protocol", "raft", "--data-dir", str(data_dir)]
    return pnyx("cluster", "up", *args, *extra, "--detach")


def _kill_all(data_dir: Path) -> None:
    for node in read_state(data_dir)["nodes"]:
        pnyx("cluster", "kill", "--data-dir", str(data_dir), "--id", str(node["id"]))
        wait_for(lambda pid=node["pid"]: not pid_alive(pid), 30, "killed node gone")


def test_up_with_more_nodes_on_a_killed_one_node_cluster_is_refused(tmp_path: Path) -> None:
    data_dir = tmp_path / "c"
    first = _up(data_dir, 1)
    assert first.returncode == 0, first.stderr
    _kill_all(data_dir)
    record = (data_dir / "cluster.json").read_text()

    refused = _up(data_dir, 3)
    line = assert_one_line_error(refused, 2, f"{data_dir / 'node-1'} holds node 1")
    assert "members [1]" in line and "members [1, 2, 3]" in line
    assert f"pnyx cluster up --fresh --nodes 3 --data-dir {data_dir}" in line
    assert f"rm -r {data_dir}" in line
    assert serve_processes(data_dir) == {}, "something was launched"
    assert not (data_dir / "node-2").exists()
    assert (data_dir / "cluster.json").read_text() == record

    fresh = _up(data_dir, 3, "--fresh")
    assert fresh.returncode == 0, fresh.stderr
    wait_for(lambda: one_leader(data_dir), 60, "one leader")
    kv = ["kv", "--data-dir", str(data_dir)]
    assert pnyx(*kv, "put", "k", "v").stdout.strip() == "OK"
    assert json.loads(pnyx(*kv, "get", "k").stdout) == "v"
    assert pnyx("cluster", "down", "--data-dir", str(data_dir)).returncode == 0


def test_up_again_with_the_same_membership_keeps_the_data_and_cluster_id(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "c"
    assert _up(data_dir, 3).returncode == 0
    cluster_id = read_state(data_dir)["cluster_id"]
    kv = ["kv", "--data-dir", str(data_dir)]
    assert pnyx(*kv, "put", "k", "kept").stdout.strip() == "OK"
    assert pnyx("cluster", "down", "--data-dir", str(data_dir)).returncode == 0

    again = _up(data_dir, 3)
    assert again.returncode == 0, again.stderr
    assert read_state(data_dir)["cluster_id"] == cluster_id
    assert json.loads(pnyx(*kv, "get", "k").stdout) == "kept"
    assert pnyx("cluster", "down", "--data-dir", str(data_dir)).returncode == 0


def test_fresh_refuses_a_directory_with_foreign_files(tmp_path: Path) -> None:
    data_dir = tmp_path / "c"
    data_dir.mkdir()
    precious = data_dir / "thesis.tex"
    precious.write_text("years of work")
    (data_dir / "node-1").mkdir()
    (data_dir / "node-1" / "notes.txt").write_text("mine")
    result = _up(data_dir, 1, "--fresh")
    line = assert_one_line_error(result, 2, "--fresh removes only what `pnyx cluster` created")
    assert "node-1" in line and "thesis.tex" in line
    assert precious.read_text() == "years of work"
    assert (data_dir / "node-1" / "notes.txt").exists()


def test_node_dirs_of_different_clusters_are_refused(tmp_path: Path) -> None:
    data_dir = tmp_path / "c"
    for node_id, cluster in ((1, "a"), (2, "b")):
        node_dir = data_dir / f"node-{node_id}"
        node_dir.mkdir(parents=True)
        stamp = {"format": 2, "node_id": node_id, "members": [1, 2, 3], "cluster": cluster}
        (node_dir / "node.json").write_text(json.dumps(stamp))
    result = _up(data_dir, 3)
    assert_one_line_error(result, 2, "belong to different clusters")
    assert serve_processes(data_dir) == {}


def test_old_format_node_dir_is_refused_with_the_fresh_command(tmp_path: Path) -> None:
    node_dir = tmp_path / "c" / "node-1"
    node_dir.mkdir(parents=True)
    (node_dir / "node.json").write_text(json.dumps({"node_id": 1, "format": 1}))
    result = _up(tmp_path / "c", 1)
    line = assert_one_line_error(result, 2, "older pnyx")
    assert "--fresh" in line
    fresh = _up(tmp_path / "c", 1, "--fresh")
    assert fresh.returncode == 0, fresh.stderr
    assert pnyx("cluster", "down", "--data-dir", str(tmp_path / "c")).returncode == 0

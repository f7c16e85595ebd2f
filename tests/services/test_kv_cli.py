"""``pnyx kv`` and ``pnyx cluster status`` against a real Raft cluster."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

PNYX = [sys.executable, "-m", "pnyx"]


def _pnyx(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PNYX, *args], capture_output=True, text=True, timeout=60)


def test_kv_commands_and_status(raft_cluster: Path) -> None:
    kv = ["kv", "--data-dir", str(raft_cluster)]
    assert _pnyx(*kv, "put", "k", "v1").stdout.strip() == "OK"
    assert _pnyx(*kv, "append", "k", "+v2").stdout.strip() == "OK"
    assert json.loads(_pnyx(*kv, "get", "k").stdout) == "v1+v2"
    assert json.loads(_pnyx(*kv, "cas", "k", "wrong", "x").stdout) is False
    assert json.loads(_pnyx(*kv, "cas", "k", "v1+v2", "x").stdout) is True
    assert json.loads(_pnyx(*kv, "get", "k", "--serializable").stdout) in ("x", "v1+v2")
    assert json.loads(_pnyx(*kv, "delete", "k").stdout) is True
    assert json.loads(_pnyx(*kv, "get", "k").stdout) == ""

    deadline = time.monotonic() + 10
    rows: list[dict[str, object]] = []
    while time.monotonic() < deadline:
        status = _pnyx("cluster", "status", "--data-dir", str(raft_cluster), "--json")
        rows = [json.loads(line) for line in status.stdout.splitlines()]
        if len({r["commit_index"] for r in rows}) == 1:
            break
        time.sleep(0.2)
    assert [r["role"] for r in rows].count("leader") == 1
    assert len({r["leader"] for r in rows}) == 1 and len({r["term"] for r in rows}) == 1
    assert len({r["commit_index"] for r in rows}) == 1
    assert all(int(str(r["commit_index"])) >= 6 for r in rows)


def test_kv_without_a_cluster_is_a_clear_error(tmp_path: Path) -> None:
    result = _pnyx("kv", "--data-dir", str(tmp_path), "get", "k")
    assert result.returncode == 2 and "no cluster in" in result.stderr

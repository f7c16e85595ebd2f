"""Real 3-process Raft KV clusters under kill -9: no acknowledged write is lost, and the
recorded history is linearizable (checked with pnyx.check)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pnyx.check import History, KVModel, check_linearizable
from pnyx.cli.cluster_cmd import pid_alive
from pnyx.core import HistoryEvent
from pnyx.services.client import ClientError
from pnyx.services.kv import KvClient, KvError

PNYX = [sys.executable, "-m", "pnyx"]
KILLS = 200 if os.environ.get("PNYX_SOAK") else 4
KEYS = ("a", "b", "c")


def _pnyx(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PNYX, *args], capture_output=True, text=True, timeout=60)


@pytest.fixture
def raft_cluster(tmp_path: Path) -> Iterator[tuple[Path, dict[int, tuple[str, int]]]]:
    data_dir = tmp_path / "raft"
    up = _pnyx(
        "cluster",
        "up",
        "--nodes",
        "3",
        "--protocol",
        "raft",
        "--data-dir",
        str(data_dir),
        "--detach",
    )
    assert up.returncode == 0, up.stderr
    state = json.loads((data_dir / "cluster.json").read_text())
    members = {}
    for node in state["nodes"]:
        host, port = node["address"].split(":")
        members[node["id"]] = (host, int(port))
    try:
        yield data_dir, members
    finally:
        state = json.loads((data_dir / "cluster.json").read_text())
        for node in state["nodes"]:
            if pid_alive(node["pid"]):
                os.kill(node["pid"], signal.SIGKILL)


def _worker(
    members: dict[int, tuple[str, int]],
    process: int,
    history: list[HistoryEvent],
    stop: threading.Event,
    acked: list[tuple[str, str]],
) -> None:
    rng = random.Random(process)
    with KvClient(
        members, history=history, process=process, request_timeout_s=1.0, deadline_s=15.0
    ) as kv:
        n = 0
        while not stop.is_set():
            n += 1
            key = KEYS[rng.randrange(len(KEYS))]
            token = f"{process}.{n};"
            try:
                if rng.random() < 0.5:
                    kv.get(key)
                else:
                    kv.append(key, token)
                    acked.append((key, token))
            except (ClientError, KvError):
                time.sleep(0.05)


def test_kill9_loses_no_acknowledged_write_and_history_is_linearizable(
    raft_cluster: tuple[Path, dict[int, tuple[str, int]]],
) -> None:
    data_dir, members = raft_cluster
    history: list[HistoryEvent] = []
    acked: list[tuple[str, str]] = []
    stop = threading.Event()
    workers = [
        threading.Thread(target=_worker, args=(members, p, history, stop, acked), daemon=True)
        for p in range(3)
    ]
    for w in workers:
        w.start()
    rng = random.Random(7)
    try:
        for _ in range(KILLS):
            time.sleep(0.6)
            victim = rng.choice(sorted(members))
            assert (
                _pnyx(
                    "cluster", "kill", "--data-dir", str(data_dir), "--id", str(victim)
                ).returncode
                == 0
            )
            time.sleep(0.3)
            started = _pnyx("cluster", "start", "--data-dir", str(data_dir), "--id", str(victim))
            assert started.returncode == 0, started.stderr
        time.sleep(1.0)
    finally:
        stop.set()
        for w in workers:
            w.join(timeout=30)
    assert len(acked) > 20, f"too little progress under kills: {len(acked)} writes"
    # Every acknowledged append is in the final value of its key.
    with KvClient(members, history=history, process=99, deadline_s=20.0) as kv:
        final = {key: kv.get(key) for key in KEYS}
    for key, token in acked:
        assert token in final[key], f"acknowledged append {token!r} to {key!r} was lost"
    result = check_linearizable(History.from_events(history), KVModel(), timeout_s=60)
    assert result.verdict == "linearizable", result.explain()

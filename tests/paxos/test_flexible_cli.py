"""Flexible Paxos quorums from the command line (issue 11, item 2).

``pnyx sim``, ``pnyx serve`` and ``pnyx cluster up`` take ``--phase1-quorum`` and
``--phase2-quorum``; an invalid pair (|Q1| + |Q2| <= N, or out of range) is refused with exit
status 2 before anything runs.  The simulator runs and judges with the configured sizes, and
a real 5-process cluster with Q1=4, Q2=2 is shown to run with them: it commits with only two
live acceptors, and elects no leader with three.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from pnyx.cli.cluster_cmd import (
    cluster,
    cluster_command,
    fetch_health,
    members_of,
    signal_node,
    start_node,
)
from pnyx.cli.cluster_state import pid_alive
from pnyx.cli.serve_cmd import serve
from pnyx.cli.sim_cmd import sim
from pnyx.core import DurableState, SplitMix64
from pnyx.protocols.paxos import PaxosNode, quorum_sizes
from pnyx.protocols.paxos.spec import PAXOS, PaxosMonitor, with_quorums
from pnyx.services.client import ClientError
from pnyx.services.kv import KvClient, KvError
from pnyx.sim.runner import SimConfig, run_sim
from pnyx.sim.schedule import parse_faults

NODES = 5
Q1, Q2 = 4, 2
SIM_SEEDS = range(1, 61)
MUTANT_SEED = 29
"""First seed (of 1..30) at which ``paxos+commit_before_quorum`` with Q1=4, Q2=2 breaks."""
WAIT_S = 30.0
NO_LEADER_WINDOW_S = 3.0
"""How long three live nodes of a Q1=4 cluster are watched for a leader: several election
timeouts (0.3-0.5 s each on real processes) and back-offs."""
POLL_S = 0.1


def _refusal(exc_args: tuple[int, int | None, int | None]) -> str:
    """The message :func:`quorum_sizes` gives for these arguments."""
    with pytest.raises(ValueError) as raised:
        quorum_sizes(*exc_args)
    return str(raised.value)


# -- refusals ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--phase1-quorum", "2", "--phase2-quorum", "3"], _refusal((NODES, 2, 3))),
        (["--phase1-quorum", "1", "--phase2-quorum", "1"], _refusal((NODES, 1, 1))),
        (["--phase1-quorum", "6"], "phase-1 quorum 6 must be between 1 and 5 acceptors"),
        (["--phase2-quorum", "0"], "phase-2 quorum 0 must be between 1 and 5 acceptors"),
        (
            ["--nodes", "3", "--phase1-quorum", "2", "--phase2-quorum", "1"],
            _refusal((3, 2, 1)),
        ),
    ],
)
def test_sim_refuses_an_invalid_pair(args: list[str], message: str) -> None:
    result = CliRunner().invoke(sim, ["paxos", "--seed", "1", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "seed 1:" not in result.output  # nothing ran


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["raft", "--seed", "1", "--phase2-quorum", "2"], "protocol 'raft' has no Flexible"),
        (["paxos", "--seed", "1", "--swarm", "--phase2-quorum", "2"], "--swarm"),
        (["paxos", "--seeds", "1..2", "--jobs", "2", "--phase2-quorum", "2"], "--jobs 2"),
    ],
)
def test_sim_refuses_quorums_it_could_not_keep(args: list[str], message: str) -> None:
    result = CliRunner().invoke(sim, args)
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_cluster_up_refuses_an_invalid_pair_before_starting_anything(tmp_path: Path) -> None:
    data_dir = tmp_path / "bad"
    runner = CliRunner()
    args = ["up", "--nodes", "5", "--data-dir", str(data_dir), "--detach"]
    bad_pair = runner.invoke(
        cluster, [*args, "--protocol", "paxos", "--phase1-quorum", "3", "--phase2-quorum", "2"]
    )
    assert bad_pair.exit_code == 2, bad_pair.output
    assert _refusal((NODES, 3, 2)) in bad_pair.output
    etcd = runner.invoke(
        cluster, [*args, "--protocol", "etcd", "--consensus", "paxos", "--phase2-quorum", "2"]
    )
    assert etcd.exit_code == 2, etcd.output
    assert "only for --protocol paxos" in etcd.output
    assert not data_dir.exists()  # refused before the data dir, let alone a process


def _earlier_paxos_cluster(data_dir: Path, quorums: list[int] | None) -> None:
    """The files a stopped 5-node Paxos cluster (with ``quorums`` recorded) leaves behind."""
    from pnyx.cli.cluster_state import save_state
    from pnyx.runtime.datadir import DataDirStamp, claim_data_dir

    ids = tuple(range(1, NODES + 1))
    nodes = []
    for node_id in ids:
        node_dir = data_dir / f"node-{node_id}"
        claim_data_dir(node_dir, DataDirStamp(node_id, ids, "c0ffee"))
        nodes.append(
            {"id": node_id, "pid": None, "metrics_port": 1, "argv": ["pnyx"],
             "address": "127.0.0.1:1", "dir": str(node_dir)}
        )  # fmt: skip
    state: dict[str, Any] = {"protocol": "paxos", "peers": "-", "nodes": nodes}
    if quorums is not None:
        state["quorums"] = quorums
    save_state(data_dir, state)


@pytest.mark.parametrize(
    ("recorded", "asked", "message"),
    [
        ([Q1, Q2], [], "written with quorums phase-1 4, phase-2 2; this start asks for 3, 3"),
        (None, ["--phase1-quorum", "4"], "phase-1 3, phase-2 3; this start asks for 4, 2"),
    ],
)
def test_cluster_up_refuses_reusing_paxos_data_under_other_quorums(
    tmp_path: Path, recorded: list[int] | None, asked: list[str], message: str
) -> None:
    data_dir = tmp_path / "old"
    _earlier_paxos_cluster(data_dir, recorded)
    before = (data_dir / "cluster.json").read_bytes()
    result = CliRunner().invoke(
        cluster,
        ["up", "--nodes", "5", "--protocol", "paxos", "--data-dir", str(data_dir), "--detach",
         *asked],
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert message in result.output and "--fresh" in result.output
    assert (data_dir / "cluster.json").read_bytes() == before  # nothing planned or started


def test_serve_refuses_an_invalid_pair(tmp_path: Path) -> None:
    peers = ",".join(f"{i}=127.0.0.1:{9000 + i}" for i in range(1, NODES + 1))
    data_dir = tmp_path / "node"
    result = CliRunner().invoke(
        serve,
        ["--id", "1", "--peers", peers, "--data-dir", str(data_dir), "--cluster-id", "c1",
         "--protocol", "paxos", "--phase1-quorum", "2", "--phase2-quorum", "2"],
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert _refusal((NODES, 2, 2)) in result.output
    assert not data_dir.exists()


# -- the simulator ----------------------------------------------------------------------


def test_monitor_judges_chosen_values_with_the_configured_phase2_quorum() -> None:
    """Two acceptances choose a value under Q2=2 (a different value accepted above it is a
    violation); under majorities the same two do not, and nothing is violated."""
    ids = tuple(range(1, NODES + 1))
    flexible = with_quorums(PAXOS, NODES, Q1, Q2).make_monitor(ids)
    majority = PAXOS.make_monitor(ids)
    assert isinstance(flexible, PaxosMonitor) and isinstance(majority, PaxosMonitor)
    assert (flexible.q1, flexible.q2) == (Q1, Q2)
    verdicts = []
    for monitor in (flexible, majority):
        assert monitor._accepted(1, 1, (1, 1), "a") is None
        assert monitor._accepted(2, 1, (1, 1), "a") is None
        verdicts.append(monitor._accepted(3, 1, (2, 3), "b"))
    assert verdicts[0] is not None and verdicts[0].prop == "accepted-above-chosen"
    assert verdicts[1] is None


def test_sim_with_q1_4_q2_2_passes_seeds_under_all_faults() -> None:
    spec = with_quorums(PAXOS, NODES, Q1, Q2)
    node = spec.make_node(1, tuple(range(1, NODES + 1)), SplitMix64(1), DurableState())
    assert isinstance(node, PaxosNode) and (node.q1, node.q2) == (Q1, Q2)
    faults = parse_faults("all")
    failed = [
        (seed, str(result.violation))
        for seed in SIM_SEEDS
        if not (result := run_sim(spec, SimConfig(seed=seed, nodes=NODES, faults=faults))).ok
    ]
    assert failed == []


def test_sim_cli_runs_with_the_quorums_and_replays_them() -> None:
    result = CliRunner().invoke(
        sim, ["paxos", "--seeds", "1..3", "--phase1-quorum", "4", "--phase2-quorum", "2", "--json"]
    )
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    assert len(lines) == 3 and all(line["ok"] for line in lines)
    assert all("--phase1-quorum 4 --phase2-quorum 2" in line["replay"] for line in lines)


def test_mutant_committing_below_the_phase2_quorum_is_caught() -> None:
    """commit_before_quorum with Q2=2 commits on the leader's own acceptance alone."""
    result = CliRunner().invoke(
        sim,
        ["paxos+commit_before_quorum", "--seed", str(MUTANT_SEED), "--phase1-quorum", "4",
         "--phase2-quorum", "2", "--no-shrink", "--json"],
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    summary = json.loads(result.output.splitlines()[-1])
    assert summary["violation"].startswith("state-machine-safety")


# -- real processes -----------------------------------------------------------------------


@pytest.fixture
def flexible_cluster(tmp_path: Path) -> Iterator[Path]:
    """A detached 5-process Multi-Paxos cluster with Q1=4, Q2=2; stopped afterwards (and its
    processes reaped by the autouse fixture of tests/paxos/conftest.py)."""
    data_dir = tmp_path / "flex"
    result = cluster_command(
        "up", "--nodes", str(NODES), "--protocol", "paxos", "--phase1-quorum", str(Q1),
        "--phase2-quorum", str(Q2), "--data-dir", str(data_dir), "--detach",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    try:
        yield data_dir
    finally:
        cluster_command("down", "--data-dir", str(data_dir))


def test_real_cluster_commits_on_phase2_quorum_and_needs_phase1_quorum(
    flexible_cluster: Path,
) -> None:
    data_dir = flexible_cluster
    state = json.loads((data_dir / "cluster.json").read_text())
    assert state["quorums"] == [Q1, Q2]
    flags = ["--phase1-quorum", str(Q1), "--phase2-quorum", str(Q2)]
    assert all(node["argv"][-4:] == flags for node in state["nodes"])  # kept by cluster start
    members = members_of(data_dir)
    ports = {node["id"]: node["metrics_port"] for node in state["nodes"]}
    with KvClient(members, deadline_s=WAIT_S) as kv:
        kv.put("k", "v1")
        assert kv.get("k") == "v1"
    leader = _wait_leader(ports, set(ports))
    assert all(fetch_health(port)["quorums"] == [Q1, Q2] for port in ports.values())
    down = sorted(set(ports) - {leader})[:3]
    # Phase 2 needs two: with three acceptors down, the leader and one follower commit.
    for victim in down:
        _kill(data_dir, victim)
    with KvClient(members, deadline_s=WAIT_S) as kv:
        kv.put("k", "v2")
        assert kv.get("k") == "v2"
    # Phase 1 needs four: back to five, then the leader and one more down; three live nodes
    # (a majority) elect no leader and commit nothing.
    for victim in down:
        start_node(data_dir, victim)
    leader = _wait_leader(ports, set(ports))
    down = [leader, min(set(ports) - {leader})]
    for victim in down:
        _kill(data_dir, victim)
    live = set(ports) - set(down)
    assert _leader_within(ports, live, NO_LEADER_WINDOW_S) is None
    with (
        KvClient(members, deadline_s=NO_LEADER_WINDOW_S) as kv,
        pytest.raises((ClientError, KvError)),
    ):
        kv.put("blocked", "x")
    # A fourth node back: phase 1 completes and writes commit again.
    start_node(data_dir, down[1])
    _wait_leader(ports, live | {down[1]})
    with KvClient(members, deadline_s=WAIT_S) as kv:
        kv.put("k", "v3")
        assert kv.get("k") == "v3"


def _kill(data_dir: Path, node_id: int) -> None:
    pid = signal_node(data_dir, node_id, "KILL")
    deadline = time.monotonic() + WAIT_S
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(POLL_S)
    assert not pid_alive(pid), f"node {node_id} (pid {pid}) survived kill -9"


def _leader_within(ports: dict[int, int], live: set[int], window_s: float) -> int | None:
    """A node of ``live`` reporting itself leader within ``window_s``; None if none did."""
    deadline = time.monotonic() + window_s
    while True:
        for node_id in sorted(live):
            health = fetch_health(ports[node_id])
            if health is not None and health.get("role") == "leader":
                return node_id
        if time.monotonic() >= deadline:
            return None
        time.sleep(POLL_S)


def _wait_leader(ports: dict[int, int], live: set[int]) -> int:
    """The leader every node of ``live`` names, once they agree and it reports itself so."""
    deadline = time.monotonic() + WAIT_S
    seen: dict[int, Any] = {}
    while time.monotonic() < deadline:
        seen = {i: fetch_health(ports[i]) for i in sorted(live)}
        named = {h.get("leader") if h else None for h in seen.values()}
        if len(named) == 1 and (leader := named.pop()) in live:
            health = seen[leader]
            if health is not None and health.get("role") == "leader":
                return int(leader)
        time.sleep(POLL_S)
    raise AssertionError(f"no leader agreed among {sorted(live)} within {WAIT_S} s: {seen}")

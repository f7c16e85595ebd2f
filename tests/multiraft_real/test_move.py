"""Replica moves on real processes: a 5-process multi-Raft cluster with 8 ranges of 3
replicas (``pnyx cluster up --nodes`` offers 1, 3, 5 or 7 processes; 5 leaves two processes
outside every range).  While clients append to keys of every range, range 1's leader moves
its own replica to a process outside the range (``RangeClient.move_replica``); then no
acknowledged write is lost, the history is linearizable, the target's own replica holds the
range's data, ``pnyx kv move-replica`` refuses invalid moves with exit status 2 and makes a
valid one, and the range keeps serving after ``kill -9`` of the target (a majority of the
new replica set is left) and then of the source too (served by two of the three new voters:
had the source stayed a voter, two of four could not commit)."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Mapping
from pathlib import Path

import pytest
from click.testing import CliRunner

from pnyx.check import History, KVModel, check_linearizable
from pnyx.cli.cluster_cmd import cluster_command, members_of, signal_node
from pnyx.cli.cluster_state import pid_alive
from pnyx.cli.kv_cmd import kv
from pnyx.protocols.multiraft import RangeDesc
from pnyx.runtime.transport import Address
from pnyx.services.multiraft import Indeterminate, RangeClient, SyncRangeClient
from tests.multiraft_real.workload import run_workload

MOVED = 1
"""Range 1 (keys before '4i') starts on processes 1, 2 and 3."""
KILL_WAIT_S = 30.0
SERVE_WAIT_S = 60.0


def _up(tmp_path: Path) -> Path:
    data_dir = tmp_path / "multiraft5"
    result = cluster_command(
        *("up", "--protocol", "multiraft", "--nodes", "5", "--ranges", "8"),
        *("--data-dir", str(data_dir), "--detach"),
    )
    if result.returncode != 0:
        raise RuntimeError(f"cluster did not start: {result.stderr.strip()}")
    return data_dir


class _Mover:
    """The workload's nemesis: move range 1's replica away from its leader."""

    def __init__(self, members: Mapping[int, Address]) -> None:
        self.members = members
        self.before: RangeDesc | None = None
        self.after: RangeDesc | None = None
        self.source = 0
        self.target = 0

    def __call__(self, rng: random.Random) -> str:
        with SyncRangeClient(self.members, deadline_s=30.0) as client:
            (info,) = [r for r in client.ranges() if r.desc.range_id == MOVED]
            self.before = info.desc
            self.source = info.leader if info.leader is not None else info.desc.replicas[0]
            self.target = min(set(self.members) - set(info.desc.replicas))
            self.after = client.move_replica(MOVED, self.source, self.target, wait_s=60.0)
        return f"move range {MOVED} from {self.source} to {self.target}"


async def _target_reads(address: Address, target: int, expected: dict[str, str]) -> None:
    """The target's own replica answers serializable reads with ``expected`` (it may need a
    moment to apply the last entries)."""
    client = RangeClient({target: address}, deadline_s=10.0)
    seen: dict[str, str] = {}
    try:
        deadline = time.monotonic() + SERVE_WAIT_S
        while time.monotonic() < deadline:
            seen = {k: await client.get(k, "serializable") for k in expected}
            if seen == expected:
                return
            await asyncio.sleep(0.2)
    finally:
        await client.close()
    raise AssertionError(f"process {target} holds {seen}, expected {expected}")


async def _serves(members: Mapping[int, Address], key: str, value: str) -> None:
    """A write and a linearizable read of ``key`` through the live processes."""
    client = RangeClient(members, request_timeout_s=2.0, deadline_s=SERVE_WAIT_S)
    try:
        await client.put(key, value)
        assert await client.get(key) == value
    finally:
        await client.close()


def _kill(data_dir: Path, node_id: int) -> None:
    pid = signal_node(data_dir, node_id, "KILL")
    deadline = time.monotonic() + KILL_WAIT_S
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(pid), f"node {node_id} (pid {pid}) survived kill -9"


def _cli_moves(data_dir: Path, mover: _Mover) -> None:
    """``pnyx kv move-replica``: invalid moves exit 2 with one line; a valid one prints the
    range's new descriptor."""
    runner = CliRunner()
    target = ["--data-dir", str(data_dir), "move-replica"]
    source, moved_to = str(mover.source), str(mover.target)
    refusals = {
        (str(MOVED), "--from", source, "--to", "5"): f"process {source} is not a voter",
        (str(MOVED), "--from", moved_to, "--to", moved_to): "are both process",
        ("99", "--from", "1", "--to", "2"): "unknown range 99",
        (str(MOVED), "--from", moved_to, "--to", "9"): "process 9 is not a member",
        (str(MOVED), "--from", source): "Missing option '--to'",
    }
    for args, message in refusals.items():
        result = runner.invoke(kv, [*target, *args])
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output, (args, result.output)
        if not message.startswith("Missing"):  # click's usage errors have their own form
            assert result.stderr.startswith("pnyx: error: kv move-replica: "), result.stderr
            assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    endpoints = ",".join(f"{i}={h}:{p}" for i, (h, p) in sorted(members_of(data_dir).items()))
    for protocol, message in (
        ("multiraft", "unknown range 99"),
        ("raft", "only for a multiraft or txn cluster, not raft"),
    ):
        args = ["--endpoints", endpoints, "--protocol", protocol, "move-replica", "99"]
        result = runner.invoke(kv, [*args, "--from", "1", "--to", "2"])
        assert result.exit_code == 2 and message in result.output, result.output
    # Another range, whose replicas do not include process 5: 5 replaces its first replica.
    with SyncRangeClient(members_of(data_dir), deadline_s=30.0) as client:
        other = next(
            d.desc for d in client.ranges() if 5 not in d.desc.replicas and d.desc.range_id != MOVED
        )
    leaving = other.replicas[0]
    args = [str(other.range_id), "--from", str(leaving), "--to", "5"]
    result = runner.invoke(kv, [*target, *args])
    assert result.exit_code == 0, result.output
    expected = ",".join(map(str, sorted({*other.replicas, 5} - {leaving})))
    assert f"range {other.range_id} " in result.output and f"replicas {expected}" in result.output


def test_a_replica_moves_under_writes_and_the_range_survives_losing_target_and_source(
    tmp_path: Path,
) -> None:
    data_dir = _up(tmp_path)
    members = members_of(data_dir)
    mover = _Mover(members)
    result = asyncio.run(
        run_workload(
            members, key_count=24, workers=3, nemesis=mover, rounds=1, interval_s=1.0, seed=23
        )
    )
    before, after = mover.before, mover.after
    assert before is not None and after is not None
    assert set(after.replicas) == set(before.replicas) - {mover.source} | {mover.target}
    assert after.conf_ver > before.conf_ver and after.version == before.version
    moved_keys = [k for k in result.keys if after.contains(k)]
    assert moved_keys and any(k in moved_keys for k, _ in result.acked), result.acked
    assert len(result.acked) > 10, f"too little progress during the move: {len(result.acked)}"
    print(
        f"moved range {MOVED} from {mover.source} to {mover.target}: {after}; acked "
        f"{len(result.acked)} indeterminate {result.indeterminate}"
    )
    assert result.lost_writes() == []
    verdict = check_linearizable(History.from_events(result.history), KVModel(), timeout_s=120)
    assert verdict.verdict == "linearizable", verdict.explain()
    expected = {k: result.final[k] for k in moved_keys}
    asyncio.run(_target_reads(members[mover.target], mover.target, expected))
    _cli_moves(data_dir, mover)
    # The new replica set without the target: two of three.
    _kill(data_dir, mover.target)
    alive = {i: a for i, a in members.items() if i != mover.target}
    asyncio.run(_serves(alive, "0-after-target", "t"))
    # Without the source as well: the source is no voter, or two of four could not commit.
    _kill(data_dir, mover.source)
    alive = {i: a for i, a in alive.items() if i != mover.source}
    asyncio.run(_serves(alive, "0-after-source", "s"))
    assert asyncio.run(_read_all(alive, moved_keys)) == expected


async def _read_all(members: Mapping[int, Address], keys: list[str]) -> dict[str, str]:
    client = RangeClient(members, deadline_s=SERVE_WAIT_S)
    try:
        return {k: await client.get(k) for k in keys}
    finally:
        await client.close()


class _RandomMover:
    """Soak nemesis: move a random range's replica (from a random voter, the leader
    included) to a random process outside the range."""

    def __init__(self, members: Mapping[int, Address]) -> None:
        self.members = members
        self.moves: list[str] = []
        self.unfinished = 0

    def __call__(self, rng: random.Random) -> str:
        with SyncRangeClient(self.members, deadline_s=30.0) as client:
            desc = rng.choice(client.ranges()).desc
            source = rng.choice(desc.replicas)
            target = rng.choice(sorted(set(self.members) - set(desc.replicas)))
            try:
                after = client.move_replica(desc.range_id, source, target, wait_s=60.0)
            except Indeterminate as exc:
                self.unfinished += 1
                return f"range {desc.range_id} {source}->{target}: {exc}"
        assert set(after.replicas) == set(desc.replicas) - {source} | {target}
        self.moves.append(f"{desc.range_id}:{source}->{target}")
        return f"moved range {desc.range_id} from {source} to {target}"


@pytest.mark.soak
def test_40_random_moves_under_writes(tmp_path: Path) -> None:
    data_dir = _up(tmp_path)
    members = members_of(data_dir)
    mover = _RandomMover(members)
    result = asyncio.run(
        run_workload(
            members, key_count=24, workers=4, nemesis=mover, rounds=40, interval_s=0.5, seed=41
        )
    )
    print(f"{len(mover.moves)} moves, {mover.unfinished} unfinished, acked {len(result.acked)}")
    assert len(mover.moves) >= 36 and mover.unfinished <= 4, result.faults
    assert result.lost_writes() == []
    assert all(r.leader is not None for r in result.ranges), result.ranges
    verdict = check_linearizable(History.from_events(result.history), KVModel(), timeout_s=300)
    assert verdict.verdict == "linearizable", verdict.explain()

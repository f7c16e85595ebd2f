"""Raft benchmarks: commits/s through the pure core (3 nodes, in-process), sim seeds/minute.

    .venv/bin/python bench/bench_raft.py [--seconds 3] [--batch 512] [--seeds 100] [--profile]

The core benchmark drives three :class:`RaftNode` objects directly: the leader proposes
``--batch`` commands at a time, every Ready batch is carried out in-process (persist is a
no-op, messages are handed over without encoding, applies are drained, not executed) and
committed commands are counted at the leader.  No I/O anywhere.
"""

from __future__ import annotations

import argparse
import time
from collections import deque

from pnyx.core import DurableState, Message, SplitMix64
from pnyx.protocols.raft import LEADER, Command, KvOp, RaftConfig, RaftNode


def _pump(nodes: dict[int, RaftNode], inbox: deque[tuple[int, int, Message]]) -> int:
    """Carry out ready batches and deliver messages until quiet; returns applies drained."""
    applied = 0
    while True:
        progressed = False
        for node_id, node in nodes.items():
            if node.has_ready():
                ready = node.ready()
                for send in ready.send:
                    inbox.append((node_id, send.to, send.msg))
                applied += len(ready.apply)
                node.advance(ready)
                progressed = True
        while inbox:
            src, dst, msg = inbox.popleft()
            nodes[dst].step(msg, src)
            progressed = True
        if not progressed:
            return applied


def bench_core(seconds: float, batch: int) -> tuple[float, int]:
    config = RaftConfig(
        max_entries_per_msg=batch,
        max_inflight_msgs=4,
        snapshot_threshold_entries=1 << 40,
    )
    ids = (1, 2, 3)
    nodes = {i: RaftNode(i, ids, SplitMix64(i), DurableState(), config) for i in ids}
    inbox: deque[tuple[int, int, Message]] = deque()
    leader = nodes[1]
    leader.election_elapsed_ticks = leader.randomized_timeout_ticks - 1
    leader.tick()
    _pump(nodes, inbox)
    assert leader.role == LEADER
    commands = [Command(1, i, KvOp("put", f"k{i % 64}", "v")) for i in range(batch)]
    start_commit = leader.commit
    started = time.perf_counter()
    deadline = started + seconds
    while time.perf_counter() < deadline:
        for _ in range(20):
            leader.propose(commands)
            _pump(nodes, inbox)
    elapsed = time.perf_counter() - started
    committed = leader.commit - start_commit
    assert all(n.log.last_index == leader.log.last_index for n in nodes.values())
    return committed / elapsed, committed


def bench_sim(seeds: int) -> float:
    from pnyx.protocols.raft.spec import RAFT
    from pnyx.sim.runner import SimConfig, run_sim
    from pnyx.sim.schedule import parse_faults

    faults = parse_faults("all")
    started = time.perf_counter()
    for seed in range(seeds):
        result = run_sim(RAFT, SimConfig(seed=seed, nodes=5, faults=faults))
        assert result.ok, f"seed {seed}: {result.violation}"
    return seeds / (time.perf_counter() - started) * 60


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--seeds", type=int, default=100)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    if args.profile:
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        profiler.enable()
        bench_core(args.seconds, args.batch)
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(12)
        return
    rate, committed = bench_core(args.seconds, args.batch)
    print(
        f"raft core, 3 nodes, batch {args.batch}: {rate:,.0f} commits/s ({committed:,} in "
        f"{args.seconds:.1f}s)"
    )
    if args.seeds:
        per_minute = bench_sim(args.seeds)
        print(f"raft sim, 5 nodes, all faults: {per_minute:,.0f} seeds/minute ({args.seeds} seeds)")


if __name__ == "__main__":
    main()

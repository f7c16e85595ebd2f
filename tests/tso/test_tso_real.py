"""A real 3-process TSO cluster: timestamps stay unique and increasing across a kill -9 of
the leader, its restart from disk, and a kill -9 of the next leader."""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path

from pnyx.cli.cluster_cmd import local_cluster_up, members_of, signal_node, start_node
from pnyx.services.tso import TsoClient

BATCH = 50
REQUESTS_BEFORE = 20
REQUESTS_AFTER = 40


def test_timestamps_increase_across_a_leader_kill9(tmp_path: Path) -> None:
    data_dir = tmp_path / "tso"
    local_cluster_up(data_dir, protocol="tso")
    members = members_of(data_dir)
    taken: list[range] = []
    other: list[range] = []
    with TsoClient(members, deadline_s=60.0) as tso, TsoClient(members, deadline_s=60.0) as peer:
        for _ in range(REQUESTS_BEFORE):
            taken.append(tso.get_batch(BATCH))
        leader = tso.leader
        stop = threading.Event()

        def background() -> None:  # a second client keeps asking through the failover
            for _ in range(10_000):
                if stop.is_set():
                    return
                other.append(peer.get_batch(BATCH))

        worker = threading.Thread(target=background, daemon=True)
        worker.start()
        try:
            signal_node(data_dir, leader, "KILL")
            for _ in range(REQUESTS_AFTER // 2):
                taken.append(tso.get_batch(BATCH))
            assert tso.leader != leader, "the client still talks to the killed leader"
            start_node(data_dir, leader)
            for _ in range(REQUESTS_AFTER // 2):
                taken.append(tso.get_batch(BATCH))
                time.sleep(0.01)
            # kill the second leader too: the remaining majority includes the node restarted
            # from its WAL, so it must have recovered its log (marks read back from disk)
            second = tso.leader
            signal_node(data_dir, second, "KILL")
            for _ in range(REQUESTS_AFTER // 4):
                taken.append(tso.get_batch(BATCH))
            assert tso.leader != second
        finally:
            stop.set()
            worker.join(timeout=60)
        assert not worker.is_alive()
    # one client, one request at a time: each batch is above the previous one
    for before, after in itertools.pairwise(taken):
        assert after.start > before.stop - 1, (before, after)
    # no timestamp handed out twice, to either client
    every = sorted((r.start, r.stop) for r in taken + other)
    for (_, stop_a), (start_b, _) in itertools.pairwise(every):
        assert start_b >= stop_a, "overlapping batches"
    assert other, "the second client got nothing"

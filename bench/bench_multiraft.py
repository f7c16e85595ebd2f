"""Multi-Raft on real processes: put throughput over one range vs several ranges.

    python bench/bench_multiraft.py [--ranges 1,8] [--clients 16,64] [--seconds 5]
        [--keys 96] [--json bench/results/multiraft.json]

For each ``--ranges`` value: ``pnyx cluster up --protocol multiraft --nodes 3 --ranges R``
(fsync on) in a temp dir; once every range has a leader, for each ``--clients`` value a
closed loop of that many :class:`pnyx.services.multiraft.RangeClient` (one asyncio loop in
this process, one write at a time per client) puts to random keys of ``--keys`` keys
spread over the initial ranges (``spread_key``; 96 keys stay below the 128-key split
threshold, so one range stays one range) for ``--seconds``: puts/s, p50/p99 latency,
indeterminate and failed puts, group writes per journal append (fsync) and Raft messages
per envelope over all nodes (their ``/health`` counters), and the load average before and
after (the machine may be shared: read the figures with it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from benchlib import percentile, settle_ranges

from pnyx.cli.cluster_cmd import cluster_command, load_state, members_of
from pnyx.services.multiraft import Indeterminate, RangeClient, RangeError, spread_key

SETTLE_S = 60.0
COUNTERS = ("group_ops_persisted", "journal_appends", "group_messages_sent", "batches_sent")


def _counters(data_dir: Path) -> dict[str, int]:
    """The coalescing counters of every node, summed (from their /health)."""
    state = load_state(data_dir)
    assert state is not None
    total = dict.fromkeys(COUNTERS, 0)
    for node in state["nodes"]:
        url = f"http://127.0.0.1:{node['metrics_port']}/health"
        with urllib.request.urlopen(url, timeout=10) as response:
            health = json.loads(response.read())
        for name in COUNTERS:
            total[name] += int(health.get(name, 0))
    return total


def _ratio(after: dict[str, int], before: dict[str, int], num: str, den: str) -> float:
    d = after[den] - before[den]
    return round((after[num] - before[num]) / d, 2) if d else 0.0


async def _closed_loop(
    members: dict[int, tuple[str, int]], clients: int, seconds: float, keys: int
) -> dict[str, Any]:
    latencies: list[float] = []
    counts = {"indeterminate": 0, "failed": 0}
    stop_at = time.monotonic() + seconds

    async def one(index: int) -> None:
        rng = random.Random(index)
        client = RangeClient(members, request_timeout_s=5.0, deadline_s=15.0)
        try:
            n = 0
            while time.monotonic() < stop_at:
                n += 1
                started = time.monotonic()
                try:
                    await client.put(spread_key(rng.randrange(keys)), f"{index}.{n}")
                except Indeterminate:
                    counts["indeterminate"] += 1
                    continue
                except RangeError:
                    counts["failed"] += 1
                    continue
                latencies.append(time.monotonic() - started)
        finally:
            await client.close()

    cpu_before = time.process_time()
    started = time.monotonic()
    await asyncio.gather(*(one(i) for i in range(clients)))
    wall_s = time.monotonic() - started
    return {
        "clients": clients,
        "puts": len(latencies),
        "puts_per_s": round(len(latencies) / wall_s, 1),
        "p50_ms": round(1000 * percentile(latencies, 0.5), 1),
        "p99_ms": round(1000 * percentile(latencies, 0.99), 1),
        **counts,
        "client_cpu_s": round(time.process_time() - cpu_before, 1),
    }


def bench_ranges(
    ranges: int, clients: list[int], seconds: float, keys: int
) -> list[dict[str, Any]]:
    """Every ``clients`` figure on a fresh 3-process cluster of ``ranges`` ranges."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="pnyx-bench-multiraft-") as tmp:
        data_dir = Path(tmp) / "cluster"
        up = cluster_command(
            *("up", "--protocol", "multiraft", "--nodes", "3", "--ranges", str(ranges)),
            *("--data-dir", str(data_dir), "--detach"),
        )
        if up.returncode != 0:
            raise RuntimeError(f"cluster did not start: {up.stderr.strip()}")
        try:
            members = members_of(data_dir)
            asyncio.run(settle_ranges(members, ranges, SETTLE_S))
            for count in clients:
                load_before = os.getloadavg()[0]
                before = _counters(data_dir)
                row = asyncio.run(_closed_loop(members, count, seconds, keys))
                after = _counters(data_dir)
                row.update(
                    ranges=ranges,
                    load_before=round(load_before, 2),
                    load_after=round(os.getloadavg()[0], 2),
                    group_writes_per_fsync=_ratio(
                        after, before, "group_ops_persisted", "journal_appends"
                    ),
                    raft_msgs_per_envelope=_ratio(
                        after, before, "group_messages_sent", "batches_sent"
                    ),
                )
                rows.append(row)
                print(json.dumps(row), flush=True)
        finally:
            cluster_command("down", "--data-dir", str(data_dir))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ranges", default="1,8")
    parser.add_argument("--clients", default="16,64")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--keys", type=int, default=96)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    clients = [int(c) for c in args.clients.split(",")]
    rows = []
    for ranges in (int(r) for r in args.ranges.split(",")):
        rows += bench_ranges(ranges, clients, args.seconds, args.keys)
    print(
        f"{'ranges':>6} {'clients':>7} {'puts/s':>8} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'writes/fsync':>12} {'msgs/env':>8} {'load':>10}"
    )
    for r in rows:
        load = f"{r['load_before']}-{r['load_after']}"
        print(
            f"{r['ranges']:>6} {r['clients']:>7} {r['puts_per_s']:>8} {r['p50_ms']:>7} "
            f"{r['p99_ms']:>7} {r['group_writes_per_fsync']:>12} "
            f"{r['raft_msgs_per_envelope']:>8} {load:>10}"
        )
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Replicated counter increments, 3 local processes: pnyx vs PySyncObj (issue 6).

Each of 3 processes hosts one replica and offers increments at rate/3 per second for a
fixed duration (open loop: calls are issued on schedule whether or not earlier ones
finished); achieved throughput counts increments confirmed before the drain deadline.
``failed`` counts calls refused at once (pnyx: ``Overloaded``, its bounded queue of
pending calls is full), failed, or confirmed too late.  Systems:

- ``pysyncobj``: PySyncObj 0.3.x, ``@replicated`` counter, in memory;
- ``pnyx``: ``ReplicatedCounter`` on a ``Replica`` (Raft), in memory;
- ``pnyx-durable``: the same with a WAL and fdatasync per batch (group commit).

Usage:

    python bench/bench_replicated_counter.py [--rates 30000,60000,120000,240000]
        [--seconds 5] [--systems pysyncobj,pnyx,pnyx-durable]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
from typing import Any

DRAIN_S = 3.0
READY_TIMEOUT_S = 20.0
SYSTEMS = ["pysyncobj", "pnyx", "pnyx-durable"]


def free_ports(count: int) -> list[int]:
    """Distinct free TCP ports on 127.0.0.1 (bound then released)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def run_pysyncobj_replica(index: int, ports: list[int], rate: float, seconds: float,
                          start_at: float) -> dict[str, Any]:
    """One PySyncObj replica offering ``rate`` increments/s from ``start_at`` for ``seconds``."""
    from pysyncobj import SyncObj, SyncObjConf, replicated

    class Counter(SyncObj):  # type: ignore[misc]
        def __init__(self, me: str, partners: list[str]) -> None:
            super().__init__(me, partners, SyncObjConf(dynamicMembershipChange=False))
            self._value = 0

        @replicated  # type: ignore[misc]
        def inc(self) -> int:
            self._value += 1
            return self._value

    addrs = [f"127.0.0.1:{p}" for p in ports]
    counter = Counter(addrs[index], [a for i, a in enumerate(addrs) if i != index])
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not counter.isReady() or counter._getLeader() is None:
        if time.monotonic() > deadline:
            return {"error": "cluster not ready"}
        time.sleep(0.05)
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()

    def make_callback(sent: float) -> Any:
        def done(result: Any, error: Any) -> None:
            now = time.monotonic()
            with lock:
                if error == 0 and now <= stop_drain:
                    latencies.append(now - sent)
                else:
                    errors[0] += 1
        return done

    time.sleep(max(0.0, start_at - time.time()))
    begin = time.monotonic()
    stop_offer = begin + seconds
    stop_drain = stop_offer + DRAIN_S
    issued = 0
    while (now := time.monotonic()) < stop_offer:
        due = int(rate * (now - begin)) - issued
        for _ in range(min(due, 2_000)):
            counter.inc(callback=make_callback(time.monotonic()))
            issued += 1
        time.sleep(0.001)
    time.sleep(max(0.0, stop_drain - time.monotonic()))
    with lock:
        done = sorted(latencies)
    counter.destroy()
    return {"issued": issued, "ok": len(done), "errors": errors[0], "latencies": sample(done)}


def run_pnyx_replica(index: int, ports: list[int], rate: float, seconds: float,
                     start_at: float, durable: bool) -> dict[str, Any]:
    """One pnyx replica offering ``rate`` increments/s from ``start_at`` for ``seconds``."""
    import asyncio
    import tempfile
    from functools import partial
    from pathlib import Path

    from pnyx.runtime import run_event_loop
    from pnyx.services.objects import ReplicatedCounter
    from pnyx.services.replicated import Replica, ReplicaError, ReplicaOptions

    members = {i + 1: ("127.0.0.1", port) for i, port in enumerate(ports)}
    latencies: list[float] = []
    errors = [0]

    def done(sent: float, future: Any) -> None:
        now = time.monotonic()
        if not future.cancelled() and future.exception() is None and now <= stop_drain:
            latencies.append(now - sent)
        else:
            errors[0] += 1

    async def offer(counter: ReplicatedCounter) -> dict[str, Any]:
        nonlocal stop_drain
        await asyncio.sleep(max(0.0, start_at - time.time()))
        begin = time.monotonic()
        stop_offer = begin + seconds
        stop_drain = stop_offer + DRAIN_S
        issued = refused = 0
        submit = counter.incr.try_submit
        while (now := time.monotonic()) < stop_offer:
            due = int(rate * (now - begin)) - issued - refused
            for _ in range(min(due, 2_000)):
                future = submit(1)
                if future is None:  # the bounded queue is full: refused at once
                    refused += 1
                    continue
                future.add_done_callback(partial(done, time.monotonic()))
                issued += 1
            await asyncio.sleep(0.001)
        while len(latencies) + errors[0] < issued and time.monotonic() < stop_drain:
            await asyncio.sleep(0.01)
        return {"issued": issued, "ok": len(latencies), "errors": errors[0] + refused,
                "latencies": sample(latencies)}

    async def main(data_dir: Path | None) -> dict[str, Any]:
        counter = ReplicatedCounter()
        replica = Replica(counter, index + 1, members, data_dir=data_dir,
                          options=ReplicaOptions(fsync=True))
        await replica.start_async()
        try:
            try:
                await replica.wait_ready_async(READY_TIMEOUT_S)
            except ReplicaError:
                return {"error": "cluster not ready"}
            return await offer(counter)
        finally:
            await asyncio.sleep(1.0)  # let the slower replicas finish draining
            await replica.stop_async()

    stop_drain = 0.0
    if not durable:
        return run_event_loop(main(None))
    with tempfile.TemporaryDirectory(prefix="pnyx-bench-") as tmp:
        return run_event_loop(main(Path(tmp)))


def sample(latencies: list[float], count: int = 2000) -> list[float]:
    """An evenly spaced sample of the sorted latencies (keeps the result line small)."""
    ordered = sorted(latencies)
    step = max(1, len(ordered) // count)
    return [round(x, 6) for x in ordered[::step]]


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) of sorted ``values``; 0 when empty."""
    if not values:
        return 0.0
    return values[min(len(values) - 1, int(q * len(values)))]


def run_cluster(system: str, rate: float, seconds: float) -> dict[str, Any]:
    """Start 3 replica processes of ``system``, collect and sum their results."""
    ports = free_ports(3)
    start_at = time.time() + 4.0
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--replica", str(i), "--ports", ",".join(map(str, ports)),
             "--rate", str(rate / 3), "--seconds", str(seconds), "--start-at", str(start_at),
             "--system", system],
            stdout=subprocess.PIPE, text=True,
        )
        for i in range(3)
    ]
    results = []
    try:
        for proc in procs:
            out, _ = proc.communicate(timeout=seconds + DRAIN_S + READY_TIMEOUT_S + 30)
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    errors = [r["error"] for r in results if "error" in r]
    if errors:
        return {"system": system, "offered": rate, "error": errors[0]}
    ok = sum(r["ok"] for r in results)
    lat = sorted(x for r in results for x in r["latencies"])
    return {
        "system": system,
        "offered_per_s": rate,
        "achieved_per_s": ok / seconds,
        "failed": sum(r["errors"] for r in results),
        "p50_ms": percentile(lat, 0.5) * 1000,
        "p99_ms": percentile(lat, 0.99) * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rates", default="30000,60000,120000,240000")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--system", default="pysyncobj", choices=SYSTEMS)
    parser.add_argument("--replica", type=int, default=None)
    parser.add_argument("--ports", default="")
    parser.add_argument("--rate", type=float, default=0.0)
    parser.add_argument("--start-at", type=float, default=0.0)
    args = parser.parse_args()
    if args.replica is not None:
        if os.environ.get("PNYX_BENCH_LOG"):
            import logging
            logging.basicConfig(level=logging.INFO, format=f"r{args.replica} %(message)s")
        ports = [int(p) for p in args.ports.split(",")]
        if args.system == "pysyncobj":
            result = run_pysyncobj_replica(
                args.replica, ports, args.rate, args.seconds, args.start_at
            )
        else:
            profile_dir = os.environ.get("PNYX_BENCH_PROFILE")  # pyinstrument, per replica
            profiler = None
            if profile_dir:
                from pyinstrument import Profiler
                profiler = Profiler(interval=0.0005)
                profiler.start()
            result = run_pnyx_replica(args.replica, ports, args.rate, args.seconds,
                                      args.start_at, durable=args.system == "pnyx-durable")
            if profiler is not None:
                profiler.stop()
                path = os.path.join(profile_dir, f"{args.system}-r{args.replica}.txt")
                with open(path, "w") as out:
                    out.write(profiler.output_text(show_all=False))
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()
        return
    print(f"replicated counter, 3 local processes, {args.seconds:.0f} s per rate")
    rows = []
    for system in args.systems.split(","):
        for rate in (float(r) for r in args.rates.split(",")):
            row = run_cluster(system, rate, args.seconds)
            rows.append(row)
            if "error" in row:
                print(f"  {system:<13} offered {rate:>9,.0f}/s: {row['error']}", flush=True)
                continue
            print(
                f"  {system:<13} offered {rate:>9,.0f}/s  achieved {row['achieved_per_s']:>9,.0f}/s"
                f"  failed {row['failed']:>7}  p50 {row['p50_ms']:8.1f} ms"
                f"  p99 {row['p99_ms']:8.1f} ms",
                flush=True,
            )
    _print_ratios(rows)


def _print_ratios(rows: list[dict[str, Any]]) -> None:
    """Best achieved throughput of each system, relative to PySyncObj's best."""
    best: dict[str, float] = {}
    for row in rows:
        if "error" not in row:
            best[row["system"]] = max(best.get(row["system"], 0.0), row["achieved_per_s"])
    anchor = best.get("pysyncobj")
    for system, value in best.items():
        ratio = f"  ({value / anchor:.2f}x pysyncobj)" if anchor and system != "pysyncobj" else ""
        print(f"  best {system:<13} {value:>9,.0f}/s{ratio}")


if __name__ == "__main__":
    main()

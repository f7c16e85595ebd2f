"""Replicated counter increments, 3 local processes: the PySyncObj anchor (issue 6).

Each of 3 processes hosts one replica and offers increments at rate/3 per second for a
fixed duration; achieved throughput counts increments whose commit callback reported
success before the drain deadline.  Usage:

    python bench/bench_replicated_counter.py [--rates 30000,60000,120000] [--seconds 5]

The pnyx side of the comparison plugs in here once the Raft-backed runtime lands.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import threading
import time
from typing import Any

DRAIN_S = 3.0
READY_TIMEOUT_S = 20.0


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
    while not counter.isReady() or counter._getLeader() is None:  # noqa: SLF001
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
    return {"issued": issued, "ok": len(done), "errors": errors[0], "latencies": done[::50]}


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
    parser.add_argument("--rates", default="30000,60000,120000")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--system", default="pysyncobj", choices=["pysyncobj"])
    parser.add_argument("--replica", type=int, default=None)
    parser.add_argument("--ports", default="")
    parser.add_argument("--rate", type=float, default=0.0)
    parser.add_argument("--start-at", type=float, default=0.0)
    args = parser.parse_args()
    if args.replica is not None:
        ports = [int(p) for p in args.ports.split(",")]
        result = run_pysyncobj_replica(args.replica, ports, args.rate, args.seconds, args.start_at)
        print(json.dumps(result))
        return
    print(f"replicated counter, 3 local processes, {args.seconds:.0f} s per rate, in memory")
    for rate in (float(r) for r in args.rates.split(",")):
        row = run_cluster(args.system, rate, args.seconds)
        if "error" in row:
            print(f"  {args.system:<10} offered {rate:>9,.0f}/s: {row['error']}")
            continue
        print(
            f"  {row['system']:<10} offered {rate:>9,.0f}/s  achieved {row['achieved_per_s']:>9,.0f}/s"
            f"  failed {row['failed']:>7}  p50 {row['p50_ms']:8.1f} ms  p99 {row['p99_ms']:8.1f} ms"
        )


if __name__ == "__main__":
    main()

"""The etcd-API load generator behind ``bench/bench_etcd.py``: one worker process.

A worker is started by ``bench_etcd.py`` (``python bench/etcd_loadgen.py``) and talks
JSON lines over stdin/stdout: for each spec line it opens its clients, prints
``{"ready": true}``, waits for a ``{"go": WALL_TIME}`` line, runs the cell and prints one
result line.  It exits at end of input.

- Async, ``grpc.aio`` with the raw generated stubs from ``aetcd.rpc`` (``KVStub``): no
  client library in the way, one request per call, as etcd's own ``benchmark`` tool does.
- **One gRPC channel (one HTTP/2 connection) per client**: N clients are N connections,
  spread round-robin over the cluster's endpoints (client i of the whole run goes to
  endpoint i mod 3; followers forward writes and linearizable reads to the leader).
- Closed loop: each client has one request in flight and sends the next when the answer
  comes.  Operations: ``put`` (a 256-byte value, 100 keys per client), ``get`` (a
  linearizable ``Range`` of one preloaded key), ``sget`` (the same, serializable).
- Bounded: every cell runs ``warmup_s + seconds`` of wall time at most (plus the
  per-request ``timeout_s`` for a request in flight), at most ``MAX_OPS_PER_CLIENT``
  requests per client, and a worker gives up on a spec it did not get ``go`` for within
  ``GO_TIMEOUT_S``.
- Latencies go into a log-bucketed histogram (2 % wide buckets, so percentiles are
  within 2 %), which the parent merges across workers.  Requests that start during the
  warm-up are not counted; throughput is requests completed in the measured window /
  window.  Errors (any gRPC status, timeouts) are counted, not retried.
"""

from __future__ import annotations

import asyncio
import gc
import json
import math
import resource
import sys
import time
from typing import Any

MAX_OPS_PER_CLIENT = 2_000_000
GO_TIMEOUT_S = 120.0
BUCKET_RATIO = 1.02
_LOG_RATIO = math.log(BUCKET_RATIO)
KEYS_PER_CLIENT = 100
GET_KEYS = 100
VALUE = b"v" * 256


def bucket(latency_s: float) -> int:
    """Histogram bucket of a latency (microsecond resolution, 2 % wide buckets)."""
    return int(math.log(max(latency_s * 1e6, 1.0)) / _LOG_RATIO)


def bucket_value_s(index: int) -> float:
    """The upper bound of bucket ``index``, in seconds."""
    return BUCKET_RATIO ** (index + 1) / 1e6


def percentile(hist: dict[int, int], q: float) -> float:
    """The q-quantile (0..1) of a merged histogram, in seconds; 0 when empty."""
    total = sum(hist.values())
    if not total:
        return 0.0
    rank = max(1, math.ceil(q * total))
    seen = 0
    for index in sorted(hist):
        seen += hist[index]
        if seen >= rank:
            return bucket_value_s(index)
    return bucket_value_s(max(hist))


async def run_cell(spec: dict[str, Any]) -> dict[str, Any]:
    import grpc
    from aetcd.rpc import rpc_pb2, rpc_pb2_grpc

    endpoints: list[str] = spec["endpoints"]
    op: str = spec["op"]
    first: int = spec["first_client"]
    count: int = spec["clients"]
    timeout_s: float = spec.get("timeout_s", 5.0)
    channels = [
        grpc.aio.insecure_channel(endpoints[(first + i) % len(endpoints)])
        for i in range(count)
    ]
    try:
        await asyncio.wait_for(
            asyncio.gather(*(ch.channel_ready() for ch in channels)), timeout=30.0
        )
        stubs = [rpc_pb2_grpc.KVStub(ch) for ch in channels]
        print(json.dumps({"ready": True}), flush=True)
        line = await asyncio.wait_for(
            asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline),
            timeout=GO_TIMEOUT_S,
        )
        go = json.loads(line)["go"]
        await asyncio.sleep(max(0.0, go - time.time()))
        now = time.monotonic()
        measure_from = now + spec["warmup_s"]
        stop_at = measure_from + spec["seconds"]
        hist: dict[int, int] = {}
        errors: list[str] = []
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        gc.collect()
        gc.freeze()

        async def client(i: int) -> None:
            stub = stubs[i]
            n_client = first + i
            if op == "put":
                put = stub.Put
                keys = [f"bench-put/{n_client}/{k}".encode() for k in range(KEYS_PER_CLIENT)]
                requests = [rpc_pb2.PutRequest(key=k, value=VALUE) for k in keys]
                call = put
            else:
                key = f"bench-get/{n_client % GET_KEYS}".encode()
                requests = [rpc_pb2.RangeRequest(key=key, serializable=(op == "sget"))]
                call = stub.Range
            mono = time.monotonic
            for n in range(MAX_OPS_PER_CLIENT):
                started = mono()
                if started >= stop_at:
                    return
                try:
                    await call(requests[n % len(requests)], timeout=timeout_s)
                except grpc.aio.AioRpcError as exc:
                    if started >= measure_from:
                        errors.append(f"{exc.code().name}: {exc.details()}")
                    continue
                if started >= measure_from:
                    done = mono()
                    if done <= stop_at + timeout_s:
                        b = int(math.log(max((done - started) * 1e6, 1.0)) / _LOG_RATIO)
                        hist[b] = hist.get(b, 0) + 1

        await asyncio.gather(*(client(i) for i in range(count)))
        gc.unfreeze()
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        cpu_s = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
        return {
            "ok": sum(hist.values()),
            "errors": len(errors),
            "error_sample": sorted(set(errors))[:3],
            "hist": {str(k): v for k, v in hist.items()},
            "cpu_s": cpu_s,
        }
    finally:
        await asyncio.gather(*(ch.close() for ch in channels), return_exceptions=True)


def main() -> None:
    for line in sys.stdin:
        if not line.strip():
            continue
        spec = json.loads(line)
        try:
            result = asyncio.run(run_cell(spec))
        except Exception as exc:  # reported to the parent, which fails the cell
            result = {"error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()

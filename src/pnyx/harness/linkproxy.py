"""A userspace TCP link proxy: delay and jitter on links between hosts without netem.

Run inside one host's namespace (``python -m pnyx.harness.linkproxy``), behind an
nftables ``redirect`` of that host's outgoing TCP connections to the other hosts (the
proxy's own upstream connections carry a firewall mark the rule skips).  Each accepted
connection is forwarded to its original destination (``SO_ORIGINAL_DST``); while the
fault is on (SIGUSR1; SIGUSR2 turns it off) every chunk of bytes, in each direction, is
held ``delay ± jitter`` ms before it is written on, never overtaking an earlier chunk (a
TCP stream keeps its order, so jitter cannot reorder).  Prints ``ready`` once listening.
Duplication is not offered: TCP would discard duplicate segments.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import signal
import socket
import struct
import sys

SO_ORIGINAL_DST = 80
SO_MARK = 36
CHUNK = 65536


class Fault:
    def __init__(self, delay_ms: float, jitter_ms: float, seed: int) -> None:
        self.delay_s = delay_ms / 1000
        self.jitter_s = jitter_ms / 1000
        self.on = False
        self.rng = random.Random(seed)

    def hold_s(self) -> float:
        if not self.on:
            return 0.0
        return max(0.0, self.rng.gauss(self.delay_s, self.jitter_s))


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, fault: Fault) -> None:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def forward() -> None:
        while True:
            due, data = await queue.get()
            if not data:
                break
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()
        with contextlib.suppress(OSError):
            writer.write_eof()

    sender = asyncio.ensure_future(forward())
    last_due = 0.0
    try:
        while True:
            data = await reader.read(CHUNK)
            due = max(last_due, loop.time() + fault.hold_s())
            last_due = due
            queue.put_nowait((due, data))
            if not data:
                break
        await sender
    except (OSError, asyncio.IncompleteReadError):
        sender.cancel()
    finally:
        writer.close()


def _original_destination(sock: socket.socket) -> tuple[str, int]:
    raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    port = struct.unpack("!H", raw[2:4])[0]
    return socket.inet_ntoa(raw[4:8]), port


async def _handle(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, fault: Fault, mark: int
) -> None:
    sock = writer.get_extra_info("socket")
    try:
        host, port = _original_destination(sock)
        upstream = socket.socket()
        upstream.setsockopt(socket.SOL_SOCKET, SO_MARK, mark)
        upstream.setblocking(False)
        await asyncio.wait_for(
            asyncio.get_running_loop().sock_connect(upstream, (host, port)), 10.0
        )
        up_reader, up_writer = await asyncio.open_connection(sock=upstream)
    except (OSError, TimeoutError):
        writer.close()
        return
    await asyncio.gather(
        _pipe(reader, up_writer, fault), _pipe(up_reader, writer, fault), return_exceptions=True
    )


async def _main(args: argparse.Namespace) -> None:
    fault = Fault(args.delay_ms, args.jitter_ms, args.seed)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, lambda: setattr(fault, "on", True))
    loop.add_signal_handler(signal.SIGUSR2, lambda: setattr(fault, "on", False))
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    server = await asyncio.start_server(
        lambda r, w: _handle(r, w, fault, args.mark), "0.0.0.0", args.port, reuse_address=True
    )
    print("ready", flush=True)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pnyx.harness.linkproxy")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mark", type=int, required=True)
    parser.add_argument("--delay-ms", type=float, default=50.0)
    parser.add_argument("--jitter-ms", type=float, default=20.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(args))
    sys.exit(0)


if __name__ == "__main__":
    main()

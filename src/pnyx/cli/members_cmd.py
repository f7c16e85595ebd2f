"""``pnyx members serve|up``: SWIM (+ Lifeguard) group members as real processes over UDP.

``serve`` runs one member and prints one line per membership change it sees::

    2025-01-01T12:00:00.123 node=1 member=3 addr=127.0.0.1:7948 state=alive incarnation=0

``up --nodes N`` starts N ``serve`` processes on loopback (member 1 is the seed of the
others), prints their lines merged as they come, and on Ctrl-C/SIGTERM stops them all
(SIGTERM: each leaves gracefully; SIGKILL for any still running after ``STOP_TIMEOUT_S``).
Each member exits by itself when the ``up`` that started it dies (``--parent-pid``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import click

from pnyx.cli.addresses import MAX_NODE_ID, MAX_PORT, MIN_NODE_ID, parse_address, parse_peers
from pnyx.cli.errors import fail
from pnyx.runtime.transport import Address

log = logging.getLogger("pnyx.members")

RUNTIME_ERROR = 1
"""Exit status when the command was right but the world refused (port in use, ...)."""
DEFAULT_BASE_PORT = 7946
"""First UDP port of ``members up`` (memberlist's default port)."""
STOP_TIMEOUT_S = 10.0
"""``up``: how long members get to leave after SIGTERM before they are killed."""
KILL_WAIT_S = 5.0
PARENT_CHECK_S = 1.0
"""``serve --parent-pid``: how often the member checks that its parent still runs."""


def event_line(observer: int, event: Any) -> str:
    """The line ``serve`` prints for one membership change seen by ``observer``."""
    now = datetime.datetime.now().isoformat(timespec="milliseconds")
    return (
        f"{now} node={observer} member={event.member_id} addr={event.addr or '-'} "
        f"state={event.state} incarnation={event.incarnation}"
    )


@click.group()
def members() -> None:
    """SWIM (+ Lifeguard) failure detection and membership over UDP (real processes)."""


_tick_ms = click.option(
    "--tick-ms", type=click.IntRange(1, 1000), default=10, show_default=True,
    help="Milliseconds per protocol tick.",
)  # fmt: skip
_probe_ms = click.option(
    "--probe-ms", type=click.IntRange(2, 60_000), default=1000, show_default=True,
    help="Probe interval; memberlist's LAN profile (1000) scaled to it: timeout = probe/2, "
    "gossip = probe/5, push/pull = 30 probes.",
)  # fmt: skip
_no_lifeguard = click.option(
    "--no-lifeguard", is_flag=True, help="Plain SWIM: no local health, nacks, dynamic "
    "suspicion timeouts or buddy system.",
)  # fmt: skip
_log_level = click.option(
    "--log-level", type=click.Choice(["debug", "info", "warning"]), default=None,
    help="Log level on stderr (serve: info, up's members: warning).",
)  # fmt: skip


@members.command()
@click.option("--id", "node_id", type=click.IntRange(MIN_NODE_ID, MAX_NODE_ID), required=True,
              help="This member's id.")  # fmt: skip
@click.option("--listen", "listen_text", required=True, help="UDP address HOST:PORT to bind.")
@click.option("--seed", "seed_texts", multiple=True,
              help="A member to join through, ID=HOST:PORT (repeatable).")  # fmt: skip
@click.option("--metrics-port", type=click.IntRange(0, MAX_PORT), default=None,
              help="Serve /metrics and /health on 127.0.0.1:PORT (0 picks one).")  # fmt: skip
@_tick_ms
@_probe_ms
@_no_lifeguard
@_log_level
@click.option("--parent-pid", type=click.IntRange(1), default=None, hidden=True,
              help="Exit (after leaving) when this process is no longer the parent.")  # fmt: skip
def serve(
    node_id: int,
    listen_text: str,
    seed_texts: tuple[str, ...],
    metrics_port: int | None,
    tick_ms: int,
    probe_ms: int,
    no_lifeguard: bool,
    log_level: str | None,
    parent_pid: int | None,
) -> None:
    """Run one member until SIGTERM/SIGINT (then leave gracefully, bounded)."""
    from pnyx.runtime.logs import configure_logging

    listen = _parse_listen(listen_text)
    seeds = _parse_seeds(seed_texts, node_id)
    if probe_ms < 2 * tick_ms:
        fail(f"--probe-ms {probe_ms} must be at least two ticks (--tick-ms {tick_ms})")
    configure_logging(getattr(logging, (log_level or "info").upper()), node_id=node_id)
    options = _ServeOptions(node_id, listen, seeds, metrics_port, tick_ms, probe_ms,
                            not no_lifeguard, parent_pid)  # fmt: skip
    from pnyx.runtime.node_runner import run_event_loop

    try:
        run_event_loop(_serve(options))
    except OSError as exc:
        _cannot_start(node_id, listen, metrics_port, exc)


def _parse_listen(text: str) -> Address:
    try:
        return parse_address(text)
    except ValueError as exc:
        reason = str(exc).split(";")[0]  # without parse_address's ID=HOST:PORT example
        fail(f"--listen: {reason}; expected HOST:PORT, e.g. 127.0.0.1:{DEFAULT_BASE_PORT}")


def _parse_seeds(texts: Sequence[str], node_id: int) -> dict[int, Address]:
    seeds: dict[int, Address] = {}
    for text in texts:
        try:
            parsed = parse_peers(text)
        except ValueError as exc:
            fail(f"--seed {text!r}: {exc}")
        for member_id, address in parsed.items():
            if member_id == node_id:
                fail(f"--seed {text!r}: member {node_id} cannot be its own seed")
            if member_id in seeds and seeds[member_id] != address:
                fail(f"--seed: member {member_id} given two addresses")
            seeds[member_id] = address
    return seeds


def _cannot_start(
    node_id: int, listen: Address, metrics_port: int | None, exc: OSError
) -> NoReturn:
    where = f"{listen[0]}:{listen[1]}/udp"
    if metrics_port:
        where += f" (metrics 127.0.0.1:{metrics_port}/tcp)"
    fail(f"member {node_id} cannot listen on {where}: {exc.strerror or exc}", RUNTIME_ERROR)


@dataclass(frozen=True)
class _ServeOptions:
    node_id: int
    listen: Address
    seeds: dict[int, Address]
    metrics_port: int | None
    tick_ms: int
    probe_ms: int
    lifeguard: bool
    parent_pid: int | None


async def _serve(options: _ServeOptions) -> None:
    from pnyx.protocols.membership.messages import SWIM_TYPES
    from pnyx.protocols.membership.swim import SwimNode
    from pnyx.runtime.member_runner import MemberConfig, MemberRunner, format_address
    from pnyx.services.membership import lan_config

    config = lan_config(options.tick_ms, probe_ms=options.probe_ms, lifeguard=options.lifeguard)
    seeds = {m: format_address(a) for m, a in options.seeds.items()}

    def print_event(event: Any) -> None:
        print(event_line(options.node_id, event), flush=True)

    runner = MemberRunner(
        MemberConfig(
            node_id=options.node_id,
            listen_host=options.listen[0],
            listen_port=options.listen[1],
            seeds=options.seeds,
            tick_ms=options.tick_ms,
            metrics_port=options.metrics_port,
        ),
        lambda addr, rng: SwimNode(options.node_id, addr, config, rng, seeds),
        SWIM_TYPES,
        on_event=print_event,
    )
    await runner.start()
    try:
        stopped_by_itself = await _until_signal(runner.wait_stopped(), options.parent_pid)
        if not stopped_by_itself:
            await runner.leave()
    finally:
        await runner.stop()


async def _until_signal(waiter: Any, parent_pid: int | None) -> bool:
    """Wait for SIGTERM/SIGINT, the parent's death, or ``waiter``; True for the latter
    (re-raising its exception)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    tasks = [asyncio.ensure_future(waiter), asyncio.ensure_future(stop.wait())]
    if parent_pid is not None:
        tasks.append(asyncio.ensure_future(_parent_gone(parent_pid)))
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks[1:]:
            task.cancel()
    if tasks[0].done():
        tasks[0].result()
        return True
    tasks[0].cancel()
    return False


async def _parent_gone(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        await asyncio.sleep(PARENT_CHECK_S)
    log.warning("parent_gone parent_pid=%d: leaving", parent_pid)


# -- up -------------------------------------------------------------------------------------


@members.command()
@click.option("--nodes", "count", type=int, default=5, show_default=True,
              help="Number of member processes.")  # fmt: skip
@click.option("--base-port", type=int, default=DEFAULT_BASE_PORT, show_default=True,
              help="Member i listens on 127.0.0.1:BASE_PORT+i-1 (UDP).")  # fmt: skip
@click.option("--metrics-base-port", type=int, default=None,
              help="Member i serves /metrics on 127.0.0.1:PORT+i-1 (default: none).")  # fmt: skip
@_tick_ms
@_probe_ms
@_no_lifeguard
@_log_level
def up(
    count: int,
    base_port: int,
    metrics_base_port: int | None,
    tick_ms: int,
    probe_ms: int,
    no_lifeguard: bool,
    log_level: str | None,
) -> None:
    """Start COUNT members on loopback and print their membership changes until Ctrl-C."""
    _check_count_and_ports(count, base_port, metrics_base_port)
    if probe_ms < 2 * tick_ms:
        fail(f"--probe-ms {probe_ms} must be at least two ticks (--tick-ms {tick_ms})")
    common = ["--tick-ms", str(tick_ms), "--probe-ms", str(probe_ms),
              "--log-level", log_level or "warning", "--parent-pid", str(os.getpid())]  # fmt: skip
    if no_lifeguard:
        common.append("--no-lifeguard")
    argvs = [_member_argv(i, base_port, metrics_base_port, common) for i in range(1, count + 1)]
    status = asyncio.run(_run_group(argvs))
    sys.exit(status)


def _check_count_and_ports(count: int, base_port: int, metrics_base_port: int | None) -> None:
    if not MIN_NODE_ID <= count <= MAX_NODE_ID:
        fail(f"--nodes {count}: must be {MIN_NODE_ID}..{MAX_NODE_ID}")
    _check_range("--base-port", base_port, count)
    ports = [("udp", base_port + i, i + 1) for i in range(count)]
    if metrics_base_port is not None:
        _check_range("--metrics-base-port", metrics_base_port, count)
        if base_port < metrics_base_port + count and metrics_base_port < base_port + count:
            fail(f"--metrics-base-port {metrics_base_port} overlaps the UDP ports "
                 f"{base_port}..{base_port + count - 1}; they may not share numbers")  # fmt: skip
        ports += [("tcp", metrics_base_port + i, i + 1) for i in range(count)]
    for kind, port, member in ports:
        problem = _port_problem(kind, port)
        if problem:
            flag = "--base-port" if kind == "udp" else "--metrics-base-port"
            fail(f"{kind.upper()} port {port} (member {member}) is not free: {problem}; "
                 f"pick another {flag}", RUNTIME_ERROR)  # fmt: skip


def _check_range(flag: str, port: int, count: int) -> None:
    if port < 1 or port + count - 1 > MAX_PORT:
        fail(f"{flag} {port}: ports {port}..{port + count - 1} must lie in 1..{MAX_PORT}")


def _port_problem(kind: str, port: int) -> str | None:
    """Why ``127.0.0.1:port`` cannot be bound now (None when it can)."""
    sock_type = socket.SOCK_DGRAM if kind == "udp" else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET, sock_type) as sock:
        if kind == "tcp":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def _member_argv(
    member: int, base_port: int, metrics_base_port: int | None, common: list[str]
) -> list[str]:
    argv = [sys.executable, "-m", "pnyx", "members", "serve", "--id", str(member),
            "--listen", f"127.0.0.1:{base_port + member - 1}", *common]  # fmt: skip
    if member != 1:
        argv += ["--seed", f"1=127.0.0.1:{base_port}"]
    if metrics_base_port is not None:
        argv += ["--metrics-port", str(metrics_base_port + member - 1)]
    return argv


async def _run_group(argvs: list[list[str]]) -> int:
    """Start every member, relay their lines until a signal or until all exited, stop them."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    processes: dict[int, asyncio.subprocess.Process] = {}
    relays: list[asyncio.Future[None]] = []
    try:
        for member, argv in enumerate(argvs, start=1):
            process = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                start_new_session=True,
            )  # fmt: skip
            processes[member] = process
            relays.append(asyncio.ensure_future(_relay(member, process)))
            click.echo(f"member {member}: pid {process.pid}, {_describe(argv)}", err=True)
        waiter: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
        everyone: asyncio.Future[Any] = asyncio.gather(*relays)
        await asyncio.wait({everyone, waiter}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        return 0 if stop.is_set() else RUNTIME_ERROR
    finally:
        await _stop_all(processes)
        await cancel_and_wait_bounded(relays)


def _describe(argv: list[str]) -> str:
    """``udp HOST:PORT`` (and ``metrics PORT``) of a member's command line."""
    text = f"udp {argv[argv.index('--listen') + 1]}"
    if "--metrics-port" in argv:
        text += f", metrics http://127.0.0.1:{argv[argv.index('--metrics-port') + 1]}/metrics"
    return text


async def cancel_and_wait_bounded(relays: list[asyncio.Future[None]]) -> None:
    """Let relays print what the stopped members wrote last (bounded), then cancel them."""
    if relays:
        await asyncio.wait(relays, timeout=KILL_WAIT_S)
    for relay in relays:
        relay.cancel()


async def _relay(member: int, process: asyncio.subprocess.Process) -> None:
    """Print a member's lines as they come; then say how it exited."""
    assert process.stdout is not None
    while line := await process.stdout.readline():
        click.echo(line.decode(errors="replace").rstrip("\n"))
    status = await process.wait()
    click.echo(f"member {member} (pid {process.pid}) exited with status {status}", err=True)


async def _stop_all(processes: dict[int, asyncio.subprocess.Process]) -> None:
    """SIGTERM (and SIGCONT, for a paused member) every member; SIGKILL those still running
    after ``STOP_TIMEOUT_S``; bounded by ``STOP_TIMEOUT_S + KILL_WAIT_S``."""
    running = [p for p in processes.values() if p.returncode is None]
    for process in running:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
            process.send_signal(signal.SIGCONT)
    waits = [asyncio.ensure_future(p.wait()) for p in running]
    if not waits:
        return
    _, pending = await asyncio.wait(waits, timeout=STOP_TIMEOUT_S)
    for process in running:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
    if pending:
        await asyncio.wait(pending, timeout=KILL_WAIT_S)
    click.echo(f"stopped {len(running)} member(s)", err=True)

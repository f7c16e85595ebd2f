"""``pnyx serve``: run one node of a protocol as a real process (TCP, WAL, metrics)."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from pathlib import Path

import click

from pnyx.cli.errors import fail
from pnyx.runtime.logs import configure_logging
from pnyx.runtime.node_runner import NodeFailed, NodeRunner, RunnerConfig, run_event_loop
from pnyx.runtime.transport import Address
from pnyx.runtime.wal import WalConfig, WalError
from pnyx.services.catalog import ServiceDef, get_service, service_names

log = logging.getLogger("pnyx.serve")


def parse_peers(text: str) -> dict[int, Address]:
    """``1=127.0.0.1:7001,2=127.0.0.1:7002`` → {1: ("127.0.0.1", 7001), ...}."""
    peers: dict[int, Address] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        node, sep, address = item.partition("=")
        host, colon, port = address.rpartition(":")
        if not sep or not colon or not node.isdigit() or not port.isdigit() or not host:
            raise ValueError(f"bad peer {item!r}; expected ID=HOST:PORT, e.g. 1=127.0.0.1:7001")
        if int(node) in peers:
            raise ValueError(f"peer id {node} appears twice in --peers")
        peers[int(node)] = (host, int(port))
    if not peers:
        raise ValueError("--peers is empty; list every member as ID=HOST:PORT")
    return peers


@click.command()
@click.option("--id", "node_id", type=click.IntRange(1, 999), required=True, help="This node's id.")
@click.option(
    "--peers",
    "peers_text",
    required=True,
    help="Every member (this one included) as ID=HOST:PORT,...",
)
@click.option("--data-dir", type=click.Path(path_type=Path), required=True)
@click.option("--protocol", default="broadcast", show_default=True)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Serve /metrics and /health on 127.0.0.1:PORT (0 picks one).",
)
@click.option("--tick-ms", type=click.IntRange(1, 10_000), default=10, show_default=True)
@click.option("--no-fsync", is_flag=True, help="Skip fsync (benchmarks only: unsafe).")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning"]), default="info")
@click.option("--log-json", is_flag=True, help="Structured logs as JSON lines.")
def serve(
    node_id: int,
    peers_text: str,
    data_dir: Path,
    protocol: str,
    metrics_port: int | None,
    tick_ms: int,
    no_fsync: bool,
    log_level: str,
    log_json: bool,
) -> None:
    """Run node ID of PROTOCOL until SIGTERM/SIGINT."""
    try:
        service = get_service(protocol)
    except KeyError:
        fail(f"unknown protocol {protocol!r}; valid: {', '.join(service_names())}")
    try:
        peers = parse_peers(peers_text)
    except ValueError as exc:
        fail(str(exc))
    if node_id not in peers:
        fail(f"--id {node_id} is not listed in --peers ({', '.join(map(str, sorted(peers)))})")
    configure_logging(getattr(logging, log_level.upper()), json_lines=log_json, node_id=node_id)
    host, port = peers[node_id]
    config = RunnerConfig(
        node_id=node_id,
        data_dir=data_dir,
        peers=peers,
        listen_host=host,
        listen_port=port,
        tick_ms=tick_ms,
        metrics_port=metrics_port,
        wal=WalConfig(fsync=not no_fsync),
    )
    try:
        run_event_loop(_serve(service, config))
    except (NodeFailed, WalError) as exc:
        click.echo(f"pnyx serve: node {node_id} stopped: {exc}", err=True)
        sys.exit(1)
    except OSError as exc:
        click.echo(f"pnyx serve: node {node_id} cannot start: {exc}", err=True)
        sys.exit(1)


async def _serve(service: ServiceDef, config: RunnerConfig) -> None:
    sm = service.make_state_machine() if service.make_state_machine else None
    runner: NodeRunner

    def on_service(request: object) -> None:
        assert service.serve is not None, f"{service.name} asked for service {request!r}"
        service.serve(runner.node, sm, request)

    runner = NodeRunner(
        config,
        service.make_node,
        service.message_types,
        state_machine=sm,
        op_codec=service.op_codec(),
        on_service=on_service,
    )
    await runner.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    waiter = asyncio.ensure_future(runner.wait_stopped())
    stopper = asyncio.ensure_future(stop.wait())
    await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    await runner.stop()
    if waiter.done():
        waiter.result()  # re-raise NodeFailed
    else:
        waiter.cancel()

"""``pnyx serve``: run one node of a protocol as a real process (TCP, WAL, metrics).

Cluster id (carried in every peer hello; a peer naming another cluster is refused): taken
from ``--cluster-id``; without it, from the data directory's ``node.json`` when the node ran
before (it keeps the cluster it was stamped for); without either, a node alone in
``--peers`` gets a random one (logged), and a node with peers is a usage error — every
member must be given the same id (``pnyx cluster up`` generates one).

Expected startup failures (bad data directory, port in use, unreadable certificates, a WAL
that refuses to open) print one line and exit 1; bad arguments exit 2.

``--protocol etcd`` also serves etcd's v3 gRPC API on ``--client-port`` (default 2379) in
the same process (:mod:`pnyx.services.etcd`); the ``--client-*``, ``--max-request-bytes``,
``--quota-backend-bytes`` and timeout options are for it only.  ``--consensus
raft|paxos|vr|vr-durable`` picks the protocol under its state machine (default raft;
:mod:`pnyx.services.etcd.consensus`).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import signal
import ssl
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, NoReturn

import click

from pnyx.catalog import get_runnable, runnable_names
from pnyx.cli.addresses import check_cluster_id, parse_peers
from pnyx.cli.errors import fail
from pnyx.protocols.etcd.mutants import SERVICE_MUTANTS
from pnyx.protocols.raft.config import MUTANTS as RAFT_MUTANTS
from pnyx.runtime.datadir import DataDirError, read_stamp
from pnyx.runtime.logs import configure_logging
from pnyx.runtime.node_runner import NodeFailed, NodeRunner, RunnerConfig, run_event_loop
from pnyx.runtime.tls import TlsConfig, peer_ssl_context, server_ssl_context
from pnyx.runtime.transport import Address, TransportConfig
from pnyx.runtime.wal import LAZY_FSYNC, LAZY_FSYNC_MS, RUNTIME_MUTANTS, WalConfig, WalError
from pnyx.services.etcd.consensus import DEFAULT_CONSENSUS, consensus_names, get_consensus
from pnyx.sim.spec import ProtocolDef

__all__ = ["parse_peers", "serve"]

log = logging.getLogger("pnyx.serve")

STARTUP_FAILED = 1
TEST_MUTANTS: frozenset[str] = RAFT_MUTANTS | SERVICE_MUTANTS | RUNTIME_MUTANTS
"""Names ``--test-mutant`` accepts (fault testing only)."""
FAULT_TESTING_LOG = "fault_testing"
"""Start of the warning a node logs when started with ``--test-*`` options (followed by
``mutants=A,B lose_unsynced=true|false``); the harness report shows it."""


@click.command()
@click.option("--id", "node_id", type=click.IntRange(1, 999), required=True, help="This node's id.")
@click.option(
    "--peers",
    "peers_text",
    required=True,
    help="Every member (this one included) as ID=HOST:PORT,...",
)
@click.option("--data-dir", type=click.Path(path_type=Path), required=True)
@click.option(
    "--protocol",
    default="broadcast",
    show_default=True,
    help="A protocol that runs as real processes (raft, etcd, paxos, vr, chain, ...; a wrong "
    "name lists them all).  chain/craq: the highest id of --peers is "
    "the configuration master; primary-backup: the lowest is the view manager.",
)
@click.option(
    "--cluster-id",
    default=None,
    help="Id shared by every member (default: the one in DATA_DIR/node.json; required "
    "for a new node with peers).",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Serve /metrics and /health on 127.0.0.1:PORT (0 picks one).",
)
@click.option("--tick-ms", type=click.IntRange(1, 10_000), default=10, show_default=True)
@click.option("--tls-ca", type=click.Path(path_type=Path), default=None, help="Cluster CA (PEM).")
@click.option("--tls-cert", type=click.Path(path_type=Path), default=None, help="Node cert (PEM).")
@click.option("--tls-key", type=click.Path(path_type=Path), default=None, help="Node key (PEM).")
@click.option("--no-fsync", is_flag=True, help="Skip fsync (benchmarks only: unsafe).")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning"]), default="info")
@click.option("--log-json", is_flag=True, help="Structured logs as JSON lines.")
@click.option(
    "--fault-clock",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="For fault testing only: take the node's time from this clock file "
    '({"jump_ms": .., "rate": ..}, re-read when it changes; see pnyx.runtime.faultclock).',
)
@click.option(
    "--consensus",
    type=click.Choice(consensus_names()),
    default=None,
    help="etcd: the consensus under the etcd state machine (default raft).  paxos and vr "
    "have fixed members (no member add/remove/promote) and no MoveLeader.",
)
@click.option(
    "--client-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="etcd: the gRPC client port (default 2379).",
)
@click.option(
    "--client-host",
    default=None,
    help="etcd: where the client port listens (default: this node's --peers host).",
)
@click.option(
    "--client-endpoints",
    default=None,
    help="etcd: other members' client addresses ID=HOST:PORT,... (shown by member list).",
)
@click.option(
    "--max-request-bytes",
    type=click.IntRange(1, 2**31 - 1),
    default=None,
    help="etcd: largest proposal accepted (default 1.5 MiB).",
)
@click.option(
    "--quota-backend-bytes",
    type=click.IntRange(1),
    default=None,
    help="etcd: data size that raises the NOSPACE alarm (default 2 GiB).",
)
@click.option(
    "--client-cert-auth",
    is_flag=True,
    default=None,
    help="etcd: with --tls-*, clients must present a certificate of the CA.",
)
@click.option(
    "--election-timeout-ms",
    type=click.IntRange(1),
    default=None,
    help="etcd: Raft election timeout in ms (default 10 ticks).",
)
@click.option(
    "--heartbeat-interval-ms",
    type=click.IntRange(1),
    default=None,
    help="etcd: Raft heartbeat interval in ms (default 1 tick).",
)
@click.option(
    "--test-mutant",
    "test_mutants",
    multiple=True,
    type=click.Choice(sorted(TEST_MUTANTS)),
    help="For fault testing only, never in production: run a deliberately broken variant "
    "(repeatable; Raft's and the etcd service's need --protocol etcd; docs/HARNESS.md, "
    "'Broken builds').",
)
@click.option(
    "--ranges",
    type=click.IntRange(1, 256),
    default=None,
    help="multiraft: data ranges a fresh cluster starts with (default 1; keep it the same on "
    "every node).",
)
@click.option(
    "--split-bytes",
    type=click.IntRange(0),
    default=None,
    help="multiraft, txn: a range splits when its keys and records exceed this many bytes "
    "(default 64 MiB; 0: by key count only; give every node the same).",
)
@click.option(
    "--phase1-quorum",
    type=int,
    default=None,
    help="paxos: Flexible Paxos phase-1 quorum (promises a leader needs; default majority, "
    "or N - Q2 + 1).  Q1 + Q2 must exceed the N members of --peers; give every node the same.",
)
@click.option(
    "--phase2-quorum",
    type=int,
    default=None,
    help="paxos: Flexible Paxos phase-2 quorum (accepts that choose a value; default "
    "majority, or N - Q1 + 1).",
)
@click.option(
    "--test-lose-unsynced",
    is_flag=True,
    help="For fault testing only: WAL writes stay in memory until fsynced, so a SIGKILL "
    "loses what a power failure would.",
)
def serve(
    node_id: int,
    peers_text: str,
    data_dir: Path,
    protocol: str,
    cluster_id: str | None,
    metrics_port: int | None,
    tick_ms: int,
    tls_ca: Path | None,
    tls_cert: Path | None,
    tls_key: Path | None,
    no_fsync: bool,
    log_level: str,
    log_json: bool,
    fault_clock: Path | None,
    test_mutants: tuple[str, ...],
    test_lose_unsynced: bool,
    **etcd_flags: Any,
) -> None:
    """Run node ID of PROTOCOL until SIGTERM/SIGINT."""
    try:
        service = get_runnable(protocol)
    except KeyError:
        fail(f"unknown protocol {protocol!r}; valid: {', '.join(runnable_names())}")
    if (ranges := etcd_flags.pop("ranges", None)) is not None:
        service = _multiraft_with_ranges(protocol, ranges)
    if (split_bytes := etcd_flags.pop("split_bytes", None)) is not None:
        service = _multiraft_split_bytes(service, protocol, ranges or 1, split_bytes)
    quorums = (etcd_flags.pop("phase1_quorum", None), etcd_flags.pop("phase2_quorum", None))
    peers = _peers(peers_text, node_id)
    if quorums != (None, None):
        service = _paxos_with_quorums(protocol, quorums, len(peers))
    etcd_flags = _etcd_flags(protocol, etcd_flags)
    etcd_flags["test_mutants"] = _protocol_mutants(protocol, test_mutants)
    _check_data_dir(data_dir)
    tls = _tls_config(tls_ca, tls_cert, tls_key)
    configure_logging(getattr(logging, log_level.upper()), json_lines=log_json, node_id=node_id)
    if test_mutants or test_lose_unsynced:
        log.warning(
            "%s mutants=%s lose_unsynced=%s",
            FAULT_TESTING_LOG,
            ",".join(test_mutants) or "-",
            str(test_lose_unsynced).lower(),
        )
    cluster = _cluster_id(cluster_id, data_dir, node_id, peers)
    host, port = peers[node_id]
    config = RunnerConfig(
        node_id=node_id,
        data_dir=data_dir,
        peers=peers,
        listen_host=host,
        listen_port=port,
        tick_ms=tick_ms,
        metrics_port=metrics_port,
        transport=TransportConfig(cluster=cluster, tls=tls),
        wal=_wal_config(no_fsync, test_lose_unsynced, test_mutants),
        fault_clock=fault_clock,
    )
    try:
        if protocol == "etcd":
            # uvloop hangs a TLS handshake between a client and a server of the same
            # loop, and the etcd server's gateway dials its own node: asyncio's loop then
            run_event_loop(
                _serve_etcd(config, _etcd_options(config, tls, etcd_flags)),
                use_uvloop=tls is None,
            )
        else:
            # TLS handshakes between nodes fail under uvloop too (tls_handshake_failed,
            # ConnectionResetError, in node.log: a chain never got its peers connected, a
            # Raft cluster ran on a bare majority of links): asyncio's loop with TLS
            run_event_loop(_serve(service, config), use_uvloop=tls is None)
    except (NodeFailed, WalError) as exc:
        _stopped(node_id, "stopped", exc)
    except (DataDirError, OSError) as exc:
        _stopped(node_id, "cannot start", exc)


def _multiraft_with_ranges(protocol: str, ranges: int) -> ProtocolDef:
    """``--ranges``: multiraft starting with that many ranges (a usage error otherwise)."""
    if protocol == "txn":
        from pnyx.protocols.txn.runtime_def import txn_with_ranges

        return txn_with_ranges(ranges)
    if protocol != "multiraft":
        fail(f"--ranges {ranges}: only for --protocol multiraft or txn")
    from pnyx.protocols.multiraft.spec import multiraft_with_ranges

    return multiraft_with_ranges(ranges)


def _multiraft_split_bytes(
    service: ProtocolDef, protocol: str, ranges: int, split_bytes: int
) -> ProtocolDef:
    """``--split-bytes``: multiraft/txn ranges split above that size (a usage error otherwise)."""
    import dataclasses

    from pnyx.protocols.multiraft.runtime_def import multiraft_runtime, runtime_config

    if protocol == "txn":
        from pnyx.protocols.txn.runtime_def import txn_runtime_config

        config = txn_runtime_config(ranges)
    elif protocol == "multiraft":
        config = runtime_config(ranges)
    else:
        fail(f"--split-bytes {split_bytes}: only for --protocol multiraft or txn")
    config = dataclasses.replace(config, split_threshold_bytes=split_bytes)
    return dataclasses.replace(service, runtime=multiraft_runtime(config))


def _paxos_with_quorums(
    protocol: str, quorums: tuple[int | None, int | None], members: int
) -> ProtocolDef:
    """``--phase1-quorum`` / ``--phase2-quorum``: Multi-Paxos whose nodes use those quorum
    sizes among ``members`` acceptors (a usage error for an invalid pair or another protocol)."""
    shown = " ".join(f"--phase{i}-quorum {q}" for i, q in enumerate(quorums, 1) if q is not None)
    if protocol != "paxos":
        fail(f"{shown}: only for --protocol paxos (etcd over Paxos keeps majorities)")
    from pnyx.protocols.paxos.spec import paxos_runtime_with_quorums

    try:
        return paxos_runtime_with_quorums(members, *quorums)
    except ValueError as exc:
        fail(f"{shown}: {exc}")


def _wal_config(no_fsync: bool, lose_unsynced: bool, mutants: tuple[str, ...]) -> WalConfig:
    """The WAL settings: ``--no-fsync``, ``--test-lose-unsynced``, the ``lazy_fsync`` mutant."""
    lazy_ms = LAZY_FSYNC_MS if LAZY_FSYNC in mutants else 0
    return WalConfig(fsync=not no_fsync, lose_unsynced=lose_unsynced, lazy_fsync_ms=lazy_ms)


def _protocol_mutants(protocol: str, mutants: tuple[str, ...]) -> frozenset[str]:
    """The Raft and etcd-service mutants asked for (a usage error without --protocol etcd)."""
    chosen = frozenset(mutants) - RUNTIME_MUTANTS
    if chosen and protocol != "etcd":
        fail(f"--test-mutant {', '.join(sorted(chosen))}: only for --protocol etcd")
    return chosen


def _check_consensus_mutants(flags: dict[str, Any]) -> None:
    """A usage error for Raft's mutants over another consensus."""
    consensus = flags.get("consensus", DEFAULT_CONSENSUS)
    raft_mutants = flags.get("test_mutants", frozenset()) & RAFT_MUTANTS
    if raft_mutants and consensus != DEFAULT_CONSENSUS:
        fail(
            f"--test-mutant {', '.join(sorted(raft_mutants))}: Raft's mutants need "
            f"--consensus raft, not {consensus}"
        )


def _stopped(node_id: int, what: str, exc: BaseException) -> NoReturn:
    text = str(exc) if not isinstance(exc, OSError) or not exc.strerror else _os_error(exc)
    click.echo(f"pnyx serve: node {node_id} {what}: {' '.join(text.split())}", err=True)
    sys.exit(STARTUP_FAILED)


def _os_error(exc: OSError) -> str:
    where = f" ({exc.filename})" if exc.filename else ""
    return f"{exc.strerror}{where}" if exc.errno is not None else str(exc)


def _peers(peers_text: str, node_id: int) -> dict[int, Address]:
    try:
        peers = parse_peers(peers_text)
    except ValueError as exc:
        fail(f"--peers: {exc}")
    if node_id not in peers:
        fail(f"--id {node_id} is not listed in --peers ({', '.join(map(str, sorted(peers)))})")
    return peers


def _check_data_dir(data_dir: Path) -> None:
    if data_dir.exists() and not data_dir.is_dir():
        fail(f"--data-dir {data_dir} is not a directory")


def _tls_config(ca: Path | None, cert: Path | None, key: Path | None) -> TlsConfig | None:
    """The node's TLS material, loaded once here so a bad file is a one-line usage error."""
    given = [p for p in (ca, cert, key) if p is not None]
    if not given:
        return None
    if ca is None or cert is None or key is None:
        fail("--tls-ca, --tls-cert and --tls-key go together: give all three or none")
    tls = TlsConfig(ca_file=ca, cert_file=cert, key_file=key)
    try:
        server_ssl_context(tls)
        peer_ssl_context(tls)
    except ValueError as exc:
        fail(str(exc))
    except (ssl.SSLError, OSError) as exc:
        fail(f"cannot load the TLS files (--tls-ca {ca}, --tls-cert {cert}, --tls-key {key}): "
             f"{getattr(exc, 'reason', None) or exc}")  # fmt: skip
    return tls


def _cluster_id(given: str | None, data_dir: Path, node_id: int, peers: dict[int, Address]) -> str:
    if given is not None:
        try:
            return check_cluster_id(given)
        except ValueError as exc:
            fail(f"--cluster-id: {exc}")
    try:
        stamp = read_stamp(data_dir) if data_dir.is_dir() else None
    except DataDirError as exc:
        _stopped(node_id, "cannot start", exc)
    if stamp is not None:
        log.info("cluster id %r from %s/node.json", stamp.cluster, data_dir)
        return stamp.cluster
    if set(peers) != {node_id}:
        fail(
            "--cluster-id is required for a new node with peers: give every member the same "
            "id (`pnyx cluster up` generates one)"
        )
    generated = secrets.token_hex(8)
    log.warning("no --cluster-id: this single node uses the new cluster id %r", generated)
    return generated


def _etcd_flags(protocol: str, flags: dict[str, Any]) -> dict[str, Any]:
    """The etcd options given; a usage error when they come with another protocol."""
    given = {name: value for name, value in flags.items() if value is not None}
    if given and protocol != "etcd":
        shown = ", ".join("--" + name.replace("_", "-") for name in sorted(given))
        fail(f"{shown}: only for --protocol etcd")
    if "client_endpoints" in given:
        try:
            given["client_endpoints"] = parse_peers(given["client_endpoints"])
        except ValueError as exc:
            fail(f"--client-endpoints: {exc}")
    return given


def _etcd_options(config: RunnerConfig, tls: TlsConfig | None, flags: dict[str, Any]) -> Any:
    """The ``EtcdOptions`` of ``pnyx serve --protocol etcd``: the client port speaks TLS
    with the node's certificate when ``--tls-*`` are given."""
    from pnyx.services.etcd.server import DEFAULT_CLIENT_PORT, EtcdOptions

    if flags.get("client_cert_auth") and tls is None:
        fail("--client-cert-auth needs --tls-ca, --tls-cert and --tls-key")
    _check_consensus_mutants(flags)
    _check_raft_timeouts(config.tick_ms, flags)
    options: dict[str, Any] = {
        "client_host": flags.get("client_host") or config.listen_host,
        "client_port": flags.get("client_port", DEFAULT_CLIENT_PORT),
        "client_addresses": flags.get("client_endpoints", {}),
        "client_tls": tls,
        "client_cert_auth": bool(flags.get("client_cert_auth")),
        "test_mutants": flags.get("test_mutants", frozenset()),
    }
    for name in (
        "consensus",
        "max_request_bytes",
        "quota_backend_bytes",
        "election_timeout_ms",
        "heartbeat_interval_ms",
    ):
        if name in flags:
            options[name] = flags[name]
    return EtcdOptions(**options)


def _check_raft_timeouts(tick_ms: int, flags: dict[str, Any]) -> None:
    """A usage error unless the heartbeat, in ticks, is below the election timeout."""
    from pnyx.services.etcd.server import DEFAULT_HEARTBEAT_TICKS

    consensus = get_consensus(flags.get("consensus", DEFAULT_CONSENSUS))
    election = flags.get("election_timeout_ms")
    heartbeat = flags.get("heartbeat_interval_ms")
    election_ticks = election // tick_ms if election else consensus.default_election_ticks
    heartbeat_ticks = max(1, heartbeat // tick_ms) if heartbeat else DEFAULT_HEARTBEAT_TICKS
    if election is not None and election_ticks < 2:
        fail(f"--election-timeout-ms {election} is below two ticks of --tick-ms {tick_ms}")
    if heartbeat_ticks >= election_ticks:
        fail(
            f"the heartbeat interval ({heartbeat_ticks} ticks of {tick_ms} ms) must be below "
            f"the election timeout ({election_ticks} ticks)"
        )


async def _serve_etcd(config: RunnerConfig, options: Any) -> None:
    from pnyx.services.etcd.server import EtcdServer

    server = EtcdServer(config, options)
    await server.start()
    await _run_until_signal(server.stop, server.wait_stopped)


async def _serve(service: ProtocolDef, config: RunnerConfig) -> None:
    runner = NodeRunner.for_protocol(service, config)
    await runner.start()
    await _run_until_signal(runner.stop, runner.wait_stopped)


async def _run_until_signal(
    stop_server: Callable[[], Awaitable[None]], wait_stopped: Callable[[], Awaitable[None]]
) -> None:
    """Until SIGTERM/SIGINT or the node stops by itself; then stop (re-raising a failure)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    waiter = asyncio.ensure_future(wait_stopped())
    stopper = asyncio.ensure_future(stop.wait())
    await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    await stop_server()
    if waiter.done():
        waiter.result()  # re-raise NodeFailed
    else:
        waiter.cancel()

"""``pnyx kv``: read and write the key-value service of a running cluster.

With ``--data-dir`` the members, the protocol, and the CA of a ``cluster up --tls`` cluster
come from its ``cluster.json``; with ``--endpoints`` they are given (``--protocol``, default
raft; ``--tls-ca`` for a TLS cluster).  Raft and primary-backup clusters are served by the
Raft KV client (:mod:`pnyx.services.kv`); chain, CRAQ and Dynamo clusters by the scheme
clients of :mod:`pnyx.services.schemes_client`.  An operation a scheme does not offer (e.g.
``delete`` on a chain, ``append`` on Dynamo) is refused with one line and exit status 2.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from pnyx.cli.addresses import parse_peers
from pnyx.cli.cluster_cmd import load_state
from pnyx.cli.cluster_state import recorded_members
from pnyx.cli.errors import fail
from pnyx.runtime.transport import Address

DEADLINE_S = 10.0
"""How long one ``pnyx kv`` operation may take, retries and redirects included."""
MOVE_WAIT_S = 60.0
"""How long ``pnyx kv move-replica`` waits by default for the range map to show the move."""


KV_PROTOCOLS = (
    *("raft", "paxos", "vr", "vr-durable", "primary-backup", "chain", "craq", "dynamo"),
    "multiraft",
    "txn",
)
"""Protocols ``pnyx kv`` has a client for (``txn``: ``pnyx kv ranges`` only)."""


@dataclass(frozen=True)
class _Target:
    data_dir: Path | None
    endpoints: str | None
    tls_ca: Path | None
    protocol: str | None


@dataclass(frozen=True)
class _Cluster:
    members: dict[int, Address]
    ca_file: Path | None
    protocol: str


def _cluster(target: _Target) -> _Cluster:
    """The members, the CA to verify them with (None: plain TCP) and the protocol."""
    if target.endpoints:
        try:
            members = parse_peers(target.endpoints)
        except ValueError as exc:
            fail(f"--endpoints: {exc}")
        return _Cluster(members, target.tls_ca, target.protocol or "raft")
    members, ca, protocol = _members(target)
    if target.protocol is not None and target.protocol != protocol:
        fail(f"--protocol {target.protocol}: the cluster in {target.data_dir} runs {protocol!r}")
    return _Cluster(members, ca, protocol)


def _members(target: _Target) -> tuple[dict[int, Address], Path | None, str]:
    """Members, CA and protocol of the cluster recorded in ``--data-dir``."""
    if target.data_dir is None:
        fail("give --data-dir of a `pnyx cluster` or --endpoints ID=HOST:PORT,...")
    data_dir = target.data_dir.resolve()
    state = load_state(data_dir)
    if state is None:
        fail(f"no cluster in {data_dir}; start one with `pnyx cluster up --protocol raft`")
    protocol = str(state.get("protocol"))
    if protocol not in KV_PROTOCOLS:
        fail(
            f"the cluster in {data_dir} runs {protocol!r}, not the raft KV nor a replication "
            f"scheme; pnyx kv serves {', '.join(KV_PROTOCOLS)}"
        )
    members, ca = recorded_members(data_dir, state)
    return members, target.tls_ca or ca, protocol


def _ssl_context(ca_file: Path) -> ssl.SSLContext:
    from pnyx.runtime.tls import client_ssl_context

    try:
        return client_ssl_context(ca_file)
    except ValueError as exc:
        fail(str(exc))
    except (ssl.SSLError, OSError) as exc:
        fail(f"cannot load the TLS CA {ca_file}: {getattr(exc, 'reason', None) or exc}")


@click.group()
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Data directory of a `pnyx cluster up` (protocol raft, primary-backup, chain, "
    "craq or dynamo).",
)
@click.option(
    "--protocol",
    type=click.Choice(KV_PROTOCOLS),
    default=None,
    help="With --endpoints: the cluster's protocol (default raft).",
)
@click.option("--endpoints", default=None, help="Members as ID=HOST:PORT,... instead.")
@click.option(
    "--tls-ca",
    type=click.Path(path_type=Path),
    default=None,
    help="CA to verify the nodes with (default: the one in DATA_DIR/cluster.json, if any).",
)
@click.pass_context
def kv(
    ctx: click.Context,
    data_dir: Path | None,
    protocol: str | None,
    endpoints: str | None,
    tls_ca: Path | None,
) -> None:
    """Key-value operations against a cluster: Raft, Multi-Paxos, VR and primary-backup
    (linearizable, exactly once; get/put/append/cas/delete), chain and CRAQ (linearizable;
    get/put/append/cas), Dynamo (get/put; a get shows every sibling, a put replaces them)."""
    ctx.obj = _Target(data_dir, endpoints, tls_ca, protocol)


def _run(ctx: click.Context, op: str, *args: Any) -> None:
    from pnyx.services.client import ClientError
    from pnyx.services.kv import KvClient, KvError
    from pnyx.services.schemes import RAFT_KV_LIKE

    cluster = _cluster(ctx.obj)
    if cluster.protocol == "txn":
        fail(f"kv {op}: a txn cluster's keys hold transaction records; use `pnyx txn {op}`")
    if cluster.protocol == "multiraft":
        from pnyx.cli.multiraft_kv import run_op

        run_op(cluster.members, _context(cluster), op, args)
        return
    if cluster.protocol not in RAFT_KV_LIKE:
        _run_scheme(cluster, op, *args)
        return
    members, ca_file = cluster.members, cluster.ca_file
    options: dict[str, Any] = {"deadline_s": DEADLINE_S}
    if ca_file is not None:
        options["ssl"] = _ssl_context(ca_file)
    try:
        with KvClient(members, **options) as client:
            result = getattr(client, op)(*args)
    except (ClientError, KvError, OSError) as exc:
        click.echo(f"pnyx kv: {op} failed: {exc}", err=True)
        sys.exit(1)
    click.echo("OK" if op in ("put", "append") else json.dumps(result))


@kv.command()
@click.argument("key")
@click.option("--serializable", is_flag=True, help="Local read (may be stale).")
@click.pass_context
def get(ctx: click.Context, key: str, serializable: bool) -> None:
    """Print the value of KEY ("" when absent)."""
    _run(ctx, "get", key, "serializable" if serializable else "linearizable")


@kv.command()
@click.argument("key")
@click.argument("value")
@click.pass_context
def put(ctx: click.Context, key: str, value: str) -> None:
    """Set KEY to VALUE."""
    _run(ctx, "put", key, value)


@kv.command()
@click.argument("key")
@click.argument("suffix")
@click.pass_context
def append(ctx: click.Context, key: str, suffix: str) -> None:
    """Append SUFFIX to the value of KEY."""
    _run(ctx, "append", key, suffix)


@kv.command()
@click.argument("key")
@click.argument("expected")
@click.argument("new")
@click.pass_context
def cas(ctx: click.Context, key: str, expected: str, new: str) -> None:
    """Set KEY to NEW if it holds EXPECTED; prints true or false."""
    _run(ctx, "cas", key, expected, new)


@kv.command()
@click.argument("key")
@click.pass_context
def delete(ctx: click.Context, key: str) -> None:
    """Remove KEY; prints whether it existed."""
    _run(ctx, "delete", key)


@kv.command()
@click.pass_context
def ranges(ctx: click.Context) -> None:
    """multiraft: the range map (id, bounds, version, conf_ver, replicas, leader)."""
    from pnyx.cli.multiraft_kv import show_ranges

    cluster = _cluster(ctx.obj)
    if cluster.protocol not in ("multiraft", "txn"):
        fail(f"kv ranges: only for a multiraft or txn cluster, not {cluster.protocol}")
    show_ranges(cluster.members, _context(cluster))


@kv.command("move-replica")
@click.argument("range_id", metavar="RANGE", type=click.IntRange(1))
@click.option("--from", "source", type=click.IntRange(1), required=True, help="Process to leave.")
@click.option("--to", "target", type=click.IntRange(1), required=True, help="Process to join.")
@click.option(
    "--wait-s",
    type=click.FloatRange(1.0, 3600.0),
    default=MOVE_WAIT_S,
    show_default=True,
    help="How long to wait for the range map to show the move.",
)
@click.pass_context
def move_replica(
    ctx: click.Context, range_id: int, source: int, target: int, wait_s: float
) -> None:
    """multiraft/txn: move RANGE's replica from process --from to process --to (the range's
    leader adds it as a learner, then swaps it in by joint consensus); prints the range's new
    descriptor.  Exit 2 when the move is invalid, 1 when it failed or its outcome is unknown."""
    from pnyx.services.multiraft import Indeterminate, MoveRefused, RangeError, SyncRangeClient

    cluster = _cluster(ctx.obj)
    if cluster.protocol not in ("multiraft", "txn"):
        fail(f"kv move-replica: only for a multiraft or txn cluster, not {cluster.protocol}")
    try:
        with SyncRangeClient(cluster.members, deadline_s=DEADLINE_S, ssl=_context(cluster)) as c:
            desc = c.move_replica(range_id, source, target, wait_s=wait_s)
    except MoveRefused as exc:
        fail(f"kv move-replica: {exc}")
    except Indeterminate as exc:
        click.echo(f"pnyx kv: move-replica may or may not have taken effect: {exc}", err=True)
        sys.exit(1)
    except (RangeError, OSError) as exc:
        click.echo(f"pnyx kv: move-replica failed: {exc}", err=True)
        sys.exit(1)
    end = "(end)" if desc.end is None else repr(desc.end)
    click.echo(
        f"range {desc.range_id} [{desc.start!r}, {end}) version {desc.version} "
        f"conf_ver {desc.conf_ver} replicas {','.join(map(str, desc.replicas))}"
    )


def _context(cluster: _Cluster) -> ssl.SSLContext | None:
    return _ssl_context(cluster.ca_file) if cluster.ca_file is not None else None


def _run_scheme(cluster: _Cluster, op: str, *args: Any) -> None:
    """One operation with the chain/CRAQ/Dynamo client; prints like the Raft path."""
    from pnyx.services.client import ClientError
    from pnyx.services.kv import KvError
    from pnyx.services.schemes_client import UnsupportedOperation

    if op == "get" and args[1] != "linearizable":
        fail(f"--serializable: only for raft and primary-backup, not {cluster.protocol}")
    try:
        context = _ssl_context(cluster.ca_file) if cluster.ca_file is not None else None
        result = asyncio.run(_scheme_op(cluster, op, args, context))
    except UnsupportedOperation as exc:
        fail(f"kv {op}: {exc}")
    except (ClientError, KvError, OSError) as exc:
        click.echo(f"pnyx kv: {op} failed: {exc}", err=True)
        sys.exit(1)
    if op == "get" and isinstance(result, tuple):
        if len(result) > 1:
            click.echo(f"pnyx kv: {args[0]!r} has {len(result)} siblings (concurrent writes); "
                       "the next put replaces them", err=True)  # fmt: skip
            click.echo(json.dumps(list(result)))
        else:
            click.echo(json.dumps(result[0] if result else ""))
        return
    click.echo("OK" if op in ("put", "append") else json.dumps(result))


async def _scheme_op(
    cluster: _Cluster, op: str, args: tuple[Any, ...], context: ssl.SSLContext | None
) -> Any:
    from pnyx.services.schemes_client import AsyncDynamoKv, open_kv

    client = open_kv(cluster.protocol, cluster.members, deadline_s=DEADLINE_S, ssl=context)
    try:
        if isinstance(client, AsyncDynamoKv):
            if op == "get":
                return await client.get_siblings(args[0])
            if op == "put":
                await client.get_siblings(args[0])  # the context: the put replaces them
        if op == "get":
            return await client.get(args[0])
        return await getattr(client, op)(*args)
    finally:
        await client.close()

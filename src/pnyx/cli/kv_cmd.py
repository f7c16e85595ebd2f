"""``pnyx kv``: read and write the Raft key-value service of a running cluster.

With ``--data-dir`` the members, and the CA of a ``cluster up --tls`` cluster, come from its
``cluster.json``; with ``--endpoints`` they are given (``--tls-ca`` for a TLS cluster).
"""

from __future__ import annotations

import json
import ssl
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from pnyx.cli.addresses import parse_peers
from pnyx.cli.cluster_cmd import load_state
from pnyx.cli.errors import fail
from pnyx.runtime.transport import Address

DEADLINE_S = 10.0
"""How long one ``pnyx kv`` operation may take, retries and redirects included."""


@dataclass(frozen=True)
class _Target:
    data_dir: Path | None
    endpoints: str | None
    tls_ca: Path | None


def _members(target: _Target) -> tuple[dict[int, Address], Path | None]:
    """The members to talk to and the CA to verify them with (None: plain TCP)."""
    if target.endpoints:
        try:
            return parse_peers(target.endpoints), target.tls_ca
        except ValueError as exc:
            fail(f"--endpoints: {exc}")
    if target.data_dir is None:
        fail("give --data-dir of a `pnyx cluster` or --endpoints ID=HOST:PORT,...")
    data_dir = target.data_dir.resolve()
    state = load_state(data_dir)
    if state is None:
        fail(f"no cluster in {data_dir}; start one with `pnyx cluster up --protocol raft`")
    if state.get("protocol") != "raft":
        fail(f"the cluster in {data_dir} runs {state.get('protocol')!r}, not the raft KV")
    try:
        members = parse_peers(state["peers"])
    except ValueError as exc:
        fail(f"{data_dir}/cluster.json: {exc}")
    tls = state.get("tls")
    ca = Path(tls["ca"]) if isinstance(tls, dict) and isinstance(tls.get("ca"), str) else None
    return members, target.tls_ca or ca


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
    help="Data directory of a `pnyx cluster up --protocol raft`.",
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
    ctx: click.Context, data_dir: Path | None, endpoints: str | None, tls_ca: Path | None
) -> None:
    """Key-value operations against a Raft cluster (linearizable, exactly once)."""
    ctx.obj = _Target(data_dir, endpoints, tls_ca)


def _run(ctx: click.Context, op: str, *args: Any) -> None:
    from pnyx.services.client import ClientError
    from pnyx.services.kv import KvClient, KvError

    members, ca_file = _members(ctx.obj)
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

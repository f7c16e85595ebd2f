"""``pnyx kv``: read and write the Raft key-value service of a running cluster."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from pnyx.cli.cluster_cmd import load_state
from pnyx.cli.errors import fail
from pnyx.cli.serve_cmd import parse_peers
from pnyx.runtime.transport import Address


def _members(data_dir: Path | None, endpoints: str | None) -> dict[int, Address]:
    if endpoints:
        try:
            return parse_peers(endpoints)
        except ValueError as exc:
            fail(str(exc))
    if data_dir is None:
        fail("give --data-dir of a `pnyx cluster` or --endpoints ID=HOST:PORT,...")
    state = load_state(data_dir.resolve())
    if state is None:
        fail(f"no cluster in {data_dir}; start one with `pnyx cluster up --protocol raft`")
    if state.get("protocol") != "raft":
        fail(f"the cluster in {data_dir} runs {state.get('protocol')!r}, not the raft KV")
    return parse_peers(state["peers"])


@click.group()
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Data directory of a `pnyx cluster up --protocol raft`.",
)
@click.option("--endpoints", default=None, help="Members as ID=HOST:PORT,... instead.")
@click.pass_context
def kv(ctx: click.Context, data_dir: Path | None, endpoints: str | None) -> None:
    """Key-value operations against a Raft cluster (linearizable, exactly once)."""
    ctx.obj = (data_dir, endpoints)


def _run(ctx: click.Context, op: str, *args: Any) -> None:
    from pnyx.services.client import ClientError
    from pnyx.services.kv import KvClient, KvError

    members = _members(*ctx.obj)
    try:
        with KvClient(members, deadline_s=10.0) as client:
            result = getattr(client, op)(*args)
    except (ClientError, KvError) as exc:
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

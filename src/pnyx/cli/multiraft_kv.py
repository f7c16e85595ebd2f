"""``pnyx kv`` against a multi-Raft cluster: operations through the routing client and
``pnyx kv ranges`` (the range map with every range's leader)."""

from __future__ import annotations

import json
import ssl
import sys
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from pnyx.runtime.transport import Address

DEADLINE_S = 10.0
"""How long one operation may take, refreshes of the range map and retries included."""


def run_op(
    members: dict[int, Address], context: ssl.SSLContext | None, op: str, args: tuple[Any, ...]
) -> None:
    """One KV operation; prints like the other protocols (exit 1 when it failed)."""
    from pnyx.services.multiraft import Indeterminate, RangeError, SyncRangeClient

    try:
        with SyncRangeClient(members, deadline_s=DEADLINE_S, ssl=context) as client:
            result = getattr(client, op)(*args)
    except Indeterminate as exc:
        click.echo(f"pnyx kv: {op} may or may not have taken effect: {exc}", err=True)
        sys.exit(1)
    except (RangeError, OSError) as exc:
        click.echo(f"pnyx kv: {op} failed: {exc}", err=True)
        sys.exit(1)
    click.echo("OK" if op in ("put", "append") else json.dumps(result))


def show_ranges(members: dict[int, Address], context: ssl.SSLContext | None) -> None:
    """Print the range map: id, bounds, version, conf_ver, replicas, leader."""
    from pnyx.services.multiraft import RangeError, SyncRangeClient

    try:
        with SyncRangeClient(members, deadline_s=DEADLINE_S, ssl=context) as client:
            infos = client.ranges()
    except (RangeError, OSError) as exc:
        click.echo(f"pnyx kv: ranges failed: {exc}", err=True)
        sys.exit(1)
    table = Table(title=f"{len(infos)} ranges")
    for column in ("id", "start", "end", "version", "conf_ver", "replicas", "leader"):
        table.add_column(column)
    for info in infos:
        d = info.desc
        end = "(end)" if d.end is None else repr(d.end)
        leader = "-" if info.leader is None else str(info.leader)
        replicas = ",".join(map(str, d.replicas))
        table.add_row(
            str(d.range_id), repr(d.start), end, str(d.version), str(d.conf_ver), replicas, leader
        )
    Console(width=120).print(table)

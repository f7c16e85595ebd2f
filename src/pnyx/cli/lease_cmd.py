"""``pnyx lease grant TTL | keep-alive ID | revoke ID | timetolive ID``: etcd v3 leases.

Lease ids are printed and read in hexadecimal, as ``etcdctl`` does, so the two mix."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import click

from pnyx.cli.etcd_common import conn_of, echo_json, etcd_options, parse_lease_id, run, text
from pnyx.etcdclient import AsyncEtcdClient, Lease, LeaseInfo


@click.group()
def lease() -> None:
    """Leases over the etcd v3 API: grant, keep-alive, revoke, timetolive."""


@lease.command()
@click.argument("ttl", type=click.IntRange(1, 9_000_000_000))
@etcd_options
def grant(ttl: int, **common: Any) -> None:
    """Grant a lease of TTL seconds; prints its id (hex)."""
    conn = conn_of(common)

    async def body(client: AsyncEtcdClient) -> Lease:
        return await client.lease_grant(ttl)

    granted = run(conn, body)
    assert granted is not None
    if conn.write_out == "json":
        echo_json({"ID": granted.id, "id_hex": f"{granted.id:x}", "TTL": granted.ttl})
    else:
        click.echo(f"lease {granted.id:x} granted with TTL({granted.ttl}s)")


@lease.command(name="keep-alive")
@click.argument("lease_id")
@click.option("--once", is_flag=True, help="Refresh once and exit.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(0, min_open=True), default=None,
              help="Stop after this many seconds (exit 0); default: until Ctrl-C.")  # fmt: skip
@etcd_options
def keep_alive(lease_id: str, once: bool, timeout_s: float | None, **common: Any) -> None:
    """Keep lease LEASE_ID alive, printing each refreshed TTL.

    Exits 1 if the lease does not exist or expires (it is not kept alive any more)."""
    conn = conn_of(common)
    ident = parse_lease_id(lease_id)

    def show(ttl: int) -> None:
        if conn.write_out == "json":
            echo_json({"ID": ident, "id_hex": f"{ident:x}", "TTL": ttl})
        else:
            click.echo(f"lease {ident:x} keepalived with TTL({ttl})", nl=True)

    async def refresh(client: AsyncEtcdClient) -> None:
        if once:
            show(await client.lease_keep_alive_once(ident))
            return
        async for ttl in client.lease_keep_alive(ident):
            show(ttl)

    async def body(client: AsyncEtcdClient) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(refresh(client), timeout_s)

    run(conn, body, interruptible=True)


@lease.command()
@click.argument("lease_id")
@etcd_options
def revoke(lease_id: str, **common: Any) -> None:
    """Revoke lease LEASE_ID: every key attached to it is deleted."""
    conn = conn_of(common)
    ident = parse_lease_id(lease_id)

    async def body(client: AsyncEtcdClient) -> None:
        await client.lease_revoke(ident)

    run(conn, body)
    click.echo(f"lease {ident:x} revoked")


@lease.command()
@click.argument("lease_id")
@click.option("--keys", is_flag=True, help="Also list the keys attached to the lease.")
@etcd_options
def timetolive(lease_id: str, keys: bool, **common: Any) -> None:
    """Remaining and granted TTL of lease LEASE_ID."""
    conn = conn_of(common)
    ident = parse_lease_id(lease_id)

    async def body(client: AsyncEtcdClient) -> LeaseInfo:
        return await client.lease_time_to_live(ident, keys=keys)

    info = run(conn, body)
    assert info is not None
    if conn.write_out == "json":
        echo_json({"ID": info.id, "TTL": info.ttl, "grantedTTL": info.granted_ttl,
                   "keys": [text(k) for k in info.keys]})  # fmt: skip
    elif info.ttl == -1:
        click.echo(f"lease {ident:x} already expired")
    else:
        line = f"lease {ident:x} granted with TTL({info.granted_ttl}s), remaining({info.ttl}s)"
        if keys:
            line += f", attached keys({[text(k) for k in info.keys]})"
        click.echo(line)

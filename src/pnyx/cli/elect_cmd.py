"""``pnyx elect NAME [PROPOSAL]`` / ``pnyx elect --listen NAME``: etcd's leader election.

Built client side as etcd's ``concurrency.Election`` (:mod:`pnyx.etcdclient.recipes`), so it
takes part in the same elections as ``etcdctl elect``.  Campaigning prints the leader key
and the proposal once elected, then holds leadership until Ctrl-C / SIGTERM (or
``--timeout``), and resigns.  ``--listen`` prints every leader's key and proposal as they
change (until ``--count`` leaders, ``--timeout`` or Ctrl-C).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from typing import Any

import click

from pnyx.cli.errors import fail
from pnyx.cli.etcd_common import ETCD_ERROR, conn_of, echo_json, etcd_options, run, text
from pnyx.etcdclient import AsyncEtcdClient, Election, EtcdError, KeyValue, Session


def _show(kv: KeyValue, write_out: str) -> None:
    if write_out == "json":
        echo_json({"key": text(kv.key), "value": text(kv.value),
                   "create_revision": kv.create_revision})  # fmt: skip
    else:
        click.echo(text(kv.key))
        click.echo(text(kv.value))
    sys.stdout.flush()


@click.command()
@click.argument("name")
@click.argument("proposal", required=False)
@click.option("-l", "--listen", is_flag=True, help="Observe the leaders instead.")
@click.option("--ttl", type=click.IntRange(1, 3600), default=10, show_default=True,
              help="Session lease TTL in seconds.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(0, min_open=True), default=None,
              help="Stop after this many seconds (exit 0 once elected or listening; "
                   "exit 1 if not elected by then).")  # fmt: skip
@click.option("--count", type=click.IntRange(1), default=None,
              help="With --listen: stop after this many leaders.")
@etcd_options
def elect(name: str, proposal: str | None, listen: bool, ttl: int, timeout_s: float | None,
          count: int | None, **common: Any) -> None:  # fmt: skip
    """Campaign in election NAME with PROPOSAL and hold leadership until interrupted."""
    conn = conn_of(common)
    if listen and proposal is not None:
        fail("--listen takes no PROPOSAL")
    if not listen and proposal is None:
        fail("give a PROPOSAL to campaign with, or --listen to observe")
    if count is not None and not listen:
        fail("--count goes with --listen")
    status = [0]

    async def observe(client: AsyncEtcdClient) -> None:
        seen = 0
        async for leader in Election(client, name).observe():
            _show(leader, conn.write_out)
            seen += 1
            if count is not None and seen >= count:
                return

    async def campaign(client: AsyncEtcdClient) -> None:
        assert proposal is not None
        election = Election(client, name)
        async with Session(client, ttl) as session:
            loop = asyncio.get_running_loop()
            deadline = None if timeout_s is None else loop.time() + timeout_s
            try:
                won = await asyncio.wait_for(election.campaign(session, proposal), timeout_s)
            except TimeoutError:
                click.echo(f"pnyx: error: not elected in {name!r} within {timeout_s:g} s",
                           err=True)  # fmt: skip
                status[0] = ETCD_ERROR
                return
            try:
                _show(won, conn.write_out)
                left = None if deadline is None else max(0.0, deadline - loop.time())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(session.lost.wait(), left)
                if session.lost.is_set():
                    click.echo(f"pnyx: error: lost leadership of {name!r}: the session lease "
                               f"expired", err=True)  # fmt: skip
                    status[0] = ETCD_ERROR
            finally:
                with contextlib.suppress(EtcdError):
                    await asyncio.shield(election.resign())

    async def body(client: AsyncEtcdClient) -> None:
        if listen:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(observe(client), timeout_s)
        else:
            await campaign(client)

    run(conn, body, interruptible=True)
    sys.exit(status[0])

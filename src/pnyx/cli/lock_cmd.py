"""``pnyx lock NAME [-- COMMAND ...]``: hold etcd's distributed mutex NAME.

The lock is etcd's ``concurrency`` mutex built client side (a session lease, a txn, and a
watch on the key queued before ours: :mod:`pnyx.etcdclient.recipes`), so it works against
any etcd v3 cluster and excludes ``etcdctl lock`` holders of the same NAME.

With a COMMAND, runs it while holding the lock, with the **fencing token** (the lock key's
create revision, larger for every later holder) in ``PNYX_LOCK_TOKEN`` and the key in
``PNYX_LOCK_KEY`` (also ``ETCD_LOCK_REV`` / ``ETCD_LOCK_KEY``, as ``etcdctl lock`` sets),
then releases it and exits with the command's status.  A resource the command writes should
refuse tokens lower than the highest it has seen, or write through a txn comparing
``create(PNYX_LOCK_KEY) = PNYX_LOCK_TOKEN``: a holder whose lease has expired then cannot
write.  Without a COMMAND, prints the key and the token and holds the lock until Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from typing import Any

import click

from pnyx.cli.etcd_common import ETCD_ERROR, conn_of, echo_json, etcd_options, run, text
from pnyx.etcdclient import AsyncEtcdClient, Mutex, Session

KILL_AFTER_S = 10.0
"""How long a command may take to exit after SIGTERM before it is killed."""


@click.command()
@click.argument("name")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.option("--ttl", type=click.IntRange(1, 3600), default=10, show_default=True,
              help="Session lease TTL in seconds (the lock is lost this long after we die).")
@click.option("--timeout", "timeout_s", type=click.FloatRange(0, min_open=True), default=None,
              help="Give up waiting for the lock after this many seconds (exit 1).")
@etcd_options
def lock(name: str, command: tuple[str, ...], ttl: int, timeout_s: float | None,
         **common: Any) -> None:  # fmt: skip
    """Acquire lock NAME; run COMMAND holding it (after --), or hold it until Ctrl-C.

    \b
    pnyx lock jobs -- ./job.sh      # exits with the command's status, then releases
    pnyx lock jobs                  # prints the lock key and the token, holds until Ctrl-C

    The command gets the fencing token (the lock key's create revision: it grows with every
    holder) in PNYX_LOCK_TOKEN and the key in PNYX_LOCK_KEY (also ETCD_LOCK_REV and
    ETCD_LOCK_KEY, as etcdctl lock sets them).  If the session lease is lost while the
    command runs, the command is stopped (SIGTERM) and pnyx lock exits 1."""
    conn = conn_of(common)
    status: list[int] = [0]

    async def body(client: AsyncEtcdClient) -> None:
        async with Session(client, ttl) as session:
            mutex = Mutex(session, name)
            try:
                handle = await asyncio.wait_for(mutex.lock(), timeout_s)
            except TimeoutError:
                click.echo(f"pnyx: error: timed out waiting for lock {name!r} "
                           f"after {timeout_s:g} s", err=True)  # fmt: skip
                status[0] = ETCD_ERROR
                return
            try:
                if command:
                    status[0] = await _run_holding(command, text(handle.key), handle.revision,
                                                   session)  # fmt: skip
                else:
                    if conn.write_out == "json":
                        echo_json({"key": text(handle.key), "token": handle.revision})
                    else:
                        click.echo(text(handle.key))
                        click.echo(str(handle.revision))
                    sys.stdout.flush()
                    await session.lost.wait()
                    click.echo(f"pnyx: error: lost lock {name!r}: the session lease expired",
                               err=True)  # fmt: skip
                    status[0] = ETCD_ERROR
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.shield(mutex.unlock())

    run(conn, body, interruptible=True)
    sys.exit(status[0])


async def _run_holding(command: tuple[str, ...], key: str, token: int, session: Session) -> int:
    env = dict(os.environ, PNYX_LOCK_KEY=key, PNYX_LOCK_TOKEN=str(token), ETCD_LOCK_KEY=key,
               ETCD_LOCK_REV=str(token))  # fmt: skip
    try:
        proc = await asyncio.create_subprocess_exec(*command, env=env)
    except OSError as exc:
        click.echo(f"pnyx: error: cannot run {command[0]!r}: {exc.strerror or exc}", err=True)
        return 127
    waiter = asyncio.ensure_future(proc.wait())
    lost = asyncio.ensure_future(session.lost.wait())
    try:
        await asyncio.wait([waiter, lost], return_when=asyncio.FIRST_COMPLETED)
        if waiter.done():
            return waiter.result()
        click.echo(f"pnyx: error: lost the lock (session lease expired); stopping pid "
                   f"{proc.pid}", err=True)  # fmt: skip
        await _stop(proc)
        return ETCD_ERROR
    except asyncio.CancelledError:
        await asyncio.shield(_stop(proc))
        raise
    finally:
        lost.cancel()


async def _stop(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM the command (by pid), SIGKILL it after a bound."""
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), KILL_AFTER_S)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()

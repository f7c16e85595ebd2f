"""What every etcd-API command shares: endpoint options, running a coroutine, errors, output.

Endpoints come from ``--endpoints``, else the ``ETCDCTL_ENDPOINTS`` environment variable
(what ``pnyx cluster up --protocol etcd`` prints), else ``127.0.0.1:2379``.  Exit status as
``etcdctl``: 0 done, 1 an etcd error or no endpoint reachable (one line on stderr); bad
usage exits 2 (click's and the rest of pnyx's convention; ``etcdctl`` uses 128).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

import click

from pnyx.cli.errors import fail
from pnyx.etcdclient import DEFAULT_ENDPOINT, AsyncEtcdClient, EtcdError, EtcdUnavailable
from pnyx.etcdclient.aio import KeyValue

ETCD_ERROR = 1
"""Exit status for an etcd error or unreachable endpoints (``etcdctl``'s ExitError)."""

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Conn:
    """How to reach the cluster, from the common options."""

    endpoints: list[str]
    dial_timeout_s: float
    command_timeout_s: float
    write_out: str

    def client(self) -> AsyncEtcdClient:
        return AsyncEtcdClient(self.endpoints, timeout_s=self.command_timeout_s,
                               connect_timeout_s=self.dial_timeout_s)  # fmt: skip


def _endpoints(value: str) -> list[str]:
    out = []
    for item in value.split(","):
        item = item.strip().removeprefix("http://")
        if not item:
            continue
        host, sep, port = item.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            fail(f"--endpoints: bad endpoint {item!r}; expected HOST:PORT[,HOST:PORT...]")
        out.append(item)
    if not out:
        fail("--endpoints: no endpoint given")
    return out


def etcd_options(command: F) -> F:
    """The connection options every etcd-API command takes (``conn`` for the callback)."""

    options = [
        click.option("--endpoints", envvar="ETCDCTL_ENDPOINTS", default=DEFAULT_ENDPOINT,
                     show_default=True, show_envvar=True,
                     help="gRPC endpoints HOST:PORT,... (a pnyx etcd cluster or etcd)."),
        click.option("--dial-timeout", type=click.FloatRange(0.05, 600), default=2.0,
                     show_default=True, help="Seconds to wait for a connection."),
        click.option("--command-timeout", type=click.FloatRange(0.05, 3600), default=5.0,
                     show_default=True, help="Seconds each request may take."),
        click.option("-w", "--write-out", type=click.Choice(["simple", "json"]),
                     default="simple", show_default=True, help="Output format."),
    ]  # fmt: skip
    for option in reversed(options):
        command = option(command)
    return command


def conn_of(kwargs: dict[str, Any]) -> Conn:
    """Pop the common options out of a callback's ``kwargs``."""
    return Conn(
        _endpoints(kwargs.pop("endpoints")),
        kwargs.pop("dial_timeout"),
        kwargs.pop("command_timeout"),
        kwargs.pop("write_out"),
    )


def etcd_fail(exc: EtcdError, conn: Conn) -> NoReturn:
    if isinstance(exc, EtcdUnavailable) and exc.message.startswith("cannot reach"):
        message = f"cannot reach the etcd cluster: {exc.message}"
    else:
        message = exc.message
    click.echo(f"pnyx: error: {message}", err=True)
    sys.exit(ETCD_ERROR)


T = TypeVar("T")


def run(conn: Conn, body: Callable[[AsyncEtcdClient], Coroutine[Any, Any, T]],
        *, interruptible: bool = False) -> T | None:  # fmt: skip
    """Run ``body(client)``; etcd errors end the program with status 1.  With
    ``interruptible``, SIGINT / SIGTERM cancel ``body`` (its cleanup runs) and None is
    returned; otherwise they interrupt as usual."""

    async def main() -> T | None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        if interruptible:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, task.cancel)
        client = conn.client()
        try:
            return await body(client)
        except asyncio.CancelledError:
            if not interruptible:
                raise
            return None
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.close(), 5.0)

    try:
        return asyncio.run(main())
    except EtcdError as exc:
        etcd_fail(exc, conn)


# -- output ----------------------------------------------------------------------------------


def text(data: bytes) -> str:
    """Bytes from etcd as text (invalid UTF-8 as backslash escapes)."""
    return data.decode("utf-8", errors="backslashreplace")


def kv_json(kv: KeyValue) -> dict[str, Any]:
    return {
        "key": text(kv.key),
        "value": text(kv.value),
        "create_revision": kv.create_revision,
        "mod_revision": kv.mod_revision,
        "version": kv.version,
        "lease": kv.lease,
    }


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, sort_keys=True))


def parse_lease_id(value: str) -> int:
    """A lease id in hexadecimal, as ``etcdctl`` and ``pnyx lease grant`` print it."""
    try:
        lease = int(value.removeprefix("0x"), 16)
    except ValueError:
        fail(f"bad lease id {value!r}: expected hexadecimal, as `pnyx lease grant` prints")
    if not 0 < lease < 2**63:
        fail(f"bad lease id {value!r}: out of range")
    return lease

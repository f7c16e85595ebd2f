"""``pnyx crdt serve|get|edit|status|partition|heal``: run and use a replicated CRDT document.

Attached to the ``pnyx crdt`` group (``pnyx.cli.crdt_cmd``) by :func:`add_doc_commands`.

``serve`` runs one replica (:class:`pnyx.services.crdt.CrdtDoc`) until SIGTERM/SIGINT,
listening for its peers and for control clients on ``--listen``; it prints one line
``ready REPLICA HOST:PORT origin=ORIGIN`` on stdout once it listens.  The other commands
are control clients of a serving replica at ``ADDRESS`` (HOST:PORT): they print JSON on
stdout; a refused request prints ``pnyx: error: ...`` and exits 1, bad usage exits 2.

Startup failures (a damaged or foreign data directory, a port in use) print one line and
exit 1.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from pnyx.cli.addresses import parse_address
from pnyx.cli.errors import fail
from pnyx.runtime.logs import configure_logging
from pnyx.runtime.transport import Address
from pnyx.services.crdt import (
    EDIT_ACTIONS,
    CrdtDoc,
    DocClient,
    DocConfig,
    DocRequestError,
    StoreError,
)
from pnyx.services.crdt.names import check_replica_name

T = TypeVar("T")
RUNTIME_ERROR = 1
CLIENT_TIMEOUT_S = 30.0

log = logging.getLogger("pnyx.crdt.serve")


def _address(text: str, option: str) -> Address:
    try:
        return parse_address(text)
    except ValueError as exc:
        fail(f"{option}: {exc}")


def _peers(items: tuple[str, ...], me: str) -> dict[str, Address]:
    peers: dict[str, Address] = {}
    for item in items:
        name, sep, address = item.partition("=")
        if not sep:
            fail(f"--peer {item!r}: expected NAME=HOST:PORT, e.g. b=127.0.0.1:7002")
        try:
            check_replica_name(name)
        except ValueError as exc:
            fail(f"--peer {item!r}: {exc}")
        if name == me or name in peers:
            fail(f"--peer {item!r}: replica {name!r} is {'this one' if name == me else 'twice'}")
        peers[name] = _address(address, f"--peer {item!r}")
    return peers


@click.command("serve")
@click.option("--id", "replica", required=True, help="This replica's name (A-Za-z0-9._-).")
@click.option("--listen", required=True, help="HOST:PORT for peers and control clients.")
@click.option("--peer", "peer_items", multiple=True, help="Another replica: NAME=HOST:PORT.")
@click.option("--data-dir", type=click.Path(path_type=Path), required=True)
@click.option("--doc", "doc_id", default="doc", show_default=True, help="Document id.")
@click.option("--sync-interval-ms", type=click.IntRange(1, 60_000), default=100, show_default=True)
@click.option("--no-fsync", is_flag=True, help="Acknowledge edits unsynced (benchmarks only).")
@click.option(
    "--test-partitions",
    is_flag=True,
    help="For fault testing only: accept 'pnyx crdt partition/heal' requests.",
)
@click.option("--log-level", type=click.Choice(["debug", "info", "warning"]), default="info")
def serve(
    replica: str,
    listen: str,
    peer_items: tuple[str, ...],
    data_dir: Path,
    doc_id: str,
    sync_interval_ms: int,
    no_fsync: bool,
    test_partitions: bool,
    log_level: str,
) -> None:
    """Run replica ID of a CRDT document until SIGTERM/SIGINT."""
    try:
        check_replica_name(replica)
        check_replica_name(doc_id, what="document id")
    except ValueError as exc:
        fail(str(exc))
    peers = _peers(peer_items, replica)
    address = _address(listen, "--listen")
    configure_logging(getattr(logging, log_level.upper()))
    config = DocConfig(
        sync_interval_ms=sync_interval_ms,
        fsync=not no_fsync,
        allow_test_partitions=test_partitions,
    )
    if test_partitions:
        log.warning("fault_testing test_partitions=true")
    try:
        doc = CrdtDoc(
            replica, doc_id=doc_id, data_dir=data_dir, listen=address, peers=peers, config=config
        )
    except (StoreError, OSError) as exc:
        _cannot_start(replica, exc)
    asyncio.run(_serve(doc))


def _cannot_start(replica: str, exc: BaseException) -> NoReturn:
    text = str(exc) if not isinstance(exc, OSError) or not exc.strerror else exc.strerror
    click.echo(f"pnyx crdt serve: replica {replica} cannot start: {' '.join(text.split())}",
               err=True)
    sys.exit(RUNTIME_ERROR)


async def _serve(doc: CrdtDoc) -> None:
    try:
        await doc.start()
    except OSError as exc:
        doc.close()
        _cannot_start(doc.replica, exc)
    address = doc.address
    assert address is not None
    click.echo(f"ready {doc.replica} {address[0]}:{address[1]} origin={doc.origin}")
    sys.stdout.flush()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await doc.stop()


def _run_client(address_text: str, action: Callable[[DocClient], Awaitable[T]]) -> T:
    address = _address(address_text, "ADDRESS")

    async def run() -> T:
        try:
            client = await DocClient.connect(address, timeout_s=CLIENT_TIMEOUT_S)
        except (OSError, TimeoutError) as exc:
            fail(f"cannot reach a replica at {address_text}: {exc}", RUNTIME_ERROR)
        try:
            return await action(client)
        except DocRequestError as exc:
            fail(str(exc), RUNTIME_ERROR)
        except (OSError, TimeoutError, ConnectionError) as exc:
            fail(f"replica at {address_text} did not answer: {exc!r}", RUNTIME_ERROR)
        finally:
            await client.close()

    return asyncio.run(run())


def _print_json(value: Any) -> None:
    click.echo(json.dumps(_jsonable(value), sort_keys=True, ensure_ascii=False))


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, dict):
        return {str(_jsonable(k)): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


@click.command("get")
@click.argument("address")
@click.argument("field", required=False, default="")
@click.option("--kind", default="", help="The field's kind, when its name has several.")
def get(address: str, field: str, kind: str) -> None:
    """Print the document (or one FIELD) of the replica at ADDRESS as JSON."""
    _print_json(_run_client(address, lambda c: c.get(field, kind)))


_INT_ARGS: dict[tuple[str, str], tuple[int, ...]] = {
    ("text", "insert"): (0,),
    ("text", "delete"): (0, 1),
    ("pncounter", "increment"): (0,),
    ("pncounter", "decrement"): (0,),
    ("gcounter", "increment"): (0,),
}
"""Arguments that are integers (by position), per kind and action."""


def _edit_args(kind: str, action: str, args: tuple[str, ...], as_json: bool) -> list[Any]:
    if kind not in EDIT_ACTIONS:
        fail(f"unknown kind {kind!r}; kinds: {', '.join(sorted(EDIT_ACTIONS))}")
    if action not in EDIT_ACTIONS[kind]:
        fail(f"{kind} action must be one of {', '.join(sorted(EDIT_ACTIONS[kind]))}: {action!r}")
    ints = _INT_ARGS.get((kind, action), ())
    out: list[Any] = []
    for index, arg in enumerate(args):
        if index in ints:
            try:
                out.append(int(arg))
            except ValueError:
                fail(f"{kind} {action}: argument {index + 1} must be an integer, got {arg!r}")
        elif as_json and kind != "text":
            out.append(_json_or_text(arg))
        else:
            out.append(arg)
    return out


def _json_or_text(arg: str) -> Any:
    """``arg`` parsed as JSON when it is valid JSON (``5``, ``"5"``, ``[1]``), else itself."""
    try:
        return json.loads(arg)
    except ValueError:
        return arg


@click.command("edit", context_settings={"ignore_unknown_options": True})
@click.argument("address")
@click.argument("kind")
@click.argument("field")
@click.argument("action")
@click.argument("args", nargs=-1)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Read each non-text argument as JSON when it is valid JSON (5 is a number, "
    '\'"5"\' a string), else as a string.',
)
def edit(
    address: str, kind: str, field: str, action: str, args: tuple[str, ...], as_json: bool
) -> None:
    """Edit FIELD of KIND on the replica at ADDRESS; prints the field's version once durable.

    \b
    text      insert POS TEXT | delete POS COUNT [EXPECTED]
    pncounter increment N | decrement N      gcounter increment N
    orset / rwset / 2pset  add X | remove X  gset add X
    lww / mvreg  assign X                    ormap assign KEY X | remove KEY
    """
    values = _edit_args(kind, action, args, as_json)
    _print_json(_run_client(address, lambda c: c.edit(kind, field, action, *values)))


@click.command("status")
@click.argument("address")
def status(address: str) -> None:
    """Print the status of the replica at ADDRESS (peers, reachability, versions) as JSON."""
    _print_json(_run_client(address, lambda c: c.status()))


@click.command("partition")
@click.argument("address")
@click.argument("peers", nargs=-1, required=True)
def partition(address: str, peers: tuple[str, ...]) -> None:
    """Fault testing: make the replica at ADDRESS drop all traffic to and from PEERS.

    Only for a replica started with --test-partitions; undone by 'pnyx crdt heal'.
    """
    _print_json(_run_client(address, lambda c: c.partition(*peers)))


@click.command("heal")
@click.argument("address")
def heal(address: str) -> None:
    """Fault testing: end every partition of the replica at ADDRESS."""
    _print_json(_run_client(address, lambda c: c.heal()))


DOC_COMMANDS: tuple[click.Command, ...] = (serve, get, edit, status, partition, heal)


def add_doc_commands(group: click.Group) -> None:
    """Attach the document commands to ``group`` (``pnyx crdt``)."""
    for command in DOC_COMMANDS:
        group.add_command(command)

"""``pnyx txn``: transactions against a ``txn`` cluster (``pnyx cluster up --protocol txn``).

Each command is one transaction (retried on conflict up to ``--retries`` times): ``get``,
``put``, ``delete``, ``scan START [END] [--limit N]`` (one ``[key, value]`` JSON line per
key of ``[START, END)`` in key order; END "" or absent: no upper bound), ``run --file``
(lines ``get K`` / ``put K V`` / ``delete K`` as one transaction), and the bank:
``bank-init N AMOUNT``, ``transfer FROM TO AMOUNT``, ``bank-check`` (one snapshot of every
account: total conserved, no negative balance).  ``--mode`` picks the commit protocol:
``percolator``, ``async-commit`` and ``1pc`` give snapshot isolation, ``2pc`` (read keys
locked in the prepare) serializability.
Exit status 0: done; 1: conflict, no answer, may-or-may-not-have-committed, or a failed
check (one line on stderr); 2: bad usage.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from pnyx.cli.addresses import parse_peers
from pnyx.cli.errors import fail
from pnyx.runtime.transport import Address

T = TypeVar("T")
DEADLINE_S = 10.0
"""How long one command of a transaction may take (routing retries included)."""
PROTOCOL = "txn"


@dataclass(frozen=True)
class _Target:
    members: dict[int, Address]
    ca_file: Path | None
    mode: str
    retries: int


def _members(
    data_dir: Path | None, endpoints: str | None
) -> tuple[dict[int, Address], Path | None]:
    """Members and the CA to verify them with (None: plain TCP)."""
    if endpoints:
        try:
            return parse_peers(endpoints), None
        except ValueError as exc:
            fail(f"--endpoints: {exc}")
    if data_dir is None:
        fail("give --data-dir of a `pnyx cluster up --protocol txn` or --endpoints ID=H:P,...")
    from pnyx.cli.cluster_state import load_state, recorded_members

    data_dir = data_dir.resolve()
    state = load_state(data_dir)
    if state is None:
        fail(f"no cluster in {data_dir}; start one with `pnyx cluster up --protocol txn`")
    if state.get("protocol") != PROTOCOL:
        fail(f"the cluster in {data_dir} runs {state.get('protocol')!r}, not {PROTOCOL!r}")
    members, ca = recorded_members(data_dir, state)
    return members, ca


def _run(target: _Target, fn: Callable[[Any], Awaitable[T]]) -> T:
    """``fn(tx)`` as one transaction (retried on conflict); exits 1 when it did not commit."""
    from pnyx.services.txn import TxnConflict, TxnError, TxnIndeterminate, TxnStore

    options: dict[str, Any] = {"mode": target.mode, "deadline_s": DEADLINE_S}
    if target.ca_file is not None:
        from pnyx.runtime.tls import client_ssl_context

        try:
            options["ssl"] = client_ssl_context(target.ca_file)
        except (ValueError, OSError) as exc:
            fail(f"cannot load the TLS CA {target.ca_file}: {exc}")

    async def go() -> T:
        async with TxnStore(target.members, **options) as store:
            return await store.run(fn, retries=target.retries)

    try:
        return asyncio.run(go())
    except TxnIndeterminate as exc:
        _exit(f"may or may not have committed: {exc}")
    except TxnConflict as exc:
        _exit(f"conflict (after {target.retries} retries): {exc}")
    except (TxnError, OSError) as exc:
        _exit(f"failed: {exc}")


def _key(key: str) -> str:
    """``key`` if usable (a usage error otherwise)."""
    from pnyx.services.txn import TxnError, check_key

    try:
        return check_key(key)
    except TxnError as exc:
        fail(str(exc))


def _exit(message: str) -> NoReturn:
    click.echo(f"pnyx txn: {message}", err=True)
    sys.exit(1)


@click.group()
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Data directory of a `pnyx cluster up --protocol txn`.",
)
@click.option("--endpoints", default=None, help="Members as ID=HOST:PORT,... instead.")
@click.option(
    "--mode",
    type=click.Choice(["percolator", "async-commit", "1pc", "2pc"]),
    default="percolator",
    show_default=True,
    help="Commit protocol: Percolator's two phases, async commit, or 1PC for one range "
    "(snapshot isolation); or 2pc, two-phase commit that also locks the keys read "
    "(serializable).",
)
@click.option(
    "--retries",
    type=click.IntRange(0, 1000),
    default=10,
    show_default=True,
    help="Attempts again after a conflict (jittered exponential back-off).",
)
@click.pass_context
def txn(
    ctx: click.Context, data_dir: Path | None, endpoints: str | None, mode: str, retries: int
) -> None:
    """Transactions over a sharded multi-Raft cluster: snapshot-isolated (Percolator,
    async commit, 1PC) or serializable (--mode 2pc)."""
    members, ca = _members(data_dir, endpoints)
    ctx.obj = _Target(members, ca, mode, retries)


@txn.command()
@click.argument("key")
@click.pass_obj
def get(target: _Target, key: str) -> None:
    """Print KEY's value as JSON (null: absent)."""
    key = _key(key)

    async def fn(tx: Any) -> Any:
        return await tx.get(key)

    click.echo(json.dumps(_run(target, fn)))


@txn.command()
@click.argument("key")
@click.argument("value")
@click.pass_obj
def put(target: _Target, key: str, value: str) -> None:
    """Set KEY to the string VALUE."""
    key = _key(key)

    async def fn(tx: Any) -> None:
        tx.put(key, value)

    _run(target, fn)
    click.echo("OK")


@txn.command()
@click.argument("key")
@click.pass_obj
def delete(target: _Target, key: str) -> None:
    """Remove KEY."""
    key = _key(key)

    async def fn(tx: Any) -> None:
        tx.delete(key)

    _run(target, fn)
    click.echo("OK")


@txn.command()
@click.argument("start")
@click.argument("end", required=False, default="")
@click.option("--limit", default=None, metavar="N", help="List at most N keys (N >= 1).")
@click.pass_obj
def scan(target: _Target, start: str, end: str, limit: str | None) -> None:
    """Print the keys of [START, END) in one snapshot, in key order, as JSON lines
    [key, value] (START "" is the first key; END "" or absent: no upper bound)."""
    from pnyx.services.txn import TxnError, check_scan

    count: int | None = None
    if limit is not None:
        try:
            count = int(limit)
        except ValueError:
            fail(f"--limit must be a number >= 1, got {limit!r}")
    try:
        check_scan(start, end, count)
    except TxnError as exc:
        fail(str(exc))

    async def fn(tx: Any) -> list[tuple[str, Any]]:
        return list(await tx.scan(start, end, count))

    for key, value in _run(target, fn):
        click.echo(json.dumps([key, value]))


def parse_ops(text: str) -> list[tuple[str, ...]]:
    """Lines ``get K`` / ``put K V`` / ``delete K`` (blank lines and ``#`` comments
    skipped); ValueError naming the first bad line."""
    ops: list[tuple[str, ...]] = []
    for number, line in enumerate(text.splitlines(), 1):
        words = line.split(maxsplit=2)
        if not words or words[0].startswith("#"):
            continue
        arity = {"get": 2, "put": 3, "delete": 2}.get(words[0])
        if arity is None or len(words) != arity:
            raise ValueError(f"line {number}: {line.strip()!r} is not get K | put K V | delete K")
        ops.append(tuple(words))
    return ops


@txn.command("run")
@click.option("--file", "path", type=click.Path(path_type=Path, dir_okay=False), required=True)
@click.pass_obj
def run_file(target: _Target, path: Path) -> None:
    """Run the operations of a file as one transaction; print every get as a JSON line."""
    try:
        ops = parse_ops(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        fail(f"--file {path}: {exc}")
    for op in ops:
        _key(op[1])

    async def fn(tx: Any) -> list[Any]:
        out = []
        for op in ops:
            if op[0] == "get":
                out.append(await tx.get(op[1]))
            elif op[0] == "put":
                tx.put(op[1], op[2])
            else:
                tx.delete(op[1])
        return out

    for value in _run(target, fn):
        click.echo(json.dumps(value))


@txn.command("bank-init")
@click.argument("accounts", type=click.IntRange(1, 10_000))
@click.argument("amount", type=click.IntRange(0))
@click.pass_obj
def bank_init_cmd(target: _Target, accounts: int, amount: int) -> None:
    """Create ACCOUNTS accounts holding AMOUNT each."""
    from pnyx.services.txn import bank_init

    _run(target, lambda tx: bank_init(tx, accounts, amount))
    click.echo(f"OK: {accounts} accounts, total {accounts * amount}")


@txn.command()
@click.argument("source", type=click.IntRange(0))
@click.argument("target_account", metavar="TO", type=click.IntRange(0))
@click.argument("amount", type=click.IntRange(1))
@click.pass_obj
def transfer(target: _Target, source: int, target_account: int, amount: int) -> None:
    """Move AMOUNT from account SOURCE to account TO (exit 1 if SOURCE holds less)."""
    from pnyx.services.txn import bank_meta, bank_transfer

    if source == target_account:
        fail(f"transfer from {source} to itself")

    async def fn(tx: Any) -> bool:
        accounts, _ = await bank_meta(tx)
        if max(source, target_account) >= accounts:
            return False
        return await bank_transfer(tx, source, target_account, amount)

    if not _run(target, fn):
        _exit(f"transfer {source} -> {target_account}: no such account or less than {amount}")
    click.echo("OK")


@txn.command("bank-check")
@click.pass_obj
def bank_check(target: _Target) -> None:
    """Read every account in one snapshot: exit 1 unless the total is conserved and no
    balance is negative."""
    from pnyx.services.txn import bank_problem, bank_read

    balances, total = _run(target, bank_read)
    problem = bank_problem(balances, total)
    if problem:
        _exit(f"bank-check: {problem}")
    click.echo(f"OK: {len(balances)} accounts, total {total}, min {min(balances)}")

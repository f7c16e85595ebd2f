"""``pnyx etcd kv put|get|del|watch|txn``: the etcd v3 KV and Watch API from the shell.

Output as ``etcdctl``'s simple format (``-w json``: one JSON object, keys and values as
UTF-8 text).  A txn is read from a file (or ``-``: stdin), either JSON::

    {"compare": [{"key": "k", "target": "value", "op": "=", "value": "v1"}],
     "success": [{"put": {"key": "k", "value": "v2"}}, {"get": {"key": "k"}}],
     "failure": [{"get": {"key": "k"}}]}

(targets ``value version create mod lease``; ops ``put get del``, with ``prefix`` /
``range_end`` / ``lease``), or ``etcdctl``'s text: compares, a blank line, success
requests, a blank line, failure requests::

    value("k") = "v1"

    put k v2

    get k
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shlex
import sys
from pathlib import Path
from typing import Any

import click

from pnyx.cli.errors import fail
from pnyx.cli.etcd_common import (
    conn_of,
    echo_json,
    etcd_options,
    kv_json,
    parse_lease_id,
    run,
    text,
)
from pnyx.etcdclient import (
    AsyncEtcdClient,
    Compare,
    Delete,
    DeleteResult,
    Get,
    Put,
    PutResult,
    RangeResult,
    Txn,
    TxnResult,
)


@click.group()
def kv() -> None:
    """Keys over the etcd v3 API: put, get, del, watch, txn."""


def _range_end(key: str, range_end: str | None, prefix: bool, from_key: bool) -> str | None:
    if prefix and (range_end is not None or from_key):
        fail("--prefix cannot be combined with RANGE_END or --from-key")
    if from_key:
        if range_end is not None:
            fail("--from-key cannot be combined with RANGE_END")
        return "\0"
    return range_end


def _print_kvs(result: RangeResult, keys_only: bool = False, value_only: bool = False) -> None:
    for kv_ in result.kvs:
        if not value_only:
            click.echo(text(kv_.key))
        if not keys_only:
            click.echo(text(kv_.value))


def _range_json(result: RangeResult) -> dict[str, Any]:
    return {"header": {"revision": result.revision}, "kvs": [kv_json(k) for k in result.kvs],
            "count": result.count, "more": result.more}  # fmt: skip


@kv.command()
@click.argument("key")
@click.argument("value", required=False)
@click.option("--lease", default=None, help="Attach the key to this lease (hex id).")
@click.option("--prev-kv", is_flag=True, help="Print the previous key-value pair.")
@etcd_options
def put(key: str, value: str | None, lease: str | None, prev_kv: bool, **common: Any) -> None:
    """Set KEY to VALUE (read from stdin when VALUE is omitted)."""
    conn = conn_of(common)
    data = sys.stdin.read() if value is None else value
    lease_id = parse_lease_id(lease) if lease is not None else 0

    async def body(client: AsyncEtcdClient) -> PutResult:
        return await client.put(key, data, lease=lease_id, prev_kv=prev_kv)

    result = run(conn, body)
    assert result is not None
    if conn.write_out == "json":
        prev = kv_json(result.prev_kv) if result.prev_kv else None
        echo_json({"header": {"revision": result.revision}, "prev_kv": prev})
        return
    click.echo("OK")
    if result.prev_kv is not None:
        click.echo(text(result.prev_kv.key))
        click.echo(text(result.prev_kv.value))


SORT_TARGETS = {"KEY": "key", "CREATE": "create", "MODIFY": "mod", "VALUE": "value",
                "VERSION": "version"}  # fmt: skip


@kv.command()
@click.argument("key")
@click.argument("range_end", required=False)
@click.option("--prefix", is_flag=True, help="Every key starting with KEY.")
@click.option("--from-key", is_flag=True, help="Every key >= KEY.")
@click.option("--limit", type=click.IntRange(0), default=0, help="At most this many keys.")
@click.option("--rev", type=click.IntRange(0), default=0, help="Read at this revision.")
@click.option("--keys-only", is_flag=True)
@click.option("--print-value-only", is_flag=True)
@click.option("--count-only", is_flag=True)
@click.option("--order", type=click.Choice(["ASCEND", "DESCEND"]), default=None)
@click.option("--sort-by", type=click.Choice(list(SORT_TARGETS)), default=None)
@click.option("--serializable", is_flag=True, help="Read the member's local state (may lag).")
@etcd_options
def get(
    key: str,
    range_end: str | None,
    prefix: bool,
    from_key: bool,
    limit: int,
    rev: int,
    keys_only: bool,
    print_value_only: bool,
    count_only: bool,
    order: str | None,
    sort_by: str | None,
    serializable: bool,
    **common: Any,
) -> None:
    """Print KEY (or the keys in [KEY, RANGE_END)) and value(s)."""
    conn = conn_of(common)
    end = _range_end(key, range_end, prefix, from_key)
    sort_order = "descend" if order == "DESCEND" else "ascend" if order or sort_by else "none"

    async def body(client: AsyncEtcdClient) -> RangeResult:
        return await client.range(
            key, end, prefix=prefix, limit=limit, revision=rev,
            sort_order=sort_order,  # type: ignore[arg-type]
            sort_target=SORT_TARGETS[sort_by or "KEY"],  # type: ignore[arg-type]
            keys_only=keys_only, count_only=count_only, serializable=serializable)  # fmt: skip

    result = run(conn, body)
    assert result is not None
    if conn.write_out == "json":
        echo_json(_range_json(result))
    elif count_only:
        click.echo(str(result.count))
    else:
        _print_kvs(result, keys_only, print_value_only)


@kv.command(name="del")
@click.argument("key")
@click.argument("range_end", required=False)
@click.option("--prefix", is_flag=True, help="Every key starting with KEY.")
@click.option("--from-key", is_flag=True, help="Every key >= KEY.")
@click.option("--prev-kv", is_flag=True, help="Print the deleted key-value pairs.")
@etcd_options
def delete(key: str, range_end: str | None, prefix: bool, from_key: bool, prev_kv: bool,
           **common: Any) -> None:  # fmt: skip
    """Delete KEY (or the keys in [KEY, RANGE_END)); print how many were deleted."""
    conn = conn_of(common)
    end = _range_end(key, range_end, prefix, from_key)

    async def body(client: AsyncEtcdClient) -> DeleteResult:
        return await client.delete(key, end, prefix=prefix, prev_kv=prev_kv)

    result = run(conn, body)
    assert result is not None
    if conn.write_out == "json":
        echo_json({"header": {"revision": result.revision}, "deleted": result.deleted,
                   "prev_kvs": [kv_json(k) for k in result.prev_kvs]})  # fmt: skip
        return
    click.echo(str(result.deleted))
    for kv_ in result.prev_kvs:
        click.echo(text(kv_.key))
        click.echo(text(kv_.value))


@kv.command()
@click.argument("key")
@click.argument("range_end", required=False)
@click.option("--prefix", is_flag=True, help="Every key starting with KEY.")
@click.option("--rev", type=click.IntRange(0), default=0,
              help="Start at this revision (history first); 0: from now.")  # fmt: skip
@click.option("--prev-kv", is_flag=True, help="Also print the previous key-value pair.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(0, min_open=True), default=None,
              help="Stop after this many seconds (exit 0).")  # fmt: skip
@click.option("--count", type=click.IntRange(1), default=None,
              help="Stop after this many events (exit 0).")  # fmt: skip
@etcd_options
def watch(key: str, range_end: str | None, prefix: bool, rev: int, prev_kv: bool,
          timeout_s: float | None, count: int | None, **common: Any) -> None:  # fmt: skip
    """Print the events on KEY (or a range / prefix) as they happen, in revision order.

    Runs until --count events, --timeout seconds, or Ctrl-C.  If the member goes away the
    watch continues on another endpoint from the next revision (no gaps, no duplicates)."""
    conn = conn_of(common)
    if prefix and range_end is not None:
        fail("--prefix cannot be combined with RANGE_END")

    async def events(client: AsyncEtcdClient) -> None:
        seen = 0
        async with client.watch(key, range_end, prefix=prefix, start_revision=rev,
                                prev_kv=prev_kv) as w:  # fmt: skip
            async for event in w:
                if conn.write_out == "json":
                    echo_json({"type": event.type, "kv": kv_json(event.kv),
                               "prev_kv": kv_json(event.prev_kv) if event.prev_kv else None})
                else:
                    click.echo(event.type)
                    if event.prev_kv is not None:
                        click.echo(text(event.prev_kv.key))
                        click.echo(text(event.prev_kv.value))
                    click.echo(text(event.kv.key))
                    click.echo(text(event.kv.value))
                sys.stdout.flush()
                seen += 1
                if count is not None and seen >= count:
                    return

    async def body(client: AsyncEtcdClient) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(events(client), timeout_s)

    run(conn, body, interruptible=True)


# -- txn -------------------------------------------------------------------------------------

_COMPARE = re.compile(
    r"""^\s*(?P<target>value|val|version|ver|create|c|mod|m|lease)\s*\(\s*"(?P<key>(?:[^"\\]|\\.)*)"\s*
    (?:,\s*"(?P<end>(?:[^"\\]|\\.)*)"\s*)?\)\s*(?P<op>!=|=|==|<|>)\s*(?P<operand>.*?)\s*$""",
    re.VERBOSE,
)
_TARGET_ALIASES = {"val": "value", "ver": "version", "c": "create", "m": "mod"}


def _operand(target: str, raw: str, where: str) -> str | int:
    if raw.startswith('"') and raw.endswith('"') and len(raw) >= 2:
        raw = json.loads(raw)
    if target == "value":
        return raw
    try:
        return int(raw)
    except ValueError:
        fail(f"txn: {where}: {target} compares with an integer, not {raw!r}")


def _text_compare(line: str, where: str) -> Compare:
    match = _COMPARE.match(line)
    if match is None:
        fail(f"txn: {where}: bad compare {line!r}; e.g. value(\"k\") = \"v\", mod(\"k\") > \"3\"")
    target = _TARGET_ALIASES.get(match["target"], match["target"])
    op = "=" if match["op"] == "==" else match["op"]
    return Compare(json.loads(f'"{match["key"]}"'), target, op,  # type: ignore[arg-type]
                   _operand(target, match["operand"], where),
                   json.loads(f'"{match["end"]}"') if match["end"] is not None else None)


def _text_op(line: str, where: str) -> Get | Put | Delete:
    try:
        words = shlex.split(line)
    except ValueError as exc:
        fail(f"txn: {where}: {exc}")
    if not words:
        fail(f"txn: {where}: empty request")
    verb, args = words[0], words[1:]
    flags = {a for a in args if a.startswith("--")}
    args = [a for a in args if not a.startswith("--")]
    unknown = flags - {"--prefix", "--prev-kv"} - {f for f in flags if f.startswith("--lease=")}
    if unknown:
        fail(f"txn: {where}: unknown option(s) {', '.join(sorted(unknown))}")
    prefix = "--prefix" in flags
    if verb == "put" and len(args) == 2:
        lease = next((parse_lease_id(f.split("=", 1)[1]) for f in flags
                      if f.startswith("--lease=")), 0)  # fmt: skip
        return Put(args[0], args[1], lease=lease, prev_kv="--prev-kv" in flags)
    if verb == "get" and len(args) in (1, 2):
        return Get(args[0], args[1] if len(args) == 2 else None, prefix=prefix)
    if verb in ("del", "delete") and len(args) in (1, 2):
        return Delete(args[0], args[1] if len(args) == 2 else None, prefix=prefix,
                      prev_kv="--prev-kv" in flags)  # fmt: skip
    fail(f"txn: {where}: bad request {line!r}; expected put KEY VALUE, get KEY [END], "
         f"del KEY [END]")  # fmt: skip


def parse_text_txn(spec: str) -> Txn:
    """``etcdctl``'s txn text: compares, blank line, success ops, blank line, failure ops."""
    sections: list[list[tuple[int, str]]] = [[]]
    for number, line in enumerate(spec.splitlines(), 1):
        if line.strip().startswith("#"):
            continue
        if not line.strip():
            if sections[-1]:
                sections.append([])
            continue
        sections[-1].append((number, line))
    if not sections[-1]:
        sections.pop()
    if len(sections) > 3:
        fail("txn: more than three sections (compares, success, failure)")
    while len(sections) < 3:
        sections.append([])
    compares = [_text_compare(line, f"line {n}") for n, line in sections[0]]
    success = [_text_op(line, f"line {n}") for n, line in sections[1]]
    failure = [_text_op(line, f"line {n}") for n, line in sections[2]]
    return Txn(compares, success, failure)


def _json_op(item: Any, where: str) -> Get | Put | Delete | Txn:
    if not isinstance(item, dict) or len(item) != 1:
        fail(f"txn: {where}: expected one of {{\"put\": ...}}, {{\"get\": ...}}, "
             f"{{\"del\": ...}}, {{\"txn\": ...}}")  # fmt: skip
    [(verb, body)] = item.items()
    if not isinstance(body, dict) or not isinstance(body.get("key", ""), str):
        fail(f"txn: {where}: {verb} takes an object with a string \"key\"")
    try:
        if verb == "put":
            lease = body.get("lease", 0)
            lease_id = parse_lease_id(lease) if isinstance(lease, str) else int(lease)
            return Put(body["key"], str(body["value"]), lease=lease_id,
                       prev_kv=bool(body.get("prev_kv", False)))  # fmt: skip
        if verb == "get":
            return Get(body["key"], body.get("range_end"), prefix=bool(body.get("prefix")),
                       limit=int(body.get("limit", 0)))  # fmt: skip
        if verb in ("del", "delete"):
            return Delete(body["key"], body.get("range_end"), prefix=bool(body.get("prefix")),
                          prev_kv=bool(body.get("prev_kv", False)))  # fmt: skip
        if verb == "txn":
            return parse_json_txn(body, where)
    except (KeyError, TypeError, ValueError) as exc:
        fail(f"txn: {where}: bad {verb}: {exc}")
    fail(f"txn: {where}: unknown request {verb!r}; valid: put, get, del, txn")


def parse_json_txn(spec: Any, where: str = "spec") -> Txn:
    """A txn from its JSON form (see the module docstring)."""
    if not isinstance(spec, dict) or set(spec) - {"compare", "success", "failure"}:
        fail(f"txn: {where}: expected an object with compare, success, failure")
    compares = []
    for i, c in enumerate(spec.get("compare", [])):
        here = f"{where}: compare {i + 1}"
        if not isinstance(c, dict) or not {"key", "target", "op"} <= set(c):
            fail(f"txn: {here}: needs key, target, op and value")
        target = c["target"]
        if target not in ("value", "version", "create", "mod", "lease"):
            fail(f"txn: {here}: unknown target {target!r}; valid: value, version, create, mod, "
                 f"lease")  # fmt: skip
        if c["op"] not in ("=", "==", "!=", "<", ">"):
            fail(f"txn: {here}: unknown op {c['op']!r}; valid: = != < >")
        operand = c.get("value", "" if target == "value" else 0)
        if target != "value" and not isinstance(operand, int):
            fail(f"txn: {here}: {target} compares with an integer")
        compares.append(Compare(c["key"], target, "=" if c["op"] == "==" else c["op"],
                                operand if target != "value" else str(operand),
                                c.get("range_end")))  # fmt: skip
    success = [_json_op(o, f"{where}: success {i + 1}") for i, o in
               enumerate(spec.get("success", []))]  # fmt: skip
    failure = [_json_op(o, f"{where}: failure {i + 1}") for i, o in
               enumerate(spec.get("failure", []))]  # fmt: skip
    return Txn(compares, success, failure)


def parse_txn(spec: str) -> Txn:
    """JSON if the spec starts with ``{``, else ``etcdctl``'s text form."""
    if spec.lstrip().startswith("{"):
        try:
            data = json.loads(spec)
        except json.JSONDecodeError as exc:
            fail(f"txn: bad JSON: {exc}")
        return parse_json_txn(data)
    return parse_text_txn(spec)


def _print_txn(result: TxnResult) -> None:
    click.echo("SUCCESS" if result.succeeded else "FAILURE")
    for response in result.responses:
        click.echo("")
        if isinstance(response, PutResult):
            click.echo("OK")
        elif isinstance(response, DeleteResult):
            click.echo(str(response.deleted))
        elif isinstance(response, RangeResult):
            _print_kvs(response)
        else:
            _print_txn(response)


def _txn_json(result: TxnResult) -> dict[str, Any]:
    out: list[Any] = []
    for r in result.responses:
        if isinstance(r, PutResult):
            out.append({"put": {"revision": r.revision}})
        elif isinstance(r, DeleteResult):
            out.append({"del": {"deleted": r.deleted}})
        elif isinstance(r, RangeResult):
            out.append({"get": _range_json(r)})
        else:
            out.append({"txn": _txn_json(r)})
    return {"header": {"revision": result.revision}, "succeeded": result.succeeded,
            "responses": out}  # fmt: skip


@kv.command()
@click.option("-f", "--file", "spec_file", default="-", show_default=True,
              help="The txn spec (JSON or etcdctl's text); '-' reads stdin.")  # fmt: skip
@etcd_options
def txn(spec_file: str, **common: Any) -> None:
    """Run a transaction: if every compare holds, the success requests, else the failure
    requests; prints SUCCESS or FAILURE and each response.

    \b
    The spec, etcdctl's text (compares, blank line, success, blank line, failure):
        value("k") = "v1"          (also version, create, mod, lease; = != < >)
    \b
        put k v2
        get k
    \b
        get k
    or JSON:
        {"compare": [{"key": "k", "target": "value", "op": "=", "value": "v1"}],
         "success": [{"put": {"key": "k", "value": "v2"}}],
         "failure": [{"get": {"key": "k", "prefix": true}}]}"""
    conn = conn_of(common)
    if spec_file == "-":
        spec = sys.stdin.read()
    else:
        try:
            spec = Path(spec_file).read_text(encoding="utf-8")
        except OSError as exc:
            fail(f"txn: cannot read {spec_file}: {exc.strerror or exc}")
    request = parse_txn(spec)

    async def body(client: AsyncEtcdClient) -> TxnResult:
        return await client.txn(request.compare, request.success, request.failure)

    result = run(conn, body)
    assert result is not None
    if conn.write_out == "json":
        echo_json(_txn_json(result))
    else:
        _print_txn(result)


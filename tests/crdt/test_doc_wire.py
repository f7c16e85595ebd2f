"""A served replica (a real process) against malformed input from a peer and from the CLI.

The test plays peer ``b`` of replica ``a`` over raw TCP: every malformed frame (bad version,
oversized, undecodable, a decodable update with bad contents, a message naming another
replica) closes that one connection; the process keeps running, answers its control
clients, and accepts a well-formed update afterwards.  The CLI's get/edit work against it,
and a replica whose data file is damaged refuses to start with a one-line message.
"""

from __future__ import annotations

import asyncio
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pnyx.runtime.framing import encode_frame
from pnyx.runtime.transport import PEER_ROLE, Hello, make_wire_codec
from pnyx.services.crdt import CrdtDoc, DocClient
from pnyx.services.crdt.messages import (
    CLIENT_MESSAGES,
    PEER_MESSAGES,
    DocRequest,
    FieldPayload,
    SyncDigest,
    SyncUpdates,
)
from pnyx.services.crdt.names import group_cluster_id, group_ids
from tests.crdt.test_doc_processes import CLI, Replica, connect, free_ports, start_group

WAIT_S = 60.0
CODEC = make_wire_codec((*PEER_MESSAGES, *CLIENT_MESSAGES))
B_ID = group_ids(["a", "b"])["b"]
CLUSTER = group_cluster_id("notes", ["a", "b"])


@pytest.fixture
def replica_a() -> Iterator[Replica]:
    root = Path(tempfile.mkdtemp(prefix="pnyx-crdt-wire-"))
    port, b_port = free_ports(2)
    replica = Replica("a", {"a": port, "b": b_port}, root / "a")  # the test plays b
    try:
        start_group({"a": replica})
        yield replica
    finally:
        replica.stop()
        shutil.rmtree(root, ignore_errors=True)


def frame(message: object) -> bytes:
    return encode_frame(CODEC.encode(message))  # type: ignore[arg-type]


async def closed_after(replica: Replica, data: bytes) -> bool:
    """Say hello as peer b, send ``data``; True when the replica closes the connection."""
    reader, writer = await asyncio.open_connection(*replica.address)
    try:
        writer.write(frame(Hello(B_ID, PEER_ROLE, CLUSTER)) + data)
        await writer.drain()
        try:
            async with asyncio.timeout(WAIT_S):
                return await reader.read(1) == b""  # the replica never writes on this stream
        except TimeoutError:
            return False
    finally:
        writer.close()


def b_update() -> SyncUpdates:
    b = CrdtDoc("b")
    b.counter("n").increment(7)
    (data,) = b.field("n", "pncounter").updates_since({}, 1 << 20)
    return SyncUpdates("b", [FieldPayload("n", "pncounter", data)])


def test_malformed_frames_close_that_connection_and_the_replica_keeps_serving(
    replica_a: Replica,
) -> None:
    async def scenario() -> None:
        client = await connect(replica_a)
        try:
            await client.edit("text", "body", "insert", 0, "kept")
            bad_inputs = {
                "bad frame version": struct.pack(">I", 3) + b"\x07ab",
                "oversized frame": struct.pack(">I", 1 << 30) + b"\x01",
                "undecodable payload": encode_frame(b"\xc1\xc1\xc1"),
                "update with bad contents": frame(
                    SyncUpdates("b", [FieldPayload("n", "pncounter", b"\x93garbage")])
                ),
                "text update with bad contents": frame(
                    SyncUpdates("b", [FieldPayload("body", "text", b"\x00\x01\x02")])
                ),
                "message naming another replica": frame(SyncDigest("c", [])),
                "digest with a bad key range": frame(SyncDigest("b", [], ["x"], [])),
                "client message on a peer connection": frame(DocRequest(1, "get")),
            }
            for what, data in bad_inputs.items():
                assert await closed_after(replica_a, data), what
                assert replica_a.proc is not None and replica_a.proc.poll() is None, what
            assert await client.get() == {"body": {"text": "kept"}}
            status = await client.status()
            assert status["stats"]["peers_cut_off"] == 4
            assert status["connections_rejected"] == {
                "bad_digest": 1,
                "bad_update": 2,
                "bad_version": 1,
                "oversized": 1,
                "undecodable": 1,
                "wrong_message_type": 1,
                "wrong_replica": 1,
            }
            # a well-formed update from b is still accepted; a field of a kind a does not
            # know (a program's own) is skipped, not a reason to cut b off
            unknown = FieldPayload("x", "nosuchkind", b"\x00")
            update = b_update()
            update = SyncUpdates("b", [unknown, *update.fields])
            _reader, writer = await asyncio.open_connection(*replica_a.address)
            writer.write(frame(Hello(B_ID, PEER_ROLE, CLUSTER)) + frame(update))
            await writer.drain()
            await _wait_value(client, "n", 7)
            writer.close()
            status = await client.status()
            assert status["unknown_kinds"] == {"nosuchkind": 1}
            assert status["stats"]["peers_cut_off"] == 4
        finally:
            await client.close()

    asyncio.run(scenario())


async def _wait_value(client: DocClient, name: str, expected: object) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_S
    while await client.get(name) != expected:
        if loop.time() > deadline:
            raise AssertionError(f"{name} did not become {expected!r}: {await client.get()}")
        await asyncio.sleep(0.05)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=WAIT_S)


def test_cli_edits_reads_and_refuses_clearly(replica_a: Replica) -> None:
    async def up() -> None:
        await (await connect(replica_a)).close()

    asyncio.run(up())
    address = f"127.0.0.1:{replica_a.port}"
    edited = _cli("edit", address, "orset", "tags", "add", "red")
    assert edited.returncode == 0, edited.stderr
    assert '"version": {"a.' in edited.stdout
    assert _cli("edit", address, "pncounter", "n", "increment", "4").returncode == 0
    assert _cli("edit", "--json", address, "ormap", "m", "assign", "k", "[5]").returncode == 0
    got = _cli("get", address)
    assert got.stdout.strip() == (
        '{"m": {"ormap": {"k": [[5]]}}, "n": {"pncounter": 4}, "tags": {"orset": ["red"]}}'
    )
    bad = _cli("edit", address, "pncounter", "n", "increment", "four")
    assert bad.returncode == 2 and "must be an integer, got 'four'" in bad.stderr
    refused = _cli("edit", address, "text", "t", "insert", "5", "x")
    assert refused.returncode == 1 and "insert position 5 outside 0..0" in refused.stderr


def test_a_replica_with_a_damaged_file_refuses_to_start_naming_it() -> None:
    root = Path(tempfile.mkdtemp(prefix="pnyx-crdt-bad-"))
    try:
        doc = CrdtDoc("a", doc_id="notes", data_dir=root / "a")
        doc.counter("n").increment(1)
        doc.compact()
        doc.close()
        snapshot = root / "a" / "snapshot.crdt"
        data = bytearray(snapshot.read_bytes())
        data[-1] ^= 0x01
        snapshot.write_bytes(bytes(data))
        (port,) = free_ports(1)
        result = _cli(
            "serve", "--id", "a", "--listen", f"127.0.0.1:{port}",
            "--data-dir", str(root / "a"), "--doc", "notes",
        )  # fmt: skip
        assert result.returncode == 1
        assert "replica a cannot start" in result.stderr
        assert f"{snapshot} at offset 20: CRC32C mismatch" in result.stderr
        assert snapshot.read_bytes() == bytes(data)
    finally:
        shutil.rmtree(root, ignore_errors=True)


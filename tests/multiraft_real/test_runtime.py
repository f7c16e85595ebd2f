"""Multi-Raft nodes on the real runtime (three in-process runners over loopback TCP, WALs
with fsync in the test's temp dir): ranges split by size under concurrent routed writes,
the range map and leaders as ``pnyx kv ranges`` shows them, one journal append carrying
several groups' writes, and bad frames that close only their own connection."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import msgspec

from pnyx.catalog import get_runnable
from pnyx.core import ClientReply
from pnyx.protocols.multiraft import Batch, GroupRequest, MultiRaftNode, check_range_map
from pnyx.protocols.multiraft.runtime_def import node_factory, runtime_config
from pnyx.protocols.raft import ClientRequest, ReadRequest
from pnyx.runtime import FramedClient, NodeRunner, RunnerConfig, bind_listen_socket, encode_frame
from pnyx.runtime.transport import Hello, TransportConfig
from pnyx.services.multiraft import RangeClient, RangeInfo, spread_key

CLUSTER = "multiraft-test"
SERVICE = get_runnable("multiraft")
CLOSE_BOUND_S = 15.0


@asynccontextmanager
async def _cluster(
    tmp_path: Path,
    split_threshold_keys: int,
    ports: tuple[int, ...] = (0, 0, 0),
    **changes: int,
) -> AsyncIterator[list[NodeRunner]]:
    config = runtime_config(1, split_threshold_keys=split_threshold_keys, **changes)
    socks = [bind_listen_socket(port=port) for port in ports]
    peers = {i + 1: sock.getsockname()[:2] for i, sock in enumerate(socks)}
    runners: list[NodeRunner] = []
    try:
        for i, sock in enumerate(socks):
            cfg = RunnerConfig(
                node_id=i + 1,
                data_dir=tmp_path / f"node-{i + 1}",
                peers=peers,
                seed=i,
                transport=TransportConfig(cluster=CLUSTER),
            )
            runner = NodeRunner.for_protocol(
                SERVICE, cfg, make_node=node_factory(config), listen_sock=sock
            )
            runners.append(runner)
            await runner.start()
        yield runners
    finally:
        for runner in runners:
            await asyncio.wait_for(runner.stop(), 30.0)
        for sock in socks:
            sock.close()


def _members(runners: list[NodeRunner]) -> dict[int, tuple[str, int]]:
    return {r.config.node_id: r.address for r in runners}


async def _writer(members: dict[int, tuple[str, int]], first: int, count: int) -> None:
    client = RangeClient(members, deadline_s=30.0)
    try:
        for n in range(first, first + count):
            await client.put(spread_key(n), f"v{n}")
    finally:
        await client.close()


def test_ranges_split_under_routed_writes_and_the_map_shows_their_leaders(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        async with _cluster(tmp_path, split_threshold_keys=8) as runners:
            members = _members(runners)
            stale = RangeClient(members, deadline_s=30.0)  # caches the one-range map
            client = RangeClient(members, deadline_s=30.0)
            try:
                assert await stale.get(spread_key(0)) == "" and stale.refreshes == 1
                await asyncio.gather(*(_writer(members, 15 * w, 15) for w in range(4)))
                infos = await _settled_ranges(client, at_least=3)
                descs = [i.desc for i in infos]
                assert check_range_map(descs) == ""
                assert len(descs) >= 3, f"60 keys over 8-key ranges split only into {descs}"
                assert max(d.version for d in descs) > 1
                for n in range(60):  # routed by a map that went stale with the splits
                    assert await stale.get(spread_key(n)) == f"v{n}"
                assert stale.refreshes >= 2
            finally:
                await client.close()
                await stale.close()
            nodes = [r.node for r in runners]
            assert all(isinstance(n, MultiRaftNode) for n in nodes)
            ops = sum(n.group_ops_persisted for n in nodes)  # type: ignore[attr-defined]
            appends = sum(n.journal_appends for n in nodes)  # type: ignore[attr-defined]
            assert ops > appends, "no journal append carried more than one group write"
            assert all(r.failure is None for r in runners)

    asyncio.run(scenario())


def test_a_restart_rebuilds_every_range_from_the_journal_checkpoint(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with _cluster(tmp_path, 8, checkpoint_entries=32) as runners:
            members = _members(runners)
            ports = tuple(address[1] for address in members.values())
            await asyncio.gather(*(_writer(members, 10 * w, 10) for w in range(3)))
            client = RangeClient(members, deadline_s=30.0)
            try:
                before = await _settled_ranges(client, at_least=2)
            finally:
                await client.close()
        async with _cluster(tmp_path, 8, ports, checkpoint_entries=32) as runners:
            for runner in runners:
                recovered = runner.wal.recovered()
                assert recovered.snapshot is not None, "no checkpoint was written"
            client = RangeClient(members, deadline_s=30.0)
            try:
                after = await _settled_ranges(client, at_least=len(before))
                assert check_range_map([i.desc for i in after]) == ""
                versions = {i.desc.range_id: i.desc.version for i in after}
                for i in before:  # splits may have gone on; nothing went back
                    assert versions.get(i.desc.range_id, 0) >= i.desc.version, (before, after)
                for n in range(30):
                    assert await client.get(spread_key(n)) == f"v{n}"
            finally:
                await client.close()

    asyncio.run(scenario())


async def _settled_ranges(client: RangeClient, at_least: int) -> list[RangeInfo]:
    """The range map once it has ``at_least`` ranges, each with a leader (bounded)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60.0
    while True:
        infos = await client.ranges()
        settled = len(infos) >= at_least and all(i.leader is not None for i in infos)
        if settled or loop.time() > deadline:
            leaderless = [i.desc.range_id for i in infos if i.leader is None]
            assert not leaderless, f"ranges without a leader: {leaderless}"
            return infos
        await asyncio.sleep(0.1)


async def _closed_by_node(reader: asyncio.StreamReader) -> bool:
    """True when the node closes the connection within the bound (reads to EOF)."""
    try:
        async with asyncio.timeout(CLOSE_BOUND_S):
            while await reader.read(65536):
                pass
    except TimeoutError:
        return False
    except (ConnectionError, OSError):
        pass
    return True


async def _raw_attack(address: tuple[str, int], data: bytes) -> bool:
    reader, writer = await asyncio.open_connection(*address)
    try:
        writer.write(data)
        await writer.drain()
        return await _closed_by_node(reader)
    finally:
        writer.close()


def _frame(msg: object) -> bytes:
    return encode_frame(msgspec.msgpack.encode(msg))


async def _bad_request_closes(address: tuple[str, int], command: object) -> bool:
    client = await FramedClient.connect(address, SERVICE.message_types, timeout_s=10.0)
    try:
        await client.send(GroupRequest(1, ClientRequest(7, command)))
        try:
            reply = await client.recv(CLOSE_BOUND_S)
        except (ConnectionError, OSError):
            return True
        raise AssertionError(f"the node answered {reply!r} instead of closing")
    finally:
        await client.close()


def test_garbage_and_wrong_type_frames_close_that_connection_and_the_node_keeps_serving(
    tmp_path: Path,
) -> None:
    logging.getLogger("pnyx").setLevel(logging.ERROR)  # every refusal logs a warning

    async def scenario() -> None:
        async with _cluster(tmp_path, split_threshold_keys=128) as runners:
            members = _members(runners)
            client = RangeClient(members, deadline_s=30.0)
            try:
                await client.put("before", "1")
                target = runners[0].address
                hello = _frame(Hello(0, "client"))
                attacks = {
                    "garbage bytes": hello + encode_frame(b"\xc1\xff garbage"),
                    "a peer's Batch from a client": hello + _frame(Batch(())),
                    "an unknown tag": hello + _frame(["Nope", 1, 2]),
                    "a peer hello of another cluster": _frame(Hello(2, "peer", "other")),
                    "no hello, raw bytes": b"\x00\x00\x00\x05\x01junk",
                }
                for name, data in attacks.items():
                    assert await _raw_attack(target, data), f"{name}: connection left open"
                bad_commands = {
                    "a command of no known type": ["RangeWrite", 1, 1, ["Nope", "k"]],
                    "a client's split": ["SplitCmd", 1, 1, "m", 9],
                    "an unknown KV kind": ["launch", "k", "v"],
                }
                for name, command in bad_commands.items():
                    assert await _bad_request_closes(target, command), name
                # A request for a range that does not exist is answered, not closed.
                framed = await FramedClient.connect(target, SERVICE.message_types, timeout_s=10)
                try:
                    reply = await framed.request(
                        GroupRequest(2**40, ReadRequest(3, ["get", "k"])), 3, 10.0
                    )
                finally:
                    await framed.close()
                assert isinstance(reply, ClientReply) and reply.error == "range_not_found"
                for runner in runners:
                    assert runner.failure is None and runner.health()["status"] == "ok"
                await client.put("after", "2")
                assert await client.get("before") == "1" and await client.get("after") == "2"
            finally:
                await client.close()

    asyncio.run(scenario())


def test_ranges_is_refused_for_other_protocols(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from pnyx.cli.cluster_cmd import cluster

    data_dir = tmp_path / "c"
    args = ["up", "--protocol", "raft", "--ranges", "4", "--data-dir", str(data_dir)]
    result = CliRunner().invoke(cluster, args)
    assert result.exit_code != 0
    assert "--ranges 4: only for --protocol multiraft" in result.output
    assert not data_dir.exists()

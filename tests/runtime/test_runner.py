"""The runner's contract: persist is durable before any send of the batch; WAL failure stops."""

from __future__ import annotations

import errno
import io
import json
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from pnyx.core import Message, PersistOp
from pnyx.runtime import NodeFailed, WalCorruptError, configure_logging
from pnyx.runtime.datadir import DataDirError, DataDirStamp, claim_data_dir, wal_recorded
from tests.runtime.runtime_helpers import run_async, wait_until
from tests.runtime.runtime_toy import Add, Cluster, Push


def test_persist_completes_before_any_send_of_the_same_batch(tmp_path: Path) -> None:
    async def scenario() -> None:
        cluster = Cluster(tmp_path, 3, tick_ms=1000)  # no re-pushes from ticks
        try:
            await cluster.start_all()
            runner = cluster.runners[1]
            events: list[str] = []
            wal_write, transport_send = runner.wal.write, runner.transport.send

            def write(ops: Sequence[PersistOp]) -> None:
                wal_write(ops)
                events.append(f"durable:{len(ops)}")

            def send(to: int, msg: Message) -> bool:
                events.append(f"send:{to}:{type(msg).__name__}")
                return transport_send(to, msg)

            runner.wal.write = write  # type: ignore[method-assign]
            runner.transport.send = send  # type: ignore[method-assign]
            client = await cluster.client(1)
            try:
                reply = await client.request(Add(1, 3), 1, 5.0)
            finally:
                await client.close()
            assert reply.ok
            first_push = events.index("send:2:Push")
            assert events[0] == "durable:1" and first_push > 0, events
            assert "send:3:Push" in events
        finally:
            await cluster.close()

    run_async(scenario())


def test_a_failing_fsync_stops_the_node_without_sending(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def scenario() -> None:
        cluster = Cluster(tmp_path, 3, tick_ms=1000)
        try:
            await cluster.start_all()
            runner = cluster.runners[1]
            sent: list[Any] = []
            transport_send = runner.transport.send

            def send(to: int, msg: Message) -> bool:
                sent.append(msg)
                return transport_send(to, msg)

            def broken_fdatasync(fd: int) -> None:
                raise OSError(errno.EIO, "injected I/O error")

            runner.transport.send = send  # type: ignore[method-assign]
            monkeypatch.setattr(os, "fdatasync", broken_fdatasync)
            client = await cluster.client(1)
            try:
                await client.send(Add(1, 3))
                await wait_until(lambda: runner.failure is not None, what="node failure")
            finally:
                await client.close()
            assert isinstance(runner.failure, OSError)
            assert not any(isinstance(m, Push) for m in sent), "nothing leaves an unsynced batch"
            assert runner.health()["status"] == "failed"
            with pytest.raises(NodeFailed, match="injected I/O error"):
                await runner.wait_stopped()
        finally:
            monkeypatch.undo()
            await cluster.close()

    run_async(scenario())


def test_a_data_dir_of_another_node_is_refused(tmp_path: Path) -> None:
    async def scenario() -> None:
        cluster = Cluster(tmp_path, 2)
        try:
            await cluster.start_all()
            await cluster.stop(2)
            await cluster.stop(1)
            (tmp_path / "node2").rename(tmp_path / "moved")
            (tmp_path / "node1").rename(tmp_path / "node2")  # node 1's data under node 2
            with pytest.raises(DataDirError, match="belongs to node 1 of cluster"):
                await cluster.start(2)
        finally:
            await cluster.close()

    run_async(scenario())


def test_a_data_dir_of_another_membership_is_refused(tmp_path: Path) -> None:
    """Issue 16 item 6: a 1-node cluster's directory reused by a 3-node cluster."""

    async def scenario() -> None:
        single = Cluster(tmp_path, 1)
        try:
            await single.start_all()
            client = await single.client(1)
            try:
                assert (await client.request(Add(1, 5), 1, 10.0)).ok
            finally:
                await client.close()
        finally:
            await single.close()
        triple = Cluster(tmp_path, 3)
        try:
            with pytest.raises(DataDirError) as info:
                await triple.start(1)
        finally:
            await triple.close()
        text = str(info.value)
        node1 = tmp_path / "node1"
        assert f"data directory {node1} belongs to node 1 of cluster '' with members [1];" in text
        assert "this node is 1 of cluster '' with members [1, 2, 3]" in text
        assert f"rm -r {node1}" in text

    run_async(scenario())


def test_two_runners_on_one_data_dir_the_second_is_refused(tmp_path: Path) -> None:
    """Issue 16 item 8: a second ``pnyx serve`` on a running node's directory ran beside it."""

    async def scenario() -> None:
        cluster = Cluster(tmp_path, 1)
        try:
            first = await cluster.start(1)
            twin = Cluster(tmp_path, 1)  # its own port, the same data directory
            try:
                with pytest.raises(
                    DataDirError, match=rf"in use by another process \(pid {os.getpid()}\)"
                ):
                    await twin.start(1)
            finally:
                await twin.close()
            assert first.health()["status"] == "ok", "the running node is not disturbed"
            client = await cluster.client(1)
            try:
                assert (await client.request(Add(1, 2), 1, 10.0)).ok
            finally:
                await client.close()
            await cluster.stop(1)
            restarted = await cluster.start(1)  # stop() released the lock
            assert restarted.wal.state.last_index == 1
        finally:
            await cluster.close()

    run_async(scenario())


def test_a_deleted_wal_of_a_stamped_data_dir_is_refused(tmp_path: Path) -> None:
    """Issue 16 item 3: deleting ``wal/`` started an empty node although node.json existed."""

    async def scenario() -> None:
        cluster = Cluster(tmp_path, 1)
        try:
            await cluster.start(1)
            await cluster.stop(1)
            shutil.rmtree(tmp_path / "node1" / "wal")
            with pytest.raises(WalCorruptError, match="missing: the data directory records"):
                await cluster.start(1)
        finally:
            await cluster.close()

    run_async(scenario())


def test_a_crash_between_stamp_and_first_segment_still_starts(tmp_path: Path) -> None:
    async def scenario() -> None:
        cluster = Cluster(tmp_path, 1)
        try:
            # What a crash right after stamping leaves: node.json, no WAL yet.
            claim_data_dir(tmp_path / "node1", DataDirStamp(1, (1,), ""))
            assert not wal_recorded(tmp_path / "node1")
            runner = await cluster.start(1)
            assert runner.wal.state.last_index == 0
            assert wal_recorded(tmp_path / "node1"), "the stamp records the WAL once it exists"
        finally:
            await cluster.close()

    run_async(scenario())


def test_json_log_lines_carry_event_and_fields() -> None:
    stream = io.StringIO()
    configure_logging(json_lines=True, node_id=3, stream=stream)
    try:
        logging.getLogger("pnyx.runtime.wal").warning(
            "wal_torn_tail_repaired file=%s offset=%d", "/d/1.wal", 77
        )
    finally:
        logging.getLogger("pnyx").handlers.clear()
        logging.getLogger("pnyx").propagate = True
        logging.getLogger("pnyx").setLevel(logging.NOTSET)
    line = json.loads(stream.getvalue())
    assert line["event"] == "wal_torn_tail_repaired" and line["offset"] == "77"
    assert line["file"] == "/d/1.wal" and line["node"] == 3 and line["level"] == "warning"


def test_stop_is_bounded_when_the_wal_thread_hangs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A WAL close stuck (as in a hung fsync) does not hang ``stop()``; the directory stays
    locked, so no second process writes to it while the stuck thread still might."""
    import threading

    from pnyx.runtime import node_runner

    monkeypatch.setattr(node_runner, "WAL_CLOSE_TIMEOUT_S", 0.5)
    release = threading.Event()

    async def scenario() -> None:
        import asyncio

        cluster = Cluster(tmp_path, 1)
        try:
            runner = await cluster.start(1)
            runner.wal.close = lambda: release.wait(60.0)  # type: ignore[method-assign]
            async with asyncio.timeout(30.0):
                await runner.stop()
            twin = Cluster(tmp_path, 1)
            try:
                with pytest.raises(DataDirError, match="in use by another process"):
                    await twin.start(1)
            finally:
                await twin.close()
        finally:
            release.set()
            await cluster.close()

    run_async(scenario())

"""CrdtDoc's Python API: typed handles, change callbacks, persistence, sync in one event loop.

Several replicas run in one asyncio loop over real loopback TCP (the pnyx transport); a
stand-in field kind (a per-replica max map, defined here) shows that the document syncs and
persists any kind written to the :class:`FieldState` interface.
"""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import ClassVar, Self

import msgspec
import pytest

from pnyx.core import Message
from pnyx.services.crdt import (
    ChangeEvent,
    CrdtDoc,
    DocClient,
    DocConfig,
    DocError,
    DocRequestError,
    FieldState,
)
from pnyx.services.crdt.fields import dominated
from pnyx.services.crdt.kinds import MAX_BUFFERED_DELTAS, ORSetField
from pnyx.services.crdt.messages import FieldVersion, SyncDigest
from pnyx.services.crdt.store import UpdateLog
from pnyx.services.crdt.text_field import TextField

WAIT_S = 60.0
"""Generous bound on convergence (the machine may be loaded)."""
FAST = DocConfig(sync_interval_ms=30, resend_after_ms=200, allow_test_partitions=True)


class MaxMap(FieldState):
    """Stand-in kind: per replica the highest number it bumped to; value = their sum."""

    kind: ClassVar[str] = "maxmap"

    def __init__(self, replica: str) -> None:
        super().__init__(replica)
        self.entries: dict[str, int] = {}

    def bump(self) -> bytes:
        self.entries[self.replica] = self.entries.get(self.replica, 0) + 1
        return msgspec.msgpack.encode({self.replica: self.entries[self.replica]})

    def version(self) -> dict[str, int]:
        return dict(self.entries)

    def updates_since(self, version: Mapping[str, int], max_bytes: int) -> list[bytes]:
        return [] if dominated(self.entries, version) else [self.encode()]

    def apply(self, payload: bytes) -> bool:
        try:
            other = msgspec.msgpack.decode(payload, type=dict[str, int])
        except msgspec.MsgspecError as exc:
            raise ValueError(f"bad maxmap update: {exc}") from exc
        new = {k: v for k, v in other.items() if v > self.entries.get(k, 0)}
        self.entries.update(new)
        return bool(new)

    def encode(self) -> bytes:
        return msgspec.msgpack.encode(self.entries)

    @classmethod
    def decode(cls, replica: str, data: bytes) -> Self:
        field = cls(replica)
        field.apply(data)
        return field

    def value(self) -> int:
        return sum(self.entries.values())


def bump(doc: CrdtDoc, name: str) -> None:
    field = doc.typed_field(name, MaxMap)
    doc.commit_local(name, field, field.bump)


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


def make_group(
    names: list[str], data_root: Path | None = None, config: DocConfig = FAST
) -> dict[str, CrdtDoc]:
    ports = free_ports(len(names))
    addresses = {name: ("127.0.0.1", port) for name, port in zip(names, ports, strict=True)}
    return {
        name: CrdtDoc(
            name,
            doc_id="notes",
            data_dir=None if data_root is None else data_root / name,
            listen=addresses[name],
            peers={n: a for n, a in addresses.items() if n != name},
            config=config,
            kinds=[MaxMap],
        )
        for name in names
    }


def restart(old: CrdtDoc) -> CrdtDoc:
    return CrdtDoc(
        old.replica,
        doc_id=old.doc_id,
        data_dir=old.data_dir,
        listen=old.listen,
        peers=old.peers,
        config=old.config,
        kinds=[MaxMap],
    )


async def wait_for(condition: Callable[[], bool], what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_S
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"not within {WAIT_S} s: {what}")
        await asyncio.sleep(0.02)


def converged(docs: Mapping[str, CrdtDoc]) -> bool:
    values = [d.value() for d in docs.values()]
    return all(v == values[0] for v in values)


async def start_all(docs: Mapping[str, CrdtDoc]) -> None:
    for doc in docs.values():
        await doc.start()


async def stop_all(docs: Mapping[str, CrdtDoc]) -> None:
    for doc in docs.values():
        await doc.stop()


def test_typed_handles_give_each_type_its_operations_and_values() -> None:
    doc = CrdtDoc("a")
    doc.counter("likes").increment(5)
    doc.counter("likes").decrement(2)
    doc.gcounter("views").increment(7)
    tags = doc.set("tags")
    tags.add("x")
    tags.add(3)
    tags.remove("x")
    doc.rwset("rw").add("y")
    doc.gset("g").add(b"z")
    doc.twopset("tp").add("once")
    doc.twopset("tp").remove("once")
    doc.twopset("tp").add("once")  # a removed element never comes back
    doc.register("title").assign("draft")
    doc.register("title").assign("final")
    doc.mvregister("mv").assign(1)
    doc.map("meta").assign("lang", "en")
    doc.map("meta").assign("gone", 1)
    doc.map("meta").remove("gone")
    assert doc.counter("likes").value() == 3
    assert 3 in tags and "x" not in tags
    assert doc.value() == {
        "g": {"gset": [b"z"]},
        "likes": {"pncounter": 3},
        "meta": {"ormap": {"lang": ["en"]}},
        "mv": {"mvreg": [1]},
        "rw": {"rwset": ["y"]},
        "tags": {"orset": [3]},
        "title": {"lww": "final"},
        "tp": {"2pset": []},
        "views": {"gcounter": 7},
    }
    assert doc.counter("likes").version() == {doc.origin: 2}
    doc.close()


def test_bad_edits_are_refused_with_the_offending_value_and_change_nothing() -> None:
    doc = CrdtDoc("a")
    with pytest.raises(ValueError, match=r"5\.5"):
        doc.set("tags").add(5.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="-1"):
        doc.counter("n").increment(-1)
    with pytest.raises(DocError, match="unknown field kind 'nope'"):
        doc.field("x", "nope")
    with pytest.raises(ValueError, match="field name"):
        doc.counter("")
    assert doc.value() == {"n": {"pncounter": 0}, "tags": {"orset": []}}
    assert doc.versions() == {("n", "pncounter"): {}, ("tags", "orset"): {}}
    doc.close()
    with pytest.raises(DocError, match="closed"):
        doc.counter("n").increment(1)


def test_local_callbacks_run_after_the_edit_is_durable(tmp_path: Path) -> None:
    doc = CrdtDoc("a", data_dir=tmp_path)
    log_path = tmp_path / "updates.log"
    seen: list[tuple[ChangeEvent, int]] = []
    size_before = log_path.stat().st_size
    unsubscribe = doc.on_change(lambda e: seen.append((e, log_path.stat().st_size)))
    doc.counter("likes").increment(1)
    assert seen == [(ChangeEvent("likes", "pncounter", True, "a"), seen[0][1])]
    assert seen[0][1] > size_before  # the record was in the file when the callback ran

    def broken(event: ChangeEvent) -> None:
        raise RuntimeError("callback bug")

    doc.on_change(broken)
    doc.set("s").add("x")  # a failing callback does not fail the edit
    unsubscribe()
    doc.set("s").add("y")
    assert [e.field for e, _ in seen] == ["likes", "s"]
    doc.close()
    assert CrdtDoc("a", data_dir=tmp_path).value()["s"] == {"orset": ["x", "y"]}


def test_three_replicas_converge_with_remote_callbacks_partition_and_restart(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        docs = make_group(["a", "b", "c"], tmp_path)
        events: list[ChangeEvent] = []
        docs["c"].on_change(events.append)
        try:
            await start_all(docs)
            docs["a"].counter("n").increment(2)
            docs["b"].counter("n").increment(3)
            bump(docs["a"], "m")
            bump(docs["b"], "m")
            await wait_for(
                lambda: converged(docs) and docs["c"].counter("n").value() == 5, "first sync"
            )
            assert any(e.field == "n" and not e.local and e.origin in "ab" for e in events)
            assert docs["c"].field("m", "maxmap").value() == 2

            sync_a = docs["a"].sync
            assert sync_a is not None
            sync_a.partition(["b", "c"])
            docs["a"].set("s").add("from-a")
            docs["b"].set("s").add("from-b")
            bump(docs["a"], "m")
            await wait_for(lambda: docs["c"].set("s").value() == ["from-b"], "b reaches c")
            assert "from-a" not in docs["c"].set("s").value()
            assert docs["b"].field("m", "maxmap").value() == 2  # a's bump is cut off

            await docs["c"].stop()  # c restarts from its data directory meanwhile
            docs["c"] = restart(docs["c"])
            assert docs["c"].set("s").value() == ["from-b"]
            await docs["c"].start()
            sync_a.heal()
            await wait_for(
                lambda: converged(docs) and docs["b"].field("m", "maxmap").value() == 3, "heal"
            )
            assert docs["a"].set("s").value() == ["from-a", "from-b"]
        finally:
            await stop_all(docs)

    asyncio.run(scenario())


def test_control_client_edits_reads_and_is_refused_clearly(tmp_path: Path) -> None:
    async def scenario() -> None:
        docs = make_group(["a", "b"], tmp_path)
        try:
            await start_all(docs)
            address = docs["a"].address
            assert address is not None
            client = await DocClient.connect(address)
            try:
                reply = await client.edit("orset", "tags", "add", "x")
                assert reply == {"version": {docs["a"].origin: 1}}
                assert (await client.get("tags")) == ["x"]
                assert (await client.get()) == {"tags": {"orset": ["x"]}}
                await client.edit("ormap", "m", "assign", 3, "int key")
                await client.edit("ormap", "m", "assign", b"k", "bytes key")
                assert (await client.get("m")) == [[3, ["int key"]], [b"k", ["bytes key"]]]
                with pytest.raises(DocRequestError, match="action must be one of"):
                    await client.edit("orset", "tags", "explode")
                with pytest.raises(DocRequestError, match="unknown kind 'nope'"):
                    await client.edit("nope", "tags", "add", 1)
                with pytest.raises(DocRequestError, match="takes 1 arguments"):
                    await client.edit("pncounter", "n", "increment")
                with pytest.raises(DocRequestError, match="not peers of 'a'"):
                    await client.partition("zz")
                status = await client.status()
                assert status["replica"] == "a" and status["peers"] == ["b"]
            finally:
                await client.close()
            await wait_for(lambda: docs["b"].set("tags").value() == ["x"], "edit reaches b")
        finally:
            await stop_all(docs)

    asyncio.run(scenario())


def test_a_replica_that_lost_its_data_comes_back_as_a_new_incarnation() -> None:
    async def scenario() -> None:
        docs = make_group(["a", "b"], None)
        try:
            await start_all(docs)
            docs["a"].counter("n").increment(1)
            docs["a"].set("s").add("old")
            await wait_for(lambda: docs["b"].counter("n").value() == 1, "sync")
            old_origin = docs["a"].origin
            await docs["a"].stop()
            docs["a"] = restart(docs["a"])  # in memory: everything it had is gone
            assert docs["a"].origin != old_origin
            docs["a"].counter("n").increment(1)  # edits at once, before catching up
            docs["a"].set("s").add("new")
            await docs["a"].start()
            await wait_for(
                lambda: converged(docs) and docs["b"].counter("n").value() == 2, "converge"
            )
            assert docs["b"].set("s").value() == ["new", "old"]
            assert docs["a"].failed is None
        finally:
            await stop_all(docs)

    asyncio.run(scenario())


def test_a_replica_older_than_what_it_sent_stops_editing() -> None:
    async def scenario() -> None:
        docs = make_group(["a", "b"], None)
        try:
            await start_all(docs)
            sync_a = docs["a"].sync
            assert sync_a is not None
            origin = docs["a"].origin
            digest = SyncDigest("b", [FieldVersion("n", "pncounter", {origin: 3})])
            await sync_a._deliver(2, digest)  # b (node 2) saw a's update 3 that a lacks
            assert "peer 'b' holds update" in str(docs["a"].failed)
            with pytest.raises(DocError, match="restored or copied"):
                docs["a"].counter("n").increment(1)
        finally:
            await stop_all(docs)

    asyncio.run(scenario())


def test_test_partitions_are_refused_unless_enabled() -> None:
    async def scenario() -> None:
        docs = make_group(["a", "b"], None, DocConfig(sync_interval_ms=30))
        try:
            await start_all(docs)
            address = docs["a"].address
            assert address is not None
            client = await DocClient.connect(address)
            try:
                with pytest.raises(DocRequestError, match="test partitions are off"):
                    await client.partition("b")
            finally:
                await client.close()
        finally:
            await stop_all(docs)

    asyncio.run(scenario())


def test_stop_is_bounded_with_unreachable_peers() -> None:
    async def scenario() -> None:
        port, dead = free_ports(2)
        doc = CrdtDoc(
            "a", listen=("127.0.0.1", port), peers={"b": ("127.0.0.1", dead)}, config=FAST
        )
        await doc.start()
        doc.counter("n").increment(1)  # nobody to push to: fine
        async with asyncio.timeout(30):
            await doc.stop()
        assert doc.closed

    asyncio.run(scenario())



def test_text_handle_edits_persist_and_compare_and_delete(tmp_path: Path) -> None:
    doc = CrdtDoc("a", data_dir=tmp_path)
    body = doc.text("body")
    body.insert(0, "hello world")
    body.insert(5, ",")
    body.delete(6, 6, expect=" world")
    with pytest.raises(ValueError, match="text at 0 is 'hel', not 'xyz'"):
        body.delete(0, 3, expect="xyz")
    with pytest.raises(ValueError, match="outside"):
        body.insert(99, "x")
    assert body.value() == "hello," and len(body) == 6
    doc.close()
    again = CrdtDoc("a", data_dir=tmp_path)
    assert again.text("body").value() == "hello,"
    again.text("body").insert(6, " again")
    again.compact()
    again.close()
    assert CrdtDoc("a", data_dir=tmp_path).text("body").value() == "hello, again"


def test_text_updates_are_split_within_the_message_budget() -> None:
    source = TextField("a.1")
    for i in range(200):
        source.text.insert(len(source.text) // 2, f"line {i} " * 5)
    source.text.delete(10, 500)
    whole = source.updates_since({}, 10**9)
    parts = source.updates_since({}, 2000)
    assert len(whole) == 1 and len(parts) > 5
    assert all(len(p) <= 2000 for p in parts)
    copy = TextField("b.1")
    for part in parts:
        copy.apply(part)
    assert copy.value() == source.value() and copy.version() == source.version()


def test_two_replicas_edit_text_concurrently_and_converge() -> None:
    async def scenario() -> None:
        docs = make_group(["a", "b"], None)
        try:
            await start_all(docs)
            docs["a"].text("t").insert(0, "base text")
            await wait_for(lambda: docs["b"].text("t").value() == "base text", "base")
            sync_b = docs["b"].sync
            assert sync_b is not None
            sync_b.partition(["a"])
            docs["a"].text("t").insert(0, "AAA ")
            docs["b"].text("t").insert(9, " BBB")
            docs["b"].text("t").delete(0, 4, expect="base")
            sync_b.heal()
            await wait_for(lambda: converged(docs), "converge")
            assert docs["a"].text("t").value() == "AAA  text BBB"
        finally:
            await stop_all(docs)

    asyncio.run(scenario())


def test_sync_messages_stay_within_a_small_budget_and_big_edits_are_split() -> None:
    small = DocConfig(sync_interval_ms=30, resend_after_ms=200, max_message_bytes=4096,
                      allow_test_partitions=True)

    async def scenario() -> None:
        docs = make_group(["a", "b"], None, small)
        sizes: list[int] = []
        try:
            await start_all(docs)
            sync_a, sync_b = docs["a"].sync, docs["b"].sync
            assert sync_a is not None and sync_b is not None
            real_send = sync_a.transport.send

            def send(to: int, msg: Message) -> bool:
                sizes.append(len(sync_a.transport.frame(msg)))
                return real_send(to, msg)

            sync_a.transport.send = send  # type: ignore[method-assign]
            sync_b.partition(["a"])
            body = docs["a"].text("body")
            body.insert(0, "x" * 20_000)  # one call, several updates
            for i in range(40):
                body.insert(i * 7, f"line {i}\n")
            body.delete(100, 15_000)
            assert body.version()[docs["a"].origin] > 20_000  # ids: one per character
            sync_b.heal()
            await wait_for(lambda: converged(docs), "converge after heal")
            assert max(sizes) <= 4096
            assert sum(1 for s in sizes if s > 2000) >= 3  # the backlog went in several
        finally:
            await stop_all(docs)

    asyncio.run(scenario())


def test_split_digests_still_reveal_every_missing_field() -> None:
    small = DocConfig(sync_interval_ms=30, resend_after_ms=200, max_message_bytes=4096)

    async def scenario() -> None:
        docs = make_group(["a", "b"], None, small)
        try:
            for i in range(150):  # more fields than one digest message holds
                docs["a"].counter(f"f{i:03d}").increment(1)
                docs["b"].counter(f"g{i:03d}").increment(2)
            sync_digests = DocSyncProbe.digests(docs["a"])
            assert len(sync_digests) > 2
            assert sync_digests[0].after == [] and sync_digests[-1].upto == []
            await start_all(docs)
            await wait_for(
                lambda: converged(docs) and len(docs["a"].fields()) == 300, "all fields"
            )
            assert sum(docs["b"].counter(f"f{i:03d}").value() for i in range(150)) == 150
        finally:
            await stop_all(docs)

    asyncio.run(scenario())


class DocSyncProbe:
    """Builds the digests a replica would send (without starting it)."""

    @staticmethod
    def digests(doc: CrdtDoc) -> list[SyncDigest]:
        from pnyx.services.crdt.sync import DocSync

        sync = DocSync(doc, ("127.0.0.1", 0), doc.peers, doc.config)
        return sync._digests()


@pytest.mark.parametrize("seed", range(30))
def test_state_fields_repair_by_buffered_deltas_or_full_state(seed: int) -> None:
    rng = random.Random(seed)
    fields = {n: ORSetField(f"{n}.1") for n in "abc"}
    sent_as: list[str] = []
    for _ in range(rng.randint(1, 400)):
        name = rng.choice("abc")
        field = fields[name]
        payload = _edit_set(field, rng.random() < 0.6, rng.randint(0, 30))
        for other in rng.sample("abc", rng.randint(0, 2)):  # a lossy push
            fields[other].apply(payload)
        if rng.random() < 0.1:  # an anti-entropy answer between two of them
            src, dst = rng.sample("abc", 2)
            for update in fields[src].updates_since(fields[dst].version(), 1 << 20):
                sent_as.append(_decode_tag(update))
                fields[dst].apply(update)
    for src in "abc":  # repair rounds until every pair agrees
        for dst in "abc":
            for update in fields[src].updates_since(fields[dst].version(), 1 << 20):
                sent_as.append(_decode_tag(update))
                fields[dst].apply(update)
    for src in "abc":
        for dst in "abc":
            for update in fields[src].updates_since(fields[dst].version(), 1 << 20):
                fields[dst].apply(update)
    states = [f.state for f in fields.values()]
    assert states[0] == states[1] == states[2]
    assert fields["a"].version() == fields["b"].version() == fields["c"].version()
    if seed == 0:
        assert "d" in sent_as  # repairs by buffered deltas happen


def test_a_peer_behind_the_delta_buffer_gets_the_full_state() -> None:
    source, lagging = ORSetField("a.1"), ORSetField("b.1")
    for i in range(MAX_BUFFERED_DELTAS + 10):
        source.mutate(lambda s, i=i: s.add(i))  # type: ignore[misc]
    (update,) = source.updates_since(lagging.version(), 1 << 20)
    assert _decode_tag(update) == "s"
    lagging.apply(update)
    assert lagging.state == source.state
    source.mutate(lambda s: s.remove(3))
    updates = source.updates_since(lagging.version(), 1 << 20)
    assert [_decode_tag(u) for u in updates] == ["d"]


def _edit_set(field: ORSetField, add: bool, element: int) -> bytes:
    if add:
        return field.mutate(lambda s: s.add(element))
    return field.mutate(lambda s: s.remove(element))


def _decode_tag(update: bytes) -> str:
    tag = msgspec.msgpack.decode(update)[0]
    assert isinstance(tag, str)
    return tag


def test_a_store_failure_stops_edits_and_sync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def scenario() -> None:
        docs = make_group(["a", "b"], tmp_path)
        try:
            await start_all(docs)
            docs["a"].counter("n").increment(1)
            await wait_for(lambda: docs["b"].counter("n").value() == 1, "first edit synced")

            def broken_sync() -> None:
                raise OSError(5, "Input/output error")

            log_a = docs["a"]._log
            assert isinstance(log_a, UpdateLog)
            monkeypatch.setattr(log_a, "sync", broken_sync)  # a's disk fails, not b's
            with pytest.raises(DocError, match="edit not durable"):
                docs["a"].counter("n").increment(5)  # in a's memory, not on its disk
            assert "Input/output error" in str(docs["a"].failed)
            with pytest.raises(DocError, match="stopped accepting edits"):
                docs["a"].counter("n").increment(1)
            sync_b = docs["b"].sync
            assert sync_b is not None
            asked = sync_b.stats.digests_sent
            await wait_for(lambda: sync_b.stats.digests_sent >= asked + 5, "b keeps asking")
            assert docs["b"].counter("n").value() == 1  # the undurable edit never left a
        finally:
            monkeypatch.undo()
            await stop_all(docs)

    asyncio.run(scenario())


def test_a_batch_syncs_once_then_pushes_and_notifies() -> None:
    async def scenario() -> None:
        docs = make_group(["a", "b"], None)
        events: list[ChangeEvent] = []
        docs["a"].on_change(events.append)
        try:
            await start_all(docs)
            await wait_for(lambda: docs["a"].sync is not None and docs["a"].sync.reachable()
                           == ["b"], "connected")
            with docs["a"].batch():
                for i in range(50):
                    docs["a"].counter("n").increment(1)
                    docs["a"].set("s").add(i)
                assert events == []  # not durable yet: nobody is told
                sync_a = docs["a"].sync
                assert sync_a is not None
                heard = sync_a.stats.digests_received
                await wait_for(lambda: sync_a.stats.digests_received >= heard + 3, "b asks")
                assert docs["b"].counter("n").value() == 0  # a answered nothing meanwhile
            assert len(events) == 100 and all(e.local for e in events)
            await wait_for(lambda: docs["b"].counter("n").value() == 50, "pushed after")
            outer, inner = docs["a"].batch(), docs["a"].batch()
            with pytest.raises(DocError, match="not re-entrant"), outer, inner:
                pass
        finally:
            await stop_all(docs)

    asyncio.run(scenario())


def test_a_text_update_that_releases_waiting_ops_is_logged_with_them() -> None:
    source = TextField("a.1")
    first = source.text.insert(0, "hello")
    second = source.text.insert(5, " world")  # depends on the first
    replica = TextField("b.1")
    assert replica.apply(second) is False  # waits for its predecessor: nothing to log
    assert replica.apply(first) is True
    logged = replica.logged_form(first)
    replay = TextField("b.1")
    replay.apply(logged)
    assert replay.value() == replica.value() == "hello world"
    assert replica.apply(first) is False  # a duplicate is not new

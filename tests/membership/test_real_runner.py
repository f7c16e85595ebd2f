"""MemberRunner with a toy member node (independent of SWIM's logic): addresses learned from
gossiped ``addr`` fields, /metrics and /health, a failing user callback is not fatal, a node
asking for storage fails the runner, stop() is bounded."""

from __future__ import annotations

import asyncio
import json

from pnyx.core import Message, Outbox, PutRecord, Rng
from pnyx.protocols.membership.messages import (
    SWIM_TYPES,
    Ack,
    MemberEvent,
    MemberView,
    Ping,
    Update,
)
from pnyx.runtime.member_runner import (
    MemberConfig,
    MemberFailed,
    MemberRunner,
    format_address,
    parse_member_addr,
)
from tests.runtime.runtime_helpers import run_async, wait_until

PING_EVERY_TICKS = 3


class ToyMember(Outbox):
    """Pings every member it knows with everything it knows; never suspects anyone.

    A ``silent`` toy only answers.  ``persist_on_tick`` asks for storage (a bug for a member).
    """

    def __init__(self, node_id: int, addr: str, seeds: dict[int, str], *, silent: bool = False,
                 persist_on_tick: bool = False) -> None:  # fmt: skip
        super().__init__()
        self.node_id = node_id
        self.views = {node_id: MemberView(addr, "alive", 0)}
        self.views.update({m: MemberView(a, "alive", 0) for m, a in seeds.items()})
        self.events: list[MemberEvent] = []
        self.received: list[tuple[int, Message]] = []
        self.silent = silent
        self.persist_on_tick = persist_on_tick
        self.ticks = 0

    def step(self, msg: Message, from_id: int) -> None:
        self.received.append((from_id, msg))
        if isinstance(msg, Ping):
            for update in msg.updates:
                if update.member_id not in self.views:
                    self.views[update.member_id] = MemberView(update.addr, "alive", 0)
                    self.events.append(MemberEvent(update.member_id, update.addr, "alive", 0))
            self._send(from_id, Ack(msg.seq))

    def tick(self) -> None:
        self.ticks += 1
        if self.persist_on_tick:
            self._ready.persist.append(PutRecord("k", 1))
        if self.silent or self.ticks % PING_EVERY_TICKS:
            return
        updates = tuple(Update(m, 0, 0, v.addr) for m, v in sorted(self.views.items()))
        for member in sorted(self.views):
            if member != self.node_id:
                self._send(member, Ping(self.ticks, member, updates))

    def members(self) -> dict[int, MemberView]:
        return dict(self.views)

    def local_health(self) -> int:
        return 3

    def take_events(self) -> list[MemberEvent]:
        events, self.events = self.events, []
        return events

    def stats(self) -> dict[str, int]:
        return {"ticks": self.ticks}


def runner(node_id: int, seeds: dict[int, MemberRunner], **kwargs: object) -> MemberRunner:
    seed_addresses = {m: r.address for m, r in seeds.items()}
    options = {k: kwargs.pop(k) for k in ("silent", "persist_on_tick") if k in kwargs}

    def make(addr: str, rng: Rng) -> ToyMember:
        del rng
        return ToyMember(node_id, addr, {m: format_address(a) for m, a in seed_addresses.items()},
                         **options)  # type: ignore[arg-type]  # fmt: skip

    config = MemberConfig(node_id=node_id, seeds=seed_addresses, tick_ms=5, **kwargs)  # type: ignore[arg-type]
    return MemberRunner(config, make, SWIM_TYPES)


async def http_get(address: tuple[str, int], path: str) -> str:
    reader, writer = await asyncio.open_connection(*address)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    return data.decode()


def test_addresses_come_from_gossip_and_metrics_show_the_members() -> None:
    async def scenario() -> None:
        seen: list[MemberEvent] = []

        def failing_callback(event: MemberEvent) -> None:
            seen.append(event)
            raise RuntimeError("a user's bug")

        r3 = runner(3, {}, silent=True)
        await r3.start()
        r2 = runner(2, {3: r3})
        await r2.start()
        r1 = runner(1, {2: r2}, metrics_port=0)
        r1._on_event = failing_callback
        await r1.start()
        try:
            toy3 = r3.node
            assert isinstance(toy3, ToyMember)
            # 3 never speaks first: 1 can only reach it at the address 2 gossiped
            await wait_until(lambda: any(s == 1 for s, _ in toy3.received), 10, "1 pings 3")
            assert r1.udp.address_of(3) == r3.address
            assert [e.member_id for e in seen] == [3]  # the callback raised; the runner went on
            await wait_until(lambda: r1.udp.stats.datagrams_received >= 4, 10, "more acks at 1")
            metrics_address = r1.metrics_address
            assert metrics_address is not None
            text = await http_get(metrics_address, "/metrics")
            assert 'pnyx_member_state{member="3"} 0.0' in text
            assert 'pnyx_member_incarnation{member="2"} 0.0' in text
            assert 'pnyx_members{state="alive"} 3.0' in text
            assert "pnyx_local_health 3.0" in text
            assert "pnyx_udp_datagrams_received_total" in text
            assert 'pnyx_member_node_stat{name="ticks"}' in text
            health = json.loads((await http_get(metrics_address, "/health")).split("\r\n\r\n")[1])
            assert health["status"] == "ok" and health["members"]["3"]["state"] == "alive"
        finally:
            for r in (r1, r2, r3):
                await r.stop()
        assert not r1.running and r1.failure is None

    run_async(scenario(), timeout_s=60)


def test_a_node_that_asks_for_storage_stops_the_runner() -> None:
    async def scenario() -> None:
        r = runner(1, {}, persist_on_tick=True)
        await r.start()
        try:
            try:
                await asyncio.wait_for(r.wait_stopped(), 30)
            except MemberFailed as exc:
                assert "has no storage" in str(exc)
            else:
                raise AssertionError("the runner kept running")
        finally:
            await r.stop()

    run_async(scenario(), timeout_s=60)


def test_member_addresses_parse_and_format() -> None:
    assert parse_member_addr("127.0.0.1:7946") == ("127.0.0.1", 7946)
    assert parse_member_addr("[::1]:7946") == ("::1", 7946)
    assert format_address(("::1", 7946)) == "[::1]:7946"
    for bad in ("", "127.0.0.1", "host:0", "host:99999", ":7946", "host:x"):
        assert parse_member_addr(bad) is None, bad

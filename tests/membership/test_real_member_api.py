"""The embedding API: three in-process :class:`Member` s over real UDP; on_join, on_suspect,
on_dead, on_alive and a leave fire for the right members; a raising callback is logged and
changes nothing; a coroutine callback runs; stop() is bounded."""

from __future__ import annotations

import asyncio
from collections import defaultdict

import pytest

from pnyx.protocols.membership.config import detection_bound_ticks
from pnyx.services.membership import (
    Callback,
    Member,
    MemberEvent,
    SwimConfig,
    lan_config,
    updates_per_datagram,
)
from tests.runtime.runtime_helpers import run_async, wait_until

TICK_MS = 10
PROBE_MS = 200
CONFIG = lan_config(TICK_MS, probe_ms=PROBE_MS)
BOUND_S = detection_bound_ticks(CONFIG, 3) * TICK_MS / 1000
SLACK_S = 0.5 * BOUND_S + 10.0
"""Allowance for a loaded machine (late timers, a busy event loop)."""
JOIN_TIMEOUT_S = 30.0
ALL = (1, 2, 3)


class Recorder:
    """Callbacks of one member: (kind, member id, state) in the order they fired."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, str]] = []
        self.raise_once = False

    def _make(self, kind: str) -> Callback:
        def record(event: MemberEvent) -> None:
            self.calls.append((kind, event.member_id, event.state))
            if self.raise_once:
                self.raise_once = False
                raise RuntimeError("a bug in the application's callback")

        return record

    async def _on_alive(self, event: MemberEvent) -> None:
        await asyncio.sleep(0)  # a coroutine callback: run as a task
        self.calls.append(("alive", event.member_id, event.state))

    def fired(self, kind: str, member: int, state: str | None = None) -> bool:
        return any(k == kind and m == member and state in (None, s) for k, m, s in self.calls)


def member(node_id: int, recorder: Recorder, seeds: dict[int, tuple[str, int]],
           port: int = 0) -> Member:  # fmt: skip
    return Member(
        node_id, ("127.0.0.1", port), seeds, CONFIG, tick_ms=TICK_MS,
        on_join=recorder._make("join"), on_suspect=recorder._make("suspect"),
        on_dead=recorder._make("dead"), on_alive=recorder._on_alive,
    )  # fmt: skip


def test_callbacks_fire_for_join_suspect_dead_alive_and_leave() -> None:
    async def scenario() -> None:
        rec: dict[int, Recorder] = defaultdict(Recorder)
        rec[1].raise_once = True  # m1's first callback raises: logged, not fatal
        m1 = member(1, rec[1], {})
        members = [m1]
        try:
            await m1.start()
            seeds = {1: m1.address}
            m2, m3 = member(2, rec[2], seeds), member(3, rec[3], seeds)
            members += [m2, m3]
            await m2.start()
            await m3.start()
            await wait_until(
                lambda: all(rec[a].fired("join", b) for a in ALL for b in ALL if a != b),
                JOIN_TIMEOUT_S, "every member's on_join for the two others",
            )  # fmt: skip
            assert m1.callback_errors == 1
            assert {m: v.state for m, v in m2.members().items()} == dict.fromkeys(ALL, "alive")
            assert m1.local_health() >= 0

            port3 = m3.address[1]
            await m3.stop()  # a crash, as far as the others can tell: no leave
            await wait_until(lambda: rec[1].fired("dead", 3, "dead") and rec[2].fired("dead", 3),
                             BOUND_S + SLACK_S, "on_dead(3) at 1 and 2")  # fmt: skip
            assert rec[1].fired("suspect", 3) or rec[2].fired("suspect", 3), "dead after suspect"

            m3 = member(3, rec[3], seeds, port=port3)  # back on the same port
            members.append(m3)
            await m3.start()
            await wait_until(lambda: rec[1].fired("alive", 3) and rec[2].fired("alive", 3),
                             JOIN_TIMEOUT_S, "on_alive(3) (a coroutine) at 1 and 2")  # fmt: skip
            assert m1.members()[3].state == "alive" and m1.members()[3].incarnation > 0

            await m2.leave()
            await wait_until(lambda: rec[1].fired("dead", 2, "left"), JOIN_TIMEOUT_S,
                             "on_dead(2) with state left at 1")  # fmt: skip
            assert not rec[1].fired("suspect", 2), "a graceful leave is not a suspicion"
        finally:
            for m in members:
                await asyncio.wait_for(m.stop(), 30)
        assert not m1.runner.running and m1.runner.failure is None

    run_async(scenario(), timeout_s=240)


def test_bad_addresses_are_refused_with_the_value() -> None:
    with pytest.raises(ValueError, match="seed 2: bad address 'nowhere'"):
        Member(1, ("127.0.0.1", 0), {2: "nowhere"})
    with pytest.raises(ValueError, match="listen: bad address"):
        Member(1, ("127.0.0.1", 70000))
    with pytest.raises(ValueError, match="probe_ms=15 must be at least two ticks"):
        lan_config(10, probe_ms=15)
    assert CONFIG.max_piggyback_updates <= updates_per_datagram()
    lan = SwimConfig.lan(10)
    assert lan.push_pull_chunk_states > updates_per_datagram()  # would not fit: capped
    fitted = Member(1, config=lan).config
    assert fitted.push_pull_chunk_states == updates_per_datagram()
    assert fitted.probe_interval_ticks == lan.probe_interval_ticks

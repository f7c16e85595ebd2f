"""The timestamp oracle: a node driven by hand, the monitor on must-fail histories, and
simulated runs under every fault (the correct oracle passes, mutants are caught)."""

from __future__ import annotations

import random

import pytest

from pnyx.catalog import get_protocol
from pnyx.core import ClientReply, DurableState, HistoryEvent, LogAppend, Send
from pnyx.protocols.raft import RaftConfig
from pnyx.protocols.tso import SetHighWater, TsoNode, TsoRequest, TsoStateMachine, as_command
from pnyx.protocols.tso.spec import TsoMonitor
from pnyx.sim.runner import SimConfig, Simulation, run_sim
from pnyx.sim.schedule import parse_faults

CLIENT = 1000
WINDOW = 100


class _Solo:
    """A one-node TSO group with a disk, driven by hand."""

    def __init__(self, durable: DurableState | None = None) -> None:
        self.durable = durable or DurableState()
        self.node = TsoNode(1, (1,), random.Random(1), self.durable.copy(), RaftConfig(), WINDOW)
        self.sm = TsoStateMachine()
        self.replies: list[ClientReply] = []
        self.marks_persisted: list[int] = []

    def run(self, ticks: int) -> None:
        for _ in range(ticks):
            self.node.tick()
            self.drain()

    def drain(self) -> None:
        for _ in range(100):
            if not self.node.has_ready():
                return
            ready = self.node.ready()
            self.durable.apply_all(ready.persist)
            for op in ready.persist:
                if isinstance(op, LogAppend):
                    for entry in op.entries:
                        if entry.data is not None:
                            self.marks_persisted.append(as_command(entry.data).mark)  # type: ignore[union-attr]
            for item in ready.apply:
                self.sm.apply(item.command)  # type: ignore[union-attr]
            self.replies += [s.msg for s in ready.send if isinstance(s, Send) and s.to == CLIENT]  # type: ignore[misc]
            self.node.advance(ready)

    def ask(self, request_id: int, count: int) -> ClientReply:
        self.node.step(TsoRequest(request_id, count), CLIENT)
        self.drain()
        self.run(5)
        (reply,) = [r for r in self.replies if r.request_id == request_id]
        return reply


def test_a_leader_serves_only_below_its_persisted_mark_and_restarts_above_it() -> None:
    solo = _Solo()
    solo.run(40)  # elected
    first = solo.ask(1, 10)
    assert first.ok and first.result == [1, 10]
    assert solo.marks_persisted == [WINDOW]  # the window was logged before serving from it
    total = 10
    for request_id in range(2, 12):  # use more than one window: extensions are logged
        reply = solo.ask(request_id, 20)
        assert reply.ok and reply.result[0] == total + 1
        total += 20
        assert total <= max(solo.marks_persisted)
    assert len(solo.marks_persisted) >= 3
    reborn = _Solo(solo.durable)  # a crash: the in-memory window is gone
    reborn.run(40)
    again = reborn.ask(1, 5)
    assert again.ok and again.result[0] > max(solo.marks_persisted)


def test_bad_requests_get_a_clear_error() -> None:
    solo = _Solo()
    solo.run(40)
    reply = solo.ask(1, WINDOW)
    assert not reply.ok and f"count {WINDOW} outside [1, {WINDOW // 2}]" in reply.error
    follower = TsoNode(2, (1, 2, 3), random.Random(2), DurableState(), RaftConfig(), WINDOW)
    follower.step(TsoRequest(1, 1), CLIENT)
    sends = follower.ready().send
    assert [s.msg.error for s in sends if isinstance(s.msg, ClientReply)] == ["not_leader"]


def test_state_machine_keeps_the_highest_mark_and_snapshots_it() -> None:
    sm = TsoStateMachine()
    sm.apply(SetHighWater(50, 1))
    sm.apply(["SetHighWater", 30, 2])  # the untyped form read back from a WAL
    assert sm.mark == 50
    twin = TsoStateMachine()
    twin.restore(sm.snapshot())
    assert twin.mark == 50
    with pytest.raises(ValueError, match="not a TSO command"):
        sm.apply({"put": 1})


def _ok(process: int, first: int, count: int, time_ns: int) -> HistoryEvent:
    return HistoryEvent(process, "ok", "ts", (first, count), time=time_ns)


def _invoke(process: int, time_ns: int) -> HistoryEvent:
    return HistoryEvent(process, "invoke", "ts", 1, time=time_ns)


def test_monitor_catches_a_duplicate_timestamp() -> None:
    monitor = TsoMonitor((1, 2, 3))
    assert monitor.observe(_invoke(1, 1)) is None
    assert monitor.observe(_invoke(2, 2)) is None
    assert monitor.observe(_ok(1, 10, 5, 3)) is None
    violation = monitor.observe(_ok(2, 14, 3, 4))  # 14 was in 10..14
    assert violation is not None and violation.prop == "uniqueness"


def test_monitor_catches_a_smaller_timestamp_after_a_larger_one_was_answered() -> None:
    monitor = TsoMonitor((1, 2, 3))
    monitor.observe(_invoke(1, 1))
    monitor.observe(_ok(1, 100, 5, 2))
    monitor.observe(_invoke(2, 3))  # asks after 100..104 was answered
    violation = monitor.observe(_ok(2, 50, 5, 4))
    assert violation is not None and violation.prop == "real-time-order"


def test_monitor_allows_concurrent_requests_in_any_order() -> None:
    monitor = TsoMonitor((1, 2, 3))
    monitor.observe(_invoke(1, 1))
    monitor.observe(_invoke(2, 2))
    assert monitor.observe(_ok(1, 100, 5, 3)) is None
    assert monitor.observe(_ok(2, 50, 5, 4)) is None  # concurrent with the first: fine
    assert monitor.answered == 10


def test_tso_passes_all_faults() -> None:
    spec = get_protocol("tso")
    for seed in range(1, 13):
        sim = Simulation(spec, SimConfig(seed=seed, faults=parse_faults("all")))
        result = sim.run()
        assert result.ok, f"seed {seed}: {result.violation}"
        monitor = sim.monitor
        assert isinstance(monitor, TsoMonitor) and monitor.answered > 0


@pytest.mark.parametrize(
    ("mutant", "prop"), [("no_barrier", "real-time-order"), ("stale_base", "")]
)
def test_tso_mutants_are_caught(mutant: str, prop: str) -> None:
    spec = get_protocol(f"tso+{mutant}")
    for seed in range(1, 31):
        result = run_sim(spec, SimConfig(seed=seed, faults=parse_faults("all")))
        if not result.ok:
            assert result.violation is not None
            assert result.violation.prop in ((prop,) if prop else ("uniqueness", "real-time-order"))
            return
    pytest.fail(f"tso+{mutant} survived 30 seeds")


@pytest.mark.soak
def test_soak_tso_all_faults() -> None:
    spec = get_protocol("tso")
    for seed in range(1, 301):
        result = run_sim(spec, SimConfig(seed=seed, faults=parse_faults("all")))
        assert result.ok, f"seed {seed}: {result.violation}"

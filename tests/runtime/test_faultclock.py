"""The fault clock (``pnyx serve --fault-clock``): rate, forward jumps, backward steps held,
the file re-read when it changes (at most every check interval), bad files logged and
ignored; and a runner that takes its ticks from it."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import pytest

from pnyx.runtime.faultclock import (
    RESET,
    ClockSetting,
    FaultClock,
    parse_setting,
    write_setting,
)
from tests.runtime.runtime_helpers import run_async, wait_until
from tests.runtime.runtime_toy import Cluster

CHECK_S = 0.05


class FakeBase:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s

    def advance(self, seconds: float) -> None:
        self.now_s += seconds


def clock_at(path: Path) -> tuple[FaultClock, FakeBase]:
    base = FakeBase()
    return FaultClock(path, base=base, check_interval_s=CHECK_S), base


def set_file(path: Path, text: str) -> None:
    """Write ``text`` as a new version of the file (a new inode: seen as changed)."""
    tmp = path.with_name(path.name + ".new")
    tmp.write_text(text)
    os.replace(tmp, path)


def test_without_a_file_the_clock_is_the_base_clock(tmp_path: Path) -> None:
    clock, base = clock_at(tmp_path / "missing.clock")
    assert clock.now() == 1000.0
    base.advance(2.5)
    assert clock.now() == 1002.5
    assert clock.now_ms() == 1_002_500
    assert clock.settings_applied == 0 and clock.bad_files == 0


def test_rate_scales_elapsed_time_from_when_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "n1.clock"
    clock, base = clock_at(path)
    base.advance(1.0)
    assert clock.now() == 1001.0
    write_setting(path, ClockSetting(rate=2.0))
    base.advance(CHECK_S)
    assert clock.now() == pytest.approx(1001.0 + CHECK_S)  # read now: no step
    base.advance(1.0)
    assert clock.now() == pytest.approx(1003.0 + CHECK_S)
    write_setting(path, ClockSetting(rate=0.5))
    base.advance(2.0)
    start = clock.now()
    base.advance(2.0)
    assert clock.now() - start == pytest.approx(1.0)
    assert clock.real_s(0.01) == pytest.approx(0.02)


def test_a_forward_jump_is_applied_once(tmp_path: Path) -> None:
    path = tmp_path / "n1.clock"
    clock, base = clock_at(path)
    write_setting(path, ClockSetting(jump_ms=5000))
    assert clock.now() == pytest.approx(1005.0)
    for _ in range(5):  # the same version of the file: not applied again
        base.advance(CHECK_S)
        clock.now()
    assert clock.now() == pytest.approx(1005.0 + 5 * CHECK_S)
    write_setting(path, ClockSetting(jump_ms=5000))  # a new version: applied again
    base.advance(CHECK_S)
    assert clock.now() == pytest.approx(1010.0 + 6 * CHECK_S)
    assert clock.settings_applied == 2


def test_a_backward_step_holds_the_clock_instead_of_running_back(tmp_path: Path) -> None:
    path = tmp_path / "n1.clock"
    clock, base = clock_at(path)
    base.advance(10.0)
    assert clock.now() == 1010.0
    write_setting(path, ClockSetting(jump_ms=-3000))
    base.advance(CHECK_S)
    held = clock.now()
    assert held == pytest.approx(1010.0)
    readings = []
    for _ in range(50):  # 2.5 s of the 3 s hold: it never moves, never goes back
        base.advance(CHECK_S)
        readings.append(clock.now())
    assert readings == [held] * 50
    assert clock.real_s(0.01) == pytest.approx(CHECK_S)  # waiting it out, bounded
    base.advance(1.0)
    assert clock.now() == pytest.approx(1010.0 + 51 * CHECK_S + 1.0 - 3.0)


def test_a_reset_ends_a_hold_and_a_rate_without_a_step(tmp_path: Path) -> None:
    path = tmp_path / "n1.clock"
    clock, base = clock_at(path)
    write_setting(path, ClockSetting(jump_ms=-60_000, rate=3.0))
    clock.now()
    base.advance(1.0)
    held = clock.now()
    assert held == 1000.0
    write_setting(path, RESET)
    base.advance(CHECK_S)
    assert clock.now() == pytest.approx(held)
    base.advance(1.0)
    assert clock.now() == pytest.approx(held + 1.0)


def test_the_file_is_looked_at_no_more_often_than_the_check_interval(tmp_path: Path) -> None:
    path = tmp_path / "n1.clock"
    clock, base = clock_at(path)
    clock.now()
    write_setting(path, ClockSetting(jump_ms=1000))
    base.advance(CHECK_S / 2)
    assert clock.now() == pytest.approx(1000.0 + CHECK_S / 2)  # not looked at yet
    base.advance(CHECK_S / 2)
    assert clock.now() == pytest.approx(1001.0 + CHECK_S)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"offset_ms": 5}', "unknown fields"),
        ('{"rate": -1}', "outside"),
        ('{"rate": "fast"}', "must be a number"),
        ('{"jump_ms": NaN}', "must be finite"),
        ('{"jump_ms": true}', "must be a number"),
        ('{"jump_ms": 1e12}', "beyond"),
    ],
)
def test_bad_settings_are_refused_with_the_reason(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        parse_setting(text)


def test_a_bad_file_is_logged_and_the_last_good_setting_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "n1.clock"
    clock, base = clock_at(path)
    write_setting(path, ClockSetting(rate=2.0))
    clock.now()
    with caplog.at_level(logging.ERROR, logger="pnyx.runtime.faultclock"):
        for text in ("{broken", '{"rate": -5}', ""):
            set_file(path, text)
            base.advance(CHECK_S)
            before = clock.now()
            base.advance(1.0)
            assert clock.now() == pytest.approx(before + 2.0)  # still rate 2
        path.unlink()
        path.mkdir()  # not even a file: read_text fails
        base.advance(CHECK_S)
        clock.now()
    assert clock.setting == ClockSetting(rate=2.0)
    assert clock.bad_files == 4
    errors = [r.getMessage() for r in caplog.records if "fault_clock_bad_file" in r.getMessage()]
    assert len(errors) == 4, errors
    assert "not JSON" in errors[0] and "outside" in errors[1] and "rate=2" in errors[0]
    path.rmdir()
    write_setting(path, ClockSetting(rate=1.0))  # a good file again: taken
    base.advance(CHECK_S)
    clock.now()
    assert clock.setting == ClockSetting(rate=1.0)


# -- a runner on the fault clock -----------------------------------------------------------


def counted_ticks(cluster: Cluster, node_id: int) -> int:
    """Ticks the runner delivered or dropped (a stall): all the clock's ticks so far."""
    node = cluster.node(node_id)
    return node.ticks + sum(missed for missed, _ in node.stalls)


def test_a_runner_ticks_at_its_fault_clock_rate(tmp_path: Path) -> None:
    """Two runners in one event loop (a busy machine slows both alike): the one whose
    clock runs at rate 4 counts about four times the ticks of the one at rate 1."""

    async def scenario() -> None:
        cluster = Cluster(tmp_path, 2, tick_ms=5)
        fast, real = tmp_path / "fast.clock", tmp_path / "real.clock"
        write_setting(fast, ClockSetting(rate=4.0))
        try:
            await cluster.start(1, fault_clock=fast)
            runner = await cluster.start(2, fault_clock=real)
            await wait_until(lambda: counted_ticks(cluster, 2) >= 10, 30.0, "ticking")
            fast0, real0 = counted_ticks(cluster, 1), counted_ticks(cluster, 2)
            await wait_until(lambda: counted_ticks(cluster, 2) >= real0 + 200, 60.0, "1 s")
            ratio = (counted_ticks(cluster, 1) - fast0) / (counted_ticks(cluster, 2) - real0)
            assert 2.5 < ratio < 6.0, ratio
            assert runner.fault_clock is not None and runner.fault_clock.settings_applied == 0
        finally:
            await cluster.close()

    run_async(scenario(), 90.0)


def test_a_forward_jump_is_a_stall_and_a_backward_step_holds_the_ticks(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        cluster = Cluster(tmp_path, 1, tick_ms=5)
        path = tmp_path / "n1.clock"
        try:
            runner = await cluster.start(1, fault_clock=path, max_ticks_per_round=3)
            clock = runner.fault_clock
            assert clock is not None
            node = cluster.node(1)
            await wait_until(lambda: node.ticks >= 3, 30.0, "ticking")
            write_setting(path, ClockSetting(jump_ms=2000))
            await wait_until(lambda: node.stalls != [], 30.0, "the jump")
            missed, _ = node.stalls[0]
            assert missed >= 2000 / 5 - 3 - 1, node.stalls  # 400 ticks: 3 kept, the rest missed
            write_setting(path, ClockSetting(jump_ms=-400))
            await wait_until(lambda: clock.settings_applied == 2, 30.0, "the step back")
            loop = asyncio.get_running_loop()
            began, ticks = loop.time(), counted_ticks(cluster, 1)
            await wait_until(lambda: counted_ticks(cluster, 1) > ticks + 1, 30.0, "ticks again")
            assert loop.time() - began >= 0.3  # held ~0.4 s; never faster than the clock
            assert runner.failure is None
        finally:
            await cluster.close()

    run_async(scenario(), 90.0)

"""The WAL's fault-testing modes: ``lose_unsynced`` (written bytes stay in the process until
their fdatasync, so a crash loses what a power failure would) and the ``lazy_fsync`` mutant
(batches written at once, fdatasynced at most every ``lazy_fsync_ms``).

The crash is simulated in-process (a second WAL opened on the directory while the first
still holds its unsynced bytes) and for real: a child process SIGKILLed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pnyx.core import LogAppend, PutRecord
from pnyx.runtime.wal import WalConfig, WriteAheadLog

LAZY = WalConfig(lose_unsynced=True, lazy_fsync_ms=60_000)
"""Lose-unsynced mode with an fdatasync that never falls due by itself in a test."""


def _records(directory: Path) -> dict[str, object]:
    """What a WAL opened on ``directory`` recovers (the records)."""
    wal = WriteAheadLog(directory)
    try:
        return dict(wal.recovered().records)
    finally:
        wal.close()


def test_written_not_synced_is_gone_after_a_crash_synced_stays(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path, config=LAZY)
    wal.write([PutRecord("a", 1)])
    wal.fsync()
    wal.write([PutRecord("b", 2), LogAppend(1, ("x",))])  # written, not yet fsynced
    assert wal.state.records == {"a": 1, "b": 2}  # acknowledged as far as the node knows
    assert _records(tmp_path) == {"a": 1}  # the crash: "b" never reached the file


def test_without_lose_unsynced_written_bytes_survive_the_process(tmp_path: Path) -> None:
    """The page cache outlives a killed process: this is what ``lose_unsynced`` changes."""
    wal = WriteAheadLog(tmp_path, config=WalConfig(lazy_fsync_ms=60_000))
    opened_fsyncs = wal.stats.fsyncs  # the first segment and the manifest
    wal.write([PutRecord("a", 1)])
    wal.write([PutRecord("b", 2)])
    assert wal.stats.fsyncs == opened_fsyncs  # no batch was fsynced
    assert _records(tmp_path) == {"a": 1, "b": 2}


def test_a_correct_wal_in_lose_unsynced_mode_loses_nothing_written(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path, config=WalConfig(lose_unsynced=True))
    for i in range(5):
        wal.write([PutRecord(f"k{i}", i)])
    wal.append([PutRecord("pending", 0)])  # appended, never synced: not acknowledged
    assert _records(tmp_path) == {f"k{i}": i for i in range(5)}


def test_lazy_fsync_syncs_once_the_interval_passed(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path, config=WalConfig(lose_unsynced=True, lazy_fsync_ms=1))
    wal._last_fsync_s -= 1.0  # the interval has passed: the next sync fsyncs
    wal.write([PutRecord("a", 1)])
    assert _records(tmp_path) == {"a": 1}


def test_close_makes_everything_durable(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path, config=LAZY)
    wal.write([PutRecord("a", 1)])
    wal.close()
    assert _records(tmp_path) == {"a": 1}


def test_rolling_to_a_new_segment_keeps_the_old_one_whole(tmp_path: Path) -> None:
    config = WalConfig(segment_bytes=4096, lose_unsynced=True, lazy_fsync_ms=60_000)
    wal = WriteAheadLog(tmp_path, config=config)
    for i in range(40):
        wal.write([PutRecord(f"k{i}", "x" * 200)])
    assert wal.segment_count > 1
    recovered = _records(tmp_path)
    assert {f"k{i}" for i in range(5)} <= set(recovered)  # closed segments were synced
    assert len(recovered) < 40  # the current segment's tail was not


_CHILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from pnyx.core import PutRecord
    from pnyx.runtime.wal import WalConfig, WriteAheadLog

    lose, lazy_ms = sys.argv[2] == "lose", int(sys.argv[3])
    wal = WriteAheadLog(Path(sys.argv[1]), config=WalConfig(lose_unsynced=lose,
                                                             lazy_fsync_ms=lazy_ms))
    wal.write([PutRecord("synced", 1)])
    wal.fsync()
    wal.write([PutRecord("written", 2)])
    print("ready", flush=True)
    time.sleep(60)
""")


def _killed_child(directory: Path, mode: str, lazy_ms: int) -> dict[str, object]:
    """Run the child until it wrote, SIGKILL it, and recover its WAL."""
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(directory), mode, str(lazy_ms)],
                             stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(10) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
    return _records(directory)


@pytest.mark.parametrize(("mode", "lazy_ms", "expected"), [
    ("lose", 60_000, {"synced": 1}),  # the lazy mutant's unsynced tail is lost
    ("keep", 60_000, {"synced": 1, "written": 2}),  # page cache survives a SIGKILL
    ("lose", 0, {"synced": 1, "written": 2}),  # correct WAL: written means fsynced
])  # fmt: skip
def test_sigkill_of_a_real_process(tmp_path: Path, mode: str, lazy_ms: int,
                                   expected: dict[str, object]) -> None:  # fmt: skip
    assert _killed_child(tmp_path, mode, lazy_ms) == expected

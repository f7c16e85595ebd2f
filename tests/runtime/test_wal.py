"""The write-ahead log: roundtrip, group commit, rotation, checkpoints, torn tails, corruption."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pnyx.core import DurableState, LogAppend, LogCompact, PersistOp, PutRecord, SnapshotSave
from pnyx.runtime.wal import (
    SEGMENT_MAGIC,
    PersistCodec,
    WalConfig,
    WalCorruptError,
    WalDecodeError,
    WriteAheadLog,
)


class Entry(msgspec.Struct, frozen=True, array_like=True):
    term: int
    command: Any = None


class HardState(msgspec.Struct, frozen=True):
    term: int
    vote: int | None


CODEC = PersistCodec(entry_type=Entry, record_types={"hard": HardState})


def entries(first: int, count: int, term: int = 1, size: int = 8) -> tuple[Entry, ...]:
    return tuple(Entry(term, f"cmd-{first + i}-" + "x" * size) for i in range(count))


def fold(ops: list[PersistOp]) -> DurableState:
    state = DurableState()
    state.apply_all(ops)
    return state


def assert_same(got: DurableState, want: DurableState) -> None:
    assert got.records == want.records
    assert got.log_start == want.log_start
    assert got.log == want.log
    assert got.snapshot == want.snapshot


def segments(wal_dir: Path) -> list[Path]:
    return sorted(wal_dir.glob("*.wal"))


def open_wal(path: Path, **config: Any) -> WriteAheadLog:
    return WriteAheadLog(path, CODEC, WalConfig(**config))


def test_roundtrip_rebuilds_the_same_durable_state(tmp_path: Path) -> None:
    ops: list[PersistOp] = [
        PutRecord("hard", HardState(3, 2)),
        LogAppend(1, entries(1, 5)),
        LogAppend(4, entries(4, 3, term=2)),  # overwrites a suffix
        PutRecord("commit", 5),
        LogCompact(2),
    ]
    wal = open_wal(tmp_path)
    wal.write(ops[:2])
    wal.write(ops[2:])
    wal.close()
    reopened = open_wal(tmp_path)
    got = reopened.recovered()
    assert_same(got, fold(ops))
    assert isinstance(got.records["hard"], HardState)  # typed record values survive
    assert all(isinstance(e, Entry) for e in got.log)  # typed entries survive
    assert got.last_index == 6 and got.log_start == 3
    reopened.close()


def test_wrong_entry_type_is_a_clear_decode_error(tmp_path: Path) -> None:
    wal = open_wal(tmp_path)
    wal.write([LogAppend(1, ("not", "entries"))])
    wal.close()
    with pytest.raises(WalDecodeError, match=r"0000000000000001\.wal at byte offset"):
        open_wal(tmp_path)


def test_group_commit_is_one_fdatasync_per_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wal = open_wal(tmp_path)
    calls: list[int] = []
    real = os.fdatasync

    def counting(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fdatasync", counting)
    batch: list[PersistOp] = [LogAppend(i, entries(i, 1)) for i in range(1, 201)]
    batch.append(PutRecord("hard", HardState(1, 1)))
    wal.write(batch)
    assert len(calls) == 1, f"201 records should cost one fdatasync, took {len(calls)}"
    wal.write([LogAppend(201, entries(201, 1))])
    assert len(calls) == 2
    wal.sync()  # nothing pending: no fsync at all
    assert len(calls) == 2
    assert wal.stats.records >= 202
    wal.close()
    assert_same(open_wal(tmp_path).recovered(), fold([*batch, LogAppend(201, entries(201, 1))]))


def test_segments_rotate_and_a_compaction_checkpoint_deletes_old_ones(tmp_path: Path) -> None:
    wal = open_wal(tmp_path, segment_bytes=4096)
    ops: list[PersistOp] = []
    for i in range(1, 401):
        op = LogAppend(i, entries(i, 1, size=40))
        ops.append(op)
        wal.write([op])
    # The whole log is still needed, so no checkpoint can reclaim space yet.
    assert len(segments(tmp_path)) > 5
    assert wal.stats.checkpoints == 0
    compaction: list[PersistOp] = [
        SnapshotSave(395, 1, b"state-through-395"),
        LogCompact(395),
        PutRecord("hard", HardState(1, None)),
    ]
    ops += compaction
    wal.write(compaction)
    assert wal.stats.checkpoints == 1
    assert len(segments(tmp_path)) == 1, "a checkpoint makes every older segment unnecessary"
    tail = [LogAppend(401, entries(401, 3))]
    ops += tail
    wal.write(tail)
    wal.close()
    got = open_wal(tmp_path, segment_bytes=4096).recovered()
    assert_same(got, fold(ops))
    assert got.log_start == 396 and got.last_index == 403
    assert got.snapshot is not None and got.snapshot.data == b"state-through-395"


def test_put_record_churn_is_reclaimed_by_checkpoints(tmp_path: Path) -> None:
    wal = open_wal(tmp_path, segment_bytes=2048)
    for i in range(2000):
        wal.write([PutRecord("hard", HardState(i, i % 3))])
    assert wal.stats.checkpoints > 0
    assert len(segments(tmp_path)) <= 2
    wal.close()
    assert open_wal(tmp_path).recovered().records == {"hard": HardState(1999, 1999 % 3)}


def test_torn_tail_is_truncated_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    wal = open_wal(tmp_path)
    durable: list[PersistOp] = [LogAppend(1, entries(1, 10)), PutRecord("commit", 10)]
    wal.write(durable)
    wal.write([LogAppend(11, entries(11, 5, size=200))])  # the write a crash interrupts
    wal.close()
    path = segments(tmp_path)[-1]
    size = path.stat().st_size
    os.truncate(path, size - 100)  # cut the last record in the middle
    with caplog.at_level(logging.WARNING, logger="pnyx.runtime.wal"):
        wal = open_wal(tmp_path)
    assert "wal_torn_tail_repaired" in caplog.text and str(path) in caplog.text
    assert wal.stats.torn_tail_repairs == 1
    assert_same(wal.recovered(), fold(durable))
    repaired = path.stat().st_size
    assert repaired < size - 100, "the torn record must be cut off the file"
    more: list[PersistOp] = [LogAppend(11, entries(11, 2))]
    wal.write(more)  # the repaired log keeps working
    wal.close()
    assert_same(open_wal(tmp_path).recovered(), fold(durable + more))


def test_zero_filled_tail_is_treated_as_torn(tmp_path: Path) -> None:
    wal = open_wal(tmp_path)
    ops: list[PersistOp] = [LogAppend(1, entries(1, 3))]
    wal.write(ops)
    wal.close()
    path = segments(tmp_path)[-1]
    with open(path, "ab") as handle:
        handle.write(b"\0" * 1500)  # blocks allocated but never written before a crash
    reopened = open_wal(tmp_path)
    assert reopened.stats.torn_tail_repairs == 1
    assert_same(reopened.recovered(), fold(ops))


def record_offsets(path: Path) -> list[int]:
    """Byte offsets of the records in a segment (parsed independently of the WAL)."""
    data = path.read_bytes()
    offsets, offset = [], len(SEGMENT_MAGIC)
    while offset < len(data):
        offsets.append(offset)
        offset += 12 + int.from_bytes(data[offset : offset + 4], "little")
    return offsets


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("where", ["body", "length"])
def test_flipped_byte_in_the_middle_names_file_and_offset(tmp_path: Path, where: str) -> None:
    wal = open_wal(tmp_path)
    for i in range(1, 11):
        wal.write([LogAppend(i, entries(i, 1, size=30))])
    wal.close()
    path = segments(tmp_path)[-1]
    victim = record_offsets(path)[5]
    flip_byte(path, victim + (20 if where == "body" else 1))
    with pytest.raises(WalCorruptError) as info:
        open_wal(tmp_path)
    err = info.value
    assert err.path == path and err.offset == victim
    text = str(err)
    assert str(path) in text and f"byte offset {victim}" in text
    assert "empty data directory" in text and "catches up from its peers" in text
    assert path.stat().st_size > victim + 100, "a corrupt middle must never be truncated"


def test_damage_in_an_older_segment_is_corruption_even_at_its_end(tmp_path: Path) -> None:
    wal = open_wal(tmp_path, segment_bytes=1024)
    for i in range(1, 60):
        wal.write([LogAppend(i, entries(i, 1, size=30))])
    wal.close()
    older = segments(tmp_path)[0]
    os.truncate(older, older.stat().st_size - 5)
    with pytest.raises(WalCorruptError, match=str(older)):
        open_wal(tmp_path, segment_bytes=1024)


def test_snapshot_plus_wal_restores_the_same_state(tmp_path: Path) -> None:
    snap = SnapshotSave(20, 3, b"\x00sm-state" * 100, meta={"members": [1, 2, 3]})
    ops: list[PersistOp] = [
        PutRecord("hard", HardState(3, 1)),
        LogAppend(1, entries(1, 25, term=3)),
        snap,
        LogCompact(20),
        LogAppend(26, entries(26, 4, term=3)),
    ]
    wal = open_wal(tmp_path)
    wal.write(ops[:3])
    wal.write(ops[3:])
    wal.close()
    snap_files = list((tmp_path / "snapshots").glob("*.snap"))
    assert len(snap_files) == 1, "snapshot data lives in its own file"
    got = open_wal(tmp_path).recovered()
    assert_same(got, fold(ops))
    assert got.snapshot == snap and got.log_start == 21 and got.last_index == 29
    # A newer snapshot replaces the file; the old one is deleted once the new ref is durable.
    wal = open_wal(tmp_path)
    wal.write([SnapshotSave(29, 3, b"newer"), LogCompact(29)])
    wal.close()
    assert [p.name for p in (tmp_path / "snapshots").glob("*.snap")] != [snap_files[0].name]
    assert len(list((tmp_path / "snapshots").glob("*.snap"))) == 1
    got = open_wal(tmp_path).recovered()
    assert got.snapshot is not None and got.snapshot.data == b"newer" and got.log == []


def test_corrupt_snapshot_file_is_a_clear_error(tmp_path: Path) -> None:
    wal = open_wal(tmp_path)
    wal.write([SnapshotSave(5, 1, b"snapshot-bytes" * 10), LogCompact(5)])
    wal.close()
    (snap_file,) = (tmp_path / "snapshots").glob("*.snap")
    flip_byte(snap_file, 40)
    with pytest.raises(WalCorruptError, match=r"CRC32C mismatch") as info:
        open_wal(tmp_path)
    assert snap_file.name in str(info.value)


def test_orphan_snapshot_and_temp_files_are_cleaned_up(tmp_path: Path) -> None:
    wal = open_wal(tmp_path)
    wal.write([LogAppend(1, entries(1, 2))])
    wal.close()
    snap_dir = tmp_path / "snapshots"
    (snap_dir / "00000000000000000009-00000000000000000001-deadbeef.snap").write_bytes(b"x")
    (snap_dir / "half-written.snap.tmp").write_bytes(b"x")
    (tmp_path / "0000000000000002.wal.tmp").write_bytes(b"x")
    open_wal(tmp_path).close()
    assert list(snap_dir.iterdir()) == []
    assert [p.name for p in tmp_path.glob("*.tmp")] == []


def test_oversized_append_is_split_into_equivalent_records(tmp_path: Path) -> None:
    wal = open_wal(tmp_path, max_record_bytes=4096)
    ops: list[PersistOp] = [LogAppend(1, entries(1, 300, size=50))]
    wal.write(ops)
    assert wal.stats.records > 5
    with pytest.raises(ValueError, match="max_record_bytes"):
        wal.write([LogAppend(301, (Entry(1, "y" * 5000),))])
    wal.close()
    assert_same(open_wal(tmp_path, max_record_bytes=4096).recovered(), fold(ops))


@st.composite
def op_batches(draw: st.DrawFn) -> list[list[PersistOp]]:
    """Valid op sequences (no log gaps), split into batches."""
    state = DurableState()
    batches: list[list[PersistOp]] = []
    for _ in range(draw(st.integers(1, 25))):
        batch: list[PersistOp] = []
        for _ in range(draw(st.integers(1, 6))):
            kind = draw(st.sampled_from(["append", "append", "put", "compact", "snap"]))
            op: PersistOp
            if kind == "append":
                first = draw(st.integers(max(1, state.log_start - 2), state.last_index + 1))
                op = LogAppend(first, entries(first, draw(st.integers(0, 8)), size=20))
            elif kind == "put":
                op = PutRecord(
                    draw(st.sampled_from(["a", "b"])), draw(st.integers(-(2**63), 2**63))
                )
            elif kind == "compact":
                op = LogCompact(draw(st.integers(0, state.last_index)))
            else:
                op = SnapshotSave(draw(st.integers(0, state.last_index)), 1, b"s" * 30)
            state.apply(op)
            batch.append(op)
        batches.append(batch)
    return batches


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batches=op_batches(), segment_bytes=st.sampled_from([256, 1024, 1 << 20]))
def test_any_op_sequence_recovers_to_the_fold(
    tmp_path_factory: pytest.TempPathFactory, batches: list[list[PersistOp]], segment_bytes: int
) -> None:
    path = tmp_path_factory.mktemp("wal")
    wal = open_wal(path, segment_bytes=segment_bytes)
    for batch in batches:
        wal.write(batch)
    wal.close()
    want = fold([op for batch in batches for op in batch])
    assert_same(open_wal(path, segment_bytes=segment_bytes).recovered(), want)


def test_segments_left_over_from_an_interrupted_cleanup_are_ignored(tmp_path: Path) -> None:
    wal = open_wal(tmp_path, segment_bytes=1024)
    ops: list[PersistOp] = [LogAppend(i, entries(i, 1, size=30)) for i in range(1, 80)]
    for op in ops:
        wal.write([op])
    saved = {p.name: p.read_bytes() for p in segments(tmp_path)}
    compaction: list[PersistOp] = [SnapshotSave(79, 1, b"s"), LogCompact(79)]
    wal.write(compaction)
    wal.close()
    assert wal.stats.checkpoints == 1
    for name, data in saved.items():  # as if the crash hit before the old files were deleted
        (tmp_path / name).write_bytes(data)
    reopened = open_wal(tmp_path, segment_bytes=1024)
    assert_same(reopened.recovered(), fold(ops + compaction))
    assert len(segments(tmp_path)) == 1


def test_a_missing_middle_segment_is_corruption(tmp_path: Path) -> None:
    wal = open_wal(tmp_path, segment_bytes=1024)
    for i in range(1, 80):
        wal.write([LogAppend(i, entries(i, 1, size=30))])
    wal.close()
    middle = segments(tmp_path)[2]
    middle.unlink()
    with pytest.raises(WalCorruptError, match=f"segment {int(middle.stem)} is missing"):
        open_wal(tmp_path, segment_bytes=1024)


def test_a_superseded_snapshot_file_is_not_kept(tmp_path: Path) -> None:
    wal = open_wal(tmp_path)
    wal.write([SnapshotSave(10, 2, b"ten"), LogCompact(10)])
    wal.write([SnapshotSave(5, 1, b"older, ignored by the fold")])
    snap_dir = tmp_path / "snapshots"
    assert len(list(snap_dir.glob("*.snap"))) == 1
    wal.close()
    got = open_wal(tmp_path).recovered()
    assert got.snapshot is not None and got.snapshot.data == b"ten"

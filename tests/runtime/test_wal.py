"""The write-ahead log: roundtrip, group commit, rotation, checkpoints, torn tails, corruption."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pnyx.core import DurableState, LogAppend, LogCompact, PersistOp, PutRecord, SnapshotSave
from pnyx.runtime.wal import (
    KIND_OP,
    MANIFEST_FILE,
    RECORD_MAGIC,
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


@dataclass(frozen=True)
class Span:
    """Where one record is in a segment file, parsed independently of the WAL code."""

    offset: int
    end: int
    lsn: int
    batch_end: bool


SEGMENT_HEADER_BYTES = 40
RECORD_HEADER_BYTES = 32


def record_spans(path: Path) -> list[Span]:
    """The records of a segment, per the format in docs/RUNTIME.md."""
    data = path.read_bytes()
    spans, offset = [], SEGMENT_HEADER_BYTES
    while data[offset : offset + 4] == RECORD_MAGIC:
        length = int.from_bytes(data[offset + 4 : offset + 8], "little")
        lsn = int.from_bytes(data[offset + 8 : offset + 16], "little")
        flags = int.from_bytes(data[offset + 20 : offset + 22], "little")
        end = offset + RECORD_HEADER_BYTES + length
        spans.append(Span(offset, end, lsn, bool(flags & 1)))
        offset = end
    return spans


def record_offsets(path: Path) -> list[int]:
    return [span.offset for span in record_spans(path)]


def zero_range(path: Path, start: int, end: int) -> None:
    with open(path, "r+b") as handle:
        handle.seek(start)
        handle.write(bytes(end - start))


def flip_byte(path: Path, offset: int) -> None:
    """Flip one bit of the byte at ``offset``, in place (segments are 64 MiB files)."""
    with open(path, "r+b") as handle:
        handle.seek(offset)
        old = handle.read(1)
        if len(old) != 1:
            raise ValueError(f"offset {offset} is past the end of {path}")
        handle.seek(offset)
        handle.write(bytes([old[0] ^ 0x40]))


def test_a_torn_last_batch_is_dropped_whole_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    wal = open_wal(tmp_path)
    durable: list[PersistOp] = [LogAppend(1, entries(1, 10)), PutRecord("commit", 10)]
    wal.write(durable)
    # The batch a crash interrupts: its first record reached the disk, its second did not.
    wal.write([LogAppend(11, entries(11, 5, size=200)), PutRecord("hard", HardState(2, 1))])
    wal.close()
    path = segments(tmp_path)[-1]
    size = path.stat().st_size
    torn = record_spans(path)[-1]
    zero_range(path, torn.offset + 20, torn.end)
    with caplog.at_level(logging.WARNING, logger="pnyx.runtime.wal"):
        wal = open_wal(tmp_path)
    assert "wal_torn_tail_repaired" in caplog.text and str(path) in caplog.text
    assert wal.stats.torn_tail_repairs == 1
    # The whole batch is gone, also its intact first record: batches are atomic.
    assert_same(wal.recovered(), fold(durable))
    assert path.stat().st_size == size, "segments keep their size"
    assert len(record_spans(path)) == 2, "the torn batch is zeroed on disk"
    more: list[PersistOp] = [LogAppend(11, entries(11, 2))]
    wal.write(more)  # the repaired log keeps working
    wal.close()
    assert_same(open_wal(tmp_path).recovered(), fold(durable + more))


def test_a_truncated_or_extended_segment_is_refused(tmp_path: Path) -> None:
    wal = open_wal(tmp_path, segment_bytes=64 * 1024)
    for i in range(1, 6):
        wal.write([LogAppend(i, entries(i, 1))])
    wal.close()
    path = segments(tmp_path)[-1]
    end = record_spans(path)[-1].end
    os.truncate(path, end)  # cut where the data ends: looks clean, but the size is recorded
    with pytest.raises(WalCorruptError, match="truncated or extended") as info:
        open_wal(tmp_path)
    assert info.value.path == path and info.value.offset == end
    os.truncate(path, 64 * 1024 + 1500)  # blocks appended after the fact
    with pytest.raises(WalCorruptError, match="truncated or extended"):
        open_wal(tmp_path)


@pytest.mark.parametrize("where", ["body", "length"])
def test_flipped_byte_in_the_middle_names_file_and_offset(tmp_path: Path, where: str) -> None:
    wal = open_wal(tmp_path)
    for i in range(1, 11):
        wal.write([LogAppend(i, entries(i, 1, size=30))])
    wal.close()
    path = segments(tmp_path)[-1]
    victim = record_offsets(path)[5]
    before = path.read_bytes()
    flipped = victim + (RECORD_HEADER_BYTES + 20 if where == "body" else 5)
    flip_byte(path, flipped)
    with pytest.raises(WalCorruptError) as info:
        open_wal(tmp_path)
    err = info.value
    assert err.path == path and err.offset == victim
    text = str(err)
    assert str(path) in text and f"byte offset {victim}" in text
    assert "later write follows" in text
    assert "empty data directory" in text and "catches up from its peers" in text
    damaged = path.read_bytes()
    # never repaired: the 64 MiB segment differs from before in the flipped byte only
    # (slice comparisons: a byte-by-byte Python loop over it took 15 s of CPU)
    assert len(damaged) == len(before) and damaged[flipped] != before[flipped]
    assert damaged[:flipped] == before[:flipped], "never repaired"
    assert damaged[flipped + 1 :] == before[flipped + 1 :], "never repaired"


def test_a_zeroed_sector_followed_by_valid_records_is_refused(tmp_path: Path) -> None:
    """Issue 16 item 2: a zeroed sector in the middle of the last segment, thousands of valid
    records after it, was repaired as a torn tail (332 -> 171 entries, term 9 -> term 3)."""
    wal = open_wal(tmp_path)
    for i in range(1, 2001):
        batch: list[PersistOp] = [LogAppend(i, entries(i, 1, term=1 + i // 200))]
        if i % 50 == 0:
            batch.insert(0, PutRecord("hard", HardState(1 + i // 200, i % 3)))
        wal.write(batch)
    wal.close()
    path = segments(tmp_path)[-1]
    spans = record_spans(path)
    middle = spans[len(spans) // 2].offset
    sector = (middle // 512) * 512
    zero_range(path, sector, sector + 512)
    damaged = path.read_bytes()
    with pytest.raises(WalCorruptError, match="later write follows") as info:
        open_wal(tmp_path)
    first_hit = next(span.offset for span in spans if span.end > sector)
    assert info.value.path == path and info.value.offset == first_hit
    assert path.read_bytes() == damaged, "a refused WAL is not touched"


def test_swapped_adjacent_log_appends_are_a_wal_corrupt_error(tmp_path: Path) -> None:
    """Issue 16 item 4: CRC-valid records out of order ended in a bare AssertionError."""
    wal = open_wal(tmp_path)
    for i in range(1, 11):
        wal.write([LogAppend(i, entries(i, 1))])
    wal.close()
    path = segments(tmp_path)[-1]
    spans = record_spans(path)
    first, second = spans[4], spans[5]
    data = bytearray(path.read_bytes())
    a, b = bytes(data[first.offset : first.end]), bytes(data[second.offset : second.end])
    data[first.offset : second.end] = b + a
    path.write_bytes(bytes(data))
    with pytest.raises(WalCorruptError, match="expected 5") as info:
        open_wal(tmp_path)
    assert info.value.path == path and info.value.offset == first.offset


def test_a_gap_between_log_appends_is_a_wal_corrupt_error_not_an_assert(tmp_path: Path) -> None:
    """The fold check at replay is an ``if`` (also under ``python -O``), naming the record."""
    wal = open_wal(tmp_path)
    wal.write([LogAppend(1, entries(1, 3))])
    with pytest.raises(ValueError, match="leaves a gap"):
        wal.append([LogAppend(7, entries(7, 1))])
    # Bypass the write-time check to put a CRC-valid but inconsistent record on disk.
    wal._pending.append((KIND_OP, CODEC.encode(LogAppend(7, entries(7, 1)))))
    wal.sync()
    wal.close()
    path = segments(tmp_path)[-1]
    gap = record_spans(path)[-1].offset
    with pytest.raises(WalCorruptError, match="leaves a gap after the last index 3") as info:
        open_wal(tmp_path)
    assert info.value.path == path and info.value.offset == gap
    script = (
        "import sys; from pathlib import Path; sys.path.insert(0, '.')\n"
        "from tests.runtime.test_wal import open_wal\n"
        "from pnyx.runtime.wal import WalCorruptError\n"
        "try:\n    open_wal(Path(sys.argv[1]))\n"
        "except WalCorruptError as exc:\n    print('refused', exc.offset)\n"
    )
    run = subprocess.run(
        [sys.executable, "-O", "-c", script, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.stdout.strip() == f"refused {gap}", run.stderr


def test_a_format_1_segment_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "0000000000000001.wal").write_bytes(b"PNYXWAL\x01" + bytes(40))
    with pytest.raises(WalCorruptError, match="WAL format 1"):
        open_wal(tmp_path)


def test_damage_in_an_older_segment_is_corruption_even_at_its_end(tmp_path: Path) -> None:
    wal = open_wal(tmp_path, segment_bytes=1024)
    for i in range(1, 60):
        wal.write([LogAppend(i, entries(i, 1, size=300))])
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
    ops: list[PersistOp] = [LogAppend(i, entries(i, 1, size=300)) for i in range(1, 80)]
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
        wal.write([LogAppend(i, entries(i, 1, size=300))])
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


def multi_segment_wal(path: Path) -> list[PersistOp]:
    """A WAL of several segments (no checkpoint: the log is not compacted)."""
    wal = open_wal(path, segment_bytes=2048)
    ops: list[PersistOp] = []
    for i in range(1, 41):
        batch: list[PersistOp] = [LogAppend(i, entries(i, 1, size=300))]
        if i % 7 == 0:
            batch.append(PutRecord("hard", HardState(i // 7, 1)))
        ops += batch
        wal.write(batch)
    wal.close()
    assert wal.stats.checkpoints == 0 and len(segments(path)) >= 5
    return ops


@pytest.mark.parametrize("count", [1, 2])
def test_deleting_the_last_segments_is_refused(tmp_path: Path, count: int) -> None:
    """Issue 16 item 3: the node started with fewer entries and an older hard state."""
    multi_segment_wal(tmp_path)
    doomed = segments(tmp_path)[-count:]
    for path in doomed:
        path.unlink()
    with pytest.raises(WalCorruptError, match="missing: the manifest names segment") as info:
        open_wal(tmp_path, segment_bytes=2048)
    assert info.value.path == doomed[0] and info.value.offset == 0


def test_deleting_the_only_segment_or_the_manifest_is_refused(tmp_path: Path) -> None:
    wal = open_wal(tmp_path)
    wal.write([LogAppend(1, entries(1, 3)), PutRecord("hard", HardState(2, 1))])
    wal.close()
    (only,) = segments(tmp_path)
    data = only.read_bytes()
    only.unlink()
    with pytest.raises(WalCorruptError, match="missing: no segment is left") as info:
        open_wal(tmp_path)
    assert info.value.path == only
    only.write_bytes(data)
    (tmp_path / MANIFEST_FILE).unlink()
    with pytest.raises(WalCorruptError, match="segments holding data but no manifest"):
        open_wal(tmp_path)


def test_an_empty_directory_with_must_exist_is_refused(tmp_path: Path) -> None:
    with pytest.raises(WalCorruptError, match="neither a manifest nor a segment"):
        WriteAheadLog(tmp_path, CODEC, must_exist=True)
    assert segments(tmp_path) == [], "nothing is created"


def test_crashes_between_segment_and_manifest_writes_recover(tmp_path: Path) -> None:
    # The very first start: segment 1 is durable, the manifest not yet written.
    open_wal(tmp_path).close()
    (tmp_path / MANIFEST_FILE).unlink()
    wal = open_wal(tmp_path)
    ops: list[PersistOp] = [LogAppend(1, entries(1, 2))]
    wal.write(ops)
    wal.close()
    assert json.loads((tmp_path / MANIFEST_FILE).read_text())["last_segment"] == 1
    # A roll: the new segment is durable, the manifest still names the previous one.
    other = tmp_path / "rolled"
    ops = multi_segment_wal(other)
    newest = int(segments(other)[-1].stem)
    (other / MANIFEST_FILE).write_text(json.dumps({"format": 2, "last_segment": newest - 1}))
    assert_same(open_wal(other, segment_bytes=2048).recovered(), fold(ops))
    assert json.loads((other / MANIFEST_FILE).read_text())["last_segment"] == newest


def test_the_manifest_is_written_per_segment_not_per_batch(tmp_path: Path) -> None:
    wal = open_wal(tmp_path, segment_bytes=4096)
    for i in range(1, 201):
        wal.write([LogAppend(i, entries(i, 1, size=100))])
    assert wal.stats.manifest_writes == wal.stats.segments_created
    assert wal.stats.segments_created < 30 < wal.stats.fsyncs
    wal.close()


def test_renamed_or_copied_segments_are_refused(tmp_path: Path) -> None:
    multi_segment_wal(tmp_path)
    paths = segments(tmp_path)
    last = paths[-1]
    (tmp_path / f"{int(last.stem) + 1:016d}.wal").write_bytes(last.read_bytes())  # a copy
    with pytest.raises(WalCorruptError, match="renamed or copied"):
        open_wal(tmp_path, segment_bytes=2048)
    (tmp_path / f"{int(last.stem) + 1:016d}.wal").unlink()
    a, b = paths[-3], paths[-2]
    data_a, data_b = a.read_bytes(), b.read_bytes()
    a.write_bytes(data_b)
    b.write_bytes(data_a)  # two segments swapped
    with pytest.raises(WalCorruptError, match="renamed or copied"):
        open_wal(tmp_path, segment_bytes=2048)

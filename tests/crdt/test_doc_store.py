"""The replica store: snapshot + update log with CRCs; torn tails cut, corruption refused."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from pnyx.services.crdt import CrdtDoc, StoreCorruptError, StoreError
from pnyx.services.crdt.store import (
    LOG_FILE,
    LOG_MAGIC,
    SNAPSHOT_FILE,
    FieldImage,
    Owner,
    Update,
    UpdateLog,
    read_snapshot,
    recover,
    write_snapshot,
)


def _log_with(directory: Path, updates: list[Update]) -> Path:
    log = UpdateLog(directory, OWNER)
    log.open(0)
    log.append(updates)
    log.sync()
    log.close()
    return directory / LOG_FILE


OWNER = Owner("a", "doc", "inc1")
UPDATES = [Update("f", "k", bytes([i]) * (i + 1)) for i in range(5)]


def test_log_round_trip_keeps_order_and_content(tmp_path: Path) -> None:
    _log_with(tmp_path, UPDATES)
    found = recover(tmp_path, "a", "doc")
    assert found.updates == UPDATES
    assert found.torn_bytes == 0 and found.fields == [] and found.incarnation == "inc1"


@pytest.mark.parametrize("cut_bytes", [1, 5, 13])
def test_a_torn_last_record_is_cut_and_everything_before_it_kept(
    tmp_path: Path, cut_bytes: int, caplog: pytest.LogCaptureFixture
) -> None:
    path = _log_with(tmp_path, UPDATES)
    data = path.read_bytes()
    path.write_bytes(data[:-cut_bytes])
    with caplog.at_level(logging.WARNING):
        found = recover(tmp_path, "a", "doc")
    assert found.updates == UPDATES[:-1]
    assert found.torn_bytes > 0
    assert "crdt_log_torn_tail" in caplog.text
    log = UpdateLog(tmp_path, OWNER)
    log.open(found.log_valid_bytes)  # cuts the tail; appending goes on after the good prefix
    log.append([Update("f", "k", b"new")])
    log.close()
    assert recover(tmp_path, "a", "doc").updates == [*UPDATES[:-1], Update("f", "k", b"new")]


def test_zeros_after_the_last_record_are_a_torn_tail(tmp_path: Path) -> None:
    path = _log_with(tmp_path, UPDATES)
    path.write_bytes(path.read_bytes() + bytes(100))
    found = recover(tmp_path, "a", "doc")
    assert found.updates == UPDATES and found.torn_bytes == 100


def _record_offsets(path: Path) -> list[int]:
    """Start offsets of the records (the owner record first)."""
    data = path.read_bytes()
    offsets, offset = [], len(LOG_MAGIC)
    while offset < len(data):
        offsets.append(offset)
        offset += 12 + int.from_bytes(data[offset : offset + 4], "little")
    return offsets


@pytest.mark.parametrize(
    ("record", "byte", "what"), [(2, 14, "fails its CRC32C"), (3, 1, "header")]
)
def test_a_damaged_record_before_the_end_is_refused_naming_file_and_offset(
    tmp_path: Path, record: int, byte: int, what: str
) -> None:
    path = _log_with(tmp_path, UPDATES)
    offset = _record_offsets(path)[record] + byte
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))
    with pytest.raises(StoreCorruptError) as caught:
        recover(tmp_path, "a", "doc")
    message = str(caught.value)
    assert str(path) in message and what in message
    assert f"at offset {_record_offsets(path)[record]}" in message
    assert "move the data directory aside" in message  # says how to recover
    assert path.read_bytes() == bytes(data)  # nothing was modified


def test_a_damaged_last_whole_record_is_corruption_not_a_torn_tail(tmp_path: Path) -> None:
    path = _log_with(tmp_path, UPDATES)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01  # the body of the last record: its length is whole, its CRC fails
    path.write_bytes(bytes(data))
    with pytest.raises(StoreCorruptError, match="fails its CRC32C"):
        recover(tmp_path, "a", "doc")


def test_snapshot_round_trip_and_crc_mismatch(tmp_path: Path) -> None:
    images = [FieldImage("body", "text", b"\x01\x02"), FieldImage("n", "pncounter", b"x")]
    write_snapshot(tmp_path, OWNER, images)
    assert read_snapshot(tmp_path, "a", "doc") == (images, "inc1")
    path = tmp_path / SNAPSHOT_FILE
    data = bytearray(path.read_bytes())
    data[-2] ^= 0x10
    path.write_bytes(bytes(data))
    with pytest.raises(StoreCorruptError, match=r"snapshot\.crdt at offset 20: CRC32C mismatch"):
        read_snapshot(tmp_path, "a", "doc")


def test_a_truncated_snapshot_is_refused(tmp_path: Path) -> None:
    write_snapshot(tmp_path, OWNER, [FieldImage("n", "gcounter", b"abc" * 10)])
    path = tmp_path / SNAPSHOT_FILE
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(StoreCorruptError, match="header says"):
        read_snapshot(tmp_path, "a", "doc")


def test_files_of_another_replica_or_document_are_refused(tmp_path: Path) -> None:
    _log_with(tmp_path, UPDATES)
    with pytest.raises(StoreError, match="belongs to replica 'a' of document 'doc'"):
        recover(tmp_path, "b", "doc")
    with pytest.raises(StoreError, match="this is replica 'a' of document 'other'"):
        recover(tmp_path, "a", "other")


def test_snapshot_and_log_of_different_incarnations_are_refused(tmp_path: Path) -> None:
    _log_with(tmp_path, UPDATES)
    write_snapshot(tmp_path, Owner("a", "doc", "other"), [])
    with pytest.raises(StoreCorruptError, match="two lives of the replica"):
        recover(tmp_path, "a", "doc")


def test_a_document_keeps_its_incarnation_across_restarts(tmp_path: Path) -> None:
    doc = CrdtDoc("a", data_dir=tmp_path)
    origin = doc.origin
    doc.counter("n").increment(1)
    assert doc.counter("n").version() == {origin: 1}
    doc.compact()
    doc.close()
    again = CrdtDoc("a", data_dir=tmp_path)
    assert again.origin == origin and origin.startswith("a.")
    again.close()
    assert CrdtDoc("a", data_dir=tmp_path / "fresh").origin != origin


def test_a_document_on_a_corrupt_log_refuses_to_start_and_leaves_the_files(
    tmp_path: Path,
) -> None:
    doc = CrdtDoc("a", data_dir=tmp_path)
    for _ in range(3):
        doc.counter("n").increment(1)
    doc.close()
    path = tmp_path / LOG_FILE
    data = bytearray(path.read_bytes())
    data[_record_offsets(path)[1] + 13] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(StoreCorruptError, match=str(path)):
        CrdtDoc("a", data_dir=tmp_path)
    assert path.read_bytes() == bytes(data)
    data[_record_offsets(path)[1] + 13] ^= 0xFF  # repaired: it opens (the lock was released)
    path.write_bytes(bytes(data))
    again = CrdtDoc("a", data_dir=tmp_path)
    assert again.counter("n").value() == 3
    again.close()


def test_a_data_dir_in_use_is_refused(tmp_path: Path) -> None:
    doc = CrdtDoc("a", data_dir=tmp_path)
    try:
        with pytest.raises(StoreError, match="in use by another process"):
            CrdtDoc("a", data_dir=tmp_path)
    finally:
        doc.close()


def test_compaction_replaces_the_log_and_keeps_every_field(tmp_path: Path) -> None:
    doc = CrdtDoc("a", data_dir=tmp_path)
    doc.counter("n").increment(4)
    doc.set("s").add("x")
    doc.register("r").assign({"k": [1, 2]})
    doc.compact()
    assert recover(tmp_path, "a", "doc").updates == []
    doc.counter("n").decrement(1)
    doc.close()
    again = CrdtDoc("a", data_dir=tmp_path)
    assert again.value() == {
        "n": {"pncounter": 3},
        "r": {"lww": {"k": [1, 2]}},
        "s": {"orset": ["x"]},
    }
    again.close()

"""The durable-state fold shared by the simulator and the real runtime."""

import msgspec
import pytest

from pnyx.core import (
    Codec,
    DurableState,
    LogAppend,
    LogCompact,
    PutRecord,
    SnapshotSave,
    SplitMix64,
    encode,
)
from pnyx.protocols.broadcast import WIRE_TYPES, Gossip


def test_append_truncates_conflicting_suffix() -> None:
    state = DurableState()
    state.apply(LogAppend(1, ("a", "b", "c")))
    state.apply(LogAppend(2, ("x",)))
    assert state.log == ["a", "x"]
    assert state.last_index == 2
    assert state.entry(2) == "x"


def test_append_with_gap_is_refused() -> None:
    state = DurableState()
    state.apply(LogAppend(1, ("a",)))
    with pytest.raises(ValueError, match="gap"):
        state.apply(LogAppend(3, ("c",)))


def test_compaction_moves_log_start_and_keeps_tail() -> None:
    state = DurableState()
    state.apply(LogAppend(1, ("a", "b", "c", "d")))
    state.apply(SnapshotSave(index=2, term=1, data=b"snap"))
    state.apply(LogCompact(2))
    assert state.log_start == 3
    assert state.log == ["c", "d"]
    assert state.last_index == 4
    # An append overlapping the compacted prefix only keeps what lies after it.
    state.apply(LogAppend(2, ("B", "C")))
    assert state.log == ["C"]
    assert state.snapshot is not None and state.snapshot.index == 2


def test_compaction_past_the_end_empties_log() -> None:
    state = DurableState()
    state.apply(LogAppend(1, ("a",)))
    state.apply(LogCompact(5))
    assert state.log == [] and state.log_start == 6 and state.last_index == 5


def test_older_snapshot_does_not_replace_newer() -> None:
    state = DurableState()
    state.apply(SnapshotSave(index=5, term=2, data=b"new"))
    state.apply(SnapshotSave(index=3, term=1, data=b"old"))
    assert state.snapshot is not None and state.snapshot.data == b"new"


def test_copy_is_independent() -> None:
    state = DurableState()
    state.apply_all([PutRecord("hard", {"term": 1}), LogAppend(1, ("a",))])
    twin = state.copy()
    twin.apply_all([PutRecord("hard", {"term": 2}), LogAppend(2, ("b",))])
    assert state.records["hard"] == {"term": 1} and state.log == ["a"]
    assert twin.records["hard"] == {"term": 2} and twin.log == ["a", "b"]


def test_messages_roundtrip_and_encode_stably() -> None:
    codec: Codec[object] = Codec(WIRE_TYPES)
    msg = Gossip("1000-1", {"b": 1, "a": 2})
    data = codec.encode(msg)
    assert codec.decode(data) == msg
    assert encode({"b": 1, "a": 2}) == encode({"a": 2, "b": 1})
    with pytest.raises(msgspec.DecodeError):
        codec.decode(b"\x93garbage")


def test_splitmix_is_seeded_and_in_range() -> None:
    a, b = SplitMix64(7), SplitMix64(7)
    draws = [a.randrange(3, 9) for _ in range(200)]
    assert draws == [b.randrange(3, 9) for _ in range(200)]
    assert set(draws) == set(range(3, 9))
    assert all(0.0 <= SplitMix64(i).random() < 1.0 for i in range(50))
    assert SplitMix64(1).random() != SplitMix64(2).random()

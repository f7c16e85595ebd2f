"""The state machines of a multi-Raft process: one per data range, one for the range map.

:class:`RangeStateMachine` is a KV store restricted to its range's keys: every operation
is checked against the range's bounds *when applied* (TiKV checks the region epoch at
apply time), so a write proposed before a split and committed after it fails with
``key_not_in_range`` instead of landing where no reader looks.  A split is a command of
the range's own log: the applying replica keeps the left half and hands the right half's
data out in :class:`SplitDone`, from which its process creates the new group.

:class:`MetaStateMachine` holds the range map (range id -> :class:`RangeDesc`), the split
reservations and the next range id.  Its updates only move forward: a split is recorded
only over its predecessor version, a replica set only at a higher ``conf_ver``.
"""

from __future__ import annotations

import itertools
from typing import Any

import msgspec

from pnyx.protocols.multiraft.messages import (
    MetaCommand,
    MetaQuery,
    MetaReplicas,
    MetaSplit,
    RangeBounds,
    RangeDesc,
    RangeWrite,
    ReserveSplit,
    SplitCmd,
    SplitDone,
)
from pnyx.protocols.raft.kv import GET, KvOp, KvStore

KEY_NOT_IN_RANGE = "key_not_in_range"
"""Error of an operation on a key outside the applying range (a stale route: definite)."""
STALE_SPLIT = "stale_split"
"""Error of a split command whose range moved on meanwhile (applied as a no-op)."""

SPLIT_LOSES_INFLIGHT = "split_loses_inflight"
"""Mutant: the apply-time bounds check is skipped, so a write proposed before a split and
applied after it is acknowledged by the left half, which no longer owns the key."""
MUTANTS: frozenset[str] = frozenset({SPLIT_LOSES_INFLIGHT})
MUTANT_PROPERTIES: dict[str, str] = {SPLIT_LOSES_INFLIGHT: "lost-write"}
"""Mutant -> the violation (of ``pnyx.protocols.multiraft.spec``) that catches it."""


STALE_REQUEST = "stale_request"
"""Refusal of a copy of a client's write older than one this range already applied."""


class _RangeImage(msgspec.Struct, array_like=True):
    bounds: RangeBounds
    data: list[tuple[str, Any]]
    last_split: SplitDone | None
    applied_ops: list[tuple[int, int]] = []


class RangeStateMachine:
    """A range's KV data and bounds (implements :class:`pnyx.core.StateMachine`)."""

    def __init__(self, bounds: RangeBounds, mutants: frozenset[str] = frozenset()) -> None:
        self.bounds = bounds
        self.store = KvStore()
        self.last_split: SplitDone | None = None
        """The last split this range applied (its leader reports it to the meta range)."""
        self.mutations = 0
        """Counts applied writes, splits and restores (monitors re-check on change)."""
        self.applied_ops: dict[int, int] = {}
        """client -> op_seq of its last write applied here (a split copies it to both
        halves: a retry routed to the right half must not apply again)."""
        self._mutants = mutants

    @property
    def data(self) -> dict[str, Any]:
        """The range's key-value data."""
        return self.store.data

    def apply(self, command: Any) -> Any:
        """Apply a KV operation or a split; errors come back as ``{"error": ...}``."""
        if type(command) not in (KvOp, SplitCmd, RangeWrite):
            try:
                command = _convert_command(command)
            except msgspec.ValidationError as exc:
                return {"error": f"malformed command: {exc}"}
        if type(command) is SplitCmd:
            return self._split(command)
        if type(command) is RangeWrite:
            return self._write_once(command)
        return self._apply_op(command)

    def _write_once(self, w: RangeWrite) -> Any:
        last = self.applied_ops.get(w.client, 0)
        if w.op_seq == last:
            return None  # a copy of the write applied last: it happened (a put returns None)
        if w.op_seq < last:
            return {"error": STALE_REQUEST}
        result = self._apply_op(w.op)
        if not (isinstance(result, dict) and "error" in result):
            self.applied_ops[w.client] = w.op_seq
        return result

    def _apply_op(self, command: KvOp) -> Any:
        key = command.key
        if type(key) is not str:
            return {"error": f"key {key!r} is not a string"}
        if not self.bounds.contains(key) and not self._skips_check(command):
            return {"error": KEY_NOT_IN_RANGE, "bounds": self.bounds}
        if command.kind != GET:
            self.mutations += 1
        return self.store.apply(command)

    def _skips_check(self, op: KvOp) -> bool:
        return SPLIT_LOSES_INFLIGHT in self._mutants and op.kind != GET

    def _split(self, cmd: SplitCmd) -> Any:
        b = self.bounds
        key = cmd.split_key
        if cmd.range_id != b.range_id or cmd.version != b.version:
            return {"error": STALE_SPLIT, "bounds": b}
        if not b.contains(key) or key == b.start:
            return {"error": STALE_SPLIT, "bounds": b}
        left = RangeBounds(b.range_id, b.start, key, b.version + 1)
        right = RangeBounds(cmd.new_range_id, key, b.end, b.version + 1)
        moved = sorted((k, v) for k, v in self.store.data.items() if right.contains(k))
        for k, _ in moved:
            del self.store.data[k]
        image = _RangeImage(right, moved, None, sorted(self.applied_ops.items()))
        done = SplitDone(left, right, msgspec.msgpack.encode(image))
        self.bounds = left
        self.last_split = done
        self.mutations += 1
        return done

    def snapshot(self) -> bytes:
        data = sorted(self.store.data.items())
        ops = sorted(self.applied_ops.items())
        return msgspec.msgpack.encode(_RangeImage(self.bounds, data, self.last_split, ops))

    def restore(self, data: bytes) -> None:
        image = msgspec.msgpack.decode(data, type=_RangeImage)
        self.bounds = image.bounds
        self.store.data = dict(image.data)
        self.last_split = image.last_split
        self.applied_ops = dict(image.applied_ops)
        self.mutations += 1


def convert_command(group: int, raw: Any) -> Any:
    """The typed command of group ``group`` (0: the meta range) that crossed a wire or a
    checkpoint untyped; ``raw`` unchanged when it is typed or not a command."""
    if type(raw) in (KvOp, SplitCmd, RangeWrite, MetaQuery, ReserveSplit, MetaSplit, MetaReplicas):
        return raw
    try:
        if group == 0:
            return msgspec.convert(raw, MetaQuery | MetaCommand)
        return _convert_command(raw)
    except msgspec.ValidationError:
        return raw


def _convert_command(raw: Any) -> KvOp | SplitCmd | RangeWrite:
    """A command that crossed a wire or a checkpoint untyped (a msgpack array): a split or
    a client write carries its tag first, a bare KV operation does not."""
    if isinstance(raw, list | tuple) and raw and raw[0] in _TAGGED:
        return msgspec.convert(raw, _TAGGED[raw[0]])
    return msgspec.convert(raw, KvOp)


_TAGGED: dict[str, type[SplitCmd] | type[RangeWrite]] = {
    SplitCmd.__name__: SplitCmd,
    RangeWrite.__name__: RangeWrite,
}


def range_image(bounds: RangeBounds, data: dict[str, Any]) -> bytes:
    """The snapshot bytes of a range holding ``data`` (bootstrap)."""
    return msgspec.msgpack.encode(_RangeImage(bounds, sorted(data.items()), None))


class _MetaImage(msgspec.Struct, array_like=True):
    ranges: list[RangeDesc]
    reserved: list[tuple[int, int, int]]
    next_id: int


class MetaStateMachine:
    """The range map (implements :class:`pnyx.core.StateMachine`)."""

    def __init__(self, ranges: tuple[RangeDesc, ...] = (), next_id: int = 1) -> None:
        self.ranges: dict[int, RangeDesc] = {d.range_id: d for d in ranges}
        self.reserved: dict[tuple[int, int], int] = {}
        """(range id, version) -> id of the range its split will create."""
        self.next_id = next_id
        self.mutations = 0
        """Counts applied changes and restores (monitors re-check on change)."""

    def apply(self, command: Any) -> Any:
        """Apply a meta command or answer a :class:`MetaQuery`."""
        if type(command) not in (MetaQuery, ReserveSplit, MetaSplit, MetaReplicas):
            try:
                command = msgspec.convert(command, MetaQuery | MetaCommand)
            except msgspec.ValidationError as exc:
                return {"error": f"malformed meta command: {exc}"}
        if type(command) is MetaQuery:
            return tuple(sorted(self.ranges.values(), key=lambda d: d.start))
        return self._update(command)

    def _update(self, cmd: MetaCommand) -> Any:
        if type(cmd) is ReserveSplit:
            return self._reserve(cmd)
        if type(cmd) is MetaSplit:
            return self._record_split(cmd)
        assert type(cmd) is MetaReplicas
        cur = self.ranges.get(cmd.range_id)
        if cur is None or cur.version != cmd.version or cmd.conf_ver <= cur.conf_ver:
            return False
        self.ranges[cmd.range_id] = msgspec.structs.replace(
            cur, conf_ver=cmd.conf_ver, replicas=cmd.replicas
        )
        self.mutations += 1
        return True

    def _reserve(self, cmd: ReserveSplit) -> int:
        cur = self.ranges.get(cmd.range_id)
        key = (cmd.range_id, cmd.version)
        if cur is None or cur.version != cmd.version:
            return 0
        if key not in self.reserved:
            self.reserved[key] = self.next_id
            self.next_id += 1
            self.mutations += 1
        return self.reserved[key]

    def _record_split(self, cmd: MetaSplit) -> bool:
        left, right = cmd.left, cmd.right
        cur = self.ranges.get(left.range_id)
        if cur is None or cur.version != left.version - 1 or right.range_id in self.ranges:
            return False
        if (cur.start, cur.end) != (left.start, right.end) or left.end != right.start:
            return False
        if left.end is None or not cur.contains(left.end):
            return False
        if cur.conf_ver > left.conf_ver:
            left = msgspec.structs.replace(left, conf_ver=cur.conf_ver, replicas=cur.replicas)
        self.ranges[left.range_id] = left
        self.ranges[right.range_id] = right
        self.reserved.pop((cur.range_id, cur.version), None)
        self.next_id = max(self.next_id, right.range_id + 1)
        self.mutations += 1
        return True

    def lookup(self, key: str) -> RangeDesc | None:
        """The range holding ``key`` in this map, if any."""
        for desc in self.ranges.values():
            if desc.contains(key):
                return desc
        return None

    def snapshot(self) -> bytes:
        ranges = sorted(self.ranges.values(), key=lambda d: d.range_id)
        reserved = sorted((r, v, i) for (r, v), i in self.reserved.items())
        return msgspec.msgpack.encode(_MetaImage(ranges, reserved, self.next_id))

    def restore(self, data: bytes) -> None:
        image = msgspec.msgpack.decode(data, type=_MetaImage)
        self.ranges = {d.range_id: d for d in image.ranges}
        self.reserved = {(r, v): i for r, v, i in image.reserved}
        self.next_id = image.next_id
        self.mutations += 1


def check_range_map(ranges: list[RangeDesc]) -> str:
    """Why ``ranges`` is not a partition of the keyspace (disjoint, covering, in order);
    empty when it is."""
    if not ranges:
        return "the range map is empty"
    ordered = sorted(ranges, key=lambda d: d.start)
    if ordered[0].start != "":
        return f"nothing covers keys before {ordered[0].start!r}"
    for a, b in itertools.pairwise(ordered):
        if a.end is None or a.end != b.start:
            return (
                f"range {a.range_id} ends at {a.end!r} but range {b.range_id} starts at {b.start!r}"
            )
    for d in ordered:
        if d.end is not None and d.end <= d.start:
            return f"range {d.range_id} is empty or inverted: [{d.start!r}, {d.end!r})"
    if ordered[-1].end is not None:
        return f"nothing covers keys from {ordered[-1].end!r}"
    return ""

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
from typing import Any, ClassVar

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
from pnyx.protocols.raft.kv import APPEND, CAS, DELETE, GET, PUT, KvOp, KvStore

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


KV_KINDS = frozenset({GET, PUT, APPEND, CAS, DELETE})
"""The kinds of :class:`KvOp` a range applies."""

STALE_REQUEST = "stale_request"
"""Refusal of a copy of a client's write older than one this range already applied."""


class _RangeImage(msgspec.Struct, array_like=True):
    """A range's snapshot without extra state (the bytes of a plain KV range)."""

    bounds: RangeBounds
    data: list[tuple[str, Any]]
    last_split: SplitDone | None
    applied_ops: list[tuple[int, int]] = []


class _RangeImageExtra(msgspec.Struct, array_like=True):
    """A range's snapshot as it is decoded (``extra``: a subclass's range-wide state; an
    image written without it decodes with None)."""

    bounds: RangeBounds
    data: list[tuple[str, Any]]
    last_split: SplitDone | None
    applied_ops: list[tuple[int, int]] = []
    extra: Any = None


def _encode_image(
    bounds: RangeBounds,
    records: list[tuple[str, Any]],
    last_split: SplitDone | None,
    applied_ops: list[tuple[int, int]],
    extra: Any,
) -> bytes:
    if extra is None:
        return msgspec.msgpack.encode(_RangeImage(bounds, records, last_split, applied_ops))
    image = _RangeImageExtra(bounds, records, last_split, applied_ops, extra)
    return msgspec.msgpack.encode(image)


class RangeStateMachine:
    """A range's KV data and bounds (implements :class:`pnyx.core.StateMachine`).

    **Extending it** (a subclass runs in every group when it is
    :attr:`MultiRaftConfig.make_range_machine <pnyx.protocols.multiraft.node.MultiRaftConfig>`):

    - commands: list your tagged struct types (``tag=True, array_like=True``; tags other
      than ``SplitCmd`` / ``RangeWrite``) in :attr:`op_types` and handle them in
      :meth:`apply_other` (check keys with :meth:`key_error`); they travel bare or as the
      ``op`` of a :class:`RangeWrite` (exactly-once), and :meth:`op_keys` tells the node
      which keys a command touches (early ``key_not_in_range`` answers);
    - per-key data: a key's record is ``self.store.data[key]`` (any msgpack-encodable
      value); a split moves whole records to the right half with :meth:`split_records`,
      images carry them and :meth:`load_records` types them again after decoding;
    - range-wide state: :meth:`image_extra` / :meth:`restore_extra` (snapshots),
      :meth:`split_extra` (what the right half of a split starts with).
    """

    op_types: ClassVar[tuple[type[msgspec.Struct], ...]] = ()
    """Tagged command types a subclass adds (decoded by :meth:`convert_op`)."""

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
        self._sizes: dict[str, int] = {}
        """key -> bytes of its record when last measured (see :meth:`size_bytes`)."""
        self._size_total = 0
        self._dirty: dict[str, None] = {}
        """Keys written since they were last measured (insertion-ordered)."""
        self._mutants = mutants
        self._tags: dict[str, type[msgspec.Struct]] = {
            SplitCmd.__name__: SplitCmd,
            RangeWrite.__name__: RangeWrite,
        }
        for t in self.op_types:
            tag = t.__struct_config__.tag
            if not isinstance(tag, str) or tag in self._tags:
                raise TypeError(f"op type {t.__name__}: needs a string tag other than {tag!r}")
            self._tags[tag] = t

    @property
    def data(self) -> dict[str, Any]:
        """The range's per-key records (key -> value for plain KV)."""
        return self.store.data

    def apply(self, command: Any) -> Any:
        """Apply a KV operation or a split; errors come back as ``{"error": ...}``."""
        try:
            command = self.convert_command(command)
        except msgspec.ValidationError as exc:
            return {"error": f"malformed command: {exc}"}
        if type(command) is SplitCmd:
            return self._split(command)
        if type(command) is RangeWrite:
            return self._write_once(command)
        return self.apply_op(command)

    # -- typing commands that crossed a wire or a disk untyped ----------------------------------

    def convert_command(self, raw: Any) -> Any:
        """``raw`` as a typed command of this range (a split, a client write, an
        operation); raises ``msgspec.ValidationError`` when it is none of them."""
        kind = type(raw)
        if kind is SplitCmd or kind is KvOp or kind in self.op_types:
            return raw
        if kind is RangeWrite:
            op = raw.op
            typed = self.convert_op(op)
            return raw if typed is op else RangeWrite(raw.client, raw.op_seq, typed)
        if isinstance(raw, list | tuple) and raw and raw[0] == RangeWrite.__name__:
            w = msgspec.convert(raw, RangeWrite)
            return RangeWrite(w.client, w.op_seq, self.convert_op(w.op))
        if isinstance(raw, list | tuple) and raw and raw[0] == SplitCmd.__name__:
            return msgspec.convert(raw, SplitCmd)
        return self.convert_op(raw)

    def convert_op(self, raw: Any) -> Any:
        """``raw`` as a :class:`KvOp` or one of :attr:`op_types` (by its tag, the first
        element); raises ``msgspec.ValidationError`` otherwise."""
        kind = type(raw)
        if kind is KvOp or kind in self.op_types:
            return raw
        if isinstance(raw, list | tuple) and raw and isinstance(raw[0], str):
            t = self._tags.get(raw[0])
            if t is not None and t in self.op_types:
                return msgspec.convert(raw, t)
        op = msgspec.convert(raw, KvOp)
        if op.kind not in KV_KINDS:
            raise msgspec.ValidationError(f"unknown operation kind {op.kind!r}")
        return op

    def op_keys(self, op: Any) -> tuple[str, ...]:
        """The keys a typed operation touches (the node answers ``key_not_in_range`` early
        when one is outside the range); override for :attr:`op_types`."""
        if type(op) is KvOp and type(op.key) is str:
            return (op.key,)
        return ()

    # -- applying -------------------------------------------------------------------------------

    def _write_once(self, w: RangeWrite) -> Any:
        last = self.applied_ops.get(w.client, 0)
        if w.op_seq == last:
            return None  # a copy of the write applied last: it happened (a put returns None)
        if w.op_seq < last:
            return {"error": STALE_REQUEST}
        result = self.apply_op(w.op)
        if not (isinstance(result, dict) and "error" in result):
            self.applied_ops[w.client] = w.op_seq
        return result

    def apply_op(self, op: Any) -> Any:
        """Apply one typed operation: a :class:`KvOp` here, anything else goes to
        :meth:`apply_other`."""
        if type(op) is not KvOp:
            return self._apply_other(op)
        key = op.key
        if type(key) is not str:
            return {"error": f"key {key!r} is not a string"}
        if not self.bounds.contains(key) and not self._skips_check(op):
            return {"error": KEY_NOT_IN_RANGE, "bounds": self.bounds}
        if op.kind != GET:
            self.mutations += 1
            self._dirty[key] = None
        return self.store.apply(op)

    def _apply_other(self, op: Any) -> Any:
        """:meth:`apply_other`, the keys it names marked for measuring again (a subclass
        may change their records in place)."""
        for key in self.op_keys(op):
            self._dirty[key] = None
        return self.apply_other(op)

    def apply_other(self, op: Any) -> Any:
        """Apply an operation of :attr:`op_types` (a subclass's); the base has none.  Count
        changes in :attr:`mutations`; answer errors as ``{"error": ...}``."""
        return {"error": f"unknown operation {type(op).__name__}"}

    def key_error(self, key: Any) -> dict[str, Any] | None:
        """The error answer for an operation on ``key`` when this range does not own it
        (apply-time bounds check, for :meth:`apply_other`), else None."""
        if type(key) is not str:
            return {"error": f"key {key!r} is not a string"}
        if not self.bounds.contains(key):
            return {"error": KEY_NOT_IN_RANGE, "bounds": self.bounds}
        return None

    def _skips_check(self, op: KvOp) -> bool:
        return SPLIT_LOSES_INFLIGHT in self._mutants and op.kind != GET

    # -- size in bytes --------------------------------------------------------------------------

    def record_size_bytes(self, key: str, record: Any) -> int:
        """The approximate bytes ``key`` and its record take: the key's UTF-8 length plus
        the record's msgpack encoding.  Override for a cheaper estimate of large records."""
        return len(key.encode()) + len(msgspec.msgpack.encode(record))

    def size_bytes(self) -> int:
        """The approximate size of the range's records (:meth:`record_size_bytes` summed).
        Tracked incrementally: only the keys written since the last call are measured again
        (a write marks its keys; a split or a restore marks the keys it moved or loaded)."""
        if self._dirty:
            dirty, self._dirty = self._dirty, {}
            data = self.store.data
            for key in dirty:
                old = self._sizes.pop(key, 0)
                new = self.record_size_bytes(key, data[key]) if key in data else 0
                if key in data:
                    self._sizes[key] = new
                self._size_total += new - old
        return self._size_total

    def byte_split_key(self) -> str | None:
        """The key that halves the range's bytes: the first key (in order, not the first
        one) at which the sizes of the keys before it reach half the total; None when the
        range holds fewer than two keys."""
        total = self.size_bytes()
        keys = sorted(k for k in self._sizes if self.bounds.contains(k))
        if len(keys) < 2:
            return None
        below = 0
        for i, key in enumerate(keys):
            if i > 0 and 2 * below >= total:
                return key
            below += self._sizes[key]
        return keys[-1]

    def _measure_all(self) -> None:
        """Forget every measurement: every key is measured again at the next check."""
        self._sizes = {}
        self._size_total = 0
        self._dirty = dict.fromkeys(self.store.data)

    # -- split ----------------------------------------------------------------------------------

    def _split(self, cmd: SplitCmd) -> Any:
        b = self.bounds
        key = cmd.split_key
        if cmd.range_id != b.range_id or cmd.version != b.version:
            return {"error": STALE_SPLIT, "bounds": b}
        if not b.contains(key) or key == b.start:
            return {"error": STALE_SPLIT, "bounds": b}
        left = RangeBounds(b.range_id, b.start, key, b.version + 1)
        right = RangeBounds(cmd.new_range_id, key, b.end, b.version + 1)
        moved = self.split_records(right)
        for k, _ in moved:
            self._dirty[k] = None
        ops = sorted(self.applied_ops.items())
        right_data = _encode_image(right, moved, None, ops, self.split_extra(right))
        done = SplitDone(left, right, right_data)
        self.bounds = left
        self.last_split = done
        self.mutations += 1
        return done

    def split_records(self, right: RangeBounds) -> list[tuple[str, Any]]:
        """Remove the records of the keys ``right`` covers and return them sorted by key:
        the right half of a split starts with exactly these (whole records)."""
        moved = sorted((k, v) for k, v in self.store.data.items() if right.contains(k))
        for k, _ in moved:
            del self.store.data[k]
        return moved

    def split_extra(self, right: RangeBounds) -> Any:
        """The range-wide extra state the right half ``right`` of a split starts with
        (msgpack-encodable; None: none).  Called after :meth:`split_records`."""
        return None

    # -- snapshots ------------------------------------------------------------------------------

    def records(self) -> list[tuple[str, Any]]:
        """Every key's record, sorted by key (what an image holds)."""
        return sorted(self.store.data.items())

    def load_records(self, records: list[tuple[str, Any]]) -> None:
        """Install the records of an image (decoded untyped from msgpack: a subclass types
        its records again here)."""
        self.store.data = dict(records)

    def image_extra(self) -> Any:
        """Range-wide state beyond records, bounds and the exactly-once table, for
        snapshots (msgpack-encodable; None: none, and the image is a plain KV range's)."""
        return None

    def restore_extra(self, extra: Any) -> None:
        """Install what :meth:`image_extra` (or :meth:`split_extra`) gave, decoded untyped;
        None when the image had none."""

    def snapshot(self) -> bytes:
        ops = sorted(self.applied_ops.items())
        extra = self.image_extra()
        return _encode_image(self.bounds, self.records(), self.last_split, ops, extra)

    def restore(self, data: bytes) -> None:
        image = msgspec.msgpack.decode(data, type=_RangeImageExtra)
        self.bounds = image.bounds
        self.load_records(image.data)
        self.last_split = image.last_split
        self.applied_ops = dict(image.applied_ops)
        self.restore_extra(image.extra)
        self._measure_all()
        self.mutations += 1


def convert_command(group: int, raw: Any, machine: RangeStateMachine | None = None) -> Any:
    """The typed command of group ``group`` (0: the meta range) that crossed a wire or a
    checkpoint untyped; ``raw`` unchanged when it is typed or not a command.  Data range
    commands are typed by ``machine`` (a plain :class:`RangeStateMachine` if None)."""
    kind = type(raw)
    if kind in (KvOp, SplitCmd, MetaQuery, ReserveSplit, MetaSplit, MetaReplicas):
        return raw
    try:
        if group == 0:
            return msgspec.convert(raw, MetaQuery | MetaCommand)
        return (machine or _PLAIN).convert_command(raw)
    except msgspec.ValidationError:
        return raw


def range_image(bounds: RangeBounds, data: dict[str, Any]) -> bytes:
    """The snapshot bytes of a plain KV range holding ``data``."""
    return _encode_image(bounds, sorted(data.items()), None, [], None)


_PLAIN = RangeStateMachine(RangeBounds(0, "", "", 0))


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

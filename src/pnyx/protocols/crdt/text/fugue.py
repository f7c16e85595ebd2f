"""Fugue text CRDT (Weidner, Gentle & Kleppmann): a tree of characters read in order.

Every character is a node of the Fugue tree: a left or right child of an earlier character
(or of the root); the document is the in-order traversal (left children, the node, right
children; siblings on one side ordered by ``(replica, counter)``).  Storage is run-length:

* the log: per replica, entries covering contiguous counters -- an insert entry is a chain
  of characters each the right child of the one before (one typed run), a delete entry
  tombstones a list of id ranges;
* the list: the tree's traversal as *pieces* (a slice of one insert entry, all visible or
  all tombstoned) in a counted B+ tree (:mod:`.index`): leaves (chunks) of at most
  :data:`CHUNK_MAX_PIECES` pieces, every node knowing its visible length, so a position
  lookup is one root-to-leaf descent and a length change one leaf-to-root walk, both
  O(log n) for n pieces; a cursor at the last edit makes nearby lookups a scan of one leaf,
  and typing at the end of one's own run extends it in place.

Tree invariants the code relies on: only the last character of a piece has explicit right
children (an interior character's only right child is the next character of its piece),
and only the first character of a piece has left children.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Mapping
from heapq import heappop, heappush
from itertools import repeat
from typing import Final, NamedTuple

from pnyx.protocols.crdt.base import WireError, check_replica
from pnyx.protocols.crdt.text.index import Chunk, CountedTree, add_vis
from pnyx.protocols.crdt.text.ops import TextOp, check_op, decode_ops, encode_ops

CHUNK_MAX_PIECES: Final = 64
"""A chunk (leaf of the list's tree) holding more pieces than this is split in two."""

TREE_FANOUT: Final = 32
"""An inner node of the list's tree holding more children than this is split in two."""

DEFAULT_MAX_PENDING_OPS: Final = 100_000
"""Default bound on ops buffered while their causal predecessors are missing."""

_SHIFT: Final = 24
_MASK: Final = (1 << _SHIFT) - 1
_WALK_MAX_PIECES: Final = 16  # a lookup walks this far from the cursor, then asks the tree
_ROOT: Final = 0  # key of the root (counters start at 1, so no character has key 0)
_LEFT: Final = 0
_RIGHT: Final = 1


class _Piece:
    __slots__ = ("agent", "chunk", "entry", "length", "start", "vis")

    def __init__(
        self, agent: int, start: int, length: int, vis: int, chunk: Chunk[_Piece], entry: _Ins
    ) -> None:
        self.agent = agent
        self.start = start
        self.length = length
        self.vis = vis  # == length (visible) or 0 (tombstones)
        self.chunk = chunk
        self.entry = entry


class _Ins:
    """Insert log entry: ids ``start..start+length-1``, a chain from ``parent``/``side``."""

    __slots__ = ("length", "parent", "piece_starts", "pieces", "seq", "side", "start")

    def __init__(self, start: int, length: int, parent: int, side: int, seq: int) -> None:
        self.start = start
        self.length = length
        self.parent = parent
        self.side = side
        self.seq = seq
        self.pieces: list[_Piece] = []
        self.piece_starts: list[int] = []


class _Del:
    """Delete log entry: ids ``start..``, one per target character (agent, ctr, signed len)."""

    __slots__ = ("length", "seq", "start", "targets")

    def __init__(self, start: int, length: int, targets: list[list[int]], seq: int) -> None:
        self.start = start
        self.length = length
        self.targets = targets
        self.seq = seq


class _InsOp(NamedTuple):
    agent: int
    ctr: int
    text: str
    parent: int
    side: int


class _DelOp(NamedTuple):
    agent: int
    ctr: int
    length: int
    targets: tuple[tuple[int, int, int], ...]


_Op = _InsOp | _DelOp


def _span(ctr: int, length: int) -> tuple[int, int]:
    """Ascending ``[lo, hi)`` of a signed target range."""
    return (ctr, ctr + length) if length > 0 else (ctr + length + 1, ctr + 1)


def _merge_target(targets: list[list[int]], agent: int, ctr: int, length: int) -> None:
    """Append a target range, extending the last one when the ids continue it in order."""
    if targets:
        last = targets[-1]
        if last[0] == agent:
            lctr, llen = last[1], last[2]
            if llen > 0 and length > 0 and ctr == lctr + llen:
                last[2] = llen + length
                return
            last_char = lctr + llen + 1 if llen < 0 else lctr + llen - 1
            if length == 1 and (llen == 1 or llen < 0) and ctr == last_char - 1:
                last[2] = -(abs(llen) + 1)
                return
    targets.append([agent, ctr, length])


def _drop_targets(
    targets: Iterable[tuple[int, int, int]] | Iterable[list[int]], skip: int
) -> list[list[int]]:
    """The target ranges without their first ``skip`` characters."""
    out: list[list[int]] = []
    for agent, ctr, length in targets:
        size = abs(length)
        if skip >= size:
            skip -= size
            continue
        if skip:
            step = 1 if length > 0 else -1
            ctr += skip * step
            length -= skip * step
            skip = 0
        out.append([agent, ctr, length])
    return out


class FugueText:
    """A replicated text: Fugue sequence CRDT with run-length storage.

    ``insert``/``delete`` edit locally and return the encoded update; ``apply_update``
    merges a peer's update (idempotent, any order: ops whose causal predecessors are
    missing wait in a bounded buffer).  Positions are Unicode code points.
    """

    def __init__(self, replica: str, *, max_pending_ops: int = DEFAULT_MAX_PENDING_OPS) -> None:
        check_replica(replica)
        if max_pending_ops < 0:
            raise ValueError(f"max_pending_ops must be >= 0, got {max_pending_ops}")
        self.replica = replica
        self.max_pending_ops = max_pending_ops
        self._names: list[str] = []
        self._agent_of: dict[str, int] = {}
        self._ver: list[int] = []
        self._chars: list[list[str]] = []
        self._log: list[list[_Ins | _Del]] = []
        self._log_starts: list[list[int]] = []
        self._right_kids: dict[int, list[int]] = {}
        self._left_kids: dict[int, list[int]] = {}
        self._tree: CountedTree[_Piece] = CountedTree(CHUNK_MAX_PIECES, TREE_FANOUT)
        self._cur_piece: _Piece | None = None  # a piece ...
        self._cur_start = 0  # ... whose first character is at this visible position
        self._len = 0
        self._seq = 0
        self._hot_pos = -1
        self._hot_piece: _Piece | None = None
        self._waiting: dict[int, list[tuple[int, int, _Op]]] = {}
        self._pending = 0
        self._indexed = False  # entry -> pieces lists exist (built at the first id lookup)
        self.dropped_ops = 0
        """Ops not buffered because the buffer was full (anti-entropy sends them again)."""
        self.rejected_ops = 0
        """Ops refused because they name a delete where a character is needed."""
        self._me = self._agent(replica)

    # ----------------------------------------------------------------- public API
    def __len__(self) -> int:
        return self._len

    def text(self) -> str:
        """The visible text."""
        chars = self._chars
        return "".join(
            "".join(chars[p.agent][p.start - 1 : p.start - 1 + p.length])
            for p in self._tree.items()
            if p.vis
        )

    def version(self) -> dict[str, int]:
        """Per replica, the highest contiguous counter applied here (sorted by name)."""
        return {n: self._ver[a] for n, a in sorted(self._agent_of.items()) if self._ver[a]}

    @property
    def pending_ops(self) -> int:
        """Number of buffered ops waiting for causal predecessors."""
        return self._pending

    def insert(self, pos: int, text: str) -> bytes:
        """Insert ``text`` before code point ``pos``; returns the encoded update."""
        if not text:
            self._check_pos(pos, 0)
            return encode_ops([])
        ctr = self._ver[self._me] + 1
        self.splice(pos, 0, text)
        return encode_ops(self._local_ops(ctr))

    def delete(self, pos: int, count: int) -> bytes:
        """Delete ``count`` code points from ``pos``; returns the encoded update."""
        ctr = self._ver[self._me] + 1
        self.splice(pos, count, "")
        return encode_ops(self._local_ops(ctr))

    def splice(self, pos: int, delete_count: int, text: str) -> None:
        """Delete then insert at ``pos`` locally without encoding an update (bulk editing).

        The ops are in the log: ``encode_since``/``ops_since`` hand them out later.
        """
        if pos < 0 or delete_count < 0 or pos + delete_count > self._len:
            self._check_pos(pos, delete_count)
        if delete_count:
            self._local_delete(pos, delete_count)
        if text:
            self._local_insert(pos, text)
        if self._tree.overfull:
            self._tree.fix()

    def encode(self) -> bytes:
        """The whole document (all ops; text of deleted characters left out)."""
        return encode_ops(self.ops_since({}))

    def encode_since(self, version: Mapping[str, int]) -> bytes:
        """The ops a replica at ``version`` lacks, encoded as one update."""
        return encode_ops(self.ops_since(version))

    @classmethod
    def decode(cls, replica: str, data: bytes) -> FugueText:
        """A replica named ``replica`` holding the document ``data`` (from :meth:`encode`)."""
        doc = cls(replica)
        doc.apply_update(data)
        if doc._pending:
            raise WireError(f"document encoding is incomplete: {doc._pending} ops lack "
                            "their causal predecessors")
        return doc

    def apply_update(self, data: bytes) -> None:
        """Merge an encoded update (idempotent; out-of-order ops are buffered).

        Raises ``ValueError`` (:class:`WireError`) on malformed data; the doc is unchanged.
        """
        self._deliver(self._import(decode_ops(data)))

    def apply_op(self, op: TextOp) -> None:
        """Merge one op (as from :meth:`ops_since`); same rules as :meth:`apply_update`."""
        check_op(op)
        self._deliver(self._import([op]))

    def apply_ops(self, ops: list[TextOp]) -> None:
        """Merge several ops at once (causal order is fastest; any order is correct)."""
        for op in ops:
            check_op(op)
        self._deliver(self._import(ops))

    def ops_since(self, version: Mapping[str, int]) -> list[TextOp]:
        """The ops a replica at ``version`` lacks, in causal order."""
        found: list[tuple[int, int, TextOp]] = []
        for name, a in self._agent_of.items():
            have = version.get(name, 0)
            if self._ver[a] <= have:
                continue
            starts = self._log_starts[a]
            i = max(bisect_right(starts, have + 1) - 1, 0)
            for e in self._log[a][i:]:
                skip = max(have + 1 - e.start, 0)
                found.append((e.seq, a, self._export(a, e, skip)))
        found.sort(key=lambda f: (f[0], f[1]))
        return [f[2] for f in found]

    # ----------------------------------------------------------------- agents, log
    def _agent(self, name: str) -> int:
        a = self._agent_of.get(name)
        if a is None:
            a = len(self._names)
            if a > _MASK:
                raise ValueError(f"too many replicas (> {_MASK}) in one text")
            self._agent_of[name] = a
            self._names.append(name)
            self._ver.append(0)
            self._chars.append([])
            self._log.append([])
            self._log_starts.append([])
        return a

    def _key_name(self, key: int) -> tuple[str, int]:
        return (self._names[key & _MASK], key >> _SHIFT)

    def _export(self, a: int, e: _Ins | _Del, skip: int) -> TextOp:
        name = self._names[a]
        start = e.start + skip
        if isinstance(e, _Ins):
            text = "".join(self._chars[a][start - 1 : e.start - 1 + e.length])
            if skip:
                return TextOp(name, start, text, name, start - 1, True)
            pname, pctr = self._key_name(e.parent) if e.parent else ("", 0)
            return TextOp(name, start, text, pname, pctr, e.side == _RIGHT)
        targets = _drop_targets(e.targets, skip) if skip else e.targets
        return TextOp(name, start,
                      targets=tuple((self._names[t[0]], t[1], t[2]) for t in targets))

    def _local_ops(self, ctr: int) -> list[TextOp]:
        """The op of the single local edit that used ids from ``ctr`` on."""
        e = self._log[self._me][-1]
        return [self._export(self._me, e, ctr - e.start)]

    def _entry_at(self, a: int, ctr: int) -> _Ins | _Del | None:
        if not 1 <= ctr <= self._ver[a]:
            return None
        i = bisect_right(self._log_starts[a], ctr) - 1
        return self._log[a][i]

    def _append_entry(self, a: int, e: _Ins | _Del) -> None:
        self._log[a].append(e)
        self._log_starts[a].append(e.start)

    def _check_pos(self, pos: int, count: int) -> None:
        if pos < 0 or count < 0 or pos + count > self._len:
            raise IndexError(f"edit at {pos} deleting {count} is outside the text "
                             f"(length {self._len})")

    # ----------------------------------------------------------------- list index
    def _locate(self, p: int) -> tuple[Chunk[_Piece], int, int, _Piece]:
        """(chunk, piece index, offset in piece, piece) of visible code point ``p``."""
        cp = self._cur_piece
        if cp is not None:
            found = self._walk(cp, p)
            if found is not None:
                return found
        chunk, pi, off = self._tree.locate(p)
        return chunk, pi, off, chunk.items[pi]

    def _walk(self, cp: _Piece, p: int) -> tuple[Chunk[_Piece], int, int, _Piece] | None:
        """Find ``p`` near the cursor piece (at most a few pieces away, same chunk), or None."""
        chunk = cp.chunk
        pieces = chunk.items
        pi = pieces.index(cp)
        s = self._cur_start
        if p >= s:
            off = p - s
            end = min(len(pieces), pi + _WALK_MAX_PIECES)
            while pi < end:
                piece = pieces[pi]
                v = piece.vis
                if off < v:
                    return chunk, pi, off, piece
                off -= v
                pi += 1
            return None
        end = max(0, pi - _WALK_MAX_PIECES)
        while pi > end:
            pi -= 1
            piece = pieces[pi]
            s -= piece.vis
            if s <= p:
                return chunk, pi, p - s, piece
        return None

    def _where(self, piece: _Piece) -> tuple[Chunk[_Piece], int]:
        chunk = piece.chunk
        return chunk, chunk.items.index(piece)

    def _find(self, a: int, ctr: int) -> _Piece:
        e = self._entry_at(a, ctr)
        if not isinstance(e, _Ins):
            raise WireError(f"({self._names[a]!r}, {ctr}) is not an inserted character")
        if not self._indexed:
            self._build_index()
        return e.pieces[bisect_right(e.piece_starts, ctr) - 1]

    def _build_index(self) -> None:
        """Fill every insert entry's sorted piece list (kept up to date from now on)."""
        for log in self._log:
            for e in log:
                if isinstance(e, _Ins):
                    e.pieces.clear()
        for p in self._tree.items():
            p.entry.pieces.append(p)
        for log in self._log:
            for e in log:
                if isinstance(e, _Ins):
                    e.pieces.sort(key=lambda p: p.start)
                    e.piece_starts = [p.start for p in e.pieces]
        self._indexed = True

    def _split(self, chunk: Chunk[_Piece], pi: int, k: int) -> _Piece:
        """Split piece ``pi`` of ``chunk`` after ``k`` chars; returns the second half."""
        p = chunk.items[pi]
        rest = p.length - k
        q = _Piece(p.agent, p.start + k, rest, rest if p.vis else 0, chunk, p.entry)
        p.length = k
        if p.vis:
            p.vis = k
        self._tree.insert_split(chunk, pi + 1, q)
        if self._indexed:
            e = p.entry
            j = bisect_right(e.piece_starts, p.start)
            e.pieces.insert(j, q)
            e.piece_starts.insert(j, q.start)
        self._right_kids[((q.start - 1) << _SHIFT) | p.agent] = [(q.start << _SHIFT) | p.agent]
        return q

    def _put(self, chunk: Chunk[_Piece], pi: int, piece: _Piece) -> None:
        self._tree.insert(chunk, pi, piece)
        self._len += piece.vis

    def _next_piece(self, chunk: Chunk[_Piece], pi: int) -> _Piece:
        pieces = chunk.items
        if pi + 1 < len(pieces):
            return pieces[pi + 1]
        nxt = chunk.next  # leaves other than the first one are never empty
        if nxt is None or not nxt.items:
            raise AssertionError("a character with right children is last in the list")
        return nxt.items[0]

    # ----------------------------------------------------------------- local edits
    def _local_insert(self, pos: int, text: str) -> None:
        n = len(text)
        me = self._me
        c = self._ver[me] + 1
        if n == 1:
            self._chars[me].append(text)
        else:
            self._chars[me].extend(text)
        self._ver[me] = c + n - 1
        if pos == self._hot_pos:
            piece = self._hot_piece
            assert piece is not None
            self._extend(piece, n)
            self._hot_pos = pos + n
            return
        if pos == 0:
            chunk, pi = self._tree.first, 0
            first = chunk.items
            if first:
                parent, side = (first[0].start << _SHIFT) | first[0].agent, _LEFT
            else:
                parent, side = _ROOT, _RIGHT
        else:
            chunk, pi, off, piece = self._locate(pos - 1)
            xctr = piece.start + off
            pi += 1
            if off < piece.length - 1:
                self._split(chunk, pi - 1, off + 1)
                parent, side = ((xctr + 1) << _SHIFT) | piece.agent, _LEFT
            else:
                xkey = (xctr << _SHIFT) | piece.agent
                if xkey in self._right_kids:
                    nxt = self._next_piece(chunk, pi - 1)
                    parent, side = (nxt.start << _SHIFT) | nxt.agent, _LEFT
                elif piece.agent == me and xctr == c - 1:
                    self._extend(piece, n)
                    self._hot_pos, self._hot_piece = pos + n, piece
                    self._cur_piece, self._cur_start = piece, pos - off - 1
                    return
                else:
                    parent, side = xkey, _RIGHT
        piece = self._new_run(me, c, n, parent, side, chunk, pi)
        self._hot_pos, self._hot_piece = pos + n, piece
        self._cur_piece, self._cur_start = piece, pos

    def _extend(self, piece: _Piece, n: int) -> None:
        """Grow a visible piece ending its entry by ``n`` ids (the run goes on)."""
        piece.length += n
        piece.vis += n
        piece.entry.length += n
        add_vis(piece.chunk, n)
        self._len += n

    def _new_run(
        self, a: int, c: int, n: int, parent: int, side: int, chunk: Chunk[_Piece], pi: int
    ) -> _Piece:
        """Log a new insert entry and put its piece at ``(chunk, pi)``; registers the child."""
        self._seq += 1
        entry = _Ins(c, n, parent, side, self._seq)
        self._append_entry(a, entry)
        piece = _Piece(a, c, n, n, chunk, entry)
        if self._indexed:
            entry.pieces.append(piece)
            entry.piece_starts.append(c)
        kids = self._right_kids if side == _RIGHT else self._left_kids
        key = (c << _SHIFT) | a
        lst = kids.get(parent)
        if lst is None:
            kids[parent] = [key]
        else:
            lst.append(key)
        self._put(chunk, pi, piece)
        return piece

    def _local_delete(self, pos: int, count: int) -> None:
        self._hot_pos = -1
        me = self._me
        c = self._ver[me] + 1
        targets: list[list[int]] = []
        remaining = count
        while remaining > 0:
            chunk, pi, off, piece = self._locate(pos)
            if off:
                piece = self._split(chunk, pi, off)
                pi += 1
            take = piece.vis
            if take > remaining:
                self._split(chunk, pi, remaining)
                take = remaining
            self._tombstone(piece)
            _merge_target(targets, piece.agent, piece.start, take)
            remaining -= take
            self._cur_piece, self._cur_start = piece, pos
        self._log_delete(me, c, count, targets)

    def _tombstone(self, piece: _Piece) -> None:
        take = piece.vis
        piece.vis = 0
        add_vis(piece.chunk, -take)
        self._len -= take

    def _log_delete(self, a: int, c: int, count: int, targets: list[list[int]]) -> None:
        if count == 1:
            self._chars[a].append("")
        else:
            self._chars[a].extend(repeat("", count))
        self._ver[a] = c + count - 1
        log = self._log[a]
        if log:
            last = log[-1]
            if isinstance(last, _Del) and last.start + last.length == c:
                last.length += count
                for t in targets:
                    _merge_target(last.targets, t[0], t[1], t[2])
                return
        self._seq += 1
        self._append_entry(a, _Del(c, count, targets, self._seq))

    # ----------------------------------------------------------------- remote ops
    def _import(self, ops: list[TextOp]) -> list[_Op]:
        """Check ops against this doc (no change on error) and map names to agents."""
        deletes: dict[str, list[int]] = {}  # per replica: sorted [lo, hi, lo, hi, ...]
        for op in ops:
            if not op.text:
                deletes.setdefault(op.replica, []).extend((op.counter, op.counter + op.length))
        for spans in deletes.values():
            pairs = sorted(zip(spans[::2], spans[1::2], strict=True))
            spans[:] = [x for pair in pairs for x in pair]
        for op in ops:
            if op.text and op.parent_counter:
                self._check_char(op, op.parent_replica, op.parent_counter, deletes)
            for name, ctr, length in op.targets:
                lo, hi = _span(ctr, length)
                self._check_char(op, name, lo, deletes)
                self._check_char(op, name, hi - 1, deletes)
        return [self._internal(op) for op in ops]

    def _check_char(
        self,
        op: TextOp,
        name: str,
        ctr: int,
        deletes: dict[str, list[int]],
    ) -> None:
        a = self._agent_of.get(name)
        known = self._entry_at(a, ctr) if a is not None else None
        spans = deletes.get(name, [])
        bad = isinstance(known, _Del) or (
            known is None and bisect_right(spans, ctr) % 2 == 1  # inside some [lo, hi)
        )
        if bad:
            raise WireError(f"op ({op.replica!r}, {op.counter}) refers to ({name!r}, {ctr}), "
                            "which is a delete, not a character")

    def _internal(self, op: TextOp) -> _Op:
        a = self._agent(op.replica)
        if op.text:
            parent = ((op.parent_counter << _SHIFT) | self._agent(op.parent_replica)
                      if op.parent_counter else _ROOT)
            return _InsOp(a, op.counter, op.text, parent, _RIGHT if op.right else _LEFT)
        targets = tuple((self._agent(n), c, ln) for n, c, ln in op.targets)
        return _DelOp(a, op.counter, op.length, targets)

    def _missing(self, op: _Op) -> tuple[int, int] | None:
        ver = self._ver
        if ver[op.agent] < op.ctr - 1:
            return op.agent, op.ctr - 1
        if isinstance(op, _InsOp):
            pa, pc = op.parent & _MASK, op.parent >> _SHIFT
            if op.parent and ver[pa] < pc:
                return pa, pc
            return None
        for ta, tc, tl in op.targets:
            hi = tc + tl - 1 if tl > 0 else tc
            if ver[ta] < hi:
                return ta, hi
        return None

    def _deliver(self, ops: list[_Op]) -> None:
        stack = list(reversed(ops))
        while stack:
            op = stack.pop()
            have = self._ver[op.agent]
            size = len(op.text) if isinstance(op, _InsOp) else op.length
            if op.ctr + size - 1 <= have:
                continue
            if op.ctr <= have:
                op = self._trim(op, have + 1 - op.ctr)
            miss = self._missing(op)
            if miss is not None:
                if self._pending >= self.max_pending_ops:
                    self.dropped_ops += 1  # bounded buffer: the sender's anti-entropy resends
                    continue
                self._seq += 1
                heappush(self._waiting.setdefault(miss[0], []), (miss[1], self._seq, op))
                self._pending += 1
                continue
            self._hot_pos = -1
            self._cur_piece = None
            if not self._ready_ok(op):
                self.rejected_ops += 1
                continue
            if isinstance(op, _InsOp):
                self._apply_insert(op)
            else:
                self._apply_delete(op)
            if self._tree.overfull:
                self._tree.fix()
            heap = self._waiting.get(op.agent)
            ver = self._ver[op.agent]
            while heap and heap[0][0] <= ver:
                stack.append(heappop(heap)[2])
                self._pending -= 1
        if self._tree.overfull:
            self._tree.fix()

    def _ready_ok(self, op: _Op) -> bool:
        """Whether every id ``op`` refers to is an inserted character (not a delete)."""
        if isinstance(op, _InsOp):
            pc = op.parent >> _SHIFT
            return not op.parent or self._all_chars(op.parent & _MASK, pc, pc + 1)
        return all(self._all_chars(ta, *_span(tc, tl)) for ta, tc, tl in op.targets)

    def _all_chars(self, a: int, lo: int, hi: int) -> bool:
        starts = self._log_starts[a]
        log = self._log[a]
        i = bisect_right(starts, lo) - 1
        while lo < hi:
            if i < 0 or i >= len(log) or not isinstance(log[i], _Ins):
                return False
            lo = log[i].start + log[i].length
            i += 1
        return True

    def _trim(self, op: _Op, skip: int) -> _Op:
        if isinstance(op, _InsOp):
            c = op.ctr + skip
            return _InsOp(op.agent, c, op.text[skip:], ((c - 1) << _SHIFT) | op.agent, _RIGHT)
        rest = _drop_targets(op.targets, skip)
        return _DelOp(op.agent, op.ctr + skip, op.length - skip,
                      tuple((t[0], t[1], t[2]) for t in rest))

    def _order(self, key: int) -> tuple[str, int]:
        return (self._names[key & _MASK], key >> _SHIFT)

    def _apply_insert(self, op: _InsOp) -> None:
        if not self._indexed:
            self._build_index()
        a, c, text, parent, side = op
        n = len(text)
        self._chars[a].extend(text)
        self._ver[a] = c + n - 1
        me_order = (self._names[a], c)
        if side == _RIGHT:
            chunk, pi, extend = self._place_right(a, c, parent, me_order)
        else:
            chunk, pi = self._place_left(parent, me_order)
            extend = None
        log = self._log[a]
        last = log[-1] if log else None
        chained = (isinstance(last, _Ins) and last.start + last.length == c
                   and parent == ((c - 1) << _SHIFT) | a and side == _RIGHT)
        if extend is not None:
            assert isinstance(last, _Ins) and chained
            extend.length += n
            extend.vis += n
            last.length += n
            add_vis(extend.chunk, n)
            self._len += n
        elif chained:
            assert isinstance(last, _Ins)
            last.length += n
            piece = _Piece(a, c, n, n, chunk, last)
            last.pieces.append(piece)
            last.piece_starts.append(c)
            self._right_kids.setdefault(parent, []).append((c << _SHIFT) | a)
            self._put(chunk, pi, piece)
        else:
            self._new_run(a, c, n, parent, side, chunk, pi)

    def _place_right(
        self, a: int, c: int, parent: int, me_order: tuple[str, int]
    ) -> tuple[Chunk[_Piece], int, _Piece | None]:
        """Where a new right child of ``parent`` goes: (chunk, index, piece to extend)."""
        kids = self._right_kids.get(parent, [])
        order = self._order
        if parent == _ROOT:
            pred = max((k for k in kids if order(k) < me_order), key=order, default=None)
            if pred is None:
                return self._tree.first, 0, None
            return self._after(self._subtree_end(pred))
        pa, pc = parent & _MASK, parent >> _SHIFT
        p = self._find(pa, pc)
        interior = pc < p.start + p.length - 1
        cands = [*kids, ((pc + 1) << _SHIFT) | pa] if interior else kids
        pred = max((k for k in cands if order(k) < me_order), key=order, default=None)
        if pred is None:
            chunk, pi = self._where(p)
            if interior:
                self._split(chunk, pi, pc + 1 - p.start)
                return chunk, pi + 1, None
            if not kids and p.vis and pa == a and pc == c - 1:
                return chunk, pi, p
            return chunk, pi + 1, None
        if interior:
            chunk, pi = self._where(p)
            self._split(chunk, pi, pc + 1 - p.start)
        return self._after(self._subtree_end(pred))

    def _after(self, piece: _Piece) -> tuple[Chunk[_Piece], int, None]:
        chunk, pi = self._where(piece)
        return chunk, pi + 1, None

    def _place_left(self, parent: int, me_order: tuple[str, int]) -> tuple[Chunk[_Piece], int]:
        """Where a new left child of ``parent`` goes: (chunk, index)."""
        if parent == _ROOT:
            raise WireError("the root has no left children")
        order = self._order
        kids = self._left_kids.get(parent, [])
        succ = min((k for k in kids if order(k) > me_order), key=order, default=None)
        target = parent if succ is None else self._subtree_start(succ)
        ta, tc = target & _MASK, target >> _SHIFT
        p = self._find(ta, tc)
        chunk, pi = self._where(p)
        if tc > p.start:
            self._split(chunk, pi, tc - p.start)
            pi += 1
        return chunk, pi

    def _subtree_end(self, key: int) -> _Piece:
        """The piece whose last character ends the subtree of ``key`` in list order."""
        order = self._order
        for _ in range(sum(self._ver) + 1):
            p = self._find(key & _MASK, key >> _SHIFT)
            kids = self._right_kids.get(((p.start + p.length - 1) << _SHIFT) | p.agent)
            if not kids:
                return p
            key = max(kids, key=order)
        raise AssertionError("Fugue tree walk did not end")

    def _subtree_start(self, key: int) -> int:
        """The first character (key) of the subtree of ``key`` in list order."""
        order = self._order
        for _ in range(sum(self._ver) + 1):
            kids = self._left_kids.get(key)
            if not kids:
                return key
            key = min(kids, key=order)
        raise AssertionError("Fugue tree walk did not end")

    def _apply_delete(self, op: _DelOp) -> None:
        if not self._indexed:
            self._build_index()
        targets: list[list[int]] = []
        for ta, tc, tl in op.targets:
            lo, hi = _span(tc, tl)
            cur = lo
            while cur < hi:
                p = self._find(ta, cur)
                end = min(p.start + p.length, hi)
                if p.vis:
                    chunk, pi = self._where(p)
                    if cur > p.start:
                        p = self._split(chunk, pi, cur - p.start)
                        pi += 1
                    if end < p.start + p.length:
                        self._split(chunk, pi, end - p.start)
                    self._tombstone(p)
                cur = end
            targets.append([ta, tc, tl])
        self._log_delete(op.agent, op.ctr, op.length, targets)

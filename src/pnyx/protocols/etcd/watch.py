"""A pure etcd v3 watch hub: watchers over the MVCC store's history and new revisions.

One :class:`WatchHub` lives beside the state machine on each node.  The server opens a
*stream* per gRPC ``Watch`` call (:meth:`WatchHub.open_stream`), hands it each
``WatchRequest`` (:meth:`WatchHub.request`), calls :meth:`WatchHub.advance` after applying
committed entries, and sends what :meth:`WatchHub.take` returns.  Responses are
:class:`~pnyx.protocols.etcd.requests.WatchResponse` structs, field for field etcd's.

Watchers are *synced* (they have every event up to the hub's revision and get new
revisions as they are applied) or *unsynced* (behind: created with a past start revision,
or their stream's outbox was full).  An unsynced watcher is caught up from the MVCC
history in batches of at most ``batch_revisions`` revisions, never by queueing without
bound (etcd's ``watchableStore`` synced/unsynced groups); its stream's outbox holds at most
``max_pending_responses`` responses.  Every watcher sees its events in revision order, with
no gap and no duplicate, or is canceled with ``compact_revision`` set when the history it
needs was compacted.  Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec

from pnyx.protocols.etcd.errors import MSG_COMPACTED
from pnyx.protocols.etcd.machine import EtcdStore
from pnyx.protocols.etcd.mvcc import MvccStore
from pnyx.protocols.etcd.requests import (
    Event,
    EventType,
    FilterType,
    ResponseHeader,
    WatchCreateRequest,
    WatchRequest,
    WatchResponse,
)
from pnyx.protocols.etcd.validate import DEFAULT_MAX_REQUEST_BYTES

INVALID_WATCH_ID = -1
"""``watch_id`` of a refused create and of a stream-wide progress notification."""

MSG_EMPTY_WATCHER_RANGE = "mvcc: watcher range is empty"
MSG_DUPLICATE_WATCH_ID = "mvcc: duplicate watch ID provided on the WatchStream"

DEFAULT_MAX_PENDING_RESPONSES = 128
"""Responses a stream may hold before its watchers fall back to unsynced catch-up."""
DEFAULT_BATCH_REVISIONS = 1000
"""Revisions an unsynced watcher catches up per step (etcd's ``watchBatchMaxRevs``)."""

_RESPONSE_OVERHEAD_BYTES = 64


def _msgpack_size(event: Event) -> int:
    return len(msgspec.msgpack.encode(event))


@dataclass
class Watcher:
    """One watcher: its range (etcd's Range rules), options and delivery position."""

    stream: int
    watch_id: int
    key: bytes
    range_end: bytes
    prev_kv: bool
    filters: frozenset[int]
    progress_notify: bool
    fragment: bool
    next_rev: int
    """The lowest revision not yet delivered (for a synced watcher: not below this)."""
    synced: bool = False
    fresh: bool = True
    """Not yet caught up once: may start exactly at the compact revision (as etcd)."""
    quiet: bool = True
    """No events sent since the last progress tick."""

    def covers(self, key: bytes) -> bool:
        """Is ``key`` in this watcher's range?"""
        if not self.range_end:
            return key == self.key
        if self.range_end == b"\0":
            return key >= self.key
        return self.key <= key < self.range_end

    def wants(self, event: Event) -> bool:
        """Does the event pass the NOPUT / NODELETE filters?"""
        if event.type == EventType.PUT:
            return FilterType.NOPUT not in self.filters
        return FilterType.NODELETE not in self.filters


@dataclass
class _Stream:
    outbox: deque[WatchResponse] = field(default_factory=deque)
    watchers: dict[int, Watcher] = field(default_factory=dict)
    next_auto_id: int = 0
    progress_pending: bool = False
    unsynced: set[int] = field(default_factory=set)
    """Ids of the stream's watchers that are behind (caught up from history)."""


class WatchHub:
    """Watchers of one node over ``store`` (an :class:`EtcdStore` or an
    :class:`MvccStore`).

    Call order for a server: ``advance()`` after each batch of applied entries (cheap when
    nothing changed), ``request(stream, WatchRequest)`` per client message, ``take(stream)``
    to get what to send (it also catches up the stream's lagging watchers), and
    ``progress_tick()`` every progress interval.  ``event_size`` measures an event for
    fragmenting (the gRPC layer may pass the protobuf size); ``max_response_bytes`` bounds
    a fragment (etcd uses ``--max-request-bytes``).
    """

    def __init__(
        self,
        store: EtcdStore | MvccStore,
        *,
        max_pending_responses: int = DEFAULT_MAX_PENDING_RESPONSES,
        batch_revisions: int = DEFAULT_BATCH_REVISIONS,
        max_response_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
        event_size: Callable[[Event], int] = _msgpack_size,
    ) -> None:
        if max_pending_responses < 1 or batch_revisions < 1 or max_response_bytes < 1:
            raise ValueError("max_pending_responses, batch_revisions, max_response_bytes >= 1")
        self._store = store
        self.max_pending_responses = max_pending_responses
        self.batch_revisions = batch_revisions
        self.max_response_bytes = max_response_bytes
        self.event_size = event_size
        self.revision = self.mvcc.current_revision
        """Every synced watcher has been given the events up to this revision."""
        self._streams: dict[int, _Stream] = {}
        self._next_stream = 1
        self._key_watchers: dict[bytes, set[tuple[int, int]]] = {}
        self._range_watchers: set[tuple[int, int]] = set()

    @property
    def mvcc(self) -> MvccStore:
        """The MVCC store (looked up each time: a restore replaces it)."""
        store = self._store
        return store.mvcc if isinstance(store, EtcdStore) else store

    # ----------------------------------------------------------------- streams

    def open_stream(self) -> int:
        """A new watch stream (one gRPC ``Watch`` call); returns its id."""
        stream_id = self._next_stream
        self._next_stream += 1
        self._streams[stream_id] = _Stream()
        return stream_id

    def close_stream(self, stream_id: int) -> None:
        """Drop a stream and all its watchers (the client went away)."""
        stream = self._streams.pop(stream_id, None)
        if stream is None:
            return
        for w in stream.watchers.values():
            self._unindex(w)

    def watchers(self, stream_id: int) -> list[Watcher]:
        """The stream's watchers (read-only view, for status and tests)."""
        return list(self._streams[stream_id].watchers.values())

    def has_output(self, stream_id: int) -> bool:
        """Would :meth:`take` return something (responses queued or a watcher behind)?"""
        stream = self._streams[stream_id]
        return bool(stream.outbox) or bool(stream.unsynced)

    # ----------------------------------------------------------------- requests

    def request(self, stream_id: int, request: WatchRequest) -> None:
        """Handle one client message of the stream: create, cancel or progress."""
        self.advance()
        stream = self._streams[stream_id]
        if request.create_request is not None:
            self._create(stream_id, stream, request.create_request)
        elif request.cancel_request is not None:
            self._cancel(stream, request.cancel_request.watch_id)
        elif request.progress_request is not None:
            stream.progress_pending = True
            self._maybe_progress(stream)

    def _create(self, stream_id: int, stream: _Stream, c: WatchCreateRequest) -> None:
        current = self.mvcc.current_revision
        refusal = self._refusal(stream, c)
        if refusal:
            stream.outbox.append(
                WatchResponse(
                    header=ResponseHeader(revision=current),
                    watch_id=INVALID_WATCH_ID,
                    created=True,
                    canceled=True,
                    cancel_reason=refusal,
                )
            )
            return
        watch_id = c.watch_id
        if watch_id == 0:
            while stream.next_auto_id in stream.watchers:
                stream.next_auto_id += 1
            watch_id = stream.next_auto_id
            stream.next_auto_id += 1
        start = c.start_revision if c.start_revision > 0 else current + 1
        w = Watcher(
            stream=stream_id,
            watch_id=watch_id,
            key=c.key,
            range_end=c.range_end,
            prev_kv=c.prev_kv,
            filters=frozenset(c.filters),
            progress_notify=c.progress_notify,
            fragment=c.fragment,
            next_rev=start,
            synced=start > self.revision,
        )
        stream.watchers[watch_id] = w
        if not w.synced:
            stream.unsynced.add(watch_id)
        self._index(w)
        stream.outbox.append(
            WatchResponse(header=ResponseHeader(revision=current), watch_id=watch_id, created=True)
        )
        if not w.synced:
            self._catch_up(stream, w)

    def _refusal(self, stream: _Stream, c: WatchCreateRequest) -> str:
        if c.start_revision < 0:
            return MSG_COMPACTED
        if c.range_end and c.range_end != b"\0" and c.key >= c.range_end:
            return MSG_EMPTY_WATCHER_RANGE
        if c.watch_id != 0 and c.watch_id in stream.watchers:
            return MSG_DUPLICATE_WATCH_ID
        return ""

    def _cancel(self, stream: _Stream, watch_id: int) -> None:
        w = stream.watchers.pop(watch_id, None)
        if w is None:
            return  # etcd answers nothing for an unknown id
        stream.unsynced.discard(watch_id)
        self._unindex(w)
        stream.outbox.append(
            WatchResponse(
                header=ResponseHeader(revision=self.mvcc.current_revision),
                watch_id=watch_id,
                canceled=True,
            )
        )
        self._maybe_progress(stream)

    # ----------------------------------------------------------------- delivery

    def advance(self) -> None:
        """Deliver the revisions applied since the last call to synced watchers (from
        the store's recent events; from history when those are gone), then catch up
        unsynced watchers whose stream has room."""
        mvcc = self.mvcc
        current = mvcc.current_revision
        if current < self.revision:
            self.revision = current  # a restore went back: nothing to deliver
        if current > self.revision:
            recent = [(rev, evs) for rev, evs in mvcc.recent if rev > self.revision]
            if recent and recent[0][0] == self.revision + 1 and recent[-1][0] == current:
                for rev, events in recent:
                    self._deliver(rev, events)
            else:
                self._desync_all(self.revision + 1, current)
            self.revision = current
        for stream in self._streams.values():
            if stream.unsynced or stream.progress_pending:
                self._catch_up_stream(stream)

    def take(self, stream_id: int, max_responses: int | None = None) -> list[WatchResponse]:
        """The responses to send on the stream now, in order (at most ``max_responses``).
        Taking makes room, so lagging watchers of the stream are caught up first."""
        stream = self._streams[stream_id]
        if stream.unsynced or stream.progress_pending:
            self._catch_up_stream(stream)
        out: list[WatchResponse] = []
        while stream.outbox and (max_responses is None or len(out) < max_responses):
            out.append(stream.outbox.popleft())
        return out

    def progress_tick(self) -> None:
        """The progress interval passed: every synced ``progress_notify`` watcher that got
        no events since the last tick gets an empty response at the hub's revision."""
        header = ResponseHeader(revision=self.revision)
        for stream in self._streams.values():
            for w in stream.watchers.values():
                if w.progress_notify and w.synced and w.quiet:
                    stream.outbox.append(WatchResponse(header=header, watch_id=w.watch_id))
                w.quiet = True

    def _deliver(self, rev: int, events: list[Event]) -> None:
        matched: dict[tuple[int, int], list[Event]] = {}
        for ev in events:
            key = ev.kv.key if ev.kv is not None else b""
            for ref in self._key_watchers.get(key, ()):
                matched.setdefault(ref, []).append(ev)
            for ref in self._range_watchers:
                w = self._watcher(ref)
                if w is not None and w.covers(key):
                    matched.setdefault(ref, []).append(ev)
        for ref, evs in matched.items():
            w = self._watcher(ref)
            if w is None or not w.synced or rev < w.next_rev:
                continue
            stream = self._streams[w.stream]
            if len(stream.outbox) >= self.max_pending_responses:
                w.synced, w.next_rev = False, rev  # too far behind: catch up from history
                stream.unsynced.add(w.watch_id)
                continue
            self._send(stream, w, rev, evs)

    def _desync_all(self, first_missed: int, current: int) -> None:
        """Revisions ``first_missed..current`` cannot be delivered from recent events:
        every synced watcher that wants any of them catches up from history instead."""
        for stream in self._streams.values():
            for w in stream.watchers.values():
                if w.synced and w.next_rev <= current:
                    w.synced, w.next_rev = False, max(w.next_rev, first_missed)
                    stream.unsynced.add(w.watch_id)

    def _catch_up_stream(self, stream: _Stream) -> None:
        for watch_id in sorted(stream.unsynced):
            w = stream.watchers[watch_id]
            while not w.synced and len(stream.outbox) < self.max_pending_responses:
                if not self._catch_up(stream, w):
                    break
        self._maybe_progress(stream)

    def _catch_up(self, stream: _Stream, w: Watcher) -> bool:
        """One batch of history for an unsynced watcher; False once it is gone."""
        mvcc = self.mvcc
        compact = mvcc.compact_revision
        if w.next_rev < compact or (w.next_rev == compact and not w.fresh):
            self._compacted(stream, w, compact)
            return False
        w.fresh = False
        if w.next_rev > self.revision:
            w.synced = True
            stream.unsynced.discard(w.watch_id)
            return True
        upto = min(self.revision, w.next_rev - 1 + self.batch_revisions)
        events = mvcc.events_between(w.key, w.range_end, w.next_rev - 1, upto)
        if events:
            self._send(stream, w, self.revision, events)
        w.next_rev = upto + 1
        if w.next_rev > self.revision:
            w.synced = True
            stream.unsynced.discard(w.watch_id)
        return True

    def _compacted(self, stream: _Stream, w: Watcher, compact: int) -> None:
        del stream.watchers[w.watch_id]
        stream.unsynced.discard(w.watch_id)
        self._unindex(w)
        stream.outbox.append(
            WatchResponse(watch_id=w.watch_id, canceled=True, compact_revision=compact)
        )

    def _send(self, stream: _Stream, w: Watcher, rev: int, events: list[Event]) -> None:
        """Queue ``events`` for ``w`` (filtered; prev_kv dropped unless asked), fragmented
        when the watcher asked for it and they exceed ``max_response_bytes``."""
        evs = [
            ev if w.prev_kv or ev.prev_kv is None else msgspec.structs.replace(ev, prev_kv=None)
            for ev in events
            if w.covers(ev.kv.key if ev.kv is not None else b"") and w.wants(ev)
        ]
        if not evs:
            return
        w.quiet = False
        header = ResponseHeader(revision=rev)
        parts = self._fragments(evs) if w.fragment else [evs]
        for i, part in enumerate(parts):
            stream.outbox.append(
                WatchResponse(
                    header=header,
                    watch_id=w.watch_id,
                    events=part,
                    fragment=i < len(parts) - 1,
                )
            )

    def _fragments(self, events: list[Event]) -> list[list[Event]]:
        """Split into parts of at most ``max_response_bytes`` (one event at least each)."""
        parts: list[list[Event]] = [[]]
        size = _RESPONSE_OVERHEAD_BYTES
        for ev in events:
            ev_bytes = self.event_size(ev)
            if parts[-1] and size + ev_bytes > self.max_response_bytes:
                parts.append([])
                size = _RESPONSE_OVERHEAD_BYTES
            parts[-1].append(ev)
            size += ev_bytes
        return parts

    def _maybe_progress(self, stream: _Stream) -> None:
        """Answer a pending progress request once every watcher of the stream is synced
        (so the revision it reports really is complete for all of them)."""
        if stream.progress_pending and not stream.unsynced:
            stream.progress_pending = False
            stream.outbox.append(
                WatchResponse(
                    header=ResponseHeader(revision=self.revision), watch_id=INVALID_WATCH_ID
                )
            )

    def invariants(self) -> None:
        """Check the bookkeeping; raise :class:`RuntimeError` on the first break."""
        indexed = 0
        for stream_id, stream in self._streams.items():
            behind = {i for i, w in stream.watchers.items() if not w.synced}
            if behind != stream.unsynced:
                raise RuntimeError(f"stream {stream_id}: unsynced {stream.unsynced} != {behind}")
            for watch_id, w in stream.watchers.items():
                if (w.stream, w.watch_id) != (stream_id, watch_id):
                    raise RuntimeError(f"watcher {w} filed under {stream_id}/{watch_id}")
                if not w.synced and w.next_rev > self.revision + 1:
                    raise RuntimeError(f"unsynced watcher {w} ahead of the hub {self.revision}")
                indexed += 1
        refs = len(self._range_watchers) + sum(len(r) for r in self._key_watchers.values())
        if refs != indexed:
            raise RuntimeError(f"{refs} index entries for {indexed} watchers")

    # ----------------------------------------------------------------- index

    def _watcher(self, ref: tuple[int, int]) -> Watcher | None:
        stream = self._streams.get(ref[0])
        return None if stream is None else stream.watchers.get(ref[1])

    def _index(self, w: Watcher) -> None:
        ref = (w.stream, w.watch_id)
        if w.range_end:
            self._range_watchers.add(ref)
        else:
            self._key_watchers.setdefault(w.key, set()).add(ref)

    def _unindex(self, w: Watcher) -> None:
        ref = (w.stream, w.watch_id)
        if w.range_end:
            self._range_watchers.discard(ref)
            return
        refs = self._key_watchers.get(w.key)
        if refs is not None:
            refs.discard(ref)
            if not refs:
                del self._key_watchers[w.key]

"""``CrdtDoc``: a document of named CRDT fields, persisted, synced with peers, observable.

One replica of a document, usable embedded in an asyncio program or served by
``pnyx crdt serve``::

    doc = CrdtDoc("a", doc_id="notes", data_dir=Path("a"),
                  listen=("127.0.0.1", 7001), peers={"b": ("127.0.0.1", 7002)})
    await doc.start()                      # serve peers and control clients, anti-entropy
    doc.text("body").insert(0, "hello")    # durable when it returns, then pushed to peers
    doc.counter("likes").increment(2)
    doc.on_change(lambda event: print(event.field, event.local))
    await doc.stop()

A field is named and typed: ``doc.text("x")`` and ``doc.counter("x")`` are two fields.

Durability: with a ``data_dir``, a local edit is appended to the update log and
``fdatasync``\\ ed before the mutating call returns, or once at the end of a
:meth:`CrdtDoc.batch` block (``DocConfig.fsync=False`` skips the sync: benchmarks only —
after a power failure such a replica may have lost edits it had sent; move its data
directory aside so that it comes back as a new incarnation).  Nothing is sent to a peer
before it is durable, so a replica restarted from its data directory never reuses an
operation id; one whose directory is lost starts a new incarnation (new operation ids).
Updates received from peers are appended without their own sync (the next local edit's
sync, or the sync loop's, covers them); a crash may lose them and anti-entropy fetches them
again.

A store failure (disk full, I/O error) stops the document: later edits raise
:class:`DocError` (fail-stop, rather than accepting edits it cannot keep).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pnyx.runtime.datadir import DataDirError, LockHandle, lock_data_dir
from pnyx.runtime.transport import Address, TransportConfig
from pnyx.services.crdt.fields import FieldState, check_field_name
from pnyx.services.crdt.kinds import (
    STATE_KINDS,
    CounterHandle,
    GCounterHandle,
    GSetHandle,
    MapHandle,
    MVRegisterHandle,
    RegisterHandle,
    RWSetHandle,
    SetHandle,
    TwoPSetHandle,
)
from pnyx.services.crdt.messages import FieldPayload
from pnyx.services.crdt.names import check_replica_name
from pnyx.services.crdt.store import (
    FieldImage,
    Owner,
    StoreCorruptError,
    StoreError,
    Update,
    UpdateLog,
    recover,
    remove_temp_files,
    write_snapshot,
)
from pnyx.services.crdt.text_field import TextField, TextHandle

if TYPE_CHECKING:
    from pnyx.services.crdt.sync import DocSync

log = logging.getLogger("pnyx.services.crdt")

F = TypeVar("F", bound=FieldState)
FieldKey = tuple[str, str]
"""``(name, kind)``: a field's identity in a document."""


MAX_UNKNOWN_KINDS = 64
"""Distinct unknown field kinds counted (beyond, they are skipped without a count)."""
MIN_MESSAGE_BYTES = 4096
"""Smallest sync message budget accepted."""


class DocError(Exception):
    """The document cannot do what the caller asked (closed, failed, bad argument)."""


class RemoteUpdateError(ValueError):
    """An update received from a peer is malformed (the peer's connection gets closed)."""


@dataclass(frozen=True)
class ChangeEvent:
    """A field changed: ``local`` for this replica's own edit, else an update from ``origin``.

    ``origin`` is this replica for local edits and the sending peer for remote updates.
    """

    field: str
    kind: str
    local: bool
    origin: str


ChangeCallback = Callable[[ChangeEvent], None]


@dataclass(frozen=True)
class DocConfig:
    """Timing and bounds of a document replica (names carry their unit)."""

    sync_interval_ms: int = 100
    """Anti-entropy period: each peer is sent this replica's versions this often."""
    resend_after_ms: int = 1000
    """The same missing updates are sent to the same peer again only after this long."""
    max_message_bytes: int = 1024 * 1024
    """Budget of one sync message (updates beyond it go in further messages; local text
    edits are split so that each update fits; one state-based field's full state may go
    alone in a bigger message, up to the transport's ``max_frame_bytes``)."""
    compact_log_bytes: int = 4 * 1024 * 1024
    """When the update log grows beyond this, a snapshot replaces it."""
    max_fields: int = 10_000
    """Fields a document may hold (a peer trying to create more is cut off)."""
    fsync: bool = True
    """Sync every local edit before acknowledging it (False: benchmarks only)."""
    stop_timeout_s: float = 10.0
    """Bound on :meth:`CrdtDoc.stop`."""
    allow_test_partitions: bool = False
    """Fault testing only: accept ``partition``/``heal`` requests from control clients."""
    transport: TransportConfig = field(default_factory=TransportConfig)

    def __post_init__(self) -> None:
        for name in ("sync_interval_ms", "resend_after_ms", "max_fields"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be at least 1")
        if self.max_message_bytes < MIN_MESSAGE_BYTES:
            raise ValueError(
                f"max_message_bytes={self.max_message_bytes} is below {MIN_MESSAGE_BYTES}"
            )
        if self.max_message_bytes + 4096 > self.transport.max_frame_bytes:
            raise ValueError(
                f"max_message_bytes={self.max_message_bytes} does not fit in a frame "
                f"(transport max_frame_bytes={self.transport.max_frame_bytes})"
            )


class CrdtDoc:
    """One replica of a document of CRDT fields (see the module docstring).

    ``replica`` names this replica among its peers; ``doc_id`` names the document (every
    replica of it uses the same); ``data_dir`` makes it durable (None: in memory, a new
    incarnation each time); ``listen`` and ``peers`` (name → address, every other
    replica) are for :meth:`start`; ``kinds`` adds field kinds of the program's own
    (:class:`~pnyx.services.crdt.fields.FieldState` subclasses).  Opening a data directory
    that is damaged or belongs to another replica raises
    :class:`~pnyx.services.crdt.store.StoreError` and changes nothing.
    """

    def __init__(
        self,
        replica: str,
        *,
        doc_id: str = "doc",
        data_dir: Path | None = None,
        listen: Address | None = None,
        peers: Mapping[str, Address] | None = None,
        config: DocConfig | None = None,
        kinds: Iterable[type[FieldState]] = (),
    ) -> None:
        self.replica = check_replica_name(replica)
        self.doc_id = check_replica_name(doc_id, what="document id")
        self.data_dir = data_dir
        self.config = config or DocConfig()
        self.listen = listen
        self.peers = dict(peers or {})
        self._kinds: dict[str, type[FieldState]] = _builtin_kinds()
        for kind in kinds:
            self._kinds[kind.kind] = kind
        self._fields: dict[FieldKey, FieldState] = {}
        self.owner = Owner(self.replica, self.doc_id, secrets.token_hex(4))
        """Replica, document and incarnation (read from ``data_dir`` when it has one)."""
        self._callbacks: list[ChangeCallback] = []
        self.unknown_kinds: dict[str, int] = {}
        """Updates skipped per field kind this replica does not know (bounded)."""
        self._held: list[FieldPayload] | None = None
        """Local updates of the open :meth:`batch` (None outside one)."""
        self._sync: DocSync | None = None
        self._log: UpdateLog | None = None
        self._lock: LockHandle | None = None
        self.failed: str | None = None
        """Why the document stopped accepting edits (a store failure, a stale identity)."""
        self.closed = False
        if data_dir is not None:
            self._open_store(data_dir)

    @property
    def origin(self) -> str:
        """The name this replica's operations carry: ``<replica>.<incarnation>``."""
        return self.owner.origin

    # -- fields --------------------------------------------------------------------------

    @property
    def kinds(self) -> list[str]:
        """Field kinds this document knows, sorted."""
        return sorted(self._kinds)

    def field(self, name: str, kind: str) -> FieldState:
        """The state of field ``(name, kind)``, created empty if new."""
        key = (check_field_name(name), kind)
        state = self._fields.get(key)
        if state is None:
            cls = self._kinds.get(kind)
            if cls is None:
                raise DocError(f"unknown field kind {kind!r}; known kinds: {self.kinds}")
            if len(self._fields) >= self.config.max_fields:
                raise DocError(f"document already holds max_fields={self.config.max_fields}")
            state = cls(self.origin)
            self._fields[key] = state
        return state

    def typed_field(self, name: str, cls: type[F]) -> F:
        """The state of field ``name`` of the registered kind ``cls``."""
        state = self.field(name, cls.kind)
        if not isinstance(state, cls):
            raise DocError(f"field {name!r} of kind {cls.kind!r} is a {type(state).__name__}")
        return state

    def fields(self) -> list[FieldKey]:
        """Every field ``(name, kind)``, sorted."""
        return sorted(self._fields)

    def has_field(self, name: str, kind: str) -> bool:
        """True when field ``(name, kind)`` exists."""
        return (name, kind) in self._fields

    def value(self) -> dict[str, dict[str, Any]]:
        """Every field's value: ``{name: {kind: value}}`` (plain JSON-like data)."""
        out: dict[str, dict[str, Any]] = {}
        for (name, kind), state in sorted(self._fields.items()):
            out.setdefault(name, {})[kind] = state.value()
        return out

    def versions(self) -> dict[FieldKey, dict[str, int]]:
        """Every field's version (replica → counter)."""
        return {key: state.version() for key, state in sorted(self._fields.items())}

    # typed accessors ---------------------------------------------------------------------

    def text(self, name: str) -> TextHandle:
        """Handle of text field ``name``: ``insert(pos, s)``, ``delete(pos, n)``, ``value()``."""
        return TextHandle(self, name)

    def counter(self, name: str) -> CounterHandle:
        """Handle of counter field ``name`` (PN-counter: ``increment``, ``decrement``)."""
        return CounterHandle(self, name)

    def gcounter(self, name: str) -> GCounterHandle:
        """Handle of grow-only counter field ``name`` (``increment``)."""
        return GCounterHandle(self, name)

    def set(self, name: str) -> SetHandle:
        """Handle of set field ``name`` (add-wins OR-Set: ``add``, ``remove``)."""
        return SetHandle(self, name)

    def rwset(self, name: str) -> RWSetHandle:
        """Handle of remove-wins set field ``name`` (``add``, ``remove``)."""
        return RWSetHandle(self, name)

    def gset(self, name: str) -> GSetHandle:
        """Handle of grow-only set field ``name`` (``add``)."""
        return GSetHandle(self, name)

    def twopset(self, name: str) -> TwoPSetHandle:
        """Handle of two-phase set field ``name`` (``add``, ``remove`` for good)."""
        return TwoPSetHandle(self, name)

    def register(self, name: str) -> RegisterHandle:
        """Handle of register field ``name`` (last-writer-wins: ``assign``)."""
        return RegisterHandle(self, name)

    def mvregister(self, name: str) -> MVRegisterHandle:
        """Handle of multi-value register field ``name`` (``assign``; concurrent writes kept)."""
        return MVRegisterHandle(self, name)

    def map(self, name: str) -> MapHandle:
        """Handle of map field ``name`` (OR-Map of multi-value registers: ``assign``,
        ``remove``)."""
        return MapHandle(self, name)

    # -- callbacks -----------------------------------------------------------------------

    def on_change(self, callback: ChangeCallback) -> Callable[[], None]:
        """Call ``callback(event)`` after every change; returns a function that unsubscribes.

        Callbacks run synchronously in the document's thread (the event loop when served);
        a local edit's callbacks run after it is durable.  A callback's exception is logged
        and does not affect the document.
        """
        self._callbacks.append(callback)

        def unsubscribe() -> None:
            if callback in self._callbacks:
                self._callbacks.remove(callback)

        return unsubscribe

    def _notify(self, event: ChangeEvent) -> None:
        for callback in list(self._callbacks):
            try:
                callback(event)
            except Exception:  # a user's callback never takes the document down
                log.exception("crdt_change_callback_failed field=%s", event.field)

    # -- local edits ---------------------------------------------------------------------

    def commit_local(self, name: str, state: FieldState, mutate: Callable[[], bytes]) -> bytes:
        """Run ``mutate`` (a local mutation of ``state`` returning its update payload), make
        the payload durable, push it to peers and notify callbacks.  Returns the payload.

        Inside :meth:`batch` the sync, the push and the callbacks wait for the batch's end.
        """
        self._check_writable()
        payload = mutate()
        kind = state.kind
        if self._held is not None:
            self._persist([Update(name, kind, payload)], sync=False)
            self._held.append(FieldPayload(name, kind, payload))
            return payload
        self._persist([Update(name, kind, payload)], sync=True)
        self._publish([FieldPayload(name, kind, payload)])
        return payload

    def _publish(self, payloads: list[FieldPayload]) -> None:
        """Durable local updates: push them, tell the callbacks, maybe compact."""
        if self._sync is not None and payloads:
            self._sync.push(payloads)
        for item in payloads:
            self._notify(ChangeEvent(item.name, item.kind, True, self.replica))
        self._maybe_compact()

    @property
    def holding(self) -> bool:
        """True inside :meth:`batch`: local updates exist that are not durable yet."""
        return self._held is not None

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Group local edits: one ``fdatasync`` for all of them when the block ends; then
        they are pushed and the callbacks run.  Until then the replica answers no peer
        (its state holds edits that are not durable).  Not re-entrant."""
        if self._held is not None:
            raise DocError("batch() is not re-entrant")
        self._held = []
        try:
            yield
        finally:
            held, self._held = self._held, None
            if held:
                self._persist([], sync=True)
                self._publish(held)

    def _check_writable(self) -> None:
        if self.closed:
            raise DocError(f"document {self.doc_id!r} of replica {self.replica!r} is closed")
        if self.failed is not None:
            raise DocError(f"replica {self.replica!r} stopped accepting edits: {self.failed}")

    def fail(self, reason: str) -> None:
        """Stop accepting edits (logged once); the reason is shown to later callers."""
        if self.failed is None:
            self.failed = reason
            log.error("crdt_doc_failed replica=%s reason=%s", self.replica, reason)

    # -- remote updates ------------------------------------------------------------------

    def apply_remote(self, origin: str, payloads: Iterable[FieldPayload]) -> list[FieldKey]:
        """Merge updates received from peer ``origin``; returns the fields that changed.

        Raises :class:`RemoteUpdateError` on the first malformed payload (those before it
        stay applied: each was valid on its own).  A field of a kind this replica does not
        know (a program's own kind) is skipped and counted in :attr:`unknown_kinds`.
        """
        if self.closed or self.failed is not None:
            return []  # a failed replica takes nothing more in (see DocSync.send_digests)
        changed: list[FieldKey] = []
        logged: list[Update] = []
        try:
            for item in payloads:
                state = self._remote_field(origin, item)
                if state is None:
                    continue
                try:
                    new = state.apply(item.data)
                except ValueError as exc:
                    raise RemoteUpdateError(
                        f"update of field {item.name!r} ({item.kind}) from {origin!r}: {exc}"
                    ) from exc
                self._fields.setdefault((item.name, item.kind), state)  # a new field: now valid
                if new:
                    logged.append(Update(item.name, item.kind, state.logged_form(item.data)))
                    if (item.name, item.kind) not in changed:
                        changed.append((item.name, item.kind))
        finally:
            self._persist(logged, sync=False)
        for name, kind in changed:
            self._notify(ChangeEvent(name, kind, False, origin))
        self._maybe_compact()
        return changed

    def _remote_field(self, origin: str, item: FieldPayload) -> FieldState | None:
        """The field an update is for (None: a kind not known here); a new one is added by
        the caller once its first update applied."""
        state = self._fields.get((item.name, item.kind))
        if state is not None:
            return state
        cls = self._kinds.get(item.kind)
        if cls is None:
            self._unknown_kind(origin, item.kind)
            return None
        try:
            check_field_name(item.name)
            if len(self._fields) >= self.config.max_fields:
                raise ValueError(f"document already holds max_fields={self.config.max_fields}")
        except ValueError as exc:
            raise RemoteUpdateError(f"update from {origin!r}: {exc}") from exc
        return cls(self.origin)

    def _unknown_kind(self, origin: str, kind: str) -> None:
        if kind not in self.unknown_kinds:
            if len(self.unknown_kinds) >= MAX_UNKNOWN_KINDS:
                return
            log.warning(
                "crdt_unknown_field_kind kind=%.64r from=%s known=%s: its fields are skipped",
                kind,
                origin,
                self.kinds,
            )
        self.unknown_kinds[kind] = self.unknown_kinds.get(kind, 0) + 1

    # -- persistence ---------------------------------------------------------------------

    def _open_store(self, data_dir: Path) -> None:
        try:
            self._lock = lock_data_dir(data_dir)
        except DataDirError as exc:
            raise StoreError(str(exc)) from exc
        try:
            remove_temp_files(data_dir)
            found = recover(data_dir, self.replica, self.doc_id)
            if found.incarnation is not None:
                self.owner = Owner(self.replica, self.doc_id, found.incarnation)
            for image in found.fields:
                self._load_image(data_dir, image)
            for index, update in enumerate(found.updates):
                self._replay(data_dir, index, update)
            self._log = UpdateLog(data_dir, self.owner, fsync=self.config.fsync)
            self._log.open(found.log_valid_bytes)
        except BaseException:
            self._lock.release()
            raise
        log.info(
            "crdt_doc_opened origin=%s doc=%s fields=%d replayed_updates=%d torn_bytes=%d",
            self.origin,
            self.doc_id,
            len(self._fields),
            len(found.updates),
            found.torn_bytes,
        )

    def _load_image(self, data_dir: Path, image: FieldImage) -> None:
        cls = self._kinds.get(image.kind)
        if cls is None:
            raise StoreCorruptError(
                f"{data_dir / 'snapshot.crdt'}: field {image.name!r} has unknown kind "
                f"{image.kind!r} (known: {self.kinds})"
            )
        try:
            self._fields[(image.name, image.kind)] = cls.decode(self.origin, image.state)
        except ValueError as exc:
            raise StoreCorruptError(
                f"{data_dir / 'snapshot.crdt'}: field {image.name!r} ({image.kind}) does not "
                f"decode: {exc}"
            ) from exc

    def _replay(self, data_dir: Path, index: int, update: Update) -> None:
        where = f"{data_dir / 'updates.log'} record {index + 1}"
        try:
            state = self.field(update.name, update.kind)
            state.apply(update.payload)
        except (DocError, ValueError) as exc:
            raise StoreCorruptError(
                f"{where}: update of field {update.name!r} ({update.kind}) does not apply: {exc}"
            ) from exc

    def _persist(self, updates: list[Update], *, sync: bool) -> None:
        if self._log is None or (not updates and not sync):
            return
        try:
            self._log.append(updates)
            if sync:
                self._log.sync()
        except OSError as exc:
            self.fail(f"cannot write {self._log.path}: {exc}")
            raise DocError(f"edit not durable: cannot write {self._log.path}: {exc}") from exc

    def sync_log(self) -> None:
        """Make updates received from peers durable too (called by the sync loop)."""
        if self._log is not None and self._log.unsynced and self.failed is None:
            self._persist([], sync=True)

    def _maybe_compact(self) -> None:
        if self._log is not None and self._log.size_bytes > self.config.compact_log_bytes:
            self.compact()

    def compact(self) -> None:
        """Write a snapshot of every field and empty the update log."""
        if self._log is None or self.data_dir is None:
            return
        images = [
            FieldImage(name, kind, state.encode())
            for (name, kind), state in sorted(self._fields.items())
        ]
        try:
            size = write_snapshot(self.data_dir, self.owner, images, fsync=self.config.fsync)
            self._log.reset()
        except OSError as exc:
            self.fail(f"cannot compact into {self.data_dir}: {exc}")
            return
        log.info("crdt_doc_compacted replica=%s snapshot_bytes=%d", self.replica, size)

    # -- lifecycle -----------------------------------------------------------------------

    @property
    def address(self) -> Address | None:
        """Where the replica listens (after :meth:`start`), else None."""
        return None if self._sync is None else self._sync.address

    @property
    def sync(self) -> DocSync | None:
        """The running sync service (after :meth:`start`), else None."""
        return self._sync

    async def start(self) -> None:
        """Listen for peers and control clients and start anti-entropy (needs ``listen``)."""
        from pnyx.services.crdt.sync import DocSync

        self._check_writable()
        if self._sync is not None:
            raise DocError("document already started")
        if self.listen is None:
            raise DocError("start() needs a listen address (host, port); port 0 picks one")
        sync = DocSync(self, self.listen, self.peers, self.config)
        await sync.start()
        self._sync = sync

    async def stop(self) -> None:
        """Stop syncing (bounded by ``config.stop_timeout_s``), compact and close files."""
        sync, self._sync = self._sync, None
        try:
            if sync is not None:
                async with asyncio.timeout(self.config.stop_timeout_s):
                    await sync.stop()
        except TimeoutError:
            log.warning(
                "crdt_doc_stop_timeout replica=%s timeout_s=%.1f",
                self.replica,
                self.config.stop_timeout_s,
            )
        finally:
            self.close()

    def close(self) -> None:
        """Close files and release the data directory (idempotent; no network stop)."""
        if self.closed:
            return
        self.closed = True
        if self._log is not None:
            try:
                if self.failed is None and self._log.size_bytes > 64 * 1024:
                    self.compact()
                self._log.close()
            except OSError as exc:
                log.error("crdt_doc_close_failed replica=%s error=%r", self.replica, exc)
        if self._lock is not None:
            self._lock.release()


def _builtin_kinds() -> dict[str, type[FieldState]]:
    kinds: tuple[type[FieldState], ...] = (TextField, *STATE_KINDS)
    return {cls.kind: cls for cls in kinds}

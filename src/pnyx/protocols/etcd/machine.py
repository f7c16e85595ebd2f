"""The etcd state machine a Raft node applies: MVCC store + lease table + sessions.

:class:`EtcdStore` is the data (a :class:`pnyx.core.StateMachine` without sessions):
the :class:`~pnyx.protocols.etcd.mvcc.MvccStore` and the replicated
:class:`~pnyx.protocols.etcd.lease.LeaseTable`, applied together so a lease revoke deletes
the lease's keys in one revision.  :class:`EtcdStateMachine` wraps it in
:class:`~pnyx.protocols.raft.sessions.SessionStateMachine` so a retried write (same
session, same sequence number) applies once and gets the first reply again.

Commands are the tagged request structs of :mod:`pnyx.protocols.etcd.requests`, typed or
in the untyped form they have after a msgpack round trip (the Raft log, the WAL, the
wire): :func:`decode_command` turns the latter back into the struct.  Pure: no I/O.
"""

from __future__ import annotations

from typing import Any, cast

import msgspec

from pnyx.protocols.etcd.auth import (
    AUTH_REQUEST_TYPES,
    READ_ONLY_AUTH,
    AuthCheckQuery,
    AuthCheckResult,
    AuthedRequest,
    AuthRequest,
    AuthResponse,
    AuthStore,
)
from pnyx.protocols.etcd.errors import (
    ERR_LEASE_NOT_FOUND,
    ERR_USER_EMPTY,
    ErrorResult,
    EtcdError,
    GrpcCode,
)
from pnyx.protocols.etcd.lease import DEFAULT_MIN_LEASE_TTL_S, LeaseTable, Lessor
from pnyx.protocols.etcd.mvcc import (
    DEFAULT_RECENT_REVISIONS,
    MvccCorrupted,
    MvccStore,
)
from pnyx.protocols.etcd.requests import (
    CompactionRequest,
    CompactionResponse,
    DeleteRangeRequest,
    DeleteRangeResponse,
    Event,
    HashKVRequest,
    HashKVResponse,
    LeaseEpochRequest,
    LeaseEpochResponse,
    LeaseExpireRequest,
    LeaseGrantRequest,
    LeaseGrantResponse,
    LeaseLeasesRequest,
    LeaseLeasesResponse,
    LeaseRevokeRequest,
    LeaseRevokeResponse,
    LeaseStatus,
    PutRequest,
    PutResponse,
    RangeRequest,
    RangeResponse,
    ResponseHeader,
    TxnRequest,
    TxnResponse,
)
from pnyx.protocols.etcd.validate import DEFAULT_MAX_TXN_OPS
from pnyx.protocols.raft.sessions import (
    SESSION_EXPIRED,
    STALE_COMMAND,
    SessionCommand,
    SessionStateMachine,
)

STORE_SNAPSHOT_FORMAT = 1
"""Version of the :meth:`EtcdStore.snapshot` encoding."""

EtcdCommand = (
    RangeRequest
    | PutRequest
    | DeleteRangeRequest
    | TxnRequest
    | CompactionRequest
    | HashKVRequest
    | LeaseGrantRequest
    | LeaseRevokeRequest
    | LeaseLeasesRequest
    | LeaseEpochRequest
    | LeaseExpireRequest
    | AuthRequest
    | AuthedRequest
)
"""What :meth:`EtcdStore.apply` takes (a tagged union: ``"type"`` names the request).
Writes (Put, DeleteRange, a non-read-only Txn, Compaction, LeaseGrant, LeaseRevoke) go
through the log; Range, HashKV and LeaseLeases are read-only queries.  Auth requests
(:mod:`pnyx.protocols.etcd.auth`) too; :class:`AuthedRequest` wraps a client's request
with its user (checked at apply while auth is enabled)."""

_COMMAND_TYPES: tuple[type, ...] = (
    RangeRequest,
    PutRequest,
    DeleteRangeRequest,
    TxnRequest,
    CompactionRequest,
    HashKVRequest,
    LeaseGrantRequest,
    LeaseRevokeRequest,
    LeaseLeasesRequest,
    LeaseEpochRequest,
    LeaseExpireRequest,
    *AUTH_REQUEST_TYPES,
    AuthedRequest,
)

RESPONSE_TYPES: dict[type, type] = {
    RangeRequest: RangeResponse,
    PutRequest: PutResponse,
    DeleteRangeRequest: DeleteRangeResponse,
    TxnRequest: TxnResponse,
    CompactionRequest: CompactionResponse,
    HashKVRequest: HashKVResponse,
    LeaseGrantRequest: LeaseGrantResponse,
    LeaseRevokeRequest: LeaseRevokeResponse,
    LeaseLeasesRequest: LeaseLeasesResponse,
    LeaseEpochRequest: LeaseEpochResponse,
    LeaseExpireRequest: LeaseRevokeResponse,
    **{t: AuthResponse for t in AUTH_REQUEST_TYPES},
    AuthCheckQuery: AuthCheckResult,
}
"""The response struct of each command type."""


def decode_command(raw: Any) -> EtcdCommand:
    """``raw`` as a request struct: a struct is returned as is; its untyped msgpack form
    (a dict with ``"type"``) is converted.  Anything else raises :class:`EtcdError`
    (INVALID_ARGUMENT), so a malformed command gets the same error on every replica."""
    if isinstance(raw, _COMMAND_TYPES):
        return cast(EtcdCommand, raw)
    try:
        return cast(EtcdCommand, msgspec.convert(raw, EtcdCommand))
    except msgspec.ValidationError as exc:
        raise EtcdError(
            GrpcCode.INVALID_ARGUMENT, f"pnyx: not an etcd request ({exc}): {raw!r}"
        ) from exc


def decode_result(command: Any, raw: Any) -> Any:
    """The result of ``command`` typed again: a response struct or an
    :class:`ErrorResult` (a cached reply restored from a snapshot is untyped).  A value
    that is already typed, or that cannot be typed, is returned unchanged."""
    if not isinstance(raw, dict | list | tuple):
        return raw
    try:
        if isinstance(raw, list | tuple):
            return msgspec.convert(raw, ErrorResult)
        request = decode_command(command)
        if isinstance(request, AuthedRequest):
            request = decode_command(request.request)
        response_type = RESPONSE_TYPES[type(request)]
        return msgspec.convert(raw, response_type)
    except (EtcdError, msgspec.ValidationError, KeyError):
        return raw


_USER_REQUESTS = (RangeRequest, PutRequest, DeleteRangeRequest, TxnRequest)
"""Client requests that carry their user while auth is enabled."""


class _StoreImage(msgspec.Struct, frozen=True, array_like=True):
    format: int
    mvcc: bytes
    leases: list[tuple[int, int]]
    lease_id_seq: int
    auth: bytes = b""


class _EpochImage(_StoreImage, frozen=True, array_like=True):
    """:class:`_StoreImage` and the lease epoch, written only once an epoch was applied
    (so a store that never saw one has the same snapshot bytes as before epochs)."""

    lease_epoch: int = 0


class EtcdStore:
    """MVCC store + lease table: etcd's apply (``applierV3backend``) for KV and leases.

    ``apply(command)`` returns the response struct, or an :class:`ErrorResult` with
    etcd's code and message; it never raises for a client's mistake.  ``mvcc`` may be
    replaced by :meth:`restore`: hold the store, not ``store.mvcc``.
    """

    def __init__(
        self,
        *,
        max_txn_ops: int = DEFAULT_MAX_TXN_OPS,
        min_lease_ttl_s: int = DEFAULT_MIN_LEASE_TTL_S,
        recent_revisions: int = DEFAULT_RECENT_REVISIONS,
    ) -> None:
        self.max_txn_ops = max_txn_ops
        self.recent_revisions = recent_revisions
        self.leases = LeaseTable(min_lease_ttl_s)
        self.auth = AuthStore()
        self.mvcc = self._new_mvcc()
        self.lease_epoch = 0
        """The highest :class:`LeaseEpochRequest` applied: expiries of earlier epochs are
        refused."""

    def _new_mvcc(self) -> MvccStore:
        return MvccStore(
            self.max_txn_ops,
            lease_exists=self.leases.exists,
            on_commit=self._on_commit,
            recent_revisions=self.recent_revisions,
        )

    def _on_commit(self, revision: int, events: list[Event]) -> None:
        self.leases.observe(events)

    @property
    def current_revision(self) -> int:
        """The store's current revision."""
        return self.mvcc.current_revision

    def new_lessor(self, **options: Any) -> Lessor:
        """A leader clock over this store's lease table (see :class:`Lessor`)."""
        return Lessor(self.leases, lambda: self.mvcc.current_revision, **options)

    # ----------------------------------------------------------------- apply

    def apply(self, command: Any) -> Any:
        """Apply one command (its struct or untyped form); errors become ErrorResult."""
        try:
            return self.execute(decode_command(command))
        except EtcdError as exc:
            return exc.result()

    def execute(self, request: EtcdCommand) -> Any:
        """Apply one request struct; raises :class:`EtcdError` where etcd refuses.

        While auth is enabled a client's KV request comes as :class:`AuthedRequest`; a bare
        Range / Put / DeleteRange / Txn is one sent without a user (a member that had not
        applied the enable yet sent it as is): *user name is empty*, as etcd answers a
        request whose header has no auth revision.  Lease and compaction requests stay
        unchecked (etcd 3.4 checks none but LeaseRevoke; expiry revokes are the server's)."""
        if self.auth.enabled and isinstance(request, _USER_REQUESTS):
            raise ERR_USER_EMPTY.fresh()
        return self._execute(request)

    def _execute(self, request: EtcdCommand) -> Any:
        if isinstance(request, AuthedRequest):
            return self._execute_as(request.user, decode_command(request.request))
        if isinstance(request, AuthCheckQuery):
            return msgspec.structs.replace(self.auth.check_query(request), header=self._header())
        if isinstance(request, AUTH_REQUEST_TYPES):
            return self._auth(request, "")  # no user: admin requests refused while enabled
        if isinstance(request, LeaseGrantRequest):
            lease_id, ttl_s = self.leases.grant(request.TTL, request.ID)
            return LeaseGrantResponse(header=self._header(), ID=lease_id, TTL=ttl_s)
        if isinstance(request, LeaseRevokeRequest):
            return self.revoke(request.ID)
        if isinstance(request, LeaseLeasesRequest):
            leases = [LeaseStatus(ID=lease_id) for lease_id in self.leases.ids()]
            return LeaseLeasesResponse(header=self._header(), leases=leases)
        if isinstance(request, LeaseEpochRequest | LeaseExpireRequest):
            return self._lease_epoch(request)
        return self.mvcc.execute(request)

    def _lease_epoch(self, request: LeaseEpochRequest | LeaseExpireRequest) -> Any:
        """A new lease epoch, or an expiry decided in one (refused if a later one began)."""
        if request.epoch < 0:
            raise EtcdError(GrpcCode.INVALID_ARGUMENT, f"pnyx: negative epoch {request.epoch}")
        if isinstance(request, LeaseEpochRequest):
            self.lease_epoch = max(self.lease_epoch, request.epoch)
            return LeaseEpochResponse(header=self._header(), epoch=self.lease_epoch)
        if request.epoch < self.lease_epoch:
            raise EtcdError(
                GrpcCode.FAILED_PRECONDITION,
                f"pnyx: stale lease expiry of {request.ID:x} (epoch {request.epoch}, a "
                f"later leader's epoch {self.lease_epoch} began)",
            )
        return self.revoke(request.ID)

    def _execute_as(self, user: str, request: EtcdCommand) -> Any:
        """``request`` sent by ``user``: etcd's ``authApplierV3`` checks, then apply."""
        if isinstance(request, AuthedRequest):
            raise EtcdError(GrpcCode.INVALID_ARGUMENT, "pnyx: nested authed request")
        if isinstance(request, AUTH_REQUEST_TYPES):
            return self._auth(request, user)
        self.auth.check_request(user, request, self.leases.keys_of)
        if isinstance(request, LeaseRevokeRequest) and self.auth.enabled:
            self.auth.check_lease(user, self.leases.keys_of(request.ID))
        return self._execute(request)

    def _auth(self, request: Any, user: str) -> AuthResponse:
        result = self.auth.execute(request, user)
        return msgspec.structs.replace(result, header=self._header())

    def revoke(self, lease_id: int) -> LeaseRevokeResponse:
        """etcd's ``Revoke``: delete the lease's keys (sorted, one revision; none: no new
        revision) and the lease.  *requested lease not found* for an unknown id."""
        if not self.leases.exists(lease_id):
            raise ERR_LEASE_NOT_FOUND.fresh()
        self.mvcc.delete_keys(self.leases.keys_of(lease_id))
        self.leases.remove(lease_id)
        return LeaseRevokeResponse(header=self._header())

    def _header(self) -> ResponseHeader:
        return ResponseHeader(revision=self.mvcc.current_revision)

    # ----------------------------------------------------------------- snapshot

    def snapshot(self) -> bytes:
        """MVCC state + leases + the id generator, deterministically encoded."""
        image = _StoreImage(
            format=STORE_SNAPSHOT_FORMAT,
            mvcc=self.mvcc.snapshot(),
            leases=sorted(self.leases.ttl_s.items()),
            lease_id_seq=self.leases.id_seq,
            auth=self.auth.image(),
        )
        if self.lease_epoch:
            fields = msgspec.structs.asdict(image)
            image = _EpochImage(**fields, lease_epoch=self.lease_epoch)
        return msgspec.msgpack.encode(image)

    def restore(self, data: bytes) -> None:
        """Replace the state with a :meth:`snapshot`; a bad image raises
        :class:`MvccCorrupted` and leaves the state untouched."""
        try:
            image = msgspec.msgpack.decode(data, type=_EpochImage)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise MvccCorrupted(f"undecodable etcd snapshot: {exc}") from exc
        if image.format != STORE_SNAPSHOT_FORMAT:
            raise MvccCorrupted(
                f"etcd snapshot format {image.format} is not {STORE_SNAPSHOT_FORMAT}"
            )
        auth = AuthStore()
        try:
            if image.auth:
                auth.load(image.auth)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise MvccCorrupted(f"etcd snapshot: bad auth state: {exc}") from exc
        mvcc = self._new_mvcc()
        mvcc.restore(image.mvcc)
        try:
            self.leases.load(image.leases, image.lease_id_seq, mvcc.live_kvs())
        except ValueError as exc:
            raise MvccCorrupted(f"etcd snapshot: {exc}") from exc
        self.mvcc = mvcc
        self.lease_epoch = image.lease_epoch
        self.auth.load(auth.image())  # in place: the member's token listener stays


class EtcdStateMachine(SessionStateMachine):
    """What an etcd-service Raft node applies (implements :class:`pnyx.core.StateMachine`).

    * a write: ``SessionCommand(session, seq, request)`` (or its untyped array form);
      ``SessionCommand(0, 0, OPEN_SESSION)`` opens a session (the result is its id).  A
      retry of the same ``(session, seq)`` returns the first reply without applying again.
    * a read-only query (linearizable after ReadIndex, or serializable): the bare request.

    Results are response structs or :class:`ErrorResult`; the session wrapper's own
    ``SESSION_EXPIRED`` / ``STALE_COMMAND`` dicts pass through.
    """

    def __init__(
        self,
        *,
        max_txn_ops: int = DEFAULT_MAX_TXN_OPS,
        min_lease_ttl_s: int = DEFAULT_MIN_LEASE_TTL_S,
        recent_revisions: int = DEFAULT_RECENT_REVISIONS,
        session_idle_commands: int = 100_000,
        max_sessions: int = 1024,
    ) -> None:
        self.store = EtcdStore(
            max_txn_ops=max_txn_ops,
            min_lease_ttl_s=min_lease_ttl_s,
            recent_revisions=recent_revisions,
        )
        super().__init__(
            self.store, session_idle_commands=session_idle_commands, max_sessions=max_sessions
        )

    def apply(self, command: Any) -> Any:
        if _auth_write_query(command):
            return ERR_AUTH_WRITE_QUERY.result()
        result = super().apply(command)
        if result in (SESSION_EXPIRED, STALE_COMMAND):
            return result  # the session layer's own answer
        if isinstance(result, dict | list | tuple):
            op = _session_op(command)
            return decode_result(op, result)
        return result


ERR_AUTH_WRITE_QUERY = EtcdError(
    GrpcCode.INVALID_ARGUMENT, "pnyx: an auth change or authed write must be a session command"
)
_KV_WRITES = (
    PutRequest,
    DeleteRangeRequest,
    CompactionRequest,
    LeaseGrantRequest,
    LeaseRevokeRequest,
    LeaseEpochRequest,
    LeaseExpireRequest,
)


def _auth_write_query(command: Any) -> bool:
    """Whether ``command`` is an auth change, or a write wrapped in :class:`AuthedRequest`,
    outside a session (so applied as a query, off the log: refused, as the server refuses
    bare KV writes there)."""
    if isinstance(command, dict):
        if not str(command.get("type", "")).startswith("auth"):
            return False
    elif not isinstance(command, (*AUTH_REQUEST_TYPES, AuthedRequest)):
        return False
    try:
        request = decode_command(command)
        if isinstance(request, AuthedRequest):
            request = decode_command(request.request)
    except EtcdError:
        return False  # answered with the machine's own error
    if isinstance(request, AUTH_REQUEST_TYPES):
        return not isinstance(request, READ_ONLY_AUTH)
    if isinstance(request, TxnRequest):
        return any(
            op.request_put or op.request_delete_range or op.request_txn
            for op in (*request.success, *request.failure)
        )
    return isinstance(request, _KV_WRITES)


def _session_op(command: Any) -> Any:
    if type(command) is SessionCommand:
        return command.op
    if isinstance(command, list | tuple) and len(command) == 3:
        return command[2]
    return command

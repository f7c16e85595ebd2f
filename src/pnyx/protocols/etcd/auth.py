"""etcd v3 auth as pure, replicated state: users, roles, key-range permissions, enable /
disable, the auth revision; simple tokens as a member-local table fed with ``now_ms``.

Follows etcd 3.4 ``auth/store.go``, ``auth/range_perm_cache.go``, ``auth/simple_token.go``,
``etcdserver/apply_auth.go`` and ``v3_server.go``:

- **Users** have a name, a password hash (never the password: the server hashes with
  :func:`hash_password` *before* proposing, as etcd bcrypts before consensus, so the log
  and every replica hold the same bytes), sorted role names, ``no_password``.
- **Roles** hold permissions ``(perm_type, key, range_end)`` sorted by key; granting one
  with the same key and range end replaces its type.  ``range_end`` empty: the key only;
  ``"\\0"``: every key ``>= key``; else ``[key, range_end)``.
- **Permission check** (:meth:`AuthStore.is_permitted`): the ``root`` role may do
  everything; otherwise the request's interval must be covered by the union of the
  user's READ (or WRITE) intervals (etcd's ``IntervalTree.Contains``); a single key must
  lie in one of them.
- **Enable** needs a ``root`` user holding the ``root`` role (*root user does not exist* /
  *root user does not have root role*); ``root`` cannot be deleted, nor lose ``root``,
  nor the ``root`` role be deleted while auth is on (*invalid auth management*).
- **Revision** starts at 1 and grows with every change (also enable/disable here; etcd
  does not count enable, but no 3.4 API shows it).  ``Authenticate`` is proposed with the
  revision at which the server checked the password; a different revision at apply is
  refused (:data:`ERR_AUTH_OLD_REVISION`) and the server checks again (etcd's OCC).
- **Tokens**: an applied ``Authenticate`` names the token ``<prefix>.<seq>`` (prefix
  random, chosen by the proposing server; ``seq`` the store's counter, replicated), and
  every replica tells its :class:`AuthListener` — a member's :class:`SimpleTokens` table
  then knows it (etcd assigns simple tokens on apply on every member).  A user deleted or
  given a new password loses its tokens; disabling auth drops them all.

Pure: no I/O, clock or randomness (salts and token prefixes come from the caller).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from enum import IntEnum
from typing import Any, Protocol

import msgspec

from pnyx.protocols.etcd.errors import (
    ERR_AUTH_FAILED,
    ERR_AUTH_NOT_ENABLED,
    ERR_AUTH_OLD_REVISION,
    ERR_INVALID_AUTH_MGMT,
    ERR_PERMISSION_DENIED,
    ERR_PERMISSION_NOT_GRANTED,
    ERR_ROLE_ALREADY_EXIST,
    ERR_ROLE_EMPTY,
    ERR_ROLE_NOT_FOUND,
    ERR_ROLE_NOT_GRANTED,
    ERR_ROOT_ROLE_NOT_EXIST,
    ERR_ROOT_USER_NOT_EXIST,
    ERR_USER_ALREADY_EXIST,
    ERR_USER_EMPTY,
    ERR_USER_NOT_FOUND,
)
from pnyx.protocols.etcd.requests import (
    DeleteRangeRequest,
    PutRequest,
    RangeRequest,
    RequestOp,
    ResponseHeader,
    TxnRequest,
)

ROOT = "root"
"""etcd's ``rootUser`` and ``rootRole``."""


class PermType(IntEnum):
    """``authpb.Permission.Type``."""

    READ = 0
    WRITE = 1
    READWRITE = 2


# --------------------------------------------------------------------------- passwords

SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
_HASH_SCHEME = b"scrypt"


def hash_password(password: str, salt: bytes) -> bytes:
    """``scrypt$n$r$p$salt$key`` (hex) of ``password``: what a user record stores.  The
    server calls it with a fresh random ``salt`` before proposing."""
    key = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    fields = [_HASH_SCHEME, b"%d" % SCRYPT_N, b"%d" % SCRYPT_R, b"%d" % SCRYPT_P]
    return b"$".join([*fields, salt.hex().encode(), key.hex().encode()])


def verify_password(stored: bytes, password: str) -> bool:
    """Whether ``password`` matches a :func:`hash_password` result (constant-time
    compare; a malformed record never matches)."""
    try:
        scheme, n, r, p, salt, key = stored.split(b"$")
        if scheme != _HASH_SCHEME:
            return False
        expected = bytes.fromhex(key.decode())
        got = hashlib.scrypt(
            password.encode(),
            salt=bytes.fromhex(salt.decode()),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(expected),
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, expected)


# --------------------------------------------------------------------------- records


class Permission(msgspec.Struct, frozen=True, kw_only=True):
    """``authpb.Permission``."""

    permType: int = PermType.READ
    key: bytes = b""
    range_end: bytes = b""


class User(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """``authpb.User`` (``password`` is the hash)."""

    name: str
    password: bytes = b""
    roles: list[str] = []
    no_password: bool = False


class Role(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """``authpb.Role``: permissions sorted by key."""

    name: str
    keyPermission: list[Permission] = []


# --------------------------------------------------------------------------- requests


class AuthEnableRequest(msgspec.Struct, frozen=True, kw_only=True, tag="auth_enable"):
    """``AuthEnableRequest``."""


class AuthDisableRequest(msgspec.Struct, frozen=True, kw_only=True, tag="auth_disable"):
    """``AuthDisableRequest``."""


class AuthStatusRequest(msgspec.Struct, frozen=True, kw_only=True, tag="auth_status"):
    """``AuthStatusRequest`` (etcd 3.5; a read)."""


class AuthenticateRequest(msgspec.Struct, frozen=True, kw_only=True, tag="authenticate"):
    """etcd's ``InternalAuthenticateRequest`` without the password (checked by the server
    before proposing): ``simple_token`` is the token's random prefix, ``auth_revision``
    the revision the password was checked at."""

    name: str = ""
    simple_token: str = ""
    auth_revision: int = 0


class AuthCheckQuery(msgspec.Struct, frozen=True, kw_only=True, tag="auth_check"):
    """A read (pnyx): what the server needs to check ``name``'s password."""

    name: str = ""


class AuthCheckResult(msgspec.Struct, frozen=True, kw_only=True):
    """Answer to :class:`AuthCheckQuery`."""

    header: ResponseHeader = ResponseHeader()
    enabled: bool = False
    exists: bool = False
    no_password: bool = False
    password: bytes = b""
    auth_revision: int = 0


class AuthUserAddRequest(msgspec.Struct, frozen=True, kw_only=True, tag="auth_user_add"):
    """``AuthUserAddRequest``: ``password`` is the *hash* (:func:`hash_password`)."""

    name: str = ""
    password: bytes = b""
    no_password: bool = False


class AuthUserGetRequest(msgspec.Struct, frozen=True, kw_only=True, tag="auth_user_get"):
    """``AuthUserGetRequest``."""

    name: str = ""


class AuthUserDeleteRequest(msgspec.Struct, frozen=True, kw_only=True, tag="auth_user_delete"):
    """``AuthUserDeleteRequest``."""

    name: str = ""


class AuthUserChangePasswordRequest(
    msgspec.Struct, frozen=True, kw_only=True, tag="auth_user_change_password"
):
    """``AuthUserChangePasswordRequest``: ``password`` is the *hash*."""

    name: str = ""
    password: bytes = b""


class AuthUserGrantRoleRequest(
    msgspec.Struct, frozen=True, kw_only=True, tag="auth_user_grant_role"
):
    """``AuthUserGrantRoleRequest``."""

    user: str = ""
    role: str = ""


class AuthUserRevokeRoleRequest(
    msgspec.Struct, frozen=True, kw_only=True, tag="auth_user_revoke_role"
):
    """``AuthUserRevokeRoleRequest``."""

    name: str = ""
    role: str = ""


class AuthUserListRequest(msgspec.Struct, frozen=True, kw_only=True, tag="auth_user_list"):
    """``AuthUserListRequest``."""


class AuthRoleAddRequest(msgspec.Struct, frozen=True, kw_only=True, tag="auth_role_add"):
    """``AuthRoleAddRequest``."""

    name: str = ""


class AuthRoleGetRequest(msgspec.Struct, frozen=True, kw_only=True, tag="auth_role_get"):
    """``AuthRoleGetRequest``."""

    role: str = ""


class AuthRoleListRequest(msgspec.Struct, frozen=True, kw_only=True, tag="auth_role_list"):
    """``AuthRoleListRequest``."""


class AuthRoleDeleteRequest(msgspec.Struct, frozen=True, kw_only=True, tag="auth_role_delete"):
    """``AuthRoleDeleteRequest``."""

    role: str = ""


class AuthRoleGrantPermissionRequest(
    msgspec.Struct, frozen=True, kw_only=True, tag="auth_role_grant_permission"
):
    """``AuthRoleGrantPermissionRequest``."""

    name: str = ""
    perm: Permission = Permission()


class AuthRoleRevokePermissionRequest(
    msgspec.Struct, frozen=True, kw_only=True, tag="auth_role_revoke_permission"
):
    """``AuthRoleRevokePermissionRequest``."""

    role: str = ""
    key: bytes = b""
    range_end: bytes = b""


class AuthedRequest(msgspec.Struct, frozen=True, kw_only=True, tag="authed"):
    """A client request with the user it was sent as (etcd's ``RequestHeader.Username``):
    when auth is enabled the store checks ``user``'s permission for ``request`` when it
    applies it (a write, or a read on the leader), against the state at that point."""

    user: str = ""
    request: Any = None


class AuthResponse(msgspec.Struct, frozen=True, kw_only=True):
    """The answer to every auth request: ``kind`` names the etcd response message, the
    fields it has are filled; ``auth_revision`` is the store's revision after it (for the
    server, not sent to clients)."""

    header: ResponseHeader = ResponseHeader()
    kind: str = ""
    auth_revision: int = 0
    token: str = ""
    roles: list[str] = []
    users: list[str] = []
    perm: list[Permission] = []
    enabled: bool = False


AuthRequest = (
    AuthEnableRequest
    | AuthDisableRequest
    | AuthStatusRequest
    | AuthenticateRequest
    | AuthCheckQuery
    | AuthUserAddRequest
    | AuthUserGetRequest
    | AuthUserDeleteRequest
    | AuthUserChangePasswordRequest
    | AuthUserGrantRoleRequest
    | AuthUserRevokeRoleRequest
    | AuthUserListRequest
    | AuthRoleAddRequest
    | AuthRoleGetRequest
    | AuthRoleListRequest
    | AuthRoleDeleteRequest
    | AuthRoleGrantPermissionRequest
    | AuthRoleRevokePermissionRequest
)
AUTH_REQUEST_TYPES: tuple[type, ...] = (
    AuthEnableRequest,
    AuthDisableRequest,
    AuthStatusRequest,
    AuthenticateRequest,
    AuthCheckQuery,
    AuthUserAddRequest,
    AuthUserGetRequest,
    AuthUserDeleteRequest,
    AuthUserChangePasswordRequest,
    AuthUserGrantRoleRequest,
    AuthUserRevokeRoleRequest,
    AuthUserListRequest,
    AuthRoleAddRequest,
    AuthRoleGetRequest,
    AuthRoleListRequest,
    AuthRoleDeleteRequest,
    AuthRoleGrantPermissionRequest,
    AuthRoleRevokePermissionRequest,
)
ADMIN_REQUESTS: tuple[type, ...] = (
    AuthEnableRequest,
    AuthDisableRequest,
    AuthUserAddRequest,
    AuthUserDeleteRequest,
    AuthUserChangePasswordRequest,
    AuthUserGrantRoleRequest,
    AuthUserRevokeRoleRequest,
    AuthUserListRequest,
    AuthRoleAddRequest,
    AuthRoleListRequest,
    AuthRoleDeleteRequest,
    AuthRoleGrantPermissionRequest,
    AuthRoleRevokePermissionRequest,
)
"""etcd's ``needAdminPermission`` (``AuthUserGet`` / ``AuthRoleGet``: admin, or the user
itself / a role it has)."""
READ_ONLY_AUTH: tuple[type, ...] = (
    AuthStatusRequest,
    AuthCheckQuery,
    AuthUserGetRequest,
    AuthUserListRequest,
    AuthRoleGetRequest,
    AuthRoleListRequest,
)
"""Auth requests that change nothing (served as reads)."""


class AuthListener(Protocol):
    """A member's token table, told what each applied command means for tokens."""

    def token_assigned(self, token: str, user: str) -> None: ...
    def user_invalidated(self, user: str) -> None: ...
    def tokens_cleared(self) -> None: ...


# --------------------------------------------------------------------------- intervals

_Interval = tuple[bytes, bytes | None]  # [begin, end); None = +infinity


def _perm_interval(perm: Permission) -> _Interval:
    """``getMergedPerms``: a key alone is ``[key, key\\0)``; ``"\\0"``: ``[key, inf)``."""
    if not perm.range_end:
        return (perm.key, perm.key + b"\0")
    if perm.range_end == b"\0":
        return (perm.key, None)
    return (perm.key, perm.range_end)


def _lt(a: bytes | None, b: bytes | None) -> bool:
    """``a < b`` with None as +infinity."""
    if a is None:
        return False
    return b is None or a < b


def covers(intervals: Iterable[_Interval], begin: bytes, end: bytes | None) -> bool:
    """etcd's ``IntervalTree.Contains``: the intervals overlapping ``[begin, end)``, in
    begin order, are contiguous, start at or before ``begin`` and reach ``end``."""
    overlapping = sorted(
        (iv for iv in intervals if _lt(begin, iv[1]) and _lt(iv[0], end)),
        key=lambda iv: iv[0],
    )
    if not overlapping:
        return False
    min_begin, max_end = overlapping[0]
    for iv_begin, iv_end in overlapping[1:]:
        if _lt(max_end, iv_begin):
            return False
        if _lt(max_end, iv_end):
            max_end = iv_end
    return min_begin <= begin and not _lt(max_end, end)


def contains_point(intervals: Iterable[_Interval], key: bytes) -> bool:
    """etcd's ``IntervalTree.Intersects`` with a point."""
    return any(iv[0] <= key and _lt(key, iv[1]) for iv in intervals)


# --------------------------------------------------------------------------- the store


class _Image(msgspec.Struct, frozen=True, array_like=True):
    enabled: bool
    revision: int
    token_seq: int
    users: list[User]
    roles: list[Role]


class AuthStore:
    """The replicated auth state (see the module doc).  ``execute`` raises
    :class:`~pnyx.protocols.etcd.errors.EtcdError` for etcd's refusals."""

    def __init__(self) -> None:
        self.enabled = False
        self.revision = 1
        self.token_seq = 0
        self.users: dict[str, User] = {}
        self.roles: dict[str, Role] = {}
        self.listener: AuthListener | None = None
        self._perm_cache: dict[str, tuple[list[_Interval], list[_Interval]]] = {}

    # -- queries ------------------------------------------------------------------------

    def has_root_role(self, user: str) -> bool:
        u = self.users.get(user)
        return u is not None and ROOT in u.roles

    def is_permitted(self, user: str, key: bytes, range_end: bytes, write: bool) -> bool:
        """May ``user`` read (``write`` False) or write ``[key, range_end)`` (etcd's
        ``isRangeOpPermitted``; the root role may do everything)."""
        u = self.users.get(user)
        if u is None:
            return False
        if ROOT in u.roles:
            return True
        reads, writes = self._merged(u)
        intervals = writes if write else reads
        if not range_end:
            return contains_point(intervals, key)
        return covers(intervals, key, None if range_end == b"\0" else range_end)

    def _merged(self, u: User) -> tuple[list[_Interval], list[_Interval]]:
        cached = self._perm_cache.get(u.name)
        if cached is not None:
            return cached
        reads: list[_Interval] = []
        writes: list[_Interval] = []
        for role_name in u.roles:
            role = self.roles.get(role_name)
            for perm in role.keyPermission if role else ():
                iv = _perm_interval(perm)
                if perm.permType in (PermType.READ, PermType.READWRITE):
                    reads.append(iv)
                if perm.permType in (PermType.WRITE, PermType.READWRITE):
                    writes.append(iv)
        self._perm_cache[u.name] = (reads, writes)
        return reads, writes

    def check_op(self, user: str, key: bytes, range_end: bytes, write: bool) -> None:
        """etcd's ``isOpPermitted`` (auth enabled): *user name is empty* for no user,
        *permission denied* for an unknown user or a missing permission."""
        if not self.enabled:
            return
        if not user:
            raise ERR_USER_EMPTY.fresh()
        if not self.is_permitted(user, key, range_end, write):
            raise ERR_PERMISSION_DENIED.fresh()

    def check_admin(self, user: str) -> None:
        """etcd's ``IsAdminPermitted``: root role needed while auth is enabled."""
        if not self.enabled:
            return
        if not user:
            raise ERR_USER_EMPTY.fresh()
        if user not in self.users:
            raise ERR_USER_NOT_FOUND.fresh()
        if not self.has_root_role(user):
            raise ERR_PERMISSION_DENIED.fresh()

    def check_request(self, user: str, request: Any, lease_keys: Any = None) -> None:
        """The permission checks etcd makes for a KV request sent as ``user``
        (``authApplierV3`` and ``v3_server.go``): Range READ; Put WRITE (+READ with
        ``prev_kv``; WRITE on every key of its lease); DeleteRange WRITE (+READ with
        ``prev_kv``); Txn: READ on each compare, each op as above (nested txns too).
        ``lease_keys(id)`` lists a lease's keys (Put / LeaseRevoke)."""
        if not self.enabled:
            return
        if isinstance(request, RangeRequest):
            self.check_op(user, request.key, request.range_end, False)
        elif isinstance(request, PutRequest):
            self.check_op(user, request.key, b"", True)
            if request.lease and lease_keys is not None:
                self.check_lease(user, lease_keys(request.lease))
            if request.prev_kv:
                self.check_op(user, request.key, b"", False)
        elif isinstance(request, DeleteRangeRequest):
            if request.prev_kv:
                self.check_op(user, request.key, request.range_end, False)
            self.check_op(user, request.key, request.range_end, True)
        elif isinstance(request, TxnRequest):
            for c in request.compare:
                self.check_op(user, c.key, c.range_end, False)
            for op in (*request.success, *request.failure):
                self._check_op(user, op, lease_keys)

    def _check_op(self, user: str, op: RequestOp, lease_keys: Any) -> None:
        for sub in (op.request_range, op.request_put, op.request_delete_range, op.request_txn):
            if sub is not None:
                self.check_request(user, sub, lease_keys)

    def check_lease(self, user: str, keys: Iterable[bytes]) -> None:
        """etcd's ``checkLeasePuts``: WRITE on every key attached to the lease."""
        if not self.enabled or self.has_root_role(user):
            return
        for key in keys:
            self.check_op(user, key, b"", True)

    # -- apply ----------------------------------------------------------------------------

    def execute(self, request: Any, user: str | None = None) -> AuthResponse:
        """Apply one auth request.  ``user`` (an :class:`AuthedRequest`'s) is checked for
        admin rights as etcd's ``authApplierV3``; None = trusted (the server checked)."""
        if user is not None:
            self._check_rights(user, request)
        kind = type(request).__name__.removesuffix("Request").removesuffix("Query")
        handler = getattr(self, "_" + kind)
        result: AuthResponse = handler(request)
        return msgspec.structs.replace(
            result, kind=result.kind or kind, auth_revision=self.revision
        )

    def _check_rights(self, user: str, request: Any) -> None:
        if isinstance(request, ADMIN_REQUESTS):
            self.check_admin(user)
        elif isinstance(request, AuthUserGetRequest):
            if self.enabled and request.name != user:
                self.check_admin(user)
        elif isinstance(request, AuthRoleGetRequest):
            u = self.users.get(user)
            if self.enabled and not (u is not None and request.role in u.roles):
                self.check_admin(user)

    def _commit(self) -> AuthResponse:
        self.revision += 1
        self._perm_cache.clear()
        return AuthResponse()

    def _AuthEnable(self, r: AuthEnableRequest) -> AuthResponse:
        if self.enabled:
            return AuthResponse()
        root = self.users.get(ROOT)
        if root is None:
            raise ERR_ROOT_USER_NOT_EXIST.fresh()
        if ROOT not in root.roles:
            raise ERR_ROOT_ROLE_NOT_EXIST.fresh()
        self.enabled = True
        return self._commit()

    def _AuthDisable(self, r: AuthDisableRequest) -> AuthResponse:
        if not self.enabled:
            return AuthResponse()
        self.enabled = False
        if self.listener is not None:
            self.listener.tokens_cleared()
        return self._commit()

    def _AuthStatus(self, r: AuthStatusRequest) -> AuthResponse:
        return AuthResponse(enabled=self.enabled)

    def _AuthCheck(self, r: AuthCheckQuery) -> AuthResponse:
        raise AssertionError("served by check_query")  # pragma: no cover

    def check_query(self, r: AuthCheckQuery) -> AuthCheckResult:
        """What the server needs to verify a password (a read on the leader)."""
        u = self.users.get(r.name)
        return AuthCheckResult(
            enabled=self.enabled,
            exists=u is not None,
            no_password=bool(u and u.no_password),
            password=u.password if u else b"",
            auth_revision=self.revision,
        )

    def _Authenticate(self, r: AuthenticateRequest) -> AuthResponse:
        if not self.enabled:
            raise ERR_AUTH_NOT_ENABLED.fresh()
        u = self.users.get(r.name)
        if u is None or u.no_password:
            raise ERR_AUTH_FAILED.fresh()
        if r.auth_revision != self.revision:
            raise ERR_AUTH_OLD_REVISION.fresh()
        self.token_seq += 1
        token = f"{r.simple_token}.{self.token_seq}"
        if self.listener is not None:
            self.listener.token_assigned(token, r.name)
        return AuthResponse(token=token)

    def _AuthUserAdd(self, r: AuthUserAddRequest) -> AuthResponse:
        if not r.name:
            raise ERR_USER_EMPTY.fresh()
        if r.name in self.users:
            raise ERR_USER_ALREADY_EXIST.fresh()
        password = b"" if r.no_password else r.password
        self.users[r.name] = User(name=r.name, password=password, no_password=r.no_password)
        return self._commit()

    def _AuthUserGet(self, r: AuthUserGetRequest) -> AuthResponse:
        u = self._user(r.name)
        return AuthResponse(roles=list(u.roles))

    def _AuthUserList(self, r: AuthUserListRequest) -> AuthResponse:
        return AuthResponse(users=sorted(self.users))

    def _AuthUserDelete(self, r: AuthUserDeleteRequest) -> AuthResponse:
        if self.enabled and r.name == ROOT:
            raise ERR_INVALID_AUTH_MGMT.fresh()
        self._user(r.name)
        del self.users[r.name]
        self._invalidate(r.name)
        return self._commit()

    def _AuthUserChangePassword(self, r: AuthUserChangePasswordRequest) -> AuthResponse:
        u = self._user(r.name)
        self.users[r.name] = msgspec.structs.replace(u, password=r.password)
        self._invalidate(r.name)
        return self._commit()

    def _AuthUserGrantRole(self, r: AuthUserGrantRoleRequest) -> AuthResponse:
        u = self._user(r.user)
        if r.role != ROOT and r.role not in self.roles:
            raise ERR_ROLE_NOT_FOUND.fresh()
        if r.role in u.roles:
            return AuthResponse()
        self.users[r.user] = msgspec.structs.replace(u, roles=sorted([*u.roles, r.role]))
        return self._commit()

    def _AuthUserRevokeRole(self, r: AuthUserRevokeRoleRequest) -> AuthResponse:
        if self.enabled and r.name == ROOT and r.role == ROOT:
            raise ERR_INVALID_AUTH_MGMT.fresh()
        u = self._user(r.name)
        if r.role not in u.roles:
            raise ERR_ROLE_NOT_GRANTED.fresh()
        self.users[r.name] = msgspec.structs.replace(
            u, roles=[role for role in u.roles if role != r.role]
        )
        return self._commit()

    def _AuthRoleAdd(self, r: AuthRoleAddRequest) -> AuthResponse:
        if not r.name:
            raise ERR_ROLE_EMPTY.fresh()
        if r.name in self.roles:
            raise ERR_ROLE_ALREADY_EXIST.fresh()
        self.roles[r.name] = Role(name=r.name)
        return self._commit()

    def _AuthRoleGet(self, r: AuthRoleGetRequest) -> AuthResponse:
        return AuthResponse(perm=list(self._role(r.role).keyPermission))

    def _AuthRoleList(self, r: AuthRoleListRequest) -> AuthResponse:
        return AuthResponse(roles=sorted(self.roles))

    def _AuthRoleDelete(self, r: AuthRoleDeleteRequest) -> AuthResponse:
        if self.enabled and r.role == ROOT:
            raise ERR_INVALID_AUTH_MGMT.fresh()
        self._role(r.role)
        del self.roles[r.role]
        for name, u in list(self.users.items()):
            if r.role in u.roles:
                roles = [role for role in u.roles if role != r.role]
                self.users[name] = msgspec.structs.replace(u, roles=roles)
        return self._commit()

    def _AuthRoleGrantPermission(self, r: AuthRoleGrantPermissionRequest) -> AuthResponse:
        role = self._role(r.name)
        perm = Permission(permType=r.perm.permType, key=r.perm.key, range_end=r.perm.range_end)
        perms = list(role.keyPermission)
        for i, p in enumerate(perms):
            if p.key == perm.key and p.range_end == perm.range_end:
                perms[i] = perm
                break
        else:
            perms.append(perm)
            perms.sort(key=lambda p: p.key)
        self.roles[r.name] = msgspec.structs.replace(role, keyPermission=perms)
        return self._commit()

    def _AuthRoleRevokePermission(self, r: AuthRoleRevokePermissionRequest) -> AuthResponse:
        role = self._role(r.role)
        kept = [
            p for p in role.keyPermission if not (p.key == r.key and p.range_end == r.range_end)
        ]
        if len(kept) == len(role.keyPermission):
            raise ERR_PERMISSION_NOT_GRANTED.fresh()
        self.roles[r.role] = msgspec.structs.replace(role, keyPermission=kept)
        return self._commit()

    def _user(self, name: str) -> User:
        u = self.users.get(name)
        if u is None:
            raise ERR_USER_NOT_FOUND.fresh()
        return u

    def _role(self, name: str) -> Role:
        role = self.roles.get(name)
        if role is None:
            raise ERR_ROLE_NOT_FOUND.fresh()
        return role

    def _invalidate(self, user: str) -> None:
        if self.listener is not None:
            self.listener.user_invalidated(user)

    # -- snapshot -------------------------------------------------------------------------

    def image(self) -> bytes:
        """The state, deterministically encoded (users and roles sorted by name)."""
        return msgspec.msgpack.encode(
            _Image(
                enabled=self.enabled,
                revision=self.revision,
                token_seq=self.token_seq,
                users=[self.users[n] for n in sorted(self.users)],
                roles=[self.roles[n] for n in sorted(self.roles)],
            )
        )

    def load(self, data: bytes) -> None:
        """Replace the state with an :meth:`image` (raises ``msgspec.DecodeError`` /
        ``ValidationError`` for a bad one, state untouched).  The listener stays."""
        image = msgspec.msgpack.decode(data, type=_Image)
        self.enabled = image.enabled
        self.revision = image.revision
        self.token_seq = image.token_seq
        self.users = {u.name: u for u in image.users}
        self.roles = {r.name: r for r in image.roles}
        self._perm_cache.clear()


# --------------------------------------------------------------------------- tokens

DEFAULT_TOKEN_TTL_MS = 300_000
"""etcd's ``simpleTokenTTLDefault`` (5 min; each use restarts it)."""


class SimpleTokens:
    """One member's simple tokens (etcd's ``tokenSimple``): token -> (user, deadline).
    A token lives ``ttl_ms`` after its last use; expired ones are swept as new ones come.
    Implements :class:`AuthListener` with the clock passed in as ``clock_ms``."""

    def __init__(self, clock_ms: Any, ttl_ms: int = DEFAULT_TOKEN_TTL_MS) -> None:
        self.clock_ms = clock_ms
        self.ttl_ms = ttl_ms
        self._tokens: dict[str, tuple[str, int]] = {}
        self._next_sweep = 0

    def __len__(self) -> int:
        return len(self._tokens)

    def token_assigned(self, token: str, user: str) -> None:
        now = int(self.clock_ms())
        self._tokens[token] = (user, now + self.ttl_ms)
        if now >= self._next_sweep:
            self._tokens = {t: v for t, v in self._tokens.items() if v[1] > now}
            self._next_sweep = now + min(self.ttl_ms, 10_000)

    def user_of(self, token: str) -> str | None:
        """The token's user (its TTL restarts), or None: unknown or expired."""
        entry = self._tokens.get(token)
        if entry is None:
            return None
        now = int(self.clock_ms())
        if entry[1] <= now:
            del self._tokens[token]
            return None
        self._tokens[token] = (entry[0], now + self.ttl_ms)
        return entry[0]

    def user_invalidated(self, user: str) -> None:
        self._tokens = {t: v for t, v in self._tokens.items() if v[0] != user}

    def tokens_cleared(self) -> None:
        self._tokens.clear()


def token_seq(token: str) -> int | None:
    """The sequence number of a simple token ``<prefix>.<seq>`` (None: malformed)."""
    prefix, dot, seq = token.rpartition(".")
    if not dot or not prefix or not seq.isdigit():
        return None
    return int(seq)


__all__ = [
    "ADMIN_REQUESTS",
    "AUTH_REQUEST_TYPES",
    "DEFAULT_TOKEN_TTL_MS",
    "READ_ONLY_AUTH",
    "ROOT",
    "AuthCheckQuery",
    "AuthCheckResult",
    "AuthDisableRequest",
    "AuthEnableRequest",
    "AuthListener",
    "AuthRequest",
    "AuthResponse",
    "AuthRoleAddRequest",
    "AuthRoleDeleteRequest",
    "AuthRoleGetRequest",
    "AuthRoleGrantPermissionRequest",
    "AuthRoleListRequest",
    "AuthRoleRevokePermissionRequest",
    "AuthStatusRequest",
    "AuthStore",
    "AuthUserAddRequest",
    "AuthUserChangePasswordRequest",
    "AuthUserDeleteRequest",
    "AuthUserGetRequest",
    "AuthUserGrantRoleRequest",
    "AuthUserListRequest",
    "AuthUserRevokeRoleRequest",
    "AuthedRequest",
    "AuthenticateRequest",
    "PermType",
    "Permission",
    "Role",
    "SimpleTokens",
    "User",
    "covers",
    "hash_password",
    "token_seq",
    "verify_password",
]

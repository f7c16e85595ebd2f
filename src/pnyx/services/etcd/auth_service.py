"""etcd's ``Auth`` service and the permission checks every other service makes (etcd 3.4).

State lives in the replicated :class:`~pnyx.protocols.etcd.auth.AuthStore`; this module is
the member side:

- **Passwords** are hashed here (scrypt, random salt, in a worker thread) before the
  ``UserAdd`` / ``UserChangePassword`` proposal, so the log holds only the hash.
- **Authenticate** (etcd's ``v3_server.go``): read the user's record on the leader
  (ReadIndex), check the password here, propose ``AuthenticateRequest`` with a random
  token prefix and the auth revision it was checked at; a change in between makes the
  apply refuse it and the check runs again.  Every member applies it and enters the
  token ``<prefix>.<seq>`` in its own :class:`~pnyx.protocols.etcd.auth.SimpleTokens`
  (TTL :data:`~pnyx.protocols.etcd.auth.DEFAULT_TOKEN_TTL_MS`, restarted by each use),
  so a token works on every member, as etcd's simple tokens do; a member that has not
  applied that entry yet waits for it (bounded), as etcd's ``indexWaiter``.  Tokens are
  not persisted: after a restart clients authenticate again (etcd's client does so on
  *invalid auth token*).
- **Checks**: :func:`authorize` wraps a client's request in
  :class:`~pnyx.protocols.etcd.auth.AuthedRequest` with the token's user while auth is
  enabled, and the state machine checks the permission when it applies it (writes) or
  answers it (reads: on the leader after ReadIndex; serializable ones here), against the
  auth state at that point.  :func:`authorize_admin` (root role) guards cluster and
  maintenance operations, :func:`watch_permitted` a watch's range.  A missing token while
  auth is enabled is *user name is empty*, an unknown one *invalid auth token*.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import string
from typing import TYPE_CHECKING, Any

import grpc  # type: ignore[import-untyped]
from aetcd.rpc import auth_pb2, rpc_pb2, rpc_pb2_grpc  # type: ignore[import-untyped]

from pnyx.protocols.etcd.auth import (
    AuthCheckQuery,
    AuthCheckResult,
    AuthDisableRequest,
    AuthedRequest,
    AuthEnableRequest,
    AuthenticateRequest,
    AuthResponse,
    AuthRoleAddRequest,
    AuthRoleDeleteRequest,
    AuthRoleGetRequest,
    AuthRoleGrantPermissionRequest,
    AuthRoleListRequest,
    AuthRoleRevokePermissionRequest,
    AuthStatusRequest,
    AuthStore,
    AuthUserAddRequest,
    AuthUserChangePasswordRequest,
    AuthUserDeleteRequest,
    AuthUserGetRequest,
    AuthUserGrantRoleRequest,
    AuthUserListRequest,
    AuthUserRevokeRoleRequest,
    Permission,
    SimpleTokens,
    hash_password,
    token_seq,
    verify_password,
)
from pnyx.protocols.etcd.errors import (
    ERR_AUTH_FAILED,
    ERR_AUTH_NOT_ENABLED,
    ERR_INVALID_AUTH_TOKEN,
    MSG_AUTH_OLD_REVISION,
    MSG_INVALID_AUTH_TOKEN,
    MSG_PERMISSION_DENIED,
    MSG_USER_EMPTY,
    MSG_USER_NOT_FOUND,
    EtcdError,
)
from pnyx.protocols.etcd.requests import ResponseHeader, WatchRequest, WatchResponse
from pnyx.services.etcd.convert import to_proto
from pnyx.services.etcd.rpc import RpcFailure, unary

if TYPE_CHECKING:
    from pnyx.services.etcd.server import EtcdServer

log = logging.getLogger("pnyx.etcd.auth")

TOKEN_METADATA = ("token", "authorization")
"""etcd's ``TokenFieldNameGRPC`` and ``TokenFieldNameSwagger``."""
TOKEN_PREFIX_LENGTH = 16
"""etcd's ``defaultSimpleTokenLength`` (letters)."""
APPLY_WAIT_S = 5.0
"""How long a member waits to apply a token's ``Authenticate`` (or an auth change it
answered) before treating it as unknown."""
AUTHENTICATE_ATTEMPTS = 5
MSG_NO_PASSWORD_USER = "auth: authentication failed, password was given for no password user"
"""etcd 3.4.23's ``ErrNoPasswordUser`` (no gRPC mapping: clients see ``Unknown``)."""
SALT_BYTES = 16
_LETTERS = string.ascii_letters

_RAW_MESSAGES = {
    MSG_PERMISSION_DENIED: "auth: permission denied",
    MSG_USER_EMPTY: "auth: user name is empty",
    MSG_USER_NOT_FOUND: "auth: user not found",
    MSG_INVALID_AUTH_TOKEN: "auth: invalid auth token",
}
"""etcd's maintenance service returns the auth package's own errors untranslated: gRPC
``Unknown`` with these texts."""


class MemberAuth:
    """This member's tokens and its waits for applied auth changes."""

    def __init__(self, server: EtcdServer) -> None:
        self.server = server
        self.tokens = SimpleTokens(lambda: server.machine.clock_ms())  # node's clock
        self.store.listener = self.tokens
        self._applied = asyncio.Event()
        self._waiting = 0
        server.machine.after_apply.append(self._on_apply)

    @property
    def store(self) -> AuthStore:
        """The replicated auth state as this member applied it."""
        auth: AuthStore = self.server.machine.inner.store.auth
        return auth

    def _on_apply(self) -> None:
        if self._waiting:
            self._applied.set()
            self._applied = asyncio.Event()

    async def wait_until(self, done: Any) -> bool:
        """Until ``done()`` holds after an apply (at most :data:`APPLY_WAIT_S`)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + APPLY_WAIT_S
        while not done():
            left = deadline - loop.time()
            if left <= 0:
                return False
            event = self._applied
            self._waiting += 1
            try:
                await asyncio.wait_for(event.wait(), left)
            except TimeoutError:
                return bool(done())
            finally:
                self._waiting -= 1
        return True

    async def user_of(self, context: Any) -> str | None:
        """The user of the request's token; None without a token or while auth is off.
        An unknown or expired token is *invalid auth token*."""
        if not self.store.enabled:
            return None
        token = request_token(context)
        if token is None:
            return None
        user = self.tokens.user_of(token)
        if user is None:
            seq = token_seq(token)
            if seq is not None and seq > self.store.token_seq:
                await self.wait_until(lambda: self.store.token_seq >= seq)
                user = self.tokens.user_of(token)
        if user is None:
            raise ERR_INVALID_AUTH_TOKEN.fresh()
        return user


def request_token(context: Any) -> str | None:
    """The ``token`` (or ``authorization``) gRPC metadata of the call, if any."""
    for key, value in context.invocation_metadata() or ():
        if key in TOKEN_METADATA:
            return str(value)
    return None


def member_auth(server: EtcdServer) -> MemberAuth | None:
    """The member's :class:`MemberAuth` (None before the Auth service is registered)."""
    service = server.services.get("Auth")
    return service.member if service is not None else None


async def authorize(server: EtcdServer, context: Any, request: Any) -> Any:
    """``request`` as this member sends it while auth is enabled: wrapped with the
    token's user, for the state machine to check; unchanged while auth is off.  Raises
    *invalid auth token* for a bad token."""
    member = member_auth(server)
    if member is None or not member.store.enabled:
        return request
    user = await member.user_of(context)
    return AuthedRequest(user=user or "", request=request)


async def authorize_admin(server: EtcdServer, context: Any, *, raw: bool = False) -> None:
    """Root role required while auth is enabled (etcd's ``IsAdminPermitted``).  ``raw``:
    fail as etcd's maintenance service does (``Unknown``, the auth package's text)."""
    member = member_auth(server)
    if member is None or not member.store.enabled:
        return
    try:
        user = await member.user_of(context)
        member.store.check_admin(user or "")
    except EtcdError as exc:
        if raw:
            message = _RAW_MESSAGES.get(exc.message, exc.message)
            raise RpcFailure(grpc.StatusCode.UNKNOWN, message) from exc
        raise


async def abort_unless_admin(server: EtcdServer, context: Any) -> None:
    """:func:`authorize_admin` (``raw``) for a streaming handler: aborts the call."""
    try:
        await authorize_admin(server, context, raw=True)
    except RpcFailure as exc:
        server.on_status("Snapshot", exc.code)
        await context.abort(exc.code, exc.message)


async def watch_permitted(
    server: EtcdServer, context: Any, stream_id: int, request: WatchRequest
) -> bool:
    """Whether a watch request may go to the hub.  A create over a range the user may
    not read is answered here as etcd does (created + canceled, *permission denied* as
    the cancel reason) and the request dropped."""
    create = request.create_request
    member = member_auth(server)
    if create is None or member is None or not member.store.enabled:
        return True
    try:
        user = await member.user_of(context)
        member.store.check_op(user or "", create.key, create.range_end, False)
    except EtcdError:
        pass
    else:
        return True
    hub = server.watch_streams.hub
    code, message = grpc.StatusCode.PERMISSION_DENIED, MSG_PERMISSION_DENIED
    reason = f"rpc error: code = {_go_code_name(code)} desc = {message}"
    denial = WatchResponse(
        header=ResponseHeader(revision=server.machine.inner.store.current_revision),
        watch_id=create.watch_id,
        created=True,
        canceled=True,
        cancel_reason=reason,
    )
    hub._streams[stream_id].outbox.append(denial)  # the hub has no public way to refuse
    return False


def _go_code_name(code: Any) -> str:
    """grpc-go's name of a status code (``PermissionDenied``)."""
    return "".join(part.capitalize() for part in code.name.split("_"))


# --------------------------------------------------------------------------- the service


class AuthService(rpc_pb2_grpc.AuthServicer):  # type: ignore[misc]
    """The ``etcdserverpb.Auth`` service of one member."""

    def __init__(self, server: EtcdServer) -> None:
        self.server = server
        self.on_status = server.on_status
        self.member = MemberAuth(server)

    # -- helpers ----------------------------------------------------------------------------

    async def _as_user(self, context: Any, request: Any) -> Any:
        """``request`` with the caller's user while auth is on (admin rights are checked
        when it is applied)."""
        if not self.member.store.enabled:
            return request
        user = await self.member.user_of(context)
        return AuthedRequest(user=user or "", request=request)

    async def _write(self, context: Any, request: Any, size: int) -> Any:
        result: AuthResponse = await self.server.write(await self._as_user(context, request), size)
        # answer once this member applied it too: a next request here sees the change
        await self.member.wait_until(lambda: self.member.store.revision >= result.auth_revision)
        return self._respond(result)

    async def _read(self, context: Any, request: Any) -> Any:
        result: AuthResponse = await self.server.read(await self._as_user(context, request))
        return self._respond(result)

    def _respond(self, result: AuthResponse) -> Any:
        header = to_proto(self.server.header(result.header.revision))
        message = getattr(rpc_pb2, f"{result.kind}Response")(header=header)
        fields = message.DESCRIPTOR.fields_by_name
        if "token" in fields:
            message.token = result.token
        if "roles" in fields:
            message.roles.extend(result.roles)
        if "users" in fields:
            message.users.extend(result.users)
        if "perm" in fields:
            message.perm.extend(
                auth_pb2.Permission(permType=p.permType, key=p.key, range_end=p.range_end)
                for p in result.perm
            )
        if "enabled" in fields:
            message.enabled = result.enabled
            message.authRevision = result.auth_revision
        return message

    # -- enable / status ----------------------------------------------------------------------

    @unary
    async def AuthEnable(self, request: Any, context: Any) -> Any:
        return await self._write(context, AuthEnableRequest(), request.ByteSize())

    @unary
    async def AuthDisable(self, request: Any, context: Any) -> Any:
        return await self._write(context, AuthDisableRequest(), request.ByteSize())

    @unary
    async def AuthStatus(self, request: Any, context: Any) -> Any:
        return self._respond(await self.server.read(AuthStatusRequest()))

    # -- authenticate -----------------------------------------------------------------------

    @unary
    async def Authenticate(self, request: Any, context: Any) -> Any:
        for _ in range(AUTHENTICATE_ATTEMPTS):
            check: AuthCheckResult = await self.server.read(AuthCheckQuery(name=request.name))
            if not check.enabled:
                raise ERR_AUTH_NOT_ENABLED.fresh()
            if not check.exists:
                raise ERR_AUTH_FAILED.fresh()
            if check.no_password:  # 3.4.23's CheckPassword: untranslated, gRPC Unknown
                raise RpcFailure(grpc.StatusCode.UNKNOWN, MSG_NO_PASSWORD_USER)
            if not await asyncio.to_thread(verify_password, check.password, request.password):
                log.info("authentication_failed user=%s (invalid password)", request.name)
                raise ERR_AUTH_FAILED.fresh()
            command = AuthenticateRequest(
                name=request.name,
                simple_token="".join(secrets.choice(_LETTERS) for _ in range(TOKEN_PREFIX_LENGTH)),
                auth_revision=check.auth_revision,
            )
            try:
                result: AuthResponse = await self.server.write(command, request.ByteSize())
            except RpcFailure as exc:
                if exc.message == MSG_AUTH_OLD_REVISION:
                    continue  # the auth state changed since the check: check again
                raise
            await self._wait_token(result.token)
            return self._respond(result)
        raise ERR_AUTH_FAILED.fresh()

    async def _wait_token(self, token: str) -> None:
        """Until this member applied the ``Authenticate`` that named ``token``."""
        seq = token_seq(token) or 0
        await self.member.wait_until(lambda: self.member.store.token_seq >= seq)

    # -- users ----------------------------------------------------------------------------------

    @unary
    async def UserAdd(self, request: Any, context: Any) -> Any:
        no_password = bool(request.HasField("options") and request.options.no_password)
        hashed = b""
        if request.name and not no_password:
            hashed = await _hash(request.password)
        r = AuthUserAddRequest(name=request.name, password=hashed, no_password=no_password)
        return await self._write(context, r, request.ByteSize())

    @unary
    async def UserGet(self, request: Any, context: Any) -> Any:
        return await self._read(context, AuthUserGetRequest(name=request.name))

    @unary
    async def UserList(self, request: Any, context: Any) -> Any:
        return await self._read(context, AuthUserListRequest())

    @unary
    async def UserDelete(self, request: Any, context: Any) -> Any:
        r = AuthUserDeleteRequest(name=request.name)
        return await self._write(context, r, request.ByteSize())

    @unary
    async def UserChangePassword(self, request: Any, context: Any) -> Any:
        r = AuthUserChangePasswordRequest(name=request.name, password=await _hash(request.password))
        return await self._write(context, r, request.ByteSize())

    @unary
    async def UserGrantRole(self, request: Any, context: Any) -> Any:
        r = AuthUserGrantRoleRequest(user=request.user, role=request.role)
        return await self._write(context, r, request.ByteSize())

    @unary
    async def UserRevokeRole(self, request: Any, context: Any) -> Any:
        r = AuthUserRevokeRoleRequest(name=request.name, role=request.role)
        return await self._write(context, r, request.ByteSize())

    # -- roles ----------------------------------------------------------------------------------

    @unary
    async def RoleAdd(self, request: Any, context: Any) -> Any:
        return await self._write(context, AuthRoleAddRequest(name=request.name), request.ByteSize())

    @unary
    async def RoleGet(self, request: Any, context: Any) -> Any:
        return await self._read(context, AuthRoleGetRequest(role=request.role))

    @unary
    async def RoleList(self, request: Any, context: Any) -> Any:
        return await self._read(context, AuthRoleListRequest())

    @unary
    async def RoleDelete(self, request: Any, context: Any) -> Any:
        r = AuthRoleDeleteRequest(role=request.role)
        return await self._write(context, r, request.ByteSize())

    @unary
    async def RoleGrantPermission(self, request: Any, context: Any) -> Any:
        p = request.perm
        perm = Permission(permType=int(p.permType), key=bytes(p.key), range_end=bytes(p.range_end))
        r = AuthRoleGrantPermissionRequest(name=request.name, perm=perm)
        return await self._write(context, r, request.ByteSize())

    @unary
    async def RoleRevokePermission(self, request: Any, context: Any) -> Any:
        r = AuthRoleRevokePermissionRequest(
            role=request.role, key=bytes(request.key), range_end=bytes(request.range_end)
        )
        return await self._write(context, r, request.ByteSize())


async def _hash(password: str) -> bytes:
    """The stored form of ``password`` (scrypt with a fresh salt; off the event loop)."""
    return await asyncio.to_thread(hash_password, password, os.urandom(SALT_BYTES))


__all__ = [
    "AuthService",
    "MemberAuth",
    "abort_unless_admin",
    "authorize",
    "authorize_admin",
    "member_auth",
    "request_token",
    "watch_permitted",
]

"""etcd v3 errors: the gRPC status code and the exact message etcd sends for each.

Messages and codes follow etcd's ``api/v3rpc/rpctypes/error.go`` (server-side errors) and
the ``server/mvcc`` errors they wrap (``ErrCompacted``, ``ErrFutureRev``).  A client sees
``status.code`` + ``status.message``; the gRPC layer (a later step) maps
:class:`EtcdError` to that status unchanged.
"""

from __future__ import annotations

from enum import IntEnum

import msgspec


class GrpcCode(IntEnum):
    """The gRPC status codes etcd's KV errors use (numbers from grpc/codes)."""

    OK = 0
    CANCELED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    NOT_FOUND = 5
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    OUT_OF_RANGE = 11
    UNAVAILABLE = 14
    UNAUTHENTICATED = 16


class ErrorResult(msgspec.Struct, frozen=True, array_like=True):
    """What :meth:`MvccStore.apply` returns for a refused request (same on every replica)."""

    code: int
    message: str


class EtcdError(Exception):
    """A request refused with an etcd error: ``code`` (gRPC status) and ``message``."""

    def __init__(self, code: GrpcCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def fresh(self) -> EtcdError:
        """A new instance of this error, to raise (module constants are templates: raising
        one instance again and again would grow its traceback)."""
        return EtcdError(self.code, self.message)

    def result(self) -> ErrorResult:
        """This error as an :class:`ErrorResult` value."""
        return ErrorResult(int(self.code), self.message)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, EtcdError)
            and other.code == self.code
            and other.message == self.message
        )

    def __hash__(self) -> int:
        return hash((self.code, self.message))

    def __repr__(self) -> str:
        return f"EtcdError({self.code.name}, {self.message!r})"


MSG_EMPTY_KEY = "etcdserver: key is not provided"
MSG_KEY_NOT_FOUND = "etcdserver: key not found"
MSG_VALUE_PROVIDED = "etcdserver: value is provided"
MSG_LEASE_PROVIDED = "etcdserver: lease is provided"
MSG_TOO_MANY_OPS = "etcdserver: too many operations in txn request"
MSG_DUPLICATE_KEY = "etcdserver: duplicate key given in txn request"
MSG_INVALID_SORT_OPTION = "etcdserver: invalid sort option"
MSG_COMPACTED = "etcdserver: mvcc: required revision has been compacted"
MSG_FUTURE_REV = "etcdserver: mvcc: required revision is a future revision"
MSG_REQUEST_TOO_LARGE = "etcdserver: request is too large"
MSG_LEASE_NOT_FOUND = "etcdserver: requested lease not found"
MSG_LEASE_EXIST = "etcdserver: lease already exists"
MSG_LEASE_TTL_TOO_LARGE = "etcdserver: too large lease TTL"
MSG_NOT_LEADER = "etcdserver: not leader"
MSG_WATCH_CANCELED = "etcdserver: watch canceled"

ERR_EMPTY_KEY = EtcdError(GrpcCode.INVALID_ARGUMENT, MSG_EMPTY_KEY)
ERR_KEY_NOT_FOUND = EtcdError(GrpcCode.INVALID_ARGUMENT, MSG_KEY_NOT_FOUND)
ERR_VALUE_PROVIDED = EtcdError(GrpcCode.INVALID_ARGUMENT, MSG_VALUE_PROVIDED)
ERR_LEASE_PROVIDED = EtcdError(GrpcCode.INVALID_ARGUMENT, MSG_LEASE_PROVIDED)
ERR_TOO_MANY_OPS = EtcdError(GrpcCode.INVALID_ARGUMENT, MSG_TOO_MANY_OPS)
ERR_DUPLICATE_KEY = EtcdError(GrpcCode.INVALID_ARGUMENT, MSG_DUPLICATE_KEY)
ERR_INVALID_SORT_OPTION = EtcdError(GrpcCode.INVALID_ARGUMENT, MSG_INVALID_SORT_OPTION)
ERR_COMPACTED = EtcdError(GrpcCode.OUT_OF_RANGE, MSG_COMPACTED)
ERR_FUTURE_REV = EtcdError(GrpcCode.OUT_OF_RANGE, MSG_FUTURE_REV)
ERR_REQUEST_TOO_LARGE = EtcdError(GrpcCode.INVALID_ARGUMENT, MSG_REQUEST_TOO_LARGE)
ERR_LEASE_NOT_FOUND = EtcdError(GrpcCode.NOT_FOUND, MSG_LEASE_NOT_FOUND)
ERR_LEASE_EXIST = EtcdError(GrpcCode.FAILED_PRECONDITION, MSG_LEASE_EXIST)
ERR_LEASE_TTL_TOO_LARGE = EtcdError(GrpcCode.OUT_OF_RANGE, MSG_LEASE_TTL_TOO_LARGE)
ERR_NOT_LEADER = EtcdError(GrpcCode.UNAVAILABLE, MSG_NOT_LEADER)
"""A leader-only lease call (keep-alive, time-to-live) on a node that is not the leader:
the server forwards it to the leader (etcd's ``ErrNotPrimary`` path)."""


# auth (``rpctypes/error.go``; ``auth/store.go`` for the revision check)
MSG_ROOT_USER_NOT_EXIST = "etcdserver: root user does not exist"
MSG_ROOT_ROLE_NOT_EXIST = "etcdserver: root user does not have root role"
MSG_USER_ALREADY_EXIST = "etcdserver: user name already exists"
MSG_USER_EMPTY = "etcdserver: user name is empty"
MSG_USER_NOT_FOUND = "etcdserver: user name not found"
MSG_ROLE_ALREADY_EXIST = "etcdserver: role name already exists"
MSG_ROLE_NOT_FOUND = "etcdserver: role name not found"
MSG_ROLE_EMPTY = "etcdserver: role name is empty"
MSG_AUTH_FAILED = "etcdserver: authentication failed, invalid user ID or password"
MSG_PERMISSION_DENIED = "etcdserver: permission denied"
MSG_ROLE_NOT_GRANTED = "etcdserver: role is not granted to the user"
MSG_PERMISSION_NOT_GRANTED = "etcdserver: permission is not granted to the role"
MSG_AUTH_NOT_ENABLED = "etcdserver: authentication is not enabled"
MSG_INVALID_AUTH_TOKEN = "etcdserver: invalid auth token"
MSG_INVALID_AUTH_MGMT = "etcdserver: invalid auth management"
MSG_AUTH_OLD_REVISION = "auth: revision in header is old"

ERR_ROOT_USER_NOT_EXIST = EtcdError(GrpcCode.FAILED_PRECONDITION, MSG_ROOT_USER_NOT_EXIST)
ERR_ROOT_ROLE_NOT_EXIST = EtcdError(GrpcCode.FAILED_PRECONDITION, MSG_ROOT_ROLE_NOT_EXIST)
ERR_USER_ALREADY_EXIST = EtcdError(GrpcCode.FAILED_PRECONDITION, MSG_USER_ALREADY_EXIST)
ERR_USER_EMPTY = EtcdError(GrpcCode.INVALID_ARGUMENT, MSG_USER_EMPTY)
ERR_USER_NOT_FOUND = EtcdError(GrpcCode.FAILED_PRECONDITION, MSG_USER_NOT_FOUND)
ERR_ROLE_ALREADY_EXIST = EtcdError(GrpcCode.FAILED_PRECONDITION, MSG_ROLE_ALREADY_EXIST)
ERR_ROLE_NOT_FOUND = EtcdError(GrpcCode.FAILED_PRECONDITION, MSG_ROLE_NOT_FOUND)
ERR_ROLE_EMPTY = EtcdError(GrpcCode.INVALID_ARGUMENT, MSG_ROLE_EMPTY)
ERR_AUTH_FAILED = EtcdError(GrpcCode.INVALID_ARGUMENT, MSG_AUTH_FAILED)
ERR_PERMISSION_DENIED = EtcdError(GrpcCode.PERMISSION_DENIED, MSG_PERMISSION_DENIED)
ERR_ROLE_NOT_GRANTED = EtcdError(GrpcCode.FAILED_PRECONDITION, MSG_ROLE_NOT_GRANTED)
ERR_PERMISSION_NOT_GRANTED = EtcdError(GrpcCode.FAILED_PRECONDITION, MSG_PERMISSION_NOT_GRANTED)
ERR_AUTH_NOT_ENABLED = EtcdError(GrpcCode.FAILED_PRECONDITION, MSG_AUTH_NOT_ENABLED)
ERR_INVALID_AUTH_TOKEN = EtcdError(GrpcCode.UNAUTHENTICATED, MSG_INVALID_AUTH_TOKEN)
ERR_INVALID_AUTH_MGMT = EtcdError(GrpcCode.INVALID_ARGUMENT, MSG_INVALID_AUTH_MGMT)
ERR_AUTH_OLD_REVISION = EtcdError(GrpcCode.UNKNOWN, MSG_AUTH_OLD_REVISION)
"""An ``Authenticate`` checked at an older auth revision than the one it is applied at: the
server checks the password again and retries (never sent to a client)."""

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
    INVALID_ARGUMENT = 3
    NOT_FOUND = 5
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    OUT_OF_RANGE = 11
    UNAVAILABLE = 14


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

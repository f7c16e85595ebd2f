"""gRPC status for every failure a handler may meet, with etcd's codes and messages.

Handlers raise; :func:`unary` turns the exception into the status an etcd server sends,
so ``etcdctl`` prints what it prints against etcd:

- :class:`~pnyx.protocols.etcd.EtcdError` (also from an ``ErrorResult`` of the state
  machine): its code and message as they are;
- :class:`RpcFailure`: a status of the server itself (e.g. *member not found*);
- :class:`~pnyx.services.etcd.gateway.GatewayError` (the group did not answer in time):
  ``UNAVAILABLE`` *etcdserver: request timed out*, as etcd's ``ErrGRPCTimeout``;
- :class:`~pnyx.services.etcd.gateway.RefusedError` (Raft refused until the deadline, or
  applying raised): *no leader*, *too many requests*, or ``UNKNOWN`` with the reason.

Anything else is a bug: gRPC answers ``UNKNOWN`` and the handler's exception is logged.
Cancellation (the client went away) propagates untouched.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import grpc  # type: ignore[import-untyped]

from pnyx.protocols.etcd import ErrorResult, EtcdError
from pnyx.services.etcd.gateway import GatewayError, RefusedError

log = logging.getLogger("pnyx.etcd.rpc")

_STATUS: dict[int, Any] = {code.value[0]: code for code in grpc.StatusCode}

MSG_TIMEOUT = "etcdserver: request timed out"
MSG_NO_SPACE = "etcdserver: mvcc: database space exceeded"
MSG_MEMBER_NOT_FOUND = "etcdserver: member not found"
MSG_PEER_URL_EXISTS = "etcdserver: Peer URLs already exists"
MSG_NOT_LEARNER = "etcdserver: can only promote a learner member"
MSG_LEARNER_NOT_READY = "etcdserver: can only promote a learner member which is in sync with leader"
MSG_BAD_TRANSFEREE = "etcdserver: bad leader transferee"
MSG_NOT_ENOUGH_STARTED = "etcdserver: re-configuration failed due to not enough started members"
MSG_UNHEALTHY = "etcdserver: unhealthy cluster"
MSG_LEADER_TRANSFER_TIMEOUT = "etcdserver: leader transfer timeout"
MSG_NOT_CAPABLE = "etcdserver: not capable"
MSG_NO_LEADER = "etcdserver: no leader"
MSG_TOO_MANY_REQUESTS = "etcdserver: too many requests"

_REFUSALS: dict[str, tuple[Any, str]] = {
    "not_leader": (grpc.StatusCode.UNAVAILABLE, MSG_NO_LEADER),
    "no_leader": (grpc.StatusCode.UNAVAILABLE, MSG_NO_LEADER),
    "leader_unknown": (grpc.StatusCode.UNAVAILABLE, MSG_NO_LEADER),
    "busy": (grpc.StatusCode.RESOURCE_EXHAUSTED, MSG_TOO_MANY_REQUESTS),
    "transferring": (grpc.StatusCode.RESOURCE_EXHAUSTED, MSG_TOO_MANY_REQUESTS),
}
"""Raft refusals that outlived the gateway's retries, as etcd's nearest status."""


class RpcFailure(Exception):
    """A request refused by the server: ``code`` (a ``grpc.StatusCode``) and ``message``."""

    def __init__(self, code: Any, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def status_code(code: int) -> Any:
    """The ``grpc.StatusCode`` numbered ``code`` (UNKNOWN for a number gRPC lacks)."""
    return _STATUS.get(int(code), grpc.StatusCode.UNKNOWN)


def failure_of(exc: Exception) -> tuple[Any, str]:
    """(gRPC status code, message) for a failure a handler raised."""
    if isinstance(exc, EtcdError):
        return status_code(exc.code), exc.message
    if isinstance(exc, RpcFailure):
        return exc.code, exc.message
    if isinstance(exc, GatewayError):
        log.info("request_timed_out %s", exc)
        return grpc.StatusCode.UNAVAILABLE, MSG_TIMEOUT
    if isinstance(exc, RefusedError):
        log.warning("request_refused error=%s", exc.error)
        return _REFUSALS.get(exc.error, (grpc.StatusCode.UNKNOWN, f"etcdserver: {exc.error}"))
    raise exc


def raise_error(result: ErrorResult) -> NoReturn:
    """Raise the :class:`EtcdError` an ``ErrorResult`` of the state machine stands for."""
    raise RpcFailure(status_code(result.code), result.message)


HANDLED = (EtcdError, RpcFailure, GatewayError, RefusedError)
"""Exceptions :func:`unary` turns into an etcd status."""

Handler = Callable[[Any, Any, Any], Awaitable[Any]]
H = TypeVar("H", bound=Handler)


def unary(method: H) -> H:
    """Decorate a unary handler ``(self, request, context)``: etcd failures become their
    gRPC status (``context.abort``); the handler's ``on_status(method, code)`` is called
    once per request when it has one (metrics)."""
    name = method.__name__

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: Any) -> Any:
        try:
            response = await method(self, request, context)
        except HANDLED as exc:
            code, message = failure_of(exc)
            _count(self, name, code)
            await context.abort(code, message)
            raise AssertionError("context.abort returned") from exc
        _count(self, name, grpc.StatusCode.OK)
        return response

    return wrapper  # type: ignore[return-value]


def _count(service: Any, method: str, code: Any) -> None:
    hook = getattr(service, "on_status", None)
    if hook is not None:
        hook(method, code)


__all__ = [
    "HANDLED",
    "MSG_NO_SPACE",
    "MSG_TIMEOUT",
    "RpcFailure",
    "failure_of",
    "raise_error",
    "status_code",
    "unary",
]

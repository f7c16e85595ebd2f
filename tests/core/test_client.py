"""OneAtATimeClient: think, start, complete on the matching reply, time out, stop on Quiesce."""

from __future__ import annotations

from typing import Any

import pytest

from pnyx.core import (
    ClientReply,
    EventType,
    HistoryEvent,
    Message,
    OneAtATimeClient,
    Quiesce,
    SplitMix64,
)


class _Ping(Message, frozen=True):
    request_id: int


class _PingClient(OneAtATimeClient[_Ping]):
    def __init__(self, rng: SplitMix64) -> None:
        super().__init__(100, (1, 2), rng, timeout_ticks=3, max_think_ticks=1)

    def _begin_op(self, request_id: int) -> tuple[int, _Ping, HistoryEvent]:
        return self.pick_node(), _Ping(request_id), HistoryEvent(100, "invoke", "ping", request_id)

    def _completion(self, outcome: EventType, op: _Ping, result: Any) -> HistoryEvent:
        return HistoryEvent(100, outcome, "ping", op.request_id, result)


def _events(client: _PingClient) -> list[tuple[str, Any, Any]]:
    return [(r.event.type, r.event.value, r.event.key) for r in client.ready().record]


def _started(client: _PingClient) -> _Ping:
    """Tick (max_think_ticks=1: no thinking) and return the request sent."""
    client.tick()
    ready = client.ready()
    sends = ready.send
    assert len(sends) == 1 and sends[0].to in (1, 2)
    assert [r.event.type for r in ready.record] == ["invoke"]
    msg = sends[0].msg
    assert isinstance(msg, _Ping)
    return msg


def test_reply_completes_only_the_matching_request() -> None:
    client = _PingClient(SplitMix64(7))
    op = _started(client)
    assert op.request_id == 1
    client.step(ClientReply(op.request_id + 1, True, "stale"), 1)
    assert _events(client) == []
    client.step(ClientReply(op.request_id, True, "pong"), 1)
    assert _events(client) == [("ok", 1, "pong")]
    client.step(ClientReply(op.request_id, False, None), 1)  # a duplicate reply: ignored
    assert _events(client) == []
    assert _started(client).request_id == 2


def test_no_reply_is_info_after_timeout_then_quiesce_stops_new_ops() -> None:
    client = _PingClient(SplitMix64(7))
    _started(client)
    client.tick()
    client.tick()
    assert _events(client) == []
    client.tick()
    assert _events(client) == [("info", 1, None)]
    client.step(Quiesce(), 0)
    for _ in range(5):
        client.tick()
    assert not client.has_ready()


def test_a_client_without_nodes_is_refused() -> None:
    with pytest.raises(ValueError, match=r"needs at least one node, got \(\)"):
        OneAtATimeClient[_Ping](100, (), SplitMix64(1), timeout_ticks=3, max_think_ticks=1)

"""Input validation: what a Raft node refuses before it changes any state (issue 16, item 1).

:func:`check_peer_message` and :func:`check_client_message` raise
:class:`pnyx.core.InvalidMessage` for a message no correct sender can produce (a negative
term or index, a term 0 where every sender has a term, an entry list whose terms are not
those of a log, a malformed configuration ...).  Anything a correct sender may produce —
stale duplicates, out-of-order chunks, old terms — passes: Raft handles those itself.

The peer check also normalises what crossed a wire untyped: a configuration entry's data
arrives as a msgpack array and is converted to :class:`ConfigData` here.
"""

from __future__ import annotations

from typing import Any

import msgspec

from pnyx.core import InvalidMessage, Message
from pnyx.protocols.raft.messages import (
    ENTRY_COMMAND,
    ENTRY_CONFIG,
    ENTRY_NOOP,
    READ_LINEARIZABLE,
    READ_SERIALIZABLE,
    AdminRequest,
    AppendEntries,
    AppendResponse,
    ClientRequest,
    ConfigData,
    Entry,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    ReadRequest,
    RequestVote,
    SnapshotResponse,
    TimeoutNow,
    VoteResponse,
)

CLIENT_MESSAGES: tuple[type[Message], ...] = (ClientRequest, ReadRequest, AdminRequest)
"""What a client may send a Raft node."""

_ENTRY_KINDS = frozenset({ENTRY_COMMAND, ENTRY_NOOP, ENTRY_CONFIG})
_READ_CONSISTENCIES = frozenset({READ_LINEARIZABLE, READ_SERIALIZABLE})


MAX_WIRE_INT = 2**62
"""Largest magnitude of an integer field a node accepts from the wire.  msgpack carries
ints up to 2**64 - 1, but a node adds to terms and indexes (``term + 1``, ``index + 1``)
and must still be able to encode the result in its own messages and hard state; no real
term, index, id or counter comes near 2**62."""


def _refuse(msg: Message, why: str) -> InvalidMessage:
    return InvalidMessage(f"{type(msg).__name__}: {why}")


def _bounded(msg: Message) -> None:
    """Every integer field of ``msg`` within ±:data:`MAX_WIRE_INT`."""
    for name in msg.__struct_fields__:
        value = getattr(msg, name)
        if type(value) is int and not -MAX_WIRE_INT <= value <= MAX_WIRE_INT:
            raise _refuse(msg, f"{name} {value} is beyond ±2**62")


def _non_negative(msg: Message, *names: str) -> None:
    for name in names:
        value = getattr(msg, name)
        if value < 0:
            raise _refuse(msg, f"{name} {value} is negative")


def _positive_term(msg: Message) -> None:
    term: int = msg.term  # type: ignore[attr-defined]
    if term < 1:
        raise _refuse(msg, f"term {term}: only a node with a term >= 1 sends this")


def check_config(data: Any) -> ConfigData:
    """``data`` as a well-formed :class:`ConfigData`, or :class:`InvalidMessage`."""
    try:
        conf = data if type(data) is ConfigData else msgspec.convert(data, ConfigData)
    except msgspec.ValidationError as exc:
        raise InvalidMessage(f"malformed configuration {data!r}: {exc}") from None
    voters, outgoing, learners = set(conf.voters), set(conf.outgoing), set(conf.learners)
    everyone = [*conf.voters, *conf.outgoing, *conf.learners]
    if not voters:
        raise InvalidMessage(f"configuration {conf} has no voter")
    if any(node < 1 or node > MAX_WIRE_INT for node in everyone):
        raise InvalidMessage(f"configuration {conf} names a node id below 1 or beyond 2**62")
    if len(voters) != len(conf.voters) or len(outgoing) != len(conf.outgoing):
        raise InvalidMessage(f"configuration {conf} repeats a voter")
    if len(learners) != len(conf.learners) or learners & (voters | outgoing):
        raise InvalidMessage(f"configuration {conf} has a learner that is also a voter")
    return conf


def _check_entries(m: AppendEntries) -> AppendEntries:
    """Terms of a log: each in [1, m.term], non-decreasing from ``prev_term``; kinds known."""
    previous = m.prev_term
    converted: list[Entry] | None = None
    for k, entry in enumerate(m.entries):
        if entry.term < max(previous, 1) or entry.term > m.term:
            raise _refuse(
                m,
                f"entry {m.prev_index + 1 + k} has term {entry.term} after term {previous} "
                f"in an append of term {m.term} (not a log)",
            )
        if entry.kind not in _ENTRY_KINDS:
            raise _refuse(m, f"entry {m.prev_index + 1 + k} has unknown kind {entry.kind}")
        previous = entry.term
        if entry.kind == ENTRY_CONFIG and type(entry.data) is not ConfigData:
            if converted is None:
                converted = list(m.entries[:k])
            converted.append(Entry(entry.term, ENTRY_CONFIG, check_config(entry.data)))
            continue
        if entry.kind == ENTRY_CONFIG:
            check_config(entry.data)
        if converted is not None:
            converted.append(entry)
    if converted is None:
        return m
    return AppendEntries(m.term, m.prev_index, m.prev_term, tuple(converted), m.commit)


def _check_log_point(msg: Message, index: int, term: int, what: str) -> None:
    """(index, term) names a log position: index 0 has term 0, later ones a term >= 1."""
    if (index == 0) != (term == 0):
        raise _refuse(msg, f"{what} index {index} with term {term}")
    sender_term: int = msg.term  # type: ignore[attr-defined]
    if term > sender_term:
        raise _refuse(msg, f"{what} term {term} above the message term {sender_term}")


def _check_request_vote(m: RequestVote) -> RequestVote:
    _positive_term(m)
    _non_negative(m, "last_index", "last_term")
    _check_log_point(m, m.last_index, m.last_term, "last")
    return m


def _check_vote_response(m: VoteResponse) -> VoteResponse:
    _non_negative(m, "term")  # a node still at term 0 may refuse a pre-vote
    if m.granted:
        _positive_term(m)
    return m


def _check_append(m: AppendEntries) -> AppendEntries:
    _positive_term(m)
    _non_negative(m, "prev_index", "prev_term", "commit")
    _check_log_point(m, m.prev_index, m.prev_term, "previous")
    return _check_entries(m)


def _check_append_response(m: AppendResponse) -> AppendResponse:
    _positive_term(m)
    _non_negative(m, "index", "hint_index", "hint_term")
    return m


def _check_heartbeat(m: Heartbeat) -> Heartbeat:
    _positive_term(m)
    _non_negative(m, "commit", "ctx", "sent_tick")
    return m


def _check_heartbeat_response(m: HeartbeatResponse) -> HeartbeatResponse:
    _positive_term(m)
    _non_negative(m, "ctx", "sent_tick", "last_index")
    return m


def _check_install_snapshot(m: InstallSnapshot) -> InstallSnapshot:
    _positive_term(m)
    _non_negative(m, "index", "snap_term", "offset")
    if m.index < 1:
        raise _refuse(m, f"snapshot index {m.index}: a snapshot covers at least entry 1")
    _check_log_point(m, m.index, m.snap_term, "snapshot")
    conf = check_config(m.config)
    if conf is not m.config:
        return InstallSnapshot(m.term, m.index, m.snap_term, conf, m.offset, m.data, m.done)
    return m


def _check_snapshot_response(m: SnapshotResponse) -> SnapshotResponse:
    _positive_term(m)
    _non_negative(m, "index", "next_offset")
    return m


def _check_timeout_now(m: TimeoutNow) -> TimeoutNow:
    _positive_term(m)
    return m


_PEER_CHECKS: dict[type[Message], Any] = {
    RequestVote: _check_request_vote,
    VoteResponse: _check_vote_response,
    AppendEntries: _check_append,
    AppendResponse: _check_append_response,
    Heartbeat: _check_heartbeat,
    HeartbeatResponse: _check_heartbeat_response,
    InstallSnapshot: _check_install_snapshot,
    SnapshotResponse: _check_snapshot_response,
    TimeoutNow: _check_timeout_now,
}


def check_peer_message(msg: Message) -> Message:
    """``msg`` (normalised) if a correct peer could have sent it; else InvalidMessage."""
    check = _PEER_CHECKS.get(type(msg))
    if check is None:
        raise InvalidMessage(f"{type(msg).__name__} is not a Raft peer message")
    _bounded(msg)
    result: Message = check(msg)
    return result


def check_client_message(msg: Message) -> None:
    """InvalidMessage unless ``msg`` is a client request with sensible fields."""
    if type(msg) not in CLIENT_MESSAGES:
        raise InvalidMessage(f"{type(msg).__name__} is not a Raft client request")
    _bounded(msg)
    if isinstance(msg, ReadRequest) and msg.consistency not in _READ_CONSISTENCIES:
        raise _refuse(
            msg,
            f"consistency {msg.consistency!r} is not one of {sorted(_READ_CONSISTENCIES)}",
        )
    if isinstance(msg, AdminRequest) and (msg.node < 0 or msg.other < 0):
        raise _refuse(msg, f"node ids must not be negative (node {msg.node}, other {msg.other})")

"""Input validation (issue 16, item 1): ``RaftNode.step`` refuses, before changing any state,
what no correct sender produces, with :class:`InvalidMessage`."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from pnyx.core import Codec, InvalidMessage, Message
from pnyx.protocols.raft import (
    AdminRequest,
    AppendEntries,
    AppendResponse,
    ClientRequest,
    Command,
    ConfigData,
    Entry,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    KvOp,
    KvStateMachine,
    RaftConfig,
    RaftNode,
    ReadRequest,
    RequestVote,
    SnapshotResponse,
    TimeoutNow,
    VoteResponse,
)
from pnyx.protocols.raft.kv import OPEN_SESSION
from pnyx.protocols.raft.messages import ENTRY_CONFIG, PEER_MESSAGES

from .cluster import Cluster

CLIENT = 1000
CONF = ConfigData((1, 2, 3))


def _state(node: RaftNode) -> tuple[Any, ...]:
    """Everything a refused message must leave untouched."""
    return (
        node.role,
        node.term,
        node.vote,
        node.leader,
        node.commit,
        node.log.last_index,
        node.election_elapsed_ticks,
        node.has_ready(),
    )


def _refused(msg: Message, from_id: int, match: str) -> None:
    c = Cluster(3)
    c.elect(1)
    c.settle(2)
    for i in (1, 2):
        node = c.node(i)
        before = _state(node)
        with pytest.raises(InvalidMessage, match=match):
            node.step(msg, from_id)
        assert _state(node) == before, f"node {i} changed state on a refused message"


def test_a_client_request_from_a_peer_id_is_refused() -> None:
    _refused(ReadRequest(1, KvOp("get", "x")), 3, "not a Raft peer message")


def test_a_peer_message_from_a_client_id_is_refused() -> None:
    _refused(RequestVote(5, 9, 5), CLIENT, "not a Raft client request")
    _refused(AppendEntries(5, 0, 0, (), 0), CLIENT, "not a Raft client request")


def test_a_message_from_an_unknown_node_is_refused() -> None:
    _refused(RequestVote(5, 9, 5), 7, "not a peer")
    _refused(Heartbeat(5, 0), 0, "not a peer")


def test_a_message_from_itself_is_refused() -> None:
    c = Cluster(3)
    with pytest.raises(InvalidMessage, match="not a peer"):
        c.node(1).step(RequestVote(5, 0, 0), 1)


@pytest.mark.parametrize(
    ("msg", "match"),
    [
        (RequestVote(-1, 0, 0), "term -1"),
        (RequestVote(0, 0, 0), "term 0"),
        (RequestVote(3, -2, 0), "last_index -2 is negative"),
        (RequestVote(3, 5, 0), "last index 5 with term 0"),
        (RequestVote(3, 0, 2), "last index 0 with term 2"),
        (RequestVote(3, 5, 4), "last term 4 above the message term 3"),
        (VoteResponse(-1, False), "term -1"),
        (VoteResponse(0, True), "term 0"),
        (AppendEntries(0, 0, 0, (), 0), "term 0"),
        (AppendEntries(3, -1, 0, (), 0), "prev_index -1"),
        (AppendEntries(3, 0, 0, (), -4), "commit -4"),
        (AppendEntries(3, 2, 0, (), 0), "previous index 2 with term 0"),
        (AppendEntries(3, 2, 4, (), 0), "previous term 4 above"),
        (AppendEntries(3, 0, 0, (Entry(2), Entry(1)), 0), "not a log"),
        (AppendEntries(3, 2, 2, (Entry(1),), 0), "not a log"),
        (AppendEntries(3, 0, 0, (Entry(4),), 0), "not a log"),
        (AppendEntries(3, 0, 0, (Entry(0),), 0), "not a log"),
        (AppendEntries(3, 0, 0, (Entry(1, 9),), 0), "unknown kind 9"),
        (AppendEntries(3, 0, 0, (Entry(1, ENTRY_CONFIG, "junk"),), 0), "malformed config"),
        (AppendEntries(3, 0, 0, (Entry(1, ENTRY_CONFIG, ConfigData(())),), 0), "no voter"),
        (
            AppendEntries(3, 0, 0, (Entry(1, ENTRY_CONFIG, ConfigData((1,), (), (1,))),), 0),
            "also a voter",
        ),
        (AppendResponse(3, -1), "index -1"),
        (AppendResponse(0, 1), "term 0"),
        (Heartbeat(3, -1), "commit -1"),
        (Heartbeat(3, 0, ctx=-1), "ctx -1"),
        (HeartbeatResponse(3, last_index=-1), "last_index -1"),
        (InstallSnapshot(3, 5, 2, CONF, -8, b"", False), "offset -8"),
        (InstallSnapshot(3, 0, 0, CONF, 0, b"", True), "snapshot index 0"),
        (InstallSnapshot(3, 5, 0, CONF, 0, b"", True), "snapshot index 5 with term 0"),
        (InstallSnapshot(3, 5, 4, CONF, 0, b"", True), "snapshot term 4 above"),
        (InstallSnapshot(3, 5, 2, ConfigData((1, 1)), 0, b"", True), "repeats a voter"),
        (SnapshotResponse(3, 5, -1), "next_offset -1"),
        (TimeoutNow(0), "term 0"),
        # beyond what the node could add 1 to and still encode (msgpack: 64 bits)
        (AppendEntries(2**64 - 1, 0, 0, (), 0), "term 18446744073709551615 is beyond"),
        (RequestVote(2**62 + 1, 0, 0), "beyond"),
        (Heartbeat(3, 2**63), "commit 9223372036854775808 is beyond"),
        (HeartbeatResponse(3, sent_tick=-(2**63)), "beyond"),
        (InstallSnapshot(3, 5, 2, ConfigData((1, 2**63)), 0, b"", True), "below 1 or beyond"),
    ],
)
def test_nonsense_fields_are_refused(msg: Message, match: str) -> None:
    _refused(msg, 3, match)


@pytest.mark.parametrize(
    ("msg", "match"),
    [
        (ReadRequest(1, KvOp("get", "x"), "eventual"), "consistency 'eventual'"),
        (AdminRequest(1, "remove", -3), "must not be negative"),
        (AdminRequest(1, "remove", 2**64 - 1), "node 18446744073709551615 is beyond"),
        (ReadRequest(2**63, KvOp("get", "x")), "beyond"),
        (RequestVote(3, 0, 0), "not a Raft client request"),
    ],
)
def test_nonsense_client_requests_are_refused(msg: Message, match: str) -> None:
    _refused(msg, CLIENT, match)


def test_a_wire_decoded_config_entry_is_accepted_and_converted() -> None:
    """Over TCP a config entry's data arrives as a msgpack array: it must still work."""
    c = Cluster(3)
    codec: Codec[Message] = Codec(PEER_MESSAGES)
    append = AppendEntries(1, 0, 0, (Entry(1, ENTRY_CONFIG, ConfigData((1, 2, 3), (), (4,))),), 0)
    wire = codec.decode(codec.encode(append))
    assert isinstance(wire, AppendEntries) and type(wire.entries[0].data) is list
    node = c.node(2)
    node.step(wire, 1)
    assert node.config.learners == frozenset({4})
    node.step(Heartbeat(1, 0), 4)  # a member of a configuration it holds is known


def test_a_cluster_keeps_working_after_refusing_input() -> None:
    c = Cluster(3)
    c.elect(1)
    with pytest.raises(InvalidMessage):
        c.node(1).step(ReadRequest(1, KvOp("get", "x")), 2)
    session = c.open_session(1, rid=5)
    c.put(1, "x", "1", session, 1, 6)
    c.deliver()
    assert c.reply(6).ok


@pytest.mark.parametrize(
    "command",
    [
        Command(0, 0, "junk"),
        Command(0, 0, KvOp("append", "k", 5)),
        [1, 2, {"kind": 3}],
        "just a string",
        KvOp("put", 5, "v"),
    ],
)
def test_the_kv_state_machine_answers_junk_with_an_error(command: Any) -> None:
    """A poison command would crash every replica that applies it: answer an error."""
    sm = KvStateMachine()
    session = sm.apply(Command(0, 0, OPEN_SESSION))
    assert session == 1
    sm.apply(Command(1, 1, KvOp("put", "k", "a")))
    if isinstance(command, Command) and command.session == 0:
        command = Command(1, 2, command.op)
    try:
        result = sm.apply(command)
    except (TypeError, msgspec.ValidationError) as exc:  # pragma: no cover - the defect
        pytest.fail(f"apply raised {exc!r}")
    assert isinstance(result, dict) and "error" in result, result


def test_a_client_request_with_a_junk_command_does_not_stop_the_cluster() -> None:
    c = Cluster(3, RaftConfig())
    c.elect(1)
    session = c.open_session(1, rid=5)
    c.node(1).step(ClientRequest(6, Command(session, 1, KvOp("append", "k", 5))), CLIENT)
    c.deliver()
    c.settle(2)
    assert "error" in c.reply(6).result
    assert all(n.applied == c.node(1).applied for n in c.live())


def test_a_node_restarts_from_a_wal_holding_a_config_entry_as_msgpack() -> None:
    """The real WAL gives entries back as decoded msgpack arrays; a membership change in
    the log must not stop the node from starting."""
    from pnyx.core import DurableState, LogAppend, SplitMix64

    entries = [Entry(1), Entry(1, ENTRY_CONFIG, ConfigData((1, 2, 3), (), (4,)))]
    raw = msgspec.msgpack.decode(msgspec.msgpack.encode(entries))
    durable = DurableState()
    durable.apply_all([LogAppend(1, tuple(raw))])
    node = RaftNode(1, (1, 2, 3, 4), SplitMix64(1), durable)
    assert node.config.learners == frozenset({4}) and node.log.last_index == 2

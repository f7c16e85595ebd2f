"""Every runnable protocol's messages and durable writes survive the real runtime's codecs.

The simulator hands messages over without encoding them, so a message the wire codec
refuses (or changes) shows up only on real processes.  For every protocol of
:func:`pnyx.catalog.runnable_names`:

* **generated instances** of every type its :class:`~pnyx.sim.spec.RuntimeDef` declares
  (peer and client messages, ``ClientReply``, log entries and durable records) go
  through the runtime's own codecs (framed wire codec, WAL op codec) and come back equal;
* **simulated runs** (a few seeds under faults, nodes from the simulator's factory and
  from the real processes' one): every message a node or client actually sends has a type
  the receiving connection accepts, and every message and persist operation comes back
  from the codecs carrying the same data.  The runs continue with the *decoded* values
  (as real processes would) and must still pass the protocol's monitor.

No protocol failed these when they were written.  The mutant tests at the end show that
each check catches what it is for (an undeclared type, a value the codec refuses, a value
that decodes differently, and the int-keyed map the chain snapshot once carried).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pnyx.catalog import get_protocol, runnable_names
from pnyx.core import ClientReply, LogAppend, Message, Node, PutRecord, Ready, Send
from pnyx.protocols.chain.messages import ChainConfig
from pnyx.protocols.etcd.sim_client import WatchClose, WatchData, WatchOpen
from pnyx.protocols.raft.messages import Heartbeat
from pnyx.runtime.transport import make_wire_codec
from pnyx.sim.runner import SimConfig, run_sim
from pnyx.sim.spec import RuntimeDef
from tests.wire.strategies import strategy_for
from tests.wire.wire_spy import (
    over_the_wire,
    spied,
    through_the_wal,
    unfaithful,
    wal_codec,
    wire_codec,
)

RUNNABLE = runnable_names()
FAULTS = frozenset({"crash", "partition", "drop", "duplicate", "reorder", "delay"})
SEEDS = (1, 2)
SIM_ONLY: dict[str, frozenset[type[Message]]] = {
    "etcd": frozenset({WatchOpen, WatchClose, WatchData}),
}
"""Messages of the simulator's stand-ins that real processes never exchange: ``pnyx sim
etcd`` serves watches from a node wrapper, real processes from :mod:`pnyx.services.etcd`
over gRPC."""
UNDECODED_DELIVERY = frozenset({"etcd"})
"""Runs delivered as sent (still checked): etcd's simulated node proposes lease revokes as
structs into its own log while followers would hold the decoded data, which Raft's
log-matching monitor compares with ``==`` (real state machines convert both)."""
NO_RUNTIME_NODES = frozenset({"etcd"})
"""Real etcd nodes are plain Raft nodes: the simulator's etcd clients (watches) need the
simulated node wrapper."""

EXAMPLES = settings(
    max_examples=20,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def runtime_of(name: str) -> RuntimeDef:
    runtime = get_protocol(name).runtime
    assert runtime is not None, name
    return runtime


def declared_types() -> list[tuple[str, type[Message]]]:
    """(protocol, type) for every wire type of every runnable protocol, plus its replies."""
    pairs: list[tuple[str, type[Message]]] = []
    for name in RUNNABLE:
        kinds: tuple[type[Message], ...] = (*runtime_of(name).message_types, ClientReply)
        pairs += [(name, kind) for kind in kinds]
    return pairs


def durable_types() -> list[tuple[str, str, Any]]:
    """(protocol, what, type) for typed log entries and durable records."""
    found: list[tuple[str, str, Any]] = []
    for name in RUNNABLE:
        runtime = runtime_of(name)
        if runtime.entry_type is not Any:
            found.append((name, "entry", runtime.entry_type))
        for key, kind in sorted(runtime.record_types.items()):
            found.append((name, key, kind))
    return found


def _type_id(value: Any) -> str:
    return getattr(value, "__name__", str(value))


# -- generated instances -----------------------------------------------------------------


def test_every_runnable_protocol_declares_wire_types() -> None:
    assert len(RUNNABLE) >= 10, RUNNABLE
    for name in RUNNABLE:
        runtime = runtime_of(name)
        assert runtime.peer_message_types, name
        assert runtime.client_message_types, name
        wire_codec(runtime)  # builds: no two types share a tag


@pytest.mark.parametrize(("name", "kind"), declared_types(), ids=_type_id)
def test_generated_messages_round_trip_through_the_wire_codec(
    name: str, kind: type[Message]
) -> None:
    codec = wire_codec(runtime_of(name))

    @EXAMPLES
    @given(msg=strategy_for(kind))
    def round_trip(msg: Message) -> None:
        assert over_the_wire(codec, msg) == msg

    round_trip()


@pytest.mark.parametrize(("name", "what", "kind"), durable_types(), ids=_type_id)
def test_generated_entries_and_records_round_trip_through_the_wal_codec(
    name: str, what: str, kind: Any
) -> None:
    codec = wal_codec(runtime_of(name))
    if what == "entry":
        ops: st.SearchStrategy[Any] = st.builds(
            LogAppend,
            st.integers(1, 2**63 - 1),
            st.lists(strategy_for(kind), max_size=3).map(tuple),
        )
    else:
        ops = st.builds(PutRecord, st.just(what), strategy_for(kind))

    @EXAMPLES
    @given(op=ops)
    def round_trip(op: Any) -> None:
        assert through_the_wal(codec, op) == op

    round_trip()


# -- what simulated runs send and persist ----------------------------------------------------


def run_cases() -> list[tuple[str, bool, int]]:
    """(protocol, nodes of the real processes' factory, seed)."""
    cases: list[tuple[str, bool, int]] = []
    for name in RUNNABLE:
        cases += [(name, False, seed) for seed in SEEDS]
        if runtime_of(name).make_node is not None and name not in NO_RUNTIME_NODES:
            cases.append((name, True, SEEDS[0]))
    return cases


@pytest.mark.parametrize(("name", "runtime_nodes", "seed"), run_cases())
def test_what_a_simulated_run_sends_and_persists_is_declared_and_survives_the_codecs(
    name: str, runtime_nodes: bool, seed: int
) -> None:
    spec, log = spied(
        get_protocol(name),
        deliver_decoded=name not in UNDECODED_DELIVERY,
        runtime_nodes=runtime_nodes,
        sim_only=SIM_ONLY.get(name, frozenset()),
    )
    result = run_sim(spec, SimConfig(seed=seed, faults=FAULTS))
    assert log.problems == []
    routes = {route for route, _ in log.sent}
    assert {"peer", "from-client", "to-client"} <= routes, log.sent
    for route, type_name in log.sent:
        if type_name not in {t.__name__ for t in SIM_ONLY.get(name, ())}:
            assert type_name in {t.__name__ for t in log.accepted(route)}, (route, type_name)
    if runtime_nodes:
        # the real processes' timing constants (10 ms ticks) may not converge within the
        # simulator's heal phase (e.g. Dynamo's anti-entropy); nothing may break though
        assert result.violation is None or result.violation.prop == "liveness", result.violation
    else:
        assert result.violation is None, result.violation


def test_sim_only_messages_are_really_sent_and_really_undeclared() -> None:
    """The etcd exemption stays honest: those types are sent in the simulator and are not
    in etcd's runtime lists (if they become runnable, the exemption must go)."""
    spec, log = spied(get_protocol("etcd"), deliver_decoded=False, sim_only=SIM_ONLY["etcd"])
    run_sim(spec, SimConfig(seed=SEEDS[0], faults=FAULTS))
    sent_names = {type_name for _, type_name in log.sent}
    for kind in SIM_ONLY["etcd"]:
        assert kind.__name__ in sent_names, kind
        assert kind not in runtime_of("etcd").message_types, kind


# -- the checks catch what they are for ------------------------------------------------------


def test_a_type_missing_from_the_runtime_lists_is_reported() -> None:
    raft = get_protocol("raft")
    assert raft.runtime is not None
    peers = tuple(t for t in raft.runtime.peer_message_types if t is not Heartbeat)
    doctored = dataclasses.replace(
        raft, runtime=dataclasses.replace(raft.runtime, peer_message_types=peers)
    )
    spec, log = spied(doctored, deliver_decoded=True)
    run_sim(spec, SimConfig(seed=1))
    assert any(p.startswith("peer Heartbeat from ") and "not declared" in p for p in log.problems)


def _corrupting(
    factory: Callable[..., Node], corrupt: Callable[[Message], Message]
) -> Callable[..., Node]:
    """Nodes whose sent messages pass through ``corrupt`` (a mutant of a sender)."""

    def make(*args: Any) -> Node:
        node = factory(*args)
        take = node.ready

        def ready() -> Ready:
            batch = take()
            batch.send = [Send(s.to, corrupt(s.msg)) for s in batch.send]
            return batch

        node.ready = ready  # type: ignore[method-assign]
        return node

    return make


def test_a_value_the_codec_refuses_is_reported() -> None:
    """A Heartbeat whose ``term`` is a string: fine in the simulator, refused on the wire."""

    def corrupt(msg: Message) -> Message:
        if isinstance(msg, Heartbeat):
            return msgspec.structs.replace(msg, term=str(msg.term))
        return msg

    raft = get_protocol("raft")
    spec, log = spied(
        dataclasses.replace(raft, make_node=_corrupting(raft.make_node, corrupt)),
        deliver_decoded=False,
    )
    run_sim(spec, SimConfig(seed=1))
    assert any(p.startswith("peer Heartbeat") and "refused" in p for p in log.problems)


def test_a_value_that_decodes_differently_is_reported() -> None:
    """A ChainConfig whose members are a list: it decodes as the declared tuple, which no
    longer compares equal to what the simulator would have delivered."""

    def corrupt(msg: Message) -> Message:
        if isinstance(msg, ChainConfig):
            return msgspec.structs.replace(msg, members=list(msg.members))
        return msg

    chain = get_protocol("chain")
    spec, log = spied(
        dataclasses.replace(chain, make_node=_corrupting(chain.make_node, corrupt)),
        deliver_decoded=False,
    )
    run_sim(spec, SimConfig(seed=1))
    assert any(p.startswith("peer ChainConfig") and "decoded" in p for p in log.problems)


class _Undeclared(Message, frozen=True):
    value: int


def test_round_trip_helpers_fail_on_what_the_runtime_refuses() -> None:
    codec = wire_codec(runtime_of("raft"))
    with pytest.raises(msgspec.ValidationError):
        over_the_wire(codec, _Undeclared(1))
    with pytest.raises(OverflowError):
        over_the_wire(codec, Heartbeat(term=2**64, commit=0, ctx=0, sent_tick=0))
    assert unfaithful(ChainConfig(1, [2, 3], 0), ChainConfig(1, (2, 3), 0))  # type: ignore[arg-type]
    assert unfaithful(PutRecord("k", (1, 2)), PutRecord("k", [1, 2])) == ""
    assert unfaithful(PutRecord("k", 1), PutRecord("k", 2))


class _OldChainSnapshot(Message, frozen=True):
    """The chain snapshot's ``last_writes`` as it once was: a map with int keys, which the
    runtime's deterministic encoder refuses (found only on real processes then)."""

    last_writes: dict[int, tuple[int, int, Any]]


def test_generated_instances_catch_the_old_chain_snapshot() -> None:
    codec = make_wire_codec((_OldChainSnapshot,))

    @EXAMPLES
    @given(msg=strategy_for(_OldChainSnapshot))
    def round_trip(msg: Message) -> None:
        assert over_the_wire(codec, msg) == msg

    with pytest.raises(TypeError, match="str keys"):
        round_trip()

"""Op-based CRDTs in the simulator: crdt-text (300 seeds, as issue 12 asks of ``make test``;
1,500 in ``make soak``), crdt-opcounter, crdt-opset with every fault; broken replicas are
caught by the property they break."""

from __future__ import annotations

import os
from dataclasses import replace
from functools import partial
from typing import Any

import pytest

from pnyx.catalog import get_protocol
from pnyx.protocols.crdt.oplog.messages import CrdtEdit
from pnyx.protocols.crdt.oplog.node import CounterReplica, OpCrdtNode, SetReplica
from pnyx.protocols.crdt.oplog.orset import RemoveOp
from pnyx.protocols.crdt.spec_ops import CounterMonitor, SetMonitor, TextMonitor
from pnyx.sim.runner import SimConfig, run_sim
from pnyx.sim.schedule import parse_faults
from pnyx.sim.spec import ProtocolDef

ALL = parse_faults("all")
TEXT_SEEDS = 1_500 if os.environ.get("PNYX_SOAK") else 300
TEXT_CHUNKS = 2
"""The crdt-text seeds run as this many test cases, so that ``pytest -n 2`` spreads them."""


def _failures(name: str, seeds: range) -> list[str]:
    spec = get_protocol(name)
    out = []
    for seed in seeds:
        result = run_sim(spec, SimConfig(seed=seed, faults=ALL))
        if not result.ok:
            out.append(f"seed {seed}: {result.violation} (pnyx sim {name} --seed {seed})")
    return out


@pytest.mark.parametrize("chunk", range(TEXT_CHUNKS))
def test_crdt_text_seeds_no_divergence(chunk: int) -> None:
    failures = _failures("crdt-text", range(chunk, TEXT_SEEDS, TEXT_CHUNKS))
    assert not failures, "\n".join(failures)


def test_crdt_opcounter_and_opset_seeds_pass() -> None:
    failures = _failures("crdt-opcounter", range(60)) + _failures("crdt-opset", range(60))
    assert not failures, "\n".join(failures)


def test_crdt_text_replays_byte_for_byte() -> None:
    spec = get_protocol("crdt-text")
    one = run_sim(spec, SimConfig(seed=5, faults=ALL, hash_trace=True))
    two = run_sim(spec, SimConfig(seed=5, faults=ALL, hash_trace=True))
    assert one.ok and one.trace_hash == two.trace_hash


# -- broken replicas ------------------------------------------------------------------------


class _RemoveAllTags(SetReplica):
    """Broken: a remove drops every tag present at the receiver, concurrent adds included."""

    def effect(self, op: Any, fresh: bool) -> None:
        op = self.check_op(op)
        if isinstance(op, RemoveOp):
            op = RemoveOp(op.element, tuple(sorted(self.crdt.tags(op.element))))
        self.crdt.effect(op)


class _IgnoreRemoves(SetReplica):
    """Broken: removes are never applied (converges, but is not an OR-Set)."""

    def effect(self, op: Any, fresh: bool) -> None:
        op = self.check_op(op)
        if not isinstance(op, RemoveOp):
            self.crdt.effect(op)


class _NoDecrements(CounterReplica):
    """Broken: negative amounts are dropped (converges, wrong value)."""

    def effect(self, op: Any, fresh: bool) -> None:
        op = self.check_op(op)
        if op.amount >= 0:
            self.crdt.effect(op)


class _PositionalText:
    """Broken text 'CRDT': ships (position, text) and applies it at that index."""

    kinds = frozenset({"insert", "delete"})

    def __init__(self, replica: str) -> None:
        self.text = ""

    def prepare(self, edit: CrdtEdit) -> Any:
        if edit.kind == "insert":
            return ["i", edit.where % (len(self.text) + 1), edit.text]
        if not self.text:
            return ["d", 0, 0]
        at = edit.where % len(self.text)
        return ["d", at, min(edit.count, len(self.text) - at)]

    def effect(self, op: Any, fresh: bool) -> None:
        kind, at, arg = op
        at = min(at, len(self.text))
        if kind == "i":
            self.text = self.text[:at] + arg + self.text[at:]
        else:
            self.text = self.text[:at] + self.text[at + arg :]

    def check_op(self, op: Any) -> Any:
        return op

    def value(self) -> str:
        return self.text


def _broken(base: str, replica: Any, monitor: type[Any]) -> ProtocolDef:
    """``base`` with nodes and the monitor's mirrors using the broken replica."""
    mirrored = type(f"Broken{monitor.__name__}", (monitor,), {"make_replica": replica})
    return replace(
        get_protocol(base),
        name=f"{base}-test-broken",
        make_node=partial(OpCrdtNode, make_replica=replica),
        make_monitor=mirrored,
        broken=True,
    )


def _first_violation(spec: ProtocolDef, seeds: range) -> str | None:
    for seed in seeds:
        result = run_sim(spec, SimConfig(seed=seed, faults=ALL))
        if result.violation is not None:
            return result.violation.prop
    return None


def test_remove_dropping_concurrent_adds_diverges_and_is_caught() -> None:
    spec = _broken("crdt-opset", _RemoveAllTags, SetMonitor)
    assert _first_violation(spec, range(30)) == "convergence"


def test_set_without_removes_is_caught_by_the_add_wins_intent() -> None:
    spec = _broken("crdt-opset", _IgnoreRemoves, SetMonitor)
    assert _first_violation(spec, range(10)) == "intent"


def test_counter_dropping_decrements_is_caught_by_the_sum_intent() -> None:
    spec = _broken("crdt-opcounter", _NoDecrements, CounterMonitor)
    assert _first_violation(spec, range(10)) == "intent"


def test_positional_text_diverges_and_is_caught() -> None:
    spec = _broken("crdt-text", _PositionalText, _PlainTextMonitor)
    assert _first_violation(spec, range(30)) == "convergence"


class _PlainTextMonitor(TextMonitor):
    """TextMonitor over a replica without Fugue: only convergence is meaningful."""


# -- the text monitor's intent checks on hand-made outcomes ----------------------------------


def _monitor(**past: frozenset[str]) -> TextMonitor:
    m = TextMonitor((1, 2))
    m.past.update(past)
    return m


def test_interleaving_of_a_concurrent_insert_inside_a_typing_run_is_reported() -> None:
    m = _monitor(k1=frozenset(), k2=frozenset({"k1"}), kx=frozenset())
    m.inserted_by.update(a="k1", b="k2", x="kx")
    m.runs.append((["k1", "k2"], ["a", "b"]))
    owed = {"k1", "k2", "kx"}
    v = m.intent(owed, "axb")
    assert v is not None and v.prop == "interleaving"
    assert m.intent(owed, "xab") is None and m.intent(owed, "abx") is None
    m.past["kx"] = frozenset({"k1"})  # x was typed after seeing a: may go between a and b
    assert m.intent(owed, "axb") is None


def test_lost_or_resurrected_characters_and_misplaced_inserts_are_reported() -> None:
    m = _monitor(k1=frozenset(), k2=frozenset({"k1"}), kd=frozenset({"k1"}))
    m.inserted_by.update(a="k1", b="k1", c="k2")
    m.deleted_by["kd"] = {"b"}
    m.chains += [("k1", ["a", "b"]), ("k2", ["a", "c"])]
    owed = {"k1", "k2", "kd"}
    assert m.intent(owed, "ac") is None
    for text in ("a", "abc", "acc"):  # lost c / deleted b back / duplicate
        v = m.intent(owed, text)
        assert v is not None and v.prop == "intent", text
    v = m.intent(owed, "ca")  # c was inserted after a
    assert v is not None and v.prop == "intent"

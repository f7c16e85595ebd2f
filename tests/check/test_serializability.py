"""Elle-style checker: each planted anomaly is found and named; clean runs report none."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pnyx.check import History, check_serializable, read_history
from pnyx.core.history import HistoryEvent
from tests.check.helpers import LOCAL_HISTORIES, expected


@pytest.mark.parametrize(("name", "kind", "verdict"), expected(LOCAL_HISTORIES))
def test_planted_anomalies_and_clean_runs(name: str, kind: Any, verdict: str) -> None:
    result = check_serializable(read_history(LOCAL_HISTORIES / name, "edn"), kind=kind)
    assert result.verdict == verdict, result.explain()
    assert result.ok == (verdict == "serializable")


def test_every_anomaly_class_is_planted() -> None:
    verdicts = {v for _, _, v in expected(LOCAL_HISTORIES)}
    assert {"G0", "G1a", "G1b", "G1c", "G-single", "G2-item", "serializable"} <= verdicts


def test_cycle_is_explained_edge_by_edge() -> None:
    result = check_serializable(read_history(LOCAL_HISTORIES / "la-gsingle.edn", "edn"))
    (anomaly,) = result.anomalies
    assert [e.kind for e in anomaly.cycle].count("rw") == 1
    assert anomaly.cycle[0].src == anomaly.cycle[-1].dst, "a cycle closes"
    assert "-rw->" in anomaly.explanation and "-wr->" in anomaly.explanation


def test_stale_read_needs_realtime_edges() -> None:
    history = read_history(LOCAL_HISTORIES / "la-stale.edn", "edn")
    assert check_serializable(history).verdict == "serializable"
    strict = check_serializable(history, realtime=True)
    assert strict.verdict == "G-single-realtime"
    assert any(e.kind == "realtime" for e in strict.anomalies[0].cycle)


def test_process_order_edges() -> None:
    history = read_history(LOCAL_HISTORIES / "la-stale.edn", "edn")
    same_process = History.from_events([HistoryEvent(0, e.type, e.f, e.value, e.key)
                                        for e in history.to_events()])
    assert check_serializable(same_process, process=True).verdict == "G-single-process"


def test_non_transaction_is_rejected_with_a_reason() -> None:
    h = History.from_events([HistoryEvent(0, "invoke", "read"), HistoryEvent(0, "ok", "read")])
    with pytest.raises(ValueError, match="only 'txn' operations"):
        check_serializable(h)
    h2 = History.from_events([HistoryEvent(0, "invoke", "txn", [["inc", "x", 1]])])
    with pytest.raises(ValueError, match="expected \\[f key value\\]"):
        check_serializable(h2)


def test_incompatible_orders_are_reported() -> None:
    events = []
    for proc, mops in enumerate([[["append", "x", 1]], [["append", "x", 2]],
                                 [["r", "x", [1, 2]]], [["r", "x", [2, 1]]]]):
        events += [HistoryEvent(proc, "invoke", "txn", mops), HistoryEvent(proc, "ok", "txn", mops)]
    result = check_serializable(History.from_events(events))
    assert "incompatible-order" in result.anomaly_names


@st.composite
def serial_list_append(draw: st.DrawFn) -> list[HistoryEvent]:
    """Transactions executed one at a time against a store (some crash: info)."""
    store: dict[str, list[int]] = {}
    events: list[HistoryEvent] = []
    counter = 0
    for t in range(draw(st.integers(1, 12))):
        proc = t % 3
        plan = draw(st.lists(st.tuples(st.sampled_from(["r", "append"]),
                                       st.sampled_from(["x", "y", "z"])), min_size=1,
                             max_size=4))
        done: list[list[Any]] = []
        invoked: list[list[Any]] = []
        for f, k in plan:
            if f == "append":
                counter += 1
                store.setdefault(k, []).append(counter)
                done.append(["append", k, counter])
                invoked.append(["append", k, counter])
            else:
                done.append(["r", k, list(store.get(k, []))])
                invoked.append(["r", k, None])
        outcome = draw(st.sampled_from(["ok", "ok", "ok", "info"]))
        events.append(HistoryEvent(proc + 10 * t, "invoke", "txn", invoked))
        events.append(HistoryEvent(proc + 10 * t, outcome, "txn",
                                   done if outcome == "ok" else None))
    return events


@settings(max_examples=150, deadline=None)
@given(serial_list_append())
def test_serial_executions_have_no_anomalies(events: list[HistoryEvent]) -> None:
    history = History.from_events(events)
    for flags in ({}, {"process": True}, {"realtime": True, "process": True}):
        result = check_serializable(history, **flags)
        assert result.ok, (flags, result.explain())


@settings(max_examples=100, deadline=None)
@given(serial_list_append(), st.data())
def test_a_dropped_element_in_a_read_is_caught(events: list[HistoryEvent],
                                               data: st.DataObject) -> None:
    reads = [(i, j) for i, e in enumerate(events) if e.type == "ok"
             for j, m in enumerate(e.value) if m[0] == "r" and len(m[2]) >= 2]
    if not reads:
        return
    i, j = data.draw(st.sampled_from(reads))
    mops = [list(m) for m in events[i].value]
    full = mops[j][2]
    mops[j][2] = full[:-2] + full[-1:]  # forget the next-to-last element
    events[i] = HistoryEvent(events[i].process, "ok", "txn", mops)
    witness = [["r", mops[j][1], full]]  # a later read that saw the true order
    events += [HistoryEvent(99, "invoke", "txn", witness), HistoryEvent(99, "ok", "txn", witness)]
    result = check_serializable(History.from_events(events), kind="list-append")
    assert "incompatible-order" in result.anomaly_names

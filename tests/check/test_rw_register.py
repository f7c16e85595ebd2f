"""rw-register histories and process order: hand-derived anomalies, clean look-alikes, properties.

Each failing case asserts the anomaly's name and the exact edges of its cycle; every
``T<n>`` below is the n-th transaction invoked. ``None`` is the initial state of a key.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pnyx.check import History, SerializabilityResult, check_serializable, read_history
from pnyx.core.history import HistoryEvent
from tests.check.helpers import LOCAL_HISTORIES

Txn = tuple[int, list[list[Any]], str]  # process, micro-ops (with read results), outcome


def invoked(mops: list[list[Any]]) -> list[list[Any]]:
    """The micro-ops as invoked: reads carry no value yet."""
    return [[f, k, None if f == "r" else v] for f, k, v in mops]


def serial(*txns: Txn) -> History:
    """Each transaction invoked and completed before the next one is invoked."""
    events: list[HistoryEvent] = []
    for proc, mops, outcome in txns:
        events.append(HistoryEvent(proc, "invoke", "txn", invoked(mops)))
        events.append(HistoryEvent(proc, outcome, "txn", mops if outcome == "ok"
                                   else invoked(mops)))
    return History.from_events(events)


def concurrent(*txns: Txn) -> History:
    """All transactions invoked, then all completed: no real-time order between them."""
    events = [HistoryEvent(p, "invoke", "txn", invoked(m)) for p, m, _ in txns]
    events += [HistoryEvent(p, o, "txn", m if o == "ok" else invoked(m)) for p, m, o in txns]
    return History.from_events(events)


def check(history: History, **flags: bool) -> SerializabilityResult:
    return check_serializable(history, kind="rw-register", **flags)


def cycle_of(result: SerializabilityResult) -> set[tuple[int, int, str]]:
    (anomaly,) = result.anomalies
    cycle = anomaly.cycle
    assert cycle and all(a.dst == b.src for a, b in zip(cycle, cycle[1:] + cycle[:1], strict=True))
    return {(e.src, e.dst, e.kind) for e in cycle}


# -- anomalies that must be found ---------------------------------------------------------


def test_g0_write_cycle() -> None:
    # T1 read x=1 then wrote x=2: 1 < 2.  T0 read y=2 then wrote y=1: 2 < 1.
    result = check(concurrent((0, [["r", "y", 2], ["w", "x", 1], ["w", "y", 1]], "ok"),
                              (1, [["r", "x", 1], ["w", "x", 2], ["w", "y", 2]], "ok")))
    assert result.verdict == "G0"
    assert cycle_of(result) == {(0, 1, "ww"), (1, 0, "ww")}


def test_g1a_aborted_read() -> None:
    result = check(serial((0, [["w", "x", 1]], "fail"), (1, [["r", "x", 1]], "ok")))
    assert result.verdict == "G1a"
    assert "T1 read key 'x' = 1, written by T0, which failed" in result.explain()


def test_g1b_intermediate_read() -> None:
    result = check(serial((0, [["w", "x", 1], ["w", "x", 2]], "ok"), (1, [["r", "x", 1]], "ok")))
    assert result.verdict == "G1b"
    assert "1 was not its final write" in result.explain()


def test_g1c_circular_information_flow() -> None:
    result = check(concurrent((0, [["w", "x", 1], ["r", "y", 1]], "ok"),
                              (1, [["w", "y", 1], ["r", "x", 1]], "ok")))
    assert result.verdict == "G1c"
    assert cycle_of(result) == {(0, 1, "wr"), (1, 0, "wr")}


def test_g_single_read_skew_through_the_initial_state() -> None:
    # T1 saw y=1 from T0 but x still nil: every write (T0's x=1) follows the initial state.
    result = check(serial((0, [["w", "x", 1], ["w", "y", 1]], "ok"),
                          (1, [["r", "x", None], ["r", "y", 1]], "ok")))
    assert result.verdict == "G-single"
    assert cycle_of(result) == {(1, 0, "rw"), (0, 1, "wr")}
    assert "initial state" in result.explain()


def test_g_single_through_a_read_then_write_version_order() -> None:
    result = check(serial((0, [["w", "x", 1]], "ok"),
                          (1, [["r", "x", 1], ["w", "x", 2], ["w", "y", 2]], "ok"),
                          (2, [["r", "x", 1], ["r", "y", 2]], "ok")))
    assert result.verdict == "G-single"
    assert cycle_of(result) == {(2, 1, "rw"), (1, 2, "wr")}


def test_g2_item_write_skew() -> None:
    result = check(concurrent((0, [["r", "x", None], ["w", "y", 1]], "ok"),
                              (1, [["r", "y", None], ["w", "x", 1]], "ok")))
    assert result.verdict == "G2-item"
    assert cycle_of(result) == {(0, 1, "rw"), (1, 0, "rw")}


@pytest.mark.parametrize("mops", [
    [["w", "x", 1], ["r", "x", 2]],     # its own write, then something else
    [["r", "x", 2], ["r", "x", None]],  # a repeated read that changed
    [["r", "x", 3], ["w", "x", 3]],     # read its own write before making it
])
def test_internal_inconsistency(mops: list[list[Any]]) -> None:
    result = check(serial((1, [["w", "x", 2]], "ok"), (0, mops, "ok")))
    assert result.anomaly_names == ["internal"]
    assert all(not a.cycle for a in result.anomalies)


def test_garbage_read() -> None:
    result = check(serial((0, [["w", "x", 1]], "ok"), (1, [["r", "x", 99]], "ok")))
    assert result.verdict == "garbage-read"
    assert "read 99 from key 'x', which no transaction wrote" in result.explain()


def test_duplicate_writes_break_the_workload_contract() -> None:
    result = check(serial((0, [["w", "x", 1]], "ok"), (1, [["w", "x", 1]], "ok")))
    assert result.verdict == "duplicate-writes"


# -- clean histories, including ones an unsound inference would flag ----------------------


@pytest.mark.parametrize("history", [
    # Blind writes seen "in different orders": serial order T1 T3 T0 T2 T4 explains it.
    serial((0, [["w", "x", 1]], "ok"), (1, [["w", "x", 2]], "ok"), (2, [["r", "x", 1]], "ok"),
           (3, [["r", "x", 2]], "ok"), (4, [["r", "x", 1]], "ok")),
    # A stale read is serializable (T1 first); only real time forbids it.
    serial((0, [["w", "x", 1]], "ok"), (1, [["r", "x", None]], "ok")),
    # The final of two writes is visible.
    serial((0, [["w", "x", 1], ["w", "x", 2]], "ok"), (1, [["r", "x", 2]], "ok")),
    # A crashed (info) transaction may or may not have committed: both readers are fine.
    serial((0, [["w", "x", 1], ["w", "y", 1]], "info"), (1, [["r", "x", None]], "ok"),
           (2, [["r", "y", 1]], "ok")),
    # A failed write read by nobody; a read-then-write chain; a stale read of nil after it.
    serial((0, [["w", "x", 1]], "fail"), (1, [["r", "x", None], ["w", "x", 2]], "ok"),
           (2, [["r", "x", 2], ["w", "x", 3]], "ok"), (3, [["r", "x", 3]], "ok"),
           (4, [["r", "x", None], ["r", "y", None]], "ok")),
    # Reading one's own writes.
    serial((0, [["w", "x", 1], ["r", "x", 1], ["r", "x", 1]], "ok")),
])
def test_clean_histories_pass(history: History) -> None:
    result = check(history)
    assert result.ok, result.explain()
    assert result.verdict == "serializable"


def test_concurrent_writes_may_land_in_either_order_even_strictly() -> None:
    writes = concurrent((0, [["w", "x", 1]], "ok"), (1, [["w", "x", 2]], "ok"))
    later = [*writes.to_events(), HistoryEvent(2, "invoke", "txn", [["r", "x", None]]),
             HistoryEvent(2, "ok", "txn", [["r", "x", 1]])]
    assert check(History.from_events(later), realtime=True, process=True).ok


def test_ordered_writes_make_a_stale_read_a_realtime_anomaly() -> None:
    history = serial((0, [["w", "x", 1]], "ok"), (1, [["w", "x", 2]], "ok"),
                     (2, [["r", "x", 1]], "ok"))
    assert check(history).ok
    strict = check(history, realtime=True)
    assert strict.verdict == "G-single-realtime"
    assert cycle_of(strict) == {(2, 1, "rw+realtime"), (1, 2, "realtime")}
    assert "rw+process/rw+realtime edges order versions" in strict.explain()


def test_stale_initial_read_is_a_realtime_anomaly() -> None:
    strict = check(serial((0, [["w", "x", 1]], "ok"), (1, [["r", "x", None]], "ok")),
                   realtime=True)
    assert strict.verdict == "G-single-realtime"
    assert cycle_of(strict) == {(1, 0, "rw"), (0, 1, "realtime")}


# -- process order: strong session serializability ----------------------------------------


def test_a_process_going_back_in_time_is_serializable_but_not_strong_session() -> None:
    # p0 reads x=2 (T2), then x=1 (T3); 1 < 2 because T1 read 1 and then wrote 2.
    history = serial((2, [["w", "x", 1]], "ok"), (3, [["r", "x", 1], ["w", "x", 2]], "ok"),
                     (0, [["r", "x", 2]], "ok"), (0, [["r", "x", 1]], "ok"))
    assert check(history).verdict == "serializable"
    session = check(history, process=True)
    assert session.verdict == "G-single-process"
    assert cycle_of(session) == {(2, 3, "process"), (3, 1, "rw"), (1, 2, "wr")}
    assert "T2 (p0) -process-> T3 (p0): T2 then T3 on process 0" in session.explain()


def test_process_order_also_orders_versions() -> None:
    # p2 wrote x=1 then x=2 (with y=5); T2 saw y=5 yet the older x=1.
    history = serial((2, [["w", "x", 1]], "ok"), (2, [["w", "x", 2], ["w", "y", 5]], "ok"),
                     (3, [["r", "x", 1], ["r", "y", 5]], "ok"))
    assert check(history).ok
    session = check(history, process=True)
    assert session.verdict == "G-single-process"
    assert cycle_of(session) == {(2, 1, "rw+process"), (1, 2, "wr")}
    assert "T0 saw 1 and ran before it on process 2; T1 then saw 2" in session.explain()


@pytest.mark.parametrize("between", ["fail", "info"])
def test_process_order_skips_failed_and_crashed_transactions(between: str) -> None:
    history = serial((0, [["w", "x", 1]], "ok"), (0, [["w", "z", 1]], between),
                     (0, [["r", "x", None]], "ok"))
    assert check(history).ok
    session = check(history, process=True)
    assert session.verdict == "G-single-process"
    assert cycle_of(session) == {(0, 2, "process"), (2, 0, "rw")}


def test_serializable_anomalies_keep_their_plain_name_with_the_flag() -> None:
    history = concurrent((0, [["r", "x", None], ["w", "y", 1]], "ok"),
                         (1, [["r", "y", None], ["w", "x", 1]], "ok"))
    assert check(history, process=True, realtime=True).verdict == "G2-item"


# -- properties ---------------------------------------------------------------------------


def _plan(kind: str) -> st.SearchStrategy[list[tuple[str, str]]]:
    write = "w" if kind == "rw-register" else "append"
    return st.lists(st.tuples(st.sampled_from(["r", write]), st.sampled_from(["x", "y", "z"])),
                    min_size=1, max_size=4)


class _Store:
    """Executes transactions atomically against a dict (registers or lists)."""

    def __init__(self, kind: str) -> None:
        self.kind, self.data, self.values = kind, dict[str, Any](), itertools.count(1)

    def plan(self, steps: list[tuple[str, str]]) -> list[list[Any]]:
        """The micro-ops as invoked: fresh unique values for writes."""
        return [[f, k, None if f == "r" else next(self.values)] for f, k in steps]

    def apply(self, mops: list[list[Any]]) -> list[list[Any]]:
        """Run the transaction now; returns its micro-ops with read results."""
        done = []
        for f, k, v in mops:
            if f == "r":
                current = self.data.get(k)
                v = list(current or []) if self.kind == "list-append" else current
            elif f == "w":
                self.data[k] = v
            else:
                self.data.setdefault(k, []).append(v)
            done.append([f, k, v])
        return done


@st.composite
def executions(draw: st.DrawFn, kind: str, procs: int) -> list[HistoryEvent]:
    """Processes invoke, take effect (atomically, once) and complete in any interleaving.

    Each transaction takes effect between its invocation and completion, so the history is
    strictly serializable and respects process order. With one slot per step it is serial.
    """
    store, events = _Store(kind), list[HistoryEvent]()
    pending: dict[int, tuple[list[list[Any]], list[list[Any]] | None]] = {}
    for _ in range(draw(st.integers(1, 14 * procs))):
        proc = draw(st.integers(0, procs - 1))
        if proc not in pending:
            mops = store.plan(draw(_plan(kind)))
            events.append(HistoryEvent(proc, "invoke", "txn", mops))
            pending[proc] = (mops, None)
            continue
        mops, done = pending[proc]
        if done is None and draw(st.booleans()):
            pending[proc] = (mops, store.apply(mops))
            continue
        del pending[proc]
        outcome = draw(st.sampled_from(["ok", "ok", "info"] if done else ["fail", "info"]))
        events.append(HistoryEvent(proc, outcome, "txn", done if outcome == "ok" else mops))
    return events


@st.composite
def serial_executions(draw: st.DrawFn, kind: str) -> list[HistoryEvent]:
    """Transactions run one at a time on 3 processes (some fail, some crash after effect)."""
    store, events = _Store(kind), list[HistoryEvent]()
    for t in range(draw(st.integers(1, 14))):
        proc, mops = t % 3, store.plan(draw(_plan(kind)))
        outcome = draw(st.sampled_from(["ok", "ok", "ok", "info", "fail"]))
        done = store.apply(mops) if outcome == "ok" or (outcome == "info"
                                                         and draw(st.booleans())) else mops
        events += [HistoryEvent(proc, "invoke", "txn", mops),
                   HistoryEvent(proc, outcome, "txn", done if outcome == "ok" else mops)]
    return events


KINDS = ["rw-register", "list-append"]


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=120, deadline=None)
@given(data=st.data())
def test_serial_executions_are_clean_with_and_without_process_order(
        kind: Any, data: st.DataObject) -> None:
    history = History.from_events(data.draw(serial_executions(kind)))
    for process in (False, True):
        result = check_serializable(history, kind=kind, process=process)
        assert result.ok, result.explain()


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=120, deadline=None)
@given(data=st.data())
def test_interleavings_respecting_process_order_are_clean_with_it(
        kind: Any, data: st.DataObject) -> None:
    history = History.from_events(data.draw(executions(kind, data.draw(st.integers(1, 4)))))
    for flags in ({}, {"process": True}, {"process": True, "realtime": True}):
        result = check_serializable(history, kind=kind, **flags)
        assert result.ok, (flags, result.explain())


# -- fixtures -----------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "plain", "session"), [
    ("rw-gsingle.edn", "G-single", "G-single"),
    ("rw-internal.edn", "internal", "internal"),
    ("rw-garbage.edn", "garbage-read", "garbage-read"),
    ("rw-session.edn", "serializable", "G-single-process"),
    ("rw-clean.edn", "serializable", "serializable"),
])
def test_fixtures(name: str, plain: str, session: str) -> None:
    history = read_history(LOCAL_HISTORIES / name, "edn")
    assert check(history).verdict == plain
    assert check(history, process=True).verdict == session

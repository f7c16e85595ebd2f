"""The Wing-Gong/Lowe search: hand-written cases, every model, budgets, and a brute-force oracle."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pnyx.check import (
    CASRegisterModel,
    CounterModel,
    History,
    KVModel,
    Model,
    Operation,
    QueueModel,
    RegisterModel,
    SetModel,
    check_linearizable,
    get_model,
    read_history,
)
from pnyx.check.search import Search
from pnyx.core.history import HistoryEvent
from tests.check.helpers import SHARED_HISTORIES, hist


def verdict(history: History, model: Model[Any], **kw: Any) -> str:
    return check_linearizable(history, model, **kw).verdict


def test_sequential_register() -> None:
    h = hist((0, "invoke", "write", 1), (0, "ok", "write", 1),
             (1, "invoke", "read", None), (1, "ok", "read", 1))
    assert verdict(h, RegisterModel()) == "linearizable"


def test_stale_read_is_not_linearizable() -> None:
    h = hist((0, "invoke", "write", 1), (0, "ok", "write", 1),
             (0, "invoke", "write", 2), (0, "ok", "write", 2),
             (1, "invoke", "read", None), (1, "ok", "read", 1))
    result = check_linearizable(h, RegisterModel())
    assert result.verdict == "not-linearizable"
    (part,) = result.failures
    assert [op.f for op in part.prefix] == ["write", "write"]
    assert [op.output for op in part.unplaced] == [1]
    assert part.final_state == "2"
    assert "could" not in result.explain() or "none of these can take effect" in result.explain()


def test_concurrent_write_may_be_read_either_way() -> None:
    h = hist((0, "invoke", "write", 1), (1, "invoke", "read", None), (1, "ok", "read", 1),
             (2, "invoke", "read", None), (2, "ok", "read", None), (0, "ok", "write", 1))
    assert verdict(h, RegisterModel()) == "not-linearizable", "read 1 then nil is impossible"
    h2 = hist((0, "invoke", "write", 1), (2, "invoke", "read", None), (2, "ok", "read", None),
              (1, "invoke", "read", None), (1, "ok", "read", 1), (0, "ok", "write", 1))
    assert verdict(h2, RegisterModel()) == "linearizable"


def test_info_write_may_take_effect_much_later() -> None:
    h = hist((0, "invoke", "write", 1), (0, "info", "write", None),
             (1, "invoke", "read", None), (1, "ok", "read", None),
             (1, "invoke", "read", None), (1, "ok", "read", 1))
    assert verdict(h, RegisterModel()) == "linearizable"


def test_info_write_may_never_take_effect() -> None:
    h = hist((0, "invoke", "write", 1), (1, "invoke", "read", None), (1, "ok", "read", None))
    assert verdict(h, RegisterModel()) == "linearizable"


def test_info_write_cannot_take_effect_before_its_invocation() -> None:
    h = hist((1, "invoke", "read", None), (1, "ok", "read", 1), (0, "invoke", "write", 1))
    assert verdict(h, RegisterModel()) == "not-linearizable"


def test_info_write_takes_effect_at_most_once() -> None:
    h = hist((0, "invoke", "write", 1), (0, "info", "write", None),
             (1, "invoke", "write", 2), (1, "ok", "write", 2),
             (1, "invoke", "read", None), (1, "ok", "read", 1),
             (1, "invoke", "write", 3), (1, "ok", "write", 3),
             (1, "invoke", "read", None), (1, "ok", "read", 1))
    assert verdict(h, RegisterModel()) == "not-linearizable"


def test_failed_cas_did_not_happen() -> None:
    h = hist((0, "invoke", "cas", [None, 5]), (0, "fail", "cas", [None, 5]),
             (1, "invoke", "read", None), (1, "ok", "read", None))
    assert verdict(h, CASRegisterModel()) == "linearizable"
    h2 = hist((0, "invoke", "cas", [None, 5]), (0, "ok", "cas", [None, 5]),
              (1, "invoke", "read", None), (1, "ok", "read", None))
    assert verdict(h2, CASRegisterModel()) == "not-linearizable"


def test_cas_acknowledged_false_means_compare_did_not_match() -> None:
    h = hist((0, "invoke", "cas", [None, 5]), (0, "ok", "cas", False))
    assert verdict(h, CASRegisterModel()) == "not-linearizable", "nil == nil must swap"
    h2 = hist((0, "invoke", "cas", [3, 5]), (0, "ok", "cas", False),
              (1, "invoke", "read", None), (1, "ok", "read", None))
    assert verdict(h2, CASRegisterModel()) == "linearizable"


def _kv(*events: tuple[int, str, str, Any, Any]) -> History:
    return History.from_events([HistoryEvent(p, t, f, v, k) for p, t, f, v, k in events])


def test_kv_model_for_the_simulator() -> None:
    model = KVModel(initial=None)
    ok = _kv((0, "invoke", "get", None, "x"), (0, "ok", "get", None, "x"),
             (0, "invoke", "put", "a", "x"), (0, "ok", "put", None, "x"),
             (0, "invoke", "append", "b", "x"), (0, "ok", "append", None, "x"),
             (0, "invoke", "cas", ["ab", "c"], "x"), (0, "ok", "cas", True, "x"),
             (1, "invoke", "get", None, "y"), (1, "ok", "get", None, "y"),
             (0, "invoke", "get", None, "x"), (0, "ok", "get", "c", "x"),
             (0, "invoke", "delete", None, "x"), (0, "ok", "delete", None, "x"),
             (0, "invoke", "get", None, "x"), (0, "ok", "get", None, "x"))
    assert verdict(ok, model) == "linearizable"
    assert verdict(ok, model, partition=False) == "linearizable"
    bad = _kv((0, "invoke", "put", "a", "x"), (0, "ok", "put", None, "x"),
              (0, "invoke", "delete", None, "x"), (0, "ok", "delete", None, "x"),
              (0, "invoke", "get", None, "x"), (0, "ok", "get", "a", "x"))
    result = check_linearizable(bad, model)
    assert result.verdict == "not-linearizable" and result.failures[0].key == "x"


@pytest.mark.parametrize(("model", "good", "bad"), [
    (SetModel(), [("add", 1, None), ("add", 2, None), ("read", None, [2, 1])],
     [("add", 1, None), ("read", None, [])]),
    (CounterModel(), [("incr", None, None), ("add", 5, None), ("read", None, 6)],
     [("add", 2, None), ("read", None, 3)]),
    (QueueModel(), [("enqueue", 1, None), ("enqueue", 2, None), ("dequeue", None, 1),
                    ("dequeue", None, 2), ("dequeue", None, None)],
     [("enqueue", 1, None), ("enqueue", 2, None), ("dequeue", None, 2)]),
    (CASRegisterModel(), [("write", 1, None), ("cas", [1, 2], None), ("read", None, 2)],
     [("write", 1, None), ("cas", [2, 3], None)]),
])
def test_each_model_accepts_and_rejects(model: Model[Any], good: list[Any],
                                        bad: list[Any]) -> None:
    def sequential(ops: list[Any]) -> History:
        events = []
        for f, arg, out in ops:
            events += [(0, "invoke", f, arg), (0, "ok", f, out if out is not None else arg)]
        return hist(*events)

    assert verdict(sequential(good), model) == "linearizable"
    assert verdict(sequential(bad), model) == "not-linearizable"


def test_unsupported_operation_names_the_choices() -> None:
    with pytest.raises(ValueError, match="use one of read, write"):
        check_linearizable(hist((0, "invoke", "cas", [1, 2]), (0, "ok", "cas", [1, 2])),
                           RegisterModel())
    with pytest.raises(KeyError, match="choose one of"):
        get_model("btree")


class Mutex(Model[int | None]):
    """A user-defined model: acquire/release by the owning process."""

    name = "mutex"

    def init(self) -> int | None:
        return None

    def step(self, state: int | None, op: Operation) -> tuple[bool, int | None]:
        if op.f == "acquire":
            return state is None, op.process
        return state == op.process, None


def test_user_defined_model() -> None:
    good = hist((0, "invoke", "acquire"), (1, "invoke", "acquire"), (0, "ok", "acquire"),
                (0, "invoke", "release"), (0, "ok", "release"), (1, "ok", "acquire"))
    bad = hist((0, "invoke", "acquire"), (0, "ok", "acquire"),
               (1, "invoke", "acquire"), (1, "ok", "acquire"))
    assert verdict(good, Mutex()) == "linearizable"
    assert verdict(bad, Mutex()) == "not-linearizable"


class ListLog(Model[list[Any]]):
    """A model with unhashable (list) states: ``equal`` is used instead of hashing."""

    name = "log"

    def init(self) -> list[Any]:
        return []

    def step(self, state: list[Any], op: Operation) -> tuple[bool, list[Any]]:
        if op.f == "append":
            return True, [*state, op.value]
        return list(op.output) == state, state

    def equal(self, a: list[Any], b: list[Any]) -> bool:
        return a == b


def test_custom_equal_allows_unhashable_states() -> None:
    good = hist((0, "invoke", "append", 1), (1, "invoke", "append", 2), (0, "ok", "append", 1),
                (1, "ok", "append", 2), (0, "invoke", "read", None), (0, "ok", "read", [2, 1]))
    bad = hist((0, "invoke", "append", 1), (0, "ok", "append", 1), (1, "invoke", "append", 2),
               (1, "ok", "append", 2), (0, "invoke", "read", None), (0, "ok", "read", [2, 1]))
    assert verdict(good, ListLog()) == "linearizable"
    assert verdict(bad, ListLog()) == "not-linearizable"


def test_budget_gives_unknown_never_a_wrong_answer() -> None:
    history = read_history(SHARED_HISTORIES / "kv" / "c10-bad.txt", "edn")
    result = check_linearizable(history, get_model("kv"), partition=False, max_steps=5000)
    assert result.verdict == "unknown"
    assert "step bound 5,000 reached" in result.explain()
    assert "time-out" in check_linearizable(history, get_model("kv"), partition=False,
                                            timeout_s=0.0).explain()
    timed = check_linearizable(history, get_model("kv"), partition=False, timeout_s=0.0)
    assert timed.verdict == "unknown"


def test_parallel_partitions_agree_with_sequential() -> None:
    history = read_history(SHARED_HISTORIES / "kv" / "c10-bad.txt", "edn")
    model = get_model("kv")
    one = check_linearizable(history, model, stop_at_first=False)
    import pnyx.check.linearizability as lin

    old = lin._SOLO_S
    lin._SOLO_S = -1.0  # hand every partition to the workers at once
    try:
        two = check_linearizable(history, model, workers=2, stop_at_first=False)
        first = check_linearizable(history, model, workers=2)
    finally:
        lin._SOLO_S = old
    assert two.verdict == one.verdict == first.verdict == "not-linearizable"
    assert [p.key for p in two.failures] == [p.key for p in one.failures]
    assert len(one.failures) > 1, "the comparison needs several failing keys"
    assert {p.key for p in first.failures} <= {p.key for p in one.failures}


# -- a brute-force oracle on small random histories ------------------------------------

def brute_force(ops: Sequence[Operation], model: Model[Any]) -> bool:
    """Try every order: ok ops between call and return, info ops after call or never."""
    live = [op for op in ops if op.outcome != "fail"]

    def search(state: Any, done: frozenset[int]) -> bool:
        todo = [op for op in live if op.outcome == "ok" and op.index not in done]
        if not todo:
            return True
        bound = min(op.ret for op in todo if op.ret is not None)
        for op in live:
            if op.index not in done and op.call < bound:
                allowed, new = model.step(state, op)
                if allowed and search(new, done | {op.index}):
                    return True
        return False

    return search(model.init(), frozenset())


@st.composite
def small_histories(draw: st.DrawFn) -> History:
    events: list[HistoryEvent] = []
    open_procs: set[int] = set()
    next_proc = 3
    procs = [0, 1, 2]
    for _ in range(draw(st.integers(1, 14))):
        proc = draw(st.sampled_from(procs))
        if proc not in open_procs:
            f = draw(st.sampled_from(["read", "write", "cas"]))
            arg = {"read": None, "write": draw(st.integers(0, 2)),
                   "cas": [draw(st.sampled_from([None, 0, 1])), draw(st.integers(0, 2))]}[f]
            events.append(HistoryEvent(proc, "invoke", f, arg))
            open_procs.add(proc)
            continue
        inv = next(e for e in reversed(events) if e.process == proc and e.type == "invoke")
        kind = draw(st.sampled_from(["ok", "ok", "ok", "fail", "info"]))
        value = draw(st.sampled_from([None, 0, 1, 2])) if inv.f == "read" else inv.value
        events.append(HistoryEvent(proc, kind, inv.f, value))
        open_procs.discard(proc)
        if kind == "info":
            procs[procs.index(proc)] = next_proc
            next_proc += 1
    return History.from_events(events)


@settings(max_examples=400, deadline=None)
@given(small_histories())
def test_agrees_with_brute_force(history: History) -> None:
    model = CASRegisterModel()
    expected = "linearizable" if brute_force(history.operations, model) else "not-linearizable"
    assert verdict(history, model) == expected


def test_counterexample_path_is_the_one_furthest_in_ok_operations() -> None:
    """Found by hypothesis: two search paths of equal length, one with more ``info``
    operations stuck at an earlier read; the explanation must show the path that reached
    the impossible read (``corrupt``), not the one stuck earlier."""
    h = hist((0, "invoke", "get", None, "a"), (3, "invoke", "cas", ["", "v1"], "a"),
             (1, "invoke", "get", None, "a"), (0, "ok", "get", "", "a"),
             (0, "invoke", "get", None, "a"), (3, "info", "cas", ["", "v1"], "a"),
             (2, "invoke", "append", "+7", "a"), (0, "info", "get", None, "a"),
             (101, "invoke", "get", None, "a"), (100, "invoke", "get", None, "a"),
             (101, "ok", "get", "", "a"), (1, "info", "get", None, "a"),
             (2, "info", "append", "+7", "a"), (100, "ok", "get", "+7", "a"),
             (999, "invoke", "get", None, "a"), (999, "ok", "get", "corrupt", "a"))
    result = check_linearizable(h, KVModel())
    (part,) = result.failures
    assert [op.output for op in part.unplaced] == ["corrupt"]
    assert [(op.f, op.outcome) for op in part.prefix if op.outcome == "ok"] == [
        ("get", "ok"), ("get", "ok"), ("get", "ok")]
    assert part.final_state == "'+7'"


def test_workers_stop_each_other_at_the_first_violation() -> None:
    """A hard partition and an illegal one, each in its own worker: the illegal one is
    found there and stops the hard one's worker."""
    import pnyx.check.linearizability as lin
    from tests.check.test_bounds import hard_kv_events, sequential_kv_events

    events = hard_kv_events(1, 110) + sequential_kv_events(4000, "bad", 999, bad_last=True)
    old = lin._SOLO_S
    lin._SOLO_S = -1.0
    try:
        result = check_linearizable(History.from_events(events), get_model("kv"), workers=2,
                                    timeout_s=120)
    finally:
        lin._SOLO_S = old
    assert result.verdict == "not-linearizable"
    assert [p.key for p in result.failures] == ["bad"]
    (hard,) = result.undecided
    assert hard.reason.startswith("not searched: another worker found a violation")


def test_a_paused_scheduler_hands_back_only_undecided_partitions() -> None:
    import time

    from pnyx.check.linearizability import Limits, _Scheduler
    from tests.check.test_bounds import hard_kv_events, sequential_kv_events

    events = hard_kv_events(1, 110) + sequential_kv_events(40, "easy", 999, bad_last=False)
    parts = get_model("kv").partition(History.from_events(events).operations)
    scheduler = _Scheduler(parts, get_model("kv"), Limits(), None)
    left = scheduler.run(pause_at=time.monotonic())  # one round, then pause
    assert [t.key for t in left] == ["hard"]
    assert [r.verdict for r in scheduler.done.values()] == ["linearizable"]
    assert left[0].steps > 0 and left[0].pruned, "the paused search is resumable"
    steps = left[0].steps
    assert scheduler.run(pause_at=time.monotonic()) == left and left[0].steps > steps


# -- reads first, and dead ends a model can see (search.py module doc) ---------------------

def _appends_then_reads(writers: int, bad: bool) -> History:
    """``writers`` appends all overlapping, each read back by a get that pins the order of
    every append before it; with ``bad`` the last get misses one append."""
    events: list[tuple[Any, ...]] = [(p, "invoke", "append", f"{p} ", "k")
                                     for p in range(writers)]
    value = ""
    for p in range(writers):
        value += f"{p} "
        events.append((p, "ok", "append", f"{p} ", "k"))
        seen = value.replace("0 ", "", 1) if bad and p == writers - 1 else value
        events += [(100 + p, "invoke", "get", None, "k"), (100 + p, "ok", "get", seen, "k")]
    return hist(*events)


def test_reads_pin_the_order_of_many_concurrent_appends() -> None:
    """40 concurrent appends: 40! orders, but each get fixes a prefix, so the search is
    linear (forced reads, and the append-only dead-end test of the KV model)."""
    good = check_linearizable(_appends_then_reads(40, bad=False), KVModel(), max_steps=50_000)
    assert good.verdict == "linearizable" and good.steps < 5_000
    bad = check_linearizable(_appends_then_reads(40, bad=True), KVModel(), max_steps=50_000)
    assert bad.verdict == "not-linearizable" and bad.steps < 5_000
    assert bad.failures[0].unplaced[0].output.startswith("1 2 ")


def test_a_pending_put_keeps_a_read_reachable() -> None:
    """From state 'a', a read of 'bc' is reachable while the put of 'b' is pending (put,
    then append 'c'); once the put is linearized it is hopeless."""
    history = hist((0, "invoke", "append", "a", "k"), (0, "ok", "append", "a", "k"),
                   (1, "invoke", "put", "b", "k"), (1, "ok", "put", "b", "k"),
                   (0, "invoke", "append", "c", "k"), (0, "ok", "append", "c", "k"),
                   (2, "invoke", "get", None, "k"), (2, "ok", "get", "bc", "k"))
    ops = history.operations
    hopeless = KVModel().pruner(ops)
    assert hopeless is not None
    put, read = ops[1], ops[3]
    assert not hopeless("a", read, lambda op: op is put)
    assert hopeless("a", read, lambda op: False)
    assert not hopeless("b", read, lambda op: False)
    assert verdict(history, KVModel()) == "linearizable"
    assert KVModel().pruner([*ops, ops[0].__class__(**{**_fields(ops[0]), "value": 3})]) is None


def _fields(op: Operation) -> dict[str, Any]:
    return {f: getattr(op, f) for f in op.__struct_fields__}


@st.composite
def grow_only_histories(draw: st.DrawFn, kind: str) -> History:
    """Small concurrent histories of a grow-only object with random (often wrong) reads."""
    events: list[HistoryEvent] = []
    pending: dict[int, str] = {}
    next_proc, procs = 4, [0, 1, 2, 3]
    for _ in range(draw(st.integers(1, 16))):
        proc = draw(st.sampled_from(procs))
        if proc not in pending:
            f = draw(st.sampled_from(["read", "write", "write", "put"] if kind == "kv"
                                     else ["read", "write"]))
            pending[proc] = f
            arg = None if f == "read" else draw(st.sampled_from(["a", "b", "c", "ab"]))
            name = {"kv": {"read": "get", "write": "append", "put": "put"},
                    "set": {"read": "read", "write": "add"},
                    "counter": {"read": "read", "write": "add"}}[kind][f]
            value = draw(st.integers(0, 2)) if kind == "counter" and f == "write" else arg
            events.append(HistoryEvent(proc, "invoke", name, value, "k"))
            continue
        inv = next(e for e in reversed(events) if e.process == proc and e.type == "invoke")
        outcome = draw(st.sampled_from(["ok", "ok", "ok", "info"]))
        output = inv.value
        if pending.pop(proc) == "read":
            output = draw({"kv": st.sampled_from(["", "a", "ab", "ba", "abc", "b", "ca"]),
                           "set": st.lists(st.sampled_from("abc"), max_size=3),
                           "counter": st.integers(0, 5)}[kind])
        events.append(HistoryEvent(proc, outcome, inv.f, output, "k"))
        if outcome == "info":
            procs[procs.index(proc)] = next_proc
            next_proc += 1
    return History.from_events(events)


def pruned_verdict(history: History, model: Model[Any]) -> str:
    """The pruned search alone (check_linearizable runs the plain one first and switches
    only after 2,048 steps, which small histories never reach)."""
    return Search([op for op in history if op.outcome != "fail"], model, prune=True).run()


@pytest.mark.parametrize("kind", ["kv", "set", "counter"])
@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_forced_reads_and_pruning_agree_with_brute_force(kind: str,
                                                         data: st.DataObject) -> None:
    history = data.draw(grow_only_histories(kind))
    model = get_model(kind)
    assert model.pruner(history.operations) is not None
    expected = "linearizable" if brute_force(history.operations, model) else "not-linearizable"
    assert pruned_verdict(history, model) == expected
    assert verdict(history, model) == expected


@settings(max_examples=400, deadline=None)
@given(small_histories())
def test_pruned_register_search_agrees_with_brute_force(history: History) -> None:
    model = CASRegisterModel()
    assert model.pruner(history.operations) is not None
    expected = "linearizable" if brute_force(history.operations, model) else "not-linearizable"
    assert pruned_verdict(history, model) == expected


def test_register_dead_end_needs_a_pending_writer_of_the_value() -> None:
    h = hist((0, "invoke", "write", 1), (0, "ok", "write", 1),
             (1, "invoke", "write", 2), (1, "ok", "write", 2),
             (2, "invoke", "read", None), (2, "ok", "read", 1))
    write1, _, read = h.operations
    hopeless = CASRegisterModel().pruner(h.operations)
    assert hopeless is not None
    assert not hopeless(2, read, lambda op: op is write1), "write 1 may still come"
    assert hopeless(2, read, lambda op: False)
    assert not hopeless(1, read, lambda op: False), "valid now"
    assert RegisterModel().pruner([*h.operations, Operation(9, 3, "cas", (1, 2), None,
                                                             "info", 7, None)]) is None


def test_the_plain_search_decides_easy_partitions_and_hands_over_hard_ones() -> None:
    """Easy partitions end in the first slice of the plain search (no cost for the
    reductions); a partition still open after it starts over pruned, and its step count
    includes the plain search's."""
    from pnyx.check.linearizability import _Task
    from pnyx.check.search import STEPS_PER_YIELD

    easy = _Task(0, list(_appends_then_reads(5, bad=False).operations), KVModel())
    assert easy.advance() == "linearizable" and not easy.pruned
    hard = _Task(1, list(_appends_then_reads(40, bad=True).operations), KVModel())
    assert hard.advance() is None, "40 concurrent appends: the plain search needs longer"
    assert hard.pruned and hard.abandoned_steps >= STEPS_PER_YIELD
    verdict_now = None
    for _ in range(100):
        verdict_now = hard.advance()
        if verdict_now is not None:
            break
    assert verdict_now == "not-linearizable"
    result = hard.result(verdict_now)
    assert result.steps == hard.abandoned_steps + hard.search.steps

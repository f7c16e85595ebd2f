"""Property tests: executions of the model are linearizable; a corrupted read is caught."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pnyx.check import History, KVModel, check_linearizable
from pnyx.core.history import HistoryEvent
from tests.check.helpers import Recorder

KEYS = ["a", "b", "c"]
SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def _random_op(data: st.DataObject, token: int) -> tuple[str, Any, Any]:
    f = data.draw(st.sampled_from(["get", "put", "append", "cas"]))
    key = data.draw(st.sampled_from(KEYS))
    if f == "put":
        return f, key, f"v{token}"
    if f == "append":
        return f, key, f"+{token}"
    if f == "cas":
        expected = data.draw(st.sampled_from(["", f"v{token - 1}", f"v{token - 2}"]))
        return f, key, (expected, f"v{token}")
    return f, key, None


def run_concurrently(data: st.DataObject, rec: Recorder, steps: int, crashes: bool,
                     first_proc: int = 0) -> int:
    """Interleave invocations, effects, completions (and crashes) of up to 4 processes."""
    procs = list(range(first_proc, first_proc + data.draw(st.integers(1, 4))))
    next_proc = first_proc + 100
    for token in range(steps):
        idle = [p for p in procs if p not in rec.pending]
        undone = [p for p in procs if p in rec.pending and not rec.pending[p][4]]
        done = [p for p in procs if p in rec.pending and rec.pending[p][4]]
        choices = [c for c, ok in (("invoke", idle), ("effect", undone), ("complete", done))
                   if ok]
        if crashes and rec.pending:
            choices.append("crash")
        action = data.draw(st.sampled_from(choices))
        if action == "invoke":
            rec.invoke(data.draw(st.sampled_from(idle)), *_random_op(data, token))
        elif action == "effect":
            rec.take_effect(data.draw(st.sampled_from(undone)))
        elif action == "complete":
            rec.complete(data.draw(st.sampled_from(done)))
        else:
            victim = data.draw(st.sampled_from(sorted(rec.pending)))
            if data.draw(st.booleans()) and not rec.pending[victim][4]:
                rec.take_effect(victim)  # crashed after taking effect: info, yet it happened
            rec.complete(victim, crash=True)
            procs[procs.index(victim)] = next_proc  # Jepsen: a crashed process is replaced
            next_proc += 1
    return next_proc


def finish(rec: Recorder) -> None:
    """Complete everything still in flight (each op takes effect first)."""
    for proc in sorted(rec.pending):
        if not rec.pending[proc][4]:
            rec.take_effect(proc)
        rec.complete(proc)


@SETTINGS
@given(st.data(), st.booleans(), st.booleans())
def test_model_executions_are_linearizable(data: st.DataObject, crashes: bool,
                                           split: bool) -> None:
    rec = Recorder()
    run_concurrently(data, rec, data.draw(st.integers(1, 40)), crashes)
    if data.draw(st.booleans()):
        finish(rec)  # otherwise operations still open at the end are info
    result = check_linearizable(History.from_events(rec.events), KVModel(), partition=split)
    assert result.verdict == "linearizable", result.explain()


def _isolated_read(rec: Recorder, proc: int, key: str, value: Any) -> None:
    rec.events.append(HistoryEvent(proc, "invoke", "get", None, key))
    rec.events.append(HistoryEvent(proc, "ok", "get", value, key))


@SETTINGS
@given(st.data(), st.booleans())
def test_read_of_a_value_never_written_is_caught(data: st.DataObject, crashes: bool) -> None:
    rec = Recorder()
    run_concurrently(data, rec, data.draw(st.integers(0, 30)), crashes)
    finish(rec)
    key = data.draw(st.sampled_from(KEYS))
    _isolated_read(rec, 999, key, "corrupt")
    run_concurrently(data, rec, data.draw(st.integers(0, 20)), crashes, first_proc=1000)
    result = check_linearizable(History.from_events(rec.events), KVModel())
    assert result.verdict == "not-linearizable"
    assert any(op.output == "corrupt" for p in result.failures for op in p.unplaced)


@SETTINGS
@given(st.data())
def test_stale_read_after_an_isolated_write_is_caught(data: st.DataObject) -> None:
    rec = Recorder()
    run_concurrently(data, rec, data.draw(st.integers(0, 30)), crashes=False)
    finish(rec)
    key = data.draw(st.sampled_from(KEYS))
    stale = rec.state.get(key, "")
    rec.invoke(998, "put", key, "fresh")
    rec.take_effect(998)
    rec.complete(998)
    _isolated_read(rec, 999, key, stale)  # should have read "fresh"
    run_concurrently(data, rec, data.draw(st.integers(0, 20)), crashes=False, first_proc=1000)
    finish(rec)
    result = check_linearizable(History.from_events(rec.events), KVModel(),
                                partition=data.draw(st.booleans()))
    assert result.verdict == "not-linearizable"

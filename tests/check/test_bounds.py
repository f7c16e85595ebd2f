"""Partitions interleaved by budget, stop at the first violation, time/step/memory bounds."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest

from pnyx.check import History, check_linearizable, get_model, write_jsonl
from pnyx.check.search import Search
from pnyx.core.history import HistoryEvent

MIB = 1 << 20


def hard_kv_events(seed: int, ops: int, clients: int = 50, key: str = "hard",
                   info_p: float = 0.2) -> list[HistoryEvent]:
    """A linearizable KV history that is hard to search: ``clients`` processes keep
    appending unique strings, sometimes putting one, and reading; every operation takes
    effect at its completion (so the history is linearizable by construction); many appends
    overlap, some are ``info`` (taking effect or not). The puts keep the search from
    pruning by prefix (an append-only key is easy: every read fixes the order before it)."""
    rng = random.Random(seed)
    events: list[HistoryEvent] = []
    pending: dict[int, tuple[str, str | None]] = {}
    procs = list(range(clients))
    next_proc, value, written = clients, "", 0
    for _ in range(2 * ops):
        proc = rng.choice(procs)
        if proc not in pending:
            written += 1
            f = rng.choices(("append", "get", "put"), (0.45, 0.5, 0.05))[0]
            pending[proc] = (f, {"append": f"{written} ", "put": f"{written}|"}.get(f))
            events.append(HistoryEvent(proc, "invoke", f, pending[proc][1], key))
            continue
        f, arg = pending.pop(proc)
        if arg is None:
            events.append(HistoryEvent(proc, "ok", "get", value, key))
            continue
        after = value + arg if f == "append" else arg
        if rng.random() < info_p:
            events.append(HistoryEvent(proc, "info", f, arg, key))
            procs[procs.index(proc)] = next_proc
            next_proc += 1
            value = after if rng.random() < 0.5 else value
        else:
            value = after
            events.append(HistoryEvent(proc, "ok", f, arg, key))
    return events


def sequential_kv_events(ops: int, key: str, process: int, bad_last: bool) -> list[HistoryEvent]:
    """One process appending and reading back ``ops`` times; the last read is wrong when
    ``bad_last`` (it misses the append just before it: certainly not linearizable)."""
    events, value = [], ""
    for i in range(ops // 2):
        arg = f"{i} "
        events += [HistoryEvent(process, "invoke", "append", arg, key),
                   HistoryEvent(process, "ok", "append", arg, key)]
        read = value if bad_last and i == ops // 2 - 1 else value + arg
        value += arg
        events += [HistoryEvent(process, "invoke", "get", None, key),
                   HistoryEvent(process, "ok", "get", read, key)]
    return events


HARD_OPS = len(History.from_events(hard_kv_events(1, 110)))


def test_the_hard_key_alone_is_hard() -> None:
    """Guard for the tests below: this key does not finish within a large step budget."""
    ops = History.from_events(hard_kv_events(1, 110)).operations
    result = check_linearizable(ops, get_model("kv"), max_steps=200_000)
    assert result.verdict == "unknown"
    assert f"step bound 200,000 reached: partition key 'hard' ({HARD_OPS} operations)" in \
        result.reason


def test_a_larger_illegal_partition_is_found_while_a_hard_one_searches() -> None:
    """Smallest first, then round-robin: the illegal key is bigger than the hard key, so
    only interleaving (not the ordering) finds it; the hard key is left unsearched."""
    events = hard_kv_events(1, 110) + sequential_kv_events(400, "bad", 999, bad_last=True)
    history = History.from_events(events)
    result = check_linearizable(history, get_model("kv"), timeout_s=120)
    assert result.verdict == "not-linearizable"
    assert [p.key for p in result.failures] == ["bad"]
    (hard,) = result.undecided
    assert hard.key == "hard"
    assert hard.reason.startswith("not searched: partition key 'bad' is not linearizable")
    assert "longest linearized prefix" in hard.reason
    assert result.steps < 100_000, "the illegal key is found in the first rounds"


def test_all_failures_searches_every_partition() -> None:
    events = (sequential_kv_events(40, "a", 1, bad_last=True)
              + sequential_kv_events(40, "b", 2, bad_last=True)
              + sequential_kv_events(40, "c", 3, bad_last=False))
    history = History.from_events(events)
    first = check_linearizable(history, get_model("kv"))
    every = check_linearizable(history, get_model("kv"), stop_at_first=False)
    assert first.verdict == every.verdict == "not-linearizable"
    assert len(first.failures) == 1 and len(first.undecided) == 2
    assert sorted(p.key for p in every.failures) == ["a", "b"]
    assert not every.undecided
    assert "were not searched to the end" in first.explain()


def test_memory_bound_gives_up_the_biggest_search_and_says_how_far_it_got() -> None:
    events = hard_kv_events(1, 110) + sequential_kv_events(200, "fine", 999, bad_last=False)
    result = check_linearizable(History.from_events(events), get_model("kv"),
                                max_memory_bytes=40 * MIB)
    assert result.verdict == "unknown"
    by_key = {p.key: p for p in result.partitions}
    assert by_key["fine"].verdict == "linearizable", "the other partition still finishes"
    hard = by_key["hard"]
    assert hard.verdict == "unknown"
    assert hard.reason.startswith(f"memory bound 40 MiB reached: partition key 'hard' ({HARD_OPS} "
                                  f"operations) after ")
    assert "longest linearized prefix" in hard.reason
    assert 40 * MIB <= hard.memory_bytes < 60 * MIB
    assert result.reason == hard.reason
    assert "memory bound 40 MiB" in result.explain()


def test_memory_estimate_tracks_what_the_search_really_allocates() -> None:
    """The estimate the bound uses is within a factor of two of tracemalloc's figure."""
    ops = History.from_events(hard_kv_events(2, 110)).operations
    tracemalloc.start()
    try:
        search = Search(list(ops), get_model("kv"))
        base = tracemalloc.get_traced_memory()[0]
        gen = search.steps_iter()
        for _ in range(60):
            next(gen)
        real = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    estimate = search.memory_bytes()
    assert real > 4 * MIB, real
    assert real / 2 <= estimate <= real * 2, (estimate, real)


def test_timeout_reason_names_the_partition() -> None:
    ops = History.from_events(hard_kv_events(1, 110)).operations
    result = check_linearizable(ops, get_model("kv"), timeout_s=0.2)
    assert result.verdict == "unknown"
    assert result.reason.startswith(f"time-out: partition key 'hard' ({HARD_OPS} operations) "
                                    "after ")


def _pnyx_check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", "from pnyx.cli.main import main; main()",
                           "check", *args],
                          capture_output=True, text=True, timeout=300, check=False)


def test_cli_memory_bound_ends_in_unknown_with_the_reason(tmp_path: Path) -> None:
    path = tmp_path / "hard.jsonl"
    write_jsonl(hard_kv_events(1, 110), path)
    proc = _pnyx_check(str(path), "--model", "kv", "--max-memory", "30M", "--json")
    assert proc.returncode == 3, proc.stderr
    record = json.loads(proc.stdout)
    assert record["verdict"] == "unknown"
    assert record["reason"].startswith("memory bound 30 MiB reached: partition key 'hard'")
    assert record["undecided"] == [{"key": "hard", "reason": record["reason"]}]
    text = _pnyx_check(str(path), "--model", "kv", "--max-memory", "30M")
    assert text.returncode == 3 and "memory bound 30 MiB reached" in text.stdout


def test_cli_total_timeout_bounds_all_files(tmp_path: Path) -> None:
    paths = []
    for seed in (1, 2, 3):
        paths.append(tmp_path / f"hard-{seed}.jsonl")
        write_jsonl(hard_kv_events(seed, 110), paths[-1])
    proc = _pnyx_check(*map(str, paths), "--model", "kv", "--total-timeout", "1", "--json")
    assert proc.returncode == 3, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["verdict"] for r in records] == ["unknown"] * 3
    assert all("time-out" in r["reason"] for r in records)
    assert sum(r["elapsed_s"] for r in records) < 60


@pytest.mark.parametrize("size", ["12", "abc", "0.5K"])
def test_cli_refuses_a_bad_memory_size(tmp_path: Path, size: str) -> None:
    path = tmp_path / "h.jsonl"
    write_jsonl(sequential_kv_events(4, "k", 1, bad_last=False), path)
    proc = _pnyx_check(str(path), "--model", "kv", "--max-memory", size)
    assert proc.returncode == 2
    assert "--max-memory" in proc.stderr and "Traceback" not in proc.stderr


def test_timeout_with_several_hard_partitions_reports_each() -> None:
    """Regression: the time-out used to leave one of several undecided partitions without a
    result (KeyError) because the active list changed while it was iterated."""
    events: list[HistoryEvent] = []
    for number, key in enumerate(("h1", "h2", "h3", "h4")):
        events += [HistoryEvent(e.process + 1000 * number, e.type, e.f, e.value, key)
                   for e in hard_kv_events(1, 110)]
    result = check_linearizable(History.from_events(events), get_model("kv"), timeout_s=0.5)
    assert result.verdict == "unknown"
    assert sorted(p.key for p in result.undecided) == ["h1", "h2", "h3", "h4"]
    assert all("time-out" in p.reason for p in result.undecided)

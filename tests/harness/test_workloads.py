"""The workloads' checkers on hand-made histories that must pass and must fail, and the
client's recording rules (a write of unknown outcome is ``info`` and starts a new process;
a failed read is ``fail``)."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from pnyx.check.history import History
from pnyx.core.history import HistoryEvent
from pnyx.etcdclient import AsyncEtcdClient, EtcdError, EtcdUnavailable
from pnyx.harness.workloads import (
    FINAL_PROCESS,
    BankWorkload,
    Client,
    FencedLockWorkload,
    Indeterminate,
    KVWorkload,
    ListAppendWorkload,
    LockWorkload,
    Recorder,
    RegisterWorkload,
    SetWorkload,
    WatchWorkload,
    check_watch,
    make_workload,
)


def ev(process: int, kind: str, f: str, value: Any = None, key: Any = None,
       t: float = 0.0) -> HistoryEvent:  # fmt: skip
    return HistoryEvent(process, kind, f, value, key, int(t * 1e9))  # type: ignore[arg-type]


def history(*events: HistoryEvent) -> History:
    return History.from_events(list(events))


def verdicts(results: list[Any]) -> list[str]:
    return [r.verdict for r in results]


# -- register / kv ---------------------------------------------------------------------------


def test_register_linearizable_history_passes() -> None:
    h = history(
        ev(0, "invoke", "write", 1, "r", 0.0), ev(0, "ok", "write", 1, "r", 0.1),
        ev(1, "invoke", "cas", [1, 2], "r", 0.2), ev(1, "ok", "cas", True, "r", 0.3),
        ev(0, "invoke", "read", None, "r", 0.4), ev(0, "ok", "read", 2, "r", 0.5),
        ev(2, "invoke", "cas", [1, 3], "r", 0.6), ev(2, "ok", "cas", False, "r", 0.7),
        ev(3, "invoke", "write", 4, "r", 0.8), ev(3, "info", "write", 4, "r", 0.9),
        ev(0, "invoke", "read", None, "r", 1.0), ev(0, "ok", "read", 4, "r", 1.1),
    )  # fmt: skip
    [result] = RegisterWorkload().check(h)
    assert result.verdict == "valid", result.summary


def test_register_stale_read_fails_with_a_counterexample() -> None:
    h = history(
        ev(0, "invoke", "write", 1, "r", 0.0), ev(0, "ok", "write", 1, "r", 0.1),
        ev(1, "invoke", "write", 2, "r", 0.2), ev(1, "ok", "write", 2, "r", 0.3),
        ev(0, "invoke", "read", None, "r", 0.4), ev(0, "ok", "read", 1, "r", 0.5),
    )  # fmt: skip
    [result] = RegisterWorkload().check(h)
    assert result.verdict == "invalid"
    assert "not linearizable" in result.counterexample
    assert result.culprits and result.linearizability is not None


def test_kv_checks_each_key_and_catches_a_lost_put() -> None:
    good = history(
        ev(0, "invoke", "put", "v1", "a", 0.0), ev(0, "ok", "put", "v1", "a", 0.1),
        ev(1, "invoke", "put", "v2", "b", 0.0), ev(1, "ok", "put", "v2", "b", 0.1),
        ev(0, "invoke", "get", None, "a", 0.2), ev(0, "ok", "get", "v1", "a", 0.3),
        ev(1, "invoke", "cas", [None, "v3"], "c", 0.2), ev(1, "ok", "cas", True, "c", 0.3),
        ev(1, "invoke", "delete", None, "b", 0.4), ev(1, "ok", "delete", None, "b", 0.5),
        ev(0, "invoke", "get", None, "b", 0.6), ev(0, "ok", "get", None, "b", 0.7),
    )  # fmt: skip
    assert verdicts(KVWorkload().check(good)) == ["valid"]
    lost = history(
        ev(0, "invoke", "put", "v1", "a", 0.0), ev(0, "ok", "put", "v1", "a", 0.1),
        ev(0, "invoke", "get", None, "a", 0.2), ev(0, "ok", "get", None, "a", 0.3),
    )  # fmt: skip
    assert verdicts(KVWorkload().check(lost)) == ["invalid"]


# -- list-append -------------------------------------------------------------------------------


def test_list_append_serializable_history_passes() -> None:
    h = history(
        ev(0, "invoke", "txn", [["append", 1, 1]], None, 0.0),
        ev(0, "ok", "txn", [["append", 1, 1]], None, 0.1),
        ev(1, "invoke", "txn", [["r", 1, None], ["append", 1, 2]], None, 0.2),
        ev(1, "ok", "txn", [["r", 1, [1]], ["append", 1, 2]], None, 0.3),
        ev(0, "invoke", "txn", [["r", 1, None]], None, 0.4),
        ev(0, "ok", "txn", [["r", 1, [1, 2]]], None, 0.5),
        ev(2, "invoke", "txn", [["append", 2, 1]], None, 0.4),
        ev(2, "fail", "txn", [["append", 2, 1]], None, 0.5),
    )  # fmt: skip
    assert verdicts(ListAppendWorkload().check(h)) == ["valid"]


def test_list_append_finds_a_cycle_and_an_aborted_read() -> None:
    # T1 and T2 each read the other's append missing: a G-single/G2 cycle, and T3 read
    # the value of a failed (aborted) transaction
    h = history(
        ev(0, "invoke", "txn", [["r", 1, None], ["append", 2, 1]], None, 0.0),
        ev(1, "invoke", "txn", [["r", 2, None], ["append", 1, 1]], None, 0.0),
        ev(0, "ok", "txn", [["r", 1, []], ["append", 2, 1]], None, 0.1),
        ev(1, "ok", "txn", [["r", 2, []], ["append", 1, 1]], None, 0.1),
        ev(2, "invoke", "txn", [["append", 3, 7]], None, 0.2),
        ev(2, "fail", "txn", [["append", 3, 7]], None, 0.3),
        ev(0, "invoke", "txn", [["r", 1, None], ["r", 2, None], ["r", 3, None]], None, 0.4),
        ev(0, "ok", "txn", [["r", 1, [1]], ["r", 2, [1]], ["r", 3, [7]]], None, 0.5),
    )  # fmt: skip
    [result] = ListAppendWorkload().check(h)
    assert result.verdict == "invalid"
    assert "G1a" in result.details["anomalies"]
    assert any(a.startswith("G2") or a.startswith("G-single") for a in result.details["anomalies"])
    assert result.culprits


# -- bank --------------------------------------------------------------------------------------


def bank_read(process: int, balances: dict[str, int], t: float) -> list[HistoryEvent]:
    return [ev(process, "invoke", "read", None, None, t),
            ev(process, "ok", "read", balances, None, t + 0.05)]  # fmt: skip


def test_bank_conserved_total_passes() -> None:
    bank = BankWorkload(keys=3, initial=10)
    h = history(
        *bank_read(0, {"0": 10, "1": 10, "2": 10}, 0.0),
        ev(1, "invoke", "transfer", {"from": 0, "to": 1, "amount": 5}, None, 0.1),
        ev(1, "ok", "transfer", {"from": 0, "to": 1, "amount": 5}, None, 0.2),
        *bank_read(0, {"0": 5, "1": 15, "2": 10}, 0.3),
        *bank_read(FINAL_PROCESS, {"0": 5, "1": 15, "2": 10}, 0.5),
    )  # fmt: skip
    assert verdicts(bank.check(h)) == ["valid"]


@pytest.mark.parametrize(("balances", "why"), [
    ({"0": 5, "1": 10, "2": 10}, "total"),       # money vanished
    ({"0": -2, "1": 22, "2": 10}, "negative"),   # total kept, an account overdrawn
])  # fmt: skip
def test_bank_total_change_or_negative_balance_fails(balances: dict[str, int],
                                                     why: str) -> None:  # fmt: skip
    bank = BankWorkload(keys=3, initial=10)
    [result] = bank.check(history(*bank_read(0, {"0": 10, "1": 10, "2": 10}, 0.0),
                                  *bank_read(1, balances, 0.2)))  # fmt: skip
    assert result.verdict == "invalid"
    assert why in result.counterexample
    assert result.details["bad_reads"] == 1


# -- set ---------------------------------------------------------------------------------------


def adds(*spec: tuple[int, str]) -> list[HistoryEvent]:
    out = []
    for i, (element, outcome) in enumerate(spec):
        out.append(ev(i, "invoke", "add", element, None, i * 0.1))
        out.append(ev(i, outcome, "add", element, None, i * 0.1 + 0.05))
    return out


def final_read(elements: list[int]) -> list[HistoryEvent]:
    return [ev(FINAL_PROCESS, "invoke", "final-read", None, None, 5.0),
            ev(FINAL_PROCESS, "ok", "final-read", elements, None, 5.1)]  # fmt: skip


def test_set_every_acknowledged_add_read_passes() -> None:
    h = history(*adds((1, "ok"), (2, "info"), (3, "fail"), (4, "ok")), *final_read([1, 2, 4]))
    [result] = SetWorkload().check(h)
    assert result.verdict == "valid", result.summary
    assert "1 of unknown outcome present" in result.summary


def test_set_lost_element_fails() -> None:
    h = history(*adds((1, "ok"), (2, "ok"), (3, "ok")), *final_read([1, 3]))
    [result] = SetWorkload().check(h)
    assert result.verdict == "invalid"
    assert result.details["lost"] == [2]
    assert [op.value for op in result.culprits] == [2]


def test_set_element_never_added_fails_and_no_final_read_is_unknown() -> None:
    h = history(*adds((1, "ok"), (3, "fail")), *final_read([1, 3]))
    [result] = SetWorkload().check(h)
    assert result.verdict == "invalid" and result.details["unexpected"] == [3]
    assert verdicts(SetWorkload().check(history(*adds((1, "ok"))))) == ["unknown"]


# -- lock and lock-fenced --------------------------------------------------------------------


def cycle(process: int, token: int, enter: float, leave: float) -> list[HistoryEvent]:
    return [ev(process, "invoke", "acquire", None, None, enter - 0.05),
            ev(process, "ok", "acquire", token, None, enter),
            ev(process, "invoke", "release", token, None, leave),
            ev(process, "ok", "release", token, None, leave + 0.02)]  # fmt: skip


def test_lock_disjoint_critical_sections_pass() -> None:
    h = history(*cycle(0, 10, 0.1, 0.5), *cycle(1, 12, 0.6, 0.9), *cycle(0, 14, 1.0, 1.2))
    [result] = LockWorkload().check(h)
    assert result.verdict == "valid" and result.details["sections"] == 3


def test_lock_overlapping_critical_sections_fail() -> None:
    h = history(*cycle(0, 10, 0.1, 0.8), *cycle(1, 12, 0.6, 0.9))
    [result] = LockWorkload().check(h)
    assert result.verdict == "invalid"
    assert result.details["overlaps"] == 1
    assert "p0 held the lock (token 10)" in result.counterexample
    assert {op.process for op in result.culprits} == {0, 1}


def test_lock_holder_that_crashed_inside_holds_until_the_end() -> None:
    # p0 acquired and never released (its release is of unknown outcome, never invoked):
    # its section is open to the end of the history, so p1 entering overlaps it
    h = history(ev(0, "invoke", "acquire", None, None, 0.0), ev(0, "ok", "acquire", 3, None, 0.1),
                *cycle(1, 5, 2.0, 2.5))  # fmt: skip
    assert verdicts(LockWorkload().check(h)) == ["invalid"]


def fenced_write(process: int, token: int, outcome: str, revision: int,
                 t: float) -> list[HistoryEvent]:  # fmt: skip
    output = [token, revision] if outcome == "ok" else token
    return [ev(process, "invoke", "write", token, None, t),
            ev(process, outcome, "write", output, None, t + 0.01)]


def test_lock_fenced_stale_token_write_fails_and_refused_ones_pass() -> None:
    fenced = FencedLockWorkload()
    good = history(*fenced_write(0, 10, "ok", 11, 0.1), *fenced_write(1, 12, "ok", 13, 0.2),
                   *fenced_write(0, 10, "fail", 0, 0.3))  # fmt: skip
    [result] = fenced.check(good)
    assert result.verdict == "valid" and result.details["refused"] == 1
    stale = history(*fenced_write(0, 12, "ok", 13, 0.1), *fenced_write(1, 10, "ok", 15, 0.2))
    [result] = fenced.check(stale)
    assert result.verdict == "invalid" and result.details["stale"] == 1
    assert "token 10 at revision 15, after a write with token 12" in result.counterexample


# -- watch -------------------------------------------------------------------------------------


REFERENCE = [(5, "PUT", "w/k0", "v1"), (6, "PUT", "w/k1", "v2"), (7, "PUT", "w/end", "end")]
ACKED = [("w/k0", "v1", 5), ("w/k1", "v2", 6), ("w/end", "end", 7)]


def test_watch_identical_watchers_pass() -> None:
    result = check_watch({0: list(REFERENCE), 1: list(REFERENCE)}, REFERENCE, ACKED, 7)
    assert result.verdict == "valid", result.counterexample


def test_watch_gap_fails() -> None:
    gap = [REFERENCE[0], REFERENCE[2]]
    result = check_watch({0: list(REFERENCE), 1: gap}, REFERENCE, ACKED, 7)
    assert result.verdict == "invalid"
    assert "watcher 2" in result.counterexample and "gap" in result.counterexample
    assert "[6]" in result.counterexample


def test_watch_reordered_duplicated_or_missing_write_fails() -> None:
    reordered = [REFERENCE[1], REFERENCE[0], REFERENCE[2]]
    assert check_watch({0: reordered}, REFERENCE, ACKED, 7).verdict == "invalid"
    dup = [REFERENCE[0], REFERENCE[0], *REFERENCE[1:]]
    assert "duplicates" in check_watch({0: dup}, REFERENCE, ACKED, 7).counterexample
    lost = [*ACKED, ("w/k2", "v3", 8)]  # acknowledged but not in the write history
    assert check_watch({0: list(REFERENCE)}, REFERENCE, lost, 7).verdict == "invalid"


def test_watch_without_its_final_phase_is_unknown_with_it_checked() -> None:
    workload = WatchWorkload(seed=1)
    workload.watched = {0: list(REFERENCE[:1])}
    workload.acked = list(ACKED[:1])
    # interrupted before the final write and the replay: no verdict, not a violation
    assert [r.verdict for r in workload.check(History([]))] == ["unknown"]
    # the final write went through, the replay never finished (it raised): still unknown
    workload.final_revision = 7
    assert [r.verdict for r in workload.check(History([]))] == ["unknown"]
    workload.reference = list(REFERENCE[:2])  # replayed, short of the final revision
    assert [r.verdict for r in workload.check(History([]))] == ["invalid"]


# -- recording ---------------------------------------------------------------------------------


def test_client_records_info_for_writes_fail_for_reads_and_moves_on() -> None:
    async def scenario() -> Recorder:
        rec = Recorder()
        client = Client(1, 4, AsyncEtcdClient(["127.0.0.1:1"]), rec, random.Random(0))

        async def unavailable() -> None:
            raise EtcdUnavailable("UNAVAILABLE", "gone")

        async def refused() -> None:
            raise EtcdError("INVALID_ARGUMENT", "no")

        async def unknown() -> None:
            raise Indeterminate()

        async def fine() -> int:
            return 7

        assert await client.op("read", None, "k", unavailable, read=True) == (False, None)
        assert client.process == 1
        assert await client.op("write", 1, "k", unavailable) == (False, None)
        assert client.process == 5
        await client.op("write", 2, "k", refused)
        await client.op("cas", [1, 2], "k", unknown)
        assert client.process == 13
        assert await client.op("read", None, "k", fine, read=True) == (True, 7)
        return rec

    rec = asyncio.run(scenario())
    kinds = [(e.process, e.type) for e in rec.events if e.type != "invoke"]
    assert kinds == [(1, "fail"), (1, "info"), (5, "info"), (9, "info"), (13, "ok")]
    ops = rec.history().operations
    assert [o.outcome for o in ops] == ["fail", "info", "info", "info", "ok"]
    assert all(e.time >= 0 for e in rec.events)
    times = [e.time for e in rec.events]
    assert times == sorted(times)


def test_make_workload_knows_every_workload_and_refuses_others() -> None:
    for name in ("register", "kv", "list-append", "bank", "set", "lock", "lock-fenced",
                 "watch"):  # fmt: skip
        assert make_workload(name, seed=1).name == name
    assert make_workload("kv", keys=7).keys == 7
    with pytest.raises(KeyError, match="unknown workload"):
        make_workload("queue")

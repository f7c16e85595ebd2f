"""The composite workload, without a cluster: clients go to their part, each part checks
exactly its own operations (client processes, also after an ``info``; the final reads
it recorded), results are named after their part, a failing checker hides nothing, and
parts that would collide are refused."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from typing import Any

import pytest

from pnyx.check.history import History
from pnyx.etcdclient import AsyncEtcdClient
from pnyx.harness.composite import CompositeWorkload
from pnyx.harness.workloads import FINAL_PROCESS, CheckResult, Client, Recorder, Workload


class Part(Workload):
    """Records the clients it stepped and the operations it was asked to check."""

    def __init__(self, name: str, *, fail_check: bool = False, final_op: bool = False) -> None:
        super().__init__()
        self.name = name
        self.fail_check = fail_check
        self.final_op = final_op
        self.stepped: list[int] = []
        self.checked: list[tuple[int, str]] = []

    async def step(self, client: Client) -> None:
        self.stepped.append(client.index)

    async def final(self, etcd: AsyncEtcdClient, recorder: Recorder) -> None:
        if self.final_op:
            recorder.record(FINAL_PROCESS, "invoke", "read", None, self.name)
            recorder.record(FINAL_PROCESS, "ok", "read", [], self.name)

    def check(self, history: History) -> list[CheckResult]:
        if self.fail_check:
            raise RuntimeError("checker broke")
        self.checked = [(op.process, op.f) for op in history.operations]
        return [CheckResult("it", "valid", f"{len(self.checked)} operations")]


def _client(index: int, concurrency: int, recorder: Recorder) -> Client:
    return Client(index, concurrency, None, recorder, random.Random(index))  # type: ignore[arg-type]


def _run(workload: CompositeWorkload, recorder: Recorder, ops: Sequence[tuple[int, str]]
         ) -> None:  # fmt: skip
    """Step every client once, record ``ops`` (process, f), run the finals."""
    async def body() -> None:
        for i in range(workload.concurrency):
            await workload.step(_client(i, workload.concurrency, recorder))
        for process, f in ops:
            recorder.record(process, "invoke", f)
            recorder.record(process, "ok", f)
        await workload.final(None, recorder)  # type: ignore[arg-type]
        await workload.close()
    asyncio.run(body())


def test_clients_processes_and_final_reads_go_to_their_part() -> None:
    a, b, c = Part("a", final_op=True), Part("b"), Part("c", final_op=True)
    workload = CompositeWorkload([(a, 2), (b, 1), (c, 1)])
    assert workload.name == "a+b+c" and workload.concurrency == 4
    recorder = Recorder()
    # processes: client i is i, i + 4, i + 8, ... (a new process after each info)
    _run(workload, recorder, [(0, "x"), (5, "x"), (2, "y"), (10, "y"), (3, "z"), (7, "z")])
    assert (a.stepped, b.stepped, c.stepped) == ([0, 1], [2], [3])
    results = workload.check(recorder.history())
    assert a.checked == [(0, "x"), (5, "x"), (FINAL_PROCESS, "read")]
    assert b.checked == [(2, "y"), (10, "y")]
    assert c.checked == [(3, "z"), (7, "z"), (FINAL_PROCESS, "read")]
    assert [r.name for r in results] == ["a: it", "b: it", "c: it"]


def test_a_failing_checker_is_unknown_and_hides_no_other_part() -> None:
    a, b = Part("a", fail_check=True), Part("b")
    workload = CompositeWorkload([(a, 1), (b, 1)])
    recorder = Recorder()
    _run(workload, recorder, [(0, "x"), (1, "y")])
    results = workload.check(recorder.history())
    assert [(r.name, r.verdict) for r in results] == [("a", "unknown"), ("b: it", "valid")]
    assert "checker broke" in results[0].summary


def test_the_run_must_have_one_client_per_part_client() -> None:
    workload = CompositeWorkload([(Part("a"), 2), (Part("b"), 1)])
    with pytest.raises(ValueError, match="needs 3 clients"):
        asyncio.run(workload.step(_client(0, 5, Recorder())))


@pytest.mark.parametrize("parts, message", [
    ([], "at least one part"),
    ([(Part("a"), 1), (Part("a"), 2)], "names must differ"),
    ([(Part("a"), 0)], "at least one client"),
])  # fmt: skip
def test_colliding_or_empty_parts_are_refused(parts: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CompositeWorkload(parts)

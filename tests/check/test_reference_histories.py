"""Every shared reference history gets exactly the verdict in its EXPECTED.tsv."""

from __future__ import annotations

import pytest

from pnyx.check import check_linearizable, get_model, read_history
from tests.check.helpers import SHARED_HISTORIES, expected

ETCD = SHARED_HISTORIES / "etcd-jepsen"
KV = SHARED_HISTORIES / "kv"


@pytest.mark.parametrize(("name", "verdict"), expected(ETCD))
def test_etcd_logs_match_expected(name: str, verdict: str) -> None:
    history = read_history(ETCD / name, "jepsen")
    assert check_linearizable(history, get_model("cas-register")).verdict == verdict


@pytest.mark.parametrize("split", [True, False], ids=["split", "unsplit"])
@pytest.mark.parametrize(("name", "verdict"), expected(KV))
def test_kv_histories_match_expected(name: str, verdict: str, split: bool) -> None:
    history = read_history(KV / name, "edn")
    result = check_linearizable(history, get_model("kv"), partition=split)
    assert result.verdict == verdict


def test_reference_sets_are_complete() -> None:
    assert len(expected(ETCD)) == 30
    assert {v for _, v in expected(KV)} == {"linearizable", "not-linearizable"}


def test_failing_kv_history_has_counterexample_per_partition() -> None:
    result = check_linearizable(read_history(KV / "c01-bad.txt", "edn"), get_model("kv"))
    assert result.failures
    for part in result.failures:
        assert part.unplaced, "a failing partition names the operations it could not place"
        assert all(op.key == part.key for op in part.prefix + part.unplaced)
        assert len(part.prefix) == len(part.prefix_states)

"""Snapshot isolation: the SI rules on the dependency graph, lost update, write skew
(allowed: SI but not serializable), and generated multi-version store histories."""

from __future__ import annotations

from typing import Any

import pytest

from pnyx.check import check_serializable, read_history
from pnyx.check.history import History
from pnyx.check.snapshot_isolation import check_snapshot_isolation
from tests.check.consistency_generate import si_history
from tests.check.helpers import LOCAL_HISTORIES, expected, hist


def txns(*pairs: tuple[int, list[list[Any]]]) -> History:
    """Transactions invoked together, then completed in the same order."""
    return hist(*[(p, "invoke", "txn", m) for p, m in pairs],
                *[(p, "ok", "txn", m) for p, m in pairs])


WRITE_SKEW = txns((0, [["r", "x", None], ["r", "y", None], ["w", "x", 1]]),
                  (1, [["r", "x", None], ["r", "y", None], ["w", "y", 1]]))
LOST_UPDATE = txns((0, [["r", "x", None], ["w", "x", 1]]),
                   (1, [["r", "x", None], ["w", "x", 2]]))
# T0 -wr-> T1 -rw-> T2 -wr-> T3 -rw-> T4 -wr-> (T5 -rw-> T0, added in the test): three rw
# edges, never adjacent (G-nonadjacent)
NONADJACENT = hist(
    (0, "invoke", "txn", [["w", "a", 1], ["w", "b", 1]]),
    (0, "ok", "txn", [["w", "a", 1], ["w", "b", 1]]),
    (1, "invoke", "txn", [["r", "b", 1], ["r", "x", None]]),
    (2, "invoke", "txn", [["w", "x", 1], ["w", "c", 1]]),
    (2, "ok", "txn", [["w", "x", 1], ["w", "c", 1]]),
    (3, "invoke", "txn", [["r", "c", 1], ["r", "d", None]]),
    (4, "invoke", "txn", [["w", "d", 1], ["w", "e", 1]]),
    (4, "ok", "txn", [["w", "d", 1], ["w", "e", 1]]),
    (1, "ok", "txn", [["r", "b", 1], ["r", "x", None]]),
    (3, "ok", "txn", [["r", "c", 1], ["r", "d", None]]),
)


def test_write_skew_is_allowed_by_si_but_not_serializable() -> None:
    result = check_snapshot_isolation(WRITE_SKEW)
    assert result.verdict == "snapshot-isolation"
    assert [a.name for a in result.allowed] == ["write-skew"]
    assert "allowed by snapshot isolation" in result.allowed[0].explanation
    assert check_serializable(WRITE_SKEW).verdict == "G2-item"


def test_lost_update_is_a_violation() -> None:
    result = check_snapshot_isolation(LOST_UPDATE)
    assert result.names == ["lost-update"]
    assert [op.index for op in result.violations[0].operations] == [0, 1]
    assert not result.allowed, "its rw-rw cycle is not reported again as allowed"


def test_read_skew_is_g_single() -> None:
    # T0 read y before T1's write but z after it: one rw edge and one wr edge
    h = txns((0, [["r", "y", None], ["r", "z", 1]]), (1, [["w", "y", 1], ["w", "z", 1]]))
    result = check_snapshot_isolation(h)
    assert result.names == ["G-single"]
    assert result.violations[0].explanation.count("-rw->") == 1


def test_g_nonadjacent() -> None:
    base = check_snapshot_isolation(NONADJACENT)
    assert base.ok, "no cycle yet"
    closing = hist(*[(e.process, e.type, e.f, _list(e.value)) for e in NONADJACENT.to_events()],
                   (5, "invoke", "txn", [["r", "e", 1], ["r", "a", None]]),
                   (5, "ok", "txn", [["r", "e", 1], ["r", "a", None]]))
    result = check_snapshot_isolation(closing)
    assert result.names == ["G-nonadjacent"]
    assert result.violations[0].explanation.count("-rw->") == 3
    assert check_serializable(closing).verdict == "G2-item"


def _list(value: Any) -> Any:
    return [list(m) for m in value] if isinstance(value, tuple) else value


@pytest.mark.parametrize(("name", "kind", "verdict"), expected(LOCAL_HISTORIES))
def test_elle_reference_histories(name: str, kind: str, verdict: str) -> None:
    h = read_history(LOCAL_HISTORIES / name, "edn")
    result = check_snapshot_isolation(h, kind=kind)  # type: ignore[arg-type]
    if verdict in ("serializable", "G2-item", "G2"):
        assert result.ok or result.names == ["lost-update"], result.explain()
    else:
        assert not result.ok
        assert verdict in result.names or verdict.startswith("G-single")


def test_strict_variant_names_realtime_cycles() -> None:
    h = read_history(LOCAL_HISTORIES / "la-stale.edn", "edn")
    assert check_snapshot_isolation(h).ok
    result = check_snapshot_isolation(h, realtime=True)
    assert result.names == ["G-single-realtime"]


@pytest.mark.parametrize("seed", range(25))
def test_si_store_histories_are_snapshot_isolated(seed: int) -> None:
    run = si_history(seed, txns=40, processes=5, keys=3)
    assert check_snapshot_isolation(run.history).verdict == "snapshot-isolation"


def test_store_without_first_committer_wins_loses_updates_and_is_caught() -> None:
    caught = 0
    for seed in range(25):
        run = si_history(seed, txns=40, processes=5, keys=3, first_committer_wins=False)
        result = check_snapshot_isolation(run.history)
        assert ("lost-update" in result.names) == (run.lost_updates > 0), f"seed {seed}"
        caught += run.lost_updates > 0
    assert caught > 0

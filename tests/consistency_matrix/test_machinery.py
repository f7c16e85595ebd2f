"""The table's machinery: aggregation (unknown is never held), rendering, the document
markers, latency and availability bookkeeping, final reads, and the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from pnyx.catalog import get_protocol
from pnyx.cli.consistency_matrix import (
    HELD,
    SCHEMES,
    SESSION_STRIDE,
    UNKNOWN,
    VIOLATED,
    SeedOutcome,
    aggregate,
    check_model,
    final_reads,
    latencies,
    partition_schedule,
    percentiles,
    quiescent,
    render_table,
    render_tradeoffs,
    replace_between,
    scheme,
    split_sessions,
    write_doc,
)
from pnyx.cli.main import cli
from pnyx.core import CLIENT_ID_BASE, HistoryEvent
from pnyx.sim.runner import SimConfig, Simulation
from pnyx.sim.schedule import parse_faults

DOC = "intro\n<!-- consistency-table:begin -->\nold\n<!-- consistency-table:end -->\nmid\n" \
      "<!-- consistency-tradeoffs:begin -->\n<!-- consistency-tradeoffs:end -->\nend\n"


def _outcome(seed: int, verdict: str, monitor: str = HELD) -> SeedOutcome:
    return SeedOutcome("dynamo", seed, monitor, {"linearizable": verdict, "causal": HELD},
                       {"linearizable": f"why {seed}"} if verdict != HELD else {},
                       {"get": [1.0, 3.0], "put": [2.0]}, {"majority": (3, 4),
                                                          "minority": (0, 2)})


def test_an_unknown_seed_is_reported_unknown_never_held() -> None:
    matrix = aggregate([_outcome(1, HELD), _outcome(2, UNKNOWN), _outcome(3, HELD)])
    cell = matrix.cells["dynamo"]["linearizable"]
    assert cell.status == UNKNOWN and cell.unknown == [2] and cell.held == 2
    table = render_table(matrix)
    assert "unknown on 1/3 (seed 2)" in table
    assert "held (3/3)" in table  # the causal column
    assert "pnyx consistency seed dynamo --seed 2 --model linearizable" in table


def test_a_violation_wins_over_unknown_and_names_its_first_seed() -> None:
    matrix = aggregate([_outcome(1, HELD), _outcome(2, UNKNOWN), _outcome(5, VIOLATED),
                        _outcome(7, VIOLATED, monitor="lost-write")])
    cell = matrix.cells["dynamo"]["linearizable"]
    assert cell.status == VIOLATED and cell.violated == [5, 7]
    table = render_table(matrix)
    assert "**violated** 2/4 (seed 5), unknown on 1" in table
    assert "dynamo / linearizable, seed 5: why 5" in table
    assert "pnyx sim dynamo --seed 5 --faults all" in table
    assert "**violated** 1/4 (seed 7)" in table  # the monitor column
    assert "`pnyx consistency seed dynamo --seed 7` · `pnyx sim dynamo --seed 7" in table
    data = matrix.to_json()["schemes"]["dynamo"]
    assert data["cells"]["linearizable"]["violated"] == [5, 7]
    assert data["availability"] == {"majority": [12, 16], "minority": [0, 8]}


def test_tradeoffs_show_percentiles_and_availability() -> None:
    text = render_tradeoffs(aggregate([_outcome(1, HELD), _outcome(2, HELD)]))
    assert "| 2 / 3 | 2 / 2 |" in text  # get: 1, 3, 1, 3
    assert "75% (6/8)" in text and "0% (0/4)" in text
    assert percentiles([]) == {"p50": 0.0, "p99": 0.0, "n": 0}
    assert percentiles([float(i) for i in range(1, 101)])["p99"] == 99.0


def test_markers_are_replaced_and_rewriting_reproduces_the_document(tmp_path: Path) -> None:
    path = tmp_path / "doc.md"
    path.write_text(DOC, encoding="utf-8")
    write_doc(path, "TABLE", "TRADE")
    once = path.read_text(encoding="utf-8")
    assert "old" not in once and "TABLE" in once and "TRADE" in once
    assert once.startswith("intro\n") and once.endswith("end\n")
    write_doc(path, "TABLE", "TRADE")
    assert path.read_text(encoding="utf-8") == once
    with pytest.raises(ValueError, match="consistency-table:begin"):
        replace_between("no markers", "consistency-table", "x")


def test_latencies_count_ok_operations_in_ticks() -> None:
    tick_ns = 10_000_000
    history = [
        HistoryEvent(CLIENT_ID_BASE, "invoke", "get", None, "a", 0),
        HistoryEvent(CLIENT_ID_BASE + 1, "invoke", "put", "v", "a", 5_000_000),
        HistoryEvent(CLIENT_ID_BASE, "ok", "get", None, "a", 20_000_000),
        HistoryEvent(CLIENT_ID_BASE + 1, "info", "put", "v", "a", 90_000_000),
        HistoryEvent(CLIENT_ID_BASE + 1, "invoke", "put", "w", "a", 100_000_000),
        HistoryEvent(CLIENT_ID_BASE + 1, "ok", "put", "w", "a", 115_000_000),
    ]
    assert latencies(history, tick_ns) == ([2.0], [1.5])


@pytest.mark.parametrize("key", [s.key for s in SCHEMES])
def test_availability_partition_keeps_the_coordinator_on_the_majority_side(key: str) -> None:
    item = scheme(key)
    nodes = get_protocol(item.spec).default_nodes
    schedule = partition_schedule(item, nodes, 3000)
    (cut,) = schedule.events
    cut_off = {a for a, b in cut.links if b == 1 or b == CLIENT_ID_BASE}
    assert cut_off == {*item.minority, CLIENT_ID_BASE + 2, CLIENT_ID_BASE + 3}
    assert len(item.minority) < nodes / 2
    coordinator = max(range(1, nodes + 1)) if item.kind == "chain" else 1
    assert coordinator not in item.minority


def test_unknown_scheme_is_refused_with_the_valid_names() -> None:
    with pytest.raises(ValueError, match="unknown scheme 'nope'; valid: primary-backup"):
        scheme("nope")


def test_cli_table_writes_the_document_and_json(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text(DOC, encoding="utf-8")
    out = tmp_path / "m.json"
    result = CliRunner().invoke(cli, ["consistency", "table", "--seeds", "1..1", "--scheme",
                                      "chain", "--write-doc", str(doc), "--json", str(out)])
    assert result.exit_code == 0, result.output
    text = doc.read_text(encoding="utf-8")
    assert "| chain (`chain-register`, `all,slow`) | held (1/1) | held (1/1)" in text
    assert "--scheme chain" in text and "load average" in text
    assert '"chain"' in out.read_text(encoding="utf-8")


@pytest.mark.parametrize(("args", "message"), [
    (["table", "--seeds", "5..1"], "start 5 is after end 1"),
    (["table", "--seeds", "1..1", "--jobs", "0"], "--jobs must be between"),
    (["table", "--seeds", "1..1", "--write-doc", "/nonexistent/x.md"], "no such file"),
])
def test_cli_bad_input_is_a_one_line_error(args: list[str], message: str) -> None:
    result = CliRunner().invoke(cli, ["consistency", *args])
    assert result.exit_code == 2
    assert message in result.output


def test_cli_seed_shows_the_counterexample_and_exits_1() -> None:
    result = CliRunner().invoke(cli, ["consistency", "seed", "dynamo-norepair-noae", "--seed",
                                      "1", "--model", "convergent"])
    assert result.exit_code == 1, result.output
    assert "convergent: violated" in result.output and "divergent" in result.output
    fine = CliRunner().invoke(cli, ["consistency", "seed", "chain", "--seed", "1", "--model",
                                    "linearizable"])
    assert fine.exit_code == 0, fine.output
    assert "linearizable: held" in fine.output


def test_operations_after_an_info_one_form_a_new_session() -> None:
    c = CLIENT_ID_BASE
    history = [
        HistoryEvent(c, "invoke", "put", "1", "a", 1),
        HistoryEvent(c, "info", "put", "1", "a", 2),
        HistoryEvent(c, "invoke", "get", None, "a", 3),
        HistoryEvent(c, "ok", "get", "", "a", 4),
        HistoryEvent(c + 1, "invoke", "get", None, "a", 5),
        HistoryEvent(c + 1, "ok", "get", "1", "a", 6),
    ]
    split = split_sessions(history)
    assert [e.process for e in split] == [c, c, c + SESSION_STRIDE, c + SESSION_STRIDE,
                                          c + 1, c + 1]
    assert [(e.type, e.f, e.value, e.key, e.time) for e in split] == \
        [(e.type, e.f, e.value, e.key, e.time) for e in history]


def test_final_reads_wait_for_quiescence() -> None:
    """Must fail without the wait: chain seed 29 ends (its own liveness reached) while a
    replica still lacks the last write; waiting for quiescence the replicas agree."""
    item = scheme("chain")
    spec = get_protocol(item.spec)
    config = SimConfig(seed=29, faults=parse_faults(item.faults))
    hasty = Simulation(spec, config)
    history = hasty.run().history
    verdict, detail = check_model(history, final_reads(item, hasty, history), "convergent", "")
    assert verdict == VIOLATED and "divergent" in detail
    patient = Simulation(quiescent(spec, item), config)
    result = patient.run()
    assert result.violation is None
    finals = final_reads(item, patient, result.history)
    assert check_model(result.history, finals, "convergent", "") == (HELD, "")


def test_sessions_are_split_before_checking_causality() -> None:
    """Must fail without the split: CRAQ seed 5 is linearizable, but a client went on after
    an ``info`` put that took effect later, and in one session that reads as a causal cycle."""
    item = scheme("craq")
    config = SimConfig(seed=5, faults=parse_faults(item.faults))
    history = Simulation(get_protocol(item.spec), config).run().history
    assert check_model(history, [], "linearizable", "")[0] == HELD
    assert check_model(history, [], "causal", "")[0] == VIOLATED
    assert check_model(split_sessions(history), [], "causal", "") == (HELD, "")


def test_cli_plot_draws_from_saved_json_and_refuses_other_files(tmp_path: Path) -> None:
    saved = tmp_path / "m.json"
    saved.write_text(json.dumps(aggregate([_outcome(1, HELD)]).to_json()), encoding="utf-8")
    result = CliRunner().invoke(cli, ["consistency", "plot", "--json", str(saved), "--plots",
                                      str(tmp_path)])
    assert result.exit_code == 0, result.output
    for name in ("consistency-latency.png", "consistency-availability.png"):
        assert (tmp_path / name).read_bytes().startswith(b"\x89PNG")
    other = tmp_path / "other.json"
    other.write_text('{"x": 1}', encoding="utf-8")
    bad = CliRunner().invoke(cli, ["consistency", "plot", "--json", str(other), "--plots",
                                   str(tmp_path)])
    assert bad.exit_code == 2 and "not a `pnyx consistency table --json` file" in bad.output

"""``pnyx check --consistency``: model selection, verdicts, exit codes, JSON and HTML."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from pnyx.cli.main import cli
from tests.check.helpers import LOCAL_HISTORIES

SEP = LOCAL_HISTORIES / "consistency"
SEQ_NOT_LIN = str(SEP / "sequential-not-linearizable.jsonl")
CAUSAL_NOT_SEQ = str(SEP / "causal-not-sequential.jsonl")
CONV_NOT_CAUSAL = str(SEP / "convergent-not-causal.jsonl")


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["check", *args])
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize(("file", "consistency", "code"), [
    (SEQ_NOT_LIN, "linearizable", 1),
    (SEQ_NOT_LIN, "sequential", 0),
    (CAUSAL_NOT_SEQ, "sequential", 1),
    (CAUSAL_NOT_SEQ, "causal", 0),
    (CONV_NOT_CAUSAL, "causal", 1),
    (CONV_NOT_CAUSAL, "convergent", 0),
    (CONV_NOT_CAUSAL, "monotonic-writes", 1),
    (CONV_NOT_CAUSAL, "read-your-writes", 0),
])
def test_separating_histories_by_model(file: str, consistency: str, code: int) -> None:
    exit_code, out, _ = run(file, "--model", "register", "--consistency", consistency)
    assert exit_code == code
    verdict = consistency if code == 0 else f"not-{consistency}"
    assert f": {verdict} (" in out


def test_violation_text_names_the_pattern() -> None:
    code, out, _ = run(CONV_NOT_CAUSAL, "--model", "register", "--consistency", "causal")
    assert code == 1 and "WriteCOInitRead:" in out and "-rf->" in out


def test_default_stays_linearizability_and_serializability() -> None:
    code, out, _ = run(SEQ_NOT_LIN, "--model", "register")
    assert code == 1 and "not-linearizable" in out
    code, out, _ = run(str(LOCAL_HISTORIES / "la-g2.edn"), "--model", "list-append",
                       "--format", "edn")
    assert code == 1 and "G2-item" in out


def test_snapshot_isolation_on_transactions() -> None:
    g2 = str(LOCAL_HISTORIES / "la-g2.edn")
    code, out, _ = run(g2, "--model", "list-append", "--format", "edn",
                       "--consistency", "snapshot-isolation")
    assert code == 0 and "snapshot-isolation (" in out
    assert "allowed by snapshot-isolation: write-skew" in out
    code, out, _ = run(str(LOCAL_HISTORIES / "la-g1c.edn"), "--model", "list-append",
                       "--format", "edn", "--consistency", "snapshot-isolation", "--json")
    record = json.loads(out)
    assert code == 1 and record["verdict"] == "not-snapshot-isolation"
    assert [v["name"] for v in record["violations"]] == ["G1c"]


@pytest.mark.parametrize(("model", "consistency", "needle"), [
    ("cas-register", "causal", "--model register or kv"),
    ("register", "snapshot-isolation", "checks transactions"),
    ("list-append", "linearizable", "holds transactions"),
])
def test_mismatched_model_and_consistency_exit_two(model: str, consistency: str,
                                                   needle: str) -> None:
    code, _, err = run(SEQ_NOT_LIN, "--model", model, "--consistency", consistency)
    assert code == 2 and needle in err


def test_unreadable_history_exits_two_with_the_operation(tmp_path: Path) -> None:
    bad = tmp_path / "dup.jsonl"
    bad.write_text("\n".join(json.dumps(e) for e in [
        {"process": 0, "type": "invoke", "f": "write", "key": "x", "value": 1},
        {"process": 0, "type": "ok", "f": "write", "key": "x", "value": 1},
        {"process": 1, "type": "invoke", "f": "write", "key": "x", "value": 1},
        {"process": 1, "type": "ok", "f": "write", "key": "x", "value": 1}]) + "\n")
    code, _, err = run(str(bad), "--model", "register", "--consistency", "causal")
    assert code == 2 and "both write 1" in err


def test_json_and_html_report(tmp_path: Path) -> None:
    target = tmp_path / "r.html"
    code, out, _ = run(CAUSAL_NOT_SEQ, "--model", "register", "--consistency", "sequential",
                       "--json", "--html", str(target))
    record = json.loads(out)
    assert code == 1 and record["consistency"] == "sequential"
    assert sorted(record["violations"][0]["operations"]) == [0, 1, 2, 3]
    page = target.read_text()
    assert page.startswith("<!doctype html>") and page.count("<g class='bad'>") == 4
    assert "http" not in page.replace("http://www.w3.org/2000/svg", ""), "self-contained"


def test_kv_model_reads_gets_and_puts_with_empty_initial_value(tmp_path: Path) -> None:
    f = tmp_path / "kv.jsonl"
    f.write_text("\n".join(json.dumps(e) for e in [
        {"process": 0, "type": "invoke", "f": "put", "key": "x", "value": "a"},
        {"process": 0, "type": "ok", "f": "put", "key": "x", "value": "a"},
        {"process": 0, "type": "invoke", "f": "get", "key": "x"},
        {"process": 0, "type": "ok", "f": "get", "key": "x", "value": ""}]) + "\n")
    code, out, _ = run(str(f), "--model", "kv", "--consistency", "read-your-writes")
    assert code == 1 and "got the initial value" in out

"""``pnyx check``: verdicts, JSON lines, HTML, exit codes and bad-input messages."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from pnyx.cli.main import cli
from tests.check.helpers import LOCAL_HISTORIES, SHARED_HISTORIES

ETCD = SHARED_HISTORIES / "etcd-jepsen"
KV = SHARED_HISTORIES / "kv"


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["check", *args])
    return result.exit_code, result.stdout, result.stderr


def test_linearizable_file_exits_zero() -> None:
    code, out, _ = run(str(ETCD / "etcd_002.log"), "--model", "cas-register",
                       "--format", "jepsen")
    assert code == 0
    assert "etcd_002.log: linearizable (" in out


def test_violation_exits_one_with_explanation() -> None:
    code, out, _ = run(str(KV / "c01-ok.txt"), str(KV / "c01-bad.txt"), "--model", "kv",
                       "--format", "edn")
    assert code == 1
    assert "c01-ok.txt: linearizable" in out and "c01-bad.txt: not-linearizable" in out
    assert "longest linearizable prefix" in out and "none of these can take effect" in out


def test_json_lines_one_per_file() -> None:
    files = [str(ETCD / f"etcd_00{i}.log") for i in range(4)]
    code, out, _ = run(*files, "--model", "cas-register", "--format", "jepsen", "--json")
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["file"] for r in records] == files
    assert [r["verdict"] for r in records] == ["not-linearizable", "not-linearizable",
                                               "linearizable", "not-linearizable"]
    assert all(r["elapsed_s"] >= 0 for r in records)
    assert code == 1


def test_html_timeline_is_written(tmp_path: Path) -> None:
    target = tmp_path / "out.html"
    code, _, _ = run(str(KV / "c01-bad.txt"), "--model", "kv", "--format", "edn",
                     "--html", str(target))
    page = target.read_text()
    assert code == 1
    assert page.startswith("<!doctype html>") and "<svg" in page
    assert "class='bad'" in page and "line x1=" in page and "could not be placed" in page
    assert "http" not in page.replace("http://www.w3.org/2000/svg", ""), "self-contained"


def test_html_for_several_files_gets_one_page_each(tmp_path: Path) -> None:
    target = tmp_path / "t.html"
    run(str(KV / "c01-bad.txt"), str(KV / "c01-ok.txt"), "--model", "kv", "--format", "edn",
        "--html", str(target))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t-c01-bad.html", "t-c01-ok.html"]


def test_serializability_models() -> None:
    code, out, _ = run(str(LOCAL_HISTORIES / "la-g1c.edn"), "--model", "list-append",
                       "--format", "edn", "--json")
    record = json.loads(out)
    assert (code, record["verdict"]) == (1, "G1c")
    assert record["anomalies"][0]["name"] == "G1c"
    code, out, _ = run(str(LOCAL_HISTORIES / "rw-clean.edn"), "--model", "rw-register",
                       "--format", "edn")
    assert code == 0 and "serializable" in out


def test_malformed_line_exits_two_naming_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"process": 0, "type": "invoke", "f": "read"}\n{"process": x}\n')
    code, _, err = run(str(bad), "--model", "register")
    assert code == 2
    assert f"{bad}:2:" in err


def test_unknown_model_or_format_or_missing_file_exits_two(tmp_path: Path) -> None:
    code, _, err = run(str(KV / "c01-ok.txt"), "--model", "btree", "--format", "edn")
    assert code == 2 and "'btree' is not one of" in err and "cas-register" in err
    code, _, err = run(str(KV / "c01-ok.txt"), "--model", "kv", "--format", "xml")
    assert code == 2 and "'xml' is not one of" in err
    code, _, err = run(str(tmp_path / "nope.log"), "--model", "kv")
    assert code == 2 and "nope.log" in err


def test_wrong_model_for_the_operations_exits_two() -> None:
    code, _, err = run(str(ETCD / "etcd_000.log"), "--model", "set", "--format", "jepsen")
    assert code == 2 and "etcd_000.log" in err and "use one of add, read" in err


def test_timeout_gives_unknown() -> None:
    code, out, _ = run(str(KV / "c10-bad.txt"), "--model", "kv", "--format", "edn",
                       "--no-split", "--timeout", "0", "--json")
    assert json.loads(out)["verdict"] == "unknown"
    assert code == 3


def test_workers_across_files_give_the_same_verdicts() -> None:
    files = [str(ETCD / f"etcd_00{i}.log") for i in range(4)]
    _, one, _ = run(*files, "--model", "cas-register", "--format", "jepsen", "--json")
    _, two, _ = run(*files, "--model", "cas-register", "--format", "jepsen", "--json",
                    "--workers", "2")
    verdicts = [[json.loads(line)["verdict"] for line in out.splitlines()] for out in (one, two)]
    assert verdicts[0] == verdicts[1]


def test_rw_register_and_process_order() -> None:
    session = str(LOCAL_HISTORIES / "rw-session.edn")
    code, out, _ = run(session, "--model", "rw-register", "--format", "edn")
    assert code == 0 and "rw-session.edn: serializable" in out
    code, out, _ = run(session, "--model", "rw-register", "--format", "edn", "--process-order",
                       "--json")
    record = json.loads(out)
    assert (code, record["verdict"], record["process_order"]) == (1, "G-single-process", True)
    assert "T2 (p0) -process-> T3 (p0)" in record["anomalies"][0]["explanation"]
    code, out, _ = run(str(LOCAL_HISTORIES / "rw-gsingle.edn"), "--model", "rw-register",
                       "--format", "edn")
    assert code == 1 and "G-single" in out and "-rw->" in out and "-wr->" in out

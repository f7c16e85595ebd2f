"""EDN parsing, the three history formats, and pairing events into operations."""

from __future__ import annotations

from pathlib import Path

import pytest

from pnyx.check import History, HistoryError, dumps_jsonl, parse_history, read_history
from pnyx.check.edn import EdnError, Keyword, loads
from pnyx.core.history import HistoryEvent
from tests.check.helpers import SHARED_HISTORIES


@pytest.mark.parametrize(("text", "value"), [
    ("nil", None), ("true", True), ("false", False), ("42", 42), ("-7", -7), ("3.5", 3.5),
    ("12N", 12), ('"a \\"b\\"\\n"', 'a "b"\n'), (":timed-out", Keyword("timed-out")),
    ("[0 3]", [0, 3]), ("(1, 2)", [1, 2]), ("#{1 2}", frozenset({1, 2})),
    ('{:a 1, "b" [nil]}', {Keyword("a"): 1, "b": [None]}), ("[] ; comment", []),
])
def test_edn_values(text: str, value: object) -> None:
    assert loads(text) == value


@pytest.mark.parametrize("text", [
    "foo", "#inst \"2020\"", "[1 2", "{:a}", "1_000", '"open', ":", "\\c", "[1] 2", "}",
])
def test_edn_rejects_what_it_does_not_understand(text: str) -> None:
    with pytest.raises(EdnError, match="column"):
        loads(text)


def test_keyword_prints_with_colon_and_equals_its_name() -> None:
    assert repr(Keyword("ok")) == ":ok" and Keyword("ok") == "ok"


def test_jepsen_log_lines() -> None:
    lines = ["noise line", "INFO  jepsen.util - 3\t:invoke\t:cas\t[0 3]",
             "INFO  jepsen.util - :nemesis\t:info\t:start\tnil",
             "INFO  jepsen.util - 3\t:fail\t:cas\t[0 3]",
             "INFO  jepsen.util - 1\t:invoke\t:write\t4"]
    history = parse_history(lines, "jepsen")
    cas, write = history.operations
    assert (cas.f, cas.value, cas.outcome, cas.process) == ("cas", (0, 3), "fail", 3)
    assert (write.outcome, write.ret) == ("info", None), "an open operation is info"


def test_edn_maps_with_time_and_unknown_fields() -> None:
    lines = ['{:process 0, :type :invoke, :f :get, :key "4", :value nil, :time 5, :index 0}',
             '{:process 0, :type :ok, :f :get, :key "4", :value "x", :time 9}']
    (op,) = parse_history(lines, "edn").operations
    assert (op.f, op.key, op.output, op.call_time, op.ret_time) == ("get", "4", "x", 5, 9)


def test_jsonl_round_trip_keeps_operations() -> None:
    events = [HistoryEvent(0, "invoke", "put", [1, 2], "k"), HistoryEvent(1, "invoke", "get"),
              HistoryEvent(0, "ok", "put", [1, 2], "k"), HistoryEvent(1, "ok", "get", 7)]
    history = History.from_events(events)
    again = parse_history(dumps_jsonl(history.to_events()).splitlines(), "jsonl")
    assert again.operations == history.operations
    assert history.operations[0].value == (1, 2), "lists are frozen to tuples"


@pytest.mark.parametrize(("fmt", "lines", "line", "fragment"), [
    ("jsonl", ['{"process": 0, "type": "invoke", "f": "r"}', "{oops"], 2, "JSON"),
    ("jsonl", ['{"process": 0, "type": "begin", "f": "r"}'], 1, "'begin'"),
    ("jsonl", ['{"process": 0, "type": "invoke", "f": "r", "color": 1}'], 1, "color"),
    ("edn", ["{:process 0, :type :invoke, :f :r}", "{:process 0 :type}"], 2, "even number"),
    ("edn", ['{:process "a", :type :invoke, :f :r}'], 1, ":process must be an integer"),
    ("edn", ["[1 2]"], 1, "expected an EDN map"),
    ("jepsen", ["INFO  jepsen.util - 1\t:invoke\t:read\tfoo"], 1, "unsupported token"),
    ("jepsen", ["INFO  jepsen.util - 1\t:invoke"], 1, "expected 'process"),
    ("jepsen", ["INFO  jepsen.util - 1\t:ok\t:read\t3"], 1, "without an invocation"),
    ("jepsen", ["INFO  jepsen.util - 1\t:invoke\t:read\tnil",
                "INFO  jepsen.util - 1\t:invoke\t:read\tnil"], 2, "still open"),
    ("jepsen", ["INFO  jepsen.util - 1\t:invoke\t:read\tnil",
                "INFO  jepsen.util - 1\t:ok\t:write\t1"], 2, "invoked 'read'"),
])
def test_malformed_input_names_source_and_line(fmt: str, lines: list[str], line: int,
                                               fragment: str) -> None:
    with pytest.raises(HistoryError) as info:
        parse_history(lines, fmt, source="h.txt")
    assert info.value.line == line
    assert str(info.value).startswith(f"h.txt:{line}: ")
    assert fragment in str(info.value)


def test_unknown_format_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(HistoryError, match="unknown format 'xml'"):
        read_history(tmp_path / "x", "xml")
    with pytest.raises(HistoryError, match="cannot read"):
        read_history(tmp_path / "missing.log", "jepsen")


def test_reference_files_parse_completely() -> None:
    history = read_history(SHARED_HISTORIES / "kv" / "c01-ok.txt", "edn")
    assert len(history) == 58 and all(op.outcome == "ok" for op in history)
    etcd = read_history(SHARED_HISTORIES / "etcd-jepsen" / "etcd_000.log", "jepsen")
    assert {op.outcome for op in etcd} == {"ok", "fail", "info"}
    assert [op.index for op in etcd] == list(range(len(etcd)))


def test_from_events_orders_by_time_when_given() -> None:
    events = [HistoryEvent(1, "invoke", "w", 1, time=10), HistoryEvent(0, "invoke", "r", time=1),
              HistoryEvent(0, "ok", "r", None, time=5), HistoryEvent(1, "ok", "w", 1, time=20)]
    read, write = History.from_events(events).operations
    assert (read.f, write.f) == ("r", "w")
    assert read.ret is not None and read.ret < write.call, "read finished before write began"

"""EDN parsing, the three history formats, and pairing events into operations."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from unittest.mock import patch

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pnyx.check import History, HistoryError, dumps_jsonl, formats, parse_history, read_history
from pnyx.check.edn import EdnError, Keyword, loads
from pnyx.core.history import HistoryEvent
from tests.check.helpers import LOCAL_HISTORIES, SHARED_HISTORIES


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


# --- liberal layouts, strict meaning ---------------------------------------------------------

FORMAT_FIXTURES = LOCAL_HISTORIES / "formats"
_FORMAT_OF = {".log": "jepsen", ".edn": "edn", ".jsonl": "jsonl"}


def _ops(history: History) -> list[tuple[object, ...]]:
    return [(op.process, op.f, op.value, op.output, op.outcome, op.call, op.ret)
            for op in history.operations]


def _canonical(suffix: str) -> list[tuple[object, ...]]:
    return _ops(read_history(FORMAT_FIXTURES / f"canonical{suffix}", _FORMAT_OF[suffix]))


def test_canonical_fixtures_hold_the_expected_history() -> None:
    assert _canonical(".log") == _canonical(".edn") == [
        (0, "read", None, 3, "ok", 0, 2),
        (1, "write", -2, -2, "ok", 1, 4),
        (2, "cas", (0, 3), None, "fail", 3, 5),
        (3, "read", None, None, "info", 6, 7),
        (4, "add", frozenset({1, 2}), frozenset({1, 2}), "ok", 8, 9),
        (0, "write", "a b", "a b", "ok", 10, 11),
        (5, "txn", (("append", "x", 1), ("r", "y", None)), None, "info", 12, None),
    ]
    assert [op[:2] for op in _canonical(".jsonl")] == [op[:2] for op in _canonical(".edn")]


@pytest.mark.parametrize("name", sorted(p.name for p in FORMAT_FIXTURES.iterdir()
                                        if p.suffix in _FORMAT_OF))
def test_every_layout_reads_as_the_canonical_history(name: str) -> None:
    path = FORMAT_FIXTURES / name
    assert _ops(read_history(path, _FORMAT_OF[path.suffix])) == _canonical(path.suffix)


def test_lines_given_with_crlf_and_bom_read_like_the_file() -> None:
    lines = (FORMAT_FIXTURES / "canonical.log").read_text().splitlines()
    crlf = ["\ufeff" + lines[0] + "\r"] + [line + "\r" for line in lines[1:]]
    assert _ops(parse_history(crlf, "jepsen")) == _canonical(".log")


@pytest.mark.parametrize("line", [
    "INFO  jepsen.util - 1   :invoke :write  3",
    "INFO  jepsen.util - 1\t \t:invoke  :write\t3 \t ",
    "2017-03-05 12:00:01,234{GMT}\tINFO\t[jepsen worker 1] jepsen.util: 1\t:invoke\t:write\t3",
    "INFO [2017-03-05 12:00:01,234] jepsen worker 1 - jepsen.util - 1 :invoke :write 3",
    "INFO  jepsen.util - 1\t:invoke\t:write\t3\t[:some-error \"with spaces\"]",
])
def test_jepsen_line_variations(line: str) -> None:
    (op,) = parse_history([line], "jepsen").operations
    assert (op.process, op.f, op.value, op.outcome) == (1, "write", 3, "info")


@pytest.mark.parametrize(("value", "parsed"), [
    ("[0 3]", (0, 3)), ("[0, 3]", (0, 3)), ("[ 0  3 ]", (0, 3)), ("nil", None),
    (":timed-out", "timed-out"), ('"a, b [c]"', "a, b [c]"), ("-12", -12),
    ("#{1 2}", frozenset({1, 2})), ('{"n1" [1 2]}', (("n1", (1, 2)),)),
    ("[[1 [2]] []]", ((1, (2,)), ())),
])
def test_jepsen_values_are_edn(value: str, parsed: object) -> None:
    for sep in ("\t", "  "):
        (op,) = parse_history([f"INFO  jepsen.util - 2{sep}:invoke{sep}:w{sep}{value}"],
                              "jepsen").operations
        assert op.value == parsed


def test_jepsen_nemesis_and_other_messages_are_skipped() -> None:
    lines = ["INFO  jepsen.util - :nemesis\t:info\t:start\t#object[Thing 0x1 \"odd\"]",
             "INFO  jepsen.util - :nemesis :info :stop {\"n1\" :healed}",
             "INFO  jepsen.util: Waiting for nodes", "INFO  jepsen.utils - 1 :ok :read 2",
             "INFO  jepsen.util - 1 :invoke :read nil"]
    (op,) = parse_history(lines, "jepsen").operations
    assert (op.process, op.f, op.outcome) == (1, "read", "info")


@pytest.mark.parametrize("lines", [
    ["{:type :invoke :f :read :process 0 :value nil}", "{:process 0 :value 3 :type :ok :f :read}"],
    ["{:process 0, :type :invoke, :f :read, :value nil, :index 0, :time 1, :extra #{[1 2]}}",
     "{:process 0, :type :ok, :f :read, :value 3, :error {:nested [1 {:a :b}]}, :time 2}"],
    ["[{:process 0, :type :invoke, :f :read}", "{:process 0, :type :ok, :f :read, :value 3}]"],
    ["({:process 0, :type :invoke, :f :read} {:process 0, :type :ok, :f :read, :value 3})"],
    ["{:process 0,", " :type :invoke, ; comment", " :f :read}", "", "; between",
     "{:process 0", " :type :ok :f :read :value 3}"],
    ["#jepsen.history.Op{:index 0, :type :invoke, :process 0, :f :read, :value nil}",
     "#jepsen.history.Op{:index 1, :type :ok, :process 0, :f :read, :value 3}"],
    ["{:process 0, :type :invoke, :f :read, :value nil}", "  ",
     "{:process :nemesis, :type :info, :f :kill, :value #{\"n1\"}}",
     "{:process 0, :type :ok, :f :read, :value 3}  "],
])
def test_edn_layout_variations(lines: list[str]) -> None:
    (op,) = parse_history(lines, "edn").operations
    assert (op.process, op.f, op.value, op.output, op.outcome) == (0, "read", None, 3, "ok")


@pytest.mark.parametrize(("fmt", "lines", "line", "fragment"), [
    ("jepsen", ["INFO jepsen.util - 1 :invoke :read nil", "INFO jepsen.util - 1  :ok :read foo"],
     2, "unsupported token 'foo'"),
    ("jepsen", ["INFO jepsen.util - 1 :begin :read nil"], 1, ":begin is not one of"),
    ("jepsen", ["INFO jepsen.util - 1 :invoke :read [0 3]]"], 1, "expected whitespace"),
    ("jepsen", ["INFO jepsen.util - 1 :invoke :read [0 3"], 1, "never closed"),
    ("jepsen", ["", "INFO jepsen.util: 1 :invoke"], 2, "expected 'process"),
    ("jepsen", ["INFO jepsen.util - 1.5 :invoke :read nil"], 1, "integer"),
    ("jepsen", ["INFO  jepsen.util - 0\t:invoke\t:read\tnil", "INFO  jepsen.util - :nemesis\t:x",
                "INFO  jepsen.util - 0\t:invoke\t:read\tfoo"], 3, "column 37: unsupported"),
    ("jepsen", ["INFO jepsen.util - 1 :invoke \"read\"x nil"], 1, "whitespace"),
    ("edn", ["{:process 0, :type :invoke, :f :r}", "{:process 0, :type :invoke, :f :r",
             "{:process 1, :type :invoke, :f :r}"], 2, "never closed"),
    ("edn", ["{:process 0,", " :type :invoke,", " :f :r, :value foo}"], 3, "unsupported token"),
    ("edn", ["{:process 0, :type :begin, :f :r}"], 1, ":begin is not one of"),
    ("edn", ["{:process 0, :type :invoke, :f :r, :value #inst \"2020\"}"], 1, "tagged literal"),
    ("edn", ["[{:process 0, :type :invoke, :f :r}", "{:process 1, :type :invoke, :f :r}"], 1,
     "never closed"),
    ("edn", ["{:process 0, :type :invoke, :f :r}", "", "[{:process 1, :type :invoke, :f :r} 7]"],
     3, "got 7"),
    ("edn", ["{:process 0, :type :invoke, :f :r, :time 1.5}"], 1, ":time must be an integer"),
    ("edn", ["{:process 0, :type :invoke, :f :r}", "{:process 0, :type :ok, :f :r}}"], 2,
     "unbalanced"),
    ("edn", ['{:process 0, :type :invoke, :f :r, :value "a\\qb"}'], 1, "escape"),
    ("jsonl", ["", '  {"process": 0, "type": "invoke", "f": "r"}  ', '{"process": 0,'], 3, "JSON"),
])
def test_malformed_variations_name_the_line(fmt: str, lines: list[str], line: int,
                                             fragment: str) -> None:
    with pytest.raises(HistoryError) as info:
        parse_history(lines, fmt, source="h.txt")
    assert (info.value.line, str(info.value)[:len(f"h.txt:{line}: ")]) == (line, f"h.txt:{line}: ")
    assert fragment in str(info.value)


def test_malformed_file_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "h.edn"
    path.write_bytes(b"\xef\xbb\xbf{:process 0, :type :invoke, :f :r}\r\n\r\n"
                     b"{:process 0, :type :ok, :f :r, :value [1 2}\r\n")
    with pytest.raises(HistoryError, match=rf"^{re.escape(str(path))}:3: malformed EDN"):
        read_history(path, "edn")


def test_record_literals_and_unicode_escapes() -> None:
    assert loads('#jepsen.history.Op{:f :r, :value "\\u00e9"}') == {Keyword("f"): Keyword("r"),
                                                                    Keyword("value"): "é"}


# --- the fast paths agree with the general readers -------------------------------------------

_ATOMS = st.sampled_from(["nil", "0", "-3", "42", "1.5", "7N", ":kw", ":nil", ":a-nil", '"s"',
                          '"a, :b [c] {d}"', '""', "true", '"x 1 y"', "#{1 2}", '{:k "v"}',
                          '"\\"q\\""', ":invoke", "[1 [2 [3 [4]]]]", "1", "2"] * 4
                         + ["foo", "#inst \"2020\"", "1_0", "[1"])
_VALUES = st.recursive(_ATOMS, lambda inner: st.lists(inner, max_size=3).map(
    lambda items: "[" + " ".join(items) + "]"), max_leaves=6)
_KINDS = st.sampled_from([":invoke"] * 8 + [":ok", ":fail", ":info", ":begin", '"ok"', "nil"])
_PROCS = st.one_of(st.integers(-5, 10**6).map(str),
                   st.sampled_from(["0", ":nemesis", '"p"', "1.5", "true"]))
_FNAMES = st.sampled_from([":read", ":write", '"cas"', "nil", "3"])


@st.composite
def _edn_line(draw: st.DrawFn, shuffle: bool) -> str:
    pairs = [(":process", draw(_PROCS)), (":type", draw(_KINDS)), (":f", draw(_FNAMES)),
             (":value", draw(_VALUES))]
    pairs += draw(st.lists(st.tuples(st.sampled_from([":key", ":time", ":index", ":error"]),
                                     _VALUES), max_size=2))
    order = draw(st.permutations(pairs)) if shuffle else pairs
    sep = draw(st.sampled_from([", ", " ", ",", " ,  "]))
    body = sep.join(f"{k} {v}" for k, v in order)
    return draw(st.sampled_from(["", "  "])) + "{" + body + "}" + draw(st.sampled_from(["", " "]))


def _outcome(read: Callable[[], History]) -> object:
    try:
        return _ops(read())
    except HistoryError as exc:
        return ("error", exc.line, exc.reason)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.booleans().flatmap(lambda shuffle: st.lists(_edn_line(shuffle), min_size=1,
                                                       max_size=8)))
def test_edn_fast_path_agrees_with_the_general_reader(lines: list[str]) -> None:
    fast = _outcome(lambda: parse_history(lines, "edn"))
    with patch.object(formats, "_edn_line_pattern", lambda text: None):
        assert _outcome(lambda: parse_history(lines, "edn")) == fast


@st.composite
def _jepsen_line(draw: st.DrawFn) -> str:
    sep = draw(st.sampled_from(["\t", " ", "   ", " \t"]))
    fields = [draw(_PROCS), draw(_KINDS), draw(_FNAMES), draw(_VALUES)]
    prefix = draw(st.sampled_from(["INFO  jepsen.util - ", "x\tINFO\t[w 1] jepsen.util: "]))
    return prefix + sep.join(fields) + draw(st.sampled_from(["", " ", "\t:error"]))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_jepsen_line(), min_size=1, max_size=6))
def test_jepsen_fast_path_agrees_with_the_line_reader(lines: list[str]) -> None:
    fast = _outcome(lambda: parse_history(lines, "jepsen"))
    never = formats._LinePattern(re.compile("(?!)()()()()"), (0, 1, 2, 3, -1, -1))
    with patch.object(formats, "_JEPSEN_LINE", never):
        assert _outcome(lambda: parse_history(lines, "jepsen")) == fast

"""Readers for pnyx JSON-lines, Jepsen log lines and Jepsen EDN maps; a JSON-lines writer."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import msgspec

from pnyx.check.edn import EdnError, Keyword
from pnyx.check.edn import loads as edn_loads
from pnyx.check.history import History, HistoryError, freeze
from pnyx.core.history import HistoryEvent

FORMATS: tuple[str, ...] = ("jepsen", "edn", "jsonl")
_TYPES = frozenset(("invoke", "ok", "fail", "info"))
_JEPSEN_MARK = "jepsen.util - "


class _JsonEvent(msgspec.Struct, forbid_unknown_fields=True):
    process: int
    type: str
    f: str
    value: Any = None
    key: Any = None
    time: int = 0


_JSON_DECODER = msgspec.json.Decoder(_JsonEvent)


def read_history(path: str | Path, fmt: str) -> History:
    """Read a history file in format ``jepsen``, ``edn`` or ``jsonl``.

    Raises :class:`HistoryError` (naming the file and line) for unreadable or malformed input.
    """
    if fmt not in FORMATS:
        raise HistoryError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise HistoryError(f"cannot read the file: {exc}", source=source) from None
    return parse_history(text.splitlines(), fmt, source)


def parse_history(lines: Sequence[str], fmt: str, source: str = "") -> History:
    """Parse the lines of a history in format ``jepsen``, ``edn`` or ``jsonl``."""
    parser = {"jepsen": _jepsen_events, "edn": _edn_events, "jsonl": _jsonl_events}.get(fmt)
    if parser is None:
        raise HistoryError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    events: list[HistoryEvent] = []
    line_numbers: list[int] = []
    for number, event in parser(lines, source):
        events.append(event)
        line_numbers.append(number)
    return History.from_events(events, source, line_numbers)


def dumps_jsonl(events: Iterable[HistoryEvent]) -> str:
    """Encode events in pnyx JSON-lines (one object per line, fields as HistoryEvent)."""
    enc = msgspec.json.Encoder()
    out = []
    for ev in events:
        obj = _JsonEvent(ev.process, ev.type, ev.f, _plain(ev.value), _plain(ev.key), ev.time)
        out.append(enc.encode(obj).decode())
    return "\n".join(out) + ("\n" if out else "")


def write_jsonl(history: History | Sequence[HistoryEvent], path: str | Path) -> None:
    """Write a history (or raw events) to ``path`` in pnyx JSON-lines."""
    events = history.to_events() if isinstance(history, History) else history
    Path(path).write_text(dumps_jsonl(events), encoding="utf-8")


def _plain(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, frozenset | set):
        return sorted((_plain(v) for v in value), key=repr)
    return value


def _jsonl_events(lines: Sequence[str], source: str) -> Iterable[tuple[int, HistoryEvent]]:
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            ev = _JSON_DECODER.decode(line)
        except msgspec.DecodeError as exc:
            raise HistoryError(f"not a pnyx JSON-lines event ({exc}); expected "
                               '{"process": int, "type": ..., "f": ..., "value": ...}',
                               source=source, line=number) from None
        _check_type(ev.type, source, number)
        yield number, HistoryEvent(ev.process, ev.type, ev.f, ev.value, ev.key,  # type: ignore[arg-type]
                                   ev.time)


def _check_type(kind: str, source: str, number: int) -> None:
    if kind not in _TYPES:
        raise HistoryError(f"event type {kind!r} is not one of invoke, ok, fail, info",
                           source=source, line=number)


def _edn(text: str, source: str, number: int) -> Any:
    try:
        return edn_loads(text)
    except EdnError as exc:
        raise HistoryError(f"malformed EDN: {exc}", source=source, line=number) from None


def _jepsen_events(lines: Sequence[str], source: str) -> Iterable[tuple[int, HistoryEvent]]:
    atoms: dict[str, Any] = {}  # field text -> parsed value: log fields repeat a lot
    for number, line in enumerate(lines, 1):
        at = line.find(_JEPSEN_MARK)
        if at < 0:
            continue
        fields = line[at + len(_JEPSEN_MARK):].split("\t")
        if len(fields) < 4:
            raise HistoryError("expected 'process<TAB>:type<TAB>:f<TAB>value' after "
                               f"'{_JEPSEN_MARK}', got {line.strip()!r}",
                               source=source, line=number)
        proc, kind, f, value = (_cached_edn(atoms, text, source, number) for text in fields[:4])
        if isinstance(proc, str):
            continue  # :nemesis and other non-client processes are not operations
        if not isinstance(proc, int) or not isinstance(kind, str) or not isinstance(f, str):
            raise HistoryError(f"expected an integer process, a :type and an :f, got {fields[:3]}",
                               source=source, line=number)
        _check_type(kind, source, number)
        yield number, HistoryEvent(proc, kind, f, value)  # type: ignore[arg-type]


def _cached_edn(cache: dict[str, Any], text: str, source: str, number: int) -> Any:
    value = cache.get(text, cache)
    if value is cache:
        value = cache[text] = freeze(_unkeyword(_edn(text, source, number)))
    return value


def _edn_events(lines: Sequence[str], source: str) -> Iterable[tuple[int, HistoryEvent]]:
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        obj = _edn(line, source, number)
        if not isinstance(obj, dict):
            raise HistoryError(f"expected an EDN map like {{:process 0, :type :invoke, ...}}, "
                               f"got {line.strip()[:40]!r}", source=source, line=number)
        event = _edn_event(obj, source, number)
        if event is not None:
            yield number, event


def _edn_event(obj: dict[Any, Any], source: str, number: int) -> HistoryEvent | None:
    proc, kind, f = obj.get(Keyword("process")), obj.get(Keyword("type")), obj.get(Keyword("f"))
    if isinstance(proc, Keyword):
        return None  # :nemesis and other non-client processes are not operations
    if not isinstance(proc, int) or isinstance(proc, bool):
        raise HistoryError(f":process must be an integer, got {proc!r}", source=source,
                           line=number)
    if not isinstance(kind, str):
        raise HistoryError(f":type must be :invoke/:ok/:fail/:info, got {kind!r}",
                           source=source, line=number)
    _check_type(kind, source, number)
    if not isinstance(f, str):
        raise HistoryError(f":f must be a keyword or string, got {f!r}", source=source,
                           line=number)
    time = obj.get(Keyword("time"), 0)
    if not isinstance(time, int):
        raise HistoryError(f":time must be an integer, got {time!r}", source=source,
                           line=number)
    value = _unkeyword(obj.get(Keyword("value")))
    key = _unkeyword(obj.get(Keyword("key")))
    return HistoryEvent(proc, str(kind), str(f), value, key, time)  # type: ignore[arg-type]


def _unkeyword(value: Any) -> Any:
    """Keywords become plain strings; collections are converted recursively."""
    if isinstance(value, Keyword):
        return str(value)
    if isinstance(value, list):
        return [_unkeyword(v) for v in value]
    if isinstance(value, frozenset):
        return frozenset(_unkeyword(v) for v in value)
    if isinstance(value, dict):
        return {_unkeyword(k): _unkeyword(v) for k, v in value.items()}
    return value

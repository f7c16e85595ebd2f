"""Readers for pnyx JSON-lines, Jepsen log lines and Jepsen EDN maps; a JSON-lines writer.

Readers are liberal in layout (any whitespace between fields, CRLF, a UTF-8 BOM, blank
lines, log prefixes, maps in any key order or spread over several lines) and strict in
meaning: whatever cannot be read as an operation is a :class:`HistoryError` naming the file
and line. See the "formats" part of docs/CHECK.md for what each reader accepts.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import msgspec

from pnyx.check.edn import EdnError, Keyword, read, skip_space
from pnyx.check.edn import loads as edn_loads
from pnyx.check.history import History, HistoryError, freeze
from pnyx.core.history import HistoryEvent

FORMATS: tuple[str, ...] = ("jepsen", "edn", "jsonl")
_TYPES = frozenset(("invoke", "ok", "fail", "info"))
_BOM = "\ufeff"

Events = tuple[list[HistoryEvent], Sequence[int]]  # events and, per event, its line number


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
    reader = _reader(fmt)
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise HistoryError(f"cannot read the file: {exc}", source=source) from None
    return _history(reader, text, source)


def parse_history(lines: Sequence[str], fmt: str, source: str = "") -> History:
    """Parse the lines of a history in format ``jepsen``, ``edn`` or ``jsonl``."""
    reader = _reader(fmt)
    return _history(reader, "\n".join(lines), source)


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


_Reader = Callable[[str, str], Events]


def _reader(fmt: str) -> _Reader:
    readers: dict[str, _Reader] = {"jepsen": _jepsen_read, "edn": _edn_read,
                                   "jsonl": _jsonl_read}
    if fmt not in readers:
        raise HistoryError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return readers[fmt]


def _history(reader: _Reader, text: str, source: str) -> History:
    if text.startswith(_BOM):
        text = text[1:]
    if "\r" in text:  # as reading a file in text mode does: CRLF and CR end lines
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    events, lines = reader(text, source)
    return History.from_events(events, source, lines)


def _plain(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, frozenset | set):
        return sorted((_plain(v) for v in value), key=repr)
    return value


def _check_type(kind: Any, source: str, number: int) -> None:
    if not isinstance(kind, str) or kind not in _TYPES:
        raise HistoryError(f"event type {kind!r} is not one of invoke, ok, fail, info",
                           source=source, line=number)


# --- pnyx JSON-lines -------------------------------------------------------------------------

def _jsonl_read(text: str, source: str) -> Events:
    events: list[HistoryEvent] = []
    numbers: list[int] = []
    for number, line in enumerate(text.split("\n"), 1):
        if not line or line.isspace():
            continue
        try:
            ev = _JSON_DECODER.decode(line)
        except msgspec.DecodeError as exc:
            raise HistoryError(f"not a pnyx JSON-lines event ({exc}); expected "
                               '{"process": int, "type": ..., "f": ..., "value": ...}',
                               source=source, line=number) from None
        _check_type(ev.type, source, number)
        events.append(HistoryEvent(ev.process, ev.type, ev.f, ev.value,  # type: ignore[arg-type]
                                   ev.key, ev.time))
        numbers.append(number)
    return events, numbers


# --- shared fast path: one regex match per line, fields converted through a cache -----------

_KEY_NAME = re.compile(r"[A-Za-z_*!?<>=+\-.][\w*!?<>=+\-./]*")
_STR = r'"[^"\\\n]*+"'
_ATOM = r'[^\s,;()\[\]{}"#\\]++'


def _vector(inner: str) -> str:
    """A vector of atoms and strings, and of vectors matching ``inner``, on one line."""
    return r'\[(?:[^\[\](){}"#;\\\n]++|' + _STR + "|" + inner + r")*+\]"


# Vectors nested two deep: deeper ones take the general reader (a deeper regex compiles slower).
_VALUE = f"({_STR}|{_ATOM}|{_vector(_vector('(?!)'))})"
_FIELDS = ("process", "type", "f", "value", "key", "time")
_CACHE_LIMIT = 1 << 16


class _ValueCache(dict[str, Any]):
    """EDN text of a value -> the value as an event holds it (keywords as str, frozen)."""

    def __init__(self) -> None:
        super().__init__(_COMMON_VALUES)

    def __missing__(self, text: str) -> Any:
        if text[0] == '"':
            value: Any = text[1:-1]
        elif _INT.fullmatch(text):
            value = int(text)
        elif _PLAIN_KEYWORD.fullmatch(text):
            value = text[1:]
        elif _INT_VECTOR.fullmatch(text):
            value = tuple(map(int, _INTS.findall(text)))
        else:
            value = freeze(_unkeyword(edn_loads(text)))
        if len(self) < _CACHE_LIMIT:
            self[text] = value
        return value


_COMMON_VALUES: dict[str, Any] = {"nil": None, "true": True, "false": False, ":invoke": "invoke",
                                  ":ok": "ok", ":fail": "fail", ":info": "info"}
_INT = re.compile(r"-?[0-9]{1,18}")
_INT_VECTOR = re.compile(r"\[[ ,]*(?:-?[0-9]{1,18}(?:[ ,]+-?[0-9]{1,18})*[ ,]*)?\]")
_INTS = re.compile(r"-?[0-9]+")
_PLAIN_KEYWORD = re.compile(r":[A-Za-z_*!?<>=+\-.][\w*!?<>=+\-./]*")


class _LinePattern:
    """A regex matching a whole line that holds one op in the usual layout.

    ``groups``: per field of ``_FIELDS`` the 0-based index of its regex group, -1 if the
    layout has no such field. Matched lines become events without the general EDN reader;
    lines that do not match (or hold a nemesis op or an error) are read in full.
    """

    def __init__(self, pattern: re.Pattern[str], groups: Sequence[int]) -> None:
        self.pattern = pattern
        self.groups = tuple(groups)

    def event(self, row: Sequence[str], values: _ValueCache) -> HistoryEvent | None:
        """The event of one matched line; None when it needs the general reader."""
        events = self.events([row], values)
        return events[0] if events else None

    def events(self, rows: Iterable[Sequence[str]],
               values: _ValueCache) -> list[HistoryEvent] | None:
        """The events of matched lines; None if one needs the general reader."""
        gp, gt, gf, gv, gk, gtime = self.groups
        out: list[HistoryEvent] = []
        append = out.append
        try:
            for row in rows:
                proc, kind, f = values[row[gp]], values[row[gt]], values[row[gf]]
                time = values[row[gtime]] if gtime >= 0 else 0
                if (type(proc) is not int or type(f) is not str or type(time) is not int
                        or kind not in _TYPES):
                    return None  # a nemesis op, or an error to report in full
                append(HistoryEvent(proc, kind, f, values[row[gv]] if gv >= 0 else None,
                                    values[row[gk]] if gk >= 0 else None, time))
        except EdnError:
            return None
        return out

    def all_lines(self, text: str, expected: int) -> Events | None:
        """Events of all lines, if ``expected`` lines match and all are plain client ops."""
        rows = self.pattern.findall(text)
        if len(rows) != expected:
            return None
        events = self.events(rows, _ValueCache())
        if events is None:
            return None
        return events, _LineNumbers(text, self.pattern)


class _LineNumbers(Sequence[int]):
    """Line numbers of a pattern's matches, found only when asked for (for error messages)."""

    def __init__(self, text: str, pattern: re.Pattern[str]) -> None:
        self.text, self.pattern = text, pattern
        self.numbers: list[int] | None = None

    def _all(self) -> list[int]:
        if self.numbers is None:
            counter = _LineCounter(self.text)
            self.numbers = [counter.line_at(m.start()) for m in self.pattern.finditer(self.text)]
        return self.numbers

    def __len__(self) -> int:
        return len(self._all())

    def __getitem__(self, index: Any) -> Any:
        return self._all()[index]


class _LineCounter:
    """Line numbers of positions in a text, counted incrementally for growing positions."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.line, self.pos = 1, 0

    def line_at(self, pos: int) -> int:
        """The 1-based line number of position ``pos``."""
        if pos < self.pos:
            self.line, self.pos = 1, 0
        self.line += self.text.count("\n", self.pos, pos)
        self.pos = pos
        return self.line


# --- Jepsen log lines ------------------------------------------------------------------------

_JEPSEN_LOGGER = "jepsen.util"
# After the logger name: " - " (log4j layout) or ": " (Jepsen's logback layout).
_JEPSEN_SEPARATOR = re.compile(r"(?:[ \t]+-|:)[ \t]+")
_JEPSEN_PROCESS_START = re.compile(r"-?[0-9]|:")
_JEPSEN_LINE = _LinePattern(re.compile(
    r"jepsen\.util(?:[ \t]+-|:)[ \t]+(-?[0-9]++)[ \t]++(:invoke|:ok|:fail|:info)"
    rf"[ \t]++({_ATOM})[ \t]++{_VALUE}[ \t]*+$", re.MULTILINE), (0, 1, 2, 3, -1, -1))
_FIELD_END = frozenset(" \t")
_NOT_CACHED = object()


def _jepsen_read(text: str, source: str) -> Events:
    fast = _JEPSEN_LINE
    done = fast.all_lines(text, text.count(_JEPSEN_LOGGER))
    if done is not None:
        return done
    reader = _JepsenReader(text, source)
    counter, values = _LineCounter(text), _ValueCache()
    for match in fast.pattern.finditer(text):
        start = match.start()
        reader.read_lines(text.rfind("\n", 0, start) + 1)  # whole lines before this one
        event = fast.event(match.groups(), values)
        if event is None:
            reader.read_lines(match.end())
        else:
            reader.add(event, counter.line_at(start))
        reader.pos = match.end()
    reader.read_lines(len(text))
    return reader.events, reader.numbers


class _TextReader:
    """What both slow-path readers keep: the text, the events read so far with their line
    numbers, and how far the text has been read."""

    def __init__(self, text: str, source: str) -> None:
        self.text, self.source = text, source
        self.events: list[HistoryEvent] = []
        self.numbers: list[int] = []
        self.pos = 0  # everything before has been read
        self.counter = _LineCounter(text)

    def add(self, event: HistoryEvent, number: int) -> None:
        """Record one event and its line."""
        self.events.append(event)
        self.numbers.append(number)


class _JepsenReader(_TextReader):
    """Reads Jepsen log lines one at a time (the lines the fast pattern leaves)."""

    def __init__(self, text: str, source: str) -> None:
        super().__init__(text, source)
        self.cache: dict[str, HistoryEvent | None] = {}

    def read_lines(self, stop: int) -> None:
        """Read the lines from ``pos`` up to ``stop``, if any of them names the logger.

        ``pos`` is the start or the end of a line, ``stop`` the start or end of a later one.
        """
        text, pos = self.text, self.pos
        if text.find(_JEPSEN_LOGGER, pos, stop) < 0:
            return
        first = self.counter.line_at(pos)
        for number, line in enumerate(text[pos:stop].split("\n"), first):
            at = line.find(_JEPSEN_LOGGER)
            if at < 0:
                continue
            rest = line[at + len(_JEPSEN_LOGGER):]
            event = self.cache.get(rest, _NOT_CACHED)
            if event is _NOT_CACHED:
                event = _jepsen_event(rest, self.source, number, at + len(_JEPSEN_LOGGER))
                if len(self.cache) < _CACHE_LIMIT:
                    self.cache[rest] = event
            if event is not None:
                self.add(event, number)  # type: ignore[arg-type]
        self.pos = stop


def _jepsen_event(rest: str, source: str, number: int, offset: int) -> HistoryEvent | None:
    """The event of one log message after ``jepsen.util``; None for lines that are no ops."""
    sep = _JEPSEN_SEPARATOR.match(rest)
    if sep is None or not _JEPSEN_PROCESS_START.match(rest, sep.end()):
        return None  # another logger (jepsen.utils...) or a message that is no operation
    fields = _JepsenFields(rest, sep.end(), source, number, offset)
    proc = fields.next()
    if isinstance(proc, Keyword):
        return None  # :nemesis and other non-client processes are not operations
    kind, f, value = fields.next(), fields.next(), fields.next()
    rest_at = fields.pos  # what follows the value is Jepsen's error field: ignored
    if rest_at < len(rest) and rest[rest_at] not in _FIELD_END:
        raise fields.error(f"expected whitespace after the value, got {rest[rest_at:][:20]!r}")
    if not isinstance(proc, int) or isinstance(proc, bool):
        raise HistoryError(f"the process must be an integer or a keyword, got {proc!r}",
                           source=source, line=number)
    _check_type(kind, source, number)
    if not isinstance(f, str):
        raise HistoryError(f"the function must be a keyword, got {f!r}", source=source,
                           line=number)
    return HistoryEvent(proc, str(kind), str(f), freeze(_unkeyword(value)))  # type: ignore[arg-type]


class _JepsenFields:
    """Reads the whitespace-separated EDN fields of one log message in turn."""

    def __init__(self, rest: str, pos: int, source: str, number: int, offset: int) -> None:
        self.rest, self.pos, self.first = rest, pos, pos
        self.source, self.number, self.offset = source, number, offset

    def next(self) -> Any:
        """The next field; its value parsed as EDN."""
        rest, pos = self.rest, self.pos
        while pos < len(rest) and rest[pos] in _FIELD_END:
            pos += 1
        if pos >= len(rest):
            raise self.error("expected 'process :type :f value' after 'jepsen.util - ', got "
                             f"{rest[self.first:].strip()!r}")
        if pos == self.pos and pos != self.first:
            raise self.error(f"expected whitespace between fields before {rest[pos:][:20]!r}")
        try:
            value, self.pos = read(rest, pos)
        except EdnError as exc:
            raise self.error(f"malformed EDN: column {self.offset + exc.column}: "
                             f"{exc.reason}") from None
        return value

    def error(self, message: str) -> HistoryError:
        return HistoryError(message, source=self.source, line=self.number)


# --- Jepsen EDN maps -------------------------------------------------------------------------

_BLANK_LINE = re.compile(r"\n[ \t,]*+(?=\n)")  # one per blank line of "\n" + text + "\n"


def _edn_read(text: str, source: str) -> Events:
    fast = _edn_line_pattern(text)
    if fast is not None:
        expected = text.count("\n") + 1 - len(_BLANK_LINE.findall(f"\n{text}\n"))
        done = fast.all_lines(text, expected)
        if done is not None:
            return done
    reader = _EdnReader(text, source)
    if fast is not None:
        reader.read_fast(fast)
    reader.read_forms(len(text))
    return reader.events, reader.numbers


def _edn_line_pattern(text: str) -> _LinePattern | None:
    """A pattern for one flat map per line, with the keys of the first map in its order."""
    start = skip_space(text, 0)
    if not text.startswith("{", start):
        return None
    try:
        first, _ = read(text, start)
    except EdnError:
        return None
    keys = list(first)
    if not all(isinstance(k, Keyword) and _KEY_NAME.fullmatch(k) for k in keys):
        return None
    groups = [keys.index(name) if name in keys else -1 for name in _FIELDS]
    if min(groups[:3]) < 0:
        return None
    pairs = r"[ \t,]*".join(rf":{re.escape(k)}[ \t,]+{_value_pattern(k)}" for k in keys)
    pattern = re.compile(rf"^[ \t]*\{{[ \t,]*{pairs}[ \t,]*\}}[ \t,]*$", re.MULTILINE)
    return _LinePattern(pattern, groups)


def _value_pattern(key: str) -> str:
    """Values of keys that hold atoms are matched by a smaller (faster to compile) regex."""
    return f"({_STR}|{_ATOM})" if key in _ATOM_KEYS else _VALUE


_ATOM_KEYS = frozenset(("process", "type", "f", "time", "index"))


class _EdnReader(_TextReader):
    """Reads Jepsen EDN ops from a text: fast-pattern lines, and general forms between."""

    def read_fast(self, fast: _LinePattern) -> None:
        """Read every line ``fast`` matches; whatever lies between goes to read_forms."""
        text, values = self.text, _ValueCache()
        for match in fast.pattern.finditer(text):
            start = match.start()
            if start > self.pos + 1 and skip_space(text, self.pos) < start:
                self.read_forms(start)
            if start < self.pos:
                continue  # inside a form read_forms already consumed
            event = fast.event(match.groups(), values)
            if event is None:
                self.read_form(start)  # a nemesis op, or an error to report in full
                continue
            self.add(event, self.counter.line_at(start))
            self.pos = match.end()

    def read_forms(self, stop: int) -> None:
        """Read top-level forms that start before ``stop`` (they may end after it)."""
        while True:
            start = skip_space(self.text, self.pos)
            if start >= stop or start >= len(self.text):
                return
            if self.text[start] in "[(":
                self.read_vector(start)
            else:
                self.read_form(start)

    def read_vector(self, start: int) -> None:
        """A whole history written as one EDN vector (or list) of maps."""
        text, closer = self.text, "]" if self.text[start] == "[" else ")"
        self.pos = start + 1
        while True:
            at = skip_space(text, self.pos)
            if at >= len(text):
                raise HistoryError(f"{text[start]!r} opened here is never closed",
                                   source=self.source, line=self.counter.line_at(start))
            if text[at] == closer:
                self.pos = at + 1
                return
            self.read_form(at)

    def read_form(self, start: int) -> None:
        """Read the one op map at ``start``; add its event unless it is a nemesis op."""
        try:
            obj, self.pos = read(self.text, start)
        except EdnError as exc:
            raise self.edn_error(exc) from None
        number = self.counter.line_at(start)
        if not isinstance(obj, dict):
            raise HistoryError(f"expected an EDN map like {{:process 0, :type :invoke, ...}}, "
                               f"got {_short(obj)}", source=self.source, line=number)
        event = _edn_event(obj, self.source, number)
        if event is not None:
            self.add(event, number)

    def edn_error(self, exc: EdnError) -> HistoryError:
        """The HistoryError for an EDN error at a position of the whole text."""
        pos = min(exc.pos, len(self.text))
        column = pos - self.text.rfind("\n", 0, pos)
        return HistoryError(f"malformed EDN: column {column}: {exc.reason}",
                            source=self.source, line=self.counter.line_at(pos))


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _edn_event(obj: dict[Any, Any], source: str, number: int) -> HistoryEvent | None:
    proc, kind, f = obj.get("process"), obj.get("type"), obj.get("f")
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
    time = obj.get("time", 0)
    if not isinstance(time, int):
        raise HistoryError(f":time must be an integer, got {time!r}", source=source,
                           line=number)
    value = freeze(_unkeyword(obj.get("value")))
    key = freeze(_unkeyword(obj.get("key")))
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

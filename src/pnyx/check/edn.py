"""A small, strict EDN reader for the subset Jepsen histories use; rejects anything else.

Tokens are found by one compiled regular expression and assembled with an explicit stack,
so reading costs a few regex steps per token rather than Python work per character.
"""

from __future__ import annotations

import re
from typing import Any

_ESCAPES = {'"': '"', "\\": "\\", "n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f"}
_CLOSERS = {"[": "]", "(": ")", "{": "}", "#{": "}"}
_CONSTANTS: dict[str, Any] = {"nil": None, "true": True, "false": False}

# Groups, by number: 1 whitespace/commas/comments, 2 string body, 3 opening bracket (also
# ``#{`` and Clojure record literals such as ``#jepsen.history.Op{``), 4 closing bracket,
# 5 any other token, 6 a character that starts no token.
_TOKEN = re.compile(r"""
    ((?:[\s,]+|;[^\n]*)+)
  | "([^"\\]*(?:\\.[^"\\]*)*)"
  | ([\[({]|\#\{|\#[A-Za-z_][\w\-]*(?:\.[\w\-]+)+\{)
  | ([\])}])
  | ([^\s,;()\[\]{}"]+)
  | (.)
""", re.VERBOSE | re.DOTALL)
_WS, _STR, _OPEN, _CLOSE, _ATOM, _BAD = range(1, 7)
_SKIP = re.compile(r"(?:[\s,]+|;[^\n]*)*")
_STRING_ESCAPE = re.compile(r"\\(u[0-9A-Fa-f]{4}|.)", re.DOTALL)


class EdnError(ValueError):
    """Text that is not in the supported EDN subset.

    ``column`` is 1-based, counted from the start of the text given to the reader (for a
    multi-line text: an offset, see ``pos``); ``pos`` is the same place 0-based and
    ``reason`` the message without the position.
    """

    def __init__(self, message: str, column: int) -> None:
        self.column = column
        self.pos = column - 1
        self.reason = message
        super().__init__(f"column {column}: {message}")


class Keyword(str):
    """An EDN keyword, held without its colon (``:ok`` -> ``Keyword("ok")``)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f":{str.__str__(self)}"


def loads(text: str) -> Any:
    """Parse exactly one EDN value from ``text``.

    Supported: nil, true, false, integers, floats, strings, keywords, vectors and lists
    (as ``list``), sets (``frozenset``), maps (``dict``) and Clojure record literals such as
    ``#jepsen.history.Op{...}`` (read as plain maps); ``,`` is whitespace and ``;`` starts a
    comment. Symbols other than nil/true/false, other tagged literals, characters and ratios
    raise :class:`EdnError`.
    """
    value, end = read(text, 0)
    end = skip_space(text, end)
    if end != len(text):
        raise EdnError(f"unexpected text after the value: {text[end:][:20]!r}", end + 1)
    return value


def skip_space(text: str, pos: int) -> int:
    """The first position at or after ``pos`` that is not whitespace, a comma or a comment."""
    match = _SKIP.match(text, pos)
    return match.end() if match else pos


def read(text: str, pos: int = 0) -> tuple[Any, int]:
    """Read one EDN value starting at ``pos`` (after optional whitespace).

    Returns the value and the position just after it; raises :class:`EdnError` (with the
    position in ``text``) for malformed input.
    """
    stack: list[tuple[list[Any], str, int]] = []  # (items so far, opening token, its position)
    for match in _TOKEN.finditer(text, pos):
        group = match.lastindex
        if group == _WS:
            continue
        if group == _OPEN:
            stack.append(([], match.group(_OPEN), match.start()))
            continue
        if group == _ATOM:
            value = _atom(match.group(_ATOM), match.start())
        elif group == _STR:
            body = match.group(_STR)
            value = _unescape(body, match.start()) if "\\" in body else body
        elif group == _CLOSE:
            value = _close(stack, match.group(_CLOSE), match.start())
        else:
            raise _bad_char(match.group(_BAD), match.start())
        if not stack:
            return value, match.end()
        stack[-1][0].append(value)
    if stack:
        _, opener, start = stack[-1]
        raise EdnError(f"{opener!r} is never closed (missing {_closer(opener)!r})", start + 1)
    raise EdnError("expected a value, found the end of the text", len(text) + 1)


def _closer(opener: str) -> str:
    return _CLOSERS.get(opener, "}")


def _bad_char(char: str, pos: int) -> EdnError:
    if char == '"':
        return EdnError("unterminated string", pos + 1)
    return EdnError(f"unexpected character {char!r}", pos + 1)


def _close(stack: list[tuple[list[Any], str, int]], closer: str, pos: int) -> Any:
    if not stack:
        raise EdnError(f"unbalanced {closer!r}", pos + 1)
    items, opener, start = stack.pop()
    if _closer(opener) != closer:
        raise EdnError(f"{opener!r} opened at column {start + 1} is closed by {closer!r}",
                       pos + 1)
    if opener in ("[", "("):
        return items
    if opener == "#{":
        return _set(items, pos)
    return _map(items, pos)


def _map(items: list[Any], pos: int) -> dict[Any, Any]:
    if len(items) % 2:
        raise EdnError("a map needs an even number of forms (key value pairs)", pos + 1)
    try:
        return {_hashable(items[i]): items[i + 1] for i in range(0, len(items), 2)}
    except TypeError as exc:
        raise EdnError(f"unhashable map key: {exc}", pos + 1) from None


def _set(items: list[Any], pos: int) -> frozenset[Any]:
    try:
        return frozenset(_hashable(v) for v in items)
    except TypeError as exc:
        raise EdnError(f"unhashable set element: {exc}", pos + 1) from None


def _unescape(body: str, pos: int) -> str:
    def replace(match: re.Match[str]) -> str:
        esc = match.group(1)
        if esc[0] == "u" and len(esc) == 5:
            return chr(int(esc[1:], 16))
        if esc not in _ESCAPES:
            raise EdnError(f"unsupported string escape \\{esc}", pos + match.start() + 2)
        return _ESCAPES[esc]

    return _STRING_ESCAPE.sub(replace, body)


def _atom(tok: str, pos: int) -> Any:
    first = tok[0]
    if first == ":":
        if len(tok) == 1:
            raise EdnError("a keyword needs a name after ':'", pos + 1)
        return Keyword(tok[1:])
    if tok in _CONSTANTS:
        return _CONSTANTS[tok]
    if first == "#":
        raise EdnError("tagged literals (#tag ...) and #_ are not supported; "
                       "write plain EDN values", pos + 1)
    return _number(tok, pos)


def _number(tok: str, pos: int) -> int | float:
    body = tok[:-1] if tok[-1] in "NM" else tok
    if "_" in body or not body:
        raise EdnError(f"unsupported token {tok!r}", pos + 1)
    try:
        return int(body)
    except ValueError:
        pass
    try:
        if any(c in body for c in "0123456789") and body.lower() not in ("inf", "nan"):
            return float(body)
    except ValueError:
        pass
    raise EdnError(f"unsupported token {tok!r}: expected nil, true, false, a number, "
                   "a string, a keyword or a collection", pos + 1)


def _hashable(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return tuple((k, _hashable(v)) for k, v in value.items())
    return value

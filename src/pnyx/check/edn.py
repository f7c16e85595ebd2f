"""A small, strict EDN reader for the subset Jepsen histories use; rejects anything else."""

from __future__ import annotations

from typing import Any

_DELIMS = frozenset(" \t\r\n,()[]{}\"")
_ESCAPES = {'"': '"', "\\": "\\", "n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f"}


class EdnError(ValueError):
    """Text that is not in the supported EDN subset; ``column`` is 1-based."""

    def __init__(self, message: str, column: int) -> None:
        self.column = column
        super().__init__(f"column {column}: {message}")


class Keyword(str):
    """An EDN keyword, held without its colon (``:ok`` -> ``Keyword("ok")``)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f":{str.__str__(self)}"


def loads(text: str) -> Any:
    """Parse exactly one EDN value from ``text``.

    Supported: nil, true, false, integers, floats, strings, keywords, vectors and lists
    (as ``list``), sets (``frozenset``) and maps (``dict``). Symbols other than
    nil/true/false, tagged literals, characters and ratios raise :class:`EdnError`.
    """
    reader = _Reader(text)
    value = reader.value()
    reader.skip_ws()
    if reader.pos != len(text):
        raise EdnError(f"unexpected text after the value: {text[reader.pos:][:20]!r}",
                       reader.pos + 1)
    return value


class _Reader:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, message: str) -> EdnError:
        return EdnError(message, self.pos + 1)

    def skip_ws(self) -> None:
        text, pos, n = self.text, self.pos, len(self.text)
        while pos < n:
            c = text[pos]
            if c in " \t\r\n,":
                pos += 1
            elif c == ";":
                while pos < n and text[pos] != "\n":
                    pos += 1
            else:
                break
        self.pos = pos

    def value(self) -> Any:
        self.skip_ws()
        if self.pos >= len(self.text):
            raise self.fail("expected a value, found the end of the line")
        c = self.text[self.pos]
        if c == "{":
            return self.map()
        if c == "[":
            return self.seq("]")
        if c == "(":
            return self.seq(")")
        if c == '"':
            return self.string()
        if c == "#":
            return self.hash_form()
        if c in ")]}":
            raise self.fail(f"unbalanced {c!r}")
        return self.atom()

    def seq(self, close: str) -> list[Any]:
        self.pos += 1
        items: list[Any] = []
        while True:
            self.skip_ws()
            if self.pos >= len(self.text):
                raise self.fail(f"missing {close!r} before the end of the line")
            if self.text[self.pos] == close:
                self.pos += 1
                return items
            items.append(self.value())

    def map(self) -> dict[Any, Any]:
        items = self.seq("}")
        if len(items) % 2:
            raise self.fail("a map needs an even number of forms (key value pairs)")
        try:
            return {_hashable(items[i]): items[i + 1] for i in range(0, len(items), 2)}
        except TypeError as exc:
            raise self.fail(f"unhashable map key: {exc}") from None

    def hash_form(self) -> frozenset[Any]:
        if self.text.startswith("#{", self.pos):
            self.pos += 1
            return frozenset(_hashable(v) for v in self.seq("}"))
        raise self.fail("tagged literals (#tag ...) and #_ are not supported; "
                        "write plain EDN values")

    def string(self) -> str:
        text, pos = self.text, self.pos + 1
        out: list[str] = []
        start = pos
        while True:
            end = text.find('"', pos)
            slash = text.find("\\", pos, end if end >= 0 else len(text))
            if end < 0:
                raise self.fail("unterminated string")
            if slash < 0:
                out.append(text[start:end])
                self.pos = end + 1
                return "".join(out)
            out.append(text[start:slash])
            esc = text[slash + 1: slash + 2]
            if esc not in _ESCAPES:
                self.pos = slash
                raise self.fail(f"unsupported string escape \\{esc}")
            out.append(_ESCAPES[esc])
            pos = start = slash + 2

    def atom(self) -> Any:
        text, start, n = self.text, self.pos, len(self.text)
        pos = start
        while pos < n and text[pos] not in _DELIMS:
            pos += 1
        tok = text[start:pos]
        self.pos = pos
        if tok[0] == ":":
            if len(tok) == 1:
                self.pos = start
                raise self.fail("a keyword needs a name after ':'")
            return Keyword(tok[1:])
        if tok == "nil":
            return None
        if tok == "true":
            return True
        if tok == "false":
            return False
        return self.number(tok, start)

    def number(self, tok: str, start: int) -> int | float:
        body = tok[:-1] if tok[-1] in "NM" else tok
        if "_" in body or not body:
            self.pos = start
            raise self.fail(f"unsupported token {tok!r}")
        try:
            return int(body)
        except ValueError:
            pass
        try:
            if any(c in body for c in "0123456789") and body.lower() not in ("inf", "nan"):
                return float(body)
        except ValueError:
            pass
        self.pos = start
        raise self.fail(f"unsupported token {tok!r}: expected nil, true, false, a number, "
                        "a string, a keyword or a collection")


def _hashable(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return tuple((k, _hashable(v)) for k, v in value.items())
    return value

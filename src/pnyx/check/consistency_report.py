"""Results of the consistency checkers (sequential, causal, session, convergence, SI) and
their reports: a text explanation and a self-contained HTML timeline with the
counterexample's operations in red, in the style of ``pnyx.check.report``."""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pnyx.check.history import Operation
from pnyx.check.models import describe_operation
from pnyx.check.timeline_html import (
    BAR_CSS,
    LANE_PX,
    LEGEND_CSS,
    PAGE_CSS,
    PRE_CSS,
    VERDICT_CSS,
    axes,
    bar,
    css,
    outcome_class,
    page,
    svg_open,
)

MAX_PER_NAME = 10  # violations of one name kept in a result (the rest are counted)

_RANK_PX = 30


@dataclass
class Violation:
    """One bad pattern: its name, a text explanation and the operations it consists of."""

    name: str
    explanation: str
    operations: list[Operation] = field(default_factory=list)


@dataclass
class ConsistencyResult:
    """The verdict of one consistency checker on one history.

    ``verdict`` is the model's name when the history satisfies it (``causal``), ``not-``
    and the name when a violation was found, ``unknown`` when the checker gave up (``reason``
    says why). ``violations`` are minimal counterexamples (at most ``MAX_PER_NAME`` per
    name; ``omitted`` counts the rest); ``allowed`` lists anomalies the model permits but a
    stronger one forbids (write skew under snapshot isolation).
    """

    model: str
    verdict: str
    violations: list[Violation]
    elapsed_s: float
    operations: int
    reason: str = ""
    allowed: list[Violation] = field(default_factory=list)
    omitted: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when the history satisfies the model."""
        return self.verdict == self.model

    @property
    def names(self) -> list[str]:
        """The distinct violation names, sorted."""
        return sorted({v.name for v in self.violations})

    def explain(self) -> str:
        """The violations (or why the verdict is unknown), then allowed anomalies."""
        lines: list[str] = []
        if self.verdict == "unknown":
            lines.append(f"unknown: {self.reason}")
        for v in self.violations:
            lines.append(f"{v.name}: {v.explanation}")
        for name, count in sorted(self.omitted.items()):
            lines.append(f"... and {count} more {name}")
        for v in self.allowed:
            lines.append(f"allowed by {self.model}: {v.name}: {v.explanation}")
        return "\n".join(lines)


def finish(model: str, found: list[Violation], elapsed_s: float, operations: int,
           reason: str = "", allowed: list[Violation] | None = None) -> ConsistencyResult:
    """A result from the violations found: keeps ``MAX_PER_NAME`` per name, counts the rest."""
    kept: list[Violation] = []
    per_name: dict[str, int] = {}
    omitted: dict[str, int] = {}
    for v in found:
        per_name[v.name] = per_name.get(v.name, 0) + 1
        if per_name[v.name] <= MAX_PER_NAME:
            kept.append(v)
        else:
            omitted[v.name] = omitted.get(v.name, 0) + 1
    verdict = f"not-{model}" if kept else "unknown" if reason else model
    return ConsistencyResult(model, verdict, kept, elapsed_s, operations, reason,
                             allowed or [], omitted)


def op_text(op: Operation) -> str:
    """How reports name an operation: ``#index p3 ['x'] write 2 -> ok``."""
    if op.f in ("read", "get", "final-read") and op.outcome == "ok" and op.output is None:
        key = "" if op.key is None else f"[{op.key!r}] "
        return f"#{op.index} p{op.process} {key}{op.f} -> None"
    return f"#{op.index} {describe_operation(op)}"


# -- HTML ---------------------------------------------------------------------------------


def write_consistency_html(result: ConsistencyResult, operations: Sequence[Operation],
                           path: str | Path, title: str = "") -> None:
    """Write the HTML report of ``result`` (over ``operations``) to ``path``."""
    Path(path).write_text(render_consistency_html(result, operations, title), encoding="utf-8")


def render_consistency_html(result: ConsistencyResult, operations: Sequence[Operation],
                            title: str = "") -> str:
    """A self-contained page: one lane per process, the first violation's operations red,
    the others grey (hatched: ``info``), then the text explanation."""
    bad = {op.index for op in result.violations[0].operations} if result.violations else set()
    shown = _shown(operations, bad)
    head = html.escape(title or f"pnyx check — {result.model}")
    explanation = html.escape(result.explain()) or f"The history is {result.model}."
    verdict = f"<p class='verdict {'good' if result.ok else 'bad'}'>{result.verdict}</p>"
    return page(head, _CSS, verdict + _LEGEND + _timeline(shown, bad), explanation)


_LEGEND = ("<p class='legend'><span class='bad'>in the counterexample</span>"
           "<span class='other'>other operations</span><span class='info'>info "
           "(outcome unknown)</span></p>")

_SHOWN_MAX = 400  # operations drawn: the counterexample and its neighbours in real time


def _shown(operations: Sequence[Operation], bad: set[int]) -> list[Operation]:
    if len(operations) <= _SHOWN_MAX or not bad:
        return list(operations)[:_SHOWN_MAX]
    positions = [i for i, op in enumerate(operations) if op.index in bad]
    lo = max(0, min(positions) - 20)
    hi = min(len(operations), max(positions) + 21)
    picked = [op for op in operations[lo:hi]]
    return picked[:_SHOWN_MAX] + [op for op in operations if op.index in bad
                                  and op not in picked[:_SHOWN_MAX]]


def _timeline(ops: list[Operation], bad: set[int]) -> str:
    if not ops:
        return "<p>(no operations)</p>"
    box = axes(ops, _RANK_PX)
    parts = [svg_open(box)]
    for p, i in box.lane.items():
        y = i * LANE_PX + 10
        parts.append(f"<text x='4' y='{y + 16}' class='lane'>p{p}</text>")
    for op in ops:
        cls = "bad" if op.index in bad else outcome_class(op)
        parts.append(bar(op, box, _RANK_PX, cls, op_text(op), _short(op)))
    parts.append("</svg>")
    return f"<div class='scroll'>{''.join(parts)}</div>"


def _short(op: Operation) -> str:
    key = "" if op.key is None else f"{op.key}="
    if op.f in ("read", "get", "final-read"):
        return f"r {key}{op.output!r}"
    return f"{op.f} {key}{op.value!r}"


_CSS = css(
    *PAGE_CSS,
    *BAR_CSS,
    VERDICT_CSS,
    ".verdict.good{color:#2e7d32}",
    ".verdict.bad{color:#c0392b}",
    LEGEND_CSS,
    ".legend .bad{background:#f4a3a3}.legend .info{background:#f3d27a}",
    ".legend .other{background:#e4e4e4}",
    PRE_CSS,
)

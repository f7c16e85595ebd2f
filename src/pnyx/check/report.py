"""Counterexamples for people: a text explanation and a self-contained HTML timeline."""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

from pnyx.check.history import Operation
from pnyx.check.linearizability import LinearizabilityResult, PartitionResult
from pnyx.check.models import describe_operation
from pnyx.check.timeline_html import (
    BAR_CSS,
    LANE_PX,
    LEFT_PX,
    LEGEND_CSS,
    PAGE_CSS,
    PRE_CSS,
    VERDICT_CSS,
    Axes,
    axes,
    bar,
    css,
    outcome_class,
    page,
    svg_open,
)

_PREFIX_SHOWN = 20
_RANK_PX = 34


def explain_text(result: LinearizabilityResult, prefix_shown: int = _PREFIX_SHOWN) -> str:
    """Why ``result`` is not linearizable: per failing partition, the longest linearizable
    prefix (its last ``prefix_shown`` operations) and the operations that could not be placed.
    Empty when the history is linearizable."""
    if result.verdict == "linearizable":
        return ""
    if result.verdict == "unknown":
        undecided = result.undecided
        lines = [f"unknown: undecided on {len(undecided)} of {len(result.partitions)} "
                 f"partitions; no violation was found before that."]
        lines.extend(f"  {p.reason}" for p in undecided[:prefix_shown])
        if len(undecided) > prefix_shown:
            lines.append(f"  ... and {len(undecided) - prefix_shown} more")
        return "\n".join(lines)
    failures = result.failures
    lines = [f"not linearizable ({result.model}): {len(failures)} of "
             f"{len(result.partitions)} partitions fail"]
    skipped = len(result.undecided)
    if skipped:
        lines.append(f"(the check stopped at the first violation: {skipped} partitions "
                     f"were not searched to the end)")
    for part in failures:
        lines.extend(_explain_partition(part, prefix_shown))
    return "\n".join(lines)


def _explain_partition(part: PartitionResult, prefix_shown: int) -> list[str]:
    label = "" if part.key is None else f" key {part.key!r}"
    out = [f"partition{label}: {len(part.operations)} operations; longest linearizable "
           f"prefix has {len(part.prefix)}"]
    hidden = max(0, len(part.prefix) - prefix_shown)
    if hidden:
        out.append(f"  ... {hidden} earlier operations linearized")
    for pos in range(hidden, len(part.prefix)):
        op = part.prefix[pos]
        out.append(f"  {pos + 1:4d}. {describe_operation(op):<40} => {part.prefix_states[pos]}")
    out.append(f"  then, in state {part.final_state}, none of these can take effect:")
    for op in part.unplaced:
        out.append(f"        {describe_operation(op)}  (invoked at {op.call}, "
                   f"returned at {op.ret})")
    return out


def write_html(result: LinearizabilityResult, operations: Sequence[Operation],
               path: str | Path, title: str = "") -> None:
    """Write the HTML timeline of ``result`` (over ``operations``) to ``path``."""
    Path(path).write_text(render_html(result, operations, title), encoding="utf-8")


def render_html(result: LinearizabilityResult, operations: Sequence[Operation],
                title: str = "") -> str:
    """A self-contained HTML page: one lane per process, operations as bars.

    Green bars are in the longest linearizable prefix (hover: position and state after),
    red bars could not be placed, hatched bars are ``info`` (open-ended), grey ``fail``;
    the red vertical line marks the point by which the red operation had to take effect.
    """
    sections = []
    shown = result.failures or [
        PartitionResult(None, result.verdict, list(operations))]
    for part in shown:
        sections.append(_section(part, result.model))
    body = "\n".join(sections)
    explanation = html.escape(explain_text(result)) or "The history is linearizable."
    head = html.escape(title or "pnyx check")
    verdict = f"<p class='verdict {result.verdict}'>{result.verdict}</p>"
    return page(head, _CSS, verdict + _LEGEND + body, explanation)


_LEGEND = ("<p class='legend'><span class='ok'>in the longest linearizable prefix</span>"
           "<span class='bad'>could not be placed</span><span class='info'>info "
           "(outcome unknown)</span><span class='other'>not reached</span></p>")


def _section(part: PartitionResult, model: str) -> str:
    ops = part.operations
    if not ops:
        return "<p>(no operations)</p>"
    box = axes(ops, _RANK_PX)
    order = {op.index: i for i, op in enumerate(part.prefix)}
    stuck = {op.index for op in part.unplaced}
    parts = [svg_open(box)]
    for p, i in box.lane.items():
        y = i * LANE_PX + 10
        parts.append(f"<text x='4' y='{y + 16}' class='lane'>p{p}</text>"
                     f"<line x1='{LEFT_PX}' x2='{box.width_px}' y1='{y + 22}' y2='{y + 22}' "
                     "class='grid'/>")
    for op in ops:
        parts.append(_bar(op, box, order, stuck, part))
    if part.fail_time is not None and part.fail_time in box.slot:
        x = LEFT_PX + box.slot[part.fail_time] * _RANK_PX
        parts.append(f"<line x1='{x}' x2='{x}' y1='0' y2='{box.height_px}' class='fail'/>")
    parts.append("</svg>")
    label = "" if part.key is None else f" — key {html.escape(repr(part.key))}"
    return (f"<h2>{html.escape(model)}{label}: {part.verdict}</h2>"
            f"<div class='scroll'>{''.join(parts)}</div>")


def _bar(op: Operation, box: Axes, order: dict[int, int], stuck: set[int],
         part: PartitionResult) -> str:
    tip = describe_operation(op)
    if op.index in order:
        pos = order[op.index]
        cls = "ok"
        tip += f"\nlinearized #{pos + 1}; state after: {part.prefix_states[pos]}"
    elif op.index in stuck:
        cls = "bad"
        tip += f"\ncould not be placed in state {part.final_state}"
    else:
        cls = outcome_class(op)
    return bar(op, box, _RANK_PX, cls, tip, _short(op))


def _short(op: Operation) -> str:
    arg = "" if op.value is None else f" {op.value!r}"
    shown = op.outcome == "ok" and op.output is not None and op.output != op.value
    out = f" -> {op.output!r}" if shown else ""
    return f"{op.f}{arg}{out}"


_CSS = css(
    *PAGE_CSS,
    ".grid{stroke:#eee}",
    "g.ok rect{fill:#9fd8a4;stroke:#3b8d43}",
    *BAR_CSS,
    "line.fail{stroke:#c0392b;stroke-width:2;stroke-dasharray:6 3}",
    VERDICT_CSS,
    ".verdict.linearizable{color:#2e7d32}",
    ".verdict.not-linearizable{color:#c0392b}",
    ".verdict.unknown{color:#b8860b}",
    LEGEND_CSS,
    ".legend .ok{background:#9fd8a4}.legend .bad{background:#f4a3a3}",
    ".legend .info{background:#f3d27a}.legend .other{background:#e4e4e4}",
    PRE_CSS,
)

"""Counterexamples for people: a text explanation and a self-contained HTML timeline."""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

from pnyx.check.history import Operation
from pnyx.check.linearizability import LinearizabilityResult, PartitionResult
from pnyx.check.models import describe_operation

_PREFIX_SHOWN = 20
_LANE_PX = 26
_RANK_PX = 34
_CHAR_PX = 7
_LEFT_PX = 70


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
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{head}</title>"
            f"<style>{_CSS}</style></head><body><h1>{head}</h1>"
            f"<p class='verdict {result.verdict}'>{result.verdict}</p>"
            f"<p class='legend'><span class='ok'>in the longest linearizable prefix</span>"
            f"<span class='bad'>could not be placed</span><span class='info'>info "
            f"(outcome unknown)</span><span class='other'>not reached</span></p>"
            f"{body}<h2>Explanation</h2><pre>{explanation}</pre></body></html>\n")


def _section(part: PartitionResult, model: str) -> str:
    ops = part.operations
    if not ops:
        return "<p>(no operations)</p>"
    # x positions: this partition's own event order, so sparse partitions stay readable
    ticks = sorted({op.call for op in ops} | {op.ret for op in ops if op.ret is not None})
    slot = {t: i for i, t in enumerate(ticks)}
    end = len(ticks) + 1
    procs = sorted({op.process for op in ops})
    lane = {p: i for i, p in enumerate(procs)}
    order = {op.index: i for i, op in enumerate(part.prefix)}
    stuck = {op.index for op in part.unplaced}
    width = _LEFT_PX + end * _RANK_PX + 20
    height = len(procs) * _LANE_PX + 20
    parts = [f"<svg width='{width}' height='{height}' xmlns='http://www.w3.org/2000/svg'>",
             _HATCH]
    for p, i in lane.items():
        y = i * _LANE_PX + 10
        parts.append(f"<text x='4' y='{y + 16}' class='lane'>p{p}</text>"
                     f"<line x1='{_LEFT_PX}' x2='{width}' y1='{y + 22}' y2='{y + 22}' "
                     "class='grid'/>")
    for op in ops:
        start = slot[op.call]
        stop = slot[op.ret] if op.ret is not None and op.outcome != "info" else end
        parts.append(_bar(op, lane[op.process], start, stop, order, stuck, part))
    if part.fail_time is not None and part.fail_time in slot:
        x = _LEFT_PX + slot[part.fail_time] * _RANK_PX
        parts.append(f"<line x1='{x}' x2='{x}' y1='0' y2='{height}' class='fail'/>")
    parts.append("</svg>")
    label = "" if part.key is None else f" — key {html.escape(repr(part.key))}"
    return (f"<h2>{html.escape(model)}{label}: {part.verdict}</h2>"
            f"<div class='scroll'>{''.join(parts)}</div>")


def _bar(op: Operation, lane: int, start: int, stop: int, order: dict[int, int],
         stuck: set[int], part: PartitionResult) -> str:
    x = _LEFT_PX + start * _RANK_PX
    w = max(6, (stop - start) * _RANK_PX - 4)
    y = lane * _LANE_PX + 12
    tip = describe_operation(op)
    if op.index in order:
        pos = order[op.index]
        cls = "ok"
        tip += f"\nlinearized #{pos + 1}; state after: {part.prefix_states[pos]}"
    elif op.index in stuck:
        cls = "bad"
        tip += f"\ncould not be placed in state {part.final_state}"
    else:
        cls = {"info": "info", "fail": "failed"}.get(op.outcome, "other")
    text = html.escape(_short(op)[: max(0, (w - 6) // _CHAR_PX)])
    return (f"<g class='{cls}'><title>{html.escape(tip)}</title>"
            f"<rect x='{x}' y='{y}' width='{w}' height='18' rx='3'/>"
            f"<text x='{x + 3}' y='{y + 13}'>{text}</text></g>")


def _short(op: Operation) -> str:
    arg = "" if op.value is None else f" {op.value!r}"
    shown = op.outcome == "ok" and op.output is not None and op.output != op.value
    out = f" -> {op.output!r}" if shown else ""
    return f"{op.f}{arg}{out}"


_HATCH = ("<defs><pattern id='hatch' width='6' height='6' patternUnits='userSpaceOnUse' "
          "patternTransform='rotate(45)'><rect width='3' height='6' fill='#f3d27a'/></pattern>"
          "</defs>")

_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
.scroll{overflow-x:auto;border:1px solid #ddd;padding:4px;margin-bottom:1em}
svg text{font-size:11px;font-family:monospace;pointer-events:none}
.lane{font-weight:bold}
.grid{stroke:#eee}
g.ok rect{fill:#9fd8a4;stroke:#3b8d43}
g.bad rect{fill:#f4a3a3;stroke:#c0392b;stroke-width:2}
g.info rect{fill:url(#hatch);stroke:#b8860b}
g.other rect{fill:#e4e4e4;stroke:#999}
g.failed rect{fill:#fafafa;stroke:#ccc;stroke-dasharray:3 2}
line.fail{stroke:#c0392b;stroke-width:2;stroke-dasharray:6 3}
.verdict{font-size:1.3em;font-weight:bold}
.verdict.linearizable{color:#2e7d32}
.verdict.not-linearizable{color:#c0392b}
.verdict.unknown{color:#b8860b}
.legend span{display:inline-block;margin-right:1em;padding:2px 6px;border-radius:3px}
.legend .ok{background:#9fd8a4}.legend .bad{background:#f4a3a3}
.legend .info{background:#f3d27a}.legend .other{background:#e4e4e4}
pre{background:#f7f7f7;padding:1em;overflow-x:auto}
"""

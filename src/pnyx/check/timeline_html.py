"""Pieces shared by the HTML reports of ``pnyx.check``: the page frame, the timeline's axes
and bars, the hatch pattern and the CSS rules both reports use.

Used by :mod:`pnyx.check.report` (linearizability) and :mod:`pnyx.check.consistency_report`.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass

from pnyx.check.history import Operation

LANE_PX = 26
"""Height of one process lane."""
CHAR_PX = 7
"""Width of one label character (labels are cut to fit their bar)."""
LEFT_PX = 70
"""Room for the lane labels."""

HATCH = (
    "<defs><pattern id='hatch' width='6' height='6' patternUnits='userSpaceOnUse' "
    "patternTransform='rotate(45)'><rect width='3' height='6' fill='#f3d27a'/></pattern>"
    "</defs>"
)
"""The pattern ``info`` bars are filled with (open-ended: the outcome is unknown)."""

PAGE_CSS = (
    "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}",
    ".scroll{overflow-x:auto;border:1px solid #ddd;padding:4px;margin-bottom:1em}",
    "svg text{font-size:11px;font-family:monospace;pointer-events:none}",
    ".lane{font-weight:bold}",
)
"""The page, the scrolling timeline box, its text and lane labels."""
BAR_CSS = (
    "g.bad rect{fill:#f4a3a3;stroke:#c0392b;stroke-width:2}",
    "g.info rect{fill:url(#hatch);stroke:#b8860b}",
    "g.other rect{fill:#e4e4e4;stroke:#999}",
    "g.failed rect{fill:#fafafa;stroke:#ccc;stroke-dasharray:3 2}",
)
"""Bars: ``bad`` (the counterexample), ``info``, ``other``, ``failed``."""
VERDICT_CSS = ".verdict{font-size:1.3em;font-weight:bold}"
LEGEND_CSS = ".legend span{display:inline-block;margin-right:1em;padding:2px 6px;border-radius:3px}"
PRE_CSS = "pre{background:#f7f7f7;padding:1em;overflow-x:auto}"


def css(*rules: str) -> str:
    """A style sheet of ``rules``, one a line."""
    return "\n" + "\n".join(rules) + "\n"


def page(head: str, style: str, body: str, explanation: str) -> str:
    """A self-contained page titled ``head`` (escaped already): ``body``, then the
    ``explanation`` (escaped already) under an Explanation heading."""
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{head}</title>"
        f"<style>{style}</style></head><body><h1>{head}</h1>"
        f"{body}<h2>Explanation</h2><pre>{explanation}</pre></body></html>\n"
    )


@dataclass(frozen=True)
class Axes:
    """Where a timeline draws: x positions are ranks of the operations' own call and return
    times (so sparse histories stay readable), one lane per process."""

    slot: dict[int, int]
    """Call or return time → x rank."""
    end: int
    """The rank open-ended (``info``) bars run to."""
    lane: dict[int, int]
    """Process → lane, in process order."""
    width_px: int
    height_px: int


def axes(ops: Sequence[Operation], rank_px: int) -> Axes:
    """The axes of a timeline of ``ops`` (not empty), ``rank_px`` apart."""
    ticks = sorted({op.call for op in ops} | {op.ret for op in ops if op.ret is not None})
    slot = {t: i for i, t in enumerate(ticks)}
    end = len(ticks) + 1
    lane = {p: i for i, p in enumerate(sorted({op.process for op in ops}))}
    return Axes(slot, end, lane, LEFT_PX + end * rank_px + 20, len(lane) * LANE_PX + 20)


def svg_open(box: Axes) -> str:
    """The opening ``<svg>`` tag of a timeline, with the hatch pattern."""
    return (
        f"<svg width='{box.width_px}' height='{box.height_px}' "
        f"xmlns='http://www.w3.org/2000/svg'>{HATCH}"
    )


def outcome_class(op: Operation) -> str:
    """The bar class of an operation outside the counterexample: ``info``, ``failed`` or
    ``other``."""
    return {"info": "info", "fail": "failed"}.get(op.outcome, "other")


def bar(op: Operation, box: Axes, rank_px: int, cls: str, tip: str, label: str) -> str:
    """``op``'s bar, of class ``cls``, with the hover text ``tip``, labelled with as much
    of ``label`` as fits; ``info`` operations (or unanswered ones) run to the end."""
    start = box.slot[op.call]
    stop = box.slot[op.ret] if op.ret is not None and op.outcome != "info" else box.end
    x = LEFT_PX + start * rank_px
    w = max(6, (stop - start) * rank_px - 4)
    y = box.lane[op.process] * LANE_PX + 12
    shown = html.escape(label[: max(0, (w - 6) // CHAR_PX)])
    return (
        f"<g class='{cls}'><title>{html.escape(tip)}</title>"
        f"<rect x='{x}' y='{y}' width='{w}' height='18' rx='3'/>"
        f"<text x='{x + 3}' y='{y + 13}'>{shown}</text></g>"
    )

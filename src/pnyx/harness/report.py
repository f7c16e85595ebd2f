"""The report of one ``pnyx test`` run: a directory a person opens in a browser.

``DIR/``:

- ``history.jsonl``: every event (pnyx JSON-lines, :mod:`pnyx.check.formats`); nemesis
  events have process ``-1`` (``start`` / ``stop`` / ``heal``, the description as value),
  the final reads after the faults process ``-2``;
- ``results.json``: the verdict, every check's verdict and summary, the run's settings,
  the nemesis intervals and phase timings;
- ``logs/<host>.log``: every node's log;
- ``latency.png``: latency of every operation over time (one point per operation,
  coloured by outcome: ok, fail, info), nemesis intervals shaded — Jepsen's latency plot;
- ``throughput.png``: completed operations per second by outcome, intervals shaded;
- ``counterexample.html``: for a linearizability violation, the checker's timeline;
- ``index.html``: the summary table, the checks, the counterexample, the plots.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pnyx.check.formats import dumps_jsonl
from pnyx.check.history import Operation
from pnyx.check.models import describe_operation

if TYPE_CHECKING:
    from pnyx.harness.run import NemesisInterval, RunResult

COLOURS = {"ok": "#2e7d32", "fail": "#c62828", "info": "#ef8f00"}
NEMESIS_COLOURS = ("#9e9e9e", "#7e57c2", "#26a69a", "#8d6e63", "#5c6bc0", "#ec407a")


def write_report(result: RunResult) -> Path:
    """Write the report files into ``result.directory``; the path of ``index.html``."""
    out = result.directory
    out.mkdir(parents=True, exist_ok=True)
    events = result.recorder.events
    (out / "history.jsonl").write_text(dumps_jsonl(events), encoding="utf-8")
    (out / "results.json").write_text(json.dumps(result.to_json(), indent=2, default=str)
                                      + "\n", encoding="utf-8")  # fmt: skip
    try:
        history = result.recorder.history()
        ops = history.operations
    except ValueError:
        ops = []
    end_s = max([result.time_limit_s, *((o.ret_time or o.call_time) / 1e9 for o in ops)])
    plots = {
        "latency.png": plot_latency(ops, result.intervals, out / "latency.png", end_s),
        "throughput.png": plot_throughput(ops, result.intervals, out / "throughput.png", end_s),
    }
    lin = next((c.linearizability for c in result.checks
                if c.linearizability is not None and c.verdict == "invalid"), None)  # fmt: skip
    if lin is not None:
        from pnyx.check.report import write_html

        write_html(lin, ops, out / "counterexample.html",
                   f"pnyx test: {result.system} / {result.workload}: counterexample")
    index = out / "index.html"
    index.write_text(render_index(result, ops, plots, lin is not None), encoding="utf-8")
    return index


# -- plots ---------------------------------------------------------------------------------


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _shade(ax: Any, intervals: Sequence[NemesisInterval], end_s: float) -> None:
    names = sorted({i.name for i in intervals})
    colour = {n: NEMESIS_COLOURS[k % len(NEMESIS_COLOURS)] for k, n in enumerate(names)}
    labelled: set[str] = set()
    for i in intervals:
        stop = end_s if i.end_ns is None else i.end_ns / 1e9
        label = None if i.name in labelled else f"nemesis: {i.name}"
        labelled.add(i.name)
        ax.axvspan(i.start_ns / 1e9, stop, color=colour[i.name], alpha=0.18, lw=0, label=label)


def plot_latency(ops: Sequence[Operation], intervals: Sequence[NemesisInterval], path: Path,
                 end_s: float) -> str:  # fmt: skip
    """Latency (ms, log scale) of each operation at its invocation time, by outcome; an
    operation that never completed is drawn at the top of the plot."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(10, 4.2), dpi=100)
    try:
        done = [o for o in ops if o.ret_time is not None]
        top = max([1.0, *(((o.ret_time or 0) - o.call_time) / 1e6 for o in done)]) * 1.5
        for outcome in ("ok", "fail", "info"):
            xs = [o.call_time / 1e9 for o in ops if o.outcome == outcome]
            ys = [max(0.01, ((o.ret_time - o.call_time) / 1e6) if o.ret_time is not None
                      else top) for o in ops if o.outcome == outcome]  # fmt: skip
            if xs:
                ax.scatter(xs, ys, s=6, c=COLOURS[outcome], label=f"{outcome} ({len(xs)})",
                           alpha=0.75, linewidths=0)  # fmt: skip
        _shade(ax, intervals, end_s)
        ax.set_yscale("log")
        ax.set_xlim(0, end_s)
        ax.set_xlabel("time since the run began (s)")
        ax.set_ylabel("latency (ms)")
        ax.set_title("latency of each operation (at its invocation)")
        ax.grid(True, which="major", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8,
                      markerscale=2)  # fmt: skip
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path.name


def plot_throughput(ops: Sequence[Operation], intervals: Sequence[NemesisInterval],
                    path: Path, end_s: float, bucket_s: float = 1.0) -> str:  # fmt: skip
    """Operations completed per second, by outcome (``info`` ones never completed count
    at their invocation)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(10, 3.6), dpi=100)
    try:
        buckets = max(1, int(end_s / bucket_s) + 1)
        xs = [(b + 0.5) * bucket_s for b in range(buckets)]
        for outcome in ("ok", "fail", "info"):
            counts = [0] * buckets
            for o in ops:
                if o.outcome == outcome:
                    at = (o.ret_time if o.ret_time is not None else o.call_time) / 1e9
                    counts[min(buckets - 1, int(at / bucket_s))] += 1
            ax.plot(xs, [c / bucket_s for c in counts], color=COLOURS[outcome], lw=1.4,
                    label=outcome)  # fmt: skip
        _shade(ax, intervals, end_s)
        ax.set_xlim(0, end_s)
        ax.set_ylim(bottom=0)
        ax.set_xlabel("time since the run began (s)")
        ax.set_ylabel("operations / s")
        ax.set_title("throughput")
        ax.grid(True, alpha=0.3)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path.name


# -- the page --------------------------------------------------------------------------------

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1100px;color:#222}
h1{font-size:22px;margin-bottom:4px}h2{font-size:17px;margin-top:28px}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ddd;padding:3px 9px;
text-align:left;vertical-align:top}th{background:#f5f5f5}
.valid{color:#2e7d32;font-weight:600}.invalid{color:#c62828;font-weight:600}
.unknown{color:#ef8f00;font-weight:600}
pre{background:#fafafa;border:1px solid #eee;padding:8px;overflow-x:auto;font-size:12px}
img{max-width:100%;border:1px solid #eee}.muted{color:#777}
"""


def _e(value: Any) -> str:
    return html.escape(str(value))


def _verdict_span(verdict: str) -> str:
    word = {"valid": "VALID", "invalid": "VIOLATION", "unknown": "UNKNOWN"}.get(verdict,
                                                                             verdict)
    return f"<span class='{_e(verdict)}'>{_e(word)}</span>"


FAULT_TESTING_LOG = "fault_testing mutants="
"""What a node started with ``pnyx serve --test-*`` logs first (``pnyx.cli.serve_cmd``)."""


def node_mutants(result: RunResult) -> str:
    """The broken variants the nodes ran, from their own start-up line in their logs
    (``mutants=A,B lose_unsynced=true``), e.g. ``lazy_fsync; lose-unsynced``; "" if none."""
    found: set[str] = set()
    lose = False
    for path in result.logs.values():
        try:
            text = Path(path).read_text(errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            at = line.find(FAULT_TESTING_LOG)
            if at < 0:
                continue
            fields = dict(f.split("=", 1) for f in line[at:].split()[1:] if "=" in f)
            found.update(m for m in fields.get("mutants", "-").split(",") if m != "-")
            lose = lose or fields.get("lose_unsynced") == "true"
    parts = sorted(found) + (["lose-unsynced WAL"] if lose else [])
    return "; ".join(parts)


def render_index(result: RunResult, ops: Sequence[Operation], plots: dict[str, str],
                 counterexample_page: bool) -> str:  # fmt: skip
    counts = {k: sum(1 for o in ops if o.outcome == k) for k in ("ok", "fail", "info")}
    mode = "network namespaces" if result.isolated else "loopback (no namespaces)"
    rows = [
        ("verdict", _verdict_span(result.verdict)),
        ("system", _e(result.system)), ("workload", _e(result.workload)),
        *([("mutants", f"<span class='invalid'>{_e(broken)}</span>")]
          if (broken := node_mutants(result)) else []),
        ("nemeses", _e(", ".join(result.nemeses) or "none")),
        ("nodes", f"{result.nodes} ({_e(mode)})"),
        ("time limit", f"{result.time_limit_s:g} s"),
        ("rate / concurrency", f"{result.rate:g} ops/s / {result.concurrency} clients"),
        ("seed", _e(result.seed)), ("started", _e(result.started_at)),
        ("operations", f"{len(ops)}: {counts['ok']} ok, {counts['fail']} fail, "
                       f"{counts['info']} info"),
        ("phases", _e(", ".join(f"{k} {v:.1f} s" for k, v in result.phases.items()))),
    ]  # fmt: skip
    if result.error:
        rows.append(("run error", f"<span class='invalid'>{_e(result.error)}</span>"))
    if result.cleanup_errors:
        rows.append(("clean-up errors", _e("; ".join(result.cleanup_errors))))
    summary = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    checks = "".join(
        f"<tr><td>{_e(c.name)}</td><td>{_verdict_span(c.verdict)}</td>"
        f"<td>{_e(c.summary)}</td></tr>" for c in result.checks)  # fmt: skip
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>pnyx test: {_e(result.system)} / {_e(result.workload)}: "
        f"{_e(result.verdict)}</title><style>{_CSS}</style></head><body>",
        f"<h1>pnyx test: {_e(result.system)} / {_e(result.workload)} — "
        f"{_verdict_span(result.verdict)}</h1>",
        f"<table class='summary'>{summary}</table>",
        "<h2>Checks</h2><table class='checks'><tr><th>check</th><th>verdict</th>"
        f"<th>summary</th></tr>{checks}</table>",
    ]
    parts += _counterexample(result, counterexample_page)
    parts.append("<h2>Latency</h2>")
    parts.append(f"<img id='latency' alt='latency plot' src='{_e(plots['latency.png'])}'>")
    parts.append("<h2>Throughput</h2>")
    parts.append(f"<img id='throughput' alt='throughput plot' "
                 f"src='{_e(plots['throughput.png'])}'>")  # fmt: skip
    parts.append("<h2>Nemesis</h2>")
    if result.intervals:
        rows_n = "".join(
            f"<tr><td>{_e(i.name)}</td><td>{i.start_ns / 1e9:.2f}</td>"
            f"<td>{'' if i.end_ns is None else f'{i.end_ns / 1e9:.2f}'}</td>"
            f"<td>{_e(i.start)}</td><td>{_e(i.stop)}</td></tr>" for i in result.intervals)
        parts.append("<table><tr><th>nemesis</th><th>start (s)</th><th>end (s)</th>"
                     f"<th>started</th><th>stopped</th></tr>{rows_n}</table>")  # fmt: skip
    else:
        parts.append("<p class='muted'>no faults injected</p>")
    links = ["<a href='history.jsonl'>history.jsonl</a>",
             "<a href='results.json'>results.json</a>"]  # fmt: skip
    links += [f"<a href='logs/{_e(p.name)}'>{_e(h)} log</a>" for h, p in sorted(
        result.logs.items())]  # fmt: skip
    parts.append(f"<h2>Files</h2><p>{' · '.join(links)}</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _counterexample(result: RunResult, page: bool) -> list[str]:
    failing = [c for c in result.checks if c.verdict != "valid" and (c.counterexample or
                                                                     c.culprits)]
    if not failing:
        return []
    out = ["<h2 id='counterexample'>Counterexample</h2>"]
    if page:
        out.append("<p><a href='counterexample.html'>the linearizability checker's "
                   "timeline</a> (longest linearizable prefix, the operations that could "
                   "not be placed)</p>")  # fmt: skip
    for c in failing:
        out.append(f"<h3>{_e(c.name)}: {_verdict_span(c.verdict)}</h3>")
        if c.counterexample:
            text = c.counterexample
            if len(text) > 20000:
                text = text[:20000] + "\n... (cut)"
            out.append(f"<pre>{_e(text)}</pre>")
        if c.culprits:
            out.append(_timeline(c.culprits))
    return out


def _timeline(ops: Sequence[Operation], limit: int = 40) -> str:
    """The operations of a violation as bars on a shared time axis (SVG)."""
    shown = sorted(ops, key=lambda o: o.call_time)[:limit]
    if not shown:
        return ""
    t0 = min(o.call_time for o in shown)
    t1 = max((o.ret_time or o.call_time) for o in shown)
    span = max(1, t1 - t0)
    width, lane, left = 900, 22, 8
    rows = []
    for n, op in enumerate(shown):
        x0 = left + (op.call_time - t0) / span * (width - 2 * left)
        x1 = left + ((op.ret_time or t1) - t0) / span * (width - 2 * left)
        y = 6 + n * lane
        colour = COLOURS.get(op.outcome, "#999")
        label = _e(f"{describe_operation(op)}  [{op.call_time / 1e9:.3f} s .. "
                   f"{'?' if op.ret_time is None else f'{op.ret_time / 1e9:.3f}'} s]")
        rows.append(f"<rect x='{x0:.1f}' y='{y}' width='{max(2.0, x1 - x0):.1f}' "
                    f"height='{lane - 6}' fill='{colour}' opacity='0.35'/>"
                    f"<text x='{x0 + 3:.1f}' y='{y + lane - 10}' font-size='11'>{label}</text>")
    height = 12 + len(shown) * lane
    return (f"<svg class='timeline' width='{width}' height='{height}' "
            f"xmlns='http://www.w3.org/2000/svg'>{''.join(rows)}</svg>")

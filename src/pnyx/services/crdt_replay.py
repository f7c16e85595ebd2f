"""Replay an editing trace file (gzipped JSON) with :class:`FugueText`: timing and memory.

The I/O half of ``pnyx crdt replay``: reads the file, runs the pure replay of
:mod:`pnyx.protocols.crdt.text.trace`, measures it and compares with ``endContent``.
"""

from __future__ import annotations

import gzip
import json
import resource
import time
import tracemalloc
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pnyx.protocols.crdt.text.trace import ReplayError, Trace, TraceError, parse_trace, replay


@dataclass
class ReplayReport:
    """What one replay did: sizes, speed, memory, and whether the text matched."""

    file: str
    kind: str  # "sequential" | "concurrent"
    txns: int
    edits: int
    replicas: int
    elapsed_s: float
    edits_per_s: float
    text_code_points: int
    doc_size_bytes: int
    peak_rss_bytes: int  # ru_maxrss of this process: includes the parsed trace
    rss_before_replay_bytes: int  # ru_maxrss just before the replay started
    traced_peak_bytes: int  # tracemalloc peak during the replay (0 unless asked for)
    ok: bool
    mismatch: str = ""

    def to_json(self) -> dict[str, Any]:
        """Plain JSON-encodable fields."""
        return asdict(self)


def load_trace(path: str | Path) -> Trace:
    """Read and parse a ``.json.gz`` (or plain ``.json``) trace; :class:`TraceError` if bad."""
    p = Path(path)
    try:
        raw = p.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        obj = json.loads(raw)
    except (OSError, EOFError, zlib.error, UnicodeDecodeError, ValueError) as exc:
        raise TraceError(f"cannot read trace {str(p)!r}: {exc}") from exc
    try:
        return parse_trace(obj)
    except TraceError as exc:
        raise TraceError(f"{str(p)!r}: {exc}") from exc


def first_difference(got: str, want: str) -> str:
    """Where two texts first differ, with a short excerpt of each."""
    i = next((k for k, (a, b) in enumerate(zip(got, want, strict=False)) if a != b),
             min(len(got), len(want)))
    return (f"first difference at code point {i} (lengths {len(got)} vs {len(want)}): "
            f"got {got[i:i + 30]!r}, expected {want[i:i + 30]!r}")


def _max_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def run_replay(
    path: str | Path, trace: Trace | None = None, *, trace_memory: bool = False
) -> ReplayReport:
    """Replay the trace at ``path`` (or the already parsed ``trace``) and report.

    ``trace_memory`` runs the replay under ``tracemalloc`` (slower: the timing is then
    not comparable) to report the peak Python heap the replay itself allocated.
    """
    if trace is None:
        trace = load_trace(path)
    rss_before = _max_rss_bytes()
    if trace_memory:
        tracemalloc.start()
    started = time.perf_counter()
    mismatch = ""
    try:
        docs = replay(trace)
    except ReplayError as exc:
        docs = []
        mismatch = f"replay diverged: {exc}"
    elapsed = time.perf_counter() - started
    traced_peak = 0
    if trace_memory:
        traced_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    for doc in docs:
        text = doc.text()
        if text != trace.end and not mismatch:
            mismatch = (f"replica {doc.replica!r} does not end with endContent: "
                        f"{first_difference(text, trace.end)}")
    return ReplayReport(
        file=str(path),
        kind="concurrent" if trace.concurrent else "sequential",
        txns=len(trace.txns),
        edits=trace.edits,
        replicas=len(docs),
        elapsed_s=elapsed,
        edits_per_s=trace.edits / elapsed if elapsed > 0 else 0.0,
        text_code_points=len(docs[0]) if docs else 0,
        doc_size_bytes=len(docs[0].encode()) if docs else 0,
        peak_rss_bytes=_max_rss_bytes(),
        rss_before_replay_bytes=rss_before,
        traced_peak_bytes=traced_peak,
        ok=not mismatch,
        mismatch=mismatch,
    )

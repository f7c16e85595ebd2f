"""Text CRDT benchmark: pnyx FugueText vs pycrdt (Yjs in Rust) in the same run.

    .venv/bin/python bench/bench_crdt.py [--runs 3] [--random-n 100000] [--pycrdt-python PY]

Two workloads, each run ``--runs`` times per library in a fresh subprocess (so peak RSS is
per library), median reported: replaying ``automerge-paper`` (259,778 edits; the JSON is
loaded before the clock starts) and ``--random-n`` single-character inserts at random
positions (``random.Random(1)``; pnyx through ``FugueText.insert``, which also encodes the
update).  Document size is the full encoding (pnyx ``encode()``, pycrdt
``Doc.get_update()``); memory is what the process holds once the workload is done, the
document alive (resident set size from ``/proc/self/statm``), minus what it held just
before the workload began (the patches already loaded: the parent parses the trace once
and hands the workers a pickle of ``(patches, endContent)``, so no freed parser memory is
there for the document to reuse unseen); the peak (``ru_maxrss``) is reported too.
pycrdt comes from the bench environment (``pip install -e '.[bench]'``);
``--pycrdt-python`` runs its workers with another interpreter.  Writes
``bench/results/crdt.json``.
"""

from __future__ import annotations

import argparse
import gc
import gzip
import json
import os
import pickle
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRACE = ROOT.parent / "shared" / "testdata" / "crdt" / "automerge-paper.json.gz"
RESULTS = ROOT / "bench" / "results" / "crdt.json"


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _rss_bytes() -> int:
    """Resident set size now (Linux ``/proc/self/statm``: pages)."""
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _trace_path() -> Path:
    return TRACE if TRACE.exists() else Path("/work/shared/testdata/crdt/automerge-paper.json.gz")


def _write_patches(path: Path) -> None:
    """The trace as ``(patches, endContent)`` pickled to ``path`` (read by the workers)."""
    data = json.loads(gzip.decompress(_trace_path().read_bytes()))
    patches = [(p[0], p[1], p[2]) for t in data["txns"] for p in t["patches"]]
    path.write_bytes(pickle.dumps((patches, data["endContent"]), pickle.HIGHEST_PROTOCOL))


def worker(kind: str, random_n: int, patches_file: str) -> dict[str, object]:
    """Run one workload in this process and return its figures."""
    lib, workload = kind.split("-", 1)
    patches: list[tuple[int, int, str]] = []
    end = ""
    if workload == "paper":
        with open(patches_file, "rb") as f:
            patches, end = pickle.load(f)
    if lib == "pnyx":  # imported before the memory baseline: code is not document memory
        sys.path.insert(0, str(ROOT / "src"))
        from pnyx.protocols.crdt.text import FugueText
    else:
        from pycrdt import Doc, Text
    gc.collect()
    rss_before = _rss_bytes()
    if lib == "pnyx":

        doc = FugueText("bench")
        started, cpu = time.perf_counter(), time.process_time()
        if workload == "paper":
            splice = doc.splice
            for pos, deleted, text in patches:
                splice(pos, deleted, text)
        else:
            rng = random.Random(1)
            for n in range(random_n):  # n characters so far
                doc.insert(rng.randint(0, n), "x")
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        text, size = doc.text(), len(doc.encode())
    else:
        ydoc = Doc()
        ytext = ydoc.get("t", type=Text)
        started, cpu = time.perf_counter(), time.process_time()
        if workload == "paper":
            for pos, deleted, text in patches:
                if deleted:
                    del ytext[pos : pos + deleted]
                if text:
                    ytext.insert(pos, text)
        else:
            rng = random.Random(1)
            for n in range(random_n):  # n characters so far
                ytext.insert(rng.randint(0, n), "x")
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        text, size = str(ytext), len(ydoc.get_update())
    ok = text == end if workload == "paper" else len(text) == random_n
    return {"elapsed_s": elapsed, "cpu_s": cpu, "doc_size_bytes": size, "ok": ok,
            "memory_bytes": _rss_bytes() - rss_before, "peak_rss_bytes": _peak_rss_bytes(),
            "ops": len(patches) or random_n}


def _run(kind: str, python: str, random_n: int, patches: Path) -> dict[str, object] | None:
    argv = [python, str(Path(__file__).resolve()), "--worker", kind, "--random-n", str(random_n),
            "--patches", str(patches)]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, cwd=ROOT)
    if proc.returncode != 0:
        print(f"  {kind}: failed: {proc.stderr.strip().splitlines()[-1:]}", flush=True)
        return None
    result: dict[str, object] = json.loads(proc.stdout)
    print(f"  {kind}: {result['elapsed_s']:.2f} s (cpu {result['cpu_s']:.2f} s)", flush=True)
    return result


def _median(runs: list[dict[str, object]], key: str) -> float:
    return statistics.median(float(str(r[key])) for r in runs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--random-n", type=int, default=100_000)
    parser.add_argument("--pycrdt-python", default=sys.executable)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--patches", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.random_n, args.patches)))
        return 0
    with tempfile.TemporaryDirectory(prefix="pnyx-bench-crdt-") as tmp:
        patches = Path(tmp) / "patches.pickle"
        _write_patches(patches)
        return _compare(args.runs, args.random_n, args.pycrdt_python, patches)


def _compare(runs_per: int, random_n: int, pycrdt_python: str, patches: Path) -> int:
    """Every workload for both libraries, ``runs_per`` times each; print and save."""
    table: dict[str, dict[str, object]] = {}
    status = 0
    for workload in ("paper", "random"):
        for lib, python in (("pnyx", sys.executable), ("pycrdt", pycrdt_python)):
            runs = [r for _ in range(runs_per)
                    if (r := _run(f"{lib}-{workload}", python, random_n, patches)) is not None]
            if not runs:
                continue
            if not all(r["ok"] for r in runs):
                print(f"  {lib}-{workload}: WRONG RESULT", flush=True)
                status = 1
            table[f"{lib}-{workload}"] = {
                "elapsed_s": _median(runs, "elapsed_s"), "cpu_s": _median(runs, "cpu_s"),
                "doc_size_bytes": _median(runs, "doc_size_bytes"),
                "memory_bytes": _median(runs, "memory_bytes"), "runs": runs}
    print(f"\n{'workload':<22}{'pnyx s':>9}{'pycrdt s':>10}{'speed-up':>10}"
          f"{'pnyx bytes':>12}{'pycrdt bytes':>14}{'pnyx MiB':>10}{'pycrdt MiB':>12}")
    for workload, label in (("paper", "automerge-paper"), ("random", "random inserts")):
        mine, theirs = table.get(f"pnyx-{workload}"), table.get(f"pycrdt-{workload}")
        if mine is None:
            continue
        t_other = float(str(theirs["elapsed_s"])) if theirs else float("nan")
        t_mine = float(str(mine["elapsed_s"]))
        print(f"{label:<22}{t_mine:>9.2f}{t_other:>10.2f}{t_other / t_mine:>9.1f}x"
              f"{int(float(str(mine['doc_size_bytes']))):>12,}"
              f"{int(float(str(theirs['doc_size_bytes']))) if theirs else 0:>14,}"
              f"{float(str(mine['memory_bytes'])) / 2**20:>10.1f}"
              f"{float(str(theirs['memory_bytes'])) / 2**20 if theirs else 0:>12.1f}")
    load = os.getloadavg()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"when": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                   "loadavg": load, "runs": runs_per,
                                   "random_n": random_n, "results": table}, indent=1))
    print(f"\nload average {load[0]:.1f}; wrote {RESULTS.relative_to(ROOT)}")
    return status


if __name__ == "__main__":
    sys.exit(main())

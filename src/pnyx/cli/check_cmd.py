"""``pnyx check``: verdicts on history files (linearizability, Elle-style serializability, or
another consistency model chosen with ``--consistency``: see docs/CONSISTENCY.md)."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from pnyx.check.consistency import CONSISTENCY_MODELS, REGISTER_MODELS, TXN_CONSISTENCY
from pnyx.check.formats import FORMATS, read_history
from pnyx.check.history import HistoryError
from pnyx.check.linearizability import LinearizabilityResult, check_linearizable
from pnyx.check.models import MODELS, get_model

TXN_MODELS = ("list-append", "rw-register")
EXIT_OK, EXIT_VIOLATION, EXIT_BAD_INPUT, EXIT_UNKNOWN = 0, 1, 2, 3
_GOOD = ("linearizable", "serializable", *REGISTER_MODELS, *TXN_CONSISTENCY)
_REGISTER_KINDS = ("register", "kv")  # --model values the register-history checkers read
_PROGRESS_MIN_FILES = 4  # a progress bar (on a terminal) from this many files
_POOL_MIN_BYTES = 4 << 20  # below this much input, starting worker processes costs more


_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    """A byte count with an optional K/M/G/T suffix (powers of 1024): ``512M``, ``2G``."""
    if value is None:
        return None
    text = value.strip().upper().removesuffix("B").removesuffix("I")
    unit = text[-1:] if text[-1:] in _SIZE_UNITS else ""
    try:
        size = float(text[: len(text) - len(unit)]) * _SIZE_UNITS[unit]
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a size such as 512M or 2G") from None
    if size < 1 << 20:
        raise click.BadParameter(f"{value!r} is below 1M: too small to search anything")
    return int(size)


@dataclass
class FileOutcome:
    """What checking one file produced: verdict, timing, report text and JSON fields."""

    file: str
    verdict: str
    elapsed_s: float = 0.0
    text: str = ""
    error: str = ""
    record: dict[str, Any] = field(default_factory=dict)
    html: str = ""


@click.command("check")
@click.argument(
    "files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, readable=True)
)
@click.option(
    "--model",
    "model_name",
    required=True,
    type=click.Choice([*MODELS, *TXN_MODELS]),
    help="Sequential model (linearizability) or transaction kind (serializability).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="jsonl",
    show_default=True,
    help="History file format.",
)
@click.option(
    "--consistency",
    "consistency",
    type=click.Choice(CONSISTENCY_MODELS),
    default=None,
    help="Consistency model [default: linearizable, or serializable for list-append / "
    "rw-register]. sequential, causal, session (or one guarantee), convergent need "
    "--model register or kv; snapshot-isolation and serializable need list-append or "
    "rw-register. See docs/CONSISTENCY.md.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per file per line.")
@click.option(
    "--html",
    "html_path",
    type=click.Path(dir_okay=False),
    help="Write an HTML timeline (FILE-<name>.html for several inputs).",
)
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(min=0.0),
    default=None,
    help="Seconds per file; when exceeded the verdict is 'unknown'.",
)
@click.option(
    "--total-timeout",
    "total_timeout_s",
    type=click.FloatRange(min=0.0),
    default=None,
    help="Seconds for all files together; files not finished by then are 'unknown'.",
)
@click.option(
    "--max-memory",
    "max_memory",
    callback=parse_size,
    default=None,
    help="Bound on the search's estimated memory per file, e.g. 512M or 2G (default: an "
    "eighth of physical memory, at most 2G); past it the verdict is 'unknown'.",
)
@click.option(
    "--all-failures",
    is_flag=True,
    help="Search every partition to the end instead of stopping at the first violation.",
)
@click.option("--no-split", is_flag=True, help="Check all keys together (no partitioning).")
@click.option(
    "--realtime",
    is_flag=True,
    help="Serializability: add real-time order edges (strict serializability; cycles that "
    "need them are named G0-realtime ... G2-item-realtime).",
)
@click.option(
    "--process-order",
    is_flag=True,
    help="Serializability: order each process's transactions (strong session "
    "serializability; cycles that need it are named G0-process ... G2-item-process).",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Processes for checking files (and the partitions of a large history) in "
    "parallel [default: the available cores; used only when the work is large enough to "
    "pay for starting processes].",
)
def check(
    files: tuple[str, ...],
    model_name: str,
    fmt: str,
    consistency: str | None,
    as_json: bool,
    html_path: str | None,
    timeout_s: float | None,
    total_timeout_s: float | None,
    max_memory: int | None,
    all_failures: bool,
    no_split: bool,
    realtime: bool,
    process_order: bool,
    workers: int | None,
) -> None:
    """Check history FILEs: linearizable / not-linearizable / unknown, or serializable /
    the anomalies found. Exit 0 all good, 1 any violation, 2 bad input, 3 undecided."""
    consistency = _consistency_for(model_name, consistency)
    options = dict(
        model_name=model_name,
        consistency=consistency,
        fmt=fmt,
        timeout_s=timeout_s,
        total_deadline=None if total_timeout_s is None else time.time() + total_timeout_s,
        max_memory=max_memory,
        stop_at_first=not all_failures,
        split=not no_split,
        realtime=realtime,
        process=process_order,
        want_html=html_path is not None,
    )
    cores = workers or _available_cores()
    pool_files = len(files) > 1 and (workers is not None or _total_bytes(files) > _POOL_MIN_BYTES)
    options["workers"] = 1 if pool_files and cores > 1 else cores
    outcomes = _run_all(list(files), options, cores if pool_files else 1)
    for outcome in outcomes:
        _print(outcome, as_json)
        if html_path and outcome.html:
            _html_target(html_path, outcome.file, len(files)).write_text(
                outcome.html, encoding="utf-8"
            )
    sys.exit(_exit_code(outcomes))


def _consistency_for(model_name: str, consistency: str | None) -> str:
    """The model to check, after checking it fits ``--model`` (a usage error exits 2)."""
    txn = model_name in TXN_MODELS
    chosen = consistency or ("serializable" if txn else "linearizable")
    if chosen in ("serializable", *TXN_CONSISTENCY) and not txn:
        raise click.UsageError(f"--consistency {chosen} checks transactions: use --model "
                               f"{' or '.join(TXN_MODELS)} (not {model_name!r})")
    if chosen == "linearizable" and txn:
        raise click.UsageError(f"--model {model_name} holds transactions: use --consistency "
                               "serializable (add --realtime for strict serializability) or "
                               "snapshot-isolation")
    if chosen in REGISTER_MODELS and model_name not in _REGISTER_KINDS:
        raise click.UsageError(f"--consistency {chosen} reads register histories: use "
                               f"--model {' or '.join(_REGISTER_KINDS)} (not {model_name!r})")
    return chosen


def _available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _total_bytes(files: list[str] | tuple[str, ...]) -> int:
    return sum(Path(f).stat().st_size for f in files)


def _run_all(files: list[str], options: dict[str, Any], workers: int) -> list[FileOutcome]:
    if len(files) < _PROGRESS_MIN_FILES or not sys.stderr.isatty():
        return list(_outcomes(files, options, workers))
    from rich.console import Console  # here: one file checks without importing rich
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(TextColumn("checking"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=Console(stderr=True), transient=True)
    outcomes: list[FileOutcome] = []
    with progress:
        task = progress.add_task("check", total=len(files))
        for outcome in _outcomes(files, options, workers):
            outcomes.append(outcome)
            progress.advance(task)
    return outcomes


def _outcomes(files: list[str], options: dict[str, Any], workers: int) -> Iterator[FileOutcome]:
    """Each file's outcome, in file order: in this process, or in ``workers`` processes."""
    if workers > 1 and len(files) > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=workers) as pool:
            yield from pool.map(_check_file, files, [options] * len(files))
        return
    for path in files:
        yield _check_file(path, options)


def _check_file(path: str, options: dict[str, Any]) -> FileOutcome:
    """Read and check one file; bad input becomes an ``error`` outcome (never an exception)."""
    started = time.monotonic()
    try:
        history = read_history(path, options["fmt"])
        if options["consistency"] in (*REGISTER_MODELS, *TXN_CONSISTENCY):
            outcome = _consistency(path, history, options)
        elif options["model_name"] in TXN_MODELS:
            outcome = _serializability(path, history, options)
        else:
            outcome = _linearizability(path, history, options)
    except HistoryError as exc:
        return FileOutcome(path, "error", error=str(exc))
    except ValueError as exc:
        return FileOutcome(path, "error", error=f"{path}: {exc}")
    outcome.elapsed_s = time.monotonic() - started
    outcome.record.update(file=path, verdict=outcome.verdict, elapsed_s=round(outcome.elapsed_s, 6))
    return outcome


def _linearizability(path: str, history: Any, options: dict[str, Any]) -> FileOutcome:
    result: LinearizabilityResult = check_linearizable(
        history,
        get_model(options["model_name"]),
        partition=options["split"],
        timeout_s=_file_timeout_s(options),
        max_memory_bytes=options["max_memory"],
        workers=options["workers"],
        stop_at_first=options["stop_at_first"],
    )
    record: dict[str, Any] = {
        "model": options["model_name"],
        "operations": len(history),
        "partitions": len(result.partitions),
        "steps": result.steps,
        "reason": result.reason,
        "undecided": [
            {"key": _jsonable(p.key), "reason": p.reason} for p in result.undecided
        ],
        "failures": [
            {
                "key": _jsonable(p.key),
                "prefix": [op.index for op in p.prefix],
                "unplaced": [op.index for op in p.unplaced],
            }
            for p in result.failures
        ],
    }
    html = ""
    if options["want_html"]:
        from pnyx.check.report import render_html

        html = render_html(result, history.operations, title=f"{path} — {result.verdict}")
    return FileOutcome(path, result.verdict, text=result.explain(), record=record, html=html)


def _serializability(path: str, history: Any, options: dict[str, Any]) -> FileOutcome:
    from pnyx.check.serializability import SerializabilityResult, check_serializable

    result: SerializabilityResult = check_serializable(
        history,
        kind=options["model_name"],
        realtime=options["realtime"],
        process=options["process"],
    )
    record: dict[str, Any] = {
        "model": options["model_name"],
        "realtime": options["realtime"],
        "process_order": options["process"],
        "transactions": result.transactions,
        "anomalies": [{"name": a.name, "explanation": a.explanation} for a in result.anomalies],
    }
    return FileOutcome(path, result.verdict, text=result.explain(), record=record)


def _consistency(path: str, history: Any, options: dict[str, Any]) -> FileOutcome:
    from pnyx.check.consistency import check_consistency

    model = options["consistency"]
    txn = options["model_name"] in TXN_MODELS
    initial = None if txn else getattr(get_model(options["model_name"]), "initial", None)
    result = check_consistency(
        history, model, initial=initial, kind=options["model_name"] if txn else None,
        realtime=options["realtime"], process=options["process"],
        timeout_s=_file_timeout_s(options))
    record: dict[str, Any] = {
        "model": options["model_name"],
        "consistency": model,
        "operations": result.operations,
        "reason": result.reason,
        "violations": [{"name": v.name, "explanation": v.explanation,
                        "operations": [op.index for op in v.operations]}
                       for v in result.violations],
        "allowed": [{"name": v.name, "explanation": v.explanation} for v in result.allowed],
    }
    html = ""
    if options["want_html"]:
        from pnyx.check.consistency_report import render_consistency_html

        html = render_consistency_html(result, history.operations,
                                       title=f"{path} — {result.verdict}")
    return FileOutcome(path, result.verdict, text=result.explain(), record=record, html=html)


def _file_timeout_s(options: dict[str, Any]) -> float | None:
    """The per-file time-out, cut short by what is left of ``--total-timeout``."""
    timeout_s: float | None = options["timeout_s"]
    total_deadline: float | None = options["total_deadline"]
    if total_deadline is None:
        return timeout_s
    left_s = max(0.0, total_deadline - time.time())
    return left_s if timeout_s is None else min(timeout_s, left_s)


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
    except TypeError:
        return repr(value)
    return value


def _print(outcome: FileOutcome, as_json: bool) -> None:
    if outcome.error:
        click.echo(f"error: {outcome.error}", err=True)
    if as_json:
        record = outcome.record or {"file": outcome.file, "verdict": outcome.verdict}
        if outcome.error:
            record["error"] = outcome.error
        click.echo(json.dumps(record, default=repr))
        return
    if not outcome.error:
        click.echo(f"{outcome.file}: {outcome.verdict} ({outcome.elapsed_s:.3f} s)")
        shown = outcome.verdict not in _GOOD or outcome.record.get("allowed")
        if shown and outcome.text:
            click.echo("  " + outcome.text.replace("\n", "\n  "))


def _html_target(html_path: str, file: str, count: int) -> Path:
    target = Path(html_path)
    if count == 1:
        return target
    return target.with_name(f"{target.stem}-{Path(file).stem}{target.suffix or '.html'}")


def _exit_code(outcomes: list[FileOutcome]) -> int:
    verdicts = [o.verdict for o in outcomes]
    if "error" in verdicts:
        return EXIT_BAD_INPUT
    if any(v not in (*_GOOD, "unknown") for v in verdicts):
        return EXIT_VIOLATION
    return EXIT_UNKNOWN if "unknown" in verdicts else EXIT_OK

"""``pnyx check``: verdicts on history files (linearizability or Elle-style serializability)."""

from __future__ import annotations

import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from pnyx.check import (
    FORMATS,
    MODELS,
    HistoryError,
    LinearizabilityResult,
    SerializabilityResult,
    check_linearizable,
    check_serializable,
    get_model,
    read_history,
)

TXN_MODELS = ("list-append", "rw-register")
EXIT_OK, EXIT_VIOLATION, EXIT_BAD_INPUT, EXIT_UNKNOWN = 0, 1, 2, 3
_GOOD = ("linearizable", "serializable")


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
@click.option("--no-split", is_flag=True, help="Check all keys together (no partitioning).")
@click.option("--realtime", is_flag=True, help="Serializability: add real-time order edges.")
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Processes for checking files (and large partitions) in parallel.",
)
def check(
    files: tuple[str, ...],
    model_name: str,
    fmt: str,
    as_json: bool,
    html_path: str | None,
    timeout_s: float | None,
    no_split: bool,
    realtime: bool,
    workers: int,
) -> None:
    """Check history FILEs: linearizable / not-linearizable / unknown, or serializable /
    the anomalies found. Exit 0 all good, 1 any violation, 2 bad input, 3 undecided."""
    options = dict(
        model_name=model_name,
        fmt=fmt,
        timeout_s=timeout_s,
        split=not no_split,
        realtime=realtime,
        want_html=html_path is not None,
        workers=workers if len(files) == 1 else 1,
    )
    outcomes = _run_all(list(files), options, workers)
    for outcome in outcomes:
        _print(outcome, as_json)
        if html_path and outcome.html:
            _html_target(html_path, outcome.file, len(files)).write_text(
                outcome.html, encoding="utf-8"
            )
    sys.exit(_exit_code(outcomes))


def _run_all(files: list[str], options: dict[str, Any], workers: int) -> list[FileOutcome]:
    console = Console(stderr=True)
    progress = Progress(
        TextColumn("checking"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=len(files) < 4 or not console.is_terminal,
    )
    outcomes: list[FileOutcome] = []
    with progress:
        task = progress.add_task("check", total=len(files))
        if workers > 1 and len(files) > 1:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                for outcome in pool.map(_check_file, files, [options] * len(files)):
                    outcomes.append(outcome)
                    progress.advance(task)
        else:
            for path in files:
                outcomes.append(_check_file(path, options))
                progress.advance(task)
    return outcomes


def _check_file(path: str, options: dict[str, Any]) -> FileOutcome:
    """Read and check one file; bad input becomes an ``error`` outcome (never an exception)."""
    started = time.monotonic()
    try:
        history = read_history(path, options["fmt"])
        if options["model_name"] in TXN_MODELS:
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
        timeout_s=options["timeout_s"],
        workers=options["workers"],
    )
    record: dict[str, Any] = {
        "model": options["model_name"],
        "operations": len(history),
        "partitions": len(result.partitions),
        "steps": result.steps,
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
    result: SerializabilityResult = check_serializable(
        history, kind=options["model_name"], realtime=options["realtime"]
    )
    record: dict[str, Any] = {
        "model": options["model_name"],
        "transactions": result.transactions,
        "anomalies": [{"name": a.name, "explanation": a.explanation} for a in result.anomalies],
    }
    return FileOutcome(path, result.verdict, text=result.explain(), record=record)


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
        if outcome.verdict not in _GOOD and outcome.text:
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

"""``pnyx consistency``: which consistency models each replication scheme gives, and at
what cost, measured over simulator seeds (:mod:`pnyx.cli.consistency_matrix`).

- ``pnyx consistency table --seeds 1..200 [--jobs 2] [--scheme S ...] [--json F]
  [--write-doc docs/CONSISTENCY.md] [--plots DIR]``: the table, the trade-offs, optionally
  written into the document between its marker comments, and PNG plots;
- ``pnyx consistency seed SCHEME --seed N [--model M]``: one seed's verdicts with the
  counterexamples (what the table's replay lines run);
- ``pnyx consistency schemes``: the schemes and the simulator specs behind them.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import signal
import sys
from pathlib import Path

import click

from pnyx.cli.consistency_matrix import (
    HELD,
    MODELS,
    SCHEMES,
    Matrix,
    aggregate,
    plot,
    render_table,
    render_tradeoffs,
    run_matrix,
    run_seed,
    scheme,
    write_doc,
)
from pnyx.cli.errors import fail
from pnyx.cli.sim_cmd import parse_seed_range
from pnyx.sim.parallel import validate_jobs

SCHEME_KEYS = [s.key for s in SCHEMES]


@click.group()
def consistency() -> None:
    """Consistency models of the replication schemes, checked over simulator seeds."""


@consistency.command("schemes")
def schemes() -> None:
    """List the schemes of the table and the `pnyx sim` specs behind them."""
    for item in SCHEMES:
        click.echo(f"{item.key:24} {item.spec:24} --faults {item.faults:9} {item.label}")


@consistency.command("table")
@click.option("--seeds", "seed_range", default="1..200", show_default=True,
              help="Seeds A..B (inclusive) per scheme.")
@click.option("--scheme", "keys", multiple=True, type=click.Choice(SCHEME_KEYS),
              help="Only these schemes (repeatable; default: all).")
@click.option("--jobs", type=int, default=1, show_default=True,
              help="Worker processes (each runs whole seeds).")
@click.option("--tradeoff-seeds", type=click.IntRange(0), default=None,
              help="Measure latency and availability on the first N seeds only "
              "(default: all).")
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None,
              help="Also write every count and percentile as JSON to this file.")
@click.option("--write-doc", "doc_path", type=click.Path(path_type=Path), default=None,
              help="Write the table and trade-offs between the marker comments of this "
              "Markdown file (docs/CONSISTENCY.md).")
@click.option("--plots", "plots_dir", type=click.Path(path_type=Path), default=None,
              help="Write consistency-latency.png and consistency-availability.png here.")
def table(seed_range: str, keys: tuple[str, ...], jobs: int, tradeoff_seeds: int | None,
          json_path: Path | None, doc_path: Path | None, plots_dir: Path | None) -> None:
    """Run seeds of every scheme with faults, check each history against every model,
    and print which models held on every seed and which were violated (first seed)."""
    try:
        seeds = parse_seed_range(seed_range)
        validate_jobs(jobs)
    except ValueError as exc:
        fail(str(exc))
    if doc_path is not None and not doc_path.is_file():
        fail(f"--write-doc: no such file {doc_path}")
    if plots_dir is not None and not plots_dir.is_dir():
        fail(f"--plots: no such directory {plots_dir}")
    load_before = _load()
    started = datetime.datetime.now(datetime.UTC)
    chosen = list(keys) if keys else SCHEME_KEYS
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)  # stops the worker pool too
    try:
        matrix = _run(chosen, seeds, jobs, tradeoff_seeds)
    finally:
        signal.signal(signal.SIGTERM, previous)
    header = _header(seed_range, chosen, jobs, tradeoff_seeds, started, load_before)
    table_md = header + "\n\n" + render_table(matrix)
    tradeoffs_md = header + "\n\n" + render_tradeoffs(matrix)
    click.echo(table_md + "\n\n" + render_tradeoffs(matrix))
    if json_path is not None:
        json_path.write_text(json.dumps(matrix.to_json(), indent=1) + "\n", encoding="utf-8")
    if doc_path is not None:
        try:
            write_doc(doc_path, table_md, tradeoffs_md)
        except ValueError as exc:
            fail(f"{doc_path}: {exc}")
    if plots_dir is not None:
        for path in plot(matrix.to_json(), plots_dir):
            click.echo(f"wrote {path}")


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _run(keys: list[str], seeds: range, jobs: int, tradeoff_seeds: int | None) -> Matrix:
    total = len(keys) * len(seeds)
    outcomes = []
    runs = run_matrix(keys, list(seeds), jobs, tradeoff_seeds)
    with click.progressbar(runs, length=total, file=sys.stderr, label="seeds") as bar:
        for outcome in bar:
            outcomes.append(outcome)
    return aggregate(outcomes)


def _load() -> str:
    try:
        return ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def _header(seed_range: str, keys: list[str], jobs: int, tradeoff_seeds: int | None,
            started: datetime.datetime, load_before: str) -> str:
    schemes_flag = "" if keys == SCHEME_KEYS else "".join(f" --scheme {k}" for k in keys)
    if tradeoff_seeds is not None:
        schemes_flag += f" --tradeoff-seeds {tradeoff_seeds}"
    when = started.strftime("%Y-%m-%d %H:%M UTC")
    machine = f"{platform.machine()}, {os.cpu_count()} cores"
    return (f"Generated by `pnyx consistency table --seeds {seed_range}{schemes_flag} "
            f"--jobs {jobs} --write-doc docs/CONSISTENCY.md --plots docs` on {when} "
            f"({machine}; load average {load_before} at the start).")


@consistency.command("seed")
@click.argument("scheme_key", metavar="SCHEME", type=click.Choice(SCHEME_KEYS))
@click.option("--seed", type=int, required=True, help="The seed to run.")
@click.option("--model", "models", multiple=True, type=click.Choice(MODELS),
              help="Only these models (repeatable; default: all).")
def seed_cmd(scheme_key: str, seed: int, models: tuple[str, ...]) -> None:
    """Run one seed of SCHEME and print each model's verdict with its counterexample.

    Exit status 1 when a model is violated, 3 when one could not be decided.
    """
    item = scheme(scheme_key)
    outcome = run_seed(item.key, seed, models or MODELS)
    click.echo(f"{item.label}: pnyx sim {item.spec} --seed {seed} --faults {item.faults} "
               f"({outcome.operations} operations); monitor: {outcome.monitor}")
    for model, verdict in outcome.verdicts.items():
        click.echo(f"{model}: {verdict}")
        for line in outcome.details.get(model, "").splitlines():
            click.echo(f"    {line}")
    verdicts = set(outcome.verdicts.values())
    if verdicts - {HELD, "unknown"}:
        sys.exit(1)
    sys.exit(3 if "unknown" in verdicts else 0)


@consistency.command("plot")
@click.option("--json", "json_path", type=click.Path(path_type=Path, exists=True,
                                                    dir_okay=False), required=True,
              help="A file written by `pnyx consistency table --json`.")
@click.option("--plots", "plots_dir", type=click.Path(path_type=Path, file_okay=False,
                                                      exists=True), required=True,
              help="Directory for the PNG plots.")
def plot_cmd(json_path: Path, plots_dir: Path) -> None:
    """Draw the trade-off plots again from a saved `--json` file."""
    try:
        summary = json.loads(json_path.read_text(encoding="utf-8"))
        written = plot(summary, plots_dir)
    except (ValueError, KeyError, TypeError) as exc:
        fail(f"{json_path}: not a `pnyx consistency table --json` file ({exc!r})")
    for path in written:
        click.echo(f"wrote {path}")

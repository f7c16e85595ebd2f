"""``pnyx crdt``: CRDT tools -- ``replay`` an editing trace with the Fugue text CRDT."""

from __future__ import annotations

import json
import sys

import click

from pnyx.cli.crdt_doc_cmd import add_doc_commands
from pnyx.cli.errors import fail
from pnyx.protocols.crdt.text.trace import TraceError

EXIT_OK, EXIT_MISMATCH, EXIT_BAD_INPUT = 0, 1, 2


@click.group()
def crdt() -> None:
    """Convergent replicated data types: trace replay (more subcommands attach here)."""


@crdt.command()
@click.argument("trace_file", metavar="TRACE.json.gz", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
@click.option("--tracemalloc", "trace_memory", is_flag=True,
              help="Also report the replay's peak Python heap (tracemalloc; slows the replay).")
def replay(trace_file: str, as_json: bool, trace_memory: bool) -> None:
    """Replay an editing trace and check the final text against endContent.

    Sequential traces run at one replica; concurrent ones (txns with ``agent`` and
    ``parents``) at one replica per agent, each txn on exactly its parents' history,
    then all replicas are merged.  Exit status 0 if every replica ends with
    ``endContent``, 1 if not, 2 if the file cannot be read or is not a trace.
    """
    from pnyx.services.crdt_replay import load_trace, run_replay

    try:
        trace = load_trace(trace_file)
    except TraceError as exc:
        fail(str(exc), EXIT_BAD_INPUT)
    if sys.stderr.isatty() and not as_json:
        from rich.console import Console

        with Console(stderr=True).status(f"replaying {trace.edits:,} edits ..."):
            report = run_replay(trace_file, trace, trace_memory=trace_memory)
    else:
        report = run_replay(trace_file, trace, trace_memory=trace_memory)
    if as_json:
        click.echo(json.dumps(report.to_json(), sort_keys=True))
    else:
        mib = 1 << 20
        click.echo(f"trace: {report.file} ({report.kind}, {report.edits:,} edits in "
                   f"{report.txns:,} txns, {report.replicas} replica(s))")
        click.echo(f"replay: {report.elapsed_s:.2f} s, {report.edits_per_s:,.0f} edits/s")
        click.echo(f"final text: {report.text_code_points:,} code points, "
                   f"{'matches endContent' if report.ok else 'MISMATCH'}")
        click.echo(f"document size: {report.doc_size_bytes:,} bytes (encode())")
        click.echo(f"peak memory: {report.peak_rss_bytes / mib:.1f} MiB RSS (ru_maxrss, whole "
                   f"process; {report.rss_before_replay_bytes / mib:.1f} MiB before the replay)")
        if trace_memory:
            click.echo(f"replay heap peak: {report.traced_peak_bytes / mib:.1f} MiB "
                       "(tracemalloc; the timing above ran under it)")
    if not report.ok:
        fail(report.mismatch, EXIT_MISMATCH)


add_doc_commands(crdt)  # pnyx crdt serve|get|edit|status|partition|heal (crdt_doc_cmd.py)

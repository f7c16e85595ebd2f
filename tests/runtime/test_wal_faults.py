"""WAL fault injection: every damage kind at many positions of a real multi-segment WAL.

The WAL is written by a real :class:`WriteAheadLog` the way Raft writes it: hard-state
records interleaved with log appends, suffix overwrites, a snapshot and a compaction (so the
replay starts at a checkpoint segment).  Every batch but the last was fsynced, so it is
*acknowledged* (a node replies only after its batch is durable).  The last batch was written
but not fsynced: a crash may have torn it, so it may be lost.

For each damaged copy, opening the WAL must either

- refuse with a ``WalCorruptError`` whose message names the file and the byte offset (and
  leave the files as they were), or
- start with exactly the acknowledged state, possibly plus the whole in-flight batch:
  never fewer entries, never an older hard state, never half a batch.

Damage confined to the in-flight batch (what a crash can do to unsynced data: zeroed or
garbage sectors) must start, not refuse.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pnyx.core import DurableState, LogAppend, LogCompact, PersistOp, PutRecord, SnapshotSave
from pnyx.runtime.wal import MANIFEST_FILE, WalConfig, WalCorruptError, WriteAheadLog
from tests.runtime.test_wal import (
    CODEC,
    HardState,
    Span,
    entries,
    fold,
    record_spans,
    segments,
)

SEGMENT_BYTES = 4096
SECTOR = 512

Case = tuple[str, Callable[[Path], None], bool]
"""(label, damage applied to a copy of the WAL directory, damage only a crash could do)"""


@dataclass(frozen=True)
class Template:
    directory: Path
    acknowledged: DurableState
    with_in_flight: DurableState
    in_flight_segment: Path
    in_flight_start: int
    """Byte offset where the unsynced batch begins in ``in_flight_segment``."""


def raft_like_batches() -> Iterator[list[PersistOp]]:
    """What a Raft node persists: term/vote/commit changes, appends, overwrites, a snapshot."""
    term, vote, commit, last = 1, 1, 0, 0
    for step in range(1, 91):
        batch: list[PersistOp] = []
        if step % 9 == 0:
            term, vote = term + 1, 1 + step % 3
        if step % 4 == 0:
            commit = max(commit, last - 2)
        batch.append(PutRecord("hard", HardState(term, vote)))
        batch.append(PutRecord("commit", commit))
        # Now and then a new leader overwrites an uncommitted suffix.
        first = last - 1 if step % 13 == 0 and last > commit + 2 else last + 1
        count = 1 + step % 3
        batch.insert(step % 2, LogAppend(first, entries(first, count, term=term, size=90)))
        last = first + count - 1
        if step == 20:
            batch += [SnapshotSave(commit, term, b"state" * 20), LogCompact(commit)]
        yield batch


def build_template(directory: Path) -> Template:
    wal = WriteAheadLog(directory, CODEC, WalConfig(segment_bytes=SEGMENT_BYTES))
    acked: list[PersistOp] = []
    for batch in raft_like_batches():
        wal.write(batch)
        acked += batch
    state = wal.state
    next_index = state.last_index + 1
    in_flight: list[PersistOp] = [
        PutRecord("hard", HardState(99, 3)),
        LogAppend(next_index, entries(next_index, 3, term=99, size=150)),
        PutRecord("commit", next_index),
    ]
    wal.append(in_flight)
    wal.config = WalConfig(segment_bytes=SEGMENT_BYTES, fsync=False)  # written, not synced
    wal.sync()
    wal.close()
    if wal.stats.checkpoints < 1:
        raise AssertionError("the template must replay from a checkpoint")
    last = segments(directory)[-1]
    spans = record_spans(last)
    start = spans[-len(in_flight)].offset
    if len(segments(directory)) < 5 or spans[-len(in_flight)].lsn != spans[-1].lsn - 2:
        raise AssertionError("the template must have several segments and a 3-record batch")
    return Template(directory, fold(acked), fold(acked + in_flight), last, start)


def _scratch_dir() -> Path:
    """A fresh directory on tmpfs when there is one.  The cases copy, open and delete
    thousands of small files; on a disk shared with fsync-heavy tests each unlink and rmdir
    waits for the journal (minutes of a busy CI run), and what is checked here is how the
    WAL reads damaged bytes, not the file system under it."""
    shm = "/dev/shm"
    root = shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix="pnyx-wal-faults-", dir=root))


@pytest.fixture(scope="module")
def template() -> Iterator[Template]:
    root = _scratch_dir()
    try:
        yield build_template(root / "wal")
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def work() -> Iterator[Path]:
    """Where a test's damaged copies are made (removed afterwards, also on failure)."""
    root = _scratch_dir()
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def same_state(got: DurableState, want: DurableState) -> bool:
    return (
        got.records == want.records
        and got.log_start == want.log_start
        and got.log == want.log
        and got.snapshot == want.snapshot
    )


def snapshot_files(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


@dataclass
class Outcome:
    refused: int = 0
    started: int = 0


def check_case(
    template: Template,
    work: Path,
    label: str,
    damage: Callable[[Path], None],
    *,
    crash_like: bool,
    outcome: Outcome,
    must_exist: bool = False,
) -> str | None:
    """Apply ``damage`` to a fresh copy; return a failure description or None."""
    case = work / "case"
    shutil.rmtree(case, ignore_errors=True)
    shutil.copytree(template.directory, case)
    try:
        damage(case)
        before = snapshot_files(case) if case.exists() else {}
        try:
            wal = WriteAheadLog(
                case, CODEC, WalConfig(segment_bytes=SEGMENT_BYTES), must_exist=must_exist
            )
        except WalCorruptError as exc:
            outcome.refused += 1
            return refusal_problem(label, exc, case, before, crash_like=crash_like)
        outcome.started += 1
        got = wal.recovered()
        wal.close()
        if same_state(got, template.acknowledged) or same_state(got, template.with_in_flight):
            return None
        hard = got.records.get("hard")
        return (
            f"{label}: started with {got.last_index} entries (log_start {got.log_start}) and "
            f"hard state {hard}, want {template.acknowledged.last_index} entries and "
            f"{template.acknowledged.records['hard']}"
        )
    finally:
        shutil.rmtree(case, ignore_errors=True)


def refusal_problem(
    label: str,
    exc: WalCorruptError,
    case: Path,
    before: dict[str, bytes],
    *,
    crash_like: bool,
) -> str | None:
    text = str(exc)
    if crash_like:
        return f"{label}: damage only to the unsynced batch must be repaired, got: {text}"
    if str(exc.path) not in text or f"byte offset {exc.offset}" not in text:
        return f"{label}: the refusal does not name file and offset: {text}"
    if not str(exc.path).startswith(str(case)):
        return f"{label}: the refusal names {exc.path}, outside the WAL {case}"
    if exc.path.exists() and not 0 <= exc.offset <= exc.path.stat().st_size:
        return f"{label}: offset {exc.offset} is outside {exc.path}"
    after = snapshot_files(case) if case.exists() else {}
    if after != before:
        return f"{label}: a refused WAL was modified"
    return None


def run_cases(
    template: Template,
    work: Path,
    cases: list[Case],
    **options: bool,
) -> Outcome:
    outcome = Outcome()
    failures = [
        problem
        for label, damage, crash_like in cases
        if (
            problem := check_case(
                template, work, label, damage, crash_like=crash_like, outcome=outcome, **options
            )
        )
        is not None
    ]
    if failures:
        raise AssertionError(
            f"{len(failures)} of {len(cases)} cases failed:\n" + "\n".join(failures[:20])
        )
    return outcome


# -- damage helpers (byte-level, on the copy) ------------------------------------------------


def segment_names(template: Template) -> list[str]:
    return [p.name for p in segments(template.directory)]


def in_flight_only(template: Template, name: str, start: int, end: int) -> bool:
    """True when ``[start, end)`` lies in the unsynced batch (or the zeros after it)."""
    return name == template.in_flight_segment.name and start >= template.in_flight_start


def rewrite(name: str, change: Callable[[bytearray], None]) -> Callable[[Path], None]:
    def damage(case: Path) -> None:
        path = case / name
        data = bytearray(path.read_bytes())
        change(data)
        path.write_bytes(bytes(data))

    return damage


def flip(offset: int) -> Callable[[bytearray], None]:
    def change(data: bytearray) -> None:
        data[offset] ^= 0x10

    return change


def zero(start: int, end: int) -> Callable[[bytearray], None]:
    def change(data: bytearray) -> None:
        data[start:end] = bytes(end - start)

    return change


def truncate(name: str, size: int) -> Callable[[Path], None]:
    def damage(case: Path) -> None:
        with open(case / name, "r+b") as handle:
            handle.truncate(size)

    return damage


def same_size(data: bytearray, new: bytes) -> None:
    """Replace ``data`` by ``new``, padded or cut to the old size (the size is checked)."""
    size = len(data)
    data[:] = (new + bytes(size))[:size]


def spans_of(template: Template) -> dict[str, list[Span]]:
    return {p.name: record_spans(p) for p in segments(template.directory)}


# -- the suite --------------------------------------------------------------------------------


def test_bit_flips_everywhere(template: Template, work: Path) -> None:
    cases: list[Case] = []
    for name, spans in spans_of(template).items():
        size = (template.directory / name).stat().st_size
        positions = {0, 9, 17, 25, 33, 38}  # segment header: magic, seq, lsn, size, flags, crc
        for span in spans:
            positions |= {span.offset + k for k in (2, 5, 10, 18, 21, 26, 30)}
            positions |= {(span.offset + span.end) // 2, span.end - 1}
        positions |= {spans[-1].end + 7 if spans else 60, size - 1}
        for pos in sorted(p for p in positions if p < size):
            crash = in_flight_only(template, name, pos, pos + 1)
            cases.append((f"flip {name}@{pos}", rewrite(name, flip(pos)), crash))
    outcome = run_cases(template, work, cases)
    assert outcome.refused > 300 and outcome.started > 10, outcome


def test_zeroed_sectors_everywhere(template: Template, work: Path) -> None:
    cases: list[Case] = []
    for name in segment_names(template):
        size = (template.directory / name).stat().st_size
        for start in range(0, size, SECTOR):
            end = min(size, start + SECTOR)
            crash = in_flight_only(template, name, start, end)
            cases.append((f"zero {name}[{start}:{end}]", rewrite(name, zero(start, end)), crash))
    # Zeroing only the in-flight batch's tail, as a crash that lost its last sectors would.
    last = template.in_flight_segment.name
    for cut in (template.in_flight_start + 1, template.in_flight_start + 300):
        cases.append((f"zero {last}[{cut}:]", rewrite(last, zero(cut, SEGMENT_BYTES)), True))
    outcome = run_cases(template, work, cases)
    assert outcome.refused > 20 and outcome.started > 2, outcome


def test_truncations(template: Template, work: Path) -> None:
    cases: list[Case] = []
    for name, spans in spans_of(template).items():
        cuts = {0, 7, 40} | {s.offset for s in spans} | {s.offset + 15 for s in spans}
        if spans:
            cuts.add(spans[-1].end)
        for cut in sorted(cuts):
            cases.append((f"truncate {name} to {cut}", truncate(name, cut), False))
    outcome = run_cases(template, work, cases)
    assert outcome.refused == len(cases), outcome


def test_deleted_duplicated_and_reordered_segments(template: Template, work: Path) -> None:
    names = segment_names(template)
    cases: list[Case] = []

    def delete(*doomed: str) -> Callable[[Path], None]:
        def damage(case: Path) -> None:
            for name in doomed:
                (case / name).unlink()

        return damage

    def copy(source: str, target: str) -> Callable[[Path], None]:
        def damage(case: Path) -> None:
            shutil.copyfile(case / source, case / target)

        return damage

    def swap(a: str, b: str) -> Callable[[Path], None]:
        def damage(case: Path) -> None:
            (case / a).rename(case / "swap")
            (case / b).rename(case / a)
            (case / "swap").rename(case / b)

        return damage

    for name in names:
        cases.append((f"delete {name}", delete(name), False))
    cases.append(("delete the last two", delete(*names[-2:]), False))
    cases.append(("delete every segment", delete(*names), False))
    cases.append(("delete the manifest", delete(MANIFEST_FILE), False))
    beyond = f"{int(names[-1][:-4]) + 1:016d}.wal"
    for i, name in enumerate(names):
        cases.append((f"copy {name} past the end", copy(name, beyond), False))
        if i + 1 < len(names):
            cases.append((f"copy {name} over {names[i + 1]}", copy(name, names[i + 1]), False))
            cases.append((f"swap {name} and {names[i + 1]}", swap(name, names[i + 1]), False))
    outcome = run_cases(template, work, cases)
    assert outcome.refused == len(cases), outcome


def test_deleted_wal_directory_of_a_known_wal(template: Template, work: Path) -> None:
    """``must_exist`` is what the runner passes once node.json records the WAL."""

    def wipe(case: Path) -> None:
        shutil.rmtree(case)

    def wipe_contents(case: Path) -> None:
        for path in case.iterdir():
            shutil.rmtree(path) if path.is_dir() else path.unlink()

    cases: list[Case] = [("rm -r wal", wipe, False), ("empty wal dir", wipe_contents, False)]
    outcome = run_cases(template, work, cases, must_exist=True)
    assert outcome.refused == 2, outcome


def test_duplicated_reordered_and_dropped_records(template: Template, work: Path) -> None:
    cases: list[Case] = []
    for name, spans in spans_of(template).items():
        for i, span in enumerate(spans):
            crash = False  # not what a crash does, so either outcome is allowed

            def dup(data: bytearray, s: Span = span) -> None:
                same_size(data, bytes(data[: s.end] + data[s.offset : s.end] + data[s.end :]))

            def drop(data: bytearray, s: Span = span) -> None:
                same_size(data, bytes(data[: s.offset] + data[s.end :]))

            cases.append((f"duplicate {name} record {i}", rewrite(name, dup), crash))
            cases.append((f"drop {name} record {i}", rewrite(name, drop), crash))
            if i + 1 < len(spans):
                nxt = spans[i + 1]

                def swap(data: bytearray, a: Span = span, b: Span = nxt) -> None:
                    head, first, second = (
                        data[: a.offset],
                        data[a.offset : a.end],
                        data[b.offset : b.end],
                    )
                    same_size(data, bytes(head + second + first + data[b.end :]))

                cases.append((f"swap {name} records {i},{i + 1}", rewrite(name, swap), crash))
    outcome = run_cases(template, work, cases)
    assert outcome.refused > 200 and outcome.started >= 1, outcome


def test_the_untouched_template_starts_with_the_in_flight_batch(
    template: Template, work: Path
) -> None:
    outcome = run_cases(template, work, [("no damage", lambda case: None, True)])
    assert outcome.started == 1

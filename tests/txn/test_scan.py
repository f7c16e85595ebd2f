"""Scans in the simulator: coordinators that read by :class:`~pnyx.protocols.txn.messages.Scan`
(``TxnClientConfig.scan_share``: half the bank's reads of all accounts and half the
list-append transactions) pass their seeds with all faults in percolator, async commit and
serializable 2pc; the scans went page by page, met locks and resolved them; a scan that
skips locks is caught; scans off (the default) leave runs unchanged; and what 2pc promises
for scans (read locks on listed keys, no protection from phantoms) holds."""

from __future__ import annotations

from collections import Counter

import pytest

from pnyx.catalog import get_protocol
from pnyx.protocols.txn.client import ASYNC_COMMIT, ONE_PC, PERCOLATOR, TWO_PC, TxnClientConfig
from pnyx.protocols.txn.messages import LOCKED, Mutation, Prewrite, Resolve, Scan
from pnyx.protocols.txn.mvcc import SCAN_IGNORES_LOCK, MvccStore
from pnyx.protocols.txn.spec import MODE_NAMES, MUTANT_PROPERTIES, TxnMonitor, txn_spec
from pnyx.sim.runner import SimConfig, Simulation, run_sim
from pnyx.sim.schedule import parse_faults
from pnyx.sim.spec import ProtocolDef

ALL = parse_faults("all")
SCANNING = TxnClientConfig(scan_share=0.5)
DEFAULT_SEEDS = 50
"""Seeds per mode in the default suite (about 6 s of CPU each on an idle machine; the
soak test runs 1,000 more)."""


def scan_spec(mode: str, mutants: frozenset[str] = frozenset()) -> ProtocolDef:
    """``mode``'s definition whose coordinators read by scan half the time."""
    return txn_spec(mode, mutants, name=f"{MODE_NAMES[mode]}-scan", client=SCANNING)


def _run_seeds(spec: ProtocolDef, seeds: range) -> tuple[list[str], Counter[str]]:
    """Failures (seed and violation) and the coordinators' summed counters."""
    failures: list[str] = []
    totals: Counter[str] = Counter()
    for seed in seeds:
        sim = Simulation(spec, SimConfig(seed=seed, faults=ALL))
        result = sim.run()
        monitor = sim.monitor
        assert isinstance(monitor, TxnMonitor)
        for stats in monitor.client_stats.values():
            totals.update(stats)
        if not result.ok or result.unknown:
            failures.append(f"seed {seed}: {result.violation} {result.unknown}")
    return failures, totals


@pytest.mark.parametrize("mode", [PERCOLATOR, ASYNC_COMMIT, TWO_PC])
def test_scanning_coordinators_pass_their_seeds_with_all_faults(mode: str) -> None:
    failures, totals = _run_seeds(scan_spec(mode), range(1, DEFAULT_SEEDS + 1))
    assert failures == []
    assert totals["scans"] >= DEFAULT_SEEDS, totals  # the variant really scans
    assert totals["scan_pages"] > totals["scans"], totals  # page by page / range by range
    assert totals["scans_blocked"] > 0, totals  # scans met locks and resolved them
    assert totals["rolled_forward"] > 0 and totals["rolled_back"] > 0, totals


@pytest.mark.soak
@pytest.mark.parametrize("mode", [PERCOLATOR, ASYNC_COMMIT, ONE_PC, TWO_PC])
def test_scanning_coordinators_pass_1000_more_seeds(mode: str) -> None:
    first = DEFAULT_SEEDS + 1
    failures, totals = _run_seeds(scan_spec(mode), range(first, first + 1000))
    assert failures == []
    assert totals["scan_reroutes"] > 0, totals  # scans met splits and were routed again


def test_scans_off_leave_the_runs_as_they_were() -> None:
    off = txn_spec(PERCOLATOR, name="percolator-noscan", client=TxnClientConfig(scan_share=0.0))
    runs = [
        run_sim(spec, SimConfig(seed=3, faults=ALL, hash_trace=True)).trace_hash
        for spec in (get_protocol("percolator"), off, scan_spec(PERCOLATOR))
    ]
    assert runs[0] == runs[1] and runs[0] != runs[2]


# (mode) -> (property, first catching seed in 1..200 with all faults)
SCAN_MUTANT_CASES = {ASYNC_COMMIT: ("lost-commit", 6)}
SOAK_SCAN_MUTANT_CASES = {
    PERCOLATOR: ("lost-commit", 57),
    ONE_PC: ("lost-commit", 27),
    TWO_PC: ("bank", 151),
}


def _first_catch(mode: str) -> tuple[str, int]:
    spec = scan_spec(mode, frozenset({SCAN_IGNORES_LOCK}))
    assert spec.broken
    for seed in range(1, 201):
        result = run_sim(spec, SimConfig(seed=seed, faults=ALL))
        if result.violation is not None:
            return result.violation.prop, seed
    return "", 0


@pytest.mark.parametrize("mode", sorted(SCAN_MUTANT_CASES))
def test_a_scan_that_skips_locks_is_caught(mode: str) -> None:
    # A scan listing the committed value under a lock misses a write that commits below
    # its read timestamp: the transaction appends to a stale list and an acknowledged
    # append is overwritten (lost-commit), or a read of all accounts misses money (bank).
    assert _first_catch(mode) == SCAN_MUTANT_CASES[mode]


def test_the_registered_scan_mutant_scans_and_is_caught_at_the_same_seed() -> None:
    # `pnyx sim percolator-async+scan_ignores_lock` turns scans on by itself (nothing would
    # scan otherwise) and fails at the seed the scanning definition above records.
    prop, seed = SCAN_MUTANT_CASES[ASYNC_COMMIT]
    spec = get_protocol(f"{MODE_NAMES[ASYNC_COMMIT]}+{SCAN_IGNORES_LOCK}")
    assert spec.broken
    assert run_sim(spec, SimConfig(seed=seed - 1, faults=ALL)).violation is None
    violation = run_sim(spec, SimConfig(seed=seed, faults=ALL)).violation
    assert violation is not None and violation.prop == prop == MUTANT_PROPERTIES[SCAN_IGNORES_LOCK]


@pytest.mark.soak
@pytest.mark.parametrize("mode", sorted(SOAK_SCAN_MUTANT_CASES))
def test_a_scan_that_skips_locks_is_caught_in_every_mode(mode: str) -> None:
    assert _first_catch(mode) == SOAK_SCAN_MUTANT_CASES[mode]


# -- what 2pc promises for a scan ------------------------------------------------------------


def _committed(store: MvccStore, key: str, value: object, start_ts: int) -> None:
    assert store.apply(Prewrite(start_ts, key, (Mutation(key, value),))).ok
    assert store.apply(Resolve((key,), start_ts, start_ts + 1)).status == ""


def _prepare_with_read_locks(store: MvccStore, start_ts: int, scanned: tuple[str, ...]) -> bool:
    """2pc's prepare of a transaction that writes ``x`` and read-locks what it scanned."""
    muts = (Mutation("x", "t1"), *(Mutation(k, None, read_only=True) for k in scanned))
    return bool(store.apply(Prewrite(start_ts, "x", muts)).ok)


def test_2pc_read_locks_the_keys_a_scan_listed_against_writers() -> None:
    store = MvccStore()
    _committed(store, "a", 1, start_ts=1)
    listed = store.apply(Scan("a", "c", 10, 10)).items
    assert listed == (("a", 1),)
    assert _prepare_with_read_locks(store, 10, tuple(k for k, _ in listed))
    refused = store.apply(Prewrite(11, "a", (Mutation("a", 2),)))
    assert refused.status == LOCKED and refused.lock.read_only  # kept off until the decision


def test_2pc_does_not_prevent_a_phantom_in_a_scanned_interval() -> None:
    # The documented limit: no range lock.  t1 scans [a, c) at 10 and sees nothing; t2
    # inserts b there and commits at 12; t1's prepare and commit (at 13) still succeed,
    # although its scan repeated at its commit timestamp lists b.
    store = MvccStore()
    assert store.apply(Scan("a", "c", 10, 10)).items == ()
    _committed(store, "b", "phantom", start_ts=11)
    assert _prepare_with_read_locks(store, 10, ())
    assert store.apply(Resolve(("x",), 10, 13)).status == ""
    assert store.apply(Scan("a", "c", 13, 10)).items == (("b", "phantom"),)


def test_the_2pc_coordinator_read_locks_every_key_its_scan_listed() -> None:
    from pnyx.protocols.txn.coordinator import mutations_of
    from pnyx.protocols.txn.workloads import ListAppendTxn

    program = ListAppendTxn((("r", "list1", None), ("append", "list3", 7)))
    writes = program.writes({"list1": [1], "list3": None})
    scanned = ("list1", "list2")  # the scan of [list1, list3] also listed list2
    read_keys = tuple(sorted({*program.reads(), *scanned}))
    locks = {k: m.read_only for k, m in mutations_of(TWO_PC, writes, read_keys).items()}
    assert locks == {"list3": False, "list1": True, "list2": True}

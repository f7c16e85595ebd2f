"""Transactions on a real 3-process ``txn`` cluster with 8 ranges under kill -9: concurrent
coordinators (percolator, async commit, 1PC) transfer money between accounts spread over
the ranges while random processes are killed and restarted; then every read of all
accounts that committed, and the final state, conserve the total with no negative
balance, the list-append history recorded meanwhile is snapshot-isolated (Elle-style
checker), conflicts happened and were retried, and ``pnyx txn`` / ``pnyx cluster`` work
against the same cluster."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from pnyx.check.history import History
from pnyx.check.snapshot_isolation import check_snapshot_isolation
from pnyx.cli.cluster_cmd import KillRestartNemesis, cluster_command, members_of
from pnyx.cli.kv_cmd import kv
from pnyx.cli.txn_cmd import txn
from pnyx.services.txn import bank_problem
from tests.txn_real.bank import BankResult, run_bank

ACCOUNTS = 8
INITIAL = 100
INTERVAL_S = 1.0
MIN_TRANSFERS = 30
MIN_READS = 5


def _run(data_dir: Path, kills: int, clients: int = 4) -> BankResult:
    state = json.loads((data_dir / "cluster.json").read_text())
    assert state["protocol"] == "txn"
    members = members_of(data_dir)
    assert len(members) == 3
    nemesis = KillRestartNemesis(data_dir)
    result = asyncio.run(
        run_bank(
            members,
            accounts=ACCOUNTS,
            initial=INITIAL,
            clients=clients,
            nemesis=nemesis,
            rounds=kills,
            interval_s=INTERVAL_S,
            seed=7,
            min_transfers=MIN_TRANSFERS,
            min_reads=MIN_READS,
        )
    )
    assert nemesis.kills == kills
    print(
        f"transfers {result.transfers} declined {result.declined} reads {len(result.reads)} "
        f"conflicts {result.conflicts} retries {result.retries} gave_up {result.gave_up} "
        f"failed {result.failed} indeterminate {result.indeterminate} "
        f"resolutions {result.lock_resolutions} list-append events {len(result.history)} "
        f"in {result.elapsed_s:.1f} s "
        f"({(result.transfers + result.declined) / result.elapsed_s:.1f} txn/s)"
    )
    problems = [p for b in result.reads if (p := bank_problem(b, result.total))]
    assert problems == [], f"{len(problems)} bad reads of {len(result.reads)}: {problems[:3]}"
    assert bank_problem(result.final, result.total) == ""
    assert len(result.reads) >= MIN_READS, "too few committed reads of all accounts"
    assert result.transfers >= MIN_TRANSFERS, f"too little progress: {result.transfers}"
    assert result.final != [INITIAL] * ACCOUNTS, "no money moved"
    assert result.conflicts > 0 and result.retries > 0, "no conflict was met and retried"
    history = History.from_events(result.history)
    txns = [op for op in history if op.f == "txn"]
    assert sum(op.outcome == "ok" for op in txns) >= MIN_READS
    verdict = check_snapshot_isolation(txns, kind="list-append")
    assert verdict.verdict != "unknown", verdict.reason
    assert verdict.ok, verdict.explain()
    return result


def test_bank_transfers_conserve_money_under_kill9_and_the_cli_works(txn_cluster: Path) -> None:
    _run(txn_cluster, kills=2)
    runner = CliRunner()
    target = ["--data-dir", str(txn_cluster)]
    checked = runner.invoke(txn, [*target, "bank-check"])
    assert checked.exit_code == 0, checked.output
    assert f"{ACCOUNTS} accounts, total {ACCOUNTS * INITIAL}" in checked.output
    too_much = runner.invoke(txn, [*target, "transfer", "0", "1", str(ACCOUNTS * INITIAL + 1)])
    assert too_much.exit_code == 1 and "less than" in too_much.output
    assert runner.invoke(txn, [*target, "--mode", "1pc", "put", "cli-key", "v1"]).exit_code == 0
    got = runner.invoke(txn, [*target, "get", "cli-key"])
    assert got.exit_code == 0 and json.loads(got.output) == "v1"
    assert runner.invoke(txn, [*target, "get", "!ts"]).exit_code == 2
    ops = txn_cluster.parent / "ops.txt"
    ops.write_text("# one transaction\nput f1 x\nget f1\nget cli-key\ndelete cli-key\n")
    ran = runner.invoke(txn, [*target, "run", "--file", str(ops)])
    assert ran.exit_code == 0 and ran.output.split() == ['"x"', '"v1"'], ran.output
    assert json.loads(runner.invoke(txn, [*target, "get", "cli-key"]).output) is None
    ops.write_text("put only-a-key\n")
    bad = runner.invoke(txn, [*target, "run", "--file", str(ops)])
    assert bad.exit_code == 2 and "line 1" in bad.output
    shown = runner.invoke(kv, [*target, "ranges"])
    assert shown.exit_code == 0 and "8 ranges" in shown.output, shown.output
    refused = runner.invoke(kv, [*target, "put", "k", "v"])  # would clobber a txn record
    assert refused.exit_code == 2 and "pnyx txn put" in refused.output
    status = cluster_command("status", "--data-dir", str(txn_cluster))
    assert status.returncode == 0 and "txn" in status.stdout, status.stderr
    down = cluster_command("down", "--data-dir", str(txn_cluster))
    assert down.returncode == 0, down.stderr


@pytest.mark.soak
def test_bank_under_200_kills(txn_cluster: Path) -> None:
    _run(txn_cluster, kills=200)

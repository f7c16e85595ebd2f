"""Ranges split by size in bytes on real processes: ``pnyx cluster up --protocol multiraft
--split-bytes 16384`` (one range at the start), 48 values of about 1 KB written (far below
the 128-key split): the range splits by bytes into several, every value reads back, ``pnyx
kv ranges`` shows the ranges, and the option is kept for restarts; the same for a txn
cluster (Percolator records measured); ``--split-bytes`` is refused for protocols without
ranges."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from pnyx.cli.cluster_cmd import cluster_command, members_of
from pnyx.cli.kv_cmd import kv
from pnyx.cli.serve_cmd import serve
from pnyx.protocols.raft.kv import GET, PUT, KvOp
from pnyx.services.multiraft import KeyOutsideRange, RangeInfo, SyncRangeClient, spread_key

SPLIT_BYTES = 16_384
VALUES = 48
VALUE_BYTES = 1_000
SPLIT_WAIT_S = 60.0


def _value(n: int) -> str:
    return f"v{n}-" + "x" * VALUE_BYTES


def test_ranges_split_by_bytes_and_every_value_reads_back(tmp_path: Path) -> None:
    data_dir = tmp_path / "bytes"
    result = cluster_command(
        *("up", "--protocol", "multiraft", "--nodes", "3", "--split-bytes", str(SPLIT_BYTES)),
        *("--data-dir", str(data_dir), "--detach"),
    )
    assert result.returncode == 0, result.stderr
    state = json.loads((data_dir / "cluster.json").read_text())
    for node in state["nodes"]:
        assert node["argv"][-2:] == ["--split-bytes", str(SPLIT_BYTES)]  # kept for restarts
    keys = [spread_key(n) for n in range(VALUES)]
    with SyncRangeClient(members_of(data_dir), deadline_s=30.0) as client:
        assert len(client.ranges()) == 1
        for n, key in enumerate(keys):
            client.put(key, _value(n))
        # About 48 KB: split at 16 KB, then each half again, in the leaders' own time.
        deadline = time.monotonic() + SPLIT_WAIT_S
        ranges = client.ranges()
        while len(ranges) < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
            ranges = client.ranges()
        assert len(ranges) >= 3, ranges
        assert [client.get(key) for key in keys] == [_value(n) for n in range(VALUES)]
        _commands(client, keys, ranges)
    print(
        f"{len(ranges)} ranges: " + ", ".join(f"[{r.desc.start!r}, {r.desc.end!r})" for r in ranges)
    )
    shown = CliRunner().invoke(kv, ["--data-dir", str(data_dir), "ranges"])
    assert shown.exit_code == 0, shown.output
    shown_count = re.search(r"(\d+) ranges", shown.output)
    assert shown_count is not None and int(shown_count.group(1)) >= 3, shown.output


def _commands(client: SyncRangeClient, keys: list[str], ranges: list[RangeInfo]) -> None:
    """``RangeClient.command``: range commands routed by key (here the plain KV ones)."""
    first = keys[0]
    (home,) = [r.desc for r in ranges if r.desc.contains(first)]
    far = next(k for k in keys if not home.contains(k))
    assert client.command(first, KvOp(PUT, first, "by-command"), exactly_once=True) is None
    assert client.command(first, KvOp(GET, first)) == "by-command"
    with pytest.raises(KeyOutsideRange, match=f"names a key outside range {home.range_id}"):
        client.command(first, KvOp(PUT, far, "misrouted"))
    assert client.get(far) == _value(keys.index(far))


def test_split_bytes_is_refused_without_ranges(tmp_path: Path) -> None:
    result = cluster_command(
        *("up", "--protocol", "raft", "--nodes", "1", "--split-bytes", "100"),
        *("--data-dir", str(tmp_path / "raft"), "--detach"),
    )
    assert result.returncode == 2
    assert "--split-bytes 100: only for --protocol multiraft or txn" in result.stderr
    served = CliRunner().invoke(
        serve,
        [
            *("--id", "1", "--peers", "1=127.0.0.1:1", "--protocol", "raft"),
            *("--data-dir", str(tmp_path / "serve"), "--split-bytes", "100"),
        ],
    )
    assert served.exit_code == 2, served.output
    assert "--split-bytes 100: only for --protocol multiraft or txn" in served.output


def test_transaction_ranges_split_by_bytes_of_their_records(tmp_path: Path) -> None:
    # A txn range measures its Percolator records (KeyRecord) through the same hooks.
    from pnyx.services.txn import SyncTxnStore

    data_dir = tmp_path / "txn-bytes"
    result = cluster_command(
        *("up", "--protocol", "txn", "--nodes", "3", "--split-bytes", "40000"),
        *("--data-dir", str(data_dir), "--detach"),
    )
    assert result.returncode == 0, result.stderr
    members = members_of(data_dir)
    keys = [spread_key(n) for n in range(32)]
    store = SyncTxnStore(members)
    try:
        for n, key in enumerate(keys):  # about 160 KB of committed values
            with store.transaction() as tx:
                tx.put(key, f"{n}:" + "t" * 5_000)
        with SyncRangeClient(members, deadline_s=30.0) as client:
            deadline = time.monotonic() + SPLIT_WAIT_S
            ranges = client.ranges()
            while len(ranges) < 3 and time.monotonic() < deadline:
                time.sleep(0.2)
                ranges = client.ranges()
        assert len(ranges) >= 3, ranges
        with store.transaction() as tx:
            values = [tx.get(key) for key in keys]
        assert values == [f"{n}:" + "t" * 5_000 for n in range(len(keys))]
    finally:
        store.close()

"""The data directory: node.json stamp (node, membership, cluster) and the exclusive lock."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pnyx.runtime.datadir import (
    STAMP_FILE,
    DataDirError,
    DataDirStamp,
    claim_data_dir,
    lock_data_dir,
    read_stamp,
    record_wal_created,
    wal_recorded,
)

ONE = DataDirStamp(1, (1,), "c-old")


def test_a_new_directory_is_stamped_and_read_back(tmp_path: Path) -> None:
    data_dir = tmp_path / "n1"
    assert read_stamp(data_dir) is None
    assert claim_data_dir(data_dir, ONE) is False
    assert read_stamp(data_dir) == ONE
    assert not wal_recorded(data_dir)
    record_wal_created(data_dir, ONE)
    assert wal_recorded(data_dir) and read_stamp(data_dir) == ONE
    assert claim_data_dir(data_dir, ONE) is True
    raw = json.loads((data_dir / STAMP_FILE).read_text())
    assert raw == {"format": 2, "node_id": 1, "members": [1], "cluster": "c-old", "wal": True}


@pytest.mark.parametrize(
    "wanted",
    [
        DataDirStamp(1, (1, 2, 3), "c-old"),  # another membership (issue 16 item 6)
        DataDirStamp(2, (1,), "c-old"),  # another node
        DataDirStamp(1, (1,), "c-new"),  # another cluster
    ],
)
def test_a_directory_of_another_node_group_or_cluster_is_refused(
    tmp_path: Path, wanted: DataDirStamp
) -> None:
    claim_data_dir(tmp_path, ONE)
    with pytest.raises(DataDirError) as info:
        claim_data_dir(tmp_path, wanted)
    text = str(info.value)
    assert (
        f"data directory {tmp_path} belongs to node 1 of cluster 'c-old' with members [1]" in text
    )
    assert f"this node is {wanted.node_id} of cluster {wanted.cluster!r}" in text
    assert f"members {list(wanted.members)}" in text
    assert f"rm -r {tmp_path}" in text
    assert read_stamp(tmp_path) == ONE, "a refused directory keeps its stamp"


def test_an_old_format_stamp_is_refused_with_the_command_to_start_fresh(tmp_path: Path) -> None:
    (tmp_path / STAMP_FILE).write_text(json.dumps({"node_id": 1, "format": 1}))
    with pytest.raises(DataDirError, match=r"older pnyx .*node\.json format 1.*rm -r"):
        read_stamp(tmp_path)
    with pytest.raises(DataDirError, match="format 1"):
        claim_data_dir(tmp_path, ONE)


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '{"format": 2, "node_id": "x"}'])
def test_an_unreadable_stamp_is_a_clear_error(tmp_path: Path, text: str) -> None:
    (tmp_path / STAMP_FILE).write_text(text)
    with pytest.raises(DataDirError, match=f"rm -r {tmp_path}"):
        read_stamp(tmp_path)


def test_a_second_lock_on_the_same_directory_is_refused_until_released(tmp_path: Path) -> None:
    first = lock_data_dir(tmp_path)
    try:
        with pytest.raises(DataDirError, match=rf"in use by another process \(pid {os.getpid()}\)"):
            lock_data_dir(tmp_path)  # flock: a second open file description conflicts too
    finally:
        first.release()
    assert not first.held
    second = lock_data_dir(tmp_path)
    second.release()


def test_the_lock_holds_against_another_process_and_dies_with_it(tmp_path: Path) -> None:
    script = (
        "import sys; from pathlib import Path\n"
        "from pnyx.runtime.datadir import lock_data_dir\n"
        "handle = lock_data_dir(Path(sys.argv[1]))\n"
        "print('locked', flush=True)\n"
        "sys.stdin.readline()\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "locked"
        with pytest.raises(DataDirError, match=rf"in use by another process \(pid {child.pid}\)"):
            lock_data_dir(tmp_path)
    finally:
        child.kill()
        child.wait(timeout=60)
    lock_data_dir(tmp_path).release()  # the kernel dropped the dead process's lock


def test_a_data_dir_that_is_a_file_is_a_clear_error(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(DataDirError, match=r"is not a directory|cannot create"):
        lock_data_dir(target)

"""``pnyx crdt replay``: exit status 0 on a match, 1 on a mismatch, 2 on a bad file."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from click.testing import CliRunner

from pnyx.cli.main import cli
from tests.crdt.test_text_trace import ReferenceTraceMaker


def _write(path: Path, obj: object) -> Path:
    path.write_bytes(gzip.compress(json.dumps(obj).encode()))
    return path


def test_matching_concurrent_trace_exits_0_with_figures(tmp_path: Path) -> None:
    trace = _write(tmp_path / "ok.json.gz", ReferenceTraceMaker(3, agents=3).make(40))
    result = CliRunner().invoke(cli, ["crdt", "replay", str(trace)])
    assert result.exit_code == 0, result.output
    for needle in ("concurrent", "edits/s", "matches endContent", "bytes (encode())",
                   "ru_maxrss"):
        assert needle in result.output
    result = CliRunner().invoke(cli, ["crdt", "replay", "--json", str(trace)])
    report = json.loads(result.output)
    assert result.exit_code == 0 and report["ok"] and report["replicas"] >= 2
    assert report["doc_size_bytes"] > 0 and report["edits"] > 0


def test_mismatch_exits_1(tmp_path: Path) -> None:
    obj = ReferenceTraceMaker(4, agents=2).make(30)
    obj["endContent"] += "!"
    result = CliRunner().invoke(cli, ["crdt", "replay", str(_write(tmp_path / "m.json.gz", obj))])
    assert result.exit_code == 1
    assert "does not end with endContent" in result.output


def test_divergent_patch_exits_1(tmp_path: Path) -> None:
    obj = {"endContent": "", "txns": [{"patches": [[5, 0, "x"]]}]}
    result = CliRunner().invoke(cli, ["crdt", "replay", str(_write(tmp_path / "d.json.gz", obj))])
    assert result.exit_code == 1 and "outside the document" in result.output


def test_unreadable_or_malformed_file_exits_2(tmp_path: Path) -> None:
    (tmp_path / "junk.json.gz").write_bytes(b"\x1f\x8b\x08 junk")
    malformed = _write(tmp_path / "bad.json.gz", {"endContent": "", "txns": [{"patches": 1}]})
    for path in (tmp_path / "junk.json.gz", malformed, tmp_path / "missing.json.gz"):
        result = CliRunner().invoke(cli, ["crdt", "replay", str(path)])
        assert result.exit_code == 2, (path, result.output)
        assert "pnyx: error:" in result.output

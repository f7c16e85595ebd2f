"""``pnyx sim`` command line: runs, ranges, replays, hashes, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from pnyx.cli.main import cli


def _invoke(*args: str) -> tuple[int, str, str]:
    runner = CliRunner()
    result = runner.invoke(cli, ["sim", *args])
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["raft-nope", "--seed", "1"], "unknown protocol 'raft-nope'; valid: "),
        (["broadcast", "--seeds", "9..3"], "bad seed range '9..3'"),
        (["broadcast", "--seeds", "x..3"], "bad seed range 'x..3'"),
        (["broadcast", "--faults", "drop,fire"], "unknown fault 'fire'; valid: delay, drop"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], needle: str) -> None:
    code, _out, err = _invoke(*args)
    assert code == 2
    assert needle in err
    assert len(err.strip().splitlines()) == 1


def test_unknown_protocol_lists_the_valid_ones_sorted() -> None:
    code, _out, err = _invoke("raft-nope", "--seed", "1")
    valid = err.strip().split("; valid: ", 1)[1].split(", ")
    assert code == 2 and valid == sorted(valid)
    assert {"broadcast", "raft", "etcd"} <= set(valid), valid


def test_missing_schedule_file_is_exit_2(tmp_path: Path) -> None:
    code, _, err = _invoke("broadcast", "--schedule", str(tmp_path / "nope.json"))
    assert code == 2 and "cannot read schedule" in err


def test_seed_range_summary_and_exit_codes() -> None:
    code, out, _ = _invoke("broadcast", "--seeds", "1..5")
    assert code == 0 and "passed" in out
    code, out, _ = _invoke("broadcast-broken", "--seeds", "1..5", "--no-shrink")
    assert code == 1 and "failing seeds:" in out
    assert "replay: pnyx sim broadcast-broken --seed " in out


def test_json_lines_per_seed() -> None:
    code, out, _ = _invoke("broadcast", "--seeds", "1..3", "--json")
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [r["seed"] for r in rows] == [1, 2, 3]
    assert all(r["ok"] for r in rows)


def test_trace_hash_is_the_last_line_and_stable() -> None:
    first = _invoke("broadcast", "--seed", "4", "--trace-hash")[1].splitlines()[-1]
    second = _invoke("broadcast", "--seed", "4", "--trace-hash")[1].splitlines()[-1]
    other = _invoke("broadcast", "--seed", "5", "--trace-hash")[1].splitlines()[-1]
    assert first == second != other
    assert len(first) == 32 and int(first, 16) >= 0


def test_failure_prints_seed_property_command_and_shrunk_schedule(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, _ = _invoke("broadcast-broken", "--seed", "2")
    assert code == 1
    assert "seed 2" in out and "violated liveness" in out
    assert "replay: pnyx sim broadcast-broken --seed 2 --faults all --replay" in out
    assert "shrunk in" in out
    schedule = tmp_path / "pnyx-broadcast-broken-seed2.schedule.json"
    assert schedule.exists()
    # The printed minimal command reproduces the failure.
    code, out, _ = _invoke("broadcast-broken", "--seed", "2", "--schedule", str(schedule))
    assert code == 1 and "violated liveness" in out


def test_replay_json_trace_lines() -> None:
    code, out, _ = _invoke("broadcast", "--seed", "3", "--faults", "none", "--replay", "--json")
    lines = [json.loads(line) for line in out.splitlines()]
    events = [line for line in lines if "event" in line]
    assert code == 0 and events
    assert {"deliver", "tick"} <= {e["event"] for e in events}
    assert lines[-1]["ok"] is True

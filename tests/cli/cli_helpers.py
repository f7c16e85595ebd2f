"""Running ``pnyx`` in a child process and checking its one-line errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

PNYX = [sys.executable, "-m", "pnyx"]
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (DEBUG|INFO|WARNING) pnyx\.")
"""A log record of ``pnyx serve`` (its logs go to stderr too)."""


def pnyx(*args: str, timeout_s: float = 90) -> subprocess.CompletedProcess[str]:
    """Run ``pnyx ARGS...`` and capture its output."""
    return subprocess.run(
        [*PNYX, *args], capture_output=True, text=True, timeout=timeout_s, check=False
    )


def assert_one_line_error(
    result: subprocess.CompletedProcess[str], status: int, needle: str
) -> str:
    """The command exited ``status`` with one stderr line containing ``needle``, no traceback.

    Log records (``pnyx serve`` logs to stderr) do not count; an ERROR record would."""
    lines = [line for line in result.stderr.strip().splitlines() if not LOG_LINE.match(line)]
    assert result.returncode == status, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 1, result.stderr
    assert needle in lines[0], lines[0]
    return lines[0]


def read_state(data_dir: Path) -> dict[str, Any]:
    """The parsed ``cluster.json`` of ``data_dir``."""
    state: dict[str, Any] = json.loads((data_dir / "cluster.json").read_text())
    return state


def wait_for(predicate: Any, timeout_s: float = 60.0, what: str = "condition") -> None:
    """Poll ``predicate`` until true; AssertionError naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what} not reached within {timeout_s} s")


def one_leader(data_dir: Path) -> bool:
    """True when ``cluster status`` shows exactly one leader that every node agrees on."""
    status = pnyx("cluster", "status", "--data-dir", str(data_dir), "--json")
    rows = [json.loads(line) for line in status.stdout.splitlines()]
    leaders = {r["leader"] for r in rows}
    roles = [r["role"] for r in rows]
    return bool(rows) and roles.count("leader") == 1 and len(leaders) == 1 and None not in leaders

"""Architecture contracts: core and protocols stay pure; layers only import downwards."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_linter_contracts_hold() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run(
        [str(lint)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "core and protocols are pure" in proc.stdout
    assert "KEPT" in proc.stdout and "BROKEN" not in proc.stdout

"""Run every benchmark script in this folder (``make bench``), one after another."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def main() -> int:
    here = Path(__file__).resolve().parent
    status = 0
    for script in sorted(here.glob("bench_*.py")):
        print(f"== {script.name}", flush=True)
        proc = subprocess.run([sys.executable, str(script)], cwd=here.parent, check=False)
        status = status or proc.returncode
    return status


if __name__ == "__main__":
    sys.exit(main())

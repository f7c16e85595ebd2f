"""Run every benchmark script in this folder (``make bench``), one after another."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ARGS: dict[str, list[str]] = {
    # pnyx etcd vs real etcd 3.4 (about 13 minutes: check perf s/m/l is 60 s each on both);
    # writes bench/results/etcd.json and etcd-throughput-latency.png
    "bench_etcd.py": ["--profile"],
}
"""Arguments a script gets under ``make bench`` (none unless listed)."""


def main() -> int:
    here = Path(__file__).resolve().parent
    status = 0
    for script in sorted(here.glob("bench_*.py")):
        print(f"== {script.name}", flush=True)
        argv = [sys.executable, str(script), *ARGS.get(script.name, [])]
        proc = subprocess.run(argv, cwd=here.parent, check=False)
        status = status or proc.returncode
    return status


if __name__ == "__main__":
    sys.exit(main())

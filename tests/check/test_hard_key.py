"""A hard linearizable key must not hide a plainly illegal one (time and memory bounded).

The check runs in a subprocess with an address-space limit, so a runaway search cannot eat
the machine; it reports its verdict, failing keys, elapsed time and peak RSS growth.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LIMIT_BYTES = 3 << 30
MAX_SECONDS = 20.0
MAX_RSS_GROWTH_MB = 512
CHILD = f"""
import json, resource, time
resource.setrlimit(resource.RLIMIT_AS, ({LIMIT_BYTES}, {LIMIT_BYTES}))
from pnyx.check import check_linearizable
from tests.check.generate import hard_and_illegal_history
g = hard_and_illegal_history(0)
history, model = g.history(), g.model()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.monotonic()
result = check_linearizable(history, model, timeout_s=60)
print(json.dumps({{
    "verdict": result.verdict, "failing": [p.key for p in result.failures],
    "expected": sorted(g.anomalous_keys), "elapsed": time.monotonic() - started,
    "rss_growth_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024,
}}))
"""


def test_the_generated_hard_key_is_hard_alone() -> None:
    """Guard: without the illegal key, the hard key does not finish in 300,000 steps."""
    from pnyx.check import check_linearizable
    from tests.check.generate import hard_and_illegal_history

    g = hard_and_illegal_history(0)
    hard = [op for op in g.history() if op.key == "hard"]
    result = check_linearizable(hard, g.model(), max_steps=300_000)
    assert result.verdict == "unknown" and "partition key 'hard'" in result.reason


def test_hard_key_does_not_hide_an_illegal_key() -> None:
    proc = subprocess.run([sys.executable, "-c", CHILD], cwd=REPO, capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["verdict"] == "not-linearizable", out
    assert out["failing"] == out["expected"] == ["bad"], out
    assert out["elapsed"] < MAX_SECONDS, out
    assert out["rss_growth_mb"] < MAX_RSS_GROWTH_MB, out

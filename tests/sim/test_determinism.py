"""Same seed ⇒ same trace, across runs and processes; different seeds differ."""

import os
import subprocess
import sys
from pathlib import Path

from pnyx.catalog import get_protocol
from pnyx.sim.runner import SimConfig, run_sim
from pnyx.sim.schedule import parse_faults

ALL = parse_faults("all")


def _hash(seed: int, name: str = "broadcast") -> str:
    result = run_sim(get_protocol(name), SimConfig(seed=seed, faults=ALL, hash_trace=True))
    assert len(result.trace_hash) == 32
    return result.trace_hash


def test_same_seed_same_trace_in_process() -> None:
    assert _hash(11) == _hash(11)
    assert _hash(3, "broadcast-broken") == _hash(3, "broadcast-broken")


def test_different_seeds_differ() -> None:
    hashes = {_hash(seed) for seed in range(1, 11)}
    assert len(hashes) == 10


def test_trace_identical_across_processes_and_hash_seeds() -> None:
    pnyx = Path(sys.executable).with_name("pnyx")
    digests = []
    for hash_seed in ("0", "4242"):
        env = dict(os.environ, PYTHONHASHSEED=hash_seed)
        proc = subprocess.run(
            [str(pnyx), "sim", "broadcast", "--seed", "17", "--faults", "all", "--trace-hash"],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        digests.append(proc.stdout.strip().splitlines()[-1])
    assert digests[0] == digests[1]
    assert digests[0] == _hash(17)


def test_full_trace_is_recorded_on_replay() -> None:
    result = run_sim(get_protocol("broadcast"), SimConfig(seed=5, faults=ALL, trace=True))
    kinds = {record[1] for record in result.trace}
    assert {"deliver", "tick", "fsync", "apply", "history", "heal-phase"} <= kinds
    times = [record[0] for record in result.trace]
    assert times == sorted(times)

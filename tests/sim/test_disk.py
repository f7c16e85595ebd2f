"""The simulated disk: each fault kind, and what recovery does with it."""

from __future__ import annotations

from pnyx.catalog import get_protocol
from pnyx.core import LogAppend, PutRecord
from pnyx.sim.disk import SimDisk
from pnyx.sim.runner import SimConfig, Simulation
from pnyx.sim.schedule import DEFAULT_KINDS, LYING_KINDS, format_faults, generate, parse_faults
from tests.sim.probe import PROBE, ProbeMonitor


def _append(i: int) -> LogAppend:
    return LogAppend(i, (("e", i),))


def test_sound_disk_keeps_every_synced_write() -> None:
    disk = SimDisk()
    assert disk.sync([_append(1), _append(2), PutRecord("hs", 7)], victim=0) == ""
    assert disk.state.last_index == 2 and disk.state.records["hs"] == 7
    assert disk.records == 3 and not disk.damage


def test_corrupt_sector_is_detected_and_needs_valid_records_after_it() -> None:
    disk = SimDisk()
    disk.sync([_append(1)], victim=0)
    assert not disk.corrupt_sector()  # a lone record: nothing valid follows it
    disk.sync([_append(2)], victim=0)
    assert disk.corrupt_sector()
    assert "checksum mismatch" in disk.damage


def test_misdirected_write_is_detected() -> None:
    disk = SimDisk()
    disk.sync([_append(1)], victim=0)
    disk.misdirect_next = True
    assert disk.sync([_append(2), PutRecord("hs", 1)], victim=0) == "misdirect"
    assert "out of sequence" in disk.damage
    assert not disk.misdirect_next


def test_lost_write_at_the_tail_is_silent() -> None:
    disk = SimDisk()
    disk.sync([_append(1)], victim=0)
    disk.lose_next = True
    assert disk.sync([PutRecord("hs", 2)], victim=0) == "lost-write"
    assert "hs" not in disk.state.records and not disk.damage  # the lie: nobody can tell


def test_lost_write_followed_by_a_later_one_leaves_a_detected_gap() -> None:
    disk = SimDisk()
    disk.sync([_append(1)], victim=0)
    disk.lose_next = True
    disk.sync([_append(2)], victim=0)  # lost
    disk.sync([_append(3)], victim=0)
    assert disk.damage.startswith("gap")
    assert disk.state.last_index == 1


def test_lying_fsync_keeps_data_in_a_cache_a_crash_loses() -> None:
    disk = SimDisk()
    disk.lying = True
    assert disk.sync([_append(1)], victim=0) == "lying-fsync"
    assert disk.state.last_index == 0
    assert disk.power_loss() == 1
    disk.lying = True
    disk.sync([_append(1)], victim=0)
    disk.lying = False
    disk.sync([_append(2)], victim=0)  # an honest fsync flushes the cache first
    assert disk.state.last_index == 2 and disk.power_loss() == 0


def test_lying_kinds_are_off_in_all_and_can_be_named() -> None:
    assert parse_faults("all") == DEFAULT_KINDS
    assert not LYING_KINDS & DEFAULT_KINDS
    assert {"corrupt", "misdirect"} <= DEFAULT_KINDS
    both = parse_faults("all,lying-fsync")
    assert "lying-fsync" in both and format_faults(both) == "all,lying-fsync"
    assert parse_faults(format_faults(both)) == both


def test_disk_events_leave_the_other_draws_of_a_seed_unchanged() -> None:
    classic = frozenset(DEFAULT_KINDS - {"corrupt", "misdirect"})
    for seed in range(10):
        before = generate(seed, 5, 2, 3000, classic)
        after = generate(seed, 5, 2, 3000, classic | {"corrupt", "misdirect"})
        assert [e for e in after.events if e.kind not in ("corrupt", "misdirect")] == list(
            before.events
        )
        assert after.network == before.network and after.drift == before.drift


def _probe_runs(faults: str, seeds: range) -> list[Simulation]:
    sims = []
    for seed in seeds:
        sim = Simulation(PROBE, SimConfig(seed=seed, faults=parse_faults(faults)))
        result = sim.run()
        assert result.ok, result.violation
        sims.append(sim)
    return sims


def test_detected_damage_stops_the_node_and_never_shortens_a_log() -> None:
    stopped = 0
    for sim in _probe_runs("corrupt,misdirect,crash", range(1, 25)):
        monitor = sim.monitor
        assert isinstance(monitor, ProbeMonitor)
        assert monitor.shorter == []  # every restart recovered all acknowledged entries
        for nid in sim.node_ids:
            if sim.stopped(nid):
                stopped += 1
                assert sim.node(nid) is None  # stays down through the heal phase
        assert sim.stats.fail_stops == sum(sim.stopped(n) for n in sim.node_ids) <= 1
    assert stopped > 0


def test_lying_disks_do_shorten_logs_and_the_probe_sees_it() -> None:
    shorter = 0
    for sim in _probe_runs("lying-fsync,lost-write", range(1, 25)):
        monitor = sim.monitor
        assert isinstance(monitor, ProbeMonitor)
        shorter += len(monitor.shorter)
    assert shorter > 0


def test_raft_survives_detected_disk_damage() -> None:
    spec = get_protocol("raft")
    stops = 0
    for seed in range(12):
        sim = Simulation(spec, SimConfig(seed=seed, faults=parse_faults("corrupt,misdirect")))
        result = sim.run()
        assert result.ok, f"seed {seed}: {result.violation}"
        stops += result.stats.fail_stops
    assert stops > 0

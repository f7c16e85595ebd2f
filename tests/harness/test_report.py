"""The report directory of a run: files, plots that are real non-empty images, the
counterexample of a violation, and the page rendered by headless Chromium (Debian
``chromium``; run with ``--no-sandbox``, as these tests run as root)."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from pnyx.core.history import HistoryEvent
from pnyx.harness.report import COLOURS, write_report
from pnyx.harness.run import NemesisInterval, RunResult, overall
from pnyx.harness.workloads import NEMESIS_PROCESS, Recorder, RegisterWorkload

CHROMIUM_TIMEOUT_S = 90.0


def recorded_run(tmp_path: Path, *, stale_read: bool) -> RunResult:
    """A register run of 20 s: 3 processes, a partition from 5 s to 9 s during which three
    writes time out (info), and, if ``stale_read``, a read of an overwritten value."""
    rng = random.Random(7)
    rec = Recorder(t0_ns=0)
    value = 0
    key = "pnyx-test/register/0.0"
    events = [HistoryEvent(0, "invoke", "write", 0, key, 0),
              HistoryEvent(0, "ok", "write", 0, key, 1_000_000)]  # fmt: skip
    t = 0.01
    infos = 0
    process = {0: 0, 1: 1, 2: 2}
    while t < 20.0:
        for p in range(3):
            proc = process[p]
            start, latency = t + p * 0.01, rng.uniform(0.001, 0.009)
            partitioned = 5.0 <= start < 9.0
            if rng.random() < 0.5 or (partitioned and infos >= 3):
                events.append(HistoryEvent(proc, "invoke", "read", None, key, int(start * 1e9)))
                events.append(HistoryEvent(proc, "ok", "read", value, key,
                                           int((start + latency) * 1e9)))  # fmt: skip
            else:
                new = value + 1
                events.append(HistoryEvent(proc, "invoke", "write", new, key, int(start * 1e9)))
                if partitioned:
                    events.append(HistoryEvent(proc, "info", "write", new, key,
                                               int((start + 1.0) * 1e9)))  # fmt: skip
                    process[p] += 3
                    infos += 1
                else:
                    events.append(HistoryEvent(proc, "ok", "write", new, key,
                                               int((start + latency) * 1e9)))  # fmt: skip
                    value = new
        t += 0.05
    if stale_read:
        at = int(20.5e9)
        events.append(HistoryEvent(0, "invoke", "read", None, key, at))
        events.append(HistoryEvent(0, "ok", "read", value - 1, key, at + 1_000_000))
    events.append(HistoryEvent(NEMESIS_PROCESS, "invoke", "start", "partition", None, int(5e9)))
    events.append(HistoryEvent(NEMESIS_PROCESS, "info", "start", "partition: halves", None,
                               int(5.01e9)))  # fmt: skip
    rec.events = sorted(events, key=lambda e: e.time)
    directory = tmp_path / "run"
    (directory / "logs").mkdir(parents=True)
    log = directory / "logs" / "n1.log"
    log.write_text("node n1 started\n")
    result = RunResult(directory, "pnyx", "register", ["partition"], 3, True, 20.0, 60.0, 3, 7,
                       started_at="2026-01-01T00:00:00+00:00", recorder=rec,
                       intervals=[NemesisInterval("partition", int(5e9), int(9e9),
                                                  "partition halves", "healed")],
                       logs={"n1": log}, phases={"start": 1.0, "workload": 20.0})  # fmt: skip
    result.checks = RegisterWorkload().check(rec.history())
    result.verdict = overall(result.checks)
    return result


def png_pixels(path: Path) -> object:
    import matplotlib.image

    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return matplotlib.image.imread(str(path))


def test_a_clean_run_writes_every_file_and_non_empty_plots(tmp_path: Path) -> None:
    result = recorded_run(tmp_path, stale_read=False)
    assert result.verdict == "valid"
    index = write_report(result)
    out = result.directory
    assert index == out / "index.html"
    for name in ("history.jsonl", "results.json", "latency.png", "throughput.png"):
        assert (out / name).stat().st_size > 0
    assert not (out / "counterexample.html").exists()
    for name in ("latency.png", "throughput.png"):
        pixels = png_pixels(out / name)
        height, width = pixels.shape[:2]  # type: ignore[attr-defined]
        assert width >= 800 and height >= 300
        assert float(pixels[..., :3].std()) > 0.05, f"{name} is blank"  # type: ignore[index]
    page = index.read_text()
    assert "VALID" in page and "Counterexample" not in page
    assert "src='latency.png'" in page and "src='throughput.png'" in page
    assert "partition halves" in page and "logs/n1.log" in page
    results = json.loads((out / "results.json").read_text())
    assert results["verdict"] == "valid" and results["checks"][0]["verdict"] == "valid"
    assert results["nemesis"][0]["start_s"] == 5.0
    history = (out / "history.jsonl").read_text().splitlines()
    assert len(history) == len(result.recorder.events)
    assert json.loads(history[0])["process"] in (0, 1, 2)


def test_a_violation_has_a_counterexample(tmp_path: Path) -> None:
    result = recorded_run(tmp_path, stale_read=True)
    assert result.verdict == "invalid"
    index = write_report(result)
    page = index.read_text()
    assert "VIOLATION" in page
    assert "<h2 id='counterexample'>Counterexample</h2>" in page
    assert "not linearizable" in page and "<svg class='timeline'" in page
    timeline = (result.directory / "counterexample.html").read_text()
    assert "<html" in timeline.lower() and "read" in timeline


def test_the_page_renders_in_headless_chromium(tmp_path: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "Debian chromium is not installed (make installs SYSTEM_PACKAGES)"
    result = recorded_run(tmp_path, stale_read=True)
    index = write_report(result)
    shot = tmp_path / "shot.png"
    profile = tmp_path / "profile"
    argv = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1200,2600",
            f"--screenshot={shot}", index.resolve().as_uri()]  # fmt: skip
    env = {**os.environ, "DBUS_SESSION_BUS_ADDRESS": "disabled:"}
    done = subprocess.run(argv, capture_output=True, text=True, timeout=CHROMIUM_TIMEOUT_S,
                          env=env, check=False)  # fmt: skip
    assert done.returncode == 0 and shot.exists(), done.stderr[-2000:]
    pixels = png_pixels(shot)
    height, width = pixels.shape[:2]  # type: ignore[attr-defined]
    assert (width, height) == (1200, 2600)
    rgb = pixels[..., :3]  # type: ignore[index]
    assert float(rgb.std()) > 0.05, "the screenshot is blank"
    # the latency plot's green points made it onto the page: the image loaded and drew
    green = tuple(int(COLOURS["ok"][i:i + 2], 16) / 255 for i in (1, 3, 5))
    close = (abs(rgb[..., 0] - green[0]) < 0.12) & (abs(rgb[..., 1] - green[1]) < 0.12) & (
        abs(rgb[..., 2] - green[2]) < 0.12)
    assert int(close.sum()) > 300, f"only {int(close.sum())} green pixels: no plot drawn?"
    # and the red verdict / counterexample text is there
    red = tuple(int(COLOURS["fail"][i:i + 2], 16) / 255 for i in (1, 3, 5))
    reds = (abs(rgb[..., 0] - red[0]) < 0.15) & (abs(rgb[..., 1] - red[1]) < 0.15) & (
        abs(rgb[..., 2] - red[2]) < 0.15)
    assert int(reds.sum()) > 50


@pytest.mark.parametrize("broken", ["no events", "unpaired"])
def test_a_report_is_written_even_for_an_empty_or_broken_history(tmp_path: Path,
                                                                 broken: str) -> None:
    rec = Recorder(t0_ns=0)
    if broken == "unpaired":
        rec.events = [HistoryEvent(0, "ok", "read", 1, "k", 10)]  # a completion alone
    result = RunResult(tmp_path / "run", "etcd", "register", [], 3, False, 5.0, 10.0, 2, 1,
                       recorder=rec, error="RuntimeError: the cluster did not start")
    index = write_report(result)
    page = index.read_text()
    assert "UNKNOWN" in page and "the cluster did not start" in page
    assert (result.directory / "latency.png").stat().st_size > 0

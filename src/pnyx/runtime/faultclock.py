"""A fault clock the runtime honours, for fault testing only (``pnyx serve --fault-clock``).

A node started with ``--fault-clock FILE`` takes every protocol time it derives from a
clock (its ticks, the etcd service's lease clock and token expiry) from a
:class:`FaultClock` instead of the monotonic clock.  A harness (``pnyx test``'s clock
nemeses) moves that clock while the process runs by rewriting FILE, a small JSON object::

    {"jump_ms": 5000, "rate": 2.0}

Each new version of the file (a changed mtime, inode or size; checked at most every
:data:`CHECK_INTERVAL_S`) is one *setting*, applied once, when it is read:

- ``jump_ms``: a step of the clock relative to its reading now.  Forward: the node sees
  that much time pass at once (the runner delivers the ticks under its
  ``max_ticks_per_round`` catch-up rule).  Backward: the clock **holds** (it never runs
  backwards, like a monotonic clock) until it has caught up the step;
- ``rate``: how fast the clock runs from now on, against real time (2.0: twice as fast,
  0.5: half as fast, 0: stopped).

So ``{"jump_ms": 0, "rate": 1}`` resets the clock: no step, real speed from now on (it also
ends a hold).  A file that cannot be read or parsed is logged (``fault_clock_bad_file``)
and ignored: the clock keeps its last good setting.  A missing file is the real clock.

Without ``--fault-clock`` none of this runs: the runner reads the event loop's clock.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("pnyx.runtime.faultclock")

CHECK_INTERVAL_S = 0.05
"""The file is looked at (one ``stat``) at most this often."""
MAX_RATE = 1000.0
MAX_JUMP_MS = 86_400_000.0
"""Settings beyond these bounds (a day, a thousandfold) are refused as bad."""

_StatKey = tuple[int, int, int]


@dataclass(frozen=True)
class ClockSetting:
    """One setting of the fault clock (see the module docstring)."""

    jump_ms: float = 0.0
    rate: float = 1.0

    def to_json(self) -> str:
        """The file text of this setting."""
        return json.dumps({"jump_ms": self.jump_ms, "rate": self.rate})


RESET = ClockSetting()
"""No step, real speed."""


def parse_setting(text: str) -> ClockSetting:
    """The setting in a clock file's ``text``; ``ValueError`` saying why when it is bad."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise ValueError(f"not a JSON object: {text[:80]!r}")
    unknown = set(raw) - {"jump_ms", "rate"}
    if unknown:
        raise ValueError(f"unknown fields {sorted(unknown)} (valid: jump_ms, rate)")
    jump_ms = _number(raw, "jump_ms", 0.0)
    rate = _number(raw, "rate", 1.0)
    if abs(jump_ms) > MAX_JUMP_MS:
        raise ValueError(f"jump_ms {jump_ms:g} beyond ±{MAX_JUMP_MS:g}")
    if not 0.0 <= rate <= MAX_RATE:
        raise ValueError(f"rate {rate:g} outside [0, {MAX_RATE:g}]")
    return ClockSetting(jump_ms, rate)


def _number(raw: dict[str, object], name: str, default: float) -> float:
    value = raw.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number, not {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, not {value!r}")
    return float(value)


def write_setting(path: Path, setting: ClockSetting) -> None:
    """Write ``setting`` to the clock file ``path`` atomically (a new file renamed over
    it, so a reader sees the old or the new setting, never half of one)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(setting.to_json())
    os.replace(tmp, path)


class FaultClock:
    """Seconds on a clock that runs at ``rate`` against ``base`` (monotonic seconds) and
    steps by ``jump_ms``, both read from ``path`` (see the module docstring).

    ``now()`` never decreases.  It is cheap between file checks: a call of ``base``, a
    comparison and a multiplication.
    """

    def __init__(
        self,
        path: Path,
        *,
        base: Callable[[], float] = time.monotonic,
        check_interval_s: float = CHECK_INTERVAL_S,
    ) -> None:
        self.path = Path(path)
        self._base = base
        self._check_interval_s = check_interval_s
        real = base()
        self._anchor_real = real
        self._anchor_clock = real
        self._last = real
        self._next_check = real
        self._key: _StatKey | None = None
        self.setting = RESET
        """The setting in force (the last good one read)."""
        self.settings_applied = 0
        """Good settings read so far."""
        self.bad_files = 0
        """Versions of the file refused so far (logged)."""

    def now(self) -> float:
        """The clock's reading in seconds (never less than a previous reading)."""
        real = self._base()
        if real >= self._next_check:
            self._check(real)
        value = self._anchor_clock + (real - self._anchor_real) * self.setting.rate
        if value > self._last:
            self._last = value
        return self._last

    def now_ms(self) -> int:
        """The clock's reading in whole milliseconds (the etcd service's lease clock)."""
        return int(self.now() * 1000)

    def real_s(self, clock_s: float) -> float:
        """Real seconds to wait for ``clock_s`` more seconds of this clock to pass, at most
        the check interval (a new setting may change the answer)."""
        rate = self.setting.rate
        if rate <= 0.0:
            return self._check_interval_s
        real = self._base()
        held_s = self._last - (self._anchor_clock + (real - self._anchor_real) * rate)
        return min(self._check_interval_s, max(0.0, (clock_s + max(0.0, held_s)) / rate))

    def _check(self, real: float) -> None:
        """Apply the file's setting if the file changed since the last look."""
        self._next_check = real + self._check_interval_s
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return
        except OSError as exc:
            self._refuse(None, f"cannot stat: {exc}")
            return
        key = (st.st_mtime_ns, st.st_ino, st.st_size)
        if key == self._key:
            return
        self._key = key
        try:
            setting = parse_setting(self.path.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            self._refuse(key, str(exc))
            return
        self._apply(real, setting)

    def _apply(self, real: float, setting: ClockSetting) -> None:
        """Step from the reading now (held or not) and run at the new rate from here."""
        value = self._anchor_clock + (real - self._anchor_real) * self.setting.rate
        self._anchor_clock = max(value, self._last) + setting.jump_ms / 1000.0
        self._anchor_real = real
        self.setting = setting
        self.settings_applied += 1
        log.warning(
            "fault_clock_set file=%s jump_ms=%g rate=%g (fault testing only)",
            self.path,
            setting.jump_ms,
            setting.rate,
        )

    def _refuse(self, key: _StatKey | None, reason: str) -> None:
        if key is not None or self.bad_files == 0:
            self.bad_files += 1
            log.error(
                "fault_clock_bad_file file=%s error=%s: keeping jump_ms=%g rate=%g",
                self.path,
                reason,
                self.setting.jump_ms,
                self.setting.rate,
            )


__all__ = [
    "CHECK_INTERVAL_S",
    "RESET",
    "ClockSetting",
    "FaultClock",
    "parse_setting",
    "write_setting",
]

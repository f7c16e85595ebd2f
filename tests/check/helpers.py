"""Shared helpers for the pnyx.check tests: paths to reference histories, history builders."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pnyx.check import History
from pnyx.core.history import HistoryEvent

REPO = Path(__file__).resolve().parents[2]
SHARED_HISTORIES = REPO / ".." / "shared" / "testdata" / "histories"
LOCAL_HISTORIES = Path(__file__).resolve().parent / "histories"


def expected(folder: Path) -> list[tuple[str, ...]]:
    """Rows of an EXPECTED.tsv file."""
    text = (folder / "EXPECTED.tsv").read_text()
    return [tuple(line.split("\t")) for line in text.splitlines() if line.strip()]


def hist(*events: tuple[Any, ...]) -> History:
    """A history from (process, type, f, value[, key]) tuples in real-time order."""
    return History.from_events([HistoryEvent(*e) for e in events])


class Recorder:
    """Records a history while executing operations sequentially against a dict of registers.

    Each operation takes effect at one instant between its invocation and completion, so
    every history it records is linearizable by construction.
    """

    def __init__(self) -> None:
        self.events: list[HistoryEvent] = []
        self.state: dict[Any, Any] = {}
        self.pending: dict[int, tuple[str, Any, Any, Any, bool]] = {}  # proc -> f,key,arg,out,done

    def invoke(self, proc: int, f: str, key: Any, arg: Any) -> None:
        assert proc not in self.pending
        self.pending[proc] = (f, key, arg, None, False)
        self.events.append(HistoryEvent(proc, "invoke", f, arg, key))

    def take_effect(self, proc: int) -> None:
        f, key, arg, _, done = self.pending[proc]
        assert not done
        current = self.state.get(key, "")
        out: Any = None
        if f == "get":
            out = current
        elif f == "put":
            self.state[key] = arg
        elif f == "append":
            self.state[key] = current + arg
        elif f == "cas":
            out = current == arg[0]
            if out:
                self.state[key] = arg[1]
        self.pending[proc] = (f, key, arg, out, True)

    def complete(self, proc: int, crash: bool = False) -> None:
        f, key, arg, out, done = self.pending.pop(proc)
        if crash:
            self.events.append(HistoryEvent(proc, "info", f, None, key))
        elif f == "cas" and done and not out:
            self.events.append(HistoryEvent(proc, "fail", f, arg, key))
        else:
            assert done, "an ok operation took effect"
            value = out if f == "get" else arg
            self.events.append(HistoryEvent(proc, "ok", f, value, key))

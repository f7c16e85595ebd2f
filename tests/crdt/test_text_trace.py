"""Trace replay: the shared traces reproduce endContent; generated concurrent traces too."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path
from typing import Any

import pytest

from pnyx.protocols.crdt.text import FugueText
from pnyx.protocols.crdt.text.trace import (
    ReplayError,
    TraceError,
    parse_trace,
    replay,
    replay_sequential,
)
from pnyx.services.crdt_replay import load_trace, run_replay

TRACES = Path(__file__).resolve().parents[2].parent / "shared" / "testdata" / "crdt"
_Id = tuple[str, int]


def _shared(name: str) -> Path:
    path = TRACES / f"{name}.json.gz"
    if not path.exists():  # CI lays shared/ beside the clone; a worktree may sit elsewhere
        path = Path("/work/shared/testdata/crdt") / f"{name}.json.gz"
    return path


class ReferenceTraceMaker:
    """Writes concurrent traces with a naive Fugue (one node per character, no runs).

    Each txn's patches are chosen on the text of exactly its parents' history and turned
    into tree nodes with Fugue's insertion rule; ``endContent`` is the traversal of the
    whole tree.  Replica names and counters follow FugueText's (an agent whose last txn is
    not in a txn's history continues under a new name ``agent~k``), so sibling order agrees.
    """

    def __init__(self, seed: int, agents: int) -> None:
        self.rng = random.Random(seed)
        self.agents = [str(a) for a in range(agents)]
        self.chars: dict[_Id, str] = {}
        self.kids: dict[tuple[_Id | None, bool], list[_Id]] = {}
        self.born: dict[_Id, int] = {}  # id -> txn that inserted it
        self.deaths: dict[_Id, set[int]] = {}  # id -> txns that deleted it
        self.counter: dict[str, int] = {}
        self.history: list[set[int]] = []
        self.name = {a: a for a in self.agents}
        self.last: dict[str, int] = {}
        self.txns: list[dict[str, Any]] = []

    def order(self, hist: set[int]) -> list[_Id]:
        """Traversal (tombstones included) of the nodes inserted by txns in ``hist``."""
        out: list[_Id] = []
        stack: list[tuple[_Id | None, bool]] = [(None, False)]
        while stack:
            node, done = stack.pop()
            if done:
                assert node is not None
                out.append(node)
                continue
            right = sorted(k for k in self.kids.get((node, True), []) if self.born[k] in hist)
            left = sorted(k for k in self.kids.get((node, False), []) if self.born[k] in hist)
            stack.extend((k, False) for k in reversed(right))
            if node is not None:
                stack.append((node, True))
            stack.extend((k, False) for k in reversed(left))
        return out

    def visible(self, hist: set[int]) -> list[_Id]:
        return [n for n in self.order(hist) if not self.deaths.get(n, set()) & hist]

    def make(self, txns: int) -> dict[str, Any]:
        for i in range(txns):
            self.txn(i)
        everything = set(range(txns))
        end = "".join(self.chars[n] for n in self.visible(everything))
        return {"startContent": "", "endContent": end, "txns": self.txns}

    def pick_parents(self, i: int, agent: str) -> list[int]:
        if i == 0:
            return []
        mine = self.last.get(agent)
        others = self.rng.sample(range(i), k=min(i, self.rng.choice([1, 1, 2])))
        if mine is None or self.rng.random() < 0.08:  # sometimes the agent branches
            return sorted(set(others))
        return sorted({mine, *others[: self.rng.choice([0, 1])]})

    def txn(self, i: int) -> None:
        agent = self.rng.choice(self.agents)
        parents = self.pick_parents(i, agent)
        hist = {i}.union(*(self.history[p] for p in parents))
        self.history.append(hist)
        mine = self.last.get(agent)
        patches: list[list[Any]] = []
        if self.rng.random() > 0.1:  # some txns are empty
            if mine is not None and mine not in hist:
                self.name[agent] = self.fresh_name(agent)
            for _ in range(self.rng.randint(1, 3)):
                patches.append(self.patch(i, hist, self.name[agent]))
            self.last[agent] = i
        self.txns.append({"agent": int(agent), "parents": parents, "patches": patches})

    def fresh_name(self, agent: str) -> str:
        k = 1
        while f"{agent}~{k}" in self.counter:
            k += 1
        self.counter[f"{agent}~{k}"] = 0
        return f"{agent}~{k}"

    def next_id(self, name: str) -> _Id:
        self.counter[name] = self.counter.get(name, 0) + 1
        return (name, self.counter[name])

    def patch(self, i: int, hist: set[int], name: str) -> list[Any]:
        vis = self.visible(hist)
        pos = self.rng.randint(0, len(vis))
        deleted = self.rng.randint(1, min(6, len(vis) - pos)) if pos < len(vis) and \
            self.rng.random() < 0.4 else 0
        text = "".join(self.rng.choice("ab\u00e9\U0001f600xyz")
                       for _ in range(self.rng.choice([0, 1, 1, 2, 5])))
        for node in vis[pos : pos + deleted]:
            self.next_id(name)
            self.deaths.setdefault(node, set()).add(i)
        if text:
            self.insert(i, hist, name, vis[pos - 1] if pos else None, text)
        return [pos, deleted, text]

    def insert(self, i: int, hist: set[int], name: str, left: _Id | None, text: str) -> None:
        if any(self.born[k] in hist for k in self.kids.get((left, True), [])):
            order = self.order(hist)
            after = order[order.index(left) + 1] if left is not None else order[0]
            parent, right = after, False
        else:
            parent, right = left, True
        for ch in text:
            node = self.next_id(name)
            self.chars[node] = ch
            self.born[node] = i
            self.kids.setdefault((parent, right), []).append(node)
            parent, right = node, True


@pytest.mark.parametrize("seed", range(10))
def test_generated_concurrent_traces_reproduce_the_reference(seed: int) -> None:
    obj = ReferenceTraceMaker(seed, agents=2 + seed % 3).make(70)
    trace = parse_trace(obj)
    assert trace.concurrent
    docs = replay(trace)
    assert docs and all(d.text() == obj["endContent"] for d in docs)


def test_generated_traces_exercise_merges_branches_and_empty_txns() -> None:
    seen = {"merge": 0, "branch": 0, "empty": 0}
    for seed in range(10):
        obj = ReferenceTraceMaker(seed, agents=2 + seed % 3).make(70)
        seen["merge"] += sum(len(t["parents"]) > 1 for t in obj["txns"])
        seen["empty"] += sum(not t["patches"] for t in obj["txns"])
        seen["branch"] += sum("~" in d.replica for d in replay(parse_trace(obj)))
    assert all(count > 0 for count in seen.values()), seen


def _naive_replay(trace_obj: dict[str, Any]) -> str:
    """A wrong replay: each txn at its agent's replica after merging EVERYTHING so far."""
    docs: dict[str, FugueText] = {}
    for txn in trace_obj["txns"]:
        doc = docs.setdefault(str(txn["agent"]), FugueText(str(txn["agent"])))
        for other in docs.values():
            doc.apply_update(other.encode_since(doc.version()))
        for pos, deleted, text in txn["patches"]:
            if pos + deleted > len(doc):
                return "<diverged>"
            doc.splice(pos, deleted, text)
    return next(iter(docs.values())).text()


def test_replaying_on_more_than_the_parents_history_is_caught() -> None:
    """The property the replay guards: positions are relative to the parents' merge only."""
    caught = 0
    for seed in range(6):
        obj = ReferenceTraceMaker(seed, agents=3).make(60)
        caught += _naive_replay(obj) != obj["endContent"]
    assert caught > 0


def test_clownschool_concurrent_trace() -> None:
    trace = load_trace(_shared("clownschool"))
    assert trace.concurrent and len(trace.txns) == 23136
    docs = replay(trace)
    assert len(docs) == 3
    assert all(d.text() == trace.end for d in docs)
    assert len({tuple(d.version().items()) for d in docs}) == 1


def test_seph_blog1_sequential_trace() -> None:
    trace = load_trace(_shared("seph-blog1"))
    doc = replay_sequential(trace)
    assert doc.text() == trace.end
    assert FugueText.decode("copy", doc.encode()).text() == trace.end


def test_automerge_paper_prefix_matches_plain_string_edits() -> None:
    """Default suite: the first 20,000 edits of automerge-paper against str slicing."""
    trace = load_trace(_shared("automerge-paper"))
    doc, text = FugueText("p"), ""
    patches = [p for t in trace.txns for p in t.patches][:20_000]
    for pos, deleted, inserted in patches:
        doc.splice(pos, deleted, inserted)
        text = text[:pos] + inserted + text[pos + deleted :]
    assert doc.text() == text and len(text) > 1000
    assert FugueText.decode("copy", doc.encode()).text() == text


@pytest.mark.soak
def test_automerge_paper_sequential_trace() -> None:
    report = run_replay(_shared("automerge-paper"))
    assert report.ok, report.mismatch
    assert report.edits == 259_778 and report.text_code_points == 104_852
    assert 0 < report.doc_size_bytes < 400_000


def test_wrong_end_content_is_a_mismatch(tmp_path: Path) -> None:
    path = tmp_path / "t.json.gz"
    obj = {"startContent": "ab", "endContent": "abX",
           "txns": [{"patches": [[2, 0, "c"]]}]}
    path.write_bytes(gzip.compress(json.dumps(obj).encode()))
    report = run_replay(path)
    assert not report.ok and "code point 2" in report.mismatch
    obj["endContent"] = "abc"
    path.write_bytes(gzip.compress(json.dumps(obj).encode()))
    assert run_replay(path).ok


def test_patch_outside_the_document_is_a_divergence() -> None:
    trace = parse_trace({"endContent": "", "txns": [{"patches": [[3, 0, "x"]]}]})
    with pytest.raises(ReplayError, match="outside the document"):
        replay(trace)


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ([], "JSON object"),
        ({"endContent": ""}, "txns"),
        ({"txns": []}, "endContent"),
        ({"endContent": "", "txns": [{"patches": [[0, -1, "x"]]}]}, "patch 0"),
        ({"endContent": "", "txns": [{"patches": "x"}]}, "patches must be a list"),
        ({"endContent": "", "txns": [{"agent": 0, "parents": [0], "patches": []}]},
         "parents"),
        ({"endContent": "", "txns": [{"agent": True, "parents": [], "patches": []}]},
         "agent"),
    ],
)
def test_malformed_traces_are_rejected(obj: object, message: str) -> None:
    with pytest.raises(TraceError, match=message):
        parse_trace(obj)


def test_unreadable_files_are_trace_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json.gz"
    bad.write_bytes(b"\x1f\x8b not gzip")
    for path in (bad, tmp_path / "missing.json.gz"):
        with pytest.raises(TraceError, match="cannot read trace"):
            load_trace(path)

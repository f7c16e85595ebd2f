"""Chain replication and CRAQ: directed repair scenarios, seeds with faults, the broken CRAQ."""

from __future__ import annotations

from typing import Any

import pytest

from pnyx.catalog import get_protocol
from pnyx.check.history import History
from pnyx.check.linearizability import check_linearizable
from pnyx.check.models import KVModel
from pnyx.core import CLIENT_ID_BASE, ClientReply, DurableState, HistoryEvent, Message
from pnyx.protocols.chain import ChainMaster, ChainNode
from pnyx.protocols.chain.master import DETECT_TICKS
from pnyx.protocols.chain.messages import KvRequest, Update
from pnyx.sim.runner import SimConfig, run_sim
from pnyx.sim.schedule import parse_faults

MASTER = 4
REPLICAS = (1, 2, 3)
CLIENT = CLIENT_ID_BASE
FAULTS = parse_faults("all,slow")


class Net:
    """A hand-driven network: a master, three replicas, one client that collects replies."""

    def __init__(self, *, craq: bool = False, dirty_reads: bool = False) -> None:
        self.craq = craq
        self.dirty_reads = dirty_reads
        self.master = ChainMaster(MASTER, REPLICAS)
        self.nodes: dict[int, Any] = {MASTER: self.master}
        for n in REPLICAS:
            self.nodes[n] = self._replica(n, DurableState())
        self.down: set[int] = set()
        self.blocked: set[tuple[int, int]] = set()
        self.held_updates: set[tuple[int, int]] = set()
        self.replies: dict[int, ClientReply] = {}
        self._request_id = 0

    def _replica(self, node_id: int, durable: DurableState) -> ChainNode:
        return ChainNode(
            node_id, MASTER, REPLICAS, durable, craq=self.craq, dirty_reads=self.dirty_reads
        )

    def send(self, to: int, msg: Message, from_id: int) -> None:
        if to == CLIENT:
            assert isinstance(msg, ClientReply)
            self.replies[msg.request_id] = msg
        elif isinstance(msg, Update) and (from_id, to) in self.held_updates:
            return
        elif to not in self.down and (from_id, to) not in self.blocked:
            self.nodes[to].step(msg, from_id)

    def flush(self) -> None:
        for _ in range(1000):
            live = [n for n in sorted(self.nodes) if n not in self.down]
            busy = [n for n in live if self.nodes[n].has_ready()]
            if not busy:
                return
            for n in busy:
                batch = self.nodes[n].ready()
                self.nodes[n].advance(batch)
                for send in batch.send:
                    self.send(send.to, send.msg, n)
        raise AssertionError("messages kept flowing for 1000 rounds")

    def run(self, ticks: int) -> None:
        for _ in range(ticks):
            for n in sorted(self.nodes):
                if n not in self.down:
                    self.nodes[n].tick()
            self.flush()

    def request(self, to: int, f: str, key: str, value: Any = None) -> ClientReply | None:
        self._request_id += 1
        self.send(to, KvRequest(self._request_id, f, key, value), CLIENT)
        self.flush()
        return self.replies.get(self._request_id)

    def crash(self, node: int) -> None:
        self.down.add(node)

    def restart(self, node: int) -> None:
        durable = DurableState()
        durable.records["incarnation"] = self.nodes[node].incarnation
        self.nodes[node] = self._replica(node, durable)
        self.down.discard(node)

    def replica(self, node: int) -> ChainNode:
        replica = self.nodes[node]
        assert isinstance(replica, ChainNode)
        return replica


def _started(**kwargs: Any) -> Net:
    net = Net(**kwargs)
    net.run(5)  # leases granted
    return net


def _ok(reply: ClientReply | None) -> Any:
    assert reply is not None and reply.ok, reply
    return reply.result


def test_write_at_head_is_answered_by_the_tail_and_read_there() -> None:
    net = _started()
    assert _ok(net.request(1, "put", "a", "x")) is None
    assert _ok(net.request(3, "get", "a")) == "x"
    assert _ok(net.request(1, "append", "a", "y")) is None
    assert _ok(net.request(1, "cas", "a", ["xy", "z"])) is True
    assert _ok(net.request(1, "cas", "a", ["nope", "w"])) is False
    assert _ok(net.request(3, "get", "a")) == "z"
    # Reads away from the tail and writes away from the head are redirected.
    redirect = net.request(2, "get", "a")
    assert redirect is not None and not redirect.ok and redirect.leader_hint == 3
    redirect = net.request(3, "put", "a", "q")
    assert redirect is not None and not redirect.ok and redirect.leader_hint == 1


def test_a_bad_cas_argument_is_refused_with_the_value() -> None:
    net = _started()
    reply = net.request(1, "cas", "a", "not-a-pair")
    assert reply is not None and not reply.ok and "not-a-pair" in reply.error


@pytest.mark.parametrize("failed", [1, 2, 3], ids=["head", "middle", "tail"])
def test_failed_replica_is_removed_and_rejoins_at_the_tail(failed: int) -> None:
    net = _started()
    _ok(net.request(1, "put", "a", "before"))
    net.crash(failed)
    net.run(DETECT_TICKS + 5)
    survivors = tuple(n for n in REPLICAS if n != failed)
    assert net.master.chain == survivors
    head, tail = survivors[0], survivors[-1]
    assert _ok(net.request(tail, "get", "a")) == "before"  # no acknowledged write lost
    _ok(net.request(head, "put", "b", "during"))
    net.restart(failed)
    net.run(10)
    assert net.master.chain == (*survivors, failed)  # added at the tail ...
    rejoined = net.replica(failed)
    assert rejoined.has_state  # ... after state transfer from its predecessor
    assert _ok(net.request(failed, "get", "a")) == "before"
    assert _ok(net.request(failed, "get", "b")) == "during"
    _ok(net.request(head, "put", "a", "after"))
    assert _ok(net.request(failed, "get", "a")) == "after"


def test_restart_before_detection_is_rejoined_as_a_new_replica() -> None:
    net = _started()
    _ok(net.request(1, "put", "a", "v"))
    net.crash(2)
    net.restart(2)  # lost its state before the master noticed the silence
    net.run(10)
    assert net.master.chain == (1, 3, 2)
    assert net.replica(2).has_state
    assert _ok(net.request(2, "get", "a")) == "v"


def test_cut_off_replica_stops_serving_before_it_is_removed() -> None:
    net = _started()
    _ok(net.request(1, "put", "a", "old"))
    net.blocked |= {(3, MASTER), (MASTER, 3)}
    net.run(DETECT_TICKS + 5)
    assert net.master.chain == (1, 2)
    _ok(net.request(1, "put", "a", "new"))
    stale = net.request(3, "get", "a")  # the old tail's lease has run out
    assert stale is not None and not stale.ok


def test_retried_write_is_applied_once() -> None:
    net = _started()
    net.send(1, KvRequest(100, "append", "a", "x"), CLIENT)
    net.send(1, KvRequest(100, "append", "a", "x"), CLIENT)
    net.flush()
    assert _ok(net.request(3, "get", "a")) == "x"
    retry = KvRequest(100, "append", "a", "x")
    net.send(1, retry, CLIENT)
    net.flush()
    assert net.replies[100].ok and _ok(net.request(3, "get", "a")) == "x"


def _dirty_read(dirty_reads: bool) -> tuple[Any, Any]:
    """Hold the head's update back from the tail, then read the key at the middle and
    (after that read returned) at the tail."""
    net = _started(craq=True, dirty_reads=dirty_reads)
    _ok(net.request(1, "put", "a", "old"))
    net.held_updates.add((2, 3))
    net.send(1, KvRequest(50, "put", "a", "new"), CLIENT)
    net.flush()
    assert isinstance(net.replica(2)._pending.get(2), Update)
    middle = net.request(2, "get", "a")
    tail = net.request(3, "get", "a")
    return (middle.result if middle and middle.ok else None), _ok(tail)


def test_craq_serves_the_committed_version_of_a_dirty_key() -> None:
    middle, tail = _dirty_read(dirty_reads=False)
    assert (middle, tail) == ("old", "old")


def test_craq_clean_read_is_served_locally() -> None:
    net = _started(craq=True)
    _ok(net.request(1, "put", "a", "x"))
    assert _ok(net.request(1, "get", "a")) == "x"
    assert _ok(net.request(2, "get", "a")) == "x"


def test_broken_craq_dirty_read_makes_the_history_not_linearizable() -> None:
    middle, tail = _dirty_read(dirty_reads=True)
    assert (middle, tail) == ("new", "old")
    c1, c2, c3 = CLIENT, CLIENT + 1, CLIENT + 2
    events = [
        HistoryEvent(c1, "invoke", "put", "old", "a", 1),
        HistoryEvent(c1, "ok", "put", "old", "a", 2),
        HistoryEvent(c2, "invoke", "put", "new", "a", 3),
        HistoryEvent(c3, "invoke", "get", None, "a", 4),
        HistoryEvent(c3, "ok", "get", middle, "a", 5),
        HistoryEvent(c3, "invoke", "get", None, "a", 6),
        HistoryEvent(c3, "ok", "get", tail, "a", 7),
    ]
    result = check_linearizable(History.from_events(events), KVModel())
    assert result.verdict == "not-linearizable"


@pytest.mark.parametrize("name", ["chain", "craq"])
def test_correct_specs_pass_seeds_with_faults(name: str) -> None:
    spec = get_protocol(name)
    failures = []
    for seed in range(1, 201):
        result = run_sim(spec, SimConfig(seed=seed, faults=FAULTS))
        if not result.ok:
            failures.append(f"seed {seed}: {result.violation} (pnyx sim {name} --seed {seed})")
    assert not failures, "\n".join(failures)


def test_schedule_keeps_the_master_up_and_crashes_apart() -> None:
    spec = get_protocol("chain")
    crashed = 0
    for seed in range(1, 41):
        schedule = spec.draw_schedule(seed, 4, 3000, FAULTS)
        assert schedule is not None
        crashes = [e for e in schedule.events if e.kind == "crash"]
        crashed += len(crashes)
        assert all(e.node != 4 for e in schedule.events if e.kind in ("crash", "pause", "slow"))
        for crash in crashes:
            others = [e for e in schedule.events if e is not crash]
            assert all(o.end_us <= crash.start_us or crash.end_us <= o.start_us for o in others)
    assert crashed >= 5, "the schedules hardly crash replicas"


def test_broken_craq_is_caught_by_linearizability() -> None:
    spec = get_protocol("craq-broken")
    caught = None
    for seed in range(1, 101):
        result = run_sim(spec, SimConfig(seed=seed, faults=FAULTS))
        if not result.ok:
            caught = result
            break
    assert caught is not None, "craq-broken survived 100 seeds"
    assert caught.violation is not None and caught.violation.prop == "linearizability"
    fixed = run_sim(get_protocol("craq"), SimConfig(caught.seed, schedule=caught.schedule))
    assert fixed.ok, fixed.violation


def test_same_seed_same_trace() -> None:
    spec = get_protocol("craq")
    one = run_sim(spec, SimConfig(seed=7, faults=FAULTS, hash_trace=True))
    two = run_sim(spec, SimConfig(seed=7, faults=FAULTS, hash_trace=True))
    assert one.trace_hash == two.trace_hash

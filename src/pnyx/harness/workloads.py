"""Workloads of ``pnyx test``: clients driving a system through the etcd v3 API.

A :class:`Workload` issues one operation at a time per client (:class:`Client`), recording
each as an invocation and a completion in a shared :class:`Recorder` (the history format of
:mod:`pnyx.check`: ``ok``, ``fail`` when the operation certainly did not take effect,
``info`` when its outcome is unknown: a time-out, an unreachable member, any error on a
write).  After an ``info`` the client continues as a new process (Jepsen's convention: a
process has one operation in flight, and an ``info`` one stays open forever).

Workloads (``WORKLOADS``), each with its checker (:meth:`Workload.check`):

- ``register``: read / write / cas on one key at a time (a new key every
  ``ops_per_key`` operations): per-key linearizability against a cas register;
- ``kv``: get / put / cas / delete over ``keys`` keys: per-key linearizability (kv model);
- ``list-append``: transactions of appends and reads over ``keys`` keys, each list stored
  as one value; a transaction reads its keys in one txn, then commits in a second txn that
  compares every key's ``mod_revision`` with the one read (a changed key: ``fail``, no
  effect), as Jepsen's etcd append workload does: Elle-style strict serializability;
- ``bank``: transfers between ``keys`` accounts (txn guarded by mod revisions), reads of
  all accounts in one txn: every read sums to the initial total, no balance negative;
- ``set``: adds of unique elements (read-modify-cas on ``keys`` keys); every acknowledged
  add is in the final read, and nothing read was never added;
- ``lock``: clients take etcd's mutex (:func:`pnyx.etcdclient.hold_lock`, a 2 s lease) and
  hold it 2 to 6 s; the recorded critical sections (from the moment the lock was granted to
  the client to the moment it started releasing it) must not overlap in real time (the
  ``pause-holder`` nemesis, :mod:`pnyx.harness.pauses`, shows that they do);
- ``lock-fenced``: the same, and in the critical section a write to the protected
  resource in a txn that requires the lock key still to have the token as its create
  revision: the successful writes, in revision order, must carry non-decreasing tokens
  (no write with a stale token succeeded);
- ``watch``: writers put unique values under a prefix while one watcher per member
  watches it; at the end every watcher must have seen exactly the cluster's write
  history (revision order, no gaps, no duplicates, every acknowledged write).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pnyx.check.history import History, Operation
from pnyx.core.history import HistoryEvent
from pnyx.etcdclient import (
    AsyncEtcdClient,
    Compare,
    EtcdError,
    Get,
    KeyValue,
    Put,
    RangeResult,
    WatchEvent,
    hold_lock,
)
from pnyx.etcdclient.recipes import cancel_and_wait

CheckVerdict = Literal["valid", "invalid", "unknown"]
NEMESIS_PROCESS = -1
"""The process id of nemesis events in a recorded history (never a client's)."""
CALL_TIMEOUT_S = 2.0
CHECK_TIMEOUT_S = 60.0
ACQUIRE_TIMEOUT_S = 10.0
FINAL_PROCESS = NEMESIS_PROCESS - 1
"""The process id of the final reads after the faults (never a client's)."""


# -- recording -------------------------------------------------------------------------------


class Recorder:
    """The history of a run: events stamped with nanoseconds since the run began."""

    def __init__(self, t0_ns: int | None = None) -> None:
        self.t0_ns = time.monotonic_ns() if t0_ns is None else t0_ns
        self.events: list[HistoryEvent] = []

    def now(self) -> int:
        return time.monotonic_ns() - self.t0_ns

    def record(self, process: int, kind: str, f: str, value: Any = None,
               key: Any = None) -> None:  # fmt: skip
        self.events.append(HistoryEvent(process, kind, f, value, key,  # type: ignore[arg-type]
                                        self.now()))  # fmt: skip

    def nemesis(self, kind: Literal["invoke", "info"], f: str, value: str) -> None:
        """A nemesis event (process :data:`NEMESIS_PROCESS`): ``invoke`` when the fault is
        asked for, ``info`` (with the description) when it is in place."""
        self.record(NEMESIS_PROCESS, kind, f, value)

    def client_events(self) -> list[HistoryEvent]:
        return [e for e in self.events if e.process != NEMESIS_PROCESS]

    def nemesis_events(self) -> list[HistoryEvent]:
        return [e for e in self.events if e.process == NEMESIS_PROCESS]

    def history(self) -> History:
        """The clients' operations (nemesis events left out)."""
        return History.from_events(self.client_events())


class Indeterminate(Exception):
    """An operation whose outcome is unknown (recorded ``info``)."""


class Failed(Exception):
    """An operation that certainly did not take effect (recorded ``fail``)."""


@dataclass
class Client:
    """One concurrent client: its etcd connection, its current process id, its randomness."""

    index: int
    concurrency: int
    etcd: AsyncEtcdClient
    recorder: Recorder
    rng: random.Random
    process: int = 0

    def __post_init__(self) -> None:
        self.process = self.index

    async def op(self, f: str, value: Any, key: Any, call: Callable[[], Awaitable[Any]],
                 *, read: bool = False) -> tuple[bool, Any]:  # fmt: skip
        """Record and run one operation: ``(True, output)`` when ok, ``(False, None)``
        otherwise.  ``call`` returns the output, raises :class:`Failed` (``fail``),
        :class:`Indeterminate` or :class:`EtcdError` (``info``; ``fail`` for a ``read``,
        which has no effect).  After an ``info`` this client becomes a new process."""
        rec = self.recorder
        rec.record(self.process, "invoke", f, value, key)
        try:
            output = await call()
        except Failed:
            rec.record(self.process, "fail", f, value, key)
            return False, None
        except (EtcdError, Indeterminate, TimeoutError):
            rec.record(self.process, "fail" if read else "info", f, value, key)
            if not read:
                self.process += self.concurrency
            return False, None
        rec.record(self.process, "ok", f, output, key)
        return True, output


@dataclass
class CheckResult:
    """One checker's verdict on a run."""

    name: str
    verdict: CheckVerdict
    summary: str
    counterexample: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    culprits: list[Operation] = field(default_factory=list)
    """Operations involved in the violation (shown in the report's timeline)."""
    linearizability: Any = None
    """A :class:`pnyx.check.LinearizabilityResult` when the checker is linearizability."""

    @property
    def ok(self) -> bool:
        return self.verdict == "valid"

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "verdict": self.verdict, "summary": self.summary,
                "counterexample": self.counterexample, "details": self.details}  # fmt: skip


def _counts(ops: Sequence[Operation]) -> str:
    by = {k: sum(1 for o in ops if o.outcome == k) for k in ("ok", "fail", "info")}
    return f"{len(ops)} operations ({by['ok']} ok, {by['fail']} fail, {by['info']} info)"


def _text(value: bytes) -> str:
    return value.decode("utf-8", "replace")


# -- the workload interface ------------------------------------------------------------------


class Workload:
    """Base class: ``setup`` once, ``step`` per operation per client, ``final`` after the
    faults have healed, then ``check`` on the recorded history."""

    name = "workload"
    prefix = "pnyx-test/"

    def __init__(self, keys: int = 3, seed: int = 0) -> None:
        self.keys = max(1, keys)
        self.seed = seed

    async def setup(self, etcd: AsyncEtcdClient, endpoints: Sequence[str],
                    recorder: Recorder) -> None:  # fmt: skip
        """Prepare the keys (and start background tasks such as watchers)."""

    async def step(self, client: Client) -> None:
        """One operation by ``client`` (recorded through :meth:`Client.op`)."""
        raise NotImplementedError

    async def final(self, etcd: AsyncEtcdClient, recorder: Recorder) -> None:
        """The final reads, once the cluster is healed (and stop background tasks)."""

    async def close(self) -> None:
        """Stop background tasks (called on every path, after ``final`` or instead)."""

    def check(self, history: History) -> list[CheckResult]:
        raise NotImplementedError

    def key(self, name: str) -> str:
        return f"{self.prefix}{self.name}/{name}"


async def retried(call: Callable[[], Awaitable[Any]], attempts: int = 20,
                  pause_s: float = 0.5) -> Any:  # fmt: skip
    """``call()`` until it succeeds (bounded: ``attempts`` tries)."""
    for attempt in range(attempts):
        try:
            return await call()
        except EtcdError:
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(pause_s)
    raise AssertionError("unreachable")


# -- register and kv: linearizability ----------------------------------------------------------


def _linearizability(history: History, model: Any, name: str) -> CheckResult:
    from pnyx.check.linearizability import check_linearizable

    ops = history.operations
    result = check_linearizable(history, model, timeout_s=CHECK_TIMEOUT_S)
    verdict: CheckVerdict = {"linearizable": "valid", "not-linearizable": "invalid"}.get(
        result.verdict, "unknown")  # type: ignore[assignment]
    keys = len({op.key for op in ops})
    summary = (f"{_counts(ops)} on {keys} keys: {result.verdict} "
               f"({result.model}, checked in {result.elapsed_s:.2f} s)")
    culprits = [op for p in result.failures for op in (*p.prefix[-6:], *p.unplaced)]
    return CheckResult(name, verdict, summary, result.explain(),
                       {"verdict": result.verdict, "keys": keys,
                        "elapsed_s": round(result.elapsed_s, 3)},
                       culprits, result)  # fmt: skip


def _int_or_none(kv: KeyValue | None) -> int | None:
    return None if kv is None else int(kv.value)


class RegisterWorkload(Workload):
    """read / write / cas on a register; a fresh key every ``ops_per_key`` operations."""

    name = "register"

    def __init__(self, keys: int = 1, seed: int = 0, ops_per_key: int = 300) -> None:
        super().__init__(keys, seed)
        self.ops_per_key = ops_per_key
        self.count = 0

    def _next_key(self, client: Client) -> str:
        self.count += 1
        generation = self.count // self.ops_per_key
        return self.key(f"{generation}.{client.rng.randrange(self.keys)}")

    async def step(self, client: Client) -> None:
        key = self._next_key(client)
        etcd, roll = client.etcd, client.rng.random()
        if roll < 0.5:
            async def read() -> int | None:
                return _int_or_none(await etcd.get(key))
            await client.op("read", None, key, read, read=True)
        elif roll < 0.75:
            value = client.rng.randrange(5)

            async def write() -> int:
                await etcd.put(key, str(value))
                return value
            await client.op("write", value, key, write)
        else:
            expected, new = client.rng.randrange(5), client.rng.randrange(5)

            async def cas() -> bool:
                txn = await etcd.txn([Compare(key, "value", "=", str(expected))],
                                     [Put(key, str(new))])  # fmt: skip
                return txn.succeeded
            await client.op("cas", [expected, new], key, cas)

    def check(self, history: History) -> list[CheckResult]:
        from pnyx.check.models import CASRegisterModel

        return [_linearizability(history, CASRegisterModel(initial=None), "linearizable")]


class KVWorkload(Workload):
    """get / put / cas / delete over ``keys`` keys (string values)."""

    name = "kv"

    def __init__(self, keys: int = 5, seed: int = 0) -> None:
        super().__init__(keys, seed)
        self.count = itertools.count(1)

    async def step(self, client: Client) -> None:
        key = self.key(f"k{client.rng.randrange(self.keys)}")
        etcd, roll = client.etcd, client.rng.random()
        if roll < 0.45:
            async def get() -> str | None:
                kv = await etcd.get(key)
                return None if kv is None else _text(kv.value)
            await client.op("get", None, key, get, read=True)
        elif roll < 0.75:
            value = f"v{next(self.count)}"

            async def put() -> str:
                await etcd.put(key, value)
                return value
            await client.op("put", value, key, put)
        elif roll < 0.95:
            # compare with a recently written value (or absent): some succeed, some do not
            expected = None if client.rng.random() < 0.2 else f"v{max(1, next(self.count) - 3)}"
            value = f"v{next(self.count)}"
            guard = (Compare(key, "create", "=", 0) if expected is None
                     else Compare(key, "value", "=", expected))  # fmt: skip

            async def cas() -> bool:
                return (await etcd.txn([guard], [Put(key, value)])).succeeded
            await client.op("cas", [expected, value], key, cas)
        else:
            async def delete() -> None:
                await etcd.delete(key)
            await client.op("delete", None, key, delete)

    def check(self, history: History) -> list[CheckResult]:
        from pnyx.check.models import KVModel

        return [_linearizability(history, KVModel(initial=None), "linearizable")]


# -- list-append: Elle-style serializability -------------------------------------------------


def _list(kv: KeyValue | None) -> list[int]:
    return [] if kv is None else [int(v) for v in json.loads(kv.value)]


class ListAppendWorkload(Workload):
    """Transactions of 1-4 micro-ops (``["append", k, v]`` / ``["r", k, None]``).

    Read phase: one txn of Gets (one snapshot); commit: one txn comparing every touched
    key's mod revision to the one read and putting the appended lists (values are JSON
    lists).  A failed compare is a ``fail``; read-only transactions are the read phase."""

    name = "list-append"

    def __init__(self, keys: int = 5, seed: int = 0, max_txn: int = 4) -> None:
        super().__init__(keys, seed)
        self.max_txn = max_txn
        self.values: dict[int, itertools.count[int]] = {}

    async def step(self, client: Client) -> None:
        rng = client.rng
        mops: list[list[Any]] = []
        for _ in range(rng.randint(1, self.max_txn)):
            k = rng.randrange(self.keys)
            if rng.random() < 0.5:
                mops.append(["r", k, None])
            else:
                mops.append(["append", k, next(self.values.setdefault(k, itertools.count(1)))])
        etcd = client.etcd
        read_only = all(m[0] == "r" for m in mops)

        async def txn() -> list[list[Any]]:
            touched = sorted({m[1] for m in mops})
            snap = await etcd.txn([], [Get(self.key(str(k))) for k in touched])
            state: dict[int, list[int]] = {}
            revs: dict[int, int] = {}
            for k, resp in zip(touched, snap.responses, strict=True):
                assert isinstance(resp, RangeResult)
                kv = resp.kvs[0] if resp.kvs else None
                state[k] = _list(kv)
                revs[k] = 0 if kv is None else kv.mod_revision
            out: list[list[Any]] = []
            for f, k, v in mops:
                if f == "r":
                    out.append(["r", k, list(state[k])])
                else:
                    state[k].append(v)
                    out.append(["append", k, v])
            if read_only:
                return out
            written = sorted({m[1] for m in mops if m[0] == "append"})
            commit = await etcd.txn(
                [Compare(self.key(str(k)), "mod", "=", revs[k]) for k in touched],
                [Put(self.key(str(k)), json.dumps(state[k])) for k in written])
            if not commit.succeeded:
                raise Failed()
            return out
        await client.op("txn", mops, None, txn, read=read_only)

    def check(self, history: History) -> list[CheckResult]:
        from pnyx.check.serializability import check_serializable

        txns = [op for op in history.operations if op.f == "txn"]
        result = check_serializable(txns, kind="list-append", realtime=True)
        verdict: CheckVerdict = "valid" if result.ok else "invalid"
        summary = (f"{_counts(txns)}: {result.verdict} (strict serializability, Elle-style "
                   f"list-append, checked in {result.elapsed_s:.2f} s)")
        involved = {e.src for a in result.anomalies for e in a.cycle} | {
            e.dst for a in result.anomalies for e in a.cycle}
        culprits = [op for op in txns if op.index in involved]
        return [CheckResult("serializable", verdict, summary, result.explain(),
                            {"anomalies": result.anomaly_names,
                             "transactions": result.transactions}, culprits)]  # fmt: skip


# -- bank: total conserved, no negative balance ----------------------------------------------


class BankWorkload(Workload):
    """Transfers between ``keys`` accounts of ``initial`` each; reads of every account."""

    name = "bank"

    def __init__(self, keys: int = 5, seed: int = 0, initial: int = 10) -> None:
        super().__init__(max(2, keys), seed)
        self.initial = initial

    @property
    def total(self) -> int:
        return self.keys * self.initial

    def account(self, i: int) -> str:
        return self.key(f"a{i}")

    async def setup(self, etcd: AsyncEtcdClient, endpoints: Sequence[str],
                    recorder: Recorder) -> None:  # fmt: skip
        puts = [Put(self.account(i), str(self.initial)) for i in range(self.keys)]
        await retried(lambda: etcd.txn([], puts))

    async def _read_all(self, etcd: AsyncEtcdClient) -> dict[str, int]:
        snap = await etcd.txn([], [Get(self.account(i)) for i in range(self.keys)])
        out: dict[str, int] = {}
        for i, resp in enumerate(snap.responses):
            assert isinstance(resp, RangeResult)
            if resp.kvs:
                out[str(i)] = int(resp.kvs[0].value)
        return out

    async def step(self, client: Client) -> None:
        rng, etcd = client.rng, client.etcd
        if rng.random() < 0.4:
            await client.op("read", None, None, lambda: self._read_all(etcd), read=True)
            return
        src, dst = rng.sample(range(self.keys), 2)
        amount = rng.randint(1, 5)

        async def transfer() -> dict[str, int]:
            a, b = self.account(src), self.account(dst)
            snap = await etcd.txn([], [Get(a), Get(b)])
            kvs = []
            for resp in snap.responses:
                assert isinstance(resp, RangeResult)
                if not resp.kvs:
                    raise Failed()
                kvs.append(resp.kvs[0])
            have, other = int(kvs[0].value), int(kvs[1].value)
            if have < amount:
                raise Failed()  # insufficient funds: nothing written
            commit = await etcd.txn(
                [Compare(a, "mod", "=", kvs[0].mod_revision),
                 Compare(b, "mod", "=", kvs[1].mod_revision)],
                [Put(a, str(have - amount)), Put(b, str(other + amount))])
            if not commit.succeeded:
                raise Failed()
            return {"from": src, "to": dst, "amount": amount}
        await client.op("transfer", {"from": src, "to": dst, "amount": amount}, None,
                        transfer)  # fmt: skip

    async def final(self, etcd: AsyncEtcdClient, recorder: Recorder) -> None:
        recorder.record(FINAL_PROCESS, "invoke", "read")
        try:
            out = await retried(lambda: self._read_all(etcd))
        except EtcdError:
            recorder.record(FINAL_PROCESS, "fail", "read")
            return
        recorder.record(FINAL_PROCESS, "ok", "read", out)

    def check(self, history: History) -> list[CheckResult]:
        reads = [op for op in history.operations if op.f == "read" and op.outcome == "ok"]
        bad: list[tuple[Operation, str]] = []
        for op in reads:
            balances = dict(op.output) if op.output is not None else {}
            total = sum(balances.values())
            if len(balances) != self.keys:
                bad.append((op, f"read {len(balances)} of {self.keys} accounts"))
            elif total != self.total:
                bad.append((op, f"total {total} != {self.total}: {balances}"))
            elif any(v < 0 for v in balances.values()):
                bad.append((op, f"negative balance: {balances}"))
        transfers = [op for op in history.operations if op.f == "transfer"]
        verdict: CheckVerdict = "invalid" if bad else ("valid" if reads else "unknown")
        summary = (f"{len(reads)} reads of {self.keys} accounts, {_counts(transfers)} "
                   f"transfers: {len(bad)} reads with a wrong total or a negative balance")
        if not reads:
            summary += " (no successful read: nothing checked)"
        text = "\n".join(f"T{op.index} (p{op.process}) at {op.call_time / 1e9:.3f} s: {why}"
                         for op, why in bad[:20])
        return [CheckResult("bank", verdict, summary, text,
                            {"reads": len(reads), "bad_reads": len(bad), "total": self.total},
                            [op for op, _ in bad[:20]])]  # fmt: skip


# -- set: every acknowledged add is read at the end ------------------------------------------


class SetWorkload(Workload):
    """Adds of unique integers to sets stored as JSON lists under ``keys`` keys
    (read-modify-cas, a few tries); a final read of every key."""

    name = "set"
    CAS_TRIES = 4

    def __init__(self, keys: int = 3, seed: int = 0) -> None:
        super().__init__(keys, seed)
        self.count = itertools.count(1)

    async def _read(self, etcd: AsyncEtcdClient) -> list[int]:
        result = await etcd.range(self.key(""), prefix=True)
        out: set[int] = set()
        for kv in result.kvs:
            out.update(_list(kv))
        return sorted(out)

    async def step(self, client: Client) -> None:
        etcd = client.etcd
        if client.rng.random() < 0.1:
            await client.op("read", None, None, lambda: self._read(etcd), read=True)
            return
        element = next(self.count)
        key = self.key(f"s{element % self.keys}")

        async def add() -> int:
            for _ in range(self.CAS_TRIES):
                kv = await etcd.get(key)
                values = _list(kv)
                rev = 0 if kv is None else kv.mod_revision
                txn = await etcd.txn([Compare(key, "mod", "=", rev)],
                                     [Put(key, json.dumps([*values, element]))])  # fmt: skip
                if txn.succeeded:
                    return element
            raise Failed()
        await client.op("add", element, None, add)

    async def final(self, etcd: AsyncEtcdClient, recorder: Recorder) -> None:
        recorder.record(FINAL_PROCESS, "invoke", "final-read")
        try:
            out = await retried(lambda: self._read(etcd))
        except EtcdError:
            recorder.record(FINAL_PROCESS, "fail", "final-read")
            return
        recorder.record(FINAL_PROCESS, "ok", "final-read", out)

    def check(self, history: History) -> list[CheckResult]:
        ops = history.operations
        adds = [op for op in ops if op.f == "add"]
        finals = [op for op in ops if op.f == "final-read" and op.outcome == "ok"]
        if not finals:
            return [CheckResult("set", "unknown", f"{_counts(adds)} adds; the final read "
                                "failed: nothing checked")]  # fmt: skip
        final = set(finals[-1].output or ())
        acked = {op.value for op in adds if op.outcome == "ok"}
        attempted = {op.value for op in adds if op.outcome != "fail"}
        lost = sorted(acked - final)
        unexpected = sorted(final - attempted)
        recovered = sorted((final & attempted) - acked)
        bad = bool(lost or unexpected)
        summary = (f"{_counts(adds)} adds; final read has {len(final)} elements: "
                   f"{len(lost)} acknowledged adds lost, {len(unexpected)} never added, "
                   f"{len(recovered)} of unknown outcome present")
        text = ""
        if lost:
            text += f"lost (acknowledged, not in the final read): {lost[:50]}\n"
        if unexpected:
            text += f"read but never added: {unexpected[:50]}\n"
        culprits = [op for op in adds if op.value in set(lost[:20])]
        return [CheckResult("set", "invalid" if bad else "valid", summary, text.strip(),
                            {"lost": lost, "unexpected": unexpected,
                             "acknowledged": len(acked), "final": len(final)},
                            culprits)]  # fmt: skip


# -- lock and lock-fenced ----------------------------------------------------------------------


@dataclass(frozen=True)
class LockHolder:
    """A client inside the lock workloads' critical section."""

    process: int
    endpoint: str
    """The member its client was connected to (``host:port``) when it got the lock: where
    its calls, and its session's keep-alives, go."""


class LockHolders:
    """Who is inside the critical section of the ``lock`` / ``lock-fenced`` workload now,
    and through which member: what the ``pause-holder`` nemesis reads
    (:mod:`pnyx.harness.pauses`).  The workload writes from the event loop and never
    blocks here; a nemesis waits in its own thread (a condition variable)."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._inside: dict[int, LockHolder] = {}
        self._entries = 0
        self._latest: LockHolder | None = None
        self._active = False

    @property
    def active(self) -> bool:
        """Whether a lock workload is running (between its ``setup`` and ``close``)."""
        with self._changed:
            return self._active

    def begin(self) -> None:
        """A lock workload's run begins: nobody inside."""
        with self._changed:
            self._inside.clear()
            self._latest = None
            self._active = True
            self._changed.notify_all()

    def end(self) -> None:
        """The run is over: nobody inside, and waiting for an entry is pointless."""
        with self._changed:
            self._inside.clear()
            self._latest = None
            self._active = False
            self._changed.notify_all()

    def enter(self, holder: LockHolder) -> None:
        with self._changed:
            self._inside[holder.process] = holder
            self._latest = holder
            self._entries += 1
            self._changed.notify_all()

    def leave(self, process: int) -> None:
        with self._changed:
            self._inside.pop(process, None)
            if self._latest is not None and self._latest.process == process:
                self._latest = None

    def inside(self) -> list[LockHolder]:
        """The clients inside now (more than one: a violation in the making)."""
        with self._changed:
            return list(self._inside.values())

    def next_entry(self, timeout_s: float) -> LockHolder | None:
        """The next client to enter the critical section after this call, waiting at most
        ``timeout_s``; past that, the last to enter if it is still inside, else any client
        inside; None when nobody is (or no lock workload runs: then at once)."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            seen = self._entries
            while self._active:
                remaining_s = deadline - time.monotonic()
                if remaining_s <= 0:
                    break
                self._changed.wait(remaining_s)
                if self._entries != seen and self._latest is not None:
                    return self._latest
            if self._latest is not None:
                return self._latest
            return next(iter(self._inside.values()), None)


LOCK_HOLDERS = LockHolders()
"""The lock workloads' holders (one run at a time per process, as ``pnyx test`` runs)."""


def _member(etcd: AsyncEtcdClient) -> str:
    """The endpoint ``etcd`` sends its calls through now (the client's current member,
    which it keeps until a call through it fails)."""
    index: int = getattr(etcd, "_current", 0)
    return etcd.endpoints[index % len(etcd.endpoints)]


class LockWorkload(Workload):
    """Clients take etcd's mutex (lease ``ttl`` s) and hold it ``hold_s`` seconds.

    Recorded per cycle: ``acquire`` (ok with the fencing token once granted), and when the
    client leaves the critical section ``release`` (invoked before the unlock).  The
    critical section is ``[acquire completed, release invoked]``: inside the time the
    lock was really held if the lock is sound, so two overlapping sections are two holders
    at once (a violation).  The defaults are Jepsen's lease (2 s, etcd's shortest with its
    default election time-out) and holds of one to three TTLs, so every holder depends on
    its keep-alives.  Each holder is published in :data:`LOCK_HOLDERS` while inside."""

    name = "lock"
    fenced = False

    def __init__(self, keys: int = 1, seed: int = 0, ttl: int = 2,
                 hold_s: tuple[float, float] = (2.0, 6.0)) -> None:  # fmt: skip
        super().__init__(keys, seed)
        self.ttl = ttl
        self.hold_s = hold_s

    async def setup(self, etcd: AsyncEtcdClient, endpoints: Sequence[str],
                    recorder: Recorder) -> None:  # fmt: skip
        LOCK_HOLDERS.begin()

    async def close(self) -> None:
        LOCK_HOLDERS.end()

    @property
    def lock_name(self) -> str:
        return self.key("lock")

    @property
    def resource(self) -> str:
        return self.key("resource")

    async def step(self, client: Client) -> None:
        rec, process = client.recorder, client.process
        rec.record(process, "invoke", "acquire")
        state = "acquire"
        token = 0
        try:
            async with asyncio.timeout(ACQUIRE_TIMEOUT_S) as deadline:
                async with hold_lock(client.etcd, self.lock_name, ttl=self.ttl) as lock:
                    deadline.reschedule(None)
                    token = lock.revision
                    rec.record(process, "ok", "acquire", token)
                    state = "inside"
                    LOCK_HOLDERS.enter(LockHolder(process, _member(client.etcd)))
                    try:
                        done = await self._critical(client, process, lock.key, token)
                    finally:
                        LOCK_HOLDERS.leave(process)
                    if done:
                        rec.record(process, "invoke", "release", token)
                        state = "release"
                    else:
                        state = "crashed"
                    # the unlock and the session's revoke happen on leaving the block
            if state == "release":
                rec.record(process, "ok", "release", token)
        except (EtcdError, TimeoutError):
            if state == "acquire":  # not granted (a queued key goes with the session)
                rec.record(process, "fail", "acquire")
                await asyncio.sleep(0.1)
                return
            if state == "inside":
                rec.record(process, "invoke", "release", token)
            if state in ("inside", "release"):
                rec.record(process, "info", "release", token)
            state = "crashed"
        if state == "crashed":
            client.process += client.concurrency
            await asyncio.sleep(0.1)

    async def _critical(self, client: Client, process: int, lock_key: bytes,
                        token: int) -> bool:  # fmt: skip
        """Act on the resource while holding the lock; False: this process crashed (an
        operation of unknown outcome is left open)."""
        await asyncio.sleep(client.rng.uniform(*self.hold_s))
        return True

    def sections(self, history: History) -> list[tuple[int, int, int, Operation]]:
        """Critical sections ``(enter ns, exit ns, token, acquire op)``; an acquire whose
        release was never invoked (the client crashed in it) is open until the end."""
        ops = history.operations
        end = max((op.ret_time or op.call_time for op in ops), default=0)
        releases: dict[int, list[Operation]] = {}
        for op in ops:
            if op.f == "release":
                releases.setdefault(op.process, []).append(op)
        out = []
        for op in ops:
            if op.f != "acquire" or op.outcome != "ok" or op.ret_time is None:
                continue
            after = [r for r in releases.get(op.process, []) if r.call_time >= op.ret_time]
            exit_ns = min((r.call_time for r in after), default=end)
            out.append((op.ret_time, exit_ns, int(op.output), op))
        return sorted(out, key=lambda s: s[0])

    def _overlaps(self, history: History) -> list[tuple[Any, Any]]:
        overlaps = []
        latest: tuple[int, int, int, Operation] | None = None
        for section in self.sections(history):
            if latest is not None and section[0] < latest[1]:
                overlaps.append((latest, section))
            if latest is None or section[1] > latest[1]:
                latest = section
        return overlaps

    def check(self, history: History) -> list[CheckResult]:
        sections = self.sections(history)
        overlaps = self._overlaps(history)
        acquires = [op for op in history.operations if op.f == "acquire"]
        lines = []
        for a, b in overlaps[:20]:
            lines.append(
                f"p{a[3].process} held the lock (token {a[2]}) from {a[0] / 1e9:.3f} s to "
                f"{a[1] / 1e9:.3f} s; p{b[3].process} entered (token {b[2]}) at "
                f"{b[0] / 1e9:.3f} s")
        summary = (f"{len(sections)} critical sections from {_counts(acquires)} acquires: "
                   f"{len(overlaps)} overlapping pairs")
        verdict: CheckVerdict = "invalid" if overlaps else "valid"
        culprits = [s[3] for pair in overlaps[:10] for s in pair]
        results = [CheckResult("mutual exclusion", verdict, summary, "\n".join(lines),
                               {"sections": len(sections), "overlaps": len(overlaps)},
                               culprits)]  # fmt: skip
        return results


class FencedLockWorkload(LockWorkload):
    """The lock, and in the critical section a fenced write of the protected resource: a
    txn requiring ``create_revision(lock key) == token``.  Checked: successful writes in
    revision order carry non-decreasing tokens (overlaps are reported, not violations)."""

    name = "lock-fenced"
    fenced = True

    async def _critical(self, client: Client, process: int, lock_key: bytes,
                        token: int) -> bool:  # fmt: skip
        await asyncio.sleep(client.rng.uniform(*self.hold_s))
        rec = client.recorder
        rec.record(process, "invoke", "write", token)
        try:
            txn = await client.etcd.txn([Compare(lock_key, "create", "=", token)],
                                        [Put(self.resource, str(token))])  # fmt: skip
        except EtcdError:
            rec.record(process, "info", "write", token)
            return False
        if txn.succeeded:
            rec.record(process, "ok", "write", [token, txn.revision])
        else:
            rec.record(process, "fail", "write", token)
        return True

    def check(self, history: History) -> list[CheckResult]:
        overlaps = self._overlaps(history)
        writes = [op for op in history.operations if op.f == "write"]
        done = sorted((op for op in writes if op.outcome == "ok"), key=lambda o: o.output[1])
        stale: list[tuple[Operation, int]] = []
        highest = 0
        for op in done:
            token = op.output[0]
            if token < highest:
                stale.append((op, highest))
            highest = max(highest, token)
        refused = sum(1 for op in writes if op.outcome == "fail")
        summary = (f"{_counts(writes)} fenced writes ({refused} refused by the fence): "
                   f"{len(stale)} succeeded with a stale token; {len(overlaps)} overlapping "
                   "critical sections (allowed with fencing)")
        text = "\n".join(f"T{op.index} (p{op.process}) wrote with token {op.output[0]} at "
                         f"revision {op.output[1]}, after a write with token {high}"
                         for op, high in stale[:20])
        return [CheckResult("fencing", "invalid" if stale else "valid", summary, text,
                            {"writes": len(done), "refused": refused, "stale": len(stale),
                             "overlaps": len(overlaps)},
                            [op for op, _ in stale[:20]])]  # fmt: skip


# -- watch -----------------------------------------------------------------------------------


Event = tuple[int, str, str, str]
"""A watch event: (revision, PUT/DELETE, key, value)."""


def _event(event: WatchEvent) -> Event:
    return (event.revision, event.type, _text(event.kv.key), _text(event.kv.value))


WATCH_RETRY_PAUSE_S = 0.5
"""Pause before a watcher whose watch ended or failed watches again."""


class WatchWorkload(Workload):
    """Puts of unique values on ``keys`` keys under a prefix; one watcher per endpoint."""

    name = "watch"
    SETTLE_S = 20.0

    def __init__(self, keys: int = 3, seed: int = 0) -> None:
        super().__init__(keys, seed)
        self.count = itertools.count(1)
        self.start_revision = 0
        self.final_revision = 0
        self.watched: dict[int, list[Event]] = {}
        self.reference: list[Event] = []
        self.acked: list[tuple[str, str, int]] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.clients: list[AsyncEtcdClient] = []
        self.endpoints: list[str] = []
        self.errors: dict[int, str] = {}

    async def setup(self, etcd: AsyncEtcdClient, endpoints: Sequence[str],
                    recorder: Recorder) -> None:  # fmt: skip
        self.endpoints = list(endpoints)
        start = await retried(lambda: etcd.put(self.key("start"), "start"))
        self.start_revision = start.revision + 1
        for i in range(len(endpoints)):
            rotated = self.endpoints[i:] + self.endpoints[:i]
            client = AsyncEtcdClient(rotated, timeout_s=CALL_TIMEOUT_S, connect_timeout_s=1.0)
            self.clients.append(client)
            self.watched[i] = []
            self.tasks.append(asyncio.create_task(self._watch(i, client)))
        await asyncio.sleep(0.2)

    async def _watch(self, i: int, client: AsyncEtcdClient) -> None:
        """Watch the prefix from the start revision until cancelled.  When the watch fails
        (every member down, e.g. under ``kill-all``) the watcher watches again from the
        revision after the last event it saw, as a client resuming a watch does; the
        check then covers the resumption too (no gap, no duplicate)."""
        events = self.watched[i]
        while True:
            start = events[-1][0] + 1 if events else self.start_revision
            try:
                async with client.watch(self.key(""), prefix=True,
                                        start_revision=start) as watch:  # fmt: skip
                    async for event in watch:
                        events.append(_event(event))
            except EtcdError as exc:
                self.errors[i] = str(exc)
            await asyncio.sleep(WATCH_RETRY_PAUSE_S)  # ended or failed: resume

    async def step(self, client: Client) -> None:
        key = self.key(f"k{client.rng.randrange(self.keys)}")
        value = f"v{next(self.count)}"
        etcd = client.etcd

        async def put() -> list[Any]:
            revision = (await etcd.put(key, value)).revision
            self.acked.append((key, value, revision))
            return [value, revision]
        await client.op("put", value, key, put)

    async def final(self, etcd: AsyncEtcdClient, recorder: Recorder) -> None:
        end = await retried(lambda: etcd.put(self.key("end"), "end"))
        self.final_revision = end.revision
        self.acked.append((self.key("end"), "end", end.revision))
        deadline = time.monotonic() + self.SETTLE_S
        while time.monotonic() < deadline:
            if all(ev and ev[-1][0] >= self.final_revision for ev in self.watched.values()):
                break
            await asyncio.sleep(0.1)
        await self.close()
        self.reference = await asyncio.wait_for(self._replay(etcd), self.SETTLE_S)

    async def _replay(self, etcd: AsyncEtcdClient) -> list[Event]:
        out: list[Event] = []
        async with etcd.watch(self.key(""), prefix=True,
                              start_revision=self.start_revision) as watch:
            async for event in watch:
                out.append(_event(event))
                if event.revision >= self.final_revision:
                    break
        return out

    async def close(self) -> None:
        await cancel_and_wait(self.tasks)
        self.tasks = []
        for client in self.clients:
            await client.close()
        self.clients = []

    def check(self, history: History) -> list[CheckResult]:
        if not self.final_revision or not self.reference:
            # the final write or the replay never completed (an interrupted or failed run)
            return [CheckResult("watch", "unknown", "the run ended before the write history "
                                "was replayed: nothing checked")]  # fmt: skip
        return [check_watch(self.watched, self.reference, self.acked, self.final_revision)]


def check_watch(watched: dict[int, list[Event]], reference: list[Event],
                acked: list[tuple[str, str, int]], final_revision: int) -> CheckResult:
    """Every watcher saw exactly ``reference`` (the write history, replayed at the end):
    revisions strictly increasing, none missing or repeated, and every acknowledged write
    is in it at its revision."""
    problems: list[str] = []
    if not reference or reference[-1][0] < final_revision:
        problems.append(f"the write history could not be replayed up to revision "
                        f"{final_revision}")  # fmt: skip
    revisions = [e[0] for e in reference]
    if any(a >= b for a, b in itertools.pairwise(revisions)):
        problems.append("the replayed write history is not in strictly increasing revision "
                        "order")  # fmt: skip
    by_rev = {e[0]: e for e in reference}
    missing = [w for w in acked if by_rev.get(w[2], (0, "", "", ""))[2:] != (w[0], w[1])]
    if missing:
        problems.append(f"{len(missing)} acknowledged writes missing from the write "
                        f"history: {missing[:5]}")  # fmt: skip
    for i, seen in sorted(watched.items()):
        if seen == reference:
            continue
        revs = [e[0] for e in seen]
        first = next((k for k, (a, b) in enumerate(zip(seen, reference, strict=False))
                      if a != b), min(len(seen), len(reference)))  # fmt: skip
        gaps = sorted(set(revisions) - set(revs))
        dups = len(revs) - len(set(revs))
        what = (f"watcher {i + 1}: {len(seen)} events vs {len(reference)} written; first "
                f"difference at event {first + 1}")
        if first < len(seen):
            what += f" (saw {seen[first]}"
            what += f", expected {reference[first]})" if first < len(reference) else ")"
        if gaps:
            what += f"; {len(gaps)} revisions never seen (gap), first {gaps[:5]}"
        if dups:
            what += f"; {dups} duplicates"
        if any(a >= b for a, b in itertools.pairwise(revs)):
            what += "; out of order"
        problems.append(what)
    summary = (f"{len(watched)} watchers, {len(reference)} events written, "
               f"{len(acked)} acknowledged writes: "
               + ("every watcher saw the same ordered events, no gaps" if not problems
                  else f"{len(problems)} problems"))  # fmt: skip
    return CheckResult("watch", "invalid" if problems else "valid", summary,
                       "\n".join(problems),
                       {"watchers": {str(i): len(v) for i, v in watched.items()},
                        "events": len(reference), "acknowledged": len(acked)})  # fmt: skip


# -- registry --------------------------------------------------------------------------------


WORKLOADS: dict[str, Callable[..., Workload]] = {
    "register": RegisterWorkload,
    "kv": KVWorkload,
    "list-append": ListAppendWorkload,
    "bank": BankWorkload,
    "set": SetWorkload,
    "lock": LockWorkload,
    "lock-fenced": FencedLockWorkload,
    "watch": WatchWorkload,
}


def make_workload(name: str, *, keys: int | None = None, seed: int = 0) -> Workload:
    """A workload by name (``keys`` None: the workload's default)."""
    try:
        factory = WORKLOADS[name]
    except KeyError:
        raise KeyError(f"unknown workload {name!r}; choose one of "
                       f"{', '.join(WORKLOADS)}") from None  # fmt: skip
    return factory(seed=seed) if keys is None else factory(keys=keys, seed=seed)


__all__ = [
    "LOCK_HOLDERS",
    "NEMESIS_PROCESS",
    "WORKLOADS",
    "CheckResult",
    "Client",
    "Failed",
    "Indeterminate",
    "LockHolder",
    "LockHolders",
    "Recorder",
    "Workload",
    "check_watch",
    "make_workload",
]

"""The transaction workloads of the simulator and their checks, pure.

- **bank** (Jepsen's bank test): ``accounts`` accounts holding ``initial`` each (a key
  never written holds ``initial``); a ``transfer`` reads two accounts and moves an amount
  when the source holds it; a ``read`` reads every account in one transaction.  Every
  committed read must see the total and no negative balance, and so must the store at the
  end.
- **list-append** (Elle, Kingsbury & Alvaro 2020): transactions of reads and appends of
  unique values over a few keys, checked by :mod:`pnyx.check.snapshot_isolation`.

A transaction is a :class:`Program`: the keys it reads (all read at its snapshot first),
then the writes computed from the values read, and what its history records.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pnyx.core import HistoryEvent

BANK_PREFIX = "acct"
LIST_PREFIX = "list"
TS_KEY = "!ts"
"""The key under which the timestamp allocator's mark lives (sorts before every data key)."""


class Program(Protocol):
    """One transaction of a workload."""

    @property
    def f(self) -> str:
        """The history's operation name."""
        ...

    def invocation(self) -> Any:
        """The value recorded when the transaction is invoked."""
        ...

    def reads(self) -> tuple[str, ...]:
        """Keys read at the snapshot (sorted, distinct)."""
        ...

    def writes(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """The writes, given the value read for every key of :meth:`reads`."""
        ...

    def output(self, values: Mapping[str, Any]) -> Any:
        """The value recorded when the transaction commits."""
        ...


@dataclass(frozen=True)
class BankConfig:
    """The bank: account count and initial balance."""

    accounts: int = 6
    initial: int = 10

    def account_keys(self) -> tuple[str, ...]:
        """The accounts' keys, in order."""
        return tuple(f"{BANK_PREFIX}{i}" for i in range(self.accounts))

    @property
    def total(self) -> int:
        """The money in the bank, always."""
        return self.accounts * self.initial

    def balance(self, stored: Any) -> int:
        """The balance of an account whose stored value is ``stored`` (None: never written)."""
        return self.initial if stored is None else int(stored)


@dataclass(frozen=True)
class Transfer:
    """Move ``amount`` from ``src`` to ``dst`` when ``src`` holds it."""

    bank: BankConfig
    src: str
    dst: str
    amount: int
    f: str = "transfer"

    def invocation(self) -> Any:
        return (self.src, self.dst, self.amount)

    def reads(self) -> tuple[str, ...]:
        return tuple(sorted((self.src, self.dst)))

    def writes(self, values: Mapping[str, Any]) -> dict[str, Any]:
        src = self.bank.balance(values[self.src])
        if src < self.amount:
            return {}
        dst = self.bank.balance(values[self.dst])
        return {self.src: src - self.amount, self.dst: dst + self.amount}

    def output(self, values: Mapping[str, Any]) -> Any:
        moved = self.bank.balance(values[self.src]) >= self.amount
        return "moved" if moved else "insufficient"


@dataclass(frozen=True)
class ReadAll:
    """Read every account in one transaction."""

    bank: BankConfig
    f: str = "read"

    def invocation(self) -> Any:
        return None

    def reads(self) -> tuple[str, ...]:
        return self.bank.account_keys()

    def writes(self, values: Mapping[str, Any]) -> dict[str, Any]:
        return {}

    def output(self, values: Mapping[str, Any]) -> Any:
        return tuple(self.bank.balance(values[k]) for k in self.bank.account_keys())


@dataclass(frozen=True)
class ListAppendTxn:
    """Elle's list-append transaction: micro-operations ``("r", key, None)`` and
    ``("append", key, value)``; a key's stored value is the list of its appended values."""

    mops: tuple[tuple[str, str, Any], ...]
    f: str = "txn"

    def invocation(self) -> Any:
        return [list(m) for m in self.mops]

    def reads(self) -> tuple[str, ...]:
        return tuple(sorted({k for _, k, _ in self.mops}))

    def _run(self, values: Mapping[str, Any]) -> tuple[list[list[Any]], dict[str, Any]]:
        # Lists, not tuples: a stored value must equal itself after a msgpack round trip.
        state = {k: list(values[k] or ()) for k in self.reads()}
        done: list[list[Any]] = []
        written: dict[str, Any] = {}
        for f, k, v in self.mops:
            if f == "r":
                done.append(["r", k, list(state[k])])
            else:
                state[k] = [*state[k], v]
                written[k] = state[k]
                done.append(["append", k, v])
        return done, written

    def writes(self, values: Mapping[str, Any]) -> dict[str, Any]:
        return self._run(values)[1]

    def output(self, values: Mapping[str, Any]) -> Any:
        return self._run(values)[0]


@dataclass(frozen=True)
class ListAppendConfig:
    """Keys of the list-append workload and the size of its transactions."""

    keys: int = 5
    max_mops: int = 4

    def key_names(self) -> tuple[str, ...]:
        """The keys, in order."""
        return tuple(f"{LIST_PREFIX}{i}" for i in range(self.keys))


class Draw(Protocol):
    """The slice of an RNG the workloads use."""

    def random(self) -> float: ...

    def randrange(self, start: int, stop: int) -> int: ...


def draw_bank(bank: BankConfig, rng: Draw, read_share: float = 0.25) -> Program:
    """A random bank transaction: a read of every account or a transfer."""
    if rng.random() < read_share:
        return ReadAll(bank)
    keys = bank.account_keys()
    src = rng.randrange(0, len(keys))
    dst = (src + rng.randrange(1, len(keys))) % len(keys)
    return Transfer(bank, keys[src], keys[dst], rng.randrange(1, 6))


def draw_list_append(cfg: ListAppendConfig, rng: Draw, next_value: int) -> Program:
    """A random list-append transaction; appended values count up from ``next_value``."""
    keys = cfg.key_names()
    mops: list[tuple[str, str, Any]] = []
    for _ in range(rng.randrange(1, cfg.max_mops + 1)):
        key = keys[rng.randrange(0, len(keys))]
        if rng.random() < 0.5:
            mops.append(("r", key, None))
        else:
            mops.append(("append", key, next_value))
            next_value += 1
    return ListAppendTxn(tuple(mops))


def bank_problems(bank: BankConfig, history: Sequence[HistoryEvent]) -> list[str]:
    """Committed reads of every account that do not see the bank's total, or see a negative
    balance (empty when all are right)."""
    problems: list[str] = []
    for ev in history:
        if ev.type != "ok" or ev.f != "read":
            continue
        balances = list(ev.value)
        if sum(balances) != bank.total or min(balances) < 0:
            problems.append(
                f"process {ev.process} read balances {balances} (sum {sum(balances)}, "
                f"expected {bank.total}, none negative)"
            )
    return problems


def final_bank_problem(bank: BankConfig, final: Mapping[str, Any]) -> str:
    """Why the bank's final state (committed values by key) is wrong; empty when right."""
    balances = [bank.balance(final.get(k)) for k in bank.account_keys()]
    if sum(balances) != bank.total or min(balances) < 0:
        return (
            f"final balances {balances} (sum {sum(balances)}, expected {bank.total}, "
            "none negative)"
        )
    return ""

"""Transactions on real processes (``pnyx cluster up --protocol txn [--ranges N]``).

The processes are multi-Raft's (:mod:`pnyx.protocols.multiraft.runtime_def`: same Raft
tuning for 10 ms ticks, journal, checkpoints and initial layout) whose every data range
runs :class:`~pnyx.protocols.txn.machine.TxnRangeMachine`, so the range logs accept the
transaction commands of :mod:`pnyx.protocols.txn.messages` (they cross the wire untyped
and the range machine types them by tag).  The coordinator is a client:
:class:`pnyx.services.txn.TxnStore`.

:data:`TXN` is the catalog's ``txn``: for ``pnyx sim txn`` it is the ``percolator``
simulation (the commit mode is the client's choice; the processes are the same for all).
"""

from __future__ import annotations

import dataclasses

from pnyx.protocols.multiraft.messages import RangeBounds
from pnyx.protocols.multiraft.node import MultiRaftConfig
from pnyx.protocols.multiraft.runtime_def import RUNTIME_CONFIG, multiraft_runtime, split_keys
from pnyx.protocols.txn.machine import TxnRangeMachine
from pnyx.protocols.txn.spec import PERCOLATOR_SPEC
from pnyx.sim.spec import ProtocolDef, RuntimeDef


def txn_range_machine(bounds: RangeBounds, mutants: frozenset[str]) -> TxnRangeMachine:
    """Every data range's state machine: Percolator's columns (no transaction mutants)."""
    return TxnRangeMachine(bounds, mutants)


def txn_runtime_config(ranges: int = 1) -> MultiRaftConfig:
    """Multi-Raft's runtime configuration with transactional ranges, ``ranges`` at the start."""
    return dataclasses.replace(
        RUNTIME_CONFIG,
        initial_split_keys=split_keys(ranges),
        make_range_machine=txn_range_machine,
    )


def txn_runtime(ranges: int = 1) -> RuntimeDef:
    """The runtime part of ``txn`` whose fresh clusters start with ``ranges`` data ranges."""
    return multiraft_runtime(txn_runtime_config(ranges))


TXN_RUNTIME = txn_runtime()
"""One data range at the start (``pnyx cluster up --protocol txn``)."""

TXN = dataclasses.replace(
    PERCOLATOR_SPEC,
    name="txn",
    summary="transactions over multi-Raft on real processes (sim: percolator, SI checked)",
    runtime=TXN_RUNTIME,
)
"""``pnyx serve`` / ``pnyx cluster up --protocol txn``; ``pnyx sim txn`` is percolator's."""


def txn_with_ranges(ranges: int) -> ProtocolDef:
    """``txn`` whose fresh clusters start with ``ranges`` data ranges
    (``pnyx serve --protocol txn --ranges N``)."""
    return dataclasses.replace(TXN, runtime=txn_runtime(ranges))

"""Distributed transactions over multi-Raft: Percolator (snapshot isolation), async commit,
1PC, and serializable two-phase commit, with the coordinator as a simulated client.

See README.md beside this file: the papers followed, the isolation each mode gives, the
fault model, the mutants and the measured figures.
"""

from pnyx.protocols.txn.client import (
    ACK_BEFORE_DURABLE,
    ASYNC_COMMIT,
    COMMIT_TS_BEFORE_PREWRITE,
    MODES,
    ONE_PC,
    PERCOLATOR,
    TWO_PC,
    TxnClient,
    TxnClientConfig,
)
from pnyx.protocols.txn.machine import SPLIT_LOSES_LOCK, TxnRangeMachine
from pnyx.protocols.txn.mvcc import READER_IGNORES_LOCK, SCAN_IGNORES_LOCK, KeyRecord, MvccStore

__all__ = [
    "ACK_BEFORE_DURABLE",
    "ASYNC_COMMIT",
    "COMMIT_TS_BEFORE_PREWRITE",
    "MODES",
    "ONE_PC",
    "PERCOLATOR",
    "READER_IGNORES_LOCK",
    "SCAN_IGNORES_LOCK",
    "SPLIT_LOSES_LOCK",
    "TWO_PC",
    "KeyRecord",
    "MvccStore",
    "TxnClient",
    "TxnClientConfig",
    "TxnRangeMachine",
]

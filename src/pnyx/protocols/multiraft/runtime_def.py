"""Multi-Raft on real processes (``pnyx cluster up --protocol multiraft [--ranges N]``).

The node is the simulator's :class:`MultiRaftNode` with tuning for 10 ms ticks; it applies
its groups' commands itself, so the runtime needs no state machine and no service handler.
Its journal (``GroupOp`` entries, one ``LogAppend`` per ready batch: one fsync for every
group) is the runtime's WAL; the checkpoint is the WAL's snapshot.

Initial layout: ``--ranges N`` starts a fresh cluster with ``N`` data ranges split at
:func:`split_keys` — evenly over two-character prefixes of the alphabet ``0-9a-z``
(1,296 prefixes), the key space pnyx's multi-Raft clients draw from
(:func:`pnyx.services.multiraft.spread_key`).  Keys are ordered as strings, so any other
keys work as well; they may just fall into fewer of the initial ranges.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from pnyx.core import DurableState, NodeFactory, Rng
from pnyx.protocols.multiraft.messages import CLIENT_MESSAGES, PEER_MESSAGES, GroupOp
from pnyx.protocols.multiraft.node import MultiRaftConfig, MultiRaftNode
from pnyx.protocols.raft.config import RaftConfig
from pnyx.protocols.raft.spec import RAFT_RUNTIME_CONFIG_FIELDS
from pnyx.sim.spec import RuntimeDef

KEY_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
"""Characters of the key prefixes the initial split keys divide evenly."""
PREFIXES = len(KEY_ALPHABET) ** 2
"""Two-character prefixes: the finest initial layout has this many ranges."""
MAX_INITIAL_RANGES = 256

RUNTIME_RAFT = RaftConfig(
    **{
        **RAFT_RUNTIME_CONFIG_FIELDS,
        "snapshot_threshold_entries": 1_000,
        "election_timeout_ticks": 30,
        "heartbeat_interval_ticks": 5,
    }
)
"""Every group's Raft for 10 ms ticks: elections after 300-600 ms (many groups per process
on a busy machine), snapshots every 1,000 entries (a checkpoint holds every group's log)."""
SPLIT_BYTES = 64 * 1024 * 1024
"""Default size at which a range splits (``--split-bytes``): 64 MiB.  TiKV splits a region
at 96 MiB (``region-split-size``), CockroachDB at 512 MiB (``range_max_bytes``); pnyx takes
less than TiKV because a range's snapshot is one msgpack image built in one step of the
process's event loop (a new replica, a move) and every journal checkpoint encodes every
group's image again."""
RUNTIME_CONFIG = MultiRaftConfig(
    raft=RUNTIME_RAFT,
    split_threshold_keys=128,
    split_threshold_bytes=SPLIT_BYTES,
    checkpoint_entries=4_096,
    move_timeout_ticks=3_000,
    replies_first=True,
)
"""Ranges split above 128 keys or 64 MiB; the journal is checkpointed every 4,096 entries;
a replica move is given up after 30 s (the learner's snapshot may be large); replies go out
without waiting for the next batch's fsync."""


def split_keys(ranges: int) -> tuple[str, ...]:
    """The ``ranges - 1`` keys that cut the two-character prefixes of :data:`KEY_ALPHABET`
    into ``ranges`` even spans (``()`` for one range)."""
    if not 1 <= ranges <= MAX_INITIAL_RANGES:
        raise ValueError(f"ranges must be in [1, {MAX_INITIAL_RANGES}], got {ranges}")
    return tuple(_prefix(i * PREFIXES // ranges) for i in range(1, ranges))


def _prefix(index: int) -> str:
    high, low = divmod(index, len(KEY_ALPHABET))
    return KEY_ALPHABET[high] + KEY_ALPHABET[low]


def runtime_config(ranges: int = 1, **changes: Any) -> MultiRaftConfig:
    """:data:`RUNTIME_CONFIG` starting with ``ranges`` ranges, with ``changes``."""
    return dataclasses.replace(RUNTIME_CONFIG, initial_split_keys=split_keys(ranges), **changes)


def node_factory(config: MultiRaftConfig) -> NodeFactory:
    """A factory of multi-Raft processes with ``config``."""

    def make_node(
        node_id: int, peers: tuple[int, ...], rng: Rng, durable: DurableState
    ) -> MultiRaftNode:
        return MultiRaftNode(node_id, peers, rng, durable, config)

    return make_node


def multiraft_runtime(config: MultiRaftConfig = RUNTIME_CONFIG) -> RuntimeDef:
    """The runtime part of a multi-Raft definition whose processes use ``config``."""
    return RuntimeDef(
        peer_message_types=PEER_MESSAGES,
        client_message_types=CLIENT_MESSAGES,
        entry_type=GroupOp,
        make_node=node_factory(config),
    )


MULTIRAFT_RUNTIME = multiraft_runtime()
"""One range at the start (``pnyx cluster up --protocol multiraft``)."""

"""A Dynamo-style replica and request coordinator (DeCandia et al., SOSP 2007).

Every node is a storage replica for the key ranges the ring gives it and coordinates the
client requests it receives: a write gets a fresh dot from the coordinator's persisted
per-key counter and goes to the key's replicas, answered once ``w`` of them made it durable; a
read asks the replicas and answers with the merged siblings of the first ``r`` replies.
Time only advances by ticks; a request that times out marks the silent nodes suspected
and either retries them (strict quorum) or, with ``sloppy``, goes to the next nodes of the
preference list, which keep the versions as hints for the node they stand in for and
hand them off once it answers.  Read repair and Merkle-tree anti-entropy bring stale
replicas up to date.  Versions are dotted version vectors (:mod:`.versions`).
"""

from __future__ import annotations

from typing import Any

import msgspec

from pnyx.core import (
    ClientReply,
    DurableState,
    InvalidMessage,
    Message,
    Outbox,
    PutRecord,
    Rng,
    is_client,
)
from pnyx.protocols.dynamo import merkle
from pnyx.protocols.dynamo.config import DynamoConfig
from pnyx.protocols.dynamo.messages import (
    Get,
    HintAck,
    HintDeliver,
    KeyData,
    MerkleDiff,
    MerklePush,
    MerkleTree,
    Put,
    ReadResult,
    ReplicaRead,
    ReplicaReadReply,
    ReplicaWrite,
    ReplicaWriteAck,
    WriteResult,
)
from pnyx.protocols.dynamo.ring import Ring
from pnyx.protocols.dynamo.versions import Version, context_of, merge, obsoletes, valid_context

COUNTER_PREFIX = "counter:"
KEY_PREFIX = "key:"
HINT_PREFIX = "hint:"
MAX_KEY_CHARS = 256


class _Request:
    """A request this node coordinates."""

    __slots__ = (
        "acks", "age_ticks", "answered", "client", "client_request", "key", "kind",
        "replies", "rounds", "targets", "version",
    )

    def __init__(self, kind: str, client: int, client_request: int, key: str,
                 version: Version | None) -> None:
        self.kind = kind
        self.client = client
        self.client_request = client_request
        self.key = key
        self.version = version
        self.targets: dict[int, int] = {}
        """node -> the node it stands in for (-1: for itself)."""
        self.replies: dict[int, tuple[Version, ...]] = {}
        self.acks: set[int] = set()
        self.age_ticks = 0
        self.rounds = 0
        self.answered = False

    def responded(self, node: int) -> bool:
        return node in self.replies or node in self.acks

    def quorum(self, config: DynamoConfig) -> bool:
        if self.kind == "get":
            return len(self.replies) >= config.r
        return len(self.acks) >= config.w


class DynamoNode(Outbox):
    """Implements :class:`pnyx.core.Node`: one replica and coordinator."""

    def __init__(self, node_id: int, peers: tuple[int, ...], rng: Rng, durable: DurableState,
                 config: DynamoConfig | None = None) -> None:
        self.config = config if config is not None else DynamoConfig()
        if node_id not in peers:
            raise ValueError(f"node {node_id} missing from its own cluster {peers}")
        if self.config.n > len(peers):
            raise ValueError(f"n={self.config.n} exceeds the {len(peers)} nodes of the ring")
        super().__init__()
        self.node_id = node_id
        self.ring = Ring(peers, self.config.vnodes)
        self.store: dict[str, tuple[Version, ...]] = {}
        self.hints: dict[int, dict[str, tuple[Version, ...]]] = {}
        self.counters: dict[str, int] = {}
        """key -> the last counter of a dot this node coordinated for it (persisted)."""
        self.suspected: set[int] = set()
        self._rng = rng
        self._requests: dict[int, _Request] = {}
        self._next_op = 0
        self._key_range: dict[str, int] = {}
        self.my_ranges = self.ring.ranges_of(node_id, self.config.n)
        self._ae_cursor = rng.randrange(0, max(1, len(self.my_ranges)))
        self._ticks = rng.randrange(0, self.config.anti_entropy_ticks)
        self._recover(durable)

    # -- node contract -------------------------------------------------------------------

    def step(self, msg: Message, from_id: int) -> None:
        """Handle a client request or a peer's message."""
        if isinstance(msg, (Get, Put)):
            self._client_request(msg, from_id)
            return
        if is_client(from_id):
            raise InvalidMessage(f"client {from_id} sent a peer message {type(msg).__name__}")
        self.suspected.discard(from_id)
        if isinstance(msg, ReplicaRead):
            self._send(from_id, ReplicaReadReply(msg.op_id, msg.key, self.local(msg.key)))
        elif isinstance(msg, ReplicaWrite):
            self._accept_write(msg.key, msg.versions, msg.hint_for)
            if msg.op_id:
                self._send(from_id, ReplicaWriteAck(msg.op_id))
        elif isinstance(msg, (ReplicaReadReply, ReplicaWriteAck)):
            self._on_replica_answer(msg, from_id)
        elif isinstance(msg, HintDeliver):
            self._store_versions(msg.key, msg.versions)
            self._send(from_id, HintAck(msg.key, msg.versions))
        elif isinstance(msg, HintAck):
            self._drop_hint(from_id, msg.key, msg.versions)
        elif isinstance(msg, (MerkleTree, MerkleDiff, MerklePush)):
            self._anti_entropy_message(msg, from_id)
        else:
            raise InvalidMessage(f"dynamo node got unexpected message {type(msg).__name__}")

    def tick(self) -> None:
        """Time out requests; now and then hand off hints and run anti-entropy."""
        self._ticks += 1
        for op in list(self._requests):
            req = self._requests[op]
            req.age_ticks += 1
            if req.age_ticks % self.config.request_timeout_ticks == 0:
                self._on_timeout(op, req)
        if self._ticks % self.config.handoff_ticks == 0:
            self._hand_off()
        if self.config.anti_entropy and self._ticks % self.config.anti_entropy_ticks == 0:
            self._start_anti_entropy()

    def status(self) -> dict[str, Any]:
        """Keys held, hints held, requests in flight."""
        hints = sum(len(keys) for keys in self.hints.values())
        return {"keys": len(self.store), "hints": hints, "requests": len(self._requests)}

    def invariants(self) -> list[str]:
        """Siblings are sorted by dot and none obsoletes another."""
        broken: list[str] = []
        for key, siblings in self.store.items():
            dots = [(v.node, v.counter) for v in siblings]
            if dots != sorted(set(dots)):
                broken.append(f"node {self.node_id} key {key!r}: siblings not sorted {dots}")
            if any(obsoletes(a, b) for a in siblings for b in siblings if a is not b):
                broken.append(f"node {self.node_id} key {key!r}: obsolete sibling kept")
        return broken

    # -- storage -------------------------------------------------------------------------

    def local(self, key: str) -> tuple[Version, ...]:
        """What this node answers for ``key``: its own siblings merged with hinted ones."""
        result = self.store.get(key, ())
        for intended in sorted(self.hints):
            hinted = self.hints[intended].get(key)
            if hinted:
                result = merge(result, hinted)
        return result

    def _recover(self, durable: DurableState) -> None:
        for name in sorted(durable.records):
            value = durable.records[name]
            if name.startswith(COUNTER_PREFIX):
                self.counters[name[len(COUNTER_PREFIX):]] = int(value)
            elif name.startswith(KEY_PREFIX) and value:
                self.store[name[len(KEY_PREFIX):]] = _versions(value)
            elif name.startswith(HINT_PREFIX) and value:
                intended, _, key = name[len(HINT_PREFIX):].partition(":")
                self.hints.setdefault(int(intended), {})[key] = _versions(value)

    def _store_versions(self, key: str, versions: tuple[Version, ...]) -> None:
        old = self.store.get(key, ())
        merged = merge(old, versions)
        if merged != old:
            self.store[key] = merged
            self._ready.persist.append(PutRecord(KEY_PREFIX + key, merged))

    def _accept_write(self, key: str, versions: tuple[Version, ...], hint_for: int) -> None:
        if hint_for < 0 or hint_for == self.node_id:
            self._store_versions(key, versions)
            return
        held = self.hints.setdefault(hint_for, {})
        old = held.get(key, ())
        merged = merge(old, versions)
        if merged != old:
            held[key] = merged
            self._ready.persist.append(PutRecord(f"{HINT_PREFIX}{hint_for}:{key}", merged))

    def _drop_hint(self, intended: int, key: str, versions: tuple[Version, ...]) -> None:
        held = self.hints.get(intended, {})
        if held.get(key) != versions:
            return  # more arrived since the hand-off: keep it for the next round
        del held[key]
        if not held:
            del self.hints[intended]
        self._ready.persist.append(PutRecord(f"{HINT_PREFIX}{intended}:{key}", None))

    def _hand_off(self) -> None:
        sent = 0
        for intended in sorted(self.hints):
            for key in sorted(self.hints[intended]):
                if sent >= self.config.max_hints_per_round:
                    return
                self._send(intended, HintDeliver(key, self.hints[intended][key]))
                sent += 1

    # -- coordination --------------------------------------------------------------------

    def _client_request(self, msg: Get | Put, client: int) -> None:
        error = _check_request(msg)
        if error:
            self._send(client, ClientReply(msg.request_id, ok=False, error=error))
            return
        version = None
        if isinstance(msg, Put):
            counter = self.counters.get(msg.key, 0) + 1
            self.counters[msg.key] = counter
            self._ready.persist.append(PutRecord(COUNTER_PREFIX + msg.key, counter))
            version = Version(self.node_id, counter, msg.context, msg.value)
        kind = "get" if isinstance(msg, Get) else "put"
        self._next_op += 1
        op = self._next_op
        req = _Request(kind, client, msg.request_id, msg.key, version)
        self._requests[op] = req
        for node, hint_for in self._choose_targets(msg.key):
            self._contact(op, req, node, hint_for)
        self._progress(op, req)

    def _choose_targets(self, key: str) -> list[tuple[int, int]]:
        walk = self.ring.preference_list(key)
        top = walk[: self.config.n]
        if not self.config.sloppy:
            return [(node, -1) for node in top]
        spare = [node for node in walk[self.config.n:] if node not in self.suspected]
        chosen: list[tuple[int, int]] = []
        for node in top:
            if node in self.suspected and spare:
                chosen.append((spare.pop(0), node))
            else:
                chosen.append((node, -1))
        return chosen

    def _contact(self, op: int, req: _Request, node: int, hint_for: int) -> None:
        req.targets[node] = hint_for
        if node == self.node_id:
            if req.kind == "get":
                req.replies[node] = self.local(req.key)
            else:
                assert req.version is not None
                self._accept_write(req.key, (req.version,), hint_for)
                req.acks.add(node)
        elif req.kind == "get":
            self._send(node, ReplicaRead(op, req.key))
        else:
            assert req.version is not None
            self._send(node, ReplicaWrite(op, req.key, (req.version,), hint_for))

    def _on_replica_answer(self, msg: ReplicaReadReply | ReplicaWriteAck, from_id: int) -> None:
        req = self._requests.get(msg.op_id)
        if req is None or from_id not in req.targets:
            return  # late answer to a finished request
        if isinstance(msg, ReplicaReadReply) and req.kind == "get":
            req.replies[from_id] = msg.versions
        elif isinstance(msg, ReplicaWriteAck) and req.kind == "put":
            req.acks.add(from_id)
        self._progress(msg.op_id, req)

    def _progress(self, op: int, req: _Request) -> None:
        if not req.answered and req.quorum(self.config):
            req.answered = True
            self._send(req.client, ClientReply(req.client_request, ok=True,
                                               result=self._result(req)))
        if req.answered and all(req.responded(node) for node in req.targets):
            self._finish(op, req)

    def _result(self, req: _Request) -> ReadResult | WriteResult:
        if req.kind == "put":
            assert req.version is not None
            return WriteResult(req.version.node, req.version.counter)
        merged = _merge_all(req.replies)
        return ReadResult(tuple(v.value for v in merged), context_of(merged))

    def _on_timeout(self, op: int, req: _Request) -> None:
        silent = [node for node in req.targets if not req.responded(node)]
        self.suspected.update(node for node in silent if node != self.node_id)
        if req.answered:
            self._finish(op, req)
            return
        if req.rounds >= self.config.max_rounds:
            self._send(req.client, ClientReply(req.client_request, ok=False, error="timeout"))
            self._finish(op, req)
            return
        req.rounds += 1
        for node in silent:
            stand_in = self._stand_in(req) if self.config.sloppy else None
            if stand_in is None:
                self._contact(op, req, node, req.targets[node])  # retry (messages get lost)
            else:
                intended = req.targets[node] if req.targets[node] >= 0 else node
                self._contact(op, req, stand_in, intended)
        self._progress(op, req)

    def _stand_in(self, req: _Request) -> int | None:
        """The next unsuspected node of the preference list not yet asked, if any."""
        for node in self.ring.preference_list(req.key):
            if node not in req.targets and node not in self.suspected:
                return node
        return None

    def _finish(self, op: int, req: _Request) -> None:
        """Forget the request; after a read, repair the replicas that answered stale data."""
        del self._requests[op]
        if req.kind != "get" or not self.config.read_repair or not req.replies:
            return
        merged = _merge_all(req.replies)
        for node in sorted(req.replies):
            if req.replies[node] == merged:
                continue
            if node == self.node_id:
                self._accept_write(req.key, merged, req.targets[node])
            else:
                self._send(node, ReplicaWrite(0, req.key, merged, req.targets[node]))

    # -- anti-entropy --------------------------------------------------------------------

    def range_of(self, key: str) -> int:
        """The ring range of ``key`` (cached)."""
        found = self._key_range.get(key)
        if found is None:
            found = self._key_range[key] = self.ring.range_of(key)
        return found

    def range_items(self, range_index: int) -> dict[str, tuple[Version, ...]]:
        """This node's own keys of one range."""
        return {k: v for k, v in self.store.items() if self.range_of(k) == range_index}

    def tree(self, range_index: int) -> tuple[bytes, ...]:
        """The Merkle tree of this node's keys in one range."""
        return merkle.build(self.range_items(range_index))

    def _leaf_data(self, range_index: int, leaves: tuple[int, ...]) -> KeyData:
        items = self.range_items(range_index)
        return tuple(sorted((k, v) for k, v in items.items() if merkle.leaf_of(k) in leaves))

    def _start_anti_entropy(self) -> None:
        if not self.my_ranges:
            return
        range_index = self.my_ranges[self._ae_cursor % len(self.my_ranges)]
        self._ae_cursor += 1
        peers = [n for n in self.ring.replicas(range_index, self.config.n) if n != self.node_id]
        if peers:
            peer = peers[self._rng.randrange(0, len(peers))]
            self._send(peer, MerkleTree(range_index, self.tree(range_index)))

    def _anti_entropy_message(self, msg: MerkleTree | MerkleDiff | MerklePush,
                              from_id: int) -> None:
        if msg.range_index not in self.my_ranges:
            raise InvalidMessage(f"node {self.node_id} does not replicate range "
                                 f"{msg.range_index!r} (from {from_id})")
        if isinstance(msg, MerkleTree):
            if len(msg.hashes) != merkle.TREE_SIZE:
                raise InvalidMessage(f"merkle tree of {len(msg.hashes)} hashes from {from_id}")
            leaves = merkle.differing_leaves(self.tree(msg.range_index), msg.hashes)
            if leaves:
                data = self._leaf_data(msg.range_index, leaves)
                self._send(from_id, MerkleDiff(msg.range_index, leaves, data))
            return
        for key, versions in msg.data:
            self._store_versions(key, versions)
        if isinstance(msg, MerkleDiff):
            data = self._leaf_data(msg.range_index, msg.leaves)
            self._send(from_id, MerklePush(msg.range_index, data))


def _versions(value: Any) -> tuple[Version, ...]:
    """Stored siblings as :class:`Version` structs: the simulator hands back the structs,
    a real WAL plain msgpack arrays (its records are untyped)."""
    if all(isinstance(v, Version) for v in value):
        return tuple(value)
    return msgspec.convert(value, tuple[Version, ...])


def _merge_all(replies: dict[int, tuple[Version, ...]]) -> tuple[Version, ...]:
    merged: tuple[Version, ...] = ()
    for node in sorted(replies):
        merged = merge(merged, replies[node])
    return merged


def _check_request(msg: Get | Put) -> str:
    """Why a client request is malformed ('' when it is fine)."""
    if not isinstance(msg.key, str) or not msg.key or len(msg.key) > MAX_KEY_CHARS:
        return f"key must be a non-empty string of <= {MAX_KEY_CHARS} chars, got {msg.key!r}"
    if isinstance(msg, Put) and not valid_context(msg.context):
        return ("context must be (version vector, dots), each ((node, counter), ...), "
                f"got {msg.context!r}")
    return ""


def make_node(node_id: int, peers: tuple[int, ...], rng: Rng, durable: DurableState,
              config: DynamoConfig | None = None) -> DynamoNode:
    """Factory: a node with ``config`` (default: N=3, R=2, W=2, strict quorums)."""
    return DynamoNode(node_id, peers, rng, durable, config)

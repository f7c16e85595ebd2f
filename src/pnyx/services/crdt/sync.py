"""Anti-entropy among a document's replicas over the pnyx TCP transport, and its control API.

Every ``sync_interval_ms`` each replica sends every reachable peer a :class:`SyncDigest`
(its version of every field).  A replica receiving a digest answers with
:class:`SyncUpdates` carrying, per field, what the sender lacks
(:meth:`FieldState.updates_since`), packed into messages of at most ``max_message_bytes``;
the same answer to the same peer is not repeated within ``resend_after_ms``.  Local edits
are also pushed at once (after they are durable).  Lost, reordered or duplicated messages,
partitions and restarts are all repaired by the next rounds: updates are idempotent and
digests are state, not deltas.

A peer that sends a message this replica cannot use (undecodable: the transport closes it;
decodable but malformed, or naming another replica) has its connections closed and is
logged; the replica keeps running and the peer's next connection starts afresh.

Control clients connect to the same port (``role=client`` hellos) and send
:class:`DocRequest`\\ s (see :mod:`pnyx.services.crdt.control`).  For fault testing only
(``DocConfig.allow_test_partitions``), a ``partition`` request makes this replica drop every
message to and from the named peers until ``heal``.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from pnyx.core import Message, is_client
from pnyx.runtime.transport import (
    TASK_STOP_TIMEOUT_S,
    Address,
    Transport,
    cancel_and_wait,
    make_wire_codec,
)
from pnyx.services.crdt.fields import dominated
from pnyx.services.crdt.messages import (
    CLIENT_MESSAGES,
    PEER_MESSAGES,
    REPLY_MESSAGES,
    DocReply,
    DocRequest,
    FieldPayload,
    FieldVersion,
    SyncDigest,
    SyncUpdates,
)
from pnyx.services.crdt.names import check_replica_name, group_cluster_id, group_ids

if TYPE_CHECKING:
    from pnyx.services.crdt.doc import CrdtDoc, DocConfig

log = logging.getLogger("pnyx.services.crdt.sync")

PAYLOAD_OVERHEAD_BYTES = 64
"""Budget charged per payload in a message besides its data (names, msgpack headers)."""
RESEND_BUILD_FACTOR = 8
"""An answer is not repeated before this many times the time it took to build (the peer
applies it more slowly than it was encoded, and sends digests meanwhile)."""
FRAME_SLACK_BYTES = 4096
"""Room left in a frame for the message around one payload."""


class SyncStats:
    """Counters of one replica's sync (shown by ``pnyx crdt status``)."""

    def __init__(self) -> None:
        self.digests_sent = 0
        self.digests_received = 0
        self.update_messages_sent = 0
        self.update_messages_received = 0
        self.payloads_applied = 0
        self.dropped_partitioned = 0
        self.peers_cut_off = 0
        self.oversized_payloads = 0

    def as_dict(self) -> dict[str, int]:
        """The counters by name."""
        return dict(sorted(vars(self).items()))


class DocSync:
    """The network side of one :class:`CrdtDoc` replica (see the module docstring)."""

    def __init__(
        self, doc: CrdtDoc, listen: Address, peers: Mapping[str, Address], config: DocConfig
    ) -> None:
        if doc.replica in peers:
            raise ValueError(f"replica {doc.replica!r} is listed among its own peers")
        for name in peers:
            check_replica_name(name, what="peer name")
        self.doc = doc
        self.config = config
        self.listen = listen
        names = [doc.replica, *peers]
        self._ids = group_ids(names)
        self._names = {node_id: name for name, node_id in self._ids.items()}
        transport_config = _with_cluster(config, group_cluster_id(doc.doc_id, names))
        codec = make_wire_codec((*PEER_MESSAGES, *CLIENT_MESSAGES, *REPLY_MESSAGES))
        self.transport = Transport(
            self._ids[doc.replica],
            {self._ids[name]: address for name, address in peers.items()},
            codec,
            self._deliver,
            peer_message_types=PEER_MESSAGES,
            client_message_types=CLIENT_MESSAGES,
            config=transport_config,
            rng=random.Random(),
        )
        self.peer_names = sorted(peers)
        self.blocked: set[str] = set()
        """Peers cut off by a test partition."""
        self.stats = SyncStats()
        self._answered: dict[tuple[str, str, str], tuple[Any, Any, float]] = {}
        self._loop_task: asyncio.Task[None] | None = None
        self.address: Address | None = None

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> Address:
        """Listen, dial the peers and start the anti-entropy loop."""
        host, port = self.listen
        self.address = await self.transport.start(host=host, port=port)
        self._loop_task = asyncio.ensure_future(self._anti_entropy())
        log.info(
            "crdt_sync_started replica=%s address=%s:%d peers=%s",
            self.doc.replica,
            *self.address,
            self.peer_names,
        )
        return self.address

    async def stop(self) -> None:
        """Stop the loop and the transport (bounded)."""
        if self._loop_task is not None:
            await cancel_and_wait([self._loop_task], TASK_STOP_TIMEOUT_S)
            self._loop_task = None
        await self.transport.close()

    # -- sending -------------------------------------------------------------------------

    def reachable(self) -> list[str]:
        """Peers whose outbound connection is up and that no test partition cuts off."""
        return [
            name
            for name in self.peer_names
            if name not in self.blocked and self.transport.peer_connected(self._ids[name])
        ]

    def push(self, payloads: list[FieldPayload]) -> None:
        """Send a local edit's payloads to every reachable peer at once."""
        if self.doc.failed is not None:
            return
        for batch in self._batches(payloads):
            message = SyncUpdates(self.doc.replica, batch)
            for name in self.reachable():
                self.transport.send(self._ids[name], message)
                self.stats.update_messages_sent += 1

    def send_digests(self) -> None:
        """One anti-entropy round: tell every reachable peer what this replica has.

        A failed replica (store error, stale files) sends nothing: what it holds in memory
        may not be durable, and its operation ids could repeat after a restart.
        """
        if self.doc.failed is not None:
            return
        digests = self._digests()
        for name in self.reachable():
            for digest in digests:
                self.transport.send(self._ids[name], digest)
                self.stats.digests_sent += 1

    def _digests(self) -> list[SyncDigest]:
        """The digest, split into messages within budget; each covers a key range."""
        items = [
            FieldVersion(name, kind, version)
            for (name, kind), version in self.doc.versions().items()
        ]
        budget = self.config.max_message_bytes
        chunks: list[list[FieldVersion]] = [[]]
        size = 0
        for item in items:
            item_bytes = PAYLOAD_OVERHEAD_BYTES + len(item.name) + 24 * len(item.version)
            if chunks[-1] and size + item_bytes > budget:
                chunks.append([])
                size = 0
            chunks[-1].append(item)
            size += item_bytes
        digests = []
        for index, chunk in enumerate(chunks):
            after = [] if index == 0 else [chunks[index - 1][-1].name, chunks[index - 1][-1].kind]
            upto = [] if index == len(chunks) - 1 else [chunk[-1].name, chunk[-1].kind]
            digests.append(SyncDigest(self.doc.replica, chunk, after, upto))
        return digests

    def _batches(self, payloads: Iterable[FieldPayload]) -> list[list[FieldPayload]]:
        """Pack payloads into messages of at most ``max_message_bytes``; a bigger payload
        (a large state-based field's full state) travels alone, up to the frame limit."""
        budget = self.config.max_message_bytes
        frame_limit = self.config.transport.max_frame_bytes - FRAME_SLACK_BYTES
        batches: list[list[FieldPayload]] = []
        size = budget  # forces a new batch for the first payload
        for item in payloads:
            item_bytes = PAYLOAD_OVERHEAD_BYTES + len(item.name) + len(item.data)
            if item_bytes > frame_limit:
                self._too_big(item, item_bytes, frame_limit)
                continue
            if size + item_bytes > budget:
                batches.append([])
                size = 0
            batches[-1].append(item)
            size += item_bytes
        return batches

    def _too_big(self, item: FieldPayload, item_bytes: int, limit_bytes: int) -> None:
        self.stats.oversized_payloads += 1
        log.error(
            "crdt_payload_too_big field=%s kind=%s bytes=%d frame_limit_bytes=%d: this "
            "field cannot be synced; raise the transport's max_frame_bytes on every replica",
            item.name,
            item.kind,
            item_bytes,
            limit_bytes,
        )

    # -- receiving -----------------------------------------------------------------------

    async def _deliver(self, sender: int, msg: Message) -> None:
        if is_client(sender):
            if isinstance(msg, DocRequest):
                self._answer_client(sender, msg)
            return
        name = self._names.get(sender)
        if name is None:
            return
        if name in self.blocked:
            self.stats.dropped_partitioned += 1
            return
        if getattr(msg, "replica", None) != name:
            self._cut_off(sender, "wrong_replica", f"node {sender} is {name!r}, says {msg!r:.80}")
            return
        if isinstance(msg, SyncDigest):
            if len(msg.after) not in (0, 2) or len(msg.upto) not in (0, 2):
                self._cut_off(sender, "bad_digest", f"range {msg.after!r}..{msg.upto!r}")
                return
            self.stats.digests_received += 1
            self._answer_digest(name, msg)
        elif isinstance(msg, SyncUpdates):
            self.stats.update_messages_received += 1
            self._apply_updates(sender, name, msg)

    def _apply_updates(self, sender: int, name: str, msg: SyncUpdates) -> None:
        from pnyx.services.crdt.doc import RemoteUpdateError

        try:
            changed = self.doc.apply_remote(name, msg.fields)
        except RemoteUpdateError as exc:
            self._cut_off(sender, "bad_update", str(exc))
            return
        self.stats.payloads_applied += len(changed)

    def _answer_digest(self, name: str, digest: SyncDigest) -> None:
        theirs = {(f.name, f.kind): f.version for f in digest.fields}
        self._check_identity(name, theirs)
        if self.doc.failed is not None or self.doc.holding:
            return  # failed: see send_digests; holding: a batch's edits are not durable yet
        payloads: list[FieldPayload] = []
        budget = self.config.max_message_bytes - PAYLOAD_OVERHEAD_BYTES
        for key, mine in self.doc.versions().items():
            their_version = theirs.get(key)
            if their_version is None:
                if not _covers(digest, key):
                    continue
                their_version = {}
            if dominated(mine, their_version):
                continue
            if self._answered_lately(name, key, mine, their_version):
                continue
            built_at = asyncio.get_running_loop().time()
            for data in self.doc.field(*key).updates_since(their_version, budget):
                payloads.append(FieldPayload(key[0], key[1], data))
            self._answered_at(name, key, built_at)
        for batch in self._batches(payloads):
            self.transport.send(self._ids[name], SyncUpdates(self.doc.replica, batch))
            self.stats.update_messages_sent += 1

    def _answered_lately(
        self, name: str, key: tuple[str, str], mine: dict[str, int], theirs: dict[str, int]
    ) -> bool:
        """True when the same answer went to ``name`` and is not due again yet (else
        remember that it goes now; :meth:`_answered_at` sets when it is due again)."""
        now = asyncio.get_running_loop().time()
        memo = (name, *key)
        stamp = (tuple(sorted(mine.items())), tuple(sorted(theirs.items())))
        last = self._answered.get(memo)
        if last is not None and last[:2] == stamp and now < last[2]:
            return True
        self._answered[memo] = (*stamp, now)
        return False

    def _answered_at(self, name: str, key: tuple[str, str], built_at: float) -> None:
        """The answer about ``key`` to ``name`` was built since ``built_at``: the same one
        is due again after ``resend_after_ms`` plus a few times the building took (a big
        answer takes the peer longer to apply, and must not be sent again meanwhile)."""
        now = asyncio.get_running_loop().time()
        memo = (name, *key)
        hold_s = self.config.resend_after_ms / 1000.0 + RESEND_BUILD_FACTOR * (now - built_at)
        mine, theirs, _ = self._answered[memo]
        self._answered[memo] = (mine, theirs, now + hold_s)

    def _check_identity(self, name: str, theirs: Mapping[tuple[str, str], dict[str, int]]) -> None:
        """A peer that saw more of this incarnation's updates than it has: its files are older
        than what it sent (restored from a backup, copied): stop editing, ids would repeat."""
        me = self.doc.origin
        for key, version in theirs.items():
            seen = version.get(me, 0)
            if seen == 0:
                continue
            have = self.doc.field(*key).version().get(me, 0) if self.doc.has_field(*key) else 0
            if seen > have:
                self.doc.fail(
                    f"peer {name!r} holds update {me}:{seen} of field {key[0]!r} ({key[1]}) but "
                    f"this replica has only up to {have}: its data directory is older than what "
                    f"it sent (restored or copied?); move it aside and restart the replica "
                    f"with an empty one"
                )
                return

    def _cut_off(self, sender: int, reason: str, detail: str) -> None:
        self.stats.peers_cut_off += 1
        self.transport.close_sender(sender, reason, detail)

    # -- control clients -----------------------------------------------------------------

    def _answer_client(self, client_id: int, request: DocRequest) -> None:
        from pnyx.services.crdt.control import handle_request

        reply: DocReply = handle_request(self, request)
        self.transport.send(client_id, reply)

    def partition(self, names: Iterable[str]) -> list[str]:
        """Fault testing: drop every message to and from ``names`` until :meth:`heal`."""
        wanted = sorted(set(names))
        unknown = [n for n in wanted if n not in self._ids or n == self.doc.replica]
        if unknown:
            raise ValueError(f"not peers of {self.doc.replica!r}: {unknown}; peers are "
                             f"{self.peer_names}")
        self.blocked.update(wanted)
        log.warning("crdt_test_partition replica=%s cut_off=%s", self.doc.replica, wanted)
        return sorted(self.blocked)

    def heal(self) -> None:
        """Fault testing: end every partition."""
        self.blocked.clear()
        self._answered.clear()
        log.warning("crdt_test_heal replica=%s", self.doc.replica)

    def status(self) -> dict[str, Any]:
        """Replica, peers, reachability and counters (plain data)."""
        return {
            "replica": self.doc.replica,
            "origin": self.doc.origin,
            "doc": self.doc.doc_id,
            "peers": self.peer_names,
            "reachable": self.reachable(),
            "partitioned_from": sorted(self.blocked),
            "failed": self.doc.failed,
            "stats": self.stats.as_dict(),
            "connections_rejected": dict(sorted(self.transport.stats.rejected.items())),
            "unknown_kinds": dict(sorted(self.doc.unknown_kinds.items())),
            "fields": [
                {"name": name, "kind": kind, "version": version}
                for (name, kind), version in self.doc.versions().items()
            ],
        }

    # -- the loop ------------------------------------------------------------------------

    async def _anti_entropy(self) -> None:
        interval_s = self.config.sync_interval_ms / 1000.0
        while True:
            await asyncio.sleep(interval_s * (0.75 + 0.5 * random.random()))
            try:
                self.doc.sync_log()
                self.send_digests()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bad round must not end anti-entropy for good
                log.exception("crdt_anti_entropy_round_failed replica=%s", self.doc.replica)


def _covers(digest: SyncDigest, key: tuple[str, str]) -> bool:
    """True when ``key`` lies in the key range ``digest`` speaks for (so its absence from
    the digest means the sender has nothing of that field)."""
    if digest.after and key <= (digest.after[0], digest.after[1]):
        return False
    return not digest.upto or key <= (digest.upto[0], digest.upto[1])


def _with_cluster(config: DocConfig, cluster: str) -> Any:
    from dataclasses import replace

    return replace(config.transport, cluster=cluster)

"""A test-only protocol for the runtime: fixed-primary replication of a sum, plus ping/pong.

Node ``min(group)`` is the primary.  It logs each client ``Add`` (persisted before the
``Push`` that carries it leaves), commits once a majority has it durably, applies it and
replies.  Backups persist pushed entries, acknowledge, and apply up to the primary's
commit index.  Every tick the primary re-pushes what a backup lacks, so lost messages
and restarted nodes catch up.  No elections: this exercises the runtime, not consensus.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from pnyx.core import (
    Apply,
    ClientReply,
    DurableState,
    InvalidMessage,
    LogAppend,
    Message,
    NodeFactory,
    Outbox,
    Rng,
    is_client,
)
from pnyx.runtime import FramedClient, NodeRunner, RunnerConfig, bind_listen_socket
from pnyx.runtime.transport import Address, TransportConfig
from pnyx.runtime.wal import PersistCodec

MAX_PUSH_ENTRIES = 64


class Add(Message, frozen=True):
    request_id: int
    value: int


class Push(Message, frozen=True):
    first_index: int
    entries: tuple[Entry, ...]
    commit: int


class Ack(Message, frozen=True):
    match: int


class Ping(Message, frozen=True):
    n: int


class Pong(Message, frozen=True):
    n: int


class Entry(msgspec.Struct, frozen=True, array_like=True):
    client: int
    request_id: int
    value: int


WIRE_TYPES: tuple[type[Message], ...] = (Add, Push, Ack, Ping, Pong)
PEER_MESSAGE_TYPES: tuple[type[Message], ...] = (Push, Ack, Ping, Pong)
CLIENT_MESSAGE_TYPES: tuple[type[Message], ...] = (Add, Ping)
OP_CODEC = PersistCodec(entry_type=Entry)


class PrimaryBackupNode(Outbox):
    """Implements :class:`pnyx.core.Node`."""

    def __init__(
        self, node_id: int, peers: tuple[int, ...], rng: Rng, durable: DurableState
    ) -> None:
        assert node_id in peers and durable.log_start == 1
        self.node_id = node_id
        self.others = tuple(p for p in peers if p != node_id)
        self.primary = min(peers)
        self.log: list[Entry] = list(durable.log)
        self.commit = 0
        self.applied = 0
        self.match = dict.fromkeys(self.others, 0)
        self.pongs: list[tuple[int, int]] = []
        self.ticks = 0
        self.stalls: list[tuple[int, int]] = []
        """``(missed_ticks, ticks delivered before)`` of each ``clock_stalled`` call."""
        super().__init__()

    def clock_stalled(self, missed_ticks: int) -> None:
        """Optional runtime hook: ticks beyond ``max_ticks_per_round`` were dropped."""
        self.stalls.append((missed_ticks, self.ticks))

    def status(self) -> dict[str, object]:
        """Optional runtime hook: what /health and the leader gauge report."""
        return {"leader": self.primary, "commit_index": self.commit}

    @property
    def is_primary(self) -> bool:
        return self.node_id == self.primary

    def step(self, msg: Message, from_id: int) -> None:
        if isinstance(msg, Add):
            self._on_add(msg, from_id)
        elif isinstance(msg, Push):
            self._on_push(msg, from_id)
        elif isinstance(msg, Ack):
            self.match[from_id] = max(self.match.get(from_id, 0), msg.match)
            self._advance_commit()
        elif isinstance(msg, Ping):
            if msg.n < 0:  # refused before any state changes, like a protocol would
                raise InvalidMessage(f"ping number {msg.n} is negative")
            self._send(from_id, Pong(msg.n))
        elif isinstance(msg, Pong):
            self.pongs.append((from_id, msg.n))

    def tick(self) -> None:
        self.ticks += 1
        if not self.is_primary:
            return
        for peer in self.others:
            first = self.match[peer] + 1
            chunk = tuple(self.log[first - 1 : first - 1 + MAX_PUSH_ENTRIES])
            self._send(peer, Push(first, chunk, self.commit))

    def _on_add(self, msg: Add, client: int) -> None:
        assert is_client(client)
        if not self.is_primary:
            reply = ClientReply(msg.request_id, ok=False, leader_hint=self.primary, error="backup")
            self._send(client, reply)
            return
        entry = Entry(client, msg.request_id, msg.value)
        index = len(self.log) + 1
        self.log.append(entry)
        self._ready.persist.append(LogAppend(index, (entry,)))
        for peer in self.others:
            self._send(peer, Push(index, (entry,), self.commit))
        self._advance_commit()

    def _on_push(self, msg: Push, primary: int) -> None:
        have = len(self.log)
        if msg.first_index <= have + 1:
            suffix = msg.entries[have + 1 - msg.first_index :]
            if suffix:
                self._ready.persist.append(LogAppend(have + 1, suffix))
                self.log.extend(suffix)
        self._send(primary, Ack(len(self.log)))
        self._apply_to(min(msg.commit, len(self.log)))

    def _advance_commit(self) -> None:
        durable = sorted([len(self.log), *self.match.values()], reverse=True)
        majority = durable[len(durable) // 2]
        self._apply_to(majority)

    def _apply_to(self, commit: int) -> None:
        self.commit = max(self.commit, commit)
        while self.applied < self.commit:
            self.applied += 1
            entry = self.log[self.applied - 1]
            if self.is_primary:
                self._ready.apply.append(
                    Apply(self.applied, entry.value, entry.client, entry.request_id)
                )
            else:
                self._ready.apply.append(Apply(self.applied, entry.value))


def make_node(node_id: int, peers: tuple[int, ...], rng: Rng, durable: DurableState) -> Any:
    return PrimaryBackupNode(node_id, peers, rng, durable)


class SumMachine:
    """Implements :class:`pnyx.core.StateMachine`: a running sum."""

    def __init__(self) -> None:
        self.total = 0
        self.applied = 0

    def apply(self, command: Any) -> Any:
        self.total += int(command)
        self.applied += 1
        return self.total

    def snapshot(self) -> bytes:
        return json.dumps([self.total, self.applied]).encode()

    def restore(self, data: bytes) -> None:
        self.total, self.applied = json.loads(data)


class Cluster:
    """Real runners on loopback ports; addresses fixed up front so nodes can restart."""

    def __init__(
        self,
        root: Path,
        size: int,
        *,
        tick_ms: int = 5,
        factory: NodeFactory = make_node,
        wire_types: tuple[type[Message], ...] = WIRE_TYPES,
        peer_types: tuple[type[Message], ...] = PEER_MESSAGE_TYPES,
        client_types: tuple[type[Message], ...] = CLIENT_MESSAGE_TYPES,
        transport: TransportConfig | None = None,
        op_codec: PersistCodec = OP_CODEC,
        machine: Callable[[], Any] = SumMachine,
    ) -> None:
        self.root = root
        self.tick_ms = tick_ms
        self.factory = factory
        self.wire_types = wire_types
        self.peer_types = peer_types
        self.client_types = client_types
        self.transport = transport or TransportConfig(backoff_initial_ms=5, backoff_max_ms=50)
        self.op_codec = op_codec
        self.machine = machine
        self.socks = {i: bind_listen_socket() for i in range(1, size + 1)}
        self.addresses: dict[int, Address] = {i: s.getsockname()[:2] for i, s in self.socks.items()}
        self.runners: dict[int, NodeRunner] = {}
        self.machines: dict[int, Any] = {}

    def config(self, node_id: int, **extra: Any) -> RunnerConfig:
        transport = extra.pop("transport", self.transport)
        return RunnerConfig(
            node_id=node_id,
            data_dir=self.root / f"node{node_id}",
            peers=self.addresses,
            tick_ms=self.tick_ms,
            seed=node_id,
            transport=transport,
            **extra,
        )

    async def start(self, node_id: int, **extra: Any) -> NodeRunner:
        sock = self.socks.pop(node_id, None)
        if sock is None:  # a restart: listen again on the same port
            sock = bind_listen_socket(*self.addresses[node_id])
        machine = self.machine()
        runner = NodeRunner(
            self.config(node_id, **extra),
            self.factory,
            self.wire_types,
            peer_message_types=self.peer_types,
            client_message_types=self.client_types,
            state_machine=machine,
            op_codec=self.op_codec,
            listen_sock=sock,
        )
        try:
            await runner.start()
        except BaseException:
            sock.close()
            raise
        self.runners[node_id] = runner
        self.machines[node_id] = machine
        return runner

    async def start_all(self) -> None:
        for node_id in sorted(self.addresses):
            await self.start(node_id)

    async def stop(self, node_id: int) -> None:
        runner = self.runners.pop(node_id)
        await runner.stop()

    async def close(self) -> None:
        for node_id in list(self.runners):
            await self.stop(node_id)
        for sock in self.socks.values():
            sock.close()
        self.socks.clear()

    async def client(self, node_id: int = 1, **options: Any) -> FramedClient:
        return await FramedClient.connect(self.addresses[node_id], self.wire_types, **options)

    def node(self, node_id: int) -> PrimaryBackupNode:
        node = self.runners[node_id].node
        assert isinstance(node, PrimaryBackupNode)
        return node

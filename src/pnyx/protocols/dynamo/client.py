"""A simulated KV client of a Dynamo-style cluster: gets and puts, one at a time.

The client is partition-aware (Dynamo, section 6.4): it knows the ring and sends each
request to a random node among the key's top ``n`` replicas, which coordinates it.  It
keeps, per key, the context of what it last read (merged with the dots of its own writes
since) and passes it back with the next write, so that write replaces the siblings it
saw.  A read that returns siblings is resolved by the application rule: the client's own
latest write to the key if it is among them, else the greatest value.

History (for :mod:`pnyx.check`): ``get``/``put`` events with ``key``, as the Raft
``KvClient`` records them; a ``get`` completes with the resolved value (None: no value); a
request given up on completes ``info``.  Written values are unique tokens.  ``acked`` maps
each acknowledged write's token to its key and the dot it got (for the lost-write monitor).

Sessions: as in Jepsen, a process whose operation ended ``info`` (outcome unknown) is
done; the client goes on as a new session, recorded under the process id
``client_id + SESSION_STRIDE * session``, with no memory of its own writes.  Session
guarantees are thus claimed for acknowledged operations only.
"""

from __future__ import annotations

from typing import Any

from pnyx.core import ClientReply, HistoryEvent, Message, Outbox, Quiesce, Record, Rng, Send
from pnyx.protocols.dynamo.config import DynamoConfig
from pnyx.protocols.dynamo.messages import Get, Put, ReadResult, WriteResult
from pnyx.protocols.dynamo.ring import Ring
from pnyx.protocols.dynamo.versions import Context, add_dots

KEYS = ("a", "b", "c", "d", "e", "f")
SESSION_STRIDE = 1_000_000
"""Process ids of a client's later sessions: ``client_id + SESSION_STRIDE * session``."""
GET = "get"
PUT = "put"


class DynamoClient(Outbox):
    """Implements :class:`pnyx.core.Node` as a client process (id >= CLIENT_ID_BASE)."""

    def __init__(self, client_id: int, node_ids: tuple[int, ...], rng: Rng,
                 config: DynamoConfig | None = None, give_up_ticks: int = 60,
                 max_think_ticks: int = 3, keys: tuple[str, ...] = KEYS) -> None:
        if not node_ids or not keys:
            raise ValueError(f"a client needs nodes and keys, got {node_ids!r}, {keys!r}")
        super().__init__()
        self.node_id = client_id
        self.config = config if config is not None else DynamoConfig()
        self._ring = Ring(node_ids, self.config.vnodes)
        self._rng = rng
        self._keys = keys
        self._give_up_ticks = give_up_ticks
        self._max_think_ticks = max_think_ticks
        self._think_ticks = rng.randrange(0, max_think_ticks + 1)
        self._stopped = False
        self._request_id = 0
        self._counter = 0
        self._op: tuple[str, str, Any, Context] | None = None
        self._age_ticks = 0
        self.contexts: dict[str, Context] = {}
        self.own_latest: dict[str, str] = {}
        self.acked: dict[str, tuple[str, tuple[int, int]]] = {}
        self.session = 0

    def step(self, msg: Message, from_id: int) -> None:
        if isinstance(msg, Quiesce):
            self._stopped = True
        elif (isinstance(msg, ClientReply) and self._op is not None
              and msg.request_id == self._request_id):
            self._on_reply(msg)

    def tick(self) -> None:
        if self._op is not None:
            self._age_ticks += 1
            if self._age_ticks >= self._give_up_ticks:
                self._finish("info", None)
            return
        if self._stopped:
            return
        if self._think_ticks > 0:
            self._think_ticks -= 1
            return
        key = self._keys[self._rng.randrange(0, len(self._keys))]
        if self._rng.random() < 0.5:
            self.start(GET, key)
        else:
            self.start(PUT, key)

    def start(self, f: str, key: str, node: int | None = None) -> None:
        """Start a ``get`` or ``put`` of ``key`` now (at ``node``, else a random replica)."""
        if self._op is not None:
            raise RuntimeError(f"client {self.node_id} already has an operation in flight")
        self._request_id += 1
        self._age_ticks = 0
        if node is None:
            replicas = self._ring.preference_list(key)[: self.config.n]
            node = replicas[self._rng.randrange(0, len(replicas))]
        context = self.contexts.get(key, ((), ()))
        msg: Message
        if f == GET:
            value: Any = None
            msg = Get(self._request_id, key)
        else:
            self._counter += 1
            value = f"{self.node_id}.{self._counter}"
            msg = Put(self._request_id, key, value, context)
        self._op = (f, key, value, context)
        event = HistoryEvent(self.process, "invoke", f, value, key)
        self._ready.record.append(Record(event))
        self._ready.send.append(Send(node, msg))

    @property
    def process(self) -> int:
        """The history process id of the current session."""
        return self.node_id + SESSION_STRIDE * self.session

    @property
    def busy(self) -> bool:
        """True while an operation is in flight."""
        return self._op is not None

    def _on_reply(self, reply: ClientReply) -> None:
        assert self._op is not None
        f, key, value, context = self._op
        if not reply.ok:
            self._finish("info" if f == PUT else "fail", None)
        elif f == GET and isinstance(reply.result, ReadResult):
            self.contexts[key] = reply.result.context
            self._finish("ok", self._resolve(key, reply.result.values))
        elif f == PUT and isinstance(reply.result, WriteResult):
            dot = (reply.result.node, reply.result.counter)
            self.contexts[key] = add_dots(context, (dot,))
            self.own_latest[key] = value
            self.acked[value] = (key, dot)
            self._finish("ok", value)
        else:
            raise ValueError(f"client {self.node_id}: unexpected reply {reply!r} to {f}")

    def _resolve(self, key: str, values: tuple[Any, ...]) -> Any:
        if not values:
            return None
        mine = self.own_latest.get(key)
        if mine in values:
            return mine
        return max(values, key=repr)

    def _finish(self, outcome: str, result: Any) -> None:
        assert self._op is not None
        f, key, value, _ = self._op
        shown = result if outcome == "ok" else value
        event = HistoryEvent(self.process, outcome, f, shown, key)  # type: ignore[arg-type]
        self._ready.record.append(Record(event))
        self._op = None
        if outcome == "info":
            self.session += 1
            self.own_latest.clear()
        self._think_ticks = self._rng.randrange(0, self._max_think_ticks + 1)


def make_client(client_id: int, node_ids: tuple[int, ...], rng: Rng,
                config: DynamoConfig | None = None) -> DynamoClient:
    """Factory: a client of a cluster with ``config``."""
    return DynamoClient(client_id, node_ids, rng, config)

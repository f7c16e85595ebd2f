"""The node contract of DESIGN.md: a protocol node is a pure state machine driven by a runtime."""

from __future__ import annotations

from typing import Any, Protocol

from pnyx.core.effects import Apply, Ready, Restore, Send
from pnyx.core.messages import Message
from pnyx.core.rng import Rng
from pnyx.core.storage import DurableState, PersistOp


class Node(Protocol):
    """A sans-IO protocol node.

    The runtime feeds it messages (:meth:`step`) and logical time (:meth:`tick`), then
    drains a :class:`Ready` batch, carries it out in order and acknowledges it with
    :meth:`advance`.  ``ready()`` must not be called again before ``advance()``.

    Optional methods a runtime calls when the node has them (``getattr``):

    - ``status() -> dict`` (keys such as ``leader``, ``term``, ``commit_index``,
      ``members``): shown in health reports and metrics.
    - ``clock_stalled(missed_ticks: int) -> None``: the runtime fell behind (a stalled
      process or event loop) and dropped ``missed_ticks`` ticks beyond its catch-up bound.
      Both runtimes call it right after such a drop, so that promises measured in ticks
      (e.g. a leader lease) end instead of outliving real time.
    - ``invariants() -> list[str]``: descriptions of broken local invariants, empty when
      all hold; cheap enough for the simulator to call after every step.  Checked with
      ``if``, independent of ``assert``.

    ``step`` may raise :class:`pnyx.core.InvalidMessage`, before changing any state, for a
    message no correct sender produces; the runtime then closes that sender's connection
    and the node keeps running.  Any other exception is a bug in the node (fail-stop).
    """

    node_id: int

    def step(self, msg: Message, from_id: int) -> None:
        """Handle one message from a peer or a client request."""
        ...

    def tick(self) -> None:
        """One unit of logical time has passed."""
        ...

    def has_ready(self) -> bool:
        """True when :meth:`ready` would return a non-empty batch."""
        ...

    def ready(self) -> Ready:
        """Take the pending effects out of the node as one batch."""
        ...

    def advance(self, ready: Ready) -> None:
        """The runtime has carried out ``ready`` (persisted, sent, applied)."""
        ...


class NodeFactory(Protocol):
    """Builds a node from its id, its peers, an injected RNG and what survived on disk."""

    def __call__(
        self, node_id: int, peers: tuple[int, ...], rng: Rng, durable: DurableState
    ) -> Node: ...


class StateMachine(Protocol):
    """A pure replicated state machine: the runtime applies committed commands to it."""

    def apply(self, command: Any) -> Any:
        """Apply one command and return its result (also called for read-only commands)."""
        ...

    def snapshot(self) -> bytes:
        """Serialise the whole state."""
        ...

    def restore(self, data: bytes) -> None:
        """Replace the whole state with a snapshot produced by :meth:`snapshot`."""
        ...


class Outbox:
    """Base for nodes whose effects are complete when handed out (most clients, simple
    protocols): effects accumulate in ``self._ready``; :meth:`ready` hands them over as
    one batch and there is nothing to acknowledge in :meth:`advance`."""

    def __init__(self) -> None:
        self._ready = Ready()

    def has_ready(self) -> bool:
        """True when effects are pending."""
        return not self._ready.is_empty()

    def ready(self) -> Ready:
        """Hand over the pending effects."""
        batch, self._ready = self._ready, Ready()
        return batch

    def advance(self, ready: Ready) -> None:
        """Nothing to acknowledge: the batch was complete when handed out."""

    def _send(self, to: int, msg: Message) -> None:
        """Queue ``msg`` for ``to``."""
        self._ready.send.append(Send(to, msg))


class StagedEffects:
    """Base for replicated-log nodes that stage effects in four queues (persist, send,
    apply, services) and turn pending decisions into effects lazily, once per batch.

    A subclass calls ``StagedEffects.__init__(self)`` before anything may stage an effect,
    and overrides :meth:`_prepare` (called by :meth:`has_ready` and :meth:`ready` before
    they look at the queues).  :meth:`advance` stays the subclass's.
    """

    def __init__(self) -> None:
        self._persist: list[PersistOp] = []
        self._sends: list[Send] = []
        self._applies: list[Apply | Restore] = []
        self._services: list[Any] = []

    def _prepare(self) -> None:
        """Turn pending decisions into staged effects; nothing by default."""

    def has_ready(self) -> bool:
        """True when :meth:`ready` would return a non-empty batch."""
        self._prepare()
        return bool(self._persist or self._sends or self._applies or self._services)

    def ready(self) -> Ready:
        """Hand over the staged effects as one batch."""
        self._prepare()
        batch = Ready()
        batch.persist, self._persist = self._persist, []
        batch.send, self._sends = self._sends, []
        batch.apply, self._applies = self._applies, []
        batch.services, self._services = self._services, []
        return batch

    def _send(self, to: int, msg: Message) -> None:
        """Stage ``msg`` for ``to``."""
        self._sends.append(Send(to, msg))

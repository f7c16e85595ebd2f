"""SWIM membership (Das, Gupta, Motivala 2002) with Lifeguard (Dadgar et al. 2018).

Skeleton: public names fixed, logic follows.
"""

from __future__ import annotations

from collections.abc import Mapping

from pnyx.core import Message, Outbox, Rng
from pnyx.protocols.membership.config import SwimConfig
from pnyx.protocols.membership.messages import MemberEvent, MemberView


class SwimNode(Outbox):
    """One SWIM member (implements :class:`pnyx.core.Node`)."""

    def __init__(
        self,
        node_id: int,
        addr: str,
        config: SwimConfig,
        rng: Rng,
        seeds: Mapping[int, str],
        *,
        initial_members: Mapping[int, str] | None = None,
    ) -> None:
        super().__init__()
        self.node_id = node_id
        self.addr = addr
        self.config = config
        self._rng = rng
        self._seeds = dict(seeds)
        self._initial = dict(initial_members or {})

    def step(self, msg: Message, from_id: int) -> None:
        """Handle one SWIM message."""
        raise NotImplementedError

    def tick(self) -> None:
        """One tick passed."""
        raise NotImplementedError

    def members(self) -> dict[int, MemberView]:
        """Every member this node knows, itself included."""
        raise NotImplementedError

    def local_health(self) -> int:
        """Lifeguard awareness score (0 = healthy; always 0 with Lifeguard off)."""
        return 0

    def leave(self) -> None:
        """Leave the group gracefully."""
        raise NotImplementedError

    def take_events(self) -> list[MemberEvent]:
        """Drain membership changes seen since the last call."""
        raise NotImplementedError

    def stats(self) -> dict[str, int]:
        """Counters of messages sent and of dropped state."""
        raise NotImplementedError

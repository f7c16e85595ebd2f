"""Settings of a Dynamo-style cluster: replication N, quorums R and W, and the switches."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DynamoConfig:
    """``n`` replicas per key, ``r`` replies per read, ``w`` acknowledgements per write.

    ``sloppy``: on timeouts, writes and reads go to the next healthy nodes of the preference
    list (with hints) instead of failing.  ``read_repair``: the coordinator writes the
    merged siblings back to replicas that answered a read with stale ones.
    ``anti_entropy``: replicas compare Merkle trees of their key ranges every
    ``anti_entropy_ticks``.
    """

    n: int = 3
    r: int = 2
    w: int = 2
    vnodes: int = 8
    sloppy: bool = False
    read_repair: bool = True
    anti_entropy: bool = True
    request_timeout_ticks: int = 8
    max_rounds: int = 3
    handoff_ticks: int = 10
    anti_entropy_ticks: int = 6
    max_hints_per_round: int = 32

    def __post_init__(self) -> None:
        if self.n < 1 or not 1 <= self.r <= self.n or not 1 <= self.w <= self.n:
            raise ValueError(f"need 1 <= r, w <= n: got n={self.n} r={self.r} w={self.w}")
        for name in ("vnodes", "request_timeout_ticks", "max_rounds", "handoff_ticks",
                     "anti_entropy_ticks", "max_hints_per_round"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    @property
    def strict_quorums(self) -> bool:
        """True when every read quorum meets every write quorum (R + W > N)."""
        return self.r + self.w > self.n

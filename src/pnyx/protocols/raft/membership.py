"""Membership configurations and quorum arithmetic (simple and joint consensus)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from pnyx.protocols.raft.messages import ConfigData

VOTE_WON = 1
VOTE_LOST = -1
VOTE_PENDING = 0


def majority_index(voters: Iterable[int], match: Mapping[int, int]) -> int:
    """Largest index that a majority of ``voters`` holds (absent voters count as 0)."""
    values = sorted((match.get(v, 0) for v in voters), reverse=True)
    if not values:
        return 1 << 62  # an empty voter set constrains nothing
    return values[len(values) // 2]


def majority_vote(voters: frozenset[int], votes: Mapping[int, bool]) -> int:
    """VOTE_WON / VOTE_LOST / VOTE_PENDING for one voter set."""
    if not voters:
        return VOTE_WON
    need = len(voters) // 2 + 1
    granted = sum(1 for v in voters if votes.get(v) is True)
    rejected = sum(1 for v in voters if votes.get(v) is False)
    if granted >= need:
        return VOTE_WON
    if len(voters) - rejected < need:
        return VOTE_LOST
    return VOTE_PENDING


class Membership:
    """Who votes and who follows.  In C_old,new ``outgoing`` holds C_old's voters.

    Decisions (commit, elections, ReadIndex, check-quorum) need a majority of ``voters``
    and, when joint, also a majority of ``outgoing``.  Learners never count.
    """

    __slots__ = ("learners", "members", "outgoing", "voters")

    def __init__(
        self,
        voters: Iterable[int],
        outgoing: Iterable[int] = (),
        learners: Iterable[int] = (),
    ) -> None:
        self.voters = frozenset(voters)
        self.outgoing = frozenset(outgoing)
        self.learners = frozenset(learners)
        assert self.voters, "a configuration needs at least one voter"
        overlap = self.learners & (self.voters | self.outgoing)
        assert not overlap, f"nodes {sorted(overlap)} are both learner and voter"
        self.members = self.voters | self.outgoing | self.learners

    @classmethod
    def from_data(cls, data: ConfigData) -> Membership:
        return cls(data.voters, data.outgoing, data.learners)

    def to_data(self) -> ConfigData:
        return ConfigData(
            tuple(sorted(self.voters)), tuple(sorted(self.outgoing)), tuple(sorted(self.learners))
        )

    @property
    def joint(self) -> bool:
        return bool(self.outgoing)

    def is_voter(self, node_id: int) -> bool:
        return node_id in self.voters or node_id in self.outgoing

    def all_voters(self) -> frozenset[int]:
        return self.voters | self.outgoing

    def committed_index(self, match: Mapping[int, int], count_new_only: bool = False) -> int:
        """Largest index held by a quorum (both majorities when joint)."""
        index = majority_index(self.voters, match)
        if self.outgoing and not count_new_only:
            index = min(index, majority_index(self.outgoing, match))
        return index

    def vote_result(self, votes: Mapping[int, bool]) -> int:
        """VOTE_WON only when every voter set has a granting majority."""
        new = majority_vote(self.voters, votes)
        old = majority_vote(self.outgoing, votes)
        if new == VOTE_LOST or old == VOTE_LOST:
            return VOTE_LOST
        if new == VOTE_WON and old == VOTE_WON:
            return VOTE_WON
        return VOTE_PENDING

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Membership):
            return NotImplemented
        return (self.voters, self.outgoing, self.learners) == (
            other.voters,
            other.outgoing,
            other.learners,
        )

    def __hash__(self) -> int:
        return hash((self.voters, self.outgoing, self.learners))

    def __repr__(self) -> str:
        parts = [f"voters={sorted(self.voters)}"]
        if self.outgoing:
            parts.append(f"outgoing={sorted(self.outgoing)}")
        if self.learners:
            parts.append(f"learners={sorted(self.learners)}")
        return f"Membership({', '.join(parts)})"

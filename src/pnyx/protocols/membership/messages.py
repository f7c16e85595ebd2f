"""Wire messages of the membership protocols (SWIM with Lifeguard, all-to-all heartbeats).

Member states travel as small ints (:data:`ALIVE` ...); :class:`MemberView` and
:class:`MemberEvent` name them with strings for users.  Every message is a msgspec
``array_like`` struct, so a ping with a few piggybacked updates stays well under a UDP
datagram.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from pnyx.core import Message

MemberStateName = Literal["alive", "suspect", "dead", "left"]
"""A member's state as users see it."""

ALIVE = 0
SUSPECT = 1
DEAD = 2
LEFT = 3

STATE_NAMES: tuple[MemberStateName, ...] = ("alive", "suspect", "dead", "left")
"""Wire state code → name (index by the code)."""

MAX_UPDATES_PER_MESSAGE = 1024
"""Hard bound on updates in any received message; a node refuses longer ones."""

MAX_ADDR_CHARS = 256
"""Hard bound on the length of a member address."""


class Update(msgspec.Struct, frozen=True, array_like=True):
    """One membership fact: ``member_id`` is in ``state`` at ``incarnation``.

    ``origin`` is the member that produced the fact: the suspecter of a suspicion (whose
    confirmations Lifeguard counts), the declarer of a death, the member itself for alive
    and left.
    """

    member_id: int
    incarnation: int
    state: int
    addr: str = ""
    origin: int = -1


class Ping(Message, frozen=True):
    """Probe ``target`` (must be the receiver): answer with an :class:`Ack` of ``seq``."""

    seq: int
    target: int
    updates: tuple[Update, ...] = ()


class Ack(Message, frozen=True):
    """Answer to the ping ``seq`` (direct, or relayed by a ping-req intermediary)."""

    seq: int
    updates: tuple[Update, ...] = ()


class PingReq(Message, frozen=True):
    """Ask the receiver to ping ``target`` (at ``target_addr``) and relay its ack as ``seq``.

    With ``nack`` (Lifeguard), the receiver answers with a :class:`Nack` if the target
    does not answer within its probe timeout.
    """

    seq: int
    target: int
    target_addr: str = ""
    nack: bool = False
    updates: tuple[Update, ...] = ()


class Nack(Message, frozen=True):
    """Lifeguard: the intermediary of ping-req ``seq`` got no ack from the target in time."""

    seq: int
    updates: tuple[Update, ...] = ()


class Gossip(Message, frozen=True):
    """Updates sent every gossip interval to a few random members."""

    updates: tuple[Update, ...] = ()


class PushPull(Message, frozen=True):
    """Full-state sync: the sender's whole table, in chunks of bounded size.

    ``reply`` asks the receiver to answer with its own full state (set on the first chunk
    of an initiated sync); ``join`` marks the sync of a joining member.
    """

    states: tuple[Update, ...]
    reply: bool = False
    join: bool = False


class Heartbeat(Message, frozen=True):
    """All-to-all heartbeat of the phi-accrual / fixed-timeout detectors."""

    seq: int


class MemberView(msgspec.Struct, frozen=True):
    """What one member believes about another (or itself)."""

    addr: str
    state: MemberStateName
    incarnation: int


class MemberEvent(msgspec.Struct, frozen=True):
    """A membership change this member saw: ``member_id`` is now ``state``."""

    member_id: int
    addr: str
    state: MemberStateName
    incarnation: int


SWIM_TYPES: tuple[type[Message], ...] = (Ping, Ack, PingReq, Nack, Gossip, PushPull)
"""Messages a :class:`SwimNode` accepts."""

HEARTBEAT_TYPES: tuple[type[Message], ...] = (Heartbeat,)
"""Messages a :class:`HeartbeatNode` accepts."""

WIRE_TYPES: tuple[type[Message], ...] = SWIM_TYPES + HEARTBEAT_TYPES
"""Every membership wire message (for a :class:`pnyx.core.Codec`)."""


def check_update(update: Update) -> str | None:
    """Why ``update`` is malformed, or None when it is well-formed."""
    if update.member_id < 0:
        return f"negative member id {update.member_id}"
    if update.incarnation < 0:
        return f"negative incarnation {update.incarnation} for member {update.member_id}"
    if not ALIVE <= update.state <= LEFT:
        return f"unknown member state {update.state} for member {update.member_id}"
    if len(update.addr) > MAX_ADDR_CHARS:
        return f"address of {len(update.addr)} chars for member {update.member_id}"
    return None


def check_updates(updates: tuple[Update, ...]) -> str | None:
    """Why a list of updates is malformed, or None when all are well-formed."""
    if len(updates) > MAX_UPDATES_PER_MESSAGE:
        return f"{len(updates)} updates in one message (at most {MAX_UPDATES_PER_MESSAGE})"
    for update in updates:
        problem = check_update(update)
        if problem is not None:
            return problem
    return None

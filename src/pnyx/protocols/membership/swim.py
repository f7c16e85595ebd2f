"""SWIM membership (Das, Gupta, Motivala 2002) with Lifeguard (Dadgar, Phillips, Currey 2018).

Each protocol period a member pings the next member of a shuffled round-robin order; a
member that misses its ack within the probe timeout is probed indirectly through
``indirect_checks`` others (ping-req); one that misses both by the end of the period is
suspected.  A suspected member refutes by gossiping ``alive`` with a higher incarnation;
otherwise it is declared dead when the suspicion timeout runs out.  Updates spread by
infection: piggybacked on pings, acks and nacks and on gossip messages, each sent at most
``retransmit_mult * ceil(log10(n + 1))`` times; a periodic full-state push/pull repairs
what gossip missed, and joins go through seeds the same way.

Lifeguard (``config.lifeguard``): a local health score stretches this member's probe
interval and timeout when it misses acks and nacks (it is probably the slow one), ping-req
intermediaries answer with nacks, suspicion timeouts start long and shrink with
independent confirmations, and a ping to a suspect carries the suspicion first (buddy
system) so the suspect learns of it at once.  Constants and formulas follow HashiCorp
memberlist; see the package README.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Mapping

from pnyx.core import InvalidMessage, Message, Outbox, Rng
from pnyx.protocols.membership.config import (
    SwimConfig,
    expected_confirmations,
    push_pull_period_ticks,
    retransmit_limit,
    suspicion_timeout_ticks,
)
from pnyx.protocols.membership.messages import (
    ALIVE,
    DEAD,
    LEFT,
    STATE_NAMES,
    SUSPECT,
    Ack,
    Gossip,
    MemberEvent,
    MemberView,
    Nack,
    Ping,
    PingReq,
    PushPull,
    Update,
    check_updates,
)

_SUSPICION_TIMEOUT = 0
_RELAY_NACK = 1
_RELAY_EXPIRE = 2
_REAP = 3

_SAMPLE_SCAN_MEMBERS = 32
"""Below this many members a random sample scans the table; above, it draws and rejects."""


class _Member:
    """This node's record of one member."""

    __slots__ = ("addr", "incarnation", "since_ticks", "state", "suspicion")

    def __init__(self, addr: str, incarnation: int, state: int, since_ticks: int) -> None:
        self.addr = addr
        self.incarnation = incarnation
        self.state = state
        self.since_ticks = since_ticks
        self.suspicion: _Suspicion | None = None


class _Suspicion:
    """A running suspicion timer and the independent suspecters that confirmed it."""

    __slots__ = ("confirmers", "deadline_ticks", "expected", "group_size", "start_ticks")

    def __init__(self, start_ticks: int, origin: int, expected: int, group_size: int) -> None:
        self.start_ticks = start_ticks
        self.confirmers = {origin}
        self.expected = expected
        self.group_size = group_size
        self.deadline_ticks = 0

    @property
    def confirmations(self) -> int:
        """Independent confirmations beyond the first suspecter."""
        return len(self.confirmers) - 1

    def confirm(self, origin: int) -> bool:
        """Count ``origin``; False when it was counted already or enough have confirmed."""
        if self.confirmations >= self.expected or origin in self.confirmers:
            return False
        self.confirmers.add(origin)
        return True


class _Probe:
    """The probe of the current protocol period."""

    __slots__ = (
        "acked",
        "end_ticks",
        "expected_nacks",
        "indirect",
        "nacks",
        "seq",
        "target",
        "timeout_ticks",
    )

    def __init__(self, seq: int, target: int, timeout_ticks: int, end_ticks: int) -> None:
        self.seq = seq
        self.target = target
        self.timeout_ticks = timeout_ticks
        self.end_ticks = end_ticks
        self.acked = False
        self.indirect = False
        self.expected_nacks = 0
        self.nacks = 0


class _Relay:
    """An indirect probe run for another member (this node is the ping-req intermediary)."""

    __slots__ = ("acked", "nack", "origin", "origin_seq", "target", "target_addr")

    def __init__(
        self, origin: int, origin_seq: int, target: int, target_addr: str, nack: bool
    ) -> None:
        self.origin = origin
        self.origin_seq = origin_seq
        self.target = target
        self.target_addr = target_addr
        self.nack = nack
        self.acked = False


class UpdateQueue:
    """Updates waiting to be piggybacked, fewest transmissions first, newest first.

    One entry per member (a newer update replaces the older one), at most ``max_entries``
    (beyond that the most-transmitted, oldest entry is dropped).  Entries sit in buckets
    by how often they were sent, so taking k updates costs O(k + buckets).
    """

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._buckets: list[dict[int, Update]] = [{}]
        self._bucket_of: dict[int, int] = {}
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._bucket_of)

    def push(self, update: Update) -> None:
        """Queue ``update``, replacing any queued update about the same member."""
        self._remove(update.member_id)
        if len(self._bucket_of) >= self.max_entries:
            self._drop_one()
        self._put(0, update)

    def __contains__(self, member_id: object) -> bool:
        return member_id in self._bucket_of

    def take(self, count: int, limit: int) -> list[Update]:
        """Up to ``count`` updates to send now; each is dropped after ``limit`` sends."""
        if not self._bucket_of:
            return []
        taken: list[tuple[int, Update]] = []
        for sends, bucket in enumerate(self._buckets):
            if len(taken) >= count:
                break
            picked = list(itertools.islice(reversed(bucket.keys()), count - len(taken)))
            for member_id in picked:
                taken.append((sends, bucket.pop(member_id)))
                del self._bucket_of[member_id]
        for sends, update in taken:
            if sends + 1 < limit:
                self._put(sends + 1, update)
        return [update for _, update in taken]

    def _put(self, sends: int, update: Update) -> None:
        while len(self._buckets) <= sends:
            self._buckets.append({})
        self._buckets[sends][update.member_id] = update
        self._bucket_of[update.member_id] = sends

    def _remove(self, member_id: int) -> None:
        index = self._bucket_of.pop(member_id, None)
        if index is not None:
            del self._buckets[index][member_id]

    def _drop_one(self) -> None:
        for bucket in reversed(self._buckets):
            if bucket:
                member_id = next(iter(bucket))
                self._remove(member_id)
                self.dropped += 1
                return


class SwimNode(Outbox):
    """One SWIM member (implements :class:`pnyx.core.Node`).

    ``seeds`` (id → address) are members to join through with a push/pull, re-sent every
    ``join_retry_ticks`` until one answers; empty for the first member.
    ``initial_members`` (id → address) start out known and alive at incarnation 0, with
    no join and no events (a simulator's way of starting a formed group).
    """

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
        if node_id < 0:
            raise ValueError(f"node_id must not be negative, got {node_id}")
        super().__init__()
        self.node_id = node_id
        self.addr = addr
        self.config = config
        self._rng = rng
        self._seeds = {s: a for s, a in sorted(seeds.items()) if s != node_id}
        self._now_ticks = 0
        self._incarnation = 0
        self._members: dict[int, _Member] = {node_id: _Member(addr, 0, ALIVE, 0)}
        self._live_count = 1
        self._ids: list[int] = []
        self._id_index: dict[int, int] = {}
        self._probe_order: list[int] = []
        self._probe_index = 0
        self._probe: _Probe | None = None
        self._relays: dict[int, _Relay] = {}
        self._seq = 0
        self._timers: list[tuple[int, int, int, int]] = []
        self._timer_seq = 0
        self._queue = UpdateQueue(config.max_queued_updates)
        self._events: deque[MemberEvent] = deque()
        self._awareness = 0
        self._leaving = False
        self._stats: dict[str, int] = dict.fromkeys(_STAT_NAMES, 0)
        self._next_probe_ticks = 1 + rng.randrange(0, config.probe_interval_ticks)
        self._next_gossip_ticks = 1 + rng.randrange(0, config.gossip_interval_ticks)
        self._next_push_pull_ticks = 1 + rng.randrange(0, config.push_pull_interval_ticks)
        self._next_join_ticks = 1
        self._start_with(initial_members or {})
        self._joined = not self._seeds or self._live_count > 1
        if not initial_members:
            self._queue.push(self._self_update())

    def _start_with(self, initial_members: Mapping[int, str]) -> None:
        """Bulk-load a formed group; the probe order is shuffled at the first probe."""
        for member_id, member_addr in sorted(initial_members.items()):
            if member_id == self.node_id or member_id < 0:
                continue
            if len(self._members) >= self.config.max_members:
                raise ValueError(
                    f"{len(initial_members)} initial members exceed "
                    f"max_members={self.config.max_members}"
                )
            self._members[member_id] = _Member(member_addr, 0, ALIVE, 0)
            self._id_index[member_id] = len(self._ids)
            self._ids.append(member_id)
        self._live_count = len(self._members)

    # -- node contract -----------------------------------------------------------------

    def step(self, msg: Message, from_id: int) -> None:
        """Handle one SWIM message; malformed ones raise InvalidMessage before any change."""
        problem = _check_message(msg)
        if problem is not None:
            raise InvalidMessage(f"SWIM message from {from_id} refused: {problem}: {msg!r}")
        if from_id == self.node_id:
            return
        if self._leaving:
            if isinstance(msg, Ping) and msg.target == self.node_id:
                self._send(from_id, Ack(msg.seq, self._piggyback()))
            return
        if isinstance(msg, PushPull):
            self._on_push_pull(msg, from_id)
            return
        if isinstance(msg, (Ping, Ack, Nack, PingReq, Gossip)):
            self._apply_updates(msg.updates)
        if isinstance(msg, Ping):
            self._on_ping(msg, from_id)
        elif isinstance(msg, Ack):
            self._on_ack(msg)
        elif isinstance(msg, Nack):
            self._on_nack(msg)
        elif isinstance(msg, PingReq):
            self._on_ping_req(msg, from_id)

    def tick(self) -> None:
        """One tick: fire timers, then probe, gossip, push/pull and join when due."""
        self._now_ticks += 1
        self._run_timers()
        if self._now_ticks >= self._next_gossip_ticks:
            self._next_gossip_ticks = self._now_ticks + self.config.gossip_interval_ticks
            self._gossip()
        if self._leaving:
            return
        if not self._joined and self._now_ticks >= self._next_join_ticks:
            self._next_join_ticks = self._now_ticks + self.config.join_retry_ticks
            for seed in self._seeds:
                self._send_state(seed, reply=True, join=True)
        self._probe_tick()
        if self._now_ticks >= self._next_push_pull_ticks:
            period = push_pull_period_ticks(self.config, self._live_count)
            self._next_push_pull_ticks = self._now_ticks + period
            self._push_pull()

    # -- public queries and commands ---------------------------------------------------

    def members(self) -> dict[int, MemberView]:
        """Every member this node knows (dead ones until reaped), itself included."""
        return {
            member_id: MemberView(m.addr, STATE_NAMES[m.state], m.incarnation)
            for member_id, m in self._members.items()
        }

    def member(self, member_id: int) -> MemberView | None:
        """What this node believes about one member (O(1)), None if unknown or reaped."""
        m = self._members.get(member_id)
        return None if m is None else MemberView(m.addr, STATE_NAMES[m.state], m.incarnation)

    def local_health(self) -> int:
        """Lifeguard awareness score (0 = healthy; always 0 with Lifeguard off)."""
        return self._awareness

    @property
    def incarnation(self) -> int:
        """This member's own incarnation number."""
        return self._incarnation

    @property
    def now_ticks(self) -> int:
        """Ticks this node has counted."""
        return self._now_ticks

    def leave(self) -> None:
        """Leave gracefully: gossip ``left`` about itself, stop probing and refuting.

        The node keeps answering pings and gossiping until its leave was sent
        ``retransmit_limit`` times; the runtime may stop it after that.
        """
        if self._leaving:
            return
        self._leaving = True
        self._incarnation += 1
        me = self._members[self.node_id]
        me.incarnation = self._incarnation
        self._set_state(me, LEFT)
        self._queue.push(self._self_update())
        self._probe = None

    def leave_done(self) -> bool:
        """True once a leave was requested and its update has been fully gossiped."""
        return self._leaving and self.node_id not in self._queue

    def take_events(self) -> list[MemberEvent]:
        """Drain membership changes seen since the last call (other members only)."""
        events = list(self._events)
        self._events.clear()
        return events

    def stats(self) -> dict[str, int]:
        """Counters: messages sent by type, updates sent, refutations, drops, ..."""
        stats = dict(self._stats)
        stats["updates_dropped"] = self._queue.dropped
        stats["queued_updates"] = len(self._queue)
        stats["members"] = len(self._members)
        stats["live_members"] = self._live_count
        return stats

    def address_of(self, member_id: int) -> str | None:
        """Address to reach ``member_id``: from the table, a seed or a pending ping-req."""
        member = self._members.get(member_id)
        if member is not None:
            return member.addr
        if member_id in self._seeds:
            return self._seeds[member_id]
        for relay in self._relays.values():
            if relay.target == member_id:
                return relay.target_addr
        return None

    def status(self) -> dict[str, object]:
        """Summary for health reports and metrics."""
        return {
            "members": self._live_count,
            "incarnation": self._incarnation,
            "local_health": self._awareness,
        }

    def invariants(self) -> list[str]:
        """Broken local invariants (O(1) checks), empty when all hold."""
        broken: list[str] = []
        if not 0 <= self._awareness < self.config.awareness_max_multiplier:
            broken.append(f"local health {self._awareness} out of range")
        if not 1 <= self._live_count <= len(self._members):
            broken.append(f"live count {self._live_count} vs {len(self._members)} members")
        if len(self._queue) > self.config.max_queued_updates:
            broken.append(f"{len(self._queue)} queued updates over the bound")
        if len(self._relays) > self.config.max_pending_relays:
            broken.append(f"{len(self._relays)} pending relays over the bound")
        me = self._members[self.node_id]
        if me.incarnation != self._incarnation or (me.state == ALIVE) == self._leaving:
            broken.append(f"own record {me.state}/{me.incarnation} vs {self._incarnation}")
        return broken

    # -- message handlers --------------------------------------------------------------

    def _on_ping(self, msg: Ping, from_id: int) -> None:
        if msg.target != self.node_id:
            self._stats["misdirected"] += 1
            return
        self._send(from_id, Ack(msg.seq, self._piggyback(about=from_id)))

    def _on_ack(self, msg: Ack) -> None:
        probe = self._probe
        if probe is not None and msg.seq == probe.seq:
            if not probe.acked:
                probe.acked = True
                self._adjust_health(-1)
            return
        relay = self._relays.pop(msg.seq, None)
        if relay is not None:
            relay.acked = True
            self._send(relay.origin, Ack(relay.origin_seq, self._piggyback()))

    def _on_nack(self, msg: Nack) -> None:
        probe = self._probe
        if probe is not None and msg.seq == probe.seq:
            probe.nacks += 1

    def _on_ping_req(self, msg: PingReq, from_id: int) -> None:
        if msg.target == self.node_id:
            self._send(from_id, Ack(msg.seq, self._piggyback()))
            return
        if len(self._relays) >= self.config.max_pending_relays:
            self._stats["relays_refused"] += 1
            return
        seq = self._next_seq()
        self._relays[seq] = _Relay(from_id, msg.seq, msg.target, msg.target_addr, msg.nack)
        self._send(msg.target, Ping(seq, msg.target, self._piggyback()))
        if msg.nack:
            self._set_timer(self._now_ticks + _nack_after_ticks(self.config), _RELAY_NACK, seq)
        self._set_timer(self._now_ticks + self.config.probe_interval_ticks, _RELAY_EXPIRE, seq)

    def _on_push_pull(self, msg: PushPull, from_id: int) -> None:
        self._joined = True
        for update in msg.states:
            if update.state == DEAD:
                # memberlist's merge: another member's deaths only make us suspect
                update = Update(update.member_id, update.incarnation, SUSPECT, update.addr, from_id)
            self._apply(update)
        if msg.reply:
            self._send_state(from_id, reply=False, join=False)

    # -- applying updates --------------------------------------------------------------

    def _apply_updates(self, updates: tuple[Update, ...]) -> None:
        for update in updates:
            self._apply(update)

    def _apply(self, update: Update) -> None:
        if update.member_id == self.node_id:
            self._about_self(update)
        elif update.state == ALIVE:
            self._on_alive(update)
        elif update.state == SUSPECT:
            self._on_suspect(update)
        else:
            self._on_dead(update)

    def _on_alive(self, update: Update) -> None:
        member = self._members.get(update.member_id)
        if member is None:
            if self._add_member(update.member_id, update.addr, update.incarnation, ALIVE):
                self._queue.push(update)
            return
        if update.incarnation <= member.incarnation:
            return
        member.incarnation = update.incarnation
        member.addr = update.addr or member.addr
        if member.state != ALIVE:
            if member.state in (DEAD, LEFT):
                self._insert_probe_order(update.member_id)
            self._set_state(member, ALIVE)
            self._emit(update.member_id, member)
        self._queue.push(update)

    def _on_suspect(self, update: Update) -> None:
        member = self._members.get(update.member_id)
        if member is None or update.incarnation < member.incarnation:
            return
        if member.state == SUSPECT:
            suspicion = member.suspicion
            member.incarnation = update.incarnation
            if suspicion is not None and suspicion.confirm(update.origin):
                self._schedule_suspicion(update.member_id, suspicion)
                self._queue.push(update)
            return
        if member.state != ALIVE:
            return
        member.incarnation = update.incarnation
        self._start_suspicion(update.member_id, member, update.origin)
        self._queue.push(update)

    def _on_dead(self, update: Update) -> None:
        member = self._members.get(update.member_id)
        if member is None or update.incarnation < member.incarnation:
            return
        if member.state in (DEAD, LEFT):
            return
        member.incarnation = update.incarnation
        self._set_state(member, update.state)
        self._set_timer(self._now_ticks + self.config.dead_reap_ticks, _REAP, update.member_id)
        self._emit(update.member_id, member)
        self._queue.push(update)
        if update.state == DEAD and update.origin == self.node_id:
            self._stats["declared_dead"] += 1

    def _about_self(self, update: Update) -> None:
        if self._leaving:
            return
        if update.state == ALIVE:
            if update.incarnation <= self._incarnation:
                return
        elif update.incarnation < self._incarnation:
            return
        # Someone believes we are suspect, dead or left (or knows a later life of ours):
        # refute with a higher incarnation.
        self._incarnation = update.incarnation + 1
        self._members[self.node_id].incarnation = self._incarnation
        self._queue.push(self._self_update())
        self._stats["refutations"] += 1
        if update.state != ALIVE:
            self._adjust_health(+1)

    # -- membership table --------------------------------------------------------------

    def _add_member(
        self, member_id: int, addr: str, incarnation: int, state: int, *, announce: bool = True
    ) -> bool:
        if len(self._members) >= self.config.max_members:
            self._stats["members_refused"] += 1
            return False
        member = _Member(addr, incarnation, state, self._now_ticks)
        self._members[member_id] = member
        self._id_index[member_id] = len(self._ids)
        self._ids.append(member_id)
        if state in (ALIVE, SUSPECT):
            self._live_count += 1
            self._insert_probe_order(member_id)
        if announce:
            self._emit(member_id, member)
        return True

    def _remove_member(self, member_id: int) -> None:
        del self._members[member_id]
        index = self._id_index.pop(member_id)
        last = self._ids.pop()
        if last != member_id:
            self._ids[index] = last
            self._id_index[last] = index

    def _set_state(self, member: _Member, state: int) -> None:
        was_live = member.state in (ALIVE, SUSPECT)
        is_live = state in (ALIVE, SUSPECT)
        self._live_count += int(is_live) - int(was_live)
        member.state = state
        member.since_ticks = self._now_ticks
        if state != SUSPECT:
            member.suspicion = None

    def _insert_probe_order(self, member_id: int) -> None:
        """Put a new member at a random position of the probe order (memberlist's swap)."""
        order = self._probe_order
        if len(order) > 2 * len(self._members) + 16:
            self._reshuffle()  # members flapping dead/alive within one round: stay bounded
            order = self._probe_order
        order.append(member_id)
        other = self._rng.randrange(0, len(order))
        order[other], order[-1] = order[-1], order[other]

    def _emit(self, member_id: int, member: _Member) -> None:
        if len(self._events) >= self.config.max_events:
            self._events.popleft()
            self._stats["events_dropped"] += 1
        state = STATE_NAMES[member.state]
        self._events.append(MemberEvent(member_id, member.addr, state, member.incarnation))

    def _self_update(self) -> Update:
        state = LEFT if self._leaving else ALIVE
        return Update(self.node_id, self._incarnation, state, self.addr, self.node_id)

    # -- suspicion ---------------------------------------------------------------------

    def _start_suspicion(self, member_id: int, member: _Member, origin: int) -> None:
        self._set_state(member, SUSPECT)
        n = self._live_count
        suspicion = _Suspicion(self._now_ticks, origin, expected_confirmations(self.config, n), n)
        member.suspicion = suspicion
        self._schedule_suspicion(member_id, suspicion)
        self._stats["suspicions_started"] += 1
        self._emit(member_id, member)

    def _schedule_suspicion(self, member_id: int, suspicion: _Suspicion) -> None:
        timeout = suspicion_timeout_ticks(
            self.config, suspicion.group_size, suspicion.confirmations
        )
        suspicion.deadline_ticks = suspicion.start_ticks + timeout
        self._set_timer(suspicion.deadline_ticks, _SUSPICION_TIMEOUT, member_id)

    def suspicion_deadline_ticks(self, member_id: int) -> int | None:
        """Tick at which this node will declare the suspect ``member_id`` dead, if suspect."""
        member = self._members.get(member_id)
        if member is None or member.suspicion is None:
            return None
        return member.suspicion.deadline_ticks

    # -- timers ------------------------------------------------------------------------

    def _set_timer(self, deadline_ticks: int, kind: int, key: int) -> None:
        self._timer_seq += 1
        heapq.heappush(self._timers, (deadline_ticks, self._timer_seq, kind, key))

    def _run_timers(self) -> None:
        timers = self._timers
        while timers and timers[0][0] <= self._now_ticks:
            deadline, _, kind, key = heapq.heappop(timers)
            if kind == _SUSPICION_TIMEOUT:
                self._suspicion_expired(key, deadline)
            elif kind == _RELAY_NACK:
                relay = self._relays.get(key)
                if relay is not None and not relay.acked:
                    self._send(relay.origin, Nack(relay.origin_seq, self._piggyback()))
            elif kind == _RELAY_EXPIRE:
                self._relays.pop(key, None)
            else:
                self._reap(key)

    def _suspicion_expired(self, member_id: int, deadline_ticks: int) -> None:
        member = self._members.get(member_id)
        if member is None or member.suspicion is None:
            return
        if member.suspicion.deadline_ticks != deadline_ticks:
            return  # rescheduled by a confirmation
        dead = Update(member_id, member.incarnation, DEAD, member.addr, self.node_id)
        self._on_dead(dead)

    def _reap(self, member_id: int) -> None:
        member = self._members.get(member_id)
        if member is None or member.state not in (DEAD, LEFT):
            return
        if self._now_ticks - member.since_ticks >= self.config.dead_reap_ticks:
            self._remove_member(member_id)

    # -- probing -----------------------------------------------------------------------

    def _probe_tick(self) -> None:
        probe = self._probe
        if probe is not None:
            if not probe.acked and not probe.indirect and self._now_ticks >= probe.timeout_ticks:
                self._probe_indirectly(probe)
            if self._now_ticks >= probe.end_ticks:
                self._probe = None
                if not probe.acked:
                    self._probe_failed(probe)
        if self._probe is None and self._now_ticks >= self._next_probe_ticks:
            self._start_probe()

    def _health_scale(self) -> int:
        return self._awareness + 1

    def _start_probe(self) -> None:
        scale = self._health_scale()
        period = self.config.probe_interval_ticks * scale
        self._next_probe_ticks = self._now_ticks + period
        target = self._next_probe_target()
        if target is None:
            return
        seq = self._next_seq()
        timeout = self._now_ticks + self.config.probe_timeout_ticks * scale
        self._probe = _Probe(seq, target, timeout, self._now_ticks + period)
        self._stats["probes"] += 1
        self._send(target, Ping(seq, target, self._piggyback(about=target)))

    def _next_probe_target(self) -> int | None:
        order = self._probe_order
        for _ in range(len(order) + 2):
            if self._probe_index >= len(order):
                self._reshuffle()
                if not order:
                    return None
            candidate = order[self._probe_index]
            self._probe_index += 1
            member = self._members.get(candidate)
            if member is not None and member.state in (ALIVE, SUSPECT):
                return candidate
        return None

    def _reshuffle(self) -> None:
        """New round: the live members in a fresh random order (dead ones drop out)."""
        order = [
            member_id
            for member_id in self._ids
            if self._members[member_id].state in (ALIVE, SUSPECT)
        ]
        self._shuffle(order)
        self._probe_order = order
        self._probe_index = 0

    def _shuffle(self, items: list[int]) -> None:
        for i in range(len(items) - 1, 0, -1):
            j = self._rng.randrange(0, i + 1)
            items[i], items[j] = items[j], items[i]

    def _probe_indirectly(self, probe: _Probe) -> None:
        probe.indirect = True
        helpers = self._sample(self.config.indirect_checks, exclude=probe.target, states=(ALIVE,))
        target = self._members.get(probe.target)
        target_addr = target.addr if target is not None else ""
        nack = self.config.lifeguard
        for helper in helpers:
            msg = PingReq(probe.seq, probe.target, target_addr, nack, self._piggyback())
            self._send(helper, msg)
        probe.expected_nacks = len(helpers) if nack else 0

    def _probe_failed(self, probe: _Probe) -> None:
        self._stats["probes_failed"] += 1
        if probe.expected_nacks > 0:
            self._adjust_health(max(0, probe.expected_nacks - probe.nacks))
        else:
            self._adjust_health(+1)
        member = self._members.get(probe.target)
        if member is not None and member.state in (ALIVE, SUSPECT):
            self._on_suspect(self._suspect_update(probe.target, member))

    def _suspect_update(self, member_id: int, member: _Member) -> Update:
        return Update(member_id, member.incarnation, SUSPECT, member.addr, self.node_id)

    def _adjust_health(self, delta: int) -> None:
        if not self.config.lifeguard:
            return
        top = self.config.awareness_max_multiplier - 1
        self._awareness = min(top, max(0, self._awareness + delta))

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    # -- dissemination -----------------------------------------------------------------

    def _piggyback(self, *, about: int | None = None) -> tuple[Update, ...]:
        """Updates for one outgoing message to ``about`` (when given).

        A ping to a suspect carries the suspicion first (Lifeguard's buddy system), and
        an ack to a member believed dead tells it so first (so a paused member that comes
        back refutes at once instead of at its next push/pull).
        """
        budget = self.config.max_piggyback_updates
        first: list[Update] = []
        member = self._members.get(about) if about is not None else None
        if member is not None and about is not None:
            buddy = member.state == SUSPECT and self.config.lifeguard
            if buddy or member.state == DEAD:
                fact = Update(about, member.incarnation, member.state, member.addr, self.node_id)
                first.append(fact)
                budget -= 1
        limit = retransmit_limit(self.config, self._live_count)
        updates = first + self._queue.take(budget, limit)
        self._stats["updates_sent"] += len(updates)
        return tuple(updates)

    def _gossip(self) -> None:
        if not len(self._queue):
            return
        targets = self._sample(self.config.gossip_nodes, exclude=-1, states=(ALIVE, SUSPECT))
        for target in targets:
            updates = self._piggyback()
            if not updates:
                return
            self._send(target, Gossip(updates))

    def _push_pull(self) -> None:
        targets = self._sample(1, exclude=-1, states=(ALIVE,))
        for target in targets:
            self._send_state(target, reply=True, join=False)

    def _send_state(self, to: int, *, reply: bool, join: bool) -> None:
        states = [
            Update(member_id, m.incarnation, m.state, m.addr, self.node_id)
            for member_id, m in self._members.items()
        ]
        chunk = self.config.push_pull_chunk_states
        for start in range(0, len(states), chunk):
            first = start == 0
            part = tuple(states[start : start + chunk])
            self._send(to, PushPull(part, reply=reply and first, join=join))

    def _sample(self, count: int, *, exclude: int, states: tuple[int, ...]) -> list[int]:
        """Up to ``count`` distinct random members in ``states``, never self or ``exclude``."""
        if count <= 0 or not self._ids:
            return []
        if len(self._ids) <= _SAMPLE_SCAN_MEMBERS:
            pool = [m for m in self._ids if m != exclude and self._members[m].state in states]
            self._shuffle(pool)
            return pool[:count]
        chosen: list[int] = []
        for _ in range(8 * count + 8):
            candidate = self._ids[self._rng.randrange(0, len(self._ids))]
            if candidate == exclude or candidate in chosen:
                continue
            if self._members[candidate].state in states:
                chosen.append(candidate)
                if len(chosen) == count:
                    break
        return chosen

    def _send(self, to: int, msg: Message) -> None:
        self._stats["sent"] += 1
        self._stats[_SENT_STAT[type(msg)]] += 1
        super()._send(to, msg)


_SENT_STAT: dict[type[Message], str] = {
    Ping: "sent_ping",
    Ack: "sent_ack",
    PingReq: "sent_ping_req",
    Nack: "sent_nack",
    Gossip: "sent_gossip",
    PushPull: "sent_push_pull",
}

_STAT_NAMES = (
    "sent",
    *_SENT_STAT.values(),
    "updates_sent",
    "probes",
    "probes_failed",
    "suspicions_started",
    "declared_dead",
    "refutations",
    "misdirected",
    "relays_refused",
    "members_refused",
    "events_dropped",
)


def _nack_after_ticks(config: SwimConfig) -> int:
    """When a ping-req intermediary gives up on the target and nacks: at 80 % of the
    probe timeout, so that a healthy intermediary's nack reaches the prober before the
    end of its (unscaled) protocol period, which is two probe timeouts after the ping."""
    return max(1, (4 * config.probe_timeout_ticks) // 5)


def _check_message(msg: Message) -> str | None:
    if isinstance(msg, PushPull):
        return check_updates(msg.states)
    if not isinstance(msg, (Ping, Ack, PingReq, Nack, Gossip)):
        return f"unexpected message type {type(msg).__name__}"
    if isinstance(msg, (Ping, Ack, PingReq, Nack)) and msg.seq < 0:
        return f"negative sequence number {msg.seq}"
    if isinstance(msg, (Ping, PingReq)) and msg.target < 0:
        return f"negative target {msg.target}"
    return check_updates(msg.updates)

"""UDP datagrams of the membership runtime: round trip, and every kind of bad datagram is
dropped and counted (never raised) — short, foreign magic, unknown version or flags, bad
crc32c, oversize, undecodable body, spoofed own id; oversize sends are refused, not split."""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pnyx.core import Message
from pnyx.protocols.membership.messages import SWIM_TYPES, Ack, Gossip, Ping, Update
from pnyx.runtime.framing import RemoteProtocolError
from pnyx.runtime.udp import (
    DEFAULT_MAX_DATAGRAM_BYTES,
    HEADER_BYTES,
    UDP_VERSION,
    UdpConfig,
    UdpTransport,
    decode_datagram,
    encode_datagram,
    make_codec,
)
from tests.runtime.runtime_helpers import run_async, wait_until

CODEC = make_codec(SWIM_TYPES)


def ping(updates: int = 2) -> Ping:
    return Ping(
        seq=7,
        target=2,
        updates=tuple(Update(m, m * 3, 0, f"127.0.0.1:{7000 + m}", 1) for m in range(updates)),
    )


def datagram(msg: Message | None = None, sender: int = 1) -> bytes:
    return encode_datagram(sender, CODEC.encode(msg or ping()))


def reason_of(data: bytes, **kwargs: Any) -> str:
    with pytest.raises(RemoteProtocolError) as info:
        decode_datagram(data, **kwargs)
    return info.value.reason


def test_round_trip_keeps_sender_and_message() -> None:
    msg = ping(updates=5)
    sender, body = decode_datagram(datagram(msg, sender=2**32 - 1))
    assert sender == 2**32 - 1
    assert CODEC.decode(body) == msg
    assert datagram(msg)[:4] == b"PM" + bytes((UDP_VERSION, 0))


def test_every_malformed_header_is_rejected_with_its_reason() -> None:
    good = datagram()
    assert reason_of(good[: HEADER_BYTES - 1]) == "short"
    assert reason_of(b"") == "short"
    assert reason_of(b"XX" + good[2:]) == "bad_magic"
    assert reason_of(good[:2] + bytes((UDP_VERSION + 1,)) + good[3:]) == "bad_version"
    assert reason_of(good[:3] + b"\x01" + good[4:]) == "bad_flags"
    assert reason_of(good + b"x" * 2000) == "oversized"
    assert reason_of(good, max_datagram_bytes=len(good) - 1) == "oversized"


def test_any_single_bit_flip_is_caught() -> None:
    good = datagram(Ack(seq=3))
    for bit in range(len(good) * 8):
        flipped = bytearray(good)
        flipped[bit // 8] ^= 1 << (bit % 8)
        assert reason_of(bytes(flipped)) in {"bad_magic", "bad_version", "bad_flags", "bad_crc"}


def test_a_corrupted_sender_id_fails_the_crc() -> None:
    good = datagram(sender=1)
    forged = good[:4] + struct.pack(">I", 2) + good[8:]
    assert reason_of(forged) == "bad_crc"


def test_encode_refuses_oversize_and_bad_sender() -> None:
    body = b"x" * (DEFAULT_MAX_DATAGRAM_BYTES - HEADER_BYTES)
    assert len(encode_datagram(1, body)) == DEFAULT_MAX_DATAGRAM_BYTES
    with pytest.raises(ValueError, match="exceeds max_datagram_bytes=1400"):
        encode_datagram(1, body + b"x")
    with pytest.raises(ValueError, match="32 bits"):
        encode_datagram(-1, b"")
    with pytest.raises(ValueError, match="max_datagram_bytes=5"):
        UdpConfig(max_datagram_bytes=5)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=1600),
        st.binary(max_size=1600).map(lambda tail: b"PM" + bytes((UDP_VERSION, 0)) + tail),
    )
)
def test_random_bytes_never_raise_anything_but_remote_protocol_error(data: bytes) -> None:
    try:
        _, body = decode_datagram(data)
    except RemoteProtocolError:
        return
    CODEC.decode(body)  # only reachable with a valid crc: not by chance


# -- the transport on real sockets ---------------------------------------------------------


class Pair:
    """Two transports on loopback that know each other's address; inboxes as lists."""

    def __init__(self, inbox_limit: int = 100) -> None:
        self.inbox: dict[int, list[tuple[int, Message]]] = {1: [], 2: []}
        self.limit = inbox_limit
        self.a = UdpTransport(1, CODEC, lambda s, m: self._put(1, s, m))
        self.b = UdpTransport(2, CODEC, lambda s, m: self._put(2, s, m))

    def _put(self, to: int, sender: int, msg: Message) -> bool:
        if len(self.inbox[to]) >= self.limit:
            return False
        self.inbox[to].append((sender, msg))
        return True

    async def __aenter__(self) -> Pair:
        address_a = await self.a.start()
        address_b = await self.b.start()
        self.a.set_address(2, address_b)
        self.b.set_address(1, address_a)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.a.close()
        self.b.close()


def test_messages_cross_and_the_reply_address_is_learned() -> None:
    async def scenario() -> None:
        async with Pair() as pair:
            assert pair.a.send(2, ping())
            await wait_until(lambda: pair.inbox[2] == [(1, ping())], what="ping at 2")
            # a third member known to nobody: 2 can answer it at its source address
            stranger = UdpTransport(3, CODEC, lambda s, m: pair._put(1, s, m))
            address = await stranger.start()
            try:
                stranger.set_address(2, pair.b.address or ("", 0))
                assert stranger.send(2, Ack(seq=1))
                await wait_until(lambda: len(pair.inbox[2]) == 2, what="ack from 3")
                assert pair.b.address_of(3) == address
                assert pair.b.send(3, Ack(seq=2))
                await wait_until(lambda: (2, Ack(seq=2)) in pair.inbox[1], what="reply to 3")
            finally:
                stranger.close()
            assert pair.a.stats.datagrams_sent == 1 and pair.b.stats.datagrams_received == 2

    run_async(scenario())


def test_garbage_is_dropped_and_counted_and_the_transport_keeps_working() -> None:
    async def scenario() -> None:
        async with Pair() as pair:
            target = pair.b.address
            assert target is not None
            good = datagram(Ack(seq=9), sender=1)
            garbage = {
                "short": b"PM",
                "bad_magic": b"GET / HTTP/1.1\r\n\r\n",
                "bad_version": good[:2] + b"\x09" + good[3:],
                "bad_crc": good[:-1] + bytes((good[-1] ^ 0xFF,)),
                "oversized": good + b"\0" * 1500,
                "undecodable": encode_datagram(1, b"\xc1\xc1\xc1"),
                "own_id": datagram(Ack(seq=1), sender=2),
            }
            for data in garbage.values():
                pair.a.send_raw(data, target)
            assert pair.a.send(2, Ack(seq=10))  # sent after the garbage: arrives after it
            await wait_until(lambda: pair.inbox[2] == [(1, Ack(seq=10))], what="valid ack")
            assert pair.b.stats.dropped == dict.fromkeys(garbage, 1)
            assert pair.b.stats.datagrams_received == 1

    run_async(scenario())


def test_sends_that_cannot_go_are_refused_and_counted() -> None:
    async def scenario() -> None:
        async with Pair(inbox_limit=1) as pair:
            huge = Gossip(tuple(Update(m, 0, 0, "x" * 200) for m in range(10)))
            assert not pair.a.send(2, huge)  # > 1,400 bytes: refused, never fragmented
            assert not pair.a.send(99, Ack(seq=1))  # nobody knows where 99 is
            assert pair.a.stats.send_failed == {"oversize": 1, "no_address": 1}
            assert pair.a.stats.datagrams_sent == 0
            assert pair.a.send(2, Ack(seq=1)) and pair.a.send(2, Ack(seq=2))
            await wait_until(
                lambda: pair.b.stats.dropped.get("inbox_full") == 1, what="full inbox drop"
            )
            assert pair.inbox[2] == [(1, Ack(seq=1))]
            big = UdpTransport(1, CODEC, lambda s, m: True, config=UdpConfig(8000, 8000))
            await big.start()
            try:
                big.set_address(2, pair.b.address or ("", 0))
                assert big.send(2, huge)  # the sender allows it, the receiver's bound does not
                await wait_until(lambda: pair.b.stats.dropped.get("oversized") == 1,
                                 what="oversized drop")  # fmt: skip
            finally:
                big.close()

    run_async(scenario())


def test_a_closed_transport_refuses_to_send() -> None:
    async def scenario() -> None:
        transport = UdpTransport(1, CODEC, lambda s, m: True)
        assert not transport.send(2, Ack(seq=1))
        await transport.start()
        transport.close()
        assert not transport.send(2, Ack(seq=1))
        assert transport.stats.send_failed == {"not_started": 2}

    asyncio.run(scenario())

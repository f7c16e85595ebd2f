"""Asyncio UDP transport: one socket per member, one message per bounded, checksummed datagram.

Datagram layout (big-endian), ``HEADER_BYTES`` = 12::

    magic b"PM" | u8 version | u8 flags (0) | u32 sender id | u32 crc32c | msgpack body

``crc32c`` covers the 8 header bytes before it and the body, so a corrupted sender id is
caught as well as a corrupted body.  A datagram is never fragmented by this layer: a
message whose datagram would exceed ``max_datagram_bytes`` is refused on send (counted as
``oversize``) and never leaves the member.

Everything a remote can get wrong — a short or oversized datagram, a foreign magic, an
unknown version or flag, a bad checksum, a body that does not decode to one of the
protocol's message types, a datagram claiming to come from this member — is dropped and
counted by reason in :attr:`UdpStats.dropped`; it never raises out of the transport.

Addresses: the transport keeps an address book ``member id -> (host, port)`` that its
owner fills from seeds and from the addresses the protocol gossips
(:meth:`UdpTransport.set_address`).  The source address of the last valid datagram from
a member is remembered too and used only while the address book has no entry for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import crc32c
import msgspec

from pnyx.core import Codec, Message
from pnyx.runtime.framing import RemoteProtocolError

log = logging.getLogger("pnyx.runtime.udp")

Address = tuple[str, int]
"""A UDP endpoint ``(host, port)``."""

MAGIC = b"PM"
"""First two bytes of every datagram (pnyx membership)."""

UDP_VERSION = 1
"""Version byte of every datagram this runtime writes and accepts."""

HEADER = struct.Struct(">2sBBII")
"""magic, version, flags, sender id, crc32c."""

HEADER_BYTES = HEADER.size

DEFAULT_MAX_DATAGRAM_BYTES = 1400
"""Default bound on a whole datagram (header + body): fits an Ethernet MTU unfragmented."""

MAX_UDP_PAYLOAD_BYTES = 65_507
"""The largest payload of one IPv4 UDP datagram."""

MAX_SENDER_ID = 2**32 - 1

DROP_REASONS = (
    "short",
    "oversized",
    "bad_magic",
    "bad_version",
    "bad_flags",
    "bad_crc",
    "undecodable",
    "own_id",
    "inbox_full",
)
"""Labels of inbound datagrams dropped (:attr:`UdpStats.dropped`)."""

SEND_FAILURES = ("oversize", "no_address", "unencodable", "buffer_full", "not_started")
"""Labels of outbound messages refused (:attr:`UdpStats.send_failed`)."""


def encode_datagram(
    sender: int,
    body: bytes,
    *,
    max_datagram_bytes: int = DEFAULT_MAX_DATAGRAM_BYTES,
) -> bytes:
    """One datagram carrying ``body`` from ``sender``; ValueError when it would be oversize."""
    if not 0 <= sender <= MAX_SENDER_ID:
        raise ValueError(f"sender id {sender} does not fit in 32 bits")
    size_bytes = HEADER_BYTES + len(body)
    if size_bytes > max_datagram_bytes:
        raise ValueError(
            f"datagram of {size_bytes} bytes exceeds max_datagram_bytes={max_datagram_bytes}"
        )
    head = HEADER.pack(MAGIC, UDP_VERSION, 0, sender, 0)[: HEADER_BYTES - 4]
    checksum = crc32c.crc32c(body, crc32c.crc32c(head))
    return head + struct.pack(">I", checksum) + body


def decode_datagram(
    data: bytes, *, max_datagram_bytes: int = DEFAULT_MAX_DATAGRAM_BYTES
) -> tuple[int, bytes]:
    """``(sender, body)`` of a datagram; :class:`RemoteProtocolError` for anything malformed."""
    if len(data) < HEADER_BYTES:
        raise RemoteProtocolError(
            "short", f"datagram of {len(data)} bytes, the header alone is {HEADER_BYTES}"
        )
    if len(data) > max_datagram_bytes:
        raise RemoteProtocolError(
            "oversized",
            f"datagram of {len(data)} bytes exceeds max_datagram_bytes={max_datagram_bytes}",
        )
    magic, version, flags, sender, checksum = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise RemoteProtocolError("bad_magic", f"magic {magic!r}, expected {MAGIC!r}")
    if version != UDP_VERSION:
        raise RemoteProtocolError(
            "bad_version", f"datagram version {version}, this runtime speaks {UDP_VERSION}"
        )
    if flags != 0:
        raise RemoteProtocolError("bad_flags", f"flags {flags:#04x}, expected 0")
    view = memoryview(data)
    expected = crc32c.crc32c(view[HEADER_BYTES:], crc32c.crc32c(view[: HEADER_BYTES - 4]))
    if checksum != expected:
        raise RemoteProtocolError(
            "bad_crc", f"crc32c {checksum:#010x} of sender {sender}, computed {expected:#010x}"
        )
    return sender, bytes(view[HEADER_BYTES:])


@dataclass(frozen=True)
class UdpConfig:
    """Bounds of the UDP transport (names carry their unit)."""

    max_datagram_bytes: int = DEFAULT_MAX_DATAGRAM_BYTES
    """Bound on a whole datagram, sent and received; every member must use the same."""
    max_send_buffer_bytes: int = 1024 * 1024
    """Bytes the kernel refused for now and asyncio buffers; beyond it sends are dropped."""
    receive_buffer_bytes: int = 2 * 1024 * 1024
    """Socket receive buffer asked for (like memberlist's 2 MB), so a burst is not lost
    while the event loop is busy; the kernel may grant less (``net.core.rmem_max``)."""

    def __post_init__(self) -> None:
        if not HEADER_BYTES + 1 <= self.max_datagram_bytes <= MAX_UDP_PAYLOAD_BYTES:
            raise ValueError(
                f"max_datagram_bytes={self.max_datagram_bytes} must be "
                f"{HEADER_BYTES + 1}..{MAX_UDP_PAYLOAD_BYTES}"
            )
        if self.max_send_buffer_bytes < self.max_datagram_bytes:
            raise ValueError(
                f"max_send_buffer_bytes={self.max_send_buffer_bytes} is below "
                f"max_datagram_bytes={self.max_datagram_bytes}"
            )


@dataclass
class UdpStats:
    """Counters of one transport (exported as metrics by the runner)."""

    datagrams_sent: int = 0
    bytes_sent: int = 0
    datagrams_received: int = 0
    """Valid datagrams delivered."""
    bytes_received: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    """Inbound datagrams dropped, by reason (``DROP_REASONS``)."""
    send_failed: dict[str, int] = field(default_factory=dict)
    """Outbound messages refused, by reason (``SEND_FAILURES``)."""
    socket_errors: int = 0
    """Errors the socket reported (e.g. ICMP port unreachable)."""

    def drop(self, reason: str) -> None:
        """Count one inbound datagram dropped for ``reason``."""
        self.dropped[reason] = self.dropped.get(reason, 0) + 1

    def refuse(self, reason: str) -> None:
        """Count one outbound message refused for ``reason``."""
        self.send_failed[reason] = self.send_failed.get(reason, 0) + 1


Deliver = Callable[[int, Message], bool]
"""Hands one inbound message and its sender to the owner; False when its inbox is full."""


class UdpTransport:
    """One member's UDP socket: :meth:`send` a message to a member id, receive through
    ``deliver``.

    ``deliver`` is called synchronously from the event loop for every valid datagram; UDP has
    no backpressure, so an owner whose inbox is full returns False and the datagram is
    counted as dropped (``inbox_full``).
    """

    def __init__(
        self,
        node_id: int,
        codec: Codec[Message],
        deliver: Deliver,
        *,
        config: UdpConfig | None = None,
        on_drop: Callable[[str], None] | None = None,
    ) -> None:
        if not 0 <= node_id <= MAX_SENDER_ID:
            raise ValueError(f"node id {node_id} does not fit in 32 bits")
        self.node_id = node_id
        self.codec = codec
        self.config = config or UdpConfig()
        self.stats = UdpStats()
        self._deliver = deliver
        self._on_drop = on_drop
        self._addresses: dict[int, Address] = {}
        self._observed: dict[int, Address] = {}
        self._transport: asyncio.DatagramTransport | None = None
        self.address: Address | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> Address:
        """Bind ``host:port`` (0 picks a free port); return the bound address.

        OSError (e.g. the port is in use) propagates to the caller."""
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Protocol(self), local_addr=(host, port), reuse_port=False
        )
        self._transport = transport
        sock = transport.get_extra_info("socket")
        wanted_bytes = self.config.receive_buffer_bytes
        if sock is not None and wanted_bytes > 0:
            with contextlib.suppress(OSError):  # best effort: the kernel caps it anyway
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, wanted_bytes)
        bound = transport.get_extra_info("sockname")
        self.address = (str(bound[0]), int(bound[1]))
        return self.address

    def close(self) -> None:
        """Close the socket (immediately: UDP has nothing to flush that is owed to anyone)."""
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    # -- addresses -------------------------------------------------------------------------

    def set_address(self, member_id: int, address: Address) -> None:
        """Where ``member_id`` is reached from now on (seeds, gossiped ``addr`` fields)."""
        self._addresses[member_id] = address

    def address_of(self, member_id: int) -> Address | None:
        """The address datagrams for ``member_id`` go to, if known."""
        return self._addresses.get(member_id) or self._observed.get(member_id)

    def addresses(self) -> dict[int, Address]:
        """Every member with a known address."""
        return {**self._observed, **self._addresses}

    # -- sending ---------------------------------------------------------------------------

    def send(self, to: int, msg: Message) -> bool:
        """Send ``msg`` to member ``to`` in one datagram; False (and counted) when refused."""
        transport = self._transport
        if transport is None:
            return self._refused("not_started", to, msg)
        address = self.address_of(to)
        if address is None:
            return self._refused("no_address", to, msg)
        try:
            body = self.codec.encode(msg)
        except (TypeError, ValueError, msgspec.EncodeError) as exc:
            log.error("udp_unencodable node=%d to=%d msg=%r error=%s", self.node_id, to, msg, exc)
            return self._refused("unencodable", to, msg)
        if HEADER_BYTES + len(body) > self.config.max_datagram_bytes:
            log.warning(
                "udp_oversize node=%d to=%d msg=%s size_bytes=%d max_datagram_bytes=%d",
                self.node_id,
                to,
                type(msg).__name__,
                HEADER_BYTES + len(body),
                self.config.max_datagram_bytes,
            )
            return self._refused("oversize", to, msg)
        if _buffered_bytes(transport) + len(body) > self.config.max_send_buffer_bytes:
            return self._refused("buffer_full", to, msg)
        datagram = encode_datagram(
            self.node_id, body, max_datagram_bytes=self.config.max_datagram_bytes
        )
        transport.sendto(datagram, address)
        self.stats.datagrams_sent += 1
        self.stats.bytes_sent += len(datagram)
        return True

    def send_raw(self, datagram: bytes, address: Address) -> None:
        """Send bytes as they are (tests: garbage, foreign versions)."""
        if self._transport is None:
            raise RuntimeError("transport not started")
        self._transport.sendto(datagram, address)

    def _refused(self, reason: str, to: int, msg: Message) -> bool:
        self.stats.refuse(reason)
        log.debug("udp_send_refused node=%d to=%d msg=%s reason=%s",
                  self.node_id, to, type(msg).__name__, reason)  # fmt: skip
        return False

    # -- receiving -------------------------------------------------------------------------

    def datagram_received(self, data: bytes, source: Address) -> None:
        """One datagram arrived from ``source``: decode it and deliver it, or drop it."""
        try:
            sender, body = decode_datagram(data, max_datagram_bytes=self.config.max_datagram_bytes)
            if sender == self.node_id:
                raise RemoteProtocolError("own_id", f"a datagram claims to come from {sender}")
            try:
                msg = self.codec.decode(body)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                raise RemoteProtocolError("undecodable", str(exc)) from None
        except RemoteProtocolError as exc:
            self._dropped(exc.reason, source, exc.detail)
            return
        if not self._deliver(sender, msg):
            self._dropped("inbox_full", source, f"{type(msg).__name__} from {sender}")
            return
        self.stats.datagrams_received += 1
        self.stats.bytes_received += len(data)
        if sender not in self._addresses:
            self._observed[sender] = (str(source[0]), int(source[1]))

    def _dropped(self, reason: str, source: Address, detail: str) -> None:
        self.stats.drop(reason)
        if self._on_drop is not None:
            self._on_drop(reason)
        log.debug("udp_dropped node=%d source=%s:%s reason=%s detail=%s",
                  self.node_id, source[0], source[1], reason, detail)  # fmt: skip

    def error_received(self, exc: Exception) -> None:
        """The socket reported an error (an ICMP unreachable for an earlier send)."""
        self.stats.socket_errors += 1
        log.debug("udp_socket_error node=%d error=%r", self.node_id, exc)


class _Protocol(asyncio.DatagramProtocol):
    """Forwards asyncio's callbacks to the :class:`UdpTransport`."""

    def __init__(self, owner: UdpTransport) -> None:
        self._owner = owner

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self._owner.datagram_received(data, (str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        self._owner.error_received(exc)


def _buffered_bytes(transport: asyncio.DatagramTransport) -> int:
    """Bytes queued in the transport because the socket would block (asyncio and uvloop
    both implement ``get_write_buffer_size`` for datagrams; typeshed does not declare it)."""
    size = getattr(transport, "get_write_buffer_size", None)
    return int(size()) if callable(size) else 0


def make_codec(message_types: Iterable[type[Message]]) -> Codec[Message]:
    """The codec of a protocol's wire messages (no runtime control messages on UDP)."""
    return Codec(tuple(dict.fromkeys(message_types)))

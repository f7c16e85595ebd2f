"""A minimal asyncio client of one node: hello, send requests, read replies.

This is the wire-level building block; the user-facing ``pnyx`` client (leader redirects,
retries with client id + sequence) is built on it in ``pnyx.services``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl as ssl_module
from collections.abc import Iterable
from typing import Any

import msgspec

from pnyx.core import ClientReply, Codec, Message
from pnyx.runtime.framing import (
    DEFAULT_MAX_FRAME_BYTES,
    FrameDecoder,
    RemoteProtocolError,
    encode_frame,
)
from pnyx.runtime.transport import Address, Hello, Welcome, make_wire_codec


class FramedClient:
    """One framed TCP connection to a node, speaking as a client.

    ``await FramedClient.connect(address, WIRE_TYPES)`` sends a :class:`Hello` and waits
    for the node's :class:`Welcome`, which carries :attr:`client_id`.  For a node with TLS
    on pass ``ssl=pnyx.runtime.tls.client_ssl_context(ca_file)``.
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        codec: Codec[Message],
        max_frame_bytes: int,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._codec = codec
        self._max_frame_bytes = max_frame_bytes
        self._decoder = FrameDecoder(max_frame_bytes)
        self._ready: list[Message] = []
        self.client_id = 0
        self.node_id = 0

    @classmethod
    async def connect(
        cls,
        address: Address,
        message_types: Iterable[type[Any]],
        *,
        client_id: int = 0,
        timeout_s: float = 5.0,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        ssl: ssl_module.SSLContext | None = None,
        server_hostname: str | None = None,
    ) -> FramedClient:
        """Connect (over TLS with ``ssl``) and say hello; ``client_id`` 0 lets the node
        assign one.  ``server_hostname`` is the name checked in the node's certificate
        (default: the host dialled)."""
        codec = make_wire_codec((*tuple(message_types), ClientReply))
        if ssl is None:
            connecting = asyncio.open_connection(*address)
        else:
            connecting = asyncio.open_connection(
                *address,
                ssl=ssl,
                server_hostname=server_hostname,
                ssl_handshake_timeout=timeout_s,
            )
        async with asyncio.timeout(timeout_s):  # not wait_for: it can lose a cancellation
            reader, writer = await connecting
        client = cls(reader, writer, codec, max_frame_bytes)
        try:
            await client.send(Hello(client_id, "client"))
            welcome = await client.recv(timeout_s)
            if not isinstance(welcome, Welcome):
                raise RemoteProtocolError("no_welcome", f"node answered {welcome!r}")
        except BaseException:
            await client.close()
            raise
        client.client_id = welcome.client_id
        client.node_id = welcome.node_id
        return client

    async def send(self, msg: Message) -> None:
        """Send one message to the node."""
        payload = self._codec.encode(msg)
        self._writer.write(encode_frame(payload, max_frame_bytes=self._max_frame_bytes))
        await self._writer.drain()

    async def recv(self, timeout_s: float) -> Message:
        """The next message from the node; TimeoutError after ``timeout_s``."""
        async with asyncio.timeout(timeout_s):
            return await self._next()

    async def request(self, msg: Message, request_id: int, timeout_s: float) -> ClientReply:
        """Send ``msg`` and wait for the ``ClientReply`` carrying ``request_id``.

        Other messages received meanwhile are discarded.
        """
        await self.send(msg)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            reply = await self.recv(max(0.0, deadline - loop.time()))
            if isinstance(reply, ClientReply) and reply.request_id == request_id:
                return reply

    async def close(self) -> None:
        """Close the connection (waits at most 1 s; the caller's cancellation propagates)."""
        self._writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            async with asyncio.timeout(1.0):
                await self._writer.wait_closed()

    async def _next(self) -> Message:
        while not self._ready:
            data = await self._reader.read(64 * 1024)
            if not data:
                self._decoder.close()
                raise ConnectionError("node closed the connection")
            for payload in self._decoder.feed(data):
                try:
                    self._ready.append(self._codec.decode(payload))
                except msgspec.MsgspecError as exc:
                    raise RemoteProtocolError("undecodable", str(exc)) from exc
        return self._ready.pop(0)

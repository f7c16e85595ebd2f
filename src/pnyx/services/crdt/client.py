"""``DocClient``: talk to a served document replica over its control API (get, edit, status).

Used by ``pnyx crdt get|edit|status|partition|heal`` and by tests::

    client = await DocClient.connect(("127.0.0.1", 7001))
    await client.edit("text", "body", "insert", 0, "hello")   # returns once durable
    print(await client.get("body"))
    await client.close()
"""

from __future__ import annotations

import itertools
from typing import Any

from pnyx.runtime.client import FramedClient
from pnyx.runtime.transport import Address
from pnyx.services.crdt.messages import CLIENT_MESSAGES, REPLY_MESSAGES, DocReply, DocRequest


class DocRequestError(Exception):
    """The replica refused a request; the message is the replica's reason."""


class DocClient:
    """One control connection to a replica (requests are answered in order)."""

    def __init__(self, framed: FramedClient, timeout_s: float) -> None:
        self._framed = framed
        self.timeout_s = timeout_s
        self._ids = itertools.count(1)

    @classmethod
    async def connect(cls, address: Address, *, timeout_s: float = 10.0) -> DocClient:
        """Connect to the replica listening at ``address`` (OSError/TimeoutError if not)."""
        framed = await FramedClient.connect(
            address, (*CLIENT_MESSAGES, *REPLY_MESSAGES), timeout_s=timeout_s
        )
        return cls(framed, timeout_s)

    async def request(self, op: str, *, kind: str = "", field: str = "", args: Any = ()) -> Any:
        """Send one request and return its value (:class:`DocRequestError` if refused)."""
        request_id = next(self._ids)
        await self._framed.send(DocRequest(request_id, op, kind, field, list(args)))
        while True:
            reply = await self._framed.recv(self.timeout_s)
            if isinstance(reply, DocReply) and reply.request_id == request_id:
                break
        if not reply.ok:
            raise DocRequestError(reply.error)
        return reply.value

    async def get(self, field: str = "", kind: str = "") -> Any:
        """Every field's value ``{name: {kind: value}}``, or one field's value."""
        return await self.request("get", kind=kind, field=field)

    async def edit(self, kind: str, field: str, action: str, *args: Any) -> Any:
        """Edit a field (e.g. ``edit("text", "body", "insert", 0, "hi")``); durable on return."""
        return await self.request("edit", kind=kind, field=field, args=[action, *args])

    async def status(self) -> dict[str, Any]:
        """The replica's status (peers, reachability, counters, field versions)."""
        value: dict[str, Any] = await self.request("status")
        return value

    async def partition(self, *peers: str) -> Any:
        """Fault testing: cut the replica off from ``peers`` (both directions)."""
        return await self.request("partition", args=list(peers))

    async def heal(self) -> Any:
        """Fault testing: end every partition of the replica."""
        return await self.request("heal")

    async def close(self) -> None:
        """Close the connection (bounded)."""
        await self._framed.close()

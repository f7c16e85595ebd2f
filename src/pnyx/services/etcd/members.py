"""etcd's 64-bit cluster and member ids for a pnyx group, and each member's URLs.

etcd names a cluster and its members by random-looking uint64 ids; pnyx names nodes
1..999 inside a cluster id string.  Both etcd ids are derived here from the cluster id
(and the node id), so every member computes the same ones without talking: a member id
maps back to its node by trying the configured nodes.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field

from pnyx.runtime.transport import Address


@functools.lru_cache(maxsize=4096)
def _id64(text: str) -> int:
    """A nonzero uint64 from ``text`` (the first 8 bytes of its SHA-256)."""
    value = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")
    return value or 1


def cluster_id64(cluster: str) -> int:
    """etcd's ``cluster_id`` of the pnyx cluster ``cluster``."""
    return _id64(f"pnyx-cluster/{cluster}")


def member_id64(cluster: str, node_id: int) -> int:
    """etcd's ``member_id`` of node ``node_id`` of cluster ``cluster``."""
    return _id64(f"pnyx-member/{cluster}/{node_id}")


def url(address: Address, scheme: str = "http") -> str:
    """``scheme://host:port``."""
    host, port = address
    return f"{scheme}://{host}:{port}"


@dataclass(frozen=True)
class MemberDirectory:
    """What a node knows of every configured member: peer and client addresses and ids.

    ``peers`` are the pnyx peer addresses (``--peers``); ``clients`` the gRPC client
    addresses known (this node's at least).  ``client_scheme`` is ``https`` when the client
    port speaks TLS, ``peer_scheme`` when the peers do.
    """

    cluster: str
    peers: Mapping[int, Address]
    clients: Mapping[int, Address] = field(default_factory=dict)
    client_scheme: str = "http"
    peer_scheme: str = "http"

    @property
    def cluster_id(self) -> int:
        """etcd's cluster id of this cluster."""
        return cluster_id64(self.cluster)

    def member_id(self, node_id: int) -> int:
        """etcd's member id of ``node_id`` (0 for no node)."""
        return member_id64(self.cluster, node_id) if node_id > 0 else 0

    def node_of(self, member_id: int) -> int | None:
        """The configured node whose member id is ``member_id``, or None."""
        for node_id in self.peers:
            if self.member_id(node_id) == member_id:
                return node_id
        return None

    def node_by_peer_url(self, peer_url: str) -> int | None:
        """The configured node whose peer URL is ``peer_url`` (scheme ignored), or None."""
        wanted = peer_url.split("://", 1)[-1].rstrip("/")
        for node_id, address in self.peers.items():
            if url(address).split("://", 1)[-1] == wanted:
                return node_id
        return None

    def name(self, node_id: int) -> str:
        """The member name etcd tools show (``node-<id>``)."""
        return f"node-{node_id}"

    def peer_urls(self, node_id: int) -> list[str]:
        """The member's peer URLs (its pnyx peer address)."""
        address = self.peers.get(node_id)
        return [url(address, self.peer_scheme)] if address is not None else []

    def client_urls(self, node_id: int) -> list[str]:
        """The member's client URLs, when known."""
        address = self.clients.get(node_id)
        return [url(address, self.client_scheme)] if address is not None else []


__all__ = ["MemberDirectory", "cluster_id64", "member_id64", "url"]

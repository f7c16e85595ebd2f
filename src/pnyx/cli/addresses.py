"""Checked parsing of what users type for members and cluster ids (``--peers``, ``--endpoints``,
``--cluster-id``).  Every function raises ``ValueError`` with a one-line message."""

from __future__ import annotations

import ipaddress
import re

from pnyx.runtime.transport import Address

MIN_NODE_ID = 1
MAX_NODE_ID = 999
MIN_PORT = 1
MAX_PORT = 65535
MAX_CLUSTER_ID_CHARS = 64

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*\.?$")
_CLUSTER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_EXAMPLE = "expected ID=HOST:PORT, e.g. 1=127.0.0.1:7001 or 2=[::1]:7002"


def check_host(host: str) -> str:
    """``host`` as it is to be dialled: an IPv4/IPv6 literal or an RFC 1123 host name."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    if len(host) > 253 or not _HOSTNAME.match(host) or re.fullmatch(r"[0-9.]+", host):
        raise ValueError(f"bad host {host!r}: not an IP address or host name")
    return host


def parse_address(text: str) -> Address:
    """``HOST:PORT`` or ``[IPV6]:PORT`` → (host, port), range- and syntax-checked."""
    if text.startswith("["):
        bracket, sep, port = text[1:].partition("]:")
        if not sep:
            raise ValueError(f"bad address {text!r}; {_EXAMPLE}")
        host = bracket
        if ":" not in host:
            raise ValueError(f"bad address {text!r}: brackets are for IPv6 literals only")
    else:
        host, colon, port = text.rpartition(":")
        if not colon or not host:
            raise ValueError(f"bad address {text!r}; {_EXAMPLE}")
        if ":" in host:
            raise ValueError(f"bad address {text!r}: write an IPv6 host as [{host}]:{port}")
    if not port.isdigit() or not MIN_PORT <= int(port) <= MAX_PORT:
        raise ValueError(f"bad port {port!r} in {text!r}: must be {MIN_PORT}..{MAX_PORT}")
    return check_host(host), int(port)


def parse_peers(text: str) -> dict[int, Address]:
    """``1=127.0.0.1:7001,2=127.0.0.1:7002`` → {1: ("127.0.0.1", 7001), ...}.

    Ids are 1..999 and distinct, ports 1..65535, two members never share an address."""
    peers: dict[int, Address] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        node, sep, address = item.partition("=")
        if not sep or not node.isdigit():
            raise ValueError(f"bad peer {item!r}; {_EXAMPLE}")
        node_id = int(node)
        if not MIN_NODE_ID <= node_id <= MAX_NODE_ID:
            raise ValueError(
                f"bad peer id {node} in {item!r}: must be {MIN_NODE_ID}..{MAX_NODE_ID}"
            )
        if node_id in peers:
            raise ValueError(f"peer id {node_id} appears twice in the member list")
        try:
            peers[node_id] = parse_address(address)
        except ValueError as exc:
            raise ValueError(f"bad peer {item!r}: {exc}") from None
    if not peers:
        raise ValueError(f"the member list is empty; {_EXAMPLE}")
    _refuse_shared_addresses(peers)
    return peers


def _refuse_shared_addresses(peers: dict[int, Address]) -> None:
    seen: dict[Address, int] = {}
    for node_id, address in sorted(peers.items()):
        if address in seen:
            host, port = address
            raise ValueError(f"peers {seen[address]} and {node_id} both use {host}:{port}")
        seen[address] = node_id


def format_peers(peers: dict[int, Address]) -> str:
    """The inverse of :func:`parse_peers` (IPv6 hosts in brackets)."""
    parts = []
    for node_id, (host, port) in sorted(peers.items()):
        shown = f"[{host}]" if ":" in host else host
        parts.append(f"{node_id}={shown}:{port}")
    return ",".join(parts)


def check_cluster_id(text: str) -> str:
    """A cluster id: 1..64 characters of letters, digits, ``.``, ``_``, ``-``."""
    if not 1 <= len(text) <= MAX_CLUSTER_ID_CHARS or not _CLUSTER_ID.match(text):
        raise ValueError(
            f"bad cluster id {text!r}: 1..{MAX_CLUSTER_ID_CHARS} letters, digits, '.', '_' "
            "or '-', starting with a letter or digit"
        )
    return text

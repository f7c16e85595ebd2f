"""TLS: a cluster runs over mutual TLS, and only a certificate naming the peer admits it."""

from __future__ import annotations

import asyncio
import ssl
import stat
from pathlib import Path

import pytest

from pnyx.core import Codec, Message
from pnyx.runtime import FramedClient, NodeRunner, RemoteProtocolError, encode_frame
from pnyx.runtime.tls import (
    TlsConfig,
    client_ssl_context,
    generate_cluster_certs,
    node_dns_name,
    peer_ssl_context,
)
from pnyx.runtime.transport import Hello, TransportConfig, make_wire_codec
from tests.runtime.runtime_helpers import run_async, wait_until
from tests.runtime.runtime_toy import WIRE_TYPES, Add, Cluster, Pong

CODEC: Codec[Message] = make_wire_codec(WIRE_TYPES)


def frame(msg: Message) -> bytes:
    return encode_frame(CODEC.encode(msg))


def tls_transport(tls: TlsConfig) -> TransportConfig:
    return TransportConfig(
        backoff_initial_ms=5, backoff_max_ms=50, hello_timeout_ms=3000, tls=tls, cluster="c1"
    )


async def start_tls_cluster(tmp_path: Path, certs: dict[int, TlsConfig]) -> Cluster:
    cluster = Cluster(tmp_path / "data", 3, tick_ms=20)
    for node_id in sorted(certs):
        await cluster.start(node_id, transport=tls_transport(certs[node_id]))
    return cluster


def test_cert_files_name_each_node_and_keys_are_private(tmp_path: Path) -> None:
    certs = generate_cluster_certs(tmp_path / "tls", [1, 2, 3])
    assert sorted(certs) == [1, 2, 3]
    for tls in certs.values():
        assert stat.S_IMODE(tls.key_file.stat().st_mode) == 0o600
        assert tls.cert_file.read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
    assert stat.S_IMODE((tmp_path / "tls" / "ca.key").stat().st_mode) == 0o600
    with pytest.raises(ValueError, match="does not exist"):
        client_ssl_context(tmp_path / "missing.pem")


def test_a_three_node_cluster_runs_over_mutual_tls(tmp_path: Path) -> None:
    certs = generate_cluster_certs(tmp_path / "tls", [1, 2, 3])

    async def scenario() -> None:
        cluster = await start_tls_cluster(tmp_path, certs)
        try:
            ctx = client_ssl_context(certs[1].ca_file)
            for node_id in (1, 2, 3):
                await wait_until(
                    lambda n=node_id: all(  # type: ignore[misc]
                        cluster.runners[n].transport.peer_connected(p) for p in {1, 2, 3} - {n}
                    ),
                    timeout_s=15.0,
                    what=f"node {node_id}'s TLS links",
                )
            client = await cluster.client(1, ssl=ctx)
            try:
                for i in range(1, 6):
                    reply = await client.request(Add(i, i), i, 10.0)
                    assert reply.ok, reply
                assert reply.result == 15
            finally:
                await client.close()
            await wait_until(
                lambda: all(m.total == 15 for m in cluster.machines.values()),
                timeout_s=15.0,
                what="every node applied the five adds (replicated over TLS)",
            )
            # A client without TLS gets no service from a TLS node.
            with pytest.raises((ConnectionError, TimeoutError, OSError, RemoteProtocolError)):
                plain = await cluster.client(1, timeout_s=2.0)
                await plain.close()
        finally:
            await cluster.close()

    run_async(scenario(), 60.0)


async def try_peer(
    runner: NodeRunner, ctx: ssl.SSLContext | None, *, as_node: int, pong: int
) -> None:
    """Dial ``runner`` as peer ``as_node`` (TLS with ``ctx``, or plain TCP) and send a Pong."""
    host, port = runner.address
    try:
        if ctx is None:
            reader, writer = await asyncio.open_connection(host, port)
        else:
            reader, writer = await asyncio.open_connection(
                host, port, ssl=ctx, server_hostname=node_dns_name(1)
            )
    except (OSError, ssl.SSLError):
        return  # refused during the handshake
    try:
        writer.write(frame(Hello(as_node, "peer", "c1")) + frame(Pong(pong)))
        await writer.drain()
        async with asyncio.timeout(5.0):
            await reader.read(1)  # the node closes refused connections
    except (OSError, ssl.SSLError, TimeoutError):
        pass
    finally:
        writer.close()


@pytest.mark.parametrize("attack", ["other_ca", "names_other_node", "no_cert", "plain_tcp"])
def test_a_peer_without_a_cluster_cert_naming_it_is_refused(tmp_path: Path, attack: str) -> None:
    certs = generate_cluster_certs(tmp_path / "tls", [1, 2, 3])
    rogue = generate_cluster_certs(tmp_path / "rogue", [2])

    async def scenario() -> None:
        cluster = await start_tls_cluster(tmp_path, {1: certs[1]})
        runner = cluster.runners[1]
        node = cluster.node(1)
        try:
            ctx: ssl.SSLContext | None
            if attack == "other_ca":  # a cert naming node 2, from another CA
                ctx = peer_ssl_context(
                    TlsConfig(certs[1].ca_file, rogue[2].cert_file, rogue[2].key_file)
                )
                reason = "tls_handshake_failed"
            elif attack == "names_other_node":  # the cluster CA, but node 3's certificate
                ctx = peer_ssl_context(certs[3])
                reason = "peer_not_authenticated"
            elif attack == "no_cert":
                ctx = client_ssl_context(certs[1].ca_file)
                reason = "peer_not_authenticated"
            else:
                ctx = None
                reason = "tls_handshake_failed"
            await try_peer(runner, ctx, as_node=2, pong=66)
            await wait_until(
                lambda: runner.transport.stats.rejected.get(reason, 0) >= 1,
                timeout_s=10.0,
                what=f"rejection {reason}",
            )
            assert (2, 66) not in node.pongs
            # Control: node 2's own certificate is admitted and its message is stepped.
            await try_peer(runner, peer_ssl_context(certs[2]), as_node=2, pong=77)
            await wait_until(lambda: (2, 77) in node.pongs, timeout_s=10.0, what="pong")
            assert (2, 66) not in node.pongs
            assert runner.failure is None
        finally:
            await cluster.close()

    run_async(scenario(), 60.0)


def test_a_peer_link_refuses_a_server_that_is_not_the_peer(tmp_path: Path) -> None:
    """Node 1 dials node 2's address, but a server with node 3's certificate answers."""
    certs = generate_cluster_certs(tmp_path / "tls", [1, 2, 3])

    async def scenario() -> None:
        cluster = Cluster(tmp_path / "data", 3, tick_ms=20)
        try:
            impostor_sock = cluster.socks.pop(2)  # node 3's identity on node 2's port
            cluster.socks[2] = impostor_sock
            runner1 = await cluster.start(1, transport=tls_transport(certs[1]))
            impostor = await cluster.start(2, transport=tls_transport(certs[3]))
            await asyncio.sleep(0.5)  # many dial attempts at 5..50 ms backoff
            assert not runner1.transport.peer_connected(2)
            assert impostor.transport.stats.rejected.get("tls_handshake_failed", 0) >= 1
        finally:
            await cluster.close()

    run_async(scenario(), 60.0)


def test_framed_client_over_tls_checks_the_node_name(tmp_path: Path) -> None:
    certs = generate_cluster_certs(tmp_path / "tls", [1])

    async def scenario() -> None:
        cluster = Cluster(tmp_path / "data", 1, tick_ms=20)
        try:
            await cluster.start(1, transport=tls_transport(certs[1]))
            ctx = client_ssl_context(certs[1].ca_file)
            client = await FramedClient.connect(
                cluster.addresses[1], WIRE_TYPES, ssl=ctx, server_hostname=node_dns_name(1)
            )
            try:
                assert (await client.request(Add(1, 4), 1, 10.0)).result == 4
            finally:
                await client.close()
            with pytest.raises(ssl.SSLCertVerificationError):
                await FramedClient.connect(
                    cluster.addresses[1], WIRE_TYPES, ssl=ctx, server_hostname=node_dns_name(9)
                )
        finally:
            await cluster.close()

    run_async(scenario(), 60.0)

"""TLS for the transport: a cluster CA, one certificate per node, and the SSL contexts.

With :attr:`TransportConfig.tls <pnyx.runtime.transport.TransportConfig.tls>` set, a node's
listener speaks TLS to everyone.  Peers dial with their own node certificate and check that
the server's certificate names the node they meant to reach; the listener accepts a peer
hello from node N only on a connection that presented a certificate from the cluster CA
naming node N (:func:`certificate_names_node`).  Clients verify the server against the CA
and present no certificate (:func:`client_ssl_context`).

Certificates name node N with the DNS name ``pnyx-node-N`` (:func:`node_dns_name`) in the
subject alternative names, beside ``localhost`` and ``127.0.0.1`` (or the hosts given to
:func:`generate_cluster_certs`).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NODE_NAME_PREFIX = "pnyx-node-"
"""Certificates name node N as ``pnyx-node-N``."""

DEFAULT_CERT_HOSTS: tuple[str, ...] = ("localhost", "127.0.0.1")
"""Extra names every node certificate carries, so clients can verify loopback nodes."""

CA_CERT_FILE = "ca.pem"
CA_KEY_FILE = "ca.key"


@dataclass(frozen=True)
class TlsConfig:
    """One node's TLS material: the cluster CA and the node's own certificate and key."""

    ca_file: Path
    cert_file: Path
    key_file: Path

    def check(self) -> None:
        """Raise ValueError naming the first file that is missing."""
        for what, path in (("CA", self.ca_file), ("cert", self.cert_file), ("key", self.key_file)):
            if not Path(path).is_file():
                raise ValueError(f"TLS {what} file {path} does not exist")


def node_dns_name(node_id: int) -> str:
    """The name a certificate of node ``node_id`` carries (``pnyx-node-<id>``)."""
    return f"{NODE_NAME_PREFIX}{node_id}"


def server_ssl_context(tls: TlsConfig) -> ssl.SSLContext:
    """The listener's context: serve the node certificate; verify a certificate if one is sent.

    Clients send none; peers send their node certificate, which must chain to the CA.
    """
    tls.check()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(tls.cert_file, tls.key_file)
    ctx.load_verify_locations(cafile=tls.ca_file)
    ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


def peer_ssl_context(tls: TlsConfig) -> ssl.SSLContext:
    """A dialling peer's context: present the node certificate, verify the server's."""
    tls.check()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_verify_locations(cafile=tls.ca_file)
    ctx.load_cert_chain(tls.cert_file, tls.key_file)
    return ctx


def client_ssl_context(ca_file: Path) -> ssl.SSLContext:
    """A client's context: verify the node against the cluster CA; no client certificate.

    Pass it as ``FramedClient.connect(..., ssl=ctx)``.  The host name checked is the one
    dialled (``127.0.0.1`` and ``localhost`` are in every generated certificate).
    """
    if not Path(ca_file).is_file():
        raise ValueError(f"TLS CA file {ca_file} does not exist")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_verify_locations(cafile=ca_file)
    return ctx


def certificate_names_node(peercert: Mapping[str, Any] | None, node_id: int) -> bool:
    """True when a verified peer certificate (``getpeercert()``) names node ``node_id``."""
    if not peercert:
        return False
    wanted = node_dns_name(node_id)
    names = peercert.get("subjectAltName", ())
    return any(kind == "DNS" and value == wanted for kind, value in names)


def generate_cluster_certs(
    directory: Path,
    node_ids: Iterable[int],
    *,
    hosts: Iterable[str] = DEFAULT_CERT_HOSTS,
    valid_days: int = 3650,
) -> dict[int, TlsConfig]:
    """Create a self-signed cluster CA and one certificate + key per node in ``directory``.

    Files: ``ca.pem``, ``ca.key``, ``node-<id>.pem``, ``node-<id>.key`` (keys mode 0600;
    keep ``ca.key`` to add nodes later, or delete it).  Each node certificate names
    ``pnyx-node-<id>`` and every entry of ``hosts`` (DNS names or IP addresses).
    Returns each node's :class:`TlsConfig`.
    """
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    now = datetime.datetime.now(datetime.UTC)
    not_before = now - datetime.timedelta(hours=1)
    not_after = now + datetime.timedelta(days=valid_days)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pnyx cluster CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_file = directory / CA_CERT_FILE
    _write(ca_file, ca_cert.public_bytes(serialization.Encoding.PEM), 0o644)
    _write(directory / CA_KEY_FILE, _key_pem(ca_key), 0o600)
    extra = [_general_name(host) for host in hosts]
    configs: dict[int, TlsConfig] = {}
    for node_id in sorted(set(node_ids)):
        key = ec.generate_private_key(ec.SECP256R1())
        name = node_dns_name(node_id)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(ca=False), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name), *extra]), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
            )
            .sign(ca_key, hashes.SHA256())
        )
        cert_file = directory / f"node-{node_id}.pem"
        key_file = directory / f"node-{node_id}.key"
        _write(cert_file, cert.public_bytes(serialization.Encoding.PEM), 0o644)
        _write(key_file, _key_pem(key), 0o600)
        configs[node_id] = TlsConfig(ca_file=ca_file, cert_file=cert_file, key_file=key_file)
    return configs


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=not ca,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _general_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to ``path`` created with ``mode`` (a key is never world-readable)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)

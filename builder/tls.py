"""The cluster's TLS certificate, made by the builder for the real servers' port 443.

A service whose ports include contract.TLS_PORT (e.g. the 80 + 443 group) is answered with TLS
by every real server, all with one certificate: IPVS direct routing hands the client's
connection to whichever real server it picks, so each must present the same identity. The
builder makes it once per cluster (ECDSA P-256, self-signed, ten years: an appliance runs for
years), keeps it next to the cluster's secret (``.secrets/<cluster>.tls/``, key 0600), puts it
with its key on the real servers' seeds and alone on the directors' (their https checks trust
it as their CA), and clients trust that file (``curl --cacert .secrets/NAME.tls/cluster.crt``).
Its names are the cluster's domain names and every VIP; a VIP added later makes a new one.
Bring your own by putting a self-signed ``cluster.crt`` and its ``cluster.key`` there (used as
they are while they name every VIP).
"""
from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path
from typing import NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from builder import render
from builder.profile import Cluster

VALID_DAYS = 3650


class Tls(NamedTuple):
    """A tuple, as render.tls_files takes it (render cannot import this module)."""
    cert: str   # PEM, for contract.TLS_CERT
    key: str    # PEM (PKCS#8, unencrypted), for contract.TLS_KEY (0600)


def directory(cluster: Cluster, secrets_dir: Path) -> Path:
    return secrets_dir / f"{cluster.name}.tls"


def cert_path(cluster: Cluster, secrets_dir: Path) -> Path:
    """The certificate clients trust (curl --cacert), beside its key."""
    return directory(cluster, secrets_dir) / "cluster.crt"


def names(cluster: Cluster) -> tuple[list[str], list[ipaddress.IPv4Address | ipaddress.IPv6Address]]:
    """What the certificate must name: the cluster's domain names and every VIP."""
    return [cluster.domain, f"*.{cluster.domain}"], list(cluster.vips)


def generate(cluster: Cluster, now: datetime.datetime | None = None) -> Tls:
    now = now or datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{cluster.name} cluster"),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "lvs-appliance")])
    dns, ips = names(cluster)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
            .add_extension(x509.SubjectAlternativeName([*map(x509.DNSName, dns), *map(x509.IPAddress, ips)]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(key, hashes.SHA256()))
    return Tls(cert.public_bytes(serialization.Encoding.PEM).decode(),
               key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption()).decode())


def covers(cert_pem: str, cluster: Cluster) -> bool:
    """The certificate names every VIP of the cluster."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem.encode())
        held = set(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
                   .value.get_values_for_type(x509.IPAddress))
    except (ValueError, x509.ExtensionNotFound):
        return False
    return set(cluster.vips) <= held


def load_or_create(cluster: Cluster, secrets_dir: Path) -> Tls | None:
    """The cluster's certificate and key when it serves TLS (None otherwise): made the first
    time and kept, made again when it no longer names every VIP."""
    if not cluster.serves_tls:
        return None
    cert = cert_path(cluster, secrets_dir)
    cert.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = cert.with_suffix(".key")
    if not (cert.exists() and key.exists() and covers(cert.read_text(), cluster)):
        made = generate(cluster)
        render.write_atomic(key, made.key, 0o600)
        render.write_atomic(cert, made.cert, 0o644)  # a pair cut short here is made again next time
    return Tls(cert.read_text(), key.read_text())

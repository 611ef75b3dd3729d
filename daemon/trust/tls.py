"""TLS for the gRPC port: certificate generation (`musad certs init`) and credentials.

`init_certs` writes a private CA, a server certificate for the given host names and IPs,
and a client certificate (for mTLS; its CN becomes the actor). `server_credentials`
turns the config into gRPC credentials and refuses plaintext on a non-loopback address
unless `server.insecure` is set, in which case it warns at every start.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

log = logging.getLogger(__name__)

DEFAULT_DAYS = 825
LOOPBACK_NAMES = ("localhost", "ip6-localhost")


class InsecureBindError(PermissionError):
    """Plaintext gRPC on a non-loopback address without --insecure."""


@dataclass(frozen=True)
class Issued:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "musa-ops"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def make_ca(cn: str = "musa-ops CA", days: int = 3650) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return Issued(cert, key)


_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def check_host(host: str) -> None:
    """Raises ValueError with a sentence unless `host` is an IP address or a DNS name
    (labels of letters, digits and inner hyphens, 63 characters each, 253 in all; a leading
    "*." wildcard allowed)."""
    try:
        ipaddress.ip_address(host)
        return
    except ValueError:
        pass
    name = host[2:] if host.startswith("*.") else host
    name = name[:-1] if name.endswith(".") else name
    if not name or len(name) > 253 or not all(_LABEL.fullmatch(label) for label in name.split(".")):
        raise ValueError(f"--host {host!r} is neither a valid DNS name nor an IP address "
                         "(DNS names use letters, digits, '-' and '.', e.g. gpu-01.example.com)")


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def issue(ca: Issued, cn: str, *, hosts: tuple[str, ...] = (), client: bool = False,
          days: int = DEFAULT_DAYS, not_before: dt.datetime | None = None,
          not_after: dt.datetime | None = None) -> Issued:
    """A leaf certificate signed by `ca`: a server one (SANs = hosts) or a client one."""
    key = ec.generate_private_key(ec.SECP256R1())
    start = not_before or (_now() - dt.timedelta(minutes=5))
    end = not_after or (_now() + dt.timedelta(days=days))
    b = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(ca.cert.subject)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(start).not_valid_after(end)
         .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
         .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH if client
                                               else ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
         .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False))
    if hosts:
        b = b.add_extension(x509.SubjectAlternativeName([_san(h) for h in hosts]), critical=False)
    return Issued(b.sign(ca.key, hashes.SHA256()), key)


def _write(path: Path, data: bytes, private: bool = False) -> None:
    if private:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(path, 0o600)
    else:
        path.write_bytes(data)


def init_certs(out_dir: str | os.PathLike[str], hosts: list[str], *, client_cn: str = "musa-console",
               days: int = DEFAULT_DAYS, force: bool = False) -> dict[str, Path]:
    """Writes ca.pem/ca-key.pem, server.pem/server-key.pem, client.pem/client-key.pem."""
    if not hosts:
        raise ValueError("give at least one --host (a DNS name or IP address clients will dial)")
    for host in hosts:
        check_host(host)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = {k: out / f for k, f in (("ca", "ca.pem"), ("ca_key", "ca-key.pem"), ("server", "server.pem"),
                                     ("server_key", "server-key.pem"), ("client", "client.pem"),
                                     ("client_key", "client-key.pem"))}
    existing = [str(p) for p in names.values() if p.exists()]
    if existing and not force:
        raise FileExistsError(f"{existing[0]} exists; pass --force to replace the certificates")
    ca = make_ca()
    server = issue(ca, hosts[0], hosts=tuple(hosts), days=days)
    client = issue(ca, client_cn, client=True, days=days)
    _write(names["ca"], ca.cert_pem())
    _write(names["ca_key"], ca.key_pem(), private=True)
    _write(names["server"], server.cert_pem())
    _write(names["server_key"], server.key_pem(), private=True)
    _write(names["client"], client.cert_pem())
    _write(names["client_key"], client.key_pem(), private=True)
    return names


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise FileNotFoundError(f"cannot read the {what} {path}: {exc.strerror or exc}") from None


def server_credentials(config) -> grpc.ServerCredentials | None:  # noqa: ANN001 (daemon Config)
    """TLS (mTLS with tls.client_ca) credentials, or None for plaintext where allowed."""
    from ..config import parse_hostport

    host, _ = parse_hostport(config.server.listen)
    tls = config.tls
    if not (tls.cert and tls.key):
        if not is_loopback(host):
            if not config.server.insecure:
                raise InsecureBindError(
                    f"refusing plaintext gRPC on the non-loopback address {config.server.listen}: "
                    "give --tls-cert/--tls-key (musad certs init makes them) or --insecure")
            log.warning("INSECURE: serving plaintext gRPC on %s; tokens and prompts cross the network "
                        "unencrypted (use --tls-cert/--tls-key)", config.server.listen)
        return None
    pair = (_read(tls.key, "TLS key"), _read(tls.cert, "TLS certificate"))
    check_server_pair(pair[1], pair[0], tls.cert, tls.key)
    ca = _read(tls.client_ca, "client CA") if tls.client_ca else None
    if ca is not None:
        try:
            x509.load_pem_x509_certificates(ca)
        except ValueError:
            raise ValueError(f"the client CA {tls.client_ca} is not a PEM certificate") from None
    return grpc.ssl_server_credentials([pair], root_certificates=ca, require_client_auth=ca is not None)


def check_server_pair(cert_pem: bytes, key_pem: bytes, cert_path: str, key_path: str) -> None:
    """Raises ValueError with a sentence when the certificate or key is unusable."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        raise ValueError(f"the TLS certificate {cert_path} is not a PEM certificate") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        raise ValueError(f"the TLS key {key_path} is not an unencrypted PEM private key") from None
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(serialization.Encoding.DER, pub) != \
            cert.public_key().public_bytes(serialization.Encoding.DER, pub):
        raise ValueError(f"the TLS key {key_path} does not belong to the certificate {cert_path}")
    left = cert.not_valid_after_utc - _now()
    if left.total_seconds() <= 0:
        raise ValueError(f"the TLS certificate {cert_path} expired on {cert.not_valid_after_utc:%Y-%m-%d}")
    if left.days < 30:
        log.warning("the TLS certificate %s expires in %d days", cert_path, left.days)


def channel_credentials(ca: str | None = None, cert: str | None = None,
                        key: str | None = None) -> grpc.ChannelCredentials:
    """Client side: trust `ca` (system roots when None); present cert/key for mTLS."""
    return grpc.ssl_channel_credentials(
        root_certificates=_read(ca, "CA certificate") if ca else None,
        private_key=_read(key, "client key") if key else None,
        certificate_chain=_read(cert, "client certificate") if cert else None)

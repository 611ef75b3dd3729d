"""Dialling musad from the shell: address, bearer token, TLS/mTLS, and gRPC failures as
one sentence (`ClientError`), the way the console's connection settings do it.

Options: --address HOST:PORT (default 127.0.0.1:50051, or $MUSAD_ADDRESS), --token-file FILE
(or $MUSAD_TOKEN), --tls-ca PEM (TLS; --tls alone trusts the system roots), --tls-cert and
--tls-key (mTLS), --tls-server-name (when the address is not a name in the certificate),
--timeout SECONDS for calls that should answer at once.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import grpc

from ..config import parse_hostport

DEFAULT_ADDRESS = "127.0.0.1:50051"
TOKEN_ENV = "MUSAD_TOKEN"
ADDRESS_ENV = "MUSAD_ADDRESS"
_MAX_MESSAGE = 64 * 1024 * 1024


class ClientError(Exception):
    """A failure to report as one sentence; `code` is the exit status (1 runtime, 2 usage)."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def add_connection_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("connection")
    g.add_argument("--address", metavar="HOST:PORT", default=None,
                   help=f"musad to talk to (default ${ADDRESS_ENV} or {DEFAULT_ADDRESS}; IPv6 as [::1]:50051)")
    g.add_argument("--token-file", metavar="FILE",
                   help=f"file holding the bearer token (default: ${TOKEN_ENV}; "
                        "create one on the node with `musad token create --out FILE`)")
    g.add_argument("--tls", action="store_true",
                   help="use TLS, trusting the system's CA roots (implied by --tls-ca)")
    g.add_argument("--tls-ca", "--ca", dest="tls_ca", metavar="PEM",
                   help="CA certificate that signed the server's certificate; enables TLS")
    g.add_argument("--tls-cert", metavar="PEM", help="client certificate for mTLS (with --tls-key)")
    g.add_argument("--tls-key", metavar="PEM", help="client private key for mTLS (with --tls-cert)")
    g.add_argument("--tls-server-name", metavar="NAME",
                   help="host name to expect in the server certificate (default: the host of --address)")
    g.add_argument("--timeout", type=float, default=15.0, metavar="SECONDS",
                   help="how long calls that answer at once may take (default 15); "
                        "deploy and generate streams are not limited by it")


@dataclass(frozen=True)
class Target:
    address: str                 # as dialled, e.g. "10.0.0.5:50051" or "[::1]:50051"
    token: str | None
    credentials: grpc.ChannelCredentials | None
    server_name: str | None
    timeout: float


def _read(path: str, what: str, option: str) -> bytes:
    try:
        return Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise ClientError(f"cannot read the {what} {path} ({exc.strerror or exc}); check {option}.", 2) from None


def target_from_args(args: argparse.Namespace) -> Target:
    """Checks the connection options; raises ClientError (exit 2) naming the bad one."""
    text = (args.address or os.environ.get(ADDRESS_ENV) or DEFAULT_ADDRESS).strip()
    try:
        host, port = parse_hostport(text)
    except ValueError as exc:
        raise ClientError(f"--address {text!r} is not usable: {exc} (e.g. 10.0.0.5:50051).", 2) from None
    if not host or port == 0 or any(c.isspace() for c in host):
        raise ClientError(f"--address {text!r} is not usable: give a host and a port from 1 to 65535.", 2)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if args.timeout <= 0:
        raise ClientError("--timeout must be greater than 0 seconds.", 2)

    token = None
    if args.token_file:
        token = _read(args.token_file, "token file", "--token-file").decode("utf-8", "replace").strip()
        if not token:
            raise ClientError(f"the token file {args.token_file} is empty; check --token-file.", 2)
    elif os.environ.get(TOKEN_ENV, "").strip():
        token = os.environ[TOKEN_ENV].strip()
    if token is not None and any(c.isspace() or ord(c) < 32 for c in token):
        raise ClientError("the token holds spaces or control characters; the file must hold the token only.", 2)

    credentials = None
    if bool(args.tls_cert) != bool(args.tls_key):
        raise ClientError("--tls-cert and --tls-key must be given together (mTLS).", 2)
    if args.tls or args.tls_ca or args.tls_cert:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=_read(args.tls_ca, "CA certificate", "--tls-ca") if args.tls_ca else None,
            private_key=_read(args.tls_key, "client key", "--tls-key") if args.tls_key else None,
            certificate_chain=_read(args.tls_cert, "client certificate", "--tls-cert") if args.tls_cert else None)
    elif args.tls_server_name:
        raise ClientError("--tls-server-name needs TLS: add --tls-ca PEM (or --tls).", 2)
    return Target(address, token, credentials, args.tls_server_name, args.timeout)


class Client:
    """A blocking channel to one musad with the caller's token on every call."""

    def __init__(self, target: Target) -> None:
        self.target = target
        options: list[tuple[str, Any]] = [("grpc.max_receive_message_length", _MAX_MESSAGE),
                                          ("grpc.enable_retries", 0)]
        if target.server_name:
            options.append(("grpc.ssl_target_name_override", target.server_name))
        if target.credentials is not None:
            self.channel = grpc.secure_channel(target.address, target.credentials, options)
        else:
            self.channel = grpc.insecure_channel(target.address, options)
        self.metadata = (("authorization", f"Bearer {target.token}"),) if target.token else ()

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def unary(self, method: Callable[..., Any], request: Any, *, timeout: float | None = None) -> Any:
        """Calls a unary RPC; a failure becomes ClientError."""
        try:
            return method(request, metadata=self.metadata,
                          timeout=self.target.timeout if timeout is None else timeout)
        except grpc.RpcError as exc:
            raise self.error(exc) from None

    def stream(self, method: Callable[..., Any], request: Any) -> Any:
        """Starts a streaming RPC (no deadline): `request` is a message, or an iterator of them
        for a client-streaming one (ImportModel)."""
        return method(request, metadata=self.metadata)

    def error(self, exc: grpc.RpcError) -> ClientError:
        return ClientError(describe(exc, self.target))


def describe(exc: grpc.RpcError, target: Target) -> str:
    """One sentence for a failed call: what went wrong and what to do."""
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = (exc.details() if hasattr(exc, "details") else "") or ""
    where = target.address
    low = details.lower()
    if code == grpc.StatusCode.UNAVAILABLE:
        if "connection refused" in low:
            return f"nothing answers at {where} (connection refused): is musad running there? Check --address."
        if "dns" in low or "resolv" in low or "name or service not known" in low:
            return f"cannot resolve the host of {where}; check --address."
        if "certificate_verify_failed" in low or "certificate verify failed" in low:
            return (f"the certificate of {where} is not trusted: pass the CA that signed it with --tls-ca "
                    "(and --tls-server-name if the address is not a name in the certificate).")
        if "peer name" in low or "hostname" in low or "subject alternative" in low:
            return (f"the certificate of {where} does not name this host; use an address it names "
                    "or --tls-server-name NAME.")
        if target.credentials is not None and ("ssl" in low or "handshake" in low or "socket closed" in low
                                               or "wrong_version" in low or "tls" in low):
            return (f"the TLS handshake with {where} failed: the node may serve plaintext (drop --tls-ca/--tls) "
                    "or require a client certificate (--tls-cert and --tls-key).")
        if target.credentials is None and ("socket closed" in low or "connection reset" in low
                                           or "end of tcp stream" in low or "eof" in low):
            return f"{where} closed the connection: the node may require TLS; pass --tls-ca PEM."
        return f"cannot reach musad at {where}: {_short(details) or 'unavailable'}. Is it running? Check --address."
    if code == grpc.StatusCode.UNAUTHENTICATED:
        if target.token is None:
            return (f"{where} requires a token: pass --token-file FILE or set ${TOKEN_ENV} "
                    "(create one on the node with `musad token create --name NAME --role operator --out FILE`).")
        return (f"{where} rejected the token ({_short(details)}); check --token-file / ${TOKEN_ENV}, "
                "or create a new one with `musad token create` on the node.")
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return f"permission denied by {where}: {_short(details) or 'this token may not do that'}."
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return f"{where} did not answer within {target.timeout:g} s; raise --timeout or check the node."
    if code == grpc.StatusCode.UNIMPLEMENTED:
        return f"{where} does not implement this call: is it a musad of the same version?"
    if code == grpc.StatusCode.CANCELLED:
        return "cancelled."
    text = _short(details) or code.name.replace("_", " ").lower()
    return f"{text} ({code.name})"


def _short(details: str) -> str:
    """gRPC details without grpc core's own advice and trailing punctuation."""
    out = details.strip()
    for advice in ("; set GRPC_VERBOSITY=debug environment variable to see detailed error message.",
                   "set GRPC_VERBOSITY=debug environment variable to see detailed error message."):
        out = out.replace(advice, "")
    return out.strip().rstrip(".")

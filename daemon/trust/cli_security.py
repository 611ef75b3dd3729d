"""The `musad token | certs | audit` subcommands (registered from cli.py, one call each).

They work on the daemon's database directly (`--db URL`, or the one `--config` /
`--state-dir` imply), so they run beside a live daemon: SQLite takes one writer at a
time and the chain head is read inside each write transaction.
Exit codes: 0 ok, 1 verification failed or the action failed, 2 bad usage.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from ..limits import NO_LIMITS
from .caller import ROLES

SIGNING_KEY_FILE = "node_ed25519.pem"


def _fail(message: str, code: int = 2) -> int:
    print(f"musad: {message}", file=sys.stderr)
    return code


def _add_db_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", metavar="URL",
                   help="SQLAlchemy URL or SQLite path of the daemon database (default <state-dir>/musad.db)")
    p.add_argument("--config", metavar="FILE", help="musad TOML config (for storage.db_url / state_dir)")
    p.add_argument("--state-dir", metavar="DIR",
                   help="daemon state folder (default as musad serve: /var/lib/musad as root, "
                        "else the user's state folder)")


def _config(args: argparse.Namespace):  # noqa: ANN202
    from ..config import load_config

    overrides = {}
    if args.db:
        overrides["storage.db_url"] = args.db
    if args.state_dir:
        overrides["storage.state_dir"] = args.state_dir
    return load_config(args.config, overrides)


def _open_log(args: argparse.Namespace, *, must_exist: bool = False):  # noqa: ANN202
    """The audit log of the daemon database. With `must_exist` (commands that read or change
    what is there: list, limits, revoke, audit) a database that does not exist is refused;
    otherwise (token create) the default one is created in the state folder, as serve does,
    never the folder of an explicit --db."""
    from ..config import default_db_url
    from .audit import AuditError, AuditLog

    cfg = _config(args)
    if not must_exist and cfg.storage.db_url == default_db_url(cfg.storage.state_dir):
        try:
            Path(cfg.storage.state_dir).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise AuditError(f"cannot create the state folder {cfg.storage.state_dir}: "
                             f"{exc.strerror or exc}; check --state-dir") from None
    return AuditLog.open(cfg.storage.db_url, node=socket.gethostname(), must_exist=must_exist)


def _fmt_time(us: int | None) -> str:
    if us is None:
        return "-"
    return datetime.fromtimestamp(us / 1e6, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


# -- musad token ----------------------------------------------------------------------------

def register_token(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("token", help="create, list and revoke bearer tokens",
                       description="Bearer tokens for the gRPC API; only their hashes are stored.")
    tsub = p.add_subparsers(dest="token_command", metavar="ACTION", required=True)
    c = tsub.add_parser("create", help="create a token and print it once")
    c.add_argument("--name", required=True, help="who or what holds it (also a client-certificate CN)")
    c.add_argument("--role", required=True, choices=ROLES,
                   help="what it may do: viewer reads node, models and telemetry; client only generates; "
                        "operator reads, generates and deploys; auditor reads and queries the audit log; "
                        "admin may call everything")
    c.add_argument("--expires", type=float, metavar="DAYS", help="lifetime in days (default: never)")
    c.add_argument("--out", metavar="FILE",
                   help="write the token to FILE (mode 0600) instead of stdout; its folder must exist")
    _add_limit_args(c, "(default: no limit)")
    _add_db_args(c)
    c.set_defaults(func=cmd_token_create)
    ls = tsub.add_parser("list", help="list tokens (never their values)")
    _add_db_args(ls)
    ls.set_defaults(func=cmd_token_list)
    lim = tsub.add_parser("limits", help="change a token's limits (in force within a second, no restart)",
                          description="Changes the limits given; the others keep their values.")
    lim.add_argument("name", help="the token's name, as `musad token list` shows it")
    _add_limit_args(lim, "(default: unchanged)")
    _add_db_args(lim)
    lim.set_defaults(func=cmd_token_limits)
    r = tsub.add_parser("revoke", help="revoke a token by name")
    r.add_argument("name", help="the token's name, as `musad token list` shows it")
    _add_db_args(r)
    r.set_defaults(func=cmd_token_revoke)


def _add_limit_args(p: argparse.ArgumentParser, default: str) -> None:
    """The limit flags of `token create` and `token limits` (fields of limits.KeyLimits)."""
    p.add_argument("--models", metavar="A,B",
                   help=f"models the key may use, comma-separated; '' = every model {default}")
    for flag, what in (("rpm", "requests per minute"), ("tpm", "prompt + completion tokens per minute"),
                       ("concurrent", "requests in flight at once"),
                       ("daily-tokens", "prompt + completion tokens per UTC day")):
        p.add_argument(f"--{flag}", type=int, metavar="N", help=f"{what}; 0 = no limit {default}")


def _limits_from_args(args: argparse.Namespace, base):  # noqa: ANN001, ANN202
    """`base` (a KeyLimits) with the limit flags that were given replacing its values."""
    from dataclasses import replace

    changes = {f: getattr(args, f) for f in ("rpm", "tpm", "concurrent", "daily_tokens")
               if getattr(args, f) is not None}
    if args.models is not None:
        changes["models"] = tuple(m.strip() for m in args.models.split(",") if m.strip())
    return replace(base, **changes)


def _fmt_limits(limits) -> str:  # noqa: ANN001
    """`models=a,b rpm=60` (only what is limited), or `-`."""
    parts = [f"models={','.join(limits.models)}"] if limits.models else []
    parts += [f"{k}={v}" for k, v in limits.as_dict().items() if k != "models" and v]
    return " ".join(parts) or "-"


def write_private(path: str | os.PathLike[str], text: str) -> None:
    """Writes `text` to `path` readable only by the user (0600); its folder must exist."""
    p = Path(path)
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(p, 0o600)


def cmd_token_create(args: argparse.Namespace) -> int:
    from .tokens import TokenError, TokenStore

    if args.out:   # checked before the token exists, so a failed write leaves no token behind
        out = Path(args.out)
        if not out.parent.is_dir():
            return _fail(f"the folder {out.parent} of --out does not exist; create it or choose another file")
        if out.is_dir():
            return _fail(f"--out {out} is a folder; give a file name")
    with _open_log(args) as log:
        try:
            token = TokenStore(log.engine, audit=log).create(args.name, args.role, args.expires,
                                                             limits=_limits_from_args(args, NO_LIMITS))
        except TokenError as exc:
            return _fail(str(exc))
    if args.out:
        try:
            write_private(args.out, token + "\n")
        except OSError as exc:
            print(token)
            return _fail(f"cannot write {args.out} ({exc.strerror or exc}); the token was printed above "
                         "instead (it is shown only this once)", 1)
        print(f"token {args.name!r} ({args.role}) written to {args.out}", file=sys.stderr)
    else:
        print(token)
        print(f"token {args.name!r} ({args.role}) created; it is shown only this once", file=sys.stderr)
    return 0


def cmd_token_list(args: argparse.Namespace) -> int:
    from .tokens import TokenStore

    with _open_log(args, must_exist=True) as log:
        tokens = TokenStore(log.engine).list()
    now = time.time_ns() // 1000
    print(f"{'NAME':<28} {'ROLE':<9} {'STATE':<8} {'CREATED':<21} {'EXPIRES':<21} LIMITS")
    for t in tokens:
        print(f"{t.name:<28} {t.role:<9} {t.state(now):<8} {_fmt_time(t.created_us):<21} "
              f"{_fmt_time(t.expires_us):<21} {_fmt_limits(t.limits)}")
    return 0


def cmd_token_limits(args: argparse.Namespace) -> int:
    from .tokens import TokenError, TokenStore

    with _open_log(args, must_exist=True) as log:
        store = TokenStore(log.engine, audit=log)
        current = next((t for t in store.list() if t.name == args.name), None)
        if current is None:
            return _fail(f"no token named {args.name!r}; `musad token list` shows the names", 1)
        try:
            info = store.set_limits(args.name, _limits_from_args(args, current.limits))
        except TokenError as exc:
            return _fail(str(exc), 1)
    print(f"token {args.name!r} limits: {_fmt_limits(info.limits)}")
    return 0


def cmd_token_revoke(args: argparse.Namespace) -> int:
    from .tokens import TokenError, TokenStore

    with _open_log(args, must_exist=True) as log:
        try:
            TokenStore(log.engine, audit=log).revoke(args.name)
        except TokenError as exc:
            return _fail(str(exc), 1)
    print(f"token {args.name!r} revoked")
    return 0


# -- musad certs ----------------------------------------------------------------------------

def register_certs(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("certs", help="make TLS certificates", description="TLS certificates for musad.")
    csub = p.add_subparsers(dest="certs_command", metavar="ACTION", required=True)
    i = csub.add_parser("init", help="write a CA, a server and a client certificate into DIR")
    i.add_argument("dir", metavar="DIR", help="folder for the PEM files (created)")
    i.add_argument("--host", action="append", required=True, metavar="NAME",
                   help="DNS name or IP the server is reached by (repeat for more)")
    i.add_argument("--client-cn", default="musa-console",
                   help="CN of the client certificate, its actor name (default %(default)s)")
    i.add_argument("--days", type=int, default=825,
                   help="validity of server and client certificates in days (default %(default)s)")
    i.add_argument("--force", action="store_true", help="replace existing files")
    i.set_defaults(func=cmd_certs_init)


def cmd_certs_init(args: argparse.Namespace) -> int:
    from .tls import init_certs

    if args.days <= 0:
        return _fail("--days must be positive")
    try:
        files = init_certs(args.dir, args.host, client_cn=args.client_cn, days=args.days, force=args.force)
    except (FileExistsError, ValueError) as exc:
        return _fail(str(exc))
    except OSError as exc:
        return _fail(f"cannot write to {args.dir}: {exc.strerror or exc}", 1)
    for k, path in files.items():
        print(f"{k:<11} {path}")
    print(f"serve with: musad serve --tls-cert {files['server']} --tls-key {files['server_key']} "
          f"--client-ca {files['ca']}", file=sys.stderr)
    return 0


# -- musad audit ----------------------------------------------------------------------------

def parse_time(value: str) -> int:
    """ISO 8601 (UTC when no zone) or Unix seconds -> Unix microseconds."""
    v = value.strip()
    try:
        return int(float(v) * 1_000_000)
    except ValueError:
        pass
    if v.endswith(("Z", "z")):
        v = v[:-1] + "+00:00"
    try:
        t = datetime.fromisoformat(v)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a time: use ISO 8601 (2026-11-30T12:00:00Z) or Unix seconds") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return int(t.timestamp() * 1_000_000)


def register_audit(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("audit", help="verify and export the audit log",
                       description="The node's tamper-evident audit log.")
    asub = p.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    v = asub.add_parser("verify", help="walk the hash chain (exit 1 at the first broken link)")
    _add_db_args(v)
    v.set_defaults(func=cmd_audit_verify)
    e = asub.add_parser("export", help="export records to CSV, JSONL or JSON")
    e.add_argument("--format", required=True, choices=("csv", "jsonl", "json"),
                   help="csv, jsonl (one record a line) or json (one document)")
    e.add_argument("--since", type=parse_time, metavar="T",
                   help="from this time (inclusive): ISO 8601 (UTC when no zone) or Unix seconds")
    e.add_argument("--until", type=parse_time, metavar="T", help="up to this time (exclusive), as --since")
    e.add_argument("--actor", default="", help="only records of this actor (token name or certificate CN)")
    e.add_argument("--action", default="", help="only this action, e.g. node.Deploy or token.create")
    e.add_argument("--outcome", default="", choices=("ok", "denied", "failed"), help="only this outcome")
    e.add_argument("--out", required=True, metavar="FILE", help="file to write")
    e.add_argument("--sign", action="store_true", help="sign with the node's Ed25519 key")
    e.add_argument("--key", metavar="PEM", help=f"signing key (default <state-dir>/{SIGNING_KEY_FILE}, created if absent)")
    _add_db_args(e)
    e.set_defaults(func=cmd_audit_export)
    x = asub.add_parser("verify-export", help="check an export's digest, signature and chain")
    x.add_argument("file", metavar="FILE", help="an export written by `musad audit export`")
    x.add_argument("--public-key", metavar="B64|FILE",
                   help="require this signer (base64 raw key, or a file holding it, as `musad audit key` prints)")
    x.set_defaults(func=cmd_audit_verify_export)
    k = asub.add_parser("key", help="print the node's export-signing public key (base64)")
    k.add_argument("--key", metavar="PEM", help=f"signing key (default <state-dir>/{SIGNING_KEY_FILE}, created if absent)")
    _add_db_args(k)
    k.set_defaults(func=cmd_audit_key)


def cmd_audit_verify(args: argparse.Namespace) -> int:
    with _open_log(args, must_exist=True) as log:
        r = log.verify()
    if not r.ok:
        print(f"BROKEN at record {r.first_broken_seq}: {r.reason} ({r.records} records verified before it)")
        return 1
    print(f"OK: {r.records} records; head {r.head_hash or '(empty log)'}")
    return 0


def _signing_key_path(args: argparse.Namespace) -> Path:
    return Path(args.key) if args.key else Path(_config(args).storage.state_dir) / SIGNING_KEY_FILE


def cmd_audit_export(args: argparse.Namespace) -> int:
    from .audit import AuditFilter
    from .audit_export import ExportError, export_log, load_or_create_signing_key

    if args.since and args.until and args.until <= args.since:
        return _fail("--until must be later than --since")
    f = AuditFilter(since_us=args.since or 0, until_us=args.until or 0, actor=args.actor,
                    action=args.action, outcome=args.outcome)
    try:
        with _open_log(args, must_exist=True) as log:
            key = load_or_create_signing_key(_signing_key_path(args)) if args.sign else None
            s = export_log(log, args.out, args.format, f, sign_key=key)
    except ExportError as exc:
        return _fail(str(exc), 1)
    except OSError as exc:
        return _fail(f"cannot write {args.out}: {exc.strerror or exc}", 1)
    rng = f"records {s.first_seq}..{s.last_seq}" if s.records else "no records"
    print(f"exported {s.records} records ({rng}) to {s.path}; chain head {s.head_seq} "
          f"{s.head_hash or '(empty)'}{'; signed' if s.signed else ''}")
    return 0


def cmd_audit_verify_export(args: argparse.Namespace) -> int:
    import base64

    from .audit_export import verify_export

    if not Path(args.file).is_file():
        return _fail(f"the export {args.file} does not exist or is not a file; check the path")
    pinned = None
    if args.public_key:
        text = args.public_key
        if Path(text).is_file():
            text = Path(text).read_text(errors="replace").strip()
        try:
            pinned = base64.b64decode(text, validate=True)
        except ValueError:
            return _fail("--public-key is neither base64 nor a file holding base64")
        if len(pinned) != 32:
            return _fail(f"--public-key is malformed: an Ed25519 public key is 32 bytes, this one is {len(pinned)}; "
                         "copy it as `musad audit key` prints it")
    r = verify_export(args.file, public_key=pinned)
    if not r.ok:
        print(f"FAILED: {r.reason}")
        return 1
    sig = f"signed by key sha256:{r.public_key_sha256}" if r.signed else "unsigned"
    scope = "the whole chain" if r.complete_chain else "a filtered part of the chain"
    print(f"OK: {r.records} records ({scope}), {sig}; chain head {r.head_seq} {r.head_hash or '(empty)'}")
    return 0


def cmd_audit_key(args: argparse.Namespace) -> int:
    import base64
    import hashlib

    from .audit_export import load_or_create_signing_key, public_key_bytes

    raw = public_key_bytes(load_or_create_signing_key(_signing_key_path(args)))
    print(base64.b64encode(raw).decode())
    print(f"sha256:{hashlib.sha256(raw).hexdigest()}", file=sys.stderr)
    return 0

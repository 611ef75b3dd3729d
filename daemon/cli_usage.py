"""`musad usage export`: the node's hourly usage buckets (key x model x hour) as CSV or
JSON lines, read straight from the daemon database (the daemon may be running)."""

from __future__ import annotations

import argparse
import sys


def _epoch_s(text: str) -> int:
    """'2027-01-10', '2027-01-10T08:00' (UTC unless an offset is given) or epoch seconds:
    the audit commands' time rule (trust/cli_security.parse_time), in seconds."""
    from .trust.cli_security import parse_time
    return parse_time(text) // 1_000_000


def register_usage(sub: argparse._SubParsersAction) -> None:
    from .trust.cli_security import _add_db_args

    p = sub.add_parser("usage", help="export per-key usage", description="Per key x model x hour usage.")
    usub = p.add_subparsers(dest="usage_command", metavar="ACTION", required=True)
    e = usub.add_parser("export", help="write hourly usage buckets as CSV or JSON lines")
    e.add_argument("--format", choices=("csv", "jsonl"), default="csv", help="csv or jsonl, one bucket a line (default csv)")
    e.add_argument("--key", default="", help="only this key (token name)")
    e.add_argument("--model", default="", help="only this model")
    e.add_argument("--since", type=_epoch_s, default=0, metavar="TIME", help="ISO date/time (UTC) or epoch seconds")
    e.add_argument("--until", type=_epoch_s, default=0, metavar="TIME", help="ISO date/time (UTC) or epoch seconds")
    e.add_argument("--out", metavar="FILE", help="write to FILE instead of stdout")
    _add_db_args(e)
    e.set_defaults(func=cmd_usage_export)


def cmd_usage_export(args: argparse.Namespace) -> int:
    from .trust.audit import open_database
    from .trust.cli_security import _config
    from .usage import UsageFilter, UsageLog, export_usage

    # a ConfigError or AuditError (no database): main says it in one sentence, exit 2
    engine = open_database(_config(args).storage.db_url, must_exist=True)
    log = UsageLog(engine)
    f = UsageFilter(key=args.key, model=args.model, since_s=args.since, until_s=args.until)
    try:
        if args.out:
            with open(args.out, "w", encoding="utf-8", newline="") as out:
                n = export_usage(log, out, args.format, f)
            print(f"{n} buckets written to {args.out}", file=sys.stderr)
        else:
            export_usage(log, sys.stdout, args.format, f)
    except OSError as exc:
        print(f"musad: cannot write {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    finally:
        log.close()
        engine.dispose()
    return 0

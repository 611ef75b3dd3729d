"""`musad import | pull | delete`: a node's model repository from the shell (registered by
client_cli.register, in its style (client/commands.py): connection options, one sentence and exit 1 when the node
refuses, 2 for bad usage, 130 when interrupted, after cancelling the running transfer).

- import PATH: uploads a model folder or one .gguf file (name: the folder's or file's name,
  or --name); every file's SHA-256 is computed here first (musaops.v1.model_upload, shared
  with the console), the node says which bytes it
  holds already (ImportStatus), and only the rest is sent: an interrupted import resumes
  when run again.
- pull --from ADDR MODEL: the node fetches MODEL from the musad at ADDR itself (node to
  node); --source-token is the credential for ADDR (operator role there).
- delete MODEL: removes a model that is not deployed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from .client.connection import ClientError


def register(sub: argparse._SubParsersAction) -> None:
    from .client.commands import add_common_args

    p = sub.add_parser("import", help="upload a model folder or .gguf file into the node's repository",
                       description="Upload PATH (a model folder or one .gguf file) into the node's repository; "
                                   "run it again to resume an interrupted upload.")
    p.add_argument("path", metavar="PATH", help="model folder or .gguf file on this machine")
    p.add_argument("--name", default="", help="name in the repository (default: PATH's name)")
    add_common_args(p, cmd_import, json_help="print the final progress as JSON")

    p = sub.add_parser("pull", help="have the node copy a model from another musad",
                       description="The node fetches MODEL from the musad at --from (node to node; the weights "
                                   "do not pass through this machine).")
    p.add_argument("model", metavar="MODEL", help="the model's name on the source node")
    p.add_argument("--from", dest="source", required=True, metavar="HOST:PORT", help="the source musad")
    p.add_argument("--source-token", default="", metavar="TOKEN",
                   help="credential for the source (operator role there); default $MUSAD_SOURCE_TOKEN")
    p.add_argument("--source-tls", action="store_true", help="reach the source over TLS (the node's certificates)")
    add_common_args(p, cmd_pull, json_help="print the final progress as JSON")

    p = sub.add_parser("delete", help="remove a model that is not deployed",
                       description="Delete MODEL from the node's repository (refused while it is deployed).")
    p.add_argument("model", metavar="MODEL", help="model name, as `musad models` lists it")
    add_common_args(p, cmd_delete)


def _follow(call: Any, client: Any, label: str, as_json: bool) -> int:
    """Shows TransferProgress messages until DONE; Ctrl-C cancels the transfer."""
    from musaops.v1 import models_pb2

    from .client.render import Progress, as_json as to_json, fmt_bytes, print_json
    from .client.commands import follow_progress

    progress = Progress(label)

    def show(p: Any) -> None:
        stage = models_pb2.TransferStage.Name(p.stage).removeprefix("TRANSFER_STAGE_").lower()
        fraction = p.bytes_done / p.bytes_total if p.bytes_total else 0.0
        rate = f", {fmt_bytes(p.rate_bytes_per_s)}/s" if p.rate_bytes_per_s else ""
        eta = ""
        if p.rate_bytes_per_s > 0 and p.bytes_total > p.bytes_done:
            eta = f", {(p.bytes_total - p.bytes_done) / p.rate_bytes_per_s:.0f} s left"
        progress.update(stage, fraction, f"{fmt_bytes(p.bytes_done)} / {fmt_bytes(p.bytes_total)}{rate}{eta}")

    last = follow_progress(call, client, progress, show,
                           "the transfer was cancelled (what arrived stays staged for a retry).")
    progress.end()
    if last is None or last.stage != models_pb2.TRANSFER_STAGE_DONE:
        print(f"musad: the transfer of {label} ended before it was done; run it again to resume.", file=sys.stderr)
        return 1
    if as_json:
        print_json(to_json(last))
    else:
        print(last.message or f"{label} is in the repository")
    return 0


def cmd_import(args: argparse.Namespace, client: Any) -> int:
    from musaops.v1 import models_pb2_grpc
    from musaops.v1.model_upload import UploadError, local_manifest, upload_chunks

    path = Path(args.path).expanduser()
    name = args.name or path.resolve().name
    t0 = time.monotonic()
    try:
        manifest = local_manifest(path, name)
    except (UploadError, OSError) as exc:
        raise ClientError(str(exc), 2) from None
    if sys.stderr.isatty():
        print(f"{name}: {len(manifest.files)} files hashed in {time.monotonic() - t0:.1f} s", file=sys.stderr)
    stub = models_pb2_grpc.ModelsStub(client.channel)
    status = client.unary(stub.ImportStatus, manifest)
    if status.exists:
        raise ClientError(f"the node already holds a model named {name}; delete it first or use --name.")
    offsets = {o.path: o.offset for o in status.present}
    call = client.stream(stub.ImportModel, upload_chunks(manifest, path, offsets))
    return _follow(call, client, name, args.json)


def cmd_pull(args: argparse.Namespace, client: Any) -> int:
    from musaops.v1 import models_pb2, models_pb2_grpc

    token = args.source_token or os.environ.get("MUSAD_SOURCE_TOKEN", "")
    req = models_pb2.PullRequest(source=args.source, model=args.model, token=token, tls=args.source_tls)
    call = client.stream(models_pb2_grpc.ModelsStub(client.channel).PullModel, req)
    return _follow(call, client, args.model, args.json)


def cmd_delete(args: argparse.Namespace, client: Any) -> int:
    from musaops.v1 import models_pb2, models_pb2_grpc

    from .client.render import as_json, fmt_bytes, print_json

    res = client.unary(models_pb2_grpc.ModelsStub(client.channel).DeleteModel,
                       models_pb2.DeleteModelRequest(model=args.model))
    if args.json:
        print_json(as_json(res))
    else:
        print(f"{args.model} deleted: {fmt_bytes(res.freed_bytes)} freed")
    return 0

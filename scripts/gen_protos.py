"""Regenerate the committed protobuf/gRPC Python modules and .pyi stubs.

`make proto` runs this; tests/unit/test_proto_drift.py runs it into a scratch folder and
compares, so the committed files never drift from the .proto sources.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
PROTO_DIR = PROTO_ROOT / "musaops" / "v1"


def generate(out_root: pathlib.Path) -> list[pathlib.Path]:
    """Writes *_pb2.py, *_pb2.pyi and *_pb2_grpc.py for every .proto under out_root/musaops/v1."""
    from grpc_tools import protoc
    import grpc_tools

    include = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    protos = sorted(PROTO_DIR.glob("*.proto"))
    (out_root / "musaops" / "v1").mkdir(parents=True, exist_ok=True)
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        *[str(p.relative_to(PROTO_ROOT)) for p in protos],
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    return sorted((out_root / "musaops" / "v1").glob("*_pb2*.py*"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=pathlib.Path, default=PROTO_ROOT, help="output root (default: protos/)")
    args = parser.parse_args()
    files = generate(args.out)
    print(f"generated {len(files)} files under {args.out / 'musaops' / 'v1'}", file=sys.stderr)


if __name__ == "__main__":
    main()

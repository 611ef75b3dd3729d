"""`make bench`: runs every bench_*.py in this folder, each printing one JSON object.

Passes --quick (and any other arguments) through; prints one JSON object per benchmark on
stdout, in file-name order, and exits non-zero if any benchmark failed.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys


def main(argv: list[str]) -> int:
    here = pathlib.Path(__file__).resolve().parent
    failed = []
    for bench in sorted(here.glob("bench_*.py")):
        print(f"== {bench.name} {' '.join(argv)}", file=sys.stderr, flush=True)
        proc = subprocess.run([sys.executable, str(bench), *argv], stdout=subprocess.PIPE, text=True)
        lines = [ln for ln in proc.stdout.splitlines() if ln.strip().startswith("{")]
        if proc.returncode != 0 or not lines:
            failed.append(bench.name)
            print(json.dumps({"bench": bench.stem, "error": f"exit code {proc.returncode}"}), flush=True)
            continue
        print(lines[-1], flush=True)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Text output of the shell client: aligned tables, sizes, times, and the deploy progress
(a redrawn bar on a terminal, one plain line per step otherwise)."""

from __future__ import annotations

import json
import shutil
import sys
import time
from typing import IO, Any, Sequence

from google.protobuf import json_format


def fmt_bytes(n: float) -> str:
    if not n:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def fmt_count(n: int) -> str:
    if not n:
        return "-"
    for div, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= div:
            return f"{n / div:.1f}{unit}"
    return str(n)


def fmt_unix_ms(ms: int) -> str:
    if not ms:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(ms / 1000))


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], out: IO[str] | None = None) -> None:
    """Columns as wide as their widest cell, two spaces apart; the last column is not padded."""
    out = out or sys.stdout
    cells = [[str(c) for c in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for r in cells:
        line = "  ".join(c.ljust(w) for c, w in zip(r[:-1], widths[:-1]))
        print(f"{line}  {r[-1]}" if len(r) > 1 else r[-1], file=out)


def as_json(message: Any) -> dict:
    """A protobuf message as the dict its proto3 JSON form gives (enum names, all fields)."""
    return json_format.MessageToDict(message, always_print_fields_with_no_presence=True)


def print_json(value: Any, out: IO[str] | None = None) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False), file=out or sys.stdout)


class Progress:
    """Deploy progress on `out` (stderr): a bar redrawn in place on a TTY; otherwise one line
    per stage and per tenth of the weights, so logs stay short."""

    def __init__(self, label: str, out: IO[str] | None = None, tty: bool | None = None) -> None:
        self.label = label
        self.out = out or sys.stderr
        self.tty = self.out.isatty() if tty is None else tty
        self._last: tuple[str, int] | None = None
        self._drawn = False

    def update(self, stage: str, fraction: float, detail: str = "") -> None:
        fraction = min(max(fraction, 0.0), 1.0)
        if self.tty:
            width = shutil.get_terminal_size((80, 20)).columns
            text = f" {fraction:4.0%} {stage}{' ' + detail if detail else ''}"
            bar_w = max(10, min(40, width - len(self.label) - len(text) - 4))
            filled = int(bar_w * fraction)
            line = f"{self.label} [{'#' * filled}{'.' * (bar_w - filled)}]{text}"
            self.out.write("\r" + line[: width - 1].ljust(width - 1))
            self.out.flush()
            self._drawn = True
            return
        key = (stage, int(fraction * 10))
        if key != self._last:
            self._last = key
            print(f"{self.label}: {stage} {fraction:.0%}{' ' + detail if detail else ''}", file=self.out, flush=True)

    def end(self) -> None:
        if self.tty and self._drawn:
            self.out.write("\n")
            self.out.flush()
            self._drawn = False

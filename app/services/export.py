"""Export of the Audit view's filtered, merged records to CSV, JSONL or JSON, off the GUI thread.

Qt-free. `AuditExportJob` runs on its own thread: it pulls pages from every source (the
same fetchers the view uses), merges them newest-first, and streams rows to a temporary
file that is renamed into place when complete (a cancelled or failed export leaves no
partial file). Progress is the share of each source's sequence range already read, so it
moves steadily even when filters skip most records.
"""

from __future__ import annotations

import csv
import json
import os
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import IO, Callable, Iterable

from .audit_feed import EXPORT_FIELDS, AuditFilterSpec, AuditMerger, AuditRow, Page, PageFetcher

FORMATS = ("csv", "jsonl", "json")
COLUMNS = ("time_utc",) + EXPORT_FIELDS
PAGE = 500


class ExportCancelled(Exception):
    pass


def _utc(us: int) -> str:
    sec, frac = divmod(us, 1_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)) + f".{frac:06d}Z"


def _as_dict(row: AuditRow) -> dict:
    d = asdict(row)
    d["time_utc"] = _utc(row.time_us)
    return {k: d[k] for k in COLUMNS}


class RowWriter:
    """Streams rows in one format; `close()` finishes the document."""

    def __init__(self, f: IO[str], fmt: str) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
        self.f, self.fmt, self.count = f, fmt, 0
        if fmt == "csv":
            self._csv = csv.writer(f, lineterminator="\n")
            self._csv.writerow(COLUMNS)
        elif fmt == "json":
            f.write("[\n")

    def write(self, row: AuditRow) -> None:
        d = _as_dict(row)
        if self.fmt == "csv":
            self._csv.writerow([d[k] for k in COLUMNS])
        elif self.fmt == "jsonl":
            self.f.write(json.dumps(d, ensure_ascii=False) + "\n")
        else:
            self.f.write(("," if self.count else "") + json.dumps(d, ensure_ascii=False) + "\n")
        self.count += 1

    def close(self) -> None:
        if self.fmt == "json":
            self.f.write("]\n")


def export_rows(rows: Iterable[AuditRow], path: str | os.PathLike[str], fmt: str) -> int:
    """Writes `rows` to `path` (atomically); returns how many."""
    out = Path(path)
    tmp = out.with_name(out.name + ".partial")
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            w = RowWriter(f, fmt)
            for r in rows:
                w.write(r)
            w.close()
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return w.count


class AuditExportJob:
    """Exports everything matching `spec` from `fetchers` (source id -> PageFetcher).

    progress(fraction 0..1, rows written) and done(rows, error) are called on the job's
    thread; wrap them for Qt. `cancel()` stops it at the next page.
    """

    def __init__(self, fetchers: dict[str, PageFetcher], spec: AuditFilterSpec,
                 path: str | os.PathLike[str], fmt: str,
                 progress: Callable[[float, int], None] | None = None,
                 done: Callable[[int, str], None] | None = None, page_timeout_s: float = 120.0) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
        self.fetchers, self.spec, self.path, self.fmt = fetchers, spec, Path(path), fmt
        self.progress, self.done = progress, done
        self.page_timeout_s = page_timeout_s
        self._cancel = threading.Event()
        self._thread = threading.Thread(target=self._run, name="console-audit-export", daemon=True)
        self.errors: dict[str, str] = {}
        self._written = 0

    def start(self) -> "AuditExportJob":
        self._thread.start()
        return self

    def cancel(self) -> None:
        self._cancel.set()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def _fetch(self, source: str, cursor: int) -> Page:
        got: list[Page] = []
        ready = threading.Event()

        def back(page: Page) -> None:
            got.append(page)
            ready.set()
        self.fetchers[source].fetch(self.spec, cursor, PAGE, back)
        deadline = time.monotonic() + self.page_timeout_s
        while not ready.wait(0.1):
            if self._cancel.is_set():
                raise ExportCancelled()
            if time.monotonic() > deadline:
                return Page(source, (), True, f"no answer within {self.page_timeout_s:.0f} s")
        return got[0]

    def _rows(self) -> Iterable[AuditRow]:
        merger = AuditMerger(list(self.fetchers))
        newest: dict[str, int] = {}
        while not merger.exhausted:
            for source, cursor in merger.wanted():
                page = self._fetch(source, cursor)
                merger.add(page)
                if page.error:
                    self.errors[source] = page.error
                newest.setdefault(source, page.rows[0].seq if page.rows else (page.cursor or 1))
            rows = merger.take(PAGE)
            yield from rows
            if self.progress:
                total = sum(newest.values()) or 1
                left = sum(0 if st.done and not st.buffer else min(st.cursor or newest.get(s, 0), newest.get(s, 0))
                           for s, st in merger.state.items())
                self.progress(max(0.0, min(1.0, 1 - left / total)), self._written)
            if self._cancel.is_set():
                raise ExportCancelled()

    def _run(self) -> None:
        count, error = 0, ""
        tmp = self.path.with_name(self.path.name + ".partial")
        try:
            with open(tmp, "w", encoding="utf-8", newline="") as f:
                w = RowWriter(f, self.fmt)
                for row in self._rows():
                    w.write(row)
                    self._written = w.count
                w.close()
                count = w.count
            os.replace(tmp, self.path)
            if self.errors:
                error = "; ".join(f"{s}: {e}" for s, e in self.errors.items())
        except ExportCancelled:
            error = "cancelled"
        except OSError as exc:
            error = f"cannot write {self.path}: {exc.strerror or exc}"
        except Exception as exc:  # errors as values, never a dead thread with no word
            error = f"{type(exc).__name__}: {exc}"
        finally:
            tmp.unlink(missing_ok=True)
        if self.progress and not error:
            self.progress(1.0, count)
        if self.done:
            self.done(count, error)

"""The console's audit merge and export (Qt-free): exact newest-first merge whatever order
pages arrive in, and exports of the operator log from a real store, completed or cancelled."""

from __future__ import annotations

import json

import pytest

from musaops.app.services.audit_feed import (CONSOLE_SOURCE, AuditFilterSpec, AuditMerger, AuditRow,
                                             ConsoleLogFetcher, Page)
from musaops.app.services.export import AuditExportJob, export_rows
from musaops.app.services.store import Store, StoreWorker


def _row(source: str, seq: int, t: int) -> AuditRow:
    return AuditRow(source, source, seq, t, "a", "", "", "x", "", "{}", "ok", "", "")


def test_merger_releases_rows_only_when_every_open_source_has_spoken():
    m = AuditMerger(["a", "b"])
    assert sorted(m.wanted()) == [("a", 0), ("b", 0)] and m.wanted() == []
    m.add(Page("a", (_row("a", 5, 50), _row("a", 4, 40)), False))
    assert m.take(10) == []                       # b may still hold something newer
    m.add(Page("b", (_row("b", 9, 45),), True))
    assert [r.time_us for r in m.take(10)] == [50, 45, 40]
    assert m.wanted() == [("a", 4)] and not m.exhausted
    m.add(Page("a", (_row("a", 3, 30),), True))
    assert [r.time_us for r in m.take(10)] == [30] and m.exhausted


def test_merger_turns_a_source_error_into_an_end_for_that_source():
    m = AuditMerger(["a", "b"])
    m.wanted()
    m.add(Page("a", (), True, "PERMISSION_DENIED: role 'viewer' may not call audit.Query"))
    m.add(Page("b", (_row("b", 1, 10),), True))
    assert [r.seq for r in m.take(5)] == [1] and m.exhausted
    assert "PERMISSION_DENIED" in m.errors()["a"]


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("MUSA_CONSOLE_KEYRING", "0")
    s = Store(tmp_path / "c.sqlite3")
    for i in range(1234):
        s.log("node.Deploy" if i % 2 else "node.Undeploy", f"node-{i % 3}", json.dumps({"target": f"m{i}"}),
              "failed" if i % 10 == 0 else "ok")
    worker = StoreWorker(s)
    yield worker
    worker.close()


@pytest.mark.timeout(60)
def test_export_job_writes_the_filtered_log_and_reports_progress(store, tmp_path):
    out = tmp_path / "log.csv"
    progress, finished = [], []
    job = AuditExportJob({CONSOLE_SOURCE: ConsoleLogFetcher(store)}, AuditFilterSpec(action="node.Deploy"),
                         out, "csv", progress=lambda f, n: progress.append((f, n)),
                         done=lambda n, e: finished.append((n, e))).start()
    job.join(30)
    assert finished == [(617, "")]
    lines = out.read_text().splitlines()
    assert len(lines) == 618 and lines[0].startswith("time_utc,time_us,node")
    assert progress[-1][0] == 1.0 and all(0 <= f <= 1 for f, _ in progress)
    assert not list(tmp_path.glob("*.partial"))


@pytest.mark.timeout(60)
def test_cancelled_export_leaves_no_file(store, tmp_path):
    out = tmp_path / "never.jsonl"
    finished = []
    job = AuditExportJob({CONSOLE_SOURCE: ConsoleLogFetcher(store)}, AuditFilterSpec(), out, "jsonl",
                         progress=lambda f, n: job.cancel(), done=lambda n, e: finished.append(e))
    job.start().join(30)
    assert finished == ["cancelled"] and not out.exists() and not list(tmp_path.glob("*.partial"))


def test_export_rows_formats(tmp_path):
    rows = [_row("a", 2, 2_000_001), _row("b", 1, 1_000_000)]
    assert export_rows(rows, tmp_path / "x.json", "json") == 2
    data = json.loads((tmp_path / "x.json").read_text())
    assert [d["time_utc"] for d in data] == ["1970-01-01T00:00:02.000001Z", "1970-01-01T00:00:01.000000Z"]
    with pytest.raises(ValueError):
        export_rows(rows, tmp_path / "x.xml", "xml")
    assert not (tmp_path / "x.xml").exists()

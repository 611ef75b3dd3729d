"""Guards against the PySide6 6.12.0 refcount bug: every signal delivered to a Python slot
dropped one reference to Py_True, so a console receiving telemetry for a few minutes died
with "Fatal Python error: bool_dealloc". pyproject excludes that release; this test fails
on any PySide6 that brings the bug back."""

from __future__ import annotations

import sys

from PySide6.QtCore import QObject, Signal


class _Emitter(QObject):
    ping = Signal(str)
    bare = Signal()


def test_signal_delivery_keeps_bool_refcounts(qtbot) -> None:
    e = _Emitter()
    got = []
    e.ping.connect(lambda text: got.append(text))
    e.bare.connect(lambda: got.append(""))
    true_before, false_before = sys.getrefcount(True), sys.getrefcount(False)
    for _ in range(200):
        e.ping.emit("x")
        e.bare.emit()
    assert len(got) == 400
    # A few references may come and go elsewhere; the bug removed exactly one per delivery.
    assert sys.getrefcount(True) > true_before - 50
    assert sys.getrefcount(False) > false_before - 50

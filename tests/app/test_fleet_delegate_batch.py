"""The fleet delegate's batched sparkline path: one path for a row's devices, broken at
NaN gaps and between devices, and a row render that paints the line where data exists."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QColor, QImage, QPainter
from PySide6.QtWidgets import QStyleOptionViewItem

from musaops.app.qt.models.fleet_model import DeviceTile
from musaops.app.qt.views.fleet_delegate import BAR_COLORS, FleetDelegate, _spark_path, row_height

pytestmark = pytest.mark.timeout(60)


def _subpaths(path) -> int:
    """How many visible polylines the path holds: move-tos followed by a line-to (a lone
    move-to, where a NaN sample sits, draws nothing)."""
    n = path.elementCount()
    return sum(1 for i in range(n - 1)
               if path.elementAt(i).isMoveTo() and path.elementAt(i + 1).isLineTo())


def test_spark_path_breaks_at_gaps_and_between_devices(qapp) -> None:
    full = np.linspace(0.0, 100.0, 10)
    gappy = full.copy()
    gappy[4] = np.nan                       # splits into runs 0..3 and 5..9
    path = _spark_path([(QRectF(0, 0, 90, 10), full), (QRectF(100, 0, 90, 10), gappy)])
    # two devices, the second broken once, must never join into one line
    assert _subpaths(path) == 3
    xs = [path.elementAt(i).x for i in range(path.elementCount())]
    assert min(xs) == 0 and max(xs) == 190


def test_spark_path_skips_devices_without_history(qapp) -> None:
    assert _spark_path([(QRectF(0, 0, 50, 10), np.empty(0))]).isEmpty()
    assert _subpaths(_spark_path([(QRectF(0, 0, 50, 10), np.array([np.nan, np.nan, 5.0]))])) == 0


def test_row_render_draws_utilisation_fill_only_for_devices_with_a_value(qapp) -> None:
    tiles = tuple(DeviceTile(i, "dev", 100.0 if i == 0 else None, None, None, None, None,
                             np.empty(0)) for i in range(2))
    opt = QStyleOptionViewItem()
    opt.font = qapp.font()
    opt.palette = qapp.palette()
    width, height = 400, row_height(2, 400)
    img = QImage(width, height, QImage.Format.Format_ARGB32)
    img.fill(Qt.GlobalColor.white)
    p = QPainter(img)
    FleetDelegate()._paint_tiles(p, opt, tiles, width, height, False)
    p.end()
    blue = BAR_COLORS[0]

    def bluish(y: int) -> int:
        n = 0
        for x in range(width):
            c = QColor(img.pixel(x, y))
            if c.blue() > c.red() + 40 and c.blue() > c.green() + 20:
                n += 1
        return n
    line_h = (height - 12 - 3) // 2      # two lines of LINE_H with a GAP, PAD above/below
    assert blue.blue() > blue.red()
    assert bluish(6 + line_h // 2) > 40   # device 0 at 100 %: a filled blue bar
    assert bluish(6 + line_h + 3 + line_h // 2) == 0   # device 1 reports nothing

"""Look-and-feel contracts: themed arrow images in the style sheet, the fleet's per-device
lines, "not reported" charts on a CPU node, and the Audit view's time defaults and columns."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import QDateTime
from PySide6.QtGui import QColor, QImage, QPainter
from PySide6.QtWidgets import QStyleOptionViewItem

from musaops.app.core import NodeAddress
from musaops.app.qt import theme
from musaops.app.qt.models.audit_model import COL_ACTION
from musaops.app.qt.models.fleet_model import DeviceTile, fmt_extras, fmt_memory
from musaops.app.qt.views.audit_view import AuditView
from musaops.app.qt.views.fleet_delegate import BAR_COLORS, FleetDelegate, columns_for, row_height
from musaops.daemon.trust.caller import Caller

pytestmark = pytest.mark.timeout(120)
GIB = 1024 ** 3


@pytest.mark.parametrize("name", ["light", "dark"])
def test_style_sheet_fills_every_token_and_points_at_real_arrow_images(qapp, name) -> None:
    qss = theme.style_sheet(name)
    body = re.sub(r"/\*.*?\*/", "", qss, flags=re.S)   # comments may mention @tokens
    assert not re.findall(r"@[a-z_]+", body), "an @token was left in the style sheet"
    images = re.findall(r"url\(([^)]+)\)", qss)
    assert any("arrow-up" in i for i in images) and any("arrow-down" in i for i in images)
    for path in images:
        svg = Path(path).read_text(encoding="utf-8")
        assert "<svg" in svg and "currentColor" not in svg   # tinted for this theme
    assert theme.THEMES[name]["muted"] in Path(next(i for i in images if "arrow-down" in i)).read_text()


def _tile(i: int, util: float | None, temp: float | None = None, power: float | None = None) -> DeviceTile:
    return DeviceTile(i, f"GPU {i}", util, 25.0, temp, power, 350.0,
                      np.linspace(0, 100, 60), 8 * GIB, 32 * GIB)


def test_fleet_device_lines_are_labelled_and_rows_grow_with_devices(qapp) -> None:
    gpu = _tile(0, 50.0, temp=61.4, power=212.0)
    assert fmt_memory(gpu) == "8.0 / 32 GiB" and fmt_extras(gpu) == "61 °C · 212 W"
    cpu = DeviceTile(0, "CPU", 10.0, 40.0, None, None, None, np.empty(0))
    assert fmt_memory(cpu) == "40%" and fmt_extras(cpu) == ""
    # one line per device; a wide column flows them into columns, a narrow one stacks them
    assert row_height(8, 400) > row_height(2, 400) > row_height(1, 400)
    assert columns_for(400, 8) == 1 and columns_for(1300, 8) >= 3
    assert row_height(8, 1300) < row_height(8, 400)

    # Paint two GPUs at 50 % utilisation: the utilisation fill covers about half its bar.
    delegate = FleetDelegate()
    opt = QStyleOptionViewItem()
    opt.palette.setColor(opt.palette.ColorRole.Text, QColor("#1e293b"))
    w, h = 420, row_height(2, 420)
    img = QImage(w, h, QImage.Format.Format_ARGB32)
    img.fill(QColor("white"))
    p = QPainter(img)
    delegate._paint_tiles(p, opt, (gpu, _tile(1, 50.0, 40.0, 100.0)), w, h, False)
    p.end()
    y = h // 2 - 12   # inside the first line
    blueish = [x for x in range(w) if _near(img.pixelColor(x, y), BAR_COLORS[0])]
    assert blueish, "no utilisation fill painted"
    span = max(blueish) - min(blueish)
    assert 30 < span < 200


def _near(c: QColor, base: QColor) -> bool:
    """The fill is the bar colour at alpha 110 over the track (text colour at alpha 22 over white)."""
    text = QColor("#1e293b")
    track = [255 + (v - 255) * 22 / 255 for v in (text.red(), text.green(), text.blue())]
    want = [t + (v - t) * 110 / 255 for v, t in zip((base.red(), base.green(), base.blue()), track)]
    return all(abs(got - w) < 10 for got, w in zip((c.red(), c.green(), c.blue()), want))


def test_cpu_node_charts_say_not_reported_instead_of_empty_axes(qtbot, node_view) -> None:
    panel = node_view[3].panel
    # The test daemon runs on the CPU: no temperature or power sensor.
    qtbot.waitUntil(lambda: panel.note("temp") == "not reported" and panel.note("power") == "not reported"
                    and panel.note("mem") == "", timeout=20_000)
    for key in ("temp", "power"):
        assert panel._blank[key].isVisible()
        assert panel._blank[key].text() == "Not reported by this device"
        assert "not reported" not in panel._plots[key].titleLabel.text   # the title keeps its unit
    assert not panel._blank["mem"].isVisible()


def test_audit_until_defaults_to_now_and_action_column_fits(qtbot, qt_hub, make_daemon) -> None:
    hub, bridge = qt_hub
    d = make_daemon()
    for i in range(3):
        d.ctx.audit.record_sync("inference.Generate", "tiny", {"i": i}, "ok",
                                caller=Caller("op", "operator", "ipv4:127.0.0.1:1"))
    view = AuditView(hub, bridge)
    qtbot.addWidget(view)
    now_ms = QDateTime.currentDateTimeUtc().toMSecsSinceEpoch()
    assert abs(view.until.dateTime().toMSecsSinceEpoch() - now_ms) < 60_000, "Until must default to now"
    assert view.until.displayFormat().endswith("'UTC'")
    assert view.status.wordWrap()
    view.resize(1100, 700)
    view.show()
    hub.add_node(NodeAddress("127.0.0.1", d.port, name="n"))
    qtbot.waitUntil(lambda: view.model.rowCount() >= 3, timeout=20_000)
    need = view.table.fontMetrics().horizontalAdvance("inference.Generate")
    assert view.table.columnWidth(COL_ACTION) > need
    assert view.minimumSizeHint().width() <= 1280 - 180   # fits next to the navigation

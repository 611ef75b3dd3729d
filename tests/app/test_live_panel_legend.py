"""Node view charts: the legend sits above the plot area, never on it (a utilisation curve at
100 % used to run under it), stays within its plot, and the plot areas of one row of charts
start at the same height whatever the size of their legends."""

from __future__ import annotations

import time

import pytest

from musaops.app.core.ring import NodeHistory
from musaops.app.core.samples import DeviceSample, HostSample, ModelStatsSample, Snapshot
from musaops.app.qt.charts.live_panel import LivePanel

pytestmark = pytest.mark.timeout(60)


def _history(devices: int) -> NodeHistory:
    h = NodeHistory()
    now = int(time.time())
    h.add_many([Snapshot(
        (now - 120 + k) * 1000, host=HostSample(10.0, 1, 2),
        devices=tuple(DeviceSample(i, 47 << 30, 48 << 30, 99.5, None, 80.0, 440.0, 450.0)
                      for i in range(devices)),
        models=(ModelStatsSample("tiny-llama", running=3, ttft_p50_ms=99.0, ttft_p95_ms=99.5,
                                 ttft_p99_ms=99.9, generation_tokens_per_second=480.0),))
        for k in range(120)])
    return h


@pytest.mark.parametrize("devices", [1, 8])
def test_legends_sit_above_the_plot_areas_and_rows_line_up(qtbot, devices) -> None:
    panel = LivePanel()
    qtbot.addWidget(panel)
    panel.resize(1072, 590)          # the node view's chart area in a 1280x800 window
    panel.show()
    panel.set_history(_history(devices))
    qtbot.waitUntil(lambda: all(c.item.xData is not None and len(c.item.xData)
                                for c in panel._curves["util"]))
    panel.scene().update()
    qtbot.wait(10)                   # let the layouts settle
    keys = list(panel._plots)
    for key in keys:
        plot = panel._plots[key]
        legend = plot.legend
        assert legend.items, key
        area = plot.vb.sceneBoundingRect()
        box = legend.sceneBoundingRect()
        assert box.bottom() <= area.top() + 0.5, key          # above, not on, the data
        assert box.right() <= plot.sceneBoundingRect().right() + 0.5, key   # within its plot
    assert panel._plots["util"].legend.columnCount == min(devices, 4)
    for start in range(0, len(keys), 4):
        tops = {round(panel._plots[k].vb.sceneBoundingRect().top()) for k in keys[start:start + 4]}
        assert len(tops) == 1, (keys[start:start + 4], tops)

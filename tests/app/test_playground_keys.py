"""Playground keyboard use: Ctrl+Enter sends from the message box (no daemon needed: with
no node connected the view says so instead of sending)."""

from __future__ import annotations

from PySide6.QtCore import Qt

from musaops.app.qt.bridge import HubBridge
from musaops.app.qt.views.playground_view import PlaygroundView
from musaops.app.services.node_hub import NodeHub


def test_ctrl_enter_sends_and_plain_enter_types_a_newline(qtbot) -> None:
    bridge = HubBridge()
    hub = NodeHub(bridge)
    hub.start()
    try:
        view = PlaygroundView(hub, bridge)
        qtbot.addWidget(view)
        view.show()
        view.input.setPlainText("hi")
        view.input.moveCursor(view.input.textCursor().MoveOperation.End)
        qtbot.keyClick(view.input, Qt.Key.Key_Return)
        assert view.input.toPlainText() == "hi\n" and not view.banner.isVisibleTo(view)
        qtbot.keyClick(view.input, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
        assert view.banner.isVisibleTo(view) and "Connect a node first" in view.banner.text()
        assert view.input.toPlainText() == "hi\n"  # kept: nothing was sent
    finally:
        hub.stop()

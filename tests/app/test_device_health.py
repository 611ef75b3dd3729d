"""Device health end to end: a real `musad serve` on the stub MTML library (two boards), the
console's hub, fleet view and node view offscreen. An uncorrected ECC error appears while the
console watches (the stub reads MTML_STUB_ECC_FILE on every call): the fleet row marks the
device, an alert is raised, the node view says why, and Deploy on it is refused with
FAILED_PRECONDITION unless forced; the deploy dialog names it, keeps Deploy disabled, and
offers "Deploy anyway", which sets force."""

from __future__ import annotations

import pathlib
import sys

import grpc
import pytest

from musaops.app.core import ConnectionState, NodeAddress, NodeStatus
from musaops.app.core.samples import NOT_REPORTED
from musaops.app.qt.fleet_state import FleetState
from musaops.app.qt.models.fleet_model import COL_DEVICES, DEVICES_ROLE, tooltip
from musaops.app.qt.views.fleet_view import FleetView
from musaops.app.qt.views.node_view import NodeView
from musaops.daemon.demo_model import DEMO_MODEL_NAME
from musaops.v1 import node_pb2, node_pb2_grpc

STUBS = pathlib.Path(__file__).resolve().parents[1] / "stubs"
sys.path.insert(0, str(STUBS))
from vendor_stubs import StubMusad, build_stub  # noqa: E402

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def stub_daemon(tmp_path, demo_model_dir):
    folder = build_stub("mtml", tmp_path / "lib")
    if folder is None:
        pytest.skip("gcc is not installed: cannot build the stub libmtml.so")
    ecc = tmp_path / "ecc"
    ecc.write_text("")
    daemon = StubMusad(folder, tmp_path, models=demo_model_dir.parent,
                       MTML_STUB_DEVICES="2", MTML_STUB_ECC_FILE=str(ecc))
    yield daemon, ecc
    daemon.stop()


def _deploy(address: str, force: bool) -> tuple[grpc.StatusCode | None, str]:
    with grpc.insecure_channel(address) as ch:
        try:
            last = None
            for last in node_pb2_grpc.NodeStub(ch).Deploy(node_pb2.DeployRequest(
                    model=DEMO_MODEL_NAME, device_indices=[1], force=force), timeout=60):
                pass
            return None, last.message if last is not None else ""
        except grpc.RpcError as exc:
            return exc.code(), exc.details()


def test_an_ecc_error_marks_the_row_raises_an_alert_and_blocks_deploy(qtbot, qt_hub, stub_daemon) -> None:
    daemon, ecc = stub_daemon
    hub, bridge = qt_hub
    state = FleetState(bridge)
    fleet, node = FleetView(state), NodeView(state)
    for view in (fleet, node):
        qtbot.addWidget(view)
        view.resize(1200, 600)
        view.show()
    address = NodeAddress("127.0.0.1", daemon.port, name="stub")
    nid = hub.new_id("node")
    state.ensure(NodeStatus(nid, address, ConnectionState.CONNECTING))
    hub.add_node(address, nid)
    node.show_node(nid)
    model = fleet.model

    def tiles():
        row = model.row_of(nid)
        return model.index(row, COL_DEVICES).data(DEVICES_ROLE) if row is not None and row >= 0 else None

    try:
        qtbot.waitUntil(lambda: bool(tiles()) and tiles()[1].util is not None, timeout=30_000)
        assert all(t.health_reason is None for t in tiles()) and not state.alerts.alerts
        # MTML has no power limit: the node view says so instead of showing a number.
        qtbot.waitUntil(lambda: "Power limit" in node.device_health.toolTip(), timeout=10_000)
        assert NOT_REPORTED in node.device_health.toolTip()
        assert "none unhealthy" in node.device_health.text()

        ecc.write_text("1 3\n")   # board 1 now reports three uncorrected ECC errors
        qtbot.waitUntil(lambda: tiles()[1].health_reason is not None, timeout=30_000)
        assert tiles()[0].health_reason is None
        assert "3 uncorrected ECC errors" in tiles()[1].health_reason
        assert "#1 is unhealthy" in tooltip(tiles())
        qtbot.waitUntil(lambda: any(a.kind == "unhealthy" for a in state.alerts.alerts), timeout=10_000)
        alert = next(a for a in state.alerts.alerts if a.kind == "unhealthy")
        assert alert.severity == "critical" and "GPU 1 is unhealthy" in alert.message
        qtbot.waitUntil(lambda: "Device #1 is unhealthy" in node.device_health.text(), timeout=10_000)
    finally:
        fleet.stop()
        node.stop()
        state.stop()

    code, details = _deploy(daemon.address, force=False)
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert details.startswith("Device 1 is unhealthy (3 uncorrected ECC errors") and "force" in details
    # Forced, the health check lets it through (loading then fails for want of torch_musa,
    # which is not the health check speaking).
    code, details = _deploy(daemon.address, force=True)
    assert "unhealthy" not in (details or "")

    ecc.write_text("")        # the errors are gone (driver reloaded): no longer refused
    code, details = _deploy(daemon.address, force=False)
    assert "unhealthy" not in (details or "")


def test_the_deploy_dialog_refuses_an_unhealthy_device_unless_forced(qtbot, models_console, stub_daemon) -> None:
    """The console's side of the rule: the dialog names the unhealthy device and keeps
    Deploy disabled; "Deploy anyway" sets force, and the daemon then takes the deploy."""
    daemon, ecc = stub_daemon
    hub, bridge, view = models_console
    nid = hub.add_node(NodeAddress("127.0.0.1", daemon.port, name="stub"))
    qtbot.waitUntil(lambda: view.directory.online(nid) and bool(view.directory.models(nid)), timeout=30_000)

    def sick() -> bool:
        snap = view.directory.latest.get(nid)
        return snap is not None and any(d.index == 1 and d.unhealthy for d in snap.devices)

    # Healthy devices: no force check box, and nothing said about health.
    qtbot.waitUntil(lambda: view.directory.latest.get(nid) is not None, timeout=30_000)
    dialog = view.open_deploy_dialog()
    dialog.device_checks[1].setChecked(True)
    assert dialog.force_check.isHidden() and not dialog.spec().force
    assert "unhealthy" not in dialog.device_checks[1].text()
    dialog.reject()

    ecc.write_text("1 3\n")   # board 1 now reports three uncorrected ECC errors
    qtbot.waitUntil(sick, timeout=30_000)
    view.select_model(DEMO_MODEL_NAME)
    dialog = view.open_deploy_dialog()
    assert "unhealthy" not in dialog.device_checks[0].text() and dialog.force_check.isHidden()
    dialog.device_checks[1].setChecked(True)   # the built-in engine: device 0 unchecks
    assert dialog.spec().device_indices == (1,)
    assert "unhealthy: 3 uncorrected ECC errors" in dialog.device_checks[1].text()
    assert dialog.force_check.isVisible() and not dialog.force_check.isChecked()
    assert not dialog.deploy_button.isEnabled()
    assert "device 1 is unhealthy: 3 uncorrected ECC errors" in dialog.summary.text()

    dialog.force_check.setChecked(True)
    assert dialog.spec().force and dialog.deploy_button.isEnabled(), dialog.summary.text()
    events = []
    bridge.deploy_event.connect(events.append)
    dialog.accept()
    assert len(view.rows) == 1
    row = next(iter(view.rows.values()))
    qtbot.waitUntil(lambda: row.done, timeout=60_000)
    # The health check let it through: the daemon went past validating (loading then
    # fails on the stub for want of torch_musa, which is not the health check speaking).
    assert events and events[0].stage == "validating" and "musa[1]" in events[0].message, events
    assert all("unhealthy" not in e.message for e in events), [e.message for e in events]
    assert "unhealthy" not in row.detail.text()

    # Back on a healthy device, the check box goes and takes force with it.
    dialog = view.open_deploy_dialog()
    dialog.device_checks[1].setChecked(True)
    dialog.force_check.setChecked(True)
    dialog.device_checks[0].setChecked(True)
    assert dialog.force_check.isHidden() and not dialog.spec().force
    dialog.reject()

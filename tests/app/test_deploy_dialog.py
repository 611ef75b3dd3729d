"""The deploy dialog's memory check and the specs it submits (one node and several)."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt

from musaops.app.core import (DeviceInfo, DeviceSample, DeploySpec, EngineLimits, MemoryEstimate,
                              ModelEntry, NodeInfo, Snapshot)
from musaops.app.qt.views.deploy_dialog import DeployDialog, NodeChoice, check_memory
from musaops.daemon.dtype_policy import auto_dtype_table

GiB = 2**30


def _entry(state: str = "available") -> ModelEntry:
    return ModelEntry(
        "llama-8b", state=state, torch_dtype="bfloat16", max_position_embeddings=8192,
        memory_estimates=(
            MemoryEstimate("bfloat16", weights_bytes=16 * GiB, kv_bytes_per_token=128 * 1024,
                           total_bytes=17 * GiB),
            MemoryEstimate("float32", weights_bytes=32 * GiB, kv_bytes_per_token=256 * 1024,
                           total_bytes=34 * GiB),
        ),
    )


def _node(node_id: str, used_gib: float, *, devices: int = 2, backend: str = "MUSA",
          state: str = "available", online: bool = True, telemetry: bool = True,
          capability: str = "", reports_auto: bool = True) -> NodeChoice:
    info = NodeInfo(
        hostname=node_id, backend=backend,
        devices=tuple(DeviceInfo(i, "MTT S4000", backend=backend, memory_total_bytes=48 * GiB,
                                 capability=capability)
                      for i in range(devices)),
        limits=EngineLimits(default_kv_cache_fraction=0.5, default_max_batch=32),
        auto_dtype=tuple(auto_dtype_table(backend.lower(), capability).items()) if reports_auto else ())
    snap = Snapshot(1, devices=tuple(DeviceSample(i, memory_used_bytes=int(used_gib * GiB),
                                                  memory_total_bytes=48 * GiB) for i in range(devices)))
    return NodeChoice(node_id, node_id, online, info, snap if telemetry else None, (_entry(state),))


def test_memory_check_compares_estimate_with_free_memory() -> None:
    spec = DeploySpec("llama-8b", dtype="bfloat16", device_indices=(0,))
    # 16 GiB weights + 128 KiB x 8192 tokens = 17 GiB needed.
    ok = check_memory(_node("a", used_gib=10), spec)
    assert ok.fits and ok.needed_bytes == 17 * GiB and ok.free_bytes == 38 * GiB
    tight = check_memory(_node("b", used_gib=40), spec)
    assert not tight.fits and "only 8.0 GiB free" in tight.sentence
    # fp32 needs 34 GiB: one device's 28 GiB free does not hold it; the built-in engine
    # takes no second device (vLLM's rule: tests/app/test_deploy_engines.py).
    fp32 = DeploySpec("llama-8b", dtype="float32", device_indices=(0,))
    assert not check_memory(_node("c", used_gib=20), fp32).fits
    two = check_memory(_node("c", used_gib=20), DeploySpec("llama-8b", dtype="float32", device_indices=(0, 1)))
    assert not two.fits and "runs on one device" in two.sentence


def test_auto_dtype_is_what_the_node_reports() -> None:
    """The dialog has no copy of the rule: it checks "auto" at the dtype the node's GetInfo
    says (here the daemon's own table), and at float32 when a node does not say."""
    spec = DeploySpec("llama-8b", device_indices=(0,))
    assert check_memory(_node("g", used_gib=0), spec).dtype == "bfloat16"
    assert check_memory(_node("c", used_gib=0, backend="CPU"), spec).dtype == "float32"
    assert check_memory(_node("c", used_gib=0, backend="CPU", capability="avx2 fma"), spec).dtype == "float32"
    for capability in ("avx2 fma avx512f", "avx2 fma avx512f avx512_bf16"):
        native = _node("c", used_gib=0, backend="CPU", capability=capability)
        assert check_memory(native, spec).dtype == "bfloat16"
    assert check_memory(_node("old", used_gib=0, reports_auto=False), spec).dtype == "float32"
    assert check_memory(_node("old", used_gib=0, reports_auto=False),
                        DeploySpec("llama-8b", dtype="bfloat16", device_indices=(0,))).dtype == "bfloat16"


async def test_getinfo_reports_auto_dtype_and_the_memory_check_uses_it(make_daemon) -> None:
    """A real daemon's GetInfo answers for every checkpoint dtype by the rule Deploy applies,
    and the dialog's memory check on that NodeInfo picks the same dtype's estimate."""
    from musaops.app.services.convert import node_info
    from musaops.daemon.devices.cpu import engine_isa
    from musaops.daemon.dtype_policy import CHECKPOINT_DTYPES, auto_dtype
    from musaops.v1 import node_pb2, node_pb2_grpc

    d = make_daemon()
    async with d.channel() as ch:
        reply = await node_pb2_grpc.NodeStub(ch).GetInfo(node_pb2.GetInfoRequest())
    assert dict(reply.auto_dtype) == {ck: auto_dtype("cpu", ck, engine_isa()) for ck in CHECKPOINT_DTYPES}
    info = node_info(reply)
    node = NodeChoice("n", "n", True, info, None, (_entry(),))
    verdict = check_memory(node, DeploySpec("llama-8b", device_indices=(0,)))
    assert verdict.dtype == reply.auto_dtype["bfloat16"]
    want = next(e for e in _entry().memory_estimates if e.dtype == verdict.dtype)
    assert verdict.needed_bytes == want.weights_bytes + want.kv_bytes_per_token * 8192


@pytest.mark.parametrize(
    "node, spec, words",
    [
        (_node("x", 0, online=False), DeploySpec("llama-8b"), "not online"),
        (_node("x", 0, state="failed"), DeploySpec("other"), "not in this node's repository"),
        (_node("x", 0), DeploySpec("other"), "not in this node's repository"),
        (_node("x", 0), DeploySpec("llama-8b", device_indices=(5,)), "no device 5"),
        (_node("x", 0), DeploySpec("llama-8b", max_context=100_000), "exceeds the model's 8192"),
    ],
)
def test_memory_check_refuses_with_a_sentence(node, spec, words) -> None:
    verdict = check_memory(node, spec)
    assert not verdict.fits and words in verdict.sentence


def test_small_kv_fraction_warns_but_allows() -> None:
    verdict = check_memory(_node("a", used_gib=30), DeploySpec("llama-8b", dtype="bfloat16",
                                                              device_indices=(0,), kv_cache_fraction=0.05))
    assert verdict.fits and "KV cache at 0.05" in verdict.warning


def test_without_telemetry_the_total_memory_is_used_and_said() -> None:
    verdict = check_memory(_node("a", used_gib=0, telemetry=False), DeploySpec("llama-8b", device_indices=(0,)))
    assert verdict.fits and "no telemetry yet" in verdict.sentence


def test_dialog_blocks_submit_until_every_checked_node_fits(qtbot) -> None:
    nodes = [_node("gpu-a", used_gib=10), _node("gpu-b", used_gib=40)]
    dialog = DeployDialog(nodes, node_id="gpu-a", model="llama-8b")
    qtbot.addWidget(dialog)
    dialog.dtype_box.setCurrentText("bfloat16")
    assert dialog.deploy_button.isEnabled()
    assert [n for n, _ in dialog.specs()] == ["gpu-a"]
    # Check the second node too: it lacks memory on device 0, so Deploy is disabled.
    dialog.nodes_tree.topLevelItem(1).setCheckState(0, Qt.CheckState.Checked)
    assert not dialog.deploy_button.isEnabled()
    assert "gpu-b" in dialog.summary.text() and "only 8.0 GiB" in dialog.summary.text()
    # Move to device 1 on both... still full on gpu-b (both devices are equally used).
    dialog.device_checks[0].setChecked(False)
    dialog.device_checks[1].setChecked(True)
    assert not dialog.deploy_button.isEnabled()
    dialog.nodes_tree.topLevelItem(1).setCheckState(0, Qt.CheckState.Unchecked)
    assert dialog.deploy_button.isEnabled()
    dialog.batch_spin.setValue(16)
    dialog.context_spin.setValue(4096)
    dialog.kv_spin.setValue(0.3)
    [(node_id, spec)] = dialog.specs()
    assert node_id == "gpu-a"
    assert spec == DeploySpec("llama-8b", dtype="bfloat16", device_indices=(1,), max_batch=16,
                              max_context=4096, kv_cache_fraction=0.3)


def test_dialog_with_no_devices_chosen_cannot_submit(qtbot) -> None:
    dialog = DeployDialog([_node("a", used_gib=0)], model="llama-8b")
    qtbot.addWidget(dialog)
    for box in dialog.device_checks:
        box.setChecked(False)
    assert not dialog.deploy_button.isEnabled() and "device" in dialog.summary.text()


def test_device_row_is_rebuilt_cleanly_when_nodes_change(qtbot) -> None:
    dialog = DeployDialog([_node("a", used_gib=0), _node("b", used_gib=0, devices=4)], node_id="a",
                          model="llama-8b")
    qtbot.addWidget(dialog)
    assert len(dialog.device_checks) == 2 and "MTT S4000" in dialog.device_checks[0].text()
    dialog.nodes_tree.topLevelItem(1).setCheckState(0, Qt.CheckState.Checked)
    assert len(dialog.device_checks) == 4 and dialog.device_checks[0].text() == "Device 0 on each node"
    dialog.nodes_tree.topLevelItem(1).setCheckState(0, Qt.CheckState.Unchecked)
    # Only the boxes of the node now checked, however often the grid is rebuilt.
    assert dialog._devices_layout.count() == len(dialog.device_checks) == 2


def test_an_already_deployed_model_is_said_so_not_a_failed_memory_check(qtbot) -> None:
    verdict = check_memory(_node("x", 0, state="ready"), DeploySpec("llama-8b"))
    assert verdict.deployed and verdict.sentence == "already deployed on this node"
    dialog = DeployDialog([_node("gpu-a", 0, state="ready"), _node("gpu-b", used_gib=10)],
                          node_id="gpu-a", model="llama-8b")
    qtbot.addWidget(dialog)
    item = dialog.nodes_tree.topLevelItem(0)
    assert item.text(2) == "already deployed on this node"   # no ✗, not red
    assert item.foreground(2).color() != Qt.GlobalColor.red
    assert "Cannot deploy" not in dialog.summary.text()
    assert dialog.summary.text() == "llama-8b is already deployed on gpu-a."
    assert not dialog.deploy_button.isEnabled()   # nothing to do there
    dialog.nodes_tree.topLevelItem(1).setCheckState(0, Qt.CheckState.Checked)
    assert "uncheck it" in dialog.summary.text() and not dialog.deploy_button.isEnabled()
    item.setCheckState(0, Qt.CheckState.Unchecked)
    assert dialog.deploy_button.isEnabled() and [n for n, _ in dialog.specs()] == ["gpu-b"]

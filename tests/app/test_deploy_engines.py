"""The deploy dialog's engine choice (issue 14): the engines a node reports, one device for
the built-in engine, tensor parallel ranks for vLLM, the typed options, vLLM's memory rule,
and the requests it builds, checked against real daemons (port 0, offscreen Qt)."""

from __future__ import annotations

import pathlib
import sys

import grpc
import pytest
from PySide6.QtCore import Qt

from musaops.app.core import (DeviceInfo, DeviceSample, DeploySpec, EngineAvailability, EngineLimits,
                              EngineOptions, MemoryEstimate, ModelEntry, NodeInfo, Snapshot)
from musaops.app.core.engine_options import GPU_MEMORY_UTILIZATION_MAX, MAX_NUM_BATCHED_TOKENS, QUANTIZATIONS
from musaops.app.qt.views.deploy_dialog import DeployDialog, NodeChoice, check_memory
from musaops.app.services import convert
from musaops.v1 import node_pb2, node_pb2_grpc
from views_daemon import ThreadDaemon

GiB = 2**30
REPO = pathlib.Path(__file__).resolve().parents[2]
VLLM_PYTHON = REPO / ".venv-vllm" / "bin" / "python"
BOTH = (EngineAvailability("builtin"), EngineAvailability("vllm", "0.32.0", (("vllm_musa", "0.28.0"),)))


def _entry() -> ModelEntry:
    return ModelEntry("llama-8b", torch_dtype="bfloat16", max_position_embeddings=8192,
                      memory_estimates=(MemoryEstimate("bfloat16", weights_bytes=16 * GiB,
                                                       kv_bytes_per_token=128 * 1024, total_bytes=17 * GiB),))


def _node(node_id: str = "gpu", used_gib: float = 0, *, devices: int = 4, backend: str = "MUSA",
          engines=BOTH, cpus: int = 16) -> NodeChoice:
    info = NodeInfo(hostname=node_id, backend=backend, host_cpu_count=cpus, engines=engines,
                    devices=tuple(DeviceInfo(i, "MTT S4000", backend=backend, memory_total_bytes=48 * GiB)
                                  for i in range(devices)),
                    limits=EngineLimits(default_kv_cache_fraction=0.5, default_max_batch=32))
    snap = Snapshot(1, devices=tuple(DeviceSample(i, memory_used_bytes=int(used_gib * GiB),
                                                  memory_total_bytes=48 * GiB) for i in range(devices)))
    return NodeChoice(node_id, node_id, True, info, snap, (_entry(),))


def _vllm(devices=(0,), **options) -> DeploySpec:
    return DeploySpec("llama-8b", dtype="bfloat16", device_indices=devices, engine="vllm",
                      tensor_parallel_size=len(devices), engine_options=EngineOptions(**options))


def test_vllm_memory_rule_reserves_a_share_of_each_device() -> None:
    # 17 GiB needed; vLLM takes 0.9 x 48 GiB = 43.2 GiB of each device, which must be free.
    ok = check_memory(_node(used_gib=4), _vllm())
    assert ok.fits and "vLLM takes" in ok.sentence and ok.free_bytes == int(0.9 * 48 * GiB)
    # 10 GiB used leaves 38 GiB: the built-in engine fits, vLLM's 0.9 does not, 0.75 does.
    assert check_memory(_node(used_gib=10), DeploySpec("llama-8b", dtype="bfloat16", device_indices=(0,))).fits
    busy = check_memory(_node(used_gib=10), _vllm())
    assert not busy.fits and "vLLM takes 0.90 of device 0" in busy.sentence
    assert check_memory(_node(used_gib=10), _vllm(gpu_memory_utilization=0.75)).fits
    # 0.3 of one device (14.4 GiB) cannot hold 17 GiB; 0.3 of two (28.8 GiB) can.
    small = check_memory(_node(), _vllm(gpu_memory_utilization=0.3))
    assert not small.fits and "vLLM's 0.30 of 1 device is 14.4 GiB" in small.sentence
    assert check_memory(_node(), _vllm((0, 1), gpu_memory_utilization=0.3)).fits


def test_engine_availability_and_options_are_checked_per_node() -> None:
    builtin_only = _node(engines=(EngineAvailability("builtin"),))
    assert "engine vllm is not installed" in check_memory(builtin_only, _vllm()).sentence
    old_daemon = _node(engines=())   # says nothing: built-in only
    assert not check_memory(old_daemon, _vllm()).fits and check_memory(
        old_daemon, DeploySpec("llama-8b", dtype="bfloat16", device_indices=(0,))).fits
    cpu = _node(backend="CPU", devices=1)
    assert "applies to GPU nodes" in check_memory(cpu, _vllm(gpu_memory_utilization=0.5)).sentence
    assert "quantization 'zip'" in check_memory(_node(), _vllm(quantization="zip")).sentence


def test_dialog_offers_only_the_engines_every_checked_node_reports(qtbot) -> None:
    nodes = [_node("a"), _node("b", engines=(EngineAvailability("builtin"),))]
    dialog = DeployDialog(nodes, node_id="a", model="llama-8b")
    qtbot.addWidget(dialog)
    assert [dialog.engine_box.itemData(i) for i in range(dialog.engine_box.count())] == ["builtin", "vllm"]
    assert "0.32.0" in dialog.engine_box.itemText(1) and "vllm_musa 0.28.0" in dialog.engine_box.itemText(1)
    dialog.engine_box.setCurrentIndex(1)
    dialog.nodes_tree.topLevelItem(1).setCheckState(0, Qt.CheckState.Checked)   # b has no vLLM
    assert [dialog.engine_box.itemData(i) for i in range(dialog.engine_box.count())] == ["builtin"]
    assert dialog.spec().engine == "" and not dialog.options_box.isVisibleTo(dialog)


def test_dialog_builtin_takes_one_device_vllm_several_as_ranks(qtbot) -> None:
    dialog = DeployDialog([_node("a")], model="llama-8b")
    qtbot.addWidget(dialog)
    dialog.dtype_box.setCurrentText("bfloat16")
    dialog.device_checks[1].setChecked(True)   # built-in: checking another device moves the choice
    assert [b.isChecked() for b in dialog.device_checks] == [False, True, False, False]
    assert not dialog.tp_spin.isEnabled() and not dialog.options_box.isVisibleTo(dialog)
    dialog.engine_box.setCurrentIndex(dialog.engine_box.findData("vllm"))
    assert dialog.options_box.isVisibleTo(dialog) and dialog.gpu_util_spin.isEnabled()
    dialog.device_checks[2].setChecked(True)
    assert dialog.tp_spin.value() == 2 and not dialog.tp_spin.isEnabled()
    dialog.batched_spin.setValue(4096)
    dialog.prefix_box.setCurrentIndex(dialog.prefix_box.findData(False))
    dialog.quant_box.setCurrentIndex(dialog.quant_box.findData("fp8"))
    dialog.gpu_util_spin.setValue(0.8)
    assert dialog.deploy_button.isEnabled(), dialog.summary.text()
    [(_, spec)] = dialog.specs()
    assert spec.engine == "vllm" and spec.device_indices == (1, 2) and spec.tensor_parallel_size == 2
    assert spec.engine_options == EngineOptions(4096, False, "fp8", 0.8)
    request = convert.deploy_request(spec)
    assert (request.engine, request.tensor_parallel_size, list(request.device_indices)) == ("vllm", 2, [1, 2])
    o = request.engine_options
    assert (o.max_num_batched_tokens, o.HasField("enable_prefix_caching"), o.enable_prefix_caching,
            o.quantization, round(o.gpu_memory_utilization, 2)) == (4096, True, False, "fp8", 0.8)
    # back to the built-in engine: one device, no options on the wire
    dialog.engine_box.setCurrentIndex(dialog.engine_box.findData("builtin"))
    assert [b.isChecked() for b in dialog.device_checks] == [False, True, False, False]
    request = convert.deploy_request(dialog.spec())
    assert request.engine == "" and request.tensor_parallel_size == 0
    assert not request.HasField("engine_options") or request.engine_options == node_pb2.EngineOptions()


def test_dialog_on_a_cpu_node_picks_ranks_not_devices(qtbot) -> None:
    dialog = DeployDialog([_node("cpu", backend="CPU", devices=1, cpus=2)], model="llama-8b")
    qtbot.addWidget(dialog)
    dialog.engine_box.setCurrentIndex(dialog.engine_box.findData("vllm"))
    assert dialog.tp_spin.isEnabled() and dialog.tp_spin.maximum() == 2 and not dialog.gpu_util_spin.isEnabled()
    dialog.tp_spin.setValue(2)
    spec = dialog.spec()
    assert spec.tensor_parallel_size == 2 and spec.device_indices == (0,)
    assert spec.engine_options.gpu_memory_utilization == 0.0


@pytest.fixture(scope="module")
def plain_daemon(tmp_path_factory, demo_model_dir):
    """A real musad whose engines.vllm.python has no vllm package (this test interpreter)."""
    d = ThreadDaemon(demo_model_dir.parent, tmp_path_factory.mktemp("engines"),
                     **{"engines.vllm.python": sys.executable}).start()
    yield d
    d.stop()


def _get_info(address: str) -> node_pb2.GetInfoResponse:
    with grpc.insecure_channel(address) as ch:
        return node_pb2_grpc.NodeStub(ch).GetInfo(node_pb2.GetInfoRequest(), timeout=60)


def _refusal(address: str, request: node_pb2.DeployRequest) -> tuple[grpc.StatusCode, str]:
    with grpc.insecure_channel(address) as ch:
        try:
            for _ in node_pb2_grpc.NodeStub(ch).Deploy(request, timeout=60):
                pass
        except grpc.RpcError as e:
            return e.code(), e.details()
    raise AssertionError("Deploy was accepted")


def test_real_daemon_without_vllm_offers_builtin_and_refuses_vllm(qtbot, plain_daemon, demo_model_dir) -> None:
    info = convert.node_info(_get_info(plain_daemon.address))
    assert info.engine_names() == ("builtin",)
    with grpc.insecure_channel(plain_daemon.address) as ch:
        models = node_pb2_grpc.NodeStub(ch).ListModels(node_pb2.ListModelsRequest(), timeout=60)
    entries = tuple(convert.model_entry(m) for m in models.models)
    dialog = DeployDialog([NodeChoice("n", "n", True, info, None, entries)], model=demo_model_dir.name)
    qtbot.addWidget(dialog)
    assert dialog.engine_box.count() == 1 and dialog.spec().engine == ""
    # a request naming vllm anyway (another console, a script): the daemon's sentence
    spec = DeploySpec(demo_model_dir.name, device_indices=(0,), engine="vllm")
    code, details = _refusal(plain_daemon.address, convert.deploy_request(spec))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "is not installed on this node" in details


def _bounds() -> list[tuple[str, EngineOptions]]:
    """Values on both sides of every bound of the console's table."""
    g = GPU_MEMORY_UTILIZATION_MAX
    return [("max_num_batched_tokens", EngineOptions(max_num_batched_tokens=MAX_NUM_BATCHED_TOKENS)),
            ("max_num_batched_tokens", EngineOptions(max_num_batched_tokens=MAX_NUM_BATCHED_TOKENS + 1)),
            ("gpu_memory_utilization", EngineOptions(gpu_memory_utilization=g)),
            ("gpu_memory_utilization", EngineOptions(gpu_memory_utilization=round(g + 0.01, 2))),
            ("gpu_memory_utilization", EngineOptions(gpu_memory_utilization=-0.1)),
            ("quantization", EngineOptions(quantization="int3")),
            *[("quantization", EngineOptions(quantization=q)) for q in QUANTIZATIONS]]


def test_console_option_ranges_match_the_daemons_answers(plain_daemon, demo_model_dir) -> None:
    """The console's table against a real daemon's refusals: a value the console accepts is
    refused only for something else (vllm missing, or gpu_memory_utilization on this CPU
    node), a value it refuses is refused by the daemon naming that option as out of range."""
    for option, o in _bounds():
        spec = DeploySpec(demo_model_dir.name, device_indices=(0,), engine="vllm", engine_options=o)
        code, details = _refusal(plain_daemon.address, convert.deploy_request(spec))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        console_refuses = bool(o.problem(cpu_node=False))
        daemon_refuses = option in details and ("outside" in details or "is not one" in details)
        assert console_refuses == daemon_refuses, (option, o, details)


@pytest.mark.skipif(not VLLM_PYTHON.exists(), reason="needs .venv-vllm (`make vllm-env`)")
def test_real_daemon_with_vllm_lists_it_with_its_version(tmp_path, demo_model_dir, qtbot) -> None:
    d = ThreadDaemon(demo_model_dir.parent, tmp_path / "state", **{"engines.vllm.python": str(VLLM_PYTHON)}).start()
    try:
        info = convert.node_info(_get_info(d.address))
    finally:
        d.stop()
    vllm = next(e for e in info.engines if e.name == "vllm")
    assert vllm.version.startswith("0.") and info.engine_names()[0] == "builtin"
    dialog = DeployDialog([NodeChoice("n", "n", True, info, None, (_entry(),))], model="llama-8b")
    qtbot.addWidget(dialog)
    assert dialog.engine_box.findData("vllm") >= 0 and vllm.version in dialog.engine_box.itemText(1)

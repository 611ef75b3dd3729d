"""What "auto" deploys as, and the CPU capability string the rule (and the console) reads."""

from __future__ import annotations

from musaops.daemon.dtype_policy import auto_dtype
from musaops.daemon.devices.cpu import CpuAccelerator, cpu_flags, engine_isa


def test_auto_dtype_rule() -> None:
    assert auto_dtype("cpu", "bfloat16", "avx2 fma avx512f avx512_bf16") == "bfloat16"
    assert auto_dtype("cpu", "float16", "amx_bf16") == "bfloat16"
    assert auto_dtype("cpu", "bfloat16", "avx2 fma avx512f") == "bfloat16"   # widened in registers
    assert auto_dtype("cpu", "bfloat16", "avx2 fma") == "float32"       # bf16 would be emulated by torch
    assert auto_dtype("cpu", "float32", "avx512_bf16") == "float32"     # never below the checkpoint
    assert auto_dtype("cpu", "", "avx512_bf16") == "float32"
    assert auto_dtype("musa", "float16", "") == "float16"
    assert auto_dtype("cuda", "float32", "9.0") == "bfloat16"


def test_cpu_device_reports_the_isa_the_engine_uses(tmp_path) -> None:
    assert CpuAccelerator().info()[0].capability == engine_isa(cpu_flags())
    fake = tmp_path / "cpuinfo"
    fake.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma avx512f avx512_bf16 avx512bw\n\n"
                    "processor\t: 1\nflags\t\t: fpu sse2 avx2 fma avx512f avx512_bf16 avx512bw\n")
    assert engine_isa(cpu_flags(str(fake))) == "avx2 fma avx512f avx512_bf16"
    assert cpu_flags(str(tmp_path / "missing")) == set()


async def test_auto_deploys_a_bf16_checkpoint_by_the_rule(make_daemon, tmp_path, demo_model_dir) -> None:
    """A real daemon on this CPU: a bf16 copy of the demo model deploys as the rule says
    (bfloat16 where the CPU has native bf16, as on the CI machines; float32 elsewhere), and
    the fp32 demo model stays float32."""
    import json
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    from musaops.daemon.demo_model import DEMO_MODEL_NAME
    from musaops.v1 import node_pb2, node_pb2_grpc

    repo = tmp_path / "repo"
    shutil.copytree(demo_model_dir, repo / DEMO_MODEL_NAME)
    half = repo / "demo-bf16"
    shutil.copytree(demo_model_dir, half)
    for f in half.glob("*.safetensors"):
        save_file({k: v.to(torch.bfloat16) for k, v in load_file(f).items()}, f)
    cfg = json.loads((half / "config.json").read_text())
    (half / "config.json").write_text(json.dumps({**cfg, "torch_dtype": "bfloat16"}))
    want = auto_dtype("cpu", "bfloat16", engine_isa())
    d = make_daemon(models_dir=repo)
    async with d.channel() as ch:
        stub = node_pb2_grpc.NodeStub(ch)
        for model, dtype in (("demo-bf16", want), (DEMO_MODEL_NAME, "float32")):
            events = [e async for e in stub.Deploy(node_pb2.DeployRequest(
                model=model, max_batch=2, max_context=128, kv_cache_fraction=0.02))]
            assert events[-1].stage == node_pb2.DEPLOY_STAGE_READY, events[-1]
            assert events[-1].model.deployment.dtype == dtype

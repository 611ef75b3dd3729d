"""`make run` / `make run-daemon`: a daemon with a model deployed, optionally the console.

    python -m musaops.daemon.devrun --demo-dir DIR --state-dir DIR --listen HOST:PORT \
        [--metrics-listen HOST:PORT] [--device auto] [--console] [--random-model]

Fetches SmolLM2-135M-Instruct (starter_model.py: once, digest checked, cached outside git)
and links it into --demo-dir; when that is impossible (offline, or --random-model) it
deploys the random-weights demo model instead and says loudly that its answers are noise.
Writes the demo model into --demo-dir if it is missing, creates an admin token in
--state-dir (reused on later runs), starts `musad serve` as a child process, waits until
its health service says SERVING, deploys the demo model through Node.Deploy, and then
either waits (Ctrl-C stops the daemon cleanly) or, with --console, starts
`musa-console --connect HOST:PORT` and stops the daemon when the console exits.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import signal
import subprocess
import sys
import time

import grpc

from . import starter_model
from .demo_model import DEMO_MODEL_NAME, RANDOM_WEIGHTS_NOTICE, write_demo_model

TOKEN_FILE = "devrun-admin.token"


def _log(msg: str) -> None:
    print(f"devrun: {msg}", file=sys.stderr, flush=True)


def ensure_demo_model(demo_dir: pathlib.Path) -> pathlib.Path:
    model = demo_dir / DEMO_MODEL_NAME
    if not (model / "config.json").is_file():
        _log(f"writing the demo model to {model}")
        write_demo_model(model)
    return model


def write_engine_config(state_dir: pathlib.Path, vllm_python: pathlib.Path) -> pathlib.Path:
    """A config file naming the interpreter that runs vLLM children (engines.vllm.python)."""
    if not vllm_python.is_file():
        raise SystemExit(f"devrun: --vllm-python {vllm_python} does not exist; run `make vllm-env` first")
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / "devrun.toml"
    path.write_text(f"[engines.vllm]\npython = {json.dumps(str(vllm_python.absolute()))}\n")
    return path


def ensure_token(state_dir: pathlib.Path) -> pathlib.Path | None:
    """An admin token for this dev daemon, created once with `musad token create`."""
    path = state_dir / TOKEN_FILE
    if path.is_file() and path.read_text().strip():
        return path
    state_dir.mkdir(parents=True, exist_ok=True)
    out = subprocess.run(
        [sys.executable, "-m", "musaops.daemon.cli", "token", "create", "--name", f"devrun-{int(time.time())}",
         "--role", "admin", "--out", str(path), "--state-dir", str(state_dir)],
        capture_output=True, text=True)
    if out.returncode != 0:
        _log(f"no token created ({out.stderr.strip() or 'token command unavailable'}); continuing without one")
        return None
    return path


def wait_healthy(address: str, proc: subprocess.Popen, timeout_s: float = 120.0) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(address) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"devrun: musad exited with code {proc.returncode} before it was healthy")
            try:
                if stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    raise SystemExit(f"devrun: musad at {address} was not healthy after {timeout_s:.0f} s")


def ensure_starter_model(demo_dir: pathlib.Path) -> str | None:
    """The starter model's name in the repository (linked to the cache), or None with the
    reason logged when it cannot be fetched."""
    path, why = starter_model.fetch(log=_log)
    if path is None:
        _log(f"the real model could not be fetched: {why}")
        return None
    link = demo_dir / starter_model.FILE_NAME
    demo_dir.mkdir(parents=True, exist_ok=True)
    if not (link.is_symlink() and link.resolve() == path.resolve()):
        link.unlink(missing_ok=True)
        link.symlink_to(path)
    return link.name


def deploy_demo(address: str, token: str | None, model: str = DEMO_MODEL_NAME,
                max_batch: int = 0, max_context: int = 0) -> None:
    from musaops.v1 import node_pb2, node_pb2_grpc

    metadata = (("authorization", f"Bearer {token}"),) if token else None
    with grpc.insecure_channel(address) as ch:
        stub = node_pb2_grpc.NodeStub(ch)
        models = {m.name: m for m in stub.ListModels(node_pb2.ListModelsRequest(), metadata=metadata).models}
        if models.get(model) and models[model].deployment.ready_unix_ms:
            return
        req = node_pb2.DeployRequest(model=model, max_batch=max_batch, max_context=max_context)
        for p in stub.Deploy(req, metadata=metadata):
            stage = node_pb2.DeployStage.Name(p.stage).removeprefix("DEPLOY_STAGE_").lower()
            _log(f"deploy {model}: {stage} {p.fraction:.0%} {p.message}")
            if p.stage == node_pb2.DEPLOY_STAGE_FAILED:
                raise SystemExit(f"devrun: deploying {model} failed: {p.message}")


def stop(proc: subprocess.Popen, timeout_s: float = 40.0) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def _interrupt(*_args) -> None:
    raise KeyboardInterrupt


def _stop_with_parent() -> None:
    """In the daemon child before exec: SIGTERM it (a graceful drain) when devrun dies, even
    by SIGKILL, so a killed `make run` leaves no musad serving behind it (Linux only)."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)   # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m musaops.daemon.devrun", description=__doc__.splitlines()[0])
    ap.add_argument("--demo-dir", required=True, type=pathlib.Path, help="models folder for the demo model")
    ap.add_argument("--state-dir", required=True, type=pathlib.Path, help="daemon state folder (SQLite, token)")
    ap.add_argument("--listen", default="127.0.0.1:50051",
                    help="gRPC HOST:PORT; a fixed port, since the console is pointed at it")
    ap.add_argument("--metrics-listen", default="127.0.0.1:9400", help='Prometheus HOST:PORT ("" disables)')
    ap.add_argument("--http-listen", default="127.0.0.1:8000", help='OpenAI-compatible HTTP ("" disables)')
    ap.add_argument("--device", default="auto", choices=("auto", "musa", "cuda", "cpu"))
    ap.add_argument("--console", action="store_true", help="also start musa-console connected to the daemon")
    ap.add_argument("--vllm-python", type=pathlib.Path, default=None,
                    help="interpreter with vLLM installed (e.g. .venv-vllm/bin/python from `make vllm-env`): "
                         "the node then offers the vllm engine")
    ap.add_argument("--random-model", action="store_true",
                    help="deploy the random-weights demo model instead of fetching SmolLM2")
    args = ap.parse_args(argv)
    if args.listen.rpartition(":")[2] == "0":
        ap.error(f"--listen {args.listen}: give a fixed port (devrun deploys and points the console "
                 "at this address, so it cannot be picked at random)")

    ensure_demo_model(args.demo_dir)
    model = None if args.random_model else ensure_starter_model(args.demo_dir)
    if model is None:
        _log("=" * 72)
        _log(f"DEPLOYING {DEMO_MODEL_NAME}: {RANDOM_WEIGHTS_NOTICE}")
        _log("=" * 72)
    token_file = ensure_token(args.state_dir)
    token = token_file.read_text().strip() if token_file else None
    cmd = [sys.executable, "-m", "musaops.daemon.cli", "serve", "--listen", args.listen,
           "--metrics-listen", args.metrics_listen, "--http-listen", args.http_listen, "--models", str(args.demo_dir),
           "--state-dir", str(args.state_dir), "--device", args.device]
    if args.vllm_python is not None:
        cmd += ["--config", str(write_engine_config(args.state_dir, args.vllm_python))]
    # The daemon ignores the terminal's Ctrl-C (own process group); we stop it with SIGTERM.
    console_rc = 0
    daemon = subprocess.Popen(cmd, start_new_session=True, preexec_fn=_stop_with_parent)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        wait_healthy(args.listen, daemon)
        if model:
            deploy_demo(args.listen, token, model, starter_model.DEPLOY_MAX_BATCH, starter_model.DEPLOY_MAX_CONTEXT)
        else:
            deploy_demo(args.listen, token)
        _log(f"musad is serving {model or DEMO_MODEL_NAME} on {args.listen}"
             + (f" (metrics on {args.metrics_listen})" if args.metrics_listen else "")
             + (f"; admin token in {token_file}" if token_file else ""))
        if args.console:
            console = [sys.executable, "-m", "musaops.app.cli", "--connect", args.listen]
            if token_file:
                console += ["--token-file", str(token_file)]
            console_rc = subprocess.call(console)
            _log(f"console exited ({console_rc}); stopping musad")
        else:
            _log("press Ctrl-C to stop")
            daemon.wait()
    except KeyboardInterrupt:
        _log("stopping musad")
    finally:
        signal.signal(signal.SIGTERM, previous)
        rc = stop(daemon)
    if console_rc:   # the console could not start (its sentence is above): make run fails
        return console_rc
    return 0 if rc in (0, None) else rc


if __name__ == "__main__":
    sys.exit(main())

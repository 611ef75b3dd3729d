"""`musad status | models | deploy | undeploy | generate | chat`: work with a local or remote
musad from the shell (registered from cli.py with `register(sub)`).

Every command takes the connection options of client/connection.py; `status` and `models`
print tables or `--json`; `deploy` shows its progress (a bar on a terminal); `generate` and
`chat` stream the text to stdout. Exit codes: 0 ok, 1 the node refused or failed (one
sentence on stderr), 2 bad usage (an unreadable token or certificate file, a bad address),
130 interrupted (a running generate or deploy stream is cancelled first).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .client.commands import add_common_args, fail as _fail, follow_progress
from .client.connection import ClientError

DTYPES = ("auto", "bfloat16", "float16", "float32")
ENGINES = ("builtin", "vllm")


def _stage(progress: Any) -> str:
    from musaops.v1 import node_pb2

    return node_pb2.DeployStage.Name(progress.stage).removeprefix("DEPLOY_STAGE_").lower().replace("_", " ")


def _state(model: Any) -> str:
    from musaops.v1 import common_pb2

    return common_pb2.ModelState.Name(model.state).removeprefix("MODEL_STATE_").lower()


# -- registration --------------------------------------------------------------------------

def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="show a node: host, versions, devices, limits",
                       description="GetInfo of a musad: host, versions, backend, devices, engine limits.")
    add_common_args(p, cmd_status)

    p = sub.add_parser("models", help="list the node's models and their deployments",
                       description="The node's model repository with each model's state and deployment.")
    add_common_args(p, cmd_models)

    p = sub.add_parser("deploy", help="load a model and wait until it serves",
                       description="Deploy MODEL and follow its progress; exit 0 once READY, 1 if it FAILED.")
    p.add_argument("model", metavar="MODEL", help="model name, as `musad models` lists it")
    p.add_argument("--device", type=int, action="append", default=[], metavar="N",
                   help="device index to load on (repeat for several; default: the first device)")
    p.add_argument("--dtype", choices=DTYPES, default="auto",
                   help="weight dtype (default auto: the node's choice for the checkpoint, see `musad status`)")
    p.add_argument("--engine", choices=ENGINES, default="builtin",
                   help="builtin (musad's own engine, default) or vllm (a supervised vLLM child)")
    p.add_argument("--max-batch", type=int, default=0, metavar="N",
                   help="running sequences at most (default: the node's engine.default_max_batch)")
    p.add_argument("--max-context", type=int, default=0, metavar="TOKENS",
                   help="tokens per sequence (default: the checkpoint's context length)")
    p.add_argument("--kv-cache-fraction", type=float, default=0.0, metavar="F",
                   help="share of free device memory for the KV cache, (0, 0.95] (default: the node's)")
    p.add_argument("--tensor-parallel-size", type=int, default=0, metavar="N",
                   help="vllm: ranks (default: one per --device)")
    p.add_argument("--max-restarts", type=int, default=None, metavar="N",
                   help="vllm: restarts after a crash, 0..10, then it stays FAILED "
                        "(default: the node's engines.vllm.restarts)")
    p.add_argument("--force", action="store_true", help="deploy even on a device reported unhealthy")
    add_common_args(p, cmd_deploy, json_help="print the resulting model as JSON")

    p = sub.add_parser("undeploy", help="free a deployed model",
                       description="Undeploy MODEL: in-flight requests drain (or, with --cancel, are cancelled).")
    p.add_argument("model", metavar="MODEL", help="a deployed model's name, as `musad models` lists it")
    p.add_argument("--cancel", action="store_true", help="cancel in-flight requests instead of letting them finish")
    p.add_argument("--drain-timeout", type=float, default=30.0, metavar="SECONDS",
                   help="cancel what is still running after this long (default 30)")
    add_common_args(p, cmd_undeploy)

    p = sub.add_parser("generate", help="send one prompt and stream the answer",
                       description="Generate text from a raw PROMPT (or stdin with -) on a deployed MODEL.")
    p.add_argument("model", metavar="MODEL", help="a deployed model's name, as `musad models` lists it")
    p.add_argument("prompt", metavar="PROMPT", help='prompt text; "-" reads it from stdin')
    _add_sampling_args(p)
    add_common_args(p, cmd_generate,
                    json_help="print one JSON object (text, finish reason, usage, timings) instead of streaming")

    p = sub.add_parser("chat", help="chat with a deployed model (one line per turn)",
                       description="Chat with MODEL, rendered with its chat template: each stdin line is a "
                                   "user turn; an empty input, /exit or end of input stops.")
    p.add_argument("model", metavar="MODEL", help="a deployed model's name, as `musad models` lists it")
    p.add_argument("--system", metavar="TEXT", default="", help="system message that starts the conversation")
    _add_sampling_args(p)
    add_common_args(p, cmd_chat, json_help=None)

    from . import client_models   # import | pull | delete (the model repository)
    client_models.register(sub)


def _add_sampling_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("sampling (omitted: the node's defaults)")
    g.add_argument("--max-tokens", type=int, default=0, metavar="N", help="new tokens at most (default 256)")
    g.add_argument("--temperature", type=float, metavar="T", help="0 = greedy (default 1.0)")
    g.add_argument("--top-p", type=float, metavar="P", help="nucleus sampling, (0, 1] (default 1.0)")
    g.add_argument("--top-k", type=int, metavar="K", help="0 = off (default)")
    g.add_argument("--repetition-penalty", type=float, metavar="R", help="1.0 = off (default)")
    g.add_argument("--seed", type=int, metavar="N", help="same seed, same output")
    g.add_argument("--stop", action="append", default=[], metavar="TEXT", help="stop string (repeat for more)")
    g.add_argument("--stats", action="store_true", help="print tokens, time to first token and speed on stderr")


def _sampling(args: argparse.Namespace) -> Any:
    from musaops.v1 import inference_pb2

    if args.max_tokens < 0:
        raise ClientError("--max-tokens must be 0 (the node's default) or more.", 2)
    s = inference_pb2.SamplingParams(max_tokens=args.max_tokens, stop=args.stop)
    for name in ("temperature", "top_p", "top_k", "repetition_penalty", "seed"):
        value = getattr(args, name)
        if value is not None:
            setattr(s, name, value)
    return s


# -- status and models ---------------------------------------------------------------------

def cmd_status(args: argparse.Namespace, client: Any) -> int:
    from musaops.v1 import common_pb2, node_pb2, node_pb2_grpc

    from .client.render import as_json, fmt_bytes, fmt_unix_ms, print_json, table

    info = client.unary(node_pb2_grpc.NodeStub(client.channel).GetInfo, node_pb2.GetInfoRequest())
    if args.json:
        print_json(as_json(info))
        return 0
    backend = common_pb2.Backend.Name(info.backend).removeprefix("BACKEND_")
    print(f"node      {info.hostname} at {client.target.address}")
    print(f"musad     {info.version} (API {info.api_version}), Python {info.python_version}, "
          f"torch {info.torch_version or 'absent'}")
    print(f"backend   {backend}; host {info.host_cpu_count} CPUs, {fmt_bytes(info.host_memory_total_bytes)} RAM")
    print(f"started   {fmt_unix_ms(info.started_unix_ms)}")
    print(f"security  TLS {'on' if info.tls else 'off'}, tokens {'required' if info.auth_required else 'optional'}")
    lim = info.limits
    print(f"limits    {lim.max_models} models, queue {lim.max_queue}, max_tokens {lim.max_tokens}, "
          f"batch {lim.default_max_batch}, KV {lim.default_kv_cache_fraction:g} of free memory")
    if info.engines:
        print("engines   " + ", ".join(f"{e.name} {e.version}".strip() for e in info.engines))
    if info.auto_dtype:
        print("auto dtype " + ", ".join(f"{k or 'other'}->{v}" for k, v in sorted(info.auto_dtype.items())))
    print()
    table(["DEVICE", "NAME", "BACKEND", "MEMORY", "CAPABILITY", "DRIVER"],
          [[d.index, d.name, common_pb2.Backend.Name(d.backend).removeprefix("BACKEND_"),
            fmt_bytes(d.memory_total_bytes), d.capability or "-", d.driver_version or "-"] for d in info.devices])
    return 0


def cmd_models(args: argparse.Namespace, client: Any) -> int:
    from musaops.v1 import node_pb2, node_pb2_grpc

    from .client.render import as_json, fmt_bytes, fmt_count, print_json, table

    res = client.unary(node_pb2_grpc.NodeStub(client.channel).ListModels, node_pb2.ListModelsRequest())
    if args.json:
        print_json(as_json(res))
        return 0
    rows = []
    for m in res.models:
        d = m.deployment
        deployed = m.HasField("deployment")
        rows.append([m.name, _state(m), m.architecture or "-", fmt_count(m.parameters), fmt_bytes(m.size_bytes),
                     d.dtype if deployed else (m.torch_dtype or "-"),
                     ",".join(map(str, d.device_indices)) if deployed and d.device_indices else "-",
                     (d.engine or "builtin") if deployed else "-",
                     m.reason or m.notice or ""])
    if rows:
        table(["MODEL", "STATE", "ARCHITECTURE", "PARAMS", "SIZE", "DTYPE", "DEVICES", "ENGINE", "NOTE"], rows)
    else:
        print(f"no models in {res.repository or 'the repository'}")
    print(f"repository {res.repository}, {fmt_bytes(res.free_bytes)} free", file=sys.stderr)
    return 0


# -- deploy and undeploy -------------------------------------------------------------------

def cmd_deploy(args: argparse.Namespace, client: Any) -> int:
    from musaops.v1 import node_pb2, node_pb2_grpc

    from .client.render import Progress, as_json, fmt_bytes, print_json

    if any(i < 0 for i in args.device):
        return _fail("--device takes a device index (0, 1, ...), as `musad status` lists them.", 2)
    if args.max_restarts is not None and args.max_restarts < 0:
        return _fail("--max-restarts takes a count, 0 or more (0: stay FAILED after a crash).", 2)
    req = node_pb2.DeployRequest(model=args.model, dtype="" if args.dtype == "auto" else args.dtype,
                                 device_indices=args.device, max_batch=args.max_batch,
                                 max_context=args.max_context, kv_cache_fraction=args.kv_cache_fraction,
                                 force=args.force, engine=args.engine,
                                 tensor_parallel_size=args.tensor_parallel_size, max_restarts=args.max_restarts)
    progress = Progress(args.model)
    ends = (node_pb2.DEPLOY_STAGE_READY, node_pb2.DEPLOY_STAGE_FAILED)

    def show(p: Any) -> bool:
        if p.stage in ends:
            return True
        detail = (f"{fmt_bytes(p.done_bytes)} / {fmt_bytes(p.total_bytes)}"
                  if p.stage == node_pb2.DEPLOY_STAGE_LOADING_WEIGHTS and p.total_bytes else p.message)
        progress.update(_stage(p), p.fraction, detail)
        return False

    last = follow_progress(client.stream(node_pb2_grpc.NodeStub(client.channel).Deploy, req), client,
                           progress, show, "the deploy was cancelled.")
    if last is None or last.stage not in ends:
        progress.end()
        return _fail(f"the deploy of {args.model} ended without a result; see `musad models`.", 1)
    if last.stage == node_pb2.DEPLOY_STAGE_FAILED:
        progress.end()
        return _fail(f"deploying {args.model} failed: {last.message or 'no reason given'}", 1)
    progress.update("ready", 1.0)
    progress.end()
    if args.json:
        print_json(as_json(last.model))
        return 0
    d = last.model.deployment
    print(f"{args.model} is ready on device {','.join(map(str, d.device_indices)) or '0'} as {d.dtype} "
          f"({d.engine or 'builtin'}; weights {fmt_bytes(d.weights_bytes)}, KV cache {fmt_bytes(d.kv_cache_bytes)}) "
          f"in {last.elapsed_seconds:.1f} s")
    return 0


def cmd_undeploy(args: argparse.Namespace, client: Any) -> int:
    from musaops.v1 import node_pb2, node_pb2_grpc

    from .client.render import as_json, fmt_bytes, print_json

    if args.drain_timeout <= 0:
        return _fail("--drain-timeout must be greater than 0 seconds.", 2)
    mode = node_pb2.UNDEPLOY_MODE_CANCEL if args.cancel else node_pb2.UNDEPLOY_MODE_DRAIN
    req = node_pb2.UndeployRequest(model=args.model, mode=mode, drain_timeout_ms=int(args.drain_timeout * 1000))
    res = client.unary(node_pb2_grpc.NodeStub(client.channel).Undeploy, req,
                       timeout=max(client.target.timeout, args.drain_timeout + client.target.timeout))
    if args.json:
        print_json(as_json(res))
        return 0
    print(f"{args.model} undeployed: {fmt_bytes(res.freed_bytes)} freed, {res.drained_requests} requests "
          f"finished, {res.cancelled_requests} cancelled")
    return 0


# -- generate and chat ---------------------------------------------------------------------

def _stream_generate(client: Any, req: Any, out: Any, *, echo: bool) -> Any:
    """Runs one Generate; writes text deltas to `out` when `echo`; returns (text, result)."""
    import grpc

    from musaops.v1 import inference_pb2_grpc

    call = client.stream(inference_pb2_grpc.InferenceStub(client.channel).Generate, req)
    parts: list[str] = []
    result = None
    try:
        for msg in call:
            kind = msg.WhichOneof("kind")
            if kind == "text":
                parts.append(msg.text)
                if echo:
                    out.write(msg.text)
                    out.flush()
            elif kind == "result":
                result = msg.result
    except grpc.RpcError as exc:
        if echo and parts:
            out.write("\n")
        raise client.error(exc) from None
    except KeyboardInterrupt:
        call.cancel()
        if echo and parts:
            out.write("\n")
        raise
    if result is None:
        raise ClientError("the stream ended without a result; the node may have stopped.")
    return "".join(parts), result


def _check_result(result: Any) -> None:
    from musaops.v1 import inference_pb2

    if result.finish_reason == inference_pb2.FINISH_REASON_ERROR:
        raise ClientError(f"the model failed this request: {result.error or 'no reason given'}")
    if result.finish_reason == inference_pb2.FINISH_REASON_CANCELLED:
        raise ClientError("the node cancelled this request (the model was undeployed or the node is stopping).")


def _print_stats(result: Any) -> None:
    t, u = result.timings, result.usage
    speed = u.completion_tokens / (t.total_ms - t.ttft_ms) * 1000 if t.total_ms > t.ttft_ms else 0.0
    print(f"[{u.prompt_tokens} prompt + {u.completion_tokens} new tokens; first token {t.ttft_ms:.0f} ms; "
          f"{speed:.1f} tok/s; total {t.total_ms:.0f} ms]", file=sys.stderr)


def _after_answer(text: str, result: Any, stats: bool, *, streamed: bool = True) -> None:
    """After an answer: ends the streamed text's line, prints the stats when asked, and
    raises ClientError when the model failed or the node cancelled the request."""
    if streamed:
        if not text.endswith("\n"):
            sys.stdout.write("\n")
        sys.stdout.flush()
    if stats:
        _print_stats(result)
    _check_result(result)


def cmd_generate(args: argparse.Namespace, client: Any) -> int:
    from musaops.v1 import inference_pb2

    from .client.render import as_json, print_json

    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    if not prompt:
        return _fail("the prompt is empty.", 2)
    req = inference_pb2.GenerateRequest(model=args.model, prompt=prompt, sampling=_sampling(args))
    try:
        text, result = _stream_generate(client, req, sys.stdout, echo=not args.json)
    except KeyboardInterrupt:
        print("musad: interrupted; the request was cancelled.", file=sys.stderr)
        return 130
    if args.json:
        print_json({"text": text, **as_json(result)})
    _after_answer(text, result, args.stats, streamed=not args.json)
    return 0


def cmd_chat(args: argparse.Namespace, client: Any) -> int:
    from musaops.v1 import inference_pb2

    tty = sys.stdin.isatty()
    messages = [inference_pb2.ChatMessage(role="system", content=args.system)] if args.system else []
    sampling = _sampling(args)
    if tty:
        print(f"chat with {args.model} at {client.target.address}; an empty line or /exit ends it",
              file=sys.stderr)
    while True:
        if tty:
            print("> ", end="", file=sys.stderr, flush=True)
        try:
            line = sys.stdin.readline()
        except KeyboardInterrupt:
            print(file=sys.stderr)
            return 0
        if not line:           # end of input
            return 0
        line = line.rstrip("\n")
        if not line.strip() or line.strip() in ("/exit", "/quit"):
            return 0
        messages.append(inference_pb2.ChatMessage(role="user", content=line))
        req = inference_pb2.GenerateRequest(model=args.model, messages=messages, sampling=sampling)
        try:
            text, result = _stream_generate(client, req, sys.stdout, echo=True)
        except KeyboardInterrupt:
            print("\nmusad: interrupted; the request was cancelled.", file=sys.stderr)
            return 130
        _after_answer(text, result, args.stats)
        messages.append(inference_pb2.ChatMessage(role="assistant", content=text))

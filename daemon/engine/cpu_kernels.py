"""A bf16-weight linear kernel for x86 CPUs with AVX2 + FMA, where cpu_forward does not run.

On such CPUs torch's bf16 matmul falls back to slow scalar conversion code (several times
slower than fp32 even for a memory-bound GEMV). This kernel reads the weights as bf16 (half
the bytes of fp32), widens them in registers and accumulates in fp32, so a decode step is
bound by memory bandwidth again. It is plain C compiled once with the system compiler
(about a second) into the user's cache and called through ctypes; it shares torch's OpenMP
runtime (same libgomp soname). When anything is missing (no compiler, not x86, AVX2 absent)
the engine keeps using torch's own kernels.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import subprocess
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

import torch

from ..devices.cpu import cpu_flags

log = logging.getLogger(__name__)

_SOURCE = r"""
#include <immintrin.h>
#include <stdint.h>
#include <stdlib.h>

static inline __m256 ld_bf16(const uint16_t *p) {
    __m128i h = _mm_loadu_si128((const __m128i *)p);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
static inline float bf16f(uint16_t v) {
    union { uint32_t u; float f; } c; c.u = (uint32_t)v << 16; return c.f;
}
static inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* out[M,N] = x[M,K] @ w[N,K]^T (+ bias[N]); x, bias, out fp32; w bf16 (row-major). */
void bf16_linear(const float *x, const uint16_t *w, const float *bias, float *out,
                 int64_t M, int64_t N, int64_t K, int nthreads) {
    const int64_t K8 = K & ~7LL;
    /* M == 1: split x into even and odd elements once. A 32-bit lane of the weights holds
       two bf16 values: the odd one is the lane with its low half cleared, the even one the
       lane shifted left by 16, so widening costs one AND and one shift per 16 weights. */
    const int64_t K16 = K & ~15LL;
    float *xe = NULL, *xo = NULL;
    if (M == 1) {
        xe = (float *)aligned_alloc(32, (K16 / 2 + 8) * sizeof(float));
        xo = (float *)aligned_alloc(32, (K16 / 2 + 8) * sizeof(float));
        for (int64_t k = 0; k < K16 / 2; k++) { xe[k] = x[2 * k]; xo[k] = x[2 * k + 1]; }
    }
    #pragma omp parallel num_threads(nthreads)
    {
        float *wf = (M > 1) ? (float *)aligned_alloc(32, ((4 * K + 7) / 8) * 8 * sizeof(float)) : NULL;
        const __m256i hi_mask = _mm256_set1_epi32((int)0xFFFF0000u);
        #pragma omp for schedule(static)
        for (int64_t n0 = 0; n0 < N; n0 += 4) {
            const int64_t nb = (N - n0) < 4 ? (N - n0) : 4;
            if (M == 1) {
                /* one row at a time: the weights are read as one sequential stream */
                for (int64_t j = 0; j < nb; j++) {
                    const uint16_t *wr = w + (n0 + j) * K;
                    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
                    int64_t k = 0;
                    for (; k + 32 <= K16; k += 32) {
                        __m256i p = _mm256_loadu_si256((const __m256i *)(wr + k));
                        __m256i q = _mm256_loadu_si256((const __m256i *)(wr + k + 16));
                        a0 = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_slli_epi32(p, 16)), _mm256_load_ps(xe + k / 2), a0);
                        a1 = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_and_si256(p, hi_mask)), _mm256_load_ps(xo + k / 2), a1);
                        a2 = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_slli_epi32(q, 16)), _mm256_load_ps(xe + k / 2 + 8), a2);
                        a3 = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_and_si256(q, hi_mask)), _mm256_load_ps(xo + k / 2 + 8), a3);
                    }
                    for (; k < K16; k += 16) {
                        __m256i p = _mm256_loadu_si256((const __m256i *)(wr + k));
                        a0 = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_slli_epi32(p, 16)), _mm256_load_ps(xe + k / 2), a0);
                        a1 = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_and_si256(p, hi_mask)), _mm256_load_ps(xo + k / 2), a1);
                    }
                    float r = hsum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
                    for (k = K16; k < K; k++) r += bf16f(wr[k]) * x[k];
                    out[n0 + j] = r + (bias ? bias[n0 + j] : 0.f);
                }
                continue;
            }
            /* M > 1: widen up to four rows once into an L1-resident buffer, reuse them for every x row. */
            for (int64_t j = 0; j < 4; j++) {
                if (j >= nb) { for (int64_t k = 0; k < K; k++) wf[j * K + k] = 0.f; continue; }
                const uint16_t *wr = w + (n0 + j) * K;
                int64_t k = 0;
                for (; k < K8; k += 8) _mm256_storeu_ps(wf + j * K + k, ld_bf16(wr + k));
                for (; k < K; k++) wf[j * K + k] = bf16f(wr[k]);
            }
            int64_t m = 0;
            for (; m + 2 <= M; m += 2) {
                const float *x0 = x + m * K, *x1 = x0 + K;
                __m256 c00 = _mm256_setzero_ps(), c01 = c00, c02 = c00, c03 = c00;
                __m256 c10 = c00, c11 = c00, c12 = c00, c13 = c00;
                for (int64_t k = 0; k < K8; k += 8) {
                    __m256 xa = _mm256_loadu_ps(x0 + k), xb = _mm256_loadu_ps(x1 + k);
                    __m256 v0 = _mm256_loadu_ps(wf + k), v1 = _mm256_loadu_ps(wf + K + k);
                    __m256 v2 = _mm256_loadu_ps(wf + 2 * K + k), v3 = _mm256_loadu_ps(wf + 3 * K + k);
                    c00 = _mm256_fmadd_ps(v0, xa, c00); c10 = _mm256_fmadd_ps(v0, xb, c10);
                    c01 = _mm256_fmadd_ps(v1, xa, c01); c11 = _mm256_fmadd_ps(v1, xb, c11);
                    c02 = _mm256_fmadd_ps(v2, xa, c02); c12 = _mm256_fmadd_ps(v2, xb, c12);
                    c03 = _mm256_fmadd_ps(v3, xa, c03); c13 = _mm256_fmadd_ps(v3, xb, c13);
                }
                float r0[4] = {hsum(c00), hsum(c01), hsum(c02), hsum(c03)};
                float r1[4] = {hsum(c10), hsum(c11), hsum(c12), hsum(c13)};
                for (int64_t k = K8; k < K; k++)
                    for (int j = 0; j < 4; j++) { r0[j] += wf[j * K + k] * x0[k]; r1[j] += wf[j * K + k] * x1[k]; }
                for (int64_t j = 0; j < nb; j++) {
                    float b = bias ? bias[n0 + j] : 0.f;
                    out[m * N + n0 + j] = r0[j] + b;
                    out[(m + 1) * N + n0 + j] = r1[j] + b;
                }
            }
            for (; m < M; m++) {
                const float *x0 = x + m * K;
                for (int64_t j = 0; j < nb; j++) {
                    __m256 a = _mm256_setzero_ps();
                    for (int64_t k = 0; k < K8; k += 8)
                        a = _mm256_fmadd_ps(_mm256_loadu_ps(wf + j * K + k), _mm256_loadu_ps(x0 + k), a);
                    float s = hsum(a);
                    for (int64_t k = K8; k < K; k++) s += wf[j * K + k] * x0[k];
                    out[m * N + n0 + j] = s + (bias ? bias[n0 + j] : 0.f);
                }
            }
        }
        free(wf);
    }
    free(xe);
    free(xo);
}
"""

# Up to this many rows the kernel runs over row tiles of ROW_TILE (a tile of x stays in L2
# while the bf16 weights stream past). Longer inputs (prefill) widen the weights 1024 rows
# at a time and use torch's fp32 GEMM: at that size MKL's blocking wins and widening is a
# small cost next to the multiply.
ROW_TILE = 64
GEMM_ROWS = 256
WIDEN_CHUNK = 1024

def wanted() -> bool:
    """Use the kernel for bf16 on this CPU? (MUSAOPS_CPU_BF16_KERNEL=0/1 overrides.)"""
    env = os.environ.get("MUSAOPS_CPU_BF16_KERNEL")
    if env is not None:
        return env == "1"
    if platform.machine() not in ("x86_64", "AMD64"):
        return False
    flags = cpu_flags()
    native_bf16 = "avx512_bf16" in flags or "amx_bf16" in flags
    return {"avx2", "fma"} <= flags and not native_bf16


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "musad" / "kernels"


def compile_library(name: str, source: str, flags: list[str]) -> ctypes.CDLL:
    """Compile C `source` with the system compiler into the user's cache (once per source
    digest) and load it. Raises OSError or subprocess.SubprocessError when that fails."""
    digest = hashlib.sha256((source + " ".join(flags)).encode()).hexdigest()[:16]
    out = _cache_dir() / f"{name}_{digest}.so"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / f"{name}.c"
            src.write_text(source)
            tmp_out = Path(tmp) / f"{name}.so"
            cc = os.environ.get("CC", "cc")
            subprocess.run([cc, "-O3", *flags, "-shared", "-fPIC", str(src), "-o", str(tmp_out)],
                           check=True, capture_output=True, timeout=120)
            os.replace(tmp_out, out)  # atomic: concurrent builders do not clash
    return ctypes.CDLL(str(out))


class NativeLibrary:
    """A C library built and loaded once per process, on first use. `get()` returns it, or
    None (with one warning in the log) when it cannot be built here; `declare` sets the
    ctypes signatures."""

    def __init__(self, name: str, source: Callable[[], str], flags: list[str],
                 declare: Callable[[ctypes.CDLL], None], fallback: str) -> None:
        self.name, self.source, self.flags = name, source, flags
        self.declare, self.fallback = declare, fallback
        self._lock = threading.Lock()
        self._tried = False
        self.lib: ctypes.CDLL | None = None

    def get(self) -> ctypes.CDLL | None:
        with self._lock:
            if not self._tried:
                self._tried = True
                try:
                    lib = compile_library(self.name, self.source(), self.flags)
                    self.declare(lib)
                    self.lib = lib
                except (OSError, subprocess.SubprocessError) as exc:
                    detail = (getattr(exc, "stderr", b"") or b"").decode(errors="replace")[:500]
                    log.warning("%s unavailable, %s: %s %s", self.name, self.fallback, exc, detail)
            return self.lib


def _declare(lib: ctypes.CDLL) -> None:
    lib.bf16_linear.restype = None
    lib.bf16_linear.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                                ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_int]


_library = NativeLibrary("bf16_linear", lambda: _SOURCE, ["-mavx2", "-mfma", "-fopenmp"], _declare,
                         "using torch kernels")


def load() -> ctypes.CDLL | None:
    """The compiled kernel library, building it on first use; None when it cannot be built."""
    return _library.get()


def bf16_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """fp32 x [..., K] times bf16 weight [N, K]^T -> fp32 [..., N]."""
    lib = _library.lib
    k = x.shape[-1]
    x2 = x.reshape(-1, k)
    m, n = x2.shape[0], weight.shape[0]
    if lib is None:
        return torch.nn.functional.linear(x, weight.float(), None if bias is None else bias.float())
    x2 = x2.contiguous()
    out = torch.empty(m, n, dtype=torch.float32)
    b = None if bias is None else bias.float().contiguous()
    if m >= GEMM_ROWS:
        for i in range(0, n, WIDEN_CHUNK):
            torch.mm(x2, weight[i:i + WIDEN_CHUNK].float().T, out=out[:, i:i + WIDEN_CHUNK])
        if b is not None:
            out += b
        return out.view(*x.shape[:-1], n)
    threads = torch.get_num_threads()
    for start in range(0, m, ROW_TILE):
        rows = min(ROW_TILE, m - start)
        lib.bf16_linear(x2[start].data_ptr(), weight.data_ptr(), b.data_ptr() if b is not None else None,
                        out[start].data_ptr(), rows, n, k, threads)
    return out.view(*x.shape[:-1], n)

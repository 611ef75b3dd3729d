"""Supervised engines: an inference server (vLLM) that musad runs as a child process.

The child is reached through the same torch-free seam as the built-in engine
(daemon/engine/api.py): `vllm_engine.load_vllm_engine(...)` returns an object with `.info`,
`.stats()`, `generate()`, `drain()` and `close()`, so deployments, Inference.Generate, the
audit log, queue limits, telemetry and /metrics serve it on their existing paths.

- options.py        which engines exist, the typed vLLM options and their checks
- installed.py      engines installed for an interpreter (package metadata, never imported)
- process.py        the child: own process group, parent-death signal, pidfile, capped log
- stages.py         the child's log lines -> Deploy stages
- client.py         streaming through the child's OpenAI API
- metrics_scrape.py the child's Prometheus text -> EngineStats
- vllm_engine.py    the engine object that ties them together
"""

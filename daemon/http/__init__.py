"""The OpenAI-compatible HTTP front door: /v1/models, /v1/chat/completions, /v1/completions.

FastAPI on uvicorn, served on musad's own event loop beside gRPC (`server.http_listen`).
Modules: `schemas` (pydantic request models), `errors` (OpenAI-shaped error bodies, the body
size limit), `routes` (the app: auth, the endpoints, SSE), `serve` (binding, TLS, start and
stop). Every request goes through the one inference core (daemon/inference_core.py) that
gRPC Generate uses.
"""

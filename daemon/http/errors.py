"""OpenAI-shaped errors: every refusal is `{"error": {"message", "type", "param", "code"}}`
with one sentence, never a traceback; and the request body size limit.

`from_request_error` maps the daemon's `Status` (daemon/errors.py) to an HTTP status and an
OpenAI error type; `install(app)` makes pydantic validation errors, malformed JSON, unknown
routes and unexpected exceptions answer the same way.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import RequestError, Status

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 4 * 1024 * 1024

_HTTP: dict[Status, tuple[int, str]] = {
    Status.INVALID_ARGUMENT: (400, "invalid_request_error"),
    Status.NOT_FOUND: (404, "invalid_request_error"),
    Status.ALREADY_EXISTS: (409, "invalid_request_error"),
    Status.FAILED_PRECONDITION: (503, "server_error"),
    Status.RESOURCE_EXHAUSTED: (429, "rate_limit_error"),
    Status.UNAVAILABLE: (503, "server_error"),
}


class ApiError(Exception):
    """An HTTP refusal with its OpenAI error fields (and headers such as Retry-After)."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.param, self.code)

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def error_body(message: str, type_: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def from_request_error(exc: RequestError) -> ApiError:
    """The HTTP form of a refusal from the inference core."""
    status, type_ = _HTTP.get(exc.code, (400, "invalid_request_error"))
    code = getattr(exc, "openai_code", None)   # LimitError (inference_core) carries one
    headers = {}
    if status == 429:
        headers["Retry-After"] = str(getattr(exc, "retry_after_s", 1))
        if code == "insufficient_quota":
            type_ = "insufficient_quota"
    elif exc.code is Status.NOT_FOUND:
        return ApiError(404, exc.message, type_, "model", "model_not_found")
    elif exc.code is Status.FAILED_PRECONDITION:
        code = "model_not_ready"
    return ApiError(status, exc.message, type_, None, code, headers)


def _loc_param(loc: tuple) -> str | None:
    parts = [str(p) for p in loc if p != "body"]
    return ".".join(parts) or None


def validation_error(exc: RequestValidationError) -> ApiError:
    errs = exc.errors()
    if not errs:
        return ApiError(400, "The request body is not valid.")
    e = errs[0]
    if e.get("type") == "json_invalid":
        return ApiError(400, f"The request body is not valid JSON: {e.get('ctx', {}).get('error', 'parse error')}.")
    param = _loc_param(tuple(e.get("loc", ())))
    if e.get("type") == "missing":
        return ApiError(400, f"`{param}` is required.", param=param)
    given = e.get("input")
    shown = json.dumps(given)[:64] if isinstance(given, (str, int, float, bool, type(None))) else type(given).__name__
    more = f" ({len(errs) - 1} more problem{'s' if len(errs) > 2 else ''})" if len(errs) > 1 else ""
    return ApiError(400, f"`{param}`: {e.get('msg', 'invalid value')}; got {shown}.{more}", param=param)


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api(_: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestError)
    async def _req(_: Request, exc: RequestError) -> JSONResponse:
        return from_request_error(exc).response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return validation_error(exc).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = {404: "There is no such endpoint on this server.",
                   405: "This endpoint does not take that HTTP method."}.get(exc.status_code, str(exc.detail))
        code = "request_too_large" if exc.status_code == 413 else None
        return ApiError(exc.status_code, message, code=code).response()

    @app.exception_handler(Exception)
    async def _crash(_: Request, exc: Exception) -> JSONResponse:
        log.exception("HTTP request failed")
        return ApiError(500, "The server failed this request; the daemon log has the details.",
                        "server_error").response()


class BodyLimit:
    """ASGI middleware: a request body over `limit` bytes gets 413 with an OpenAI error,
    whether it announces its length or not."""

    def __init__(self, app, limit: int = MAX_BODY_BYTES) -> None:  # noqa: ANN001
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        too_big = ApiError(413, f"The request body is larger than this server accepts ({self.limit:,} bytes).",
                           code="request_too_large")
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    if int(value) > self.limit:
                        return await too_big.response()(scope, receive, send)
                except ValueError:
                    return await ApiError(400, "Content-Length is not a number.").response()(scope, receive, send)
        seen = 0
        started = False

        async def limited_receive():  # noqa: ANN202
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge(self.limit)
            return message

        async def tracking_send(message) -> None:  # noqa: ANN001
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:   # read outside a route (FastAPI answers those itself)
            if not started:
                await too_big.response()(scope, receive, send)


class _TooLarge(HTTPException):
    """Raised while the body is read; FastAPI passes HTTPExceptions through to `_http`."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"The request body is larger than this server accepts ({limit:,} bytes).")

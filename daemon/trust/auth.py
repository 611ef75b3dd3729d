"""What a caller may do: the role table and the gRPC auth interceptor (the Caller type:
trust/caller.py; tokens: trust/tokens.py).

Every RPC but health and reflection passes the interceptor, which resolves the caller
(token name or client-certificate CN, role, peer address), checks the role against the
method, audits refusals, and makes the caller available to the handler through
`current_caller()` (a contextvar set inside the wrapped handler).
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
from concurrent.futures import ThreadPoolExecutor

import grpc

from ..rpc_streams import relay
from .caller import Caller, reset_current_caller, set_current_caller
from .tokens import TokenStore

log = logging.getLogger(__name__)
_AUTH_POOL = ThreadPoolExecutor(1, thread_name_prefix="musad-auth")


# -- roles and the methods they may call ---------------------------------------------------

_READS = frozenset({
    "/musaops.v1.Node/GetInfo",
    "/musaops.v1.Node/ListModels",
    "/musaops.v1.Telemetry/Stream",
})
_OPERATE = frozenset({
    "/musaops.v1.Inference/Generate",
    "/musaops.v1.Node/Deploy",
    "/musaops.v1.Node/Undeploy",
    # the repository (services/models.py)
    "/musaops.v1.Models/ImportModel",
    "/musaops.v1.Models/ImportStatus",
    "/musaops.v1.Models/ExportModel",
    "/musaops.v1.Models/PullModel",
    "/musaops.v1.Models/DeleteModel",
})
_AUDIT = frozenset({
    "/musaops.v1.Audit/Query",
    "/musaops.v1.Audit/Verify",
    "/musaops.v1.KeyUsage/Query",
})
# Methods a role may call; admin may call every method, including ones added later.
ROLE_METHODS: dict[str, frozenset[str]] = {
    "viewer": _READS,
    "client": frozenset({"/musaops.v1.Inference/Generate"}),   # inference only (gRPC and HTTP)
    "operator": _READS | _OPERATE,
    "auditor": _READS | _AUDIT,
}
# Open to anyone: health checks and server reflection.
OPEN_PREFIXES = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)


def is_open_method(method: str) -> bool:
    return method.startswith(OPEN_PREFIXES)


def role_allows(role: str, method: str) -> bool:
    if is_open_method(method) or role == "admin":
        return True
    return method in ROLE_METHODS.get(role, frozenset())


def action_name(method: str) -> str:
    """'/musaops.v1.Node/Deploy' -> 'node.Deploy' (the audit action for an RPC)."""
    service, _, name = method.strip("/").partition("/")
    return f"{service.rsplit('.', 1)[-1].lower()}.{name}"


# -- the interceptor ------------------------------------------------------------------------

BEARER = "bearer "


class Denied(Exception):
    """Refused by authentication or authorisation; carries the gRPC code and a sentence."""

    def __init__(self, code: grpc.StatusCode, message: str, caller: Caller) -> None:
        super().__init__(message)
        self.code, self.message, self.caller = code, message, caller


def _metadata_token(metadata) -> str | None:  # noqa: ANN001
    for key, value in metadata or ():
        if key.lower() == "authorization":
            if isinstance(value, bytes):
                value = value.decode("utf-8", "replace")
            if value[: len(BEARER)].lower() == BEARER:
                return value[len(BEARER):].strip()
            return ""  # present but not a bearer token
    return None


def _peer_cn(context) -> str:  # noqa: ANN001
    try:
        names = context.auth_context().get("x509_common_name") or []
    except Exception:  # plaintext channels have no auth context
        return ""
    return names[0].decode("utf-8", "replace") if names else ""


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """grpc.aio server interceptor: resolves, checks and audits the caller of every RPC.

    `tokens` is a `musaops.daemon.trust.tokens.TokenStore`, `audit` an `AuditLog` (denials are
    recorded before the call is refused). With `required=False` every caller is allowed
    and recorded as its certificate CN, its token's name when it sends a valid one, or
    "anonymous".
    """

    def __init__(self, tokens, audit=None, required: bool = True) -> None:  # noqa: ANN001
        self._grpc = grpc
        self.tokens = tokens
        self.audit = audit
        self.required = required

    async def intercept_service(self, continuation, handler_call_details):  # noqa: ANN001
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or is_open_method(method):
            return handler
        return self._wrap(handler, method)

    async def resolve(self, method: str, context) -> Caller:  # noqa: ANN001
        """The caller of this RPC, or raises Denied."""
        code = self._grpc.StatusCode
        peer = context.peer() or ""
        cn = _peer_cn(context)
        token = _metadata_token(context.invocation_metadata())
        info = None
        if self.tokens is not None and (token or cn) and self.tokens.needs_refresh():
            # A DB read, off the event loop and off its default executor: on a thread of its
            # own, which no other work (a caller's prompts, database pages) can keep busy.
            await asyncio.get_running_loop().run_in_executor(_AUTH_POOL, self.tokens.refresh)
        if token and self.tokens is not None:
            info = self.tokens.authenticate(token, refresh=False)
        if not self.required:
            return Caller(cn or (info.name if info else "anonymous"), info.role if info else "", peer)
        if token is not None:
            if not token:
                raise Denied(code.UNAUTHENTICATED, "the authorization metadata must be 'Bearer TOKEN'",
                             Caller(cn or "anonymous", "", peer))
            if info is None:
                why = self.tokens.describe(token) if self.tokens is not None else "no token store"
                raise Denied(code.UNAUTHENTICATED, f"{why}; ask an admin for a valid token",
                             Caller(cn or "invalid-token", "", peer))
            caller = Caller(cn or info.name, info.role, peer)
        elif cn:
            ident = self.tokens.identity(cn, refresh=False) if self.tokens is not None else None
            if ident is None:
                raise Denied(code.PERMISSION_DENIED,
                             f"client certificate {cn!r} has no role on this node; an admin can give it one "
                             f"with 'musad token create --name {cn} --role ROLE'", Caller(cn, "", peer))
            caller = Caller(cn, ident.role, peer)
        else:
            raise Denied(code.UNAUTHENTICATED,
                         "this node requires authentication: send the metadata 'authorization: Bearer TOKEN' "
                         "(musad token create) or a client certificate", Caller("anonymous", "", peer))
        if not role_allows(caller.role, method):
            raise Denied(code.PERMISSION_DENIED,
                         f"role {caller.role!r} may not call {action_name(method)}", caller)
        return caller

    async def _admit(self, method: str, context) -> contextvars.Token:  # noqa: ANN001
        try:
            caller = await self.resolve(method, context)
        except Denied as d:
            if self.audit is not None:
                try:
                    await self.audit.record(action_name(method), "", {"method": method}, "denied",
                                            d.message, caller=d.caller)
                except Exception:  # the refusal stands even if it could not be recorded
                    log.exception("could not audit a denied call")
            await context.abort(d.code, d.message)
            raise  # abort raises; this line is never reached
        return set_current_caller(caller)

    def _wrap(self, handler, method: str):  # noqa: ANN001, ANN202
        grpc = self._grpc
        admit = self._admit

        if handler.unary_unary or handler.stream_unary:
            inner = handler.unary_unary or handler.stream_unary

            async def unary_response(request, context):  # noqa: ANN001, ANN202
                token = await admit(method, context)
                try:
                    result = inner(request, context)
                    return await result if inspect.isawaitable(result) else result
                finally:
                    reset_current_caller(token)

            make = (grpc.unary_unary_rpc_method_handler if handler.unary_unary
                    else grpc.stream_unary_rpc_method_handler)
            return make(unary_response, request_deserializer=handler.request_deserializer,
                        response_serializer=handler.response_serializer)

        inner = handler.unary_stream or handler.stream_stream

        async def stream_response(request, context):  # noqa: ANN001, ANN202
            token = await admit(method, context)
            try:
                async for item in relay(inner(request, context)):
                    yield item
            finally:
                reset_current_caller(token)

        make = (grpc.unary_stream_rpc_method_handler if handler.unary_stream
                else grpc.stream_stream_rpc_method_handler)
        return make(stream_response, request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer)


# -- wiring into the daemon -------------------------------------------------------------------

def security_interceptors(ctx) -> list[grpc.aio.ServerInterceptor]:  # noqa: ANN001 (DaemonContext)
    """Creates the token store on the audit database (ctx.auth) and returns the auth
    interceptor. Called once by server.py before the port opens; the config change is
    audited by server.py once the daemon serves (a start that fails records nothing)."""
    if ctx.auth is None:
        ctx.auth = TokenStore(ctx.audit.engine, audit=ctx.audit)
    if not ctx.config.auth.required:
        log.warning(
            "auth.required is off: every caller may call every RPC (recorded as anonymous)")
    return [AuthInterceptor(ctx.auth, ctx.audit, required=ctx.config.auth.required)]

"""Turns servicer objects into registered gRPC handlers.

Every RPC of a service goes through `_unary` or `_stream` here: one debug
line with its latency, crispy's error kinds (runtime/errors.py) mapped to
status codes, anything unexpected logged with its traceback but never sent
to the client. RPCs a servicer does not define answer UNIMPLEMENTED naming
the RPC. This is the one place that knows which gRPC code each kind is.
"""

from __future__ import annotations

import asyncio
import logging
import time
import types
from typing import Any, Callable

import grpc

from cri.proto import api_pb2
from runtime.errors import CrispyError, ErrorKind

log = logging.getLogger("crispy.rpc")


_CODES = {
    ErrorKind.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorKind.ALREADY_EXISTS: grpc.StatusCode.ALREADY_EXISTS,
    ErrorKind.INVALID_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorKind.FAILED_PRECONDITION: grpc.StatusCode.FAILED_PRECONDITION,
    ErrorKind.DEADLINE_EXCEEDED: grpc.StatusCode.DEADLINE_EXCEEDED,
    ErrorKind.RESOURCE_EXHAUSTED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorKind.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    ErrorKind.UNIMPLEMENTED: grpc.StatusCode.UNIMPLEMENTED,
    ErrorKind.UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
    ErrorKind.PERMISSION_DENIED: grpc.StatusCode.PERMISSION_DENIED,
    ErrorKind.DATA_LOSS: grpc.StatusCode.DATA_LOSS,
    ErrorKind.UNKNOWN: grpc.StatusCode.UNKNOWN,
    ErrorKind.INTERNAL: grpc.StatusCode.INTERNAL,
}


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and message a client should see for `exc`."""
    if isinstance(exc, CrispyError):
        return _CODES[exc.kind], exc.message
    if isinstance(exc, TimeoutError):
        return grpc.StatusCode.DEADLINE_EXCEEDED, f"operation timed out: {exc}" if str(exc) else "operation timed out"
    if isinstance(exc, PermissionError):
        return grpc.StatusCode.PERMISSION_DENIED, f"permission denied: {exc}"
    if isinstance(exc, OSError) and exc.errno == 28:  # ENOSPC
        return grpc.StatusCode.RESOURCE_EXHAUSTED, f"no space left: {exc}"
    return grpc.StatusCode.INTERNAL, f"internal error ({type(exc).__name__}); see the crispy log for details"


# Longest status message sent, in UTF-8 bytes. gRPC carries it percent-
# encoded in a trailer, and clients refuse trailers over 8 KiB (with
# RESOURCE_EXHAUSTED, hiding the real code); this leaves room for the
# encoding's growth.
MAX_STATUS_MESSAGE = 2048


def bounded(msg: str, limit: int = MAX_STATUS_MESSAGE) -> str:
    """`msg`, cut to at most `limit` UTF-8 bytes, saying how much was cut."""
    raw = msg.encode("utf-8", "replace")
    if len(raw) <= limit:
        return msg
    head = raw[:limit - 64].decode("utf-8", "ignore")
    return f"{head}... ({len(raw) - len(head.encode())} more bytes; see the crispy log)"


def _log_failure(name: str, exc: BaseException, elapsed_ms: float) -> tuple[grpc.StatusCode, str]:
    code, msg = status_for(exc)
    fields = {"rpc": name, "code": code.name, "error": msg, "ms": round(elapsed_ms, 2)}
    if code is grpc.StatusCode.INTERNAL:
        log.error("rpc failed", exc_info=exc, extra={"fields": fields})
    else:
        log.info("rpc failed", extra={"fields": fields})
    return code, bounded(msg)


def _unary(name: str, impl: Callable[..., Any]) -> Callable[..., Any]:
    async def handler(request: Any, context: grpc.aio.ServicerContext) -> Any:
        start = time.perf_counter()
        try:
            response = await impl(request, context)
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except BaseException as exc:  # noqa: BLE001 - every failure becomes a status
            code, msg = _log_failure(name, exc, (time.perf_counter() - start) * 1000)
            await context.abort(code, msg)
        log.debug("rpc", extra={"fields": {"rpc": name, "ms": round((time.perf_counter() - start) * 1000, 2)}})
        return response

    return handler


def _stream(name: str, impl: Callable[..., Any]) -> Callable[..., Any]:
    async def handler(request: Any, context: grpc.aio.ServicerContext) -> Any:
        start = time.perf_counter()
        try:
            async for item in impl(request, context):
                yield item
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except BaseException as exc:  # noqa: BLE001
            code, msg = _log_failure(name, exc, (time.perf_counter() - start) * 1000)
            await context.abort(code, msg)
        log.debug("rpc", extra={"fields": {"rpc": name, "ms": round((time.perf_counter() - start) * 1000, 2)}})

    return handler


def _unimplemented(full_name: str, streaming: bool) -> Callable[..., Any]:
    message = f"{full_name} is not implemented by crispy yet"
    if streaming:
        async def stream_handler(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, message)
            yield  # pragma: no cover - makes this an async generator
        return stream_handler

    async def handler(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, message)
    return handler


def bind(servicer: object, service_name: str) -> types.SimpleNamespace:
    """An object with one wrapped handler per RPC of `service_name`, for the
    generated add_*Servicer_to_server functions."""
    service = api_pb2.DESCRIPTOR.services_by_name[service_name]
    handlers = {}
    for method in service.methods:
        full_name = f"{service_name}/{method.name}"
        impl = getattr(servicer, method.name, None)
        if impl is None:
            handlers[method.name] = _unimplemented(full_name, method.server_streaming)
        elif method.server_streaming:
            handlers[method.name] = _stream(full_name, impl)
        else:
            handlers[method.name] = _unary(full_name, impl)
    return types.SimpleNamespace(**handlers)

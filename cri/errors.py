"""crispy's error types and the one place they become gRPC status codes.

Code anywhere in crispy (cri/, runtime/, images/) raises these; the RPC
wrapper in cri/rpc.py turns them into a status with the message as given.
Anything else that escapes a handler is logged with its traceback and the
client only sees INTERNAL with a short message.
"""

from __future__ import annotations

import grpc

from runtime.errors import (  # noqa: F401 - re-exported while callers move to runtime.errors
    AlreadyExists, CrispyError, DeadlineExceeded, ErrorKind, FailedPrecondition, Internal, InvalidArgument, NotFound,
    ResourceExhausted, Unavailable, Unimplemented)


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

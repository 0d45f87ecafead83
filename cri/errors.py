"""crispy's error types and the one place they become gRPC status codes.

Code anywhere in crispy (cri/, runtime/, images/) raises these; the RPC
wrapper in cri/rpc.py turns them into a status with the message as given.
Anything else that escapes a handler is logged with its traceback and the
client only sees INTERNAL with a short message.
"""

from __future__ import annotations

import grpc


class CrispyError(Exception):
    """Base of every error crispy reports to a CRI client."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(CrispyError):
    code = grpc.StatusCode.NOT_FOUND


class InvalidArgument(CrispyError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class AlreadyExists(CrispyError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(CrispyError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class DeadlineExceeded(CrispyError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class ResourceExhausted(CrispyError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(CrispyError):
    code = grpc.StatusCode.UNAVAILABLE


class Unimplemented(CrispyError):
    code = grpc.StatusCode.UNIMPLEMENTED


class Internal(CrispyError):
    code = grpc.StatusCode.INTERNAL


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and message a client should see for `exc`."""
    if isinstance(exc, CrispyError):
        return exc.code, exc.message
    if isinstance(exc, TimeoutError):
        return grpc.StatusCode.DEADLINE_EXCEEDED, f"operation timed out: {exc}" if str(exc) else "operation timed out"
    if isinstance(exc, PermissionError):
        return grpc.StatusCode.PERMISSION_DENIED, f"permission denied: {exc}"
    if isinstance(exc, OSError) and exc.errno == 28:  # ENOSPC
        return grpc.StatusCode.RESOURCE_EXHAUSTED, f"no space left: {exc}"
    return grpc.StatusCode.INTERNAL, f"internal error ({type(exc).__name__}); see the crispy log for details"

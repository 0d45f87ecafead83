"""The kinds of failure crispy's domain (runtime/, images/) reports.

The domain does not know how it is served: it raises one of these, and the
transport (cri/rpc.py for gRPC) turns the kind into its own status. The
message is for the person reading it and says what to do.
"""

from __future__ import annotations

import enum


class ErrorKind(enum.Enum):
    NOT_FOUND = "not found"
    ALREADY_EXISTS = "already exists"
    INVALID_ARGUMENT = "invalid argument"
    FAILED_PRECONDITION = "failed precondition"
    DEADLINE_EXCEEDED = "deadline exceeded"
    RESOURCE_EXHAUSTED = "resource exhausted"
    UNAVAILABLE = "unavailable"
    UNIMPLEMENTED = "unimplemented"
    UNAUTHENTICATED = "unauthenticated"
    PERMISSION_DENIED = "permission denied"
    DATA_LOSS = "data loss"
    UNKNOWN = "unknown"
    INTERNAL = "internal"


class CrispyError(Exception):
    """Base of every failure crispy reports to a client."""

    kind: ErrorKind = ErrorKind.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(CrispyError):
    kind = ErrorKind.NOT_FOUND


class InvalidArgument(CrispyError):
    kind = ErrorKind.INVALID_ARGUMENT


class AlreadyExists(CrispyError):
    kind = ErrorKind.ALREADY_EXISTS


class FailedPrecondition(CrispyError):
    kind = ErrorKind.FAILED_PRECONDITION


class DeadlineExceeded(CrispyError):
    kind = ErrorKind.DEADLINE_EXCEEDED


class ResourceExhausted(CrispyError):
    kind = ErrorKind.RESOURCE_EXHAUSTED


class Unavailable(CrispyError):
    kind = ErrorKind.UNAVAILABLE


class Unimplemented(CrispyError):
    kind = ErrorKind.UNIMPLEMENTED


class Internal(CrispyError):
    kind = ErrorKind.INTERNAL

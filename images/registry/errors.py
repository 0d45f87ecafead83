"""Errors a registry conversation can end in, each with the gRPC code
kubelet should see."""

from __future__ import annotations

import grpc

from cri.errors import CrispyError, DeadlineExceeded, Unavailable


class AuthenticationFailed(CrispyError):
    code = grpc.StatusCode.UNAUTHENTICATED


class AccessDenied(CrispyError):
    code = grpc.StatusCode.PERMISSION_DENIED


class RegistryUnavailable(Unavailable):
    """Network failures and 5xx that outlasted the retries."""


class PullStalled(DeadlineExceeded):
    """No bytes arrived for images.pull_stall_timeout seconds."""

"""Errors a registry conversation can end in, each with the gRPC code
kubelet should see."""

from __future__ import annotations

from runtime.errors import CrispyError, DeadlineExceeded, ErrorKind, Unavailable

# Registry-controlled text (headers, URLs, error bodies) quoted in a message
# is cut to this many characters: a status must stay well within gRPC's limits.
QUOTE_MAX = 200


def clip(text: object, limit: int = QUOTE_MAX) -> str:
    s = str(text)
    return s if len(s) <= limit else f"{s[:limit]}... ({len(s) - limit} more characters)"


class AuthenticationFailed(CrispyError):
    kind = ErrorKind.UNAUTHENTICATED


class AccessDenied(CrispyError):
    kind = ErrorKind.PERMISSION_DENIED


class RegistryUnavailable(Unavailable):
    """Network failures and 5xx that outlasted the retries; redirect loops
    and redirects crispy will not follow."""


class PullStalled(DeadlineExceeded):
    """No bytes arrived for images.pull_stall_timeout seconds."""


class PullTooSlow(DeadlineExceeded):
    """Fewer bytes than images.pull_min_rate asks arrived over a window of
    images.pull_rate_window seconds."""

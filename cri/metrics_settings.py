"""The `[metrics]` table: where crispy serves Prometheus metrics."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from runtime.errors import InvalidArgument


@dataclass
class MetricsConfig:
    # host:port for GET /metrics (e.g. "127.0.0.1:9090"); empty = no endpoint,
    # and nothing of the exporter is loaded.
    address: str = ""


def parse_address(address: str) -> tuple[str, int]:
    """"127.0.0.1:9090", "[::1]:9090", ":9090" (every address) -> (host, port); port 0
    lets the kernel pick a free one (crictl info shows which)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise InvalidArgument(f"config: metrics.address must be host:port with a port up to 65535, 0 for any free one "
                              f"(e.g. 127.0.0.1:9090); got {address!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if host:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            if host != "localhost":
                raise InvalidArgument(f"config: metrics.address must name an IP address (or localhost); "
                                      f"got {host!r}") from None
    return host or "0.0.0.0", int(port)

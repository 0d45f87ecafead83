"""Which endpoints serve a registry, in order, and how to reach each: the
`[registries."<host>"]` tables of crispy.toml (mirrors, insecure, ca_file,
auth_file), the way containerd's hosts.toml and CRI-O's registries.conf
describe them. Pure functions of the config."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cri.errors import InvalidArgument
from images.reference import DEFAULT_DOMAIN, DOCKER_HUB_API_HOST
from images.registry.auth import Credentials, credentials_from_json


@dataclass(frozen=True)
class Endpoint:
    host: str              # "registry-1.docker.io", "127.0.0.1:5000"
    base_path: str         # "" or a mirror's path prefix, without /v2
    scheme: str            # "https", or "http" when configured so
    # Try https without certificate checks, then plain http (loopback and
    # insecure registries, as Docker does).
    http_fallback: bool
    verify: bool
    ca_file: str
    mirror: bool
    config_key: str        # the [registries."<key>"] this endpoint's settings came from

    def __str__(self) -> str:
        return f"{self.scheme}://{self.host}{self.base_path}"


def is_loopback(host: str) -> bool:
    name = host
    if name.startswith("["):
        name = name[1:name.index("]")] if "]" in name else name[1:]
    elif name.count(":") == 1:
        name = name.split(":", 1)[0]
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _settings(registries: dict[str, Any], key: str) -> Any:
    return registries.get(key)


def _endpoint(host: str, base_path: str, scheme: str | None, registries: dict[str, Any], mirror: bool) -> Endpoint:
    cfg = _settings(registries, host)
    insecure = bool(cfg and cfg.insecure)
    ca_file = (cfg.ca_file if cfg else "") or ""
    loop = is_loopback(host)
    if scheme is None:
        scheme = "https"
        fallback = insecure or loop
    else:
        fallback = False
    return Endpoint(host, base_path.rstrip("/"), scheme, fallback, verify=not (insecure or loop), ca_file=ca_file,
                    mirror=mirror, config_key=host)


def parse_mirror(url: str) -> tuple[str, str, str | None]:
    """`https://m.example/prefix` -> (host, "/prefix", "https"); a bare
    `m.example:5000` leaves the scheme to the host's settings."""
    if "://" not in url:
        host, _, path = url.partition("/")
        return host, ("/" + path if path else ""), None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidArgument(f"registry mirror {url!r} must be http(s)://host[:port][/path] or host[:port]")
    path = parts.path.rstrip("/")
    if path.endswith("/v2"):
        path = path[:-3]
    return parts.netloc, path, parts.scheme


def endpoints_for(domain: str, registries: dict[str, Any]) -> list[Endpoint]:
    """Mirrors in configured order, then the registry itself."""
    cfg = _settings(registries, domain)
    out: list[Endpoint] = []
    for url in (cfg.mirrors if cfg else []):
        host, path, scheme = parse_mirror(url)
        out.append(_endpoint(host, path, scheme, registries, mirror=True))
    upstream = DOCKER_HUB_API_HOST if domain == DEFAULT_DOMAIN else domain
    ep = _endpoint(upstream, "", None, registries, mirror=False)
    # Settings of the upstream come from the name users write (docker.io).
    if cfg is not None:
        ep = Endpoint(ep.host, ep.base_path, ep.scheme, cfg.insecure or is_loopback(upstream),
                      verify=not (cfg.insecure or is_loopback(upstream)), ca_file=cfg.ca_file or "", mirror=False,
                      config_key=domain)
    out.append(ep)
    return out


def configured_credentials(registries: dict[str, Any], key: str) -> Credentials | None:
    cfg = _settings(registries, key)
    if not cfg or not cfg.auth_file:
        return None
    try:
        data = Path(cfg.auth_file).read_bytes()
    except OSError as e:
        raise InvalidArgument(f"registries.\"{key}\".auth_file {cfg.auth_file}: {e.strerror}") from None
    return credentials_from_json(data, f"registries.\"{key}\".auth_file {cfg.auth_file}")

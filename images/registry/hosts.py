"""Which endpoints serve a registry, in order, and how to reach each: the
`[registries."<host>"]` tables of crispy.toml (mirrors, insecure, ca_file,
auth_file), the way containerd's hosts.toml and CRI-O's registries.conf
describe them. Pure functions of the config."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from images.reference import DEFAULT_DOMAIN, DOCKER_HUB_API_HOST
from images.registry.auth import Credentials, credentials_from_json
from images.settings import RegistryHostConfig
from runtime.errors import InvalidArgument


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
    # From a hosts directory (hosts_dir.py): more CAs, a client certificate
    # (cert file, key file or ""), headers sent with every request, whether
    # base_path is the API root itself (override_path, no /v2 added), and
    # what the endpoint may be used for ("resolve": tags to digests, "pull").
    extra_cas: tuple[str, ...] = ()
    client_cert: tuple[str, str] | None = None
    headers: tuple[tuple[str, str], ...] = ()
    override_path: bool = False
    capabilities: frozenset[str] = frozenset({"pull", "resolve"})
    source: str = ""       # the hosts.toml or certs directory it came from, for messages

    def __str__(self) -> str:
        return f"{self.scheme}://{self.host}{self.base_path}"

    def api_path(self, path: str) -> str:
        """`/v2/<repo>/...` as this endpoint wants it."""
        return path.removeprefix("/v2") if self.override_path else path


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


def _reach(host: str, cfg: RegistryHostConfig | None) -> tuple[bool, bool, str]:
    """(http fallback, verify certificates, ca_file) for `host` with its
    settings `cfg` (or None). A loopback registry is treated as insecure
    unless it was given a CA to check it with."""
    insecure = bool(cfg and cfg.insecure)
    ca_file = (cfg.ca_file if cfg else "") or ""
    lax = insecure or (is_loopback(host) and not ca_file)
    return lax, not lax, ca_file


def _endpoint(host: str, base_path: str, scheme: str | None, cfg: RegistryHostConfig | None, config_key: str,
              mirror: bool) -> Endpoint:
    fallback, verify, ca_file = _reach(host, cfg)
    if scheme is not None:
        fallback = False  # an explicit http:// or https:// mirror URL is taken at its word
        verify = verify and scheme == "https"
    return Endpoint(host, base_path.rstrip("/"), scheme or "https", fallback, verify, ca_file, mirror, config_key)


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


def endpoints_for(domain: str, registries: dict[str, RegistryHostConfig]) -> list[Endpoint]:
    """Mirrors in configured order, then the registry itself (unless the
    host is set to mirrors_only)."""
    cfg = registries.get(domain)
    out: list[Endpoint] = []
    for url in (cfg.mirrors if cfg else []):
        host, path, scheme = parse_mirror(url)
        out.append(_endpoint(host, path, scheme, registries.get(host), host, mirror=True))
    if cfg is not None and cfg.mirrors_only:
        if not out:
            raise InvalidArgument(f'registries."{domain}".mirrors_only is set but {domain} has no mirrors; '
                                  f"add mirrors or unset mirrors_only")
        return out
    upstream = DOCKER_HUB_API_HOST if domain == DEFAULT_DOMAIN else domain
    # The upstream's settings live under the name users write (docker.io).
    out.append(_endpoint(upstream, "", None, cfg, domain, mirror=False))
    return out


def configured_credentials(registries: dict[str, RegistryHostConfig], key: str) -> Credentials | None:
    cfg = registries.get(key)
    if not cfg or not cfg.auth_file:
        return None
    try:
        data = Path(cfg.auth_file).read_bytes()
    except OSError as e:
        raise InvalidArgument(f"registries.\"{key}\".auth_file {cfg.auth_file}: {e.strerror}") from None
    return credentials_from_json(data, f"registries.\"{key}\".auth_file {cfg.auth_file}")

"""Registry endpoints from a hosts directory, the format containerd reads
(`[registry] config_path`, crispy's default /etc/crispy/certs.d) and that
mirror tools generate:

    <config_path>/<registry host>/hosts.toml   (or _default/hosts.toml)

    server = "https://registry.example"        # the upstream; default https://<host>
    ca = "ca.crt"                              # or a list; relative to the host's directory
    client = [["client.cert", "client.key"]]   # pairs, or files holding both
    skip_verify = false
    override_path = false                      # true: the URL's path is the API root (no /v2 added)
    [header]
      x-origin = "node-1"                      # or a list of values
    [host."https://mirror.example:5000"]       # mirrors, tried in file order before the server
      capabilities = ["pull", "resolve"]       # "pull" fetches by digest, "resolve" turns tags into digests
      ca = "/etc/certs/mirror.crt"
      ...

A host directory without hosts.toml is read the way docker reads
certs.d: every `*.crt` is a CA for the registry, `<name>.cert` with
`<name>.key` a client certificate.

Files are read again whenever the directory or a file in it changes
(a listing and a stat per pull); a file that turns bad keeps the last good
reading in use, with an error logged naming its file, line and key."""

from __future__ import annotations

import logging
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from images.reference import DEFAULT_DOMAIN, DOCKER_HUB_API_HOST
from images.registry.hosts import Endpoint, is_loopback
from runtime.errors import InvalidArgument
from runtime.toml_lines import line_of

log = logging.getLogger("crispy.images.registry")

HOSTS_FILE = "hosts.toml"
DEFAULT_DIR = "_default"
CAPABILITIES = frozenset({"pull", "resolve", "push"})
_HOST_KEYS = {"capabilities", "ca", "client", "skip_verify", "override_path", "header"}
_TOP_KEYS = _HOST_KEYS | {"server", "host"}


class HostsFileError(InvalidArgument):
    pass


@dataclass
class _Src:
    path: Path
    text: str

    def bad(self, key: tuple[str, ...], why: str) -> HostsFileError:
        line = line_of(self.text, key)
        where = f"{self.path}:{line}" if line else str(self.path)
        name = ".".join(k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else f'"{k}"' for k in key)
        return HostsFileError(f"{where}: {name}: {why}")


def _split_url(url: str, src: _Src, key: tuple[str, ...]) -> tuple[str, str, str | None]:
    """(host, path, scheme or None when the URL gave none)."""
    if "://" not in url:
        host, _, path = url.partition("/")
        scheme = None
    else:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise src.bad(key, f"{url!r} must be http(s)://host[:port][/path] or host[:port]")
        host, path, scheme = parts.netloc, parts.path, parts.scheme
    if not host:
        raise src.bad(key, f"{url!r} names no host")
    return host, ("/" + path.strip("/")) if path.strip("/") else "", scheme


def _paths(value: Any, base: Path, src: _Src, key: tuple[str, ...]) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(v, str) and v for v in items):
        raise src.bad(key, "must be a file path or a list of them")
    return tuple(str(base / v) if not os.path.isabs(v) else v for v in items)


def _client(value: Any, base: Path, src: _Src, key: tuple[str, ...]) -> tuple[str, str] | None:
    """The first client certificate (cert, key; key "" when the cert file
    holds both): one TLS connection presents one certificate."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise src.bad(key, 'must be a file, a list of files, or a list of ["cert", "key"] pairs')
    pairs = []
    for item in items:
        if isinstance(item, str) and item:
            pairs.append((item, ""))
        elif isinstance(item, list) and len(item) == 2 and all(isinstance(x, str) and x for x in item):
            pairs.append((item[0], item[1]))
        else:
            raise src.bad(key, 'must be a file, a list of files, or a list of ["cert", "key"] pairs')
    cert, keyfile = pairs[0]
    return _under(base, cert), _under(base, keyfile)


def _under(base: Path, p: str) -> str:
    return p if not p or os.path.isabs(p) else str(base / p)


def _headers(value: Any, src: _Src, key: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, dict):
        raise src.bad(key, "must be a table of header = value (or [values])")
    out = []
    for name, v in value.items():
        if isinstance(v, str):
            out.append((name, v))
        elif isinstance(v, list) and all(isinstance(x, str) for x in v):
            out.append((name, ", ".join(v)))
        else:
            raise src.bad(key + (name,), "must be a string or a list of strings")
    return tuple(out)


def _settings(table: dict[str, Any], base: Path, src: _Src, key: tuple[str, ...], allowed: set[str],
              default_caps: frozenset[str]) -> dict[str, Any]:
    for k in table:
        if k not in allowed:
            raise src.bad(key + (k,), f"unknown key; known keys here: {', '.join(sorted(allowed))}")
    out: dict[str, Any] = {"capabilities": default_caps}
    if "capabilities" in table:
        caps = table["capabilities"]
        if not isinstance(caps, list) or not all(isinstance(c, str) and c in CAPABILITIES for c in caps):
            raise src.bad(key + ("capabilities",), f"must be a list of {', '.join(sorted(CAPABILITIES))}")
        out["capabilities"] = frozenset(caps)
    for flag in ("skip_verify", "override_path"):
        if flag in table and not isinstance(table[flag], bool):
            raise src.bad(key + (flag,), "must be true or false")
        out[flag] = bool(table.get(flag, False))
    out["ca"] = _paths(table["ca"], base, src, key + ("ca",)) if "ca" in table else ()
    out["client"] = _client(table["client"], base, src, key + ("client",)) if "client" in table else None
    out["header"] = _headers(table["header"], src, key + ("header",)) if "header" in table else ()
    return out


def _endpoint(url: str, s: dict[str, Any], src: _Src, key: tuple[str, ...], domain: str, mirror: bool) -> Endpoint:
    host, path, scheme = _split_url(url, src, key)
    if not s["override_path"] and path.endswith("/v2"):
        path = path[:-3]
    cas = s["ca"]
    if scheme == "http":
        fallback, verify = False, False
    elif s["skip_verify"]:
        fallback, verify = scheme is None, False
    else:
        # A loopback registry named without a scheme and given no CA: as
        # crispy's own tables treat it (https without checks, then http).
        lax = scheme is None and is_loopback(host) and not cas
        fallback, verify = lax, not lax
    return Endpoint(host, path, scheme or "https", fallback, verify, cas[0] if cas else "", mirror, domain,
                    extra_cas=tuple(cas[1:]), client_cert=s["client"], headers=s["header"],
                    override_path=s["override_path"], capabilities=s["capabilities"], source=str(src.path))


def parse_hosts_toml(text: str, path: Path, domain: str) -> list[Endpoint]:
    """Sans-IO: one hosts.toml to the registry's endpoints, mirrors first.
    Errors name the file, line and key."""
    src = _Src(path, text)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise HostsFileError(f"{path}: not valid TOML: {e}") from None
    base = path.parent
    top = _settings({k: v for k, v in doc.items() if k not in ("server", "host")}, base, src, (), _TOP_KEYS,
                    frozenset({"pull", "resolve", "push"}))
    out = []
    hosts = doc.get("host", {})
    if not isinstance(hosts, dict):
        raise src.bad(("host",), 'must be tables: [host."https://mirror.example"]')
    for url, table in hosts.items():
        if not isinstance(table, dict):
            raise src.bad(("host", url), "must be a table")
        s = _settings(table, base, src, ("host", url), _HOST_KEYS, frozenset({"pull", "resolve"}))
        out.append(_endpoint(url, s, src, ("host", url), domain, mirror=True))
    server = doc.get("server")
    if server is None:
        upstream = DOCKER_HUB_API_HOST if domain == DEFAULT_DOMAIN else domain
        server = f"https://{upstream}" if not is_loopback(upstream) else upstream
    elif not isinstance(server, str):
        raise src.bad(("server",), "must be a URL such as https://registry.example")
    out.append(_endpoint(server, top, src, ("server",), domain, mirror=False))
    return out


def docker_certs(files: list[str], d: Path, domain: str) -> list[Endpoint]:
    """A docker certs.d directory: CAs and client certificates for the
    registry itself."""
    cas = sorted(str(d / f) for f in files if f.endswith(".crt"))
    certs = sorted(f for f in files if f.endswith(".cert"))
    client = None
    for cert in certs:
        keyfile = cert[:-len(".cert")] + ".key"
        if keyfile not in files:
            raise HostsFileError(f"{d / cert}: client certificate without its key {d / keyfile}")
        client = (str(d / cert), str(d / keyfile))
        break
    upstream = DOCKER_HUB_API_HOST if domain == DEFAULT_DOMAIN else domain
    return [Endpoint(upstream, "", "https", False, True, cas[0] if cas else "", False, domain,
                     extra_cas=tuple(cas[1:]), client_cert=client, source=str(d))]


_Signature = tuple[tuple[str, int, int], ...]


class HostsDir:
    """Reads `<config_path>/<host>/` on demand, again only when it changed."""

    def __init__(self) -> None:
        self._cache: dict[Path, tuple[_Signature, list[Endpoint]]] = {}

    @staticmethod
    def _signature(d: Path) -> _Signature | None:
        try:
            names = sorted(os.listdir(d))
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as e:
            raise HostsFileError(f"registry hosts directory {d} cannot be read: {e.strerror}") from None
        sig = []
        for n in names:
            try:
                st = os.stat(d / n)
            except FileNotFoundError:
                continue
            sig.append((n, st.st_mtime_ns, st.st_size))
        return tuple(sig)

    def endpoints(self, config_path: str, domain: str) -> list[Endpoint] | None:
        """The endpoints the hosts directory gives `domain`, or None when it
        says nothing about it."""
        if not config_path:
            return None
        for name in (domain, DEFAULT_DIR):
            d = Path(config_path) / name
            sig = self._signature(d)
            if sig is None:
                continue
            cached = self._cache.get(d)
            if cached is not None and cached[0] == sig:
                return cached[1]
            try:
                eps = self._read(d, [n for n, _, _ in sig], domain)
            except HostsFileError as e:
                if cached is None:
                    raise
                log.error("registry hosts file is broken; keeping its last good reading",
                          extra={"fields": {"error": e.message}})
                return cached[1]
            self._cache[d] = (sig, eps)
            log.info("registry hosts read", extra={"fields": {"registry": domain, "dir": str(d),
                                                               "endpoints": " ".join(str(e) for e in eps)}})
            return eps
        return None

    @staticmethod
    def _read(d: Path, files: list[str], domain: str) -> list[Endpoint]:
        if HOSTS_FILE in files:
            path = d / HOSTS_FILE
            try:
                text = path.read_text()
            except OSError as e:
                raise HostsFileError(f"{path}: cannot be read: {e.strerror}") from None
            return parse_hosts_toml(text, path, domain)
        return docker_certs(files, d, domain)


def validate(config_path: str) -> None:
    """Every hosts.toml under `config_path` parses (at start-up and on
    SIGHUP, so a broken one stops crispy or the reload)."""
    if not config_path:
        return  # no hosts directory
    if not os.path.isabs(config_path):
        raise InvalidArgument(f"config: registry.config_path must be an absolute directory (or \"\" for none); "
                              f"got {config_path!r}")
    root = Path(config_path)
    try:
        dirs = sorted(p for p in root.iterdir() if p.is_dir())
    except (FileNotFoundError, NotADirectoryError):
        return
    except OSError as e:
        raise HostsFileError(f"registry hosts directory {root} cannot be read: {e.strerror}") from None
    for d in dirs:
        HostsDir._read(d, os.listdir(d), d.name)

"""Image references, normalised the way Docker and containerd do:
`busybox` -> `docker.io/library/busybox:latest`, `localhost:5000/x` keeps its
registry, `name@sha256:...` pins a manifest. Anything else that does not
parse is the caller's mistake (InvalidArgument), never a crash."""

from __future__ import annotations

import re
from dataclasses import dataclass

from runtime.errors import InvalidArgument

DEFAULT_DOMAIN = "docker.io"
DEFAULT_TAG = "latest"
# Docker Hub's API lives on another host than the name users write.
DOCKER_HUB_API_HOST = "registry-1.docker.io"
_LEGACY_HUB_DOMAINS = {"index.docker.io", "registry-1.docker.io"}

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
_COMPONENT_RE = re.compile(rf"^{_COMPONENT}$")
_DOMAIN_RE = re.compile(
    r"^(?:(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
    r"(?:\.(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))*|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?$")
_TAG_RE = re.compile(r"^[\w][\w.-]{0,127}$")
_DIGEST_RE = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$")
_HEX64 = re.compile(r"^[a-f0-9]{64}$")
NAME_MAX = 255


def is_digest(value: str) -> bool:
    """A well-formed `algorithm:encoded` digest; sha256 must be 64 hex."""
    if not _DIGEST_RE.match(value):
        return False
    algo, _, enc = value.partition(":")
    if algo == "sha256":
        return bool(_HEX64.match(enc))
    if algo == "sha512":
        return bool(re.match(r"^[a-f0-9]{128}$", enc))
    return False


def is_hex_id(value: str) -> bool:
    return bool(_HEX64.match(value))


@dataclass(frozen=True)
class Reference:
    domain: str          # "docker.io", "localhost:5000", "[::1]:5000"
    path: str            # "library/busybox"
    tag: str = ""        # "" when pinned by digest only
    digest: str = ""     # "" when by tag

    @property
    def name(self) -> str:
        """Repository name with registry: `docker.io/library/busybox`."""
        return f"{self.domain}/{self.path}"

    def __str__(self) -> str:
        out = self.name
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out

    @property
    def tagged(self) -> str:
        return f"{self.name}:{self.tag}" if self.tag else ""

    @property
    def digested(self) -> str:
        return f"{self.name}@{self.digest}" if self.digest else ""

    @property
    def api_host(self) -> str:
        """The host:port the distribution API is served on."""
        return DOCKER_HUB_API_HOST if self.domain == DEFAULT_DOMAIN else self.domain

    def with_digest(self, digest: str) -> "Reference":
        return Reference(self.domain, self.path, "", digest)


def _split_domain(name: str) -> tuple[str, str]:
    first, sep, rest = name.partition("/")
    # Docker's rule: the first component is a registry only if it looks like
    # a host (has a dot or port, is localhost, or has upper case letters).
    if not sep or ("." not in first and ":" not in first and first != "localhost" and first.lower() == first):
        domain, path = DEFAULT_DOMAIN, name
    else:
        domain, path = first, rest
    if domain in _LEGACY_HUB_DOMAINS:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in path:
        path = f"library/{path}"
    return domain, path


def parse(ref: str, default_tag: bool = True) -> Reference:
    """Parses and normalises `ref`. With `default_tag`, a reference with
    neither tag nor digest gets `:latest`."""
    original = ref
    if not ref or ref != ref.strip():
        raise InvalidArgument(f"image reference {original!r} is empty or has surrounding spaces")
    digest = ""
    if "@" in ref:
        ref, _, digest = ref.partition("@")
        if not is_digest(digest):
            raise InvalidArgument(f"image reference {original!r} has an invalid digest {digest!r} "
                                  f"(want NAME@sha256:<64 hex digits>)")
    tag = ""
    # A colon after the last slash separates the tag; one before it is a port.
    colon = ref.rfind(":")
    if colon > ref.rfind("/"):
        ref, tag = ref[:colon], ref[colon + 1:]
        if not _TAG_RE.match(tag):
            raise InvalidArgument(f"image reference {original!r} has an invalid tag {tag!r}")
    if not ref:
        raise InvalidArgument(f"image reference {original!r} has no repository name")
    domain, path = _split_domain(ref)
    if not _DOMAIN_RE.match(domain):
        raise InvalidArgument(f"image reference {original!r} has an invalid registry host {domain!r}")
    for comp in path.split("/"):
        if not _COMPONENT_RE.match(comp):
            hint = " (repository names must be lower case)" if comp.lower() != comp else ""
            raise InvalidArgument(f"image reference {original!r} has an invalid repository name component "
                                  f"{comp!r}{hint}")
    if len(f"{domain}/{path}") > NAME_MAX:
        raise InvalidArgument(f"image reference {original!r} is longer than {NAME_MAX} characters")
    if not tag and not digest and default_tag:
        tag = DEFAULT_TAG
    return Reference(domain, path, tag, digest)


def try_parse(ref: str) -> Reference | None:
    try:
        return parse(ref)
    except InvalidArgument:
        return None

"""Registry authentication, sans-IO: parsing `WWW-Authenticate` challenges,
turning credentials into headers, building token requests and reading
token responses. Strings and bytes in, values out; the HTTP shell lives in
client.py."""

from __future__ import annotations

import base64
import binascii
import json
import time
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import urlencode

from runtime.errors import InvalidArgument


class AuthConfigLike(Protocol):
    """The credentials a PullImage request carries (CRI's AuthConfig)."""
    username: str
    password: str
    auth: str
    server_address: str
    identity_token: str
    registry_token: str


@dataclass(frozen=True)
class Challenge:
    scheme: str                      # lower case: "bearer", "basic"
    params: dict[str, str] = field(default_factory=dict)


def _skip_ws(s: str, i: int) -> int:
    while i < len(s) and s[i] in " \t":
        i += 1
    return i


def _token(s: str, i: int) -> tuple[str, int]:
    j = i
    while j < len(s) and s[j] not in " \t,=\"":
        j += 1
    return s[i:j], j


def _quoted(s: str, i: int) -> tuple[str, int]:
    # s[i] is the opening quote; backslash escapes the next character.
    out = []
    i += 1
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s):
            out.append(s[i + 1])
            i += 2
            continue
        if c == '"':
            return "".join(out), i + 1
        out.append(c)
        i += 1
    return "".join(out), i  # unterminated: take what there is


def parse_challenges(header: str) -> list[Challenge]:
    """Parses one `WWW-Authenticate` value, which may hold several
    challenges: `Bearer realm="https://a/token",service="reg",scope="x" , Basic realm="r"`."""
    out: list[Challenge] = []
    s = header or ""
    i = 0
    current: Challenge | None = None
    while i < len(s):
        i = _skip_ws(s, i)
        if i >= len(s):
            break
        if s[i] == ",":
            i += 1
            continue
        word, j = _token(s, i)
        if not word:
            i = j + 1  # stray character: skip it
            continue
        k = _skip_ws(s, j)
        if k < len(s) and s[k] == "=" and current is not None:
            k = _skip_ws(s, k + 1)
            if k < len(s) and s[k] == '"':
                value, i = _quoted(s, k)
            else:
                value, i = _token(s, k)
            current.params[word.lower()] = value
            continue
        # A new scheme; what follows may be its first parameter.
        current = Challenge(word.lower(), {})
        out.append(current)
        i = j
    return out


@dataclass(frozen=True)
class Credentials:
    """What a CRI AuthConfig or an auth file gives for one registry."""
    username: str = ""
    password: str = ""
    identity_token: str = ""   # OAuth2 refresh token for the token server
    registry_token: str = ""   # a bearer token to send as is

    @property
    def has_basic(self) -> bool:
        return bool(self.username)

    def basic_header(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    @property
    def empty(self) -> bool:
        return not (self.username or self.identity_token or self.registry_token)


def credentials_from(username: str = "", password: str = "", auth: str = "", identity_token: str = "",
                     registry_token: str = "") -> Credentials:
    """`auth` is base64("user:password"), as in Docker's config.json; it
    counts only when username is not given explicitly."""
    if auth and not username:
        try:
            decoded = base64.b64decode(auth.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise InvalidArgument("auth is not base64 of 'username:password'") from None
        user, sep, pw = decoded.partition(":")
        if not sep or not user:
            raise InvalidArgument("auth must be base64 of 'username:password'")
        username, password = user, pw
    return Credentials(username, password, identity_token, registry_token)


def credentials_from_json(data: bytes, where: str) -> Credentials:
    try:
        doc = json.loads(data)
    except ValueError as e:
        raise InvalidArgument(f"{where} is not valid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise InvalidArgument(f"{where} must be a JSON object with username/password or auth")
    fields = {k: str(doc.get(k, "")) for k in ("username", "password", "auth", "identity_token", "registry_token")}
    return credentials_from(**fields)


@dataclass(frozen=True)
class TokenRequest:
    method: str                      # "GET" or "POST"
    url: str
    headers: dict[str, str]
    body: bytes = b""


def token_request(ch: Challenge, scopes: list[str], creds: Credentials, client_id: str = "crispy") -> TokenRequest:
    """The request that asks the challenge's realm for a bearer token."""
    realm = ch.params.get("realm", "")
    if not realm.startswith(("http://", "https://")):
        raise InvalidArgument(f"registry sent a Bearer challenge with an unusable realm {realm!r}")
    service = ch.params.get("service", "")
    if creds.identity_token:
        # Docker's identity tokens are OAuth2 refresh tokens: POST form.
        form = [("grant_type", "refresh_token"), ("refresh_token", creds.identity_token), ("client_id", client_id)]
        if service:
            form.append(("service", service))
        form += [("scope", " ".join(scopes))] if scopes else []
        return TokenRequest("POST", realm, {"Content-Type": "application/x-www-form-urlencoded"},
                            urlencode(form).encode())
    query = ([("service", service)] if service else []) + [("scope", s) for s in scopes]
    sep = "&" if "?" in realm else "?"
    url = realm + (sep + urlencode(query) if query else "")
    headers = {"Authorization": creds.basic_header()} if creds.has_basic else {}
    return TokenRequest("GET", url, headers)


@dataclass(frozen=True)
class Token:
    value: str
    expires_at: float

    def valid(self, now: float | None = None) -> bool:
        return (now or time.monotonic()) < self.expires_at


def parse_token_response(body: bytes, now: float | None = None) -> Token:
    """`token` and `access_token` mean the same; `expires_in` defaults to
    60 s. A little margin keeps us from sending a token about to lapse."""
    try:
        doc = json.loads(body)
    except ValueError:
        raise InvalidArgument("the registry's token server answered with something that is not JSON") from None
    value = (doc.get("token") or doc.get("access_token")) if isinstance(doc, dict) else None
    if not isinstance(value, str) or not value:
        raise InvalidArgument("the registry's token server answered without a token")
    try:
        expires_in = float(doc.get("expires_in") or 60)
    except (TypeError, ValueError):
        expires_in = 60.0
    base = now if now is not None else time.monotonic()
    return Token(value, base + max(expires_in - 5, 1))


def pull_scope(repository: str) -> str:
    return f"repository:{repository}:pull"

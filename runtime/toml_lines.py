"""Where a key sits in a TOML text: the line to name when a value is bad
(crispy's config files, registry hosts.toml files). tomllib gives values
without positions, so this follows [table] headers and dotted keys line by
line; good enough to point a person at the right line."""

from __future__ import annotations

import re
import tomllib
from typing import Any

Key = tuple[str, ...]


def _parse_key(text: str) -> Key | None:
    try:
        node: Any = tomllib.loads(f"{text} = 0")
    except tomllib.TOMLDecodeError:
        return None
    parts: list[str] = []
    while isinstance(node, dict):
        (k,) = node.keys()
        parts.append(k)
        node = node[k]
    return tuple(parts)


_TABLE = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]\s*(#.*)?$")
_ASSIGN = re.compile(r"^\s*((?:[A-Za-z0-9_-]+|\"(?:[^\"\\]|\\.)*\"|'[^']*')"
                     r"(?:\s*\.\s*(?:[A-Za-z0-9_-]+|\"(?:[^\"\\]|\\.)*\"|'[^']*'))*)\s*=")


def line_of(text: str, key: Key) -> int | None:
    """The 1-based line that sets `key` (or the table holding it), by a
    line scan that follows [table] headers and dotted keys. Multi-line
    values and inline tables hide their inner keys: then the line of the
    nearest enclosing key is given."""
    table: Key = ()
    best: tuple[int, int] | None = None  # (matched length, line)
    for n, line in enumerate(text.splitlines(), 1):
        m = _TABLE.match(line)
        if m:
            parsed = _parse_key(m.group(1))
            if parsed is not None:
                table = parsed
                here = table
            else:
                continue
        else:
            a = _ASSIGN.match(line)
            if not a:
                continue
            parsed = _parse_key(a.group(1))
            if parsed is None:
                continue
            here = table + parsed
        common = len(here) if key[:len(here)] == here else 0
        if common and (best is None or common > best[0]):
            best = (common, n)
            if common == len(key):
                return n
    return best[1] if best else None

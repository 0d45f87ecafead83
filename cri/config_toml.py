"""Writes configuration back out as TOML: `crispy config` (a file that
loads back to the same config, to seed /etc/crispy/crispy.toml with) and
`crispy config --origins` (every key, flat, with the file and line or flag
that set it). tomllib only reads; tomli-w writes the same TOML 1.0 it reads,
quoting keys such as registries."docker.io" and escaping strings correctly."""

from __future__ import annotations

from typing import Any

import tomli_w

from cri import config_files

HEADER = ("# crispy's effective configuration (`crispy config`); drop-ins in crispy.d/*.toml beside the main file\n"
          "# are merged over it in lexical order.\n")


def _no_none(data: dict[str, Any]) -> dict[str, Any]:
    # TOML has no null: a key whose value is None is the same as a key left out.
    return {k: (_no_none(v) if isinstance(v, dict) else v) for k, v in data.items() if v is not None}


def dumps(data: dict[str, Any], header: str = HEADER) -> str:
    return header + tomli_w.dumps(_no_none(data))


def value(v: Any) -> str:
    """One value as TOML on one line (inline arrays and tables)."""
    if isinstance(v, list):
        return "[" + ", ".join(value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{config_files.dotted((k,))} = {value(x)}" for k, x in v.items()) + "}"
    return tomli_w.dumps({"v": v}).strip()[len("v = "):]


def origins(data: dict[str, Any], merged: config_files.Merged) -> str:
    """Every leaf key as a dotted TOML assignment (so the listing is itself
    valid TOML) with where it came from as a comment."""
    rows = []
    for key, v in config_files.leaves(_no_none(data)):
        layer = merged.origins.get(key)
        rows.append((f"{config_files.dotted(key)} = {value(v)}", layer.where(key) if layer else "default"))
    width = min(72, max((len(a) for a, _ in rows), default=0))
    return "".join(f"{a:<{width}}  # {b}\n" for a, b in rows)

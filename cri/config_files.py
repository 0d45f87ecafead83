"""Where crispy's configuration comes from, layer by layer: the main file,
its drop-ins (`crispy.d/*.toml` beside it, in lexical order), then --set and
the per-key flags. Layers are merged the way containerd and CRI-O merge
drop-ins: tables key by key, everything else (scalars, lists) replaced
whole. Each leaf key remembers the layer that set it last, so a bad value
can be blamed on its file and line and `crispy config --origins` can say
where every value came from.

Knows nothing of the schema: cri/config.py checks each layer against it."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime.errors import InvalidArgument
from runtime.toml_lines import line_of

DROPIN_DIR = "crispy.d"

Key = tuple[str, ...]


@dataclass
class Layer:
    label: str                 # a file's path, "--set", "--log-level"...
    data: dict[str, Any]
    text: str = ""             # the file's text, to find a key's line in
    is_file: bool = False

    def where(self, key: Key) -> str:
        """"path:line" (or just the label) of `key` in this layer."""
        if not self.is_file:
            return self.label
        line = line_of(self.text, key)
        return f"{self.label}:{line}" if line else self.label


@dataclass
class Merged:
    data: dict[str, Any] = field(default_factory=dict)
    # leaf key -> the layer that set it last
    origins: dict[Key, Layer] = field(default_factory=dict)


def dropin_dir(main: Path) -> Path:
    """Drop-ins sit beside whichever main file is used."""
    return main.parent / DROPIN_DIR


def dropin_files(main: Path) -> list[Path]:
    d = dropin_dir(main)
    try:
        return sorted(p for p in d.iterdir() if p.suffix == ".toml" and p.is_file())
    except (FileNotFoundError, NotADirectoryError):
        return []
    except PermissionError as e:
        raise InvalidArgument(f"config drop-in directory {d} cannot be read: {e.strerror}") from None


def read_file(path: Path) -> Layer:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise InvalidArgument(f"config file {path} does not exist") from None
    except OSError as e:
        raise InvalidArgument(f"config file {path} cannot be read: {e.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        # tomllib's message ends with "(at line N, column M)".
        m = re.search(r"\(at line (\d+), column \d+\)", str(e))
        where = f"{path}:{m.group(1)}" if m else str(path)
        raise InvalidArgument(f"{where}: config file is not valid TOML: {e}") from None
    return Layer(str(path), data, text, is_file=True)


def read_layers(main: Path | None, required: bool) -> list[Layer]:
    """The main file and then its drop-ins; a drop-in directory counts even
    when the main file is absent (the defaults are then its base). A
    `required` main file (named with --config) must exist."""
    if main is None:
        return []
    layers = [read_file(main)] if required or main.exists() else []
    return layers + [read_file(p) for p in dropin_files(main)]


def leaves(data: dict[str, Any], prefix: Key = ()) -> list[tuple[Key, Any]]:
    """Every non-table value with its key path; an empty table is a leaf."""
    out: list[tuple[Key, Any]] = []
    for k, v in data.items():
        if isinstance(v, dict) and v:
            out += leaves(v, prefix + (k,))
        else:
            out.append((prefix + (k,), v))
    return out


def merge(layers: list[Layer]) -> Merged:
    merged = Merged()
    for layer in layers:
        _merge_into(merged.data, layer.data)
        for key, _ in leaves(layer.data):
            # A table replaced by a scalar (or the reverse) takes the
            # origins of what it replaced with it.
            for old in [k for k in merged.origins if k[:len(key)] == key or key[:len(k)] == k]:
                del merged.origins[old]
            merged.origins[key] = layer
    return merged


def _merge_into(base: dict[str, Any], over: dict[str, Any]) -> None:
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _merge_into(base[k], v)
        elif isinstance(v, dict):
            base[k] = {}
            _merge_into(base[k], v)
        else:
            base[k] = v


def dotted(key: Key) -> str:
    """The key as TOML writes it: bare parts bare, others quoted."""
    return ".".join(p if re.fullmatch(r"[A-Za-z0-9_-]+", p) else '"' + p.replace("\\", "\\\\").replace('"', '\\"') + '"'
                    for p in key)

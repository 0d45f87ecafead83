"""Finding and validating the CNI network configuration.

Like the other CRI runtimes, crispy uses the first valid file of the config
directory in lexical order (`.conf`/`.json` hold one plugin, `.conflist` a
chain). The directory is re-read whenever it changes: the check is a stat of
the directory and its candidate files, cheap enough to do on every call.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SUPPORTED_VERSIONS = ("0.3.0", "0.3.1", "0.4.0", "1.0.0")
CONF_EXTENSIONS = (".conf", ".conflist", ".json")


class ConfigError(ValueError):
    """A network config file is not usable; the message says why."""


@dataclass(frozen=True)
class NetworkConfigList:
    name: str
    cni_version: str
    plugins: tuple[dict[str, Any], ...]
    disable_check: bool = False
    # Where it came from; "" for one rebuilt from persisted pod state.
    source: str = ""

    @property
    def plugin_types(self) -> list[str]:
        return [p["type"] for p in self.plugins]

    def to_dict(self) -> dict[str, Any]:
        """The conflist form, enough to rebuild it with `from_dict` (what a
        pod persists so that DEL uses the config its ADD used)."""
        return {"cniVersion": self.cni_version, "name": self.name, "disableCheck": self.disable_check,
                "plugins": [dict(p) for p in self.plugins]}

    @property
    def supports_check(self) -> bool:
        return version_at_least(self.cni_version, "0.4.0") and not self.disable_check


def version_at_least(version: str, minimum: str) -> bool:
    def key(v: str) -> tuple[int, ...]:
        return tuple(int(x) for x in v.split("."))
    return key(version) >= key(minimum)


def _check_version(doc: dict[str, Any]) -> str:
    version = doc.get("cniVersion")
    if not isinstance(version, str) or not version:
        raise ConfigError("cniVersion is missing")
    if version not in SUPPORTED_VERSIONS:
        raise ConfigError(f"cniVersion {version!r} is not supported (supported: {', '.join(SUPPORTED_VERSIONS)})")
    return version


def _check_name(doc: dict[str, Any]) -> str:
    name = doc.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError("network name is missing")
    # The name becomes a directory name for IPAM and part of iptables comments.
    if "/" in name or name in (".", "..") or any(c.isspace() for c in name):
        raise ConfigError(f"network name {name!r} must not contain '/' or spaces")
    return name


def _check_plugin(plugin: Any, where: str) -> dict[str, Any]:
    if not isinstance(plugin, dict):
        raise ConfigError(f"{where} is not a JSON object")
    ptype = plugin.get("type")
    if not isinstance(ptype, str) or not ptype:
        raise ConfigError(f"{where} has no plugin type")
    # The type names a binary in the bin dirs; never a path.
    if "/" in ptype or ptype in (".", ".."):
        raise ConfigError(f"{where} type {ptype!r} must be a plain plugin name")
    caps = plugin.get("capabilities", {})
    if not isinstance(caps, dict):
        raise ConfigError(f"{where} capabilities must be an object")
    return plugin


def from_dict(doc: Any, source: str = "") -> NetworkConfigList:
    """A conflist document (the `plugins` form)."""
    if not isinstance(doc, dict):
        raise ConfigError("not a JSON object")
    version = _check_version(doc)
    name = _check_name(doc)
    plugins = doc.get("plugins")
    if not isinstance(plugins, list) or not plugins:
        raise ConfigError("plugins must be a non-empty list")
    checked = tuple(_check_plugin(p, f"plugin {i}") for i, p in enumerate(plugins))
    disable_check = doc.get("disableCheck", False)
    if isinstance(disable_check, str):  # some writers quote it
        disable_check = disable_check.lower() == "true"
    return NetworkConfigList(name, version, checked, bool(disable_check), source)


def from_single_plugin(doc: Any, source: str = "") -> NetworkConfigList:
    """A `.conf` document: one plugin whose config carries name and version."""
    if not isinstance(doc, dict):
        raise ConfigError("not a JSON object")
    if "plugins" in doc:
        raise ConfigError("holds a plugin list; name it .conflist")
    version = _check_version(doc)
    name = _check_name(doc)
    plugin = _check_plugin(doc, "the plugin")
    return NetworkConfigList(name, version, (plugin,), False, source)


def parse_file(filename: str, data: bytes) -> NetworkConfigList:
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise ConfigError(f"not valid JSON: {e}") from None
    if filename.endswith(".conflist"):
        return from_dict(doc, filename)
    return from_single_plugin(doc, filename)


@dataclass
class DirScan:
    """What the config directory holds right now."""
    conf_dir: str
    network: NetworkConfigList | None = None
    # "path: reason" for every candidate file that was skipped.
    invalid: list[str] = field(default_factory=list)
    exists: bool = True

    def problem(self) -> str:
        """Why there is no network, for Status and for a failing RunPodSandbox."""
        if self.network is not None:
            return ""
        if not self.exists:
            return (f"no CNI network config: {self.conf_dir} does not exist "
                    "(run `crispy cni-install` for the default network)")
        if not self.invalid:
            return f"no CNI network config in {self.conf_dir} (run `crispy cni-install` for the default network)"
        return f"no valid CNI network config in {self.conf_dir}: " + "; ".join(f"invalid file {p}"
                                                                               for p in self.invalid)


def _candidates(conf_dir: str) -> list[os.DirEntry[str]]:
    with os.scandir(conf_dir) as it:
        entries = [e for e in it if e.name.endswith(CONF_EXTENSIONS) and not e.name.startswith(".")]
    return sorted(entries, key=lambda e: e.name)


def scan_dir(conf_dir: str) -> DirScan:
    scan = DirScan(conf_dir)
    try:
        entries = _candidates(conf_dir)
    except FileNotFoundError:
        scan.exists = False
        return scan
    except OSError as e:
        scan.invalid.append(f"{conf_dir}: cannot list it: {e.strerror}")
        return scan
    for entry in entries:
        path = os.path.join(conf_dir, entry.name)
        try:
            data = Path(path).read_bytes()
            scan.network = parse_file(path, data)
            return scan
        except IsADirectoryError:
            continue
        except OSError as e:
            scan.invalid.append(f"{path}: {e.strerror}")
        except ConfigError as e:
            scan.invalid.append(f"{path}: {e}")
    return scan


def _signature(conf_dir: str) -> tuple:
    try:
        entries = _candidates(conf_dir)
    except OSError:
        return ("missing",)
    sig = []
    for e in entries:
        try:
            st = e.stat()
        except OSError:
            continue
        sig.append((e.name, st.st_ino, st.st_mtime_ns, st.st_size))
    return tuple(sig)


class ConfigSource:
    """The current scan of one config directory, re-read when it changes."""

    def __init__(self, conf_dir: str) -> None:
        self.conf_dir = conf_dir
        self._sig: tuple | None = None
        self._scan = DirScan(conf_dir)

    def current(self) -> DirScan:
        sig = _signature(self.conf_dir)
        if sig != self._sig:
            self._scan = scan_dir(self.conf_dir)
            self._sig = sig
        return self._scan

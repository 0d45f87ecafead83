"""crispy's configuration: a TOML file, defaults that work with no file, and
a command-line flag for every key.

Each table of the file is a dataclass below; each field is a key. Flags are
derived from the fields (`[cni] conf_dir` -> `--cni-conf-dir`), so adding a
field adds its flag. Tables of tables (registries, runtime handlers) are set
from the file or with `--set 'registries."docker.io".mirrors=["..."]'`.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import re
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cri import config_files, config_help
from cri.metrics_settings import MetricsConfig, parse_address
from images.registry import hosts_dir
from images.settings import ImagesConfig, RegistryConfig, RegistryHostConfig
from runtime.cni.settings import CniConfig
from runtime.errors import InvalidArgument
from runtime.nri.settings import NriSettings

DEFAULT_CONFIG_PATH = Path("/etc/crispy/crispy.toml")



@dataclass
class RuntimeConfig:
    # "auto" probes crun then runc; a name or path picks one.
    oci_runtime: str = "auto"
    conmon: str = "conmon"
    # "cgroupfs" or "systemd"; kubelet's --cgroup-driver must match.
    cgroup_driver: str = "cgroupfs"
    # Parent cgroup for pods whose config names none.
    default_cgroup_parent: str = "/crispy"
    # Seconds StopPodSandbox gives containers still running between their
    # stop signal and SIGKILL (kubelet normally stopped them already).
    default_stop_timeout: int = 10
    # Most processes a container may have (its cgroup's pids.max); 0 = no limit.
    pids_limit: int = 0
    # Seconds CreateContainer may spend reading the image's /etc/passwd and
    # /etc/group (in a thread of its own) before it fails with DEADLINE_EXCEEDED.
    user_lookup_timeout: float = 30.0
    # Containers that name no seccomp profile get RuntimeDefault instead of
    # running unconfined (kubelet's --seccomp-default, for every client).
    seccomp_default: bool = False
    # runtime_handler name -> OCI runtime (name or path); "" is the default handler.
    handlers: dict[str, str] = field(default_factory=dict)


@dataclass
class StreamingConfig:
    address: str = "127.0.0.1"
    # 0 lets the kernel pick a free port.
    port: int = 0
    # Seconds a client gets to open all its streams after connecting.
    creation_timeout: float = 30.0
    # Seconds without a byte either way before a stream connection is closed.
    idle_timeout: float = 14400.0


@dataclass
class Config:
    socket: str = "/run/crispy/crispy.sock"
    data_root: str = "/var/lib/crispy"
    state_root: str = "/run/crispy"
    log_level: str = "info"
    # "text" or "json".
    log_format: str = "text"
    # Seconds in-flight calls get to finish on SIGTERM.
    shutdown_grace: float = 10.0
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    cni: CniConfig = field(default_factory=CniConfig)
    images: ImagesConfig = field(default_factory=ImagesConfig)
    streaming: StreamingConfig = field(default_factory=StreamingConfig)
    # Node Resource Interface plugins (runtime/nri/): on by default, as in containerd 2.x.
    nri: NriSettings = field(default_factory=NriSettings)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    # registry host ("docker.io", "localhost:5000") -> settings.
    registries: dict[str, RegistryHostConfig] = field(default_factory=dict)
    # The hosts directory (containerd's hosts.toml, docker's certs.d).
    registry: RegistryConfig = field(default_factory=RegistryConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)




def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(cls: type, data: dict[str, Any], where: str) -> Any:
    """Builds dataclass `cls` from TOML data, checking keys and types."""
    hints = _hints(cls)
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in hints:
            known = ", ".join(sorted(hints))
            raise InvalidArgument(f"config: unknown key {where}{key!r}; known keys here: {known}")
        kwargs[key] = _coerce_value(hints[key], value, f"{where}{key}")
    return cls(**kwargs)


def _coerce_value(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    # Hints are classes, never dataclass instances; the isinstance tells mypy so.
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise InvalidArgument(f"config: {where} must be a table")
        return _coerce(hint, value, f"{where}.")
    if origin is dict:
        _, vtype = typing.get_args(hint)
        if not isinstance(value, dict):
            raise InvalidArgument(f"config: {where} must be a table")
        return {str(k): _coerce_value(vtype, v, f"{where}.{k}") for k, v in value.items()}
    if origin is list:
        (itype,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise InvalidArgument(f"config: {where} must be a list")
        return [_coerce_value(itype, v, where) for v in value]
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (str, int, float, bool) and not (isinstance(value, hint)
                                                and not (hint is int and isinstance(value, bool))):
        raise InvalidArgument(f"config: {where} must be {hint.__name__}, got {value!r}")
    return value


def _scalar_fields(cls: type, prefix: str = "") -> list[tuple[str, str, Any]]:
    """(flag name, dotted key, type) for every flag-settable key."""
    out = []
    for name, hint in _hints(cls).items():
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            out += _scalar_fields(hint, f"{prefix}{name}.")
        elif typing.get_origin(hint) is dict:
            continue
        else:
            dotted = f"{prefix}{name}"
            out.append(("--" + dotted.replace(".", "-").replace("_", "-"), dotted, hint))
    return out


def add_flags(parser: argparse.ArgumentParser, dest_prefix: str = "") -> None:
    """Adds --config, --set and one flag per key to `parser`. Nothing is
    set for a flag not given (SUPPRESS); `dest_prefix` keeps a subcommand's
    copies apart from the main parser's (cli.py folds them together)."""
    none = argparse.SUPPRESS
    parser.add_argument("--config", dest=dest_prefix + "config", metavar="PATH", default=none,
                        help=f"main TOML config file; drop-ins in {config_files.DROPIN_DIR}/*.toml beside it are "
                             f"merged over it in lexical order (default: {DEFAULT_CONFIG_PATH}, if it exists)")
    parser.add_argument("--set", dest=dest_prefix + "set", metavar="KEY=VALUE", action="append", default=none,
                        help="set any key, VALUE in TOML syntax, e.g. --set "
                             "'registries.\"localhost:5000\".insecure=true'; beats the files, loses to a key's own "
                             "flag (repeatable; default: none)")
    defaults = Config()
    for flag, dotted, hint in _scalar_fields(Config):
        dest = dest_prefix + "cfg:" + dotted
        owner_path, _, name = dotted.rpartition(".")
        owner = type(_get_dotted(defaults, owner_path)) if owner_path else Config
        text = config_help.help_for(dotted, owner, name, _get_dotted(defaults, dotted))
        if hint is bool:
            parser.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction, default=none, help=text)
        elif typing.get_origin(hint) is list:
            parser.add_argument(flag, dest=dest, action="append", default=none, metavar="VALUE",
                                help=text + " (repeat the flag for more)")
        else:
            parser.add_argument(flag, dest=dest, type=hint, default=none, metavar=hint.__name__.upper(), help=text)


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    parts = _split_dotted(dotted)
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise InvalidArgument(f"config: {dotted}: {part} is not a table")
    node[parts[-1]] = value


def _split_dotted(dotted: str) -> list[str]:
    # TOML's own parser handles quoted parts like registries."docker.io".mirrors.
    try:
        parsed = tomllib.loads(f"{dotted} = 0")
    except tomllib.TOMLDecodeError as e:
        raise InvalidArgument(f"config: bad key {dotted!r}: {e}") from None
    parts = []
    node: Any = parsed
    while isinstance(node, dict):
        (key,) = node.keys()
        parts.append(key)
        node = node[key]
    return parts


def load(args: argparse.Namespace | None = None, path: str | None = None) -> Config:
    """File < its drop-ins < --set < per-key flags."""
    return load_layers(args, path)[0]


def load_layers(args: argparse.Namespace | None = None,
                path: str | None = None) -> tuple[Config, config_files.Merged]:
    """The config and where each of its keys came from. Every layer is
    checked on its own first, so a bad key is blamed on its file and line."""
    args = args or argparse.Namespace()
    path = path or getattr(args, "config", None)
    layers = config_files.read_layers(Path(path) if path else DEFAULT_CONFIG_PATH, required=bool(path))
    for item in getattr(args, "set", None) or []:
        key, sep, raw = item.partition("=")
        if not sep:
            raise InvalidArgument(f"--set {item!r}: expected KEY=VALUE")
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw  # a bare word is a string
        data: dict[str, Any] = {}
        _set_dotted(data, key.strip(), value)
        layers.append(config_files.Layer(f"--set {key.strip()}", data))
    for name, value in vars(args).items():
        if name.startswith("cfg:") and value is not None:
            data = {}
            _set_dotted(data, name[4:], value)
            layers.append(config_files.Layer("--" + name[4:].replace(".", "-").replace("_", "-"), data))
    for layer in layers:
        try:
            _coerce(Config, layer.data, "")
        except InvalidArgument as e:
            raise _blamed(e, layer.where(_locate(Config, layer.data))) from None
    merged = config_files.merge(layers)
    cfg = _coerce(Config, merged.data, "")
    try:
        _validate(cfg)
    except InvalidArgument as e:
        # The longest key named in the message is the one to blame.
        named = [k for k in merged.origins
                 if re.search(r"(?<![\w.])" + re.escape(".".join(k)) + r"(?![\w])", e.message)]
        if not named:
            raise
        key = max(named, key=len)
        raise _blamed(e, merged.origins[key].where(key)) from None
    # Its files name themselves in their errors.
    hosts_dir.validate(cfg.registry.config_path)
    return cfg, merged


def _blamed(e: InvalidArgument, where: str) -> InvalidArgument:
    return InvalidArgument(f"config {where}: {e.message.removeprefix('config: ')}")


def _locate(cls: type, data: dict[str, Any], prefix: config_files.Key = ()) -> config_files.Key:
    """The first key of `data` that `cls` refuses (what _coerce complained of)."""
    hints = _hints(cls)
    for key, value in data.items():
        here = prefix + (key,)
        if key not in hints:
            return here
        hint = hints[key]
        if isinstance(hint, type) and dataclasses.is_dataclass(hint) and isinstance(value, dict):
            try:
                _coerce(hint, value, "")
            except InvalidArgument:
                return _locate(hint, value, here)
            continue
        if typing.get_origin(hint) is dict and isinstance(value, dict):
            _, vtype = typing.get_args(hint)
            for k, v in value.items():
                try:
                    _coerce_value(vtype, v, "")
                except InvalidArgument:
                    if isinstance(vtype, type) and dataclasses.is_dataclass(vtype) and isinstance(v, dict):
                        return _locate(vtype, v, here + (k,))
                    return here + (k,)
            continue
        try:
            _coerce_value(hint, value, "")
        except InvalidArgument:
            return here
    return prefix


# Keys whose value must be one of a fixed set, and numeric keys with a floor
# (and a ceiling): checked after the file, --set and flags are merged, so
# every way of setting a key gets the same one-line refusal.
_CHOICES: dict[str, tuple[str, ...]] = {
    "log_level": ("debug", "info", "warning", "error", "critical"),
    "log_format": ("text", "json"),
    "runtime.cgroup_driver": ("cgroupfs", "systemd"),
}
# key -> (floor, ceiling, whether the floor itself is allowed): a timeout of 0
# would fire at once, so timeouts must be more than 0.
_RANGES: dict[str, tuple[float, float | None, bool]] = {
    "shutdown_grace": (0, None, True),
    "runtime.default_stop_timeout": (0, None, True),
    "runtime.pids_limit": (0, None, True),
    "runtime.user_lookup_timeout": (0, None, False),
    "cni.plugin_timeout": (0, None, False),
    "images.max_concurrent_downloads": (1, None, True),
    "images.pull_stall_timeout": (0, None, False),
    "images.pull_min_rate": (0, None, True),  # 0 = no minimum
    "images.pull_rate_window": (0, None, False),
    "images.max_layer_unpacked_bytes": (0, None, True),  # 0 = no limit, for these three
    "images.max_layer_expansion_ratio": (0, None, True),
    "images.layer_expansion_floor_bytes": (0, None, True),
    "images.max_manifest_bytes": (1, None, True),
    "images.max_config_bytes": (1, None, True),
    "streaming.port": (0, 65535, True),
    "streaming.creation_timeout": (0, None, False),
    "streaming.idle_timeout": (0, None, False),
    "nri.registration_timeout": (0, None, False),
    "nri.request_timeout": (0, None, False),
}


def _get_dotted(cfg: Config, dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


def _validate(cfg: Config) -> None:
    for key, allowed in _CHOICES.items():
        value = _get_dotted(cfg, key)
        if value not in allowed:
            raise InvalidArgument(f"config: {key} must be one of {', '.join(allowed)}; got {value!r}")
    for key, (low, high, low_allowed) in _RANGES.items():
        value = _get_dotted(cfg, key)
        if value < low or (value == low and not low_allowed) or (high is not None and value > high):
            if high is not None:
                bound = f"between {low} and {high}"
            else:
                bound = f"at least {low}" if low_allowed else f"more than {low}"
            raise InvalidArgument(f"config: {key} must be {bound}; got {value!r}")
    for key in ("socket", "data_root", "state_root"):
        if not Path(getattr(cfg, key)).is_absolute():
            raise InvalidArgument(f"config: {key} must be an absolute path")
    for key in ("socket_path", "plugin_path", "plugin_config_path"):
        if cfg.nri.enable and not Path(getattr(cfg.nri, key)).is_absolute():
            raise InvalidArgument(f"config: nri.{key} must be an absolute path")
    if not cfg.runtime.oci_runtime:
        raise InvalidArgument("config: runtime.oci_runtime must be 'auto', a runtime name on PATH or an absolute path")
    for handler, runtime in cfg.runtime.handlers.items():
        if not runtime:
            raise InvalidArgument(f"config: runtime.handlers.{handler} must name an OCI runtime (a name on PATH or a "
                                  "path)")
    if not cfg.runtime.default_cgroup_parent.startswith("/") and cfg.runtime.cgroup_driver == "cgroupfs":
        raise InvalidArgument("config: runtime.default_cgroup_parent must be an absolute cgroup path such as /crispy "
                              "with the cgroupfs driver")
    if cfg.metrics.address:
        parse_address(cfg.metrics.address)
    try:
        for cidr in cfg.cni.default_subnet.split(","):
            ipaddress.ip_network(cidr.strip())
    except ValueError as e:
        raise InvalidArgument(f"config: cni.default_subnet must be a CIDR or two (IPv4,IPv6) separated by a comma: "
                              f"{e}") from None

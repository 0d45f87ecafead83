"""What each config key does, for its flag's --help. Keys not listed here
(a table added later) get the comment above their field in its dataclass,
so a new key documented in code is documented on the command line too."""

from __future__ import annotations

import ast
import functools
import inspect
import textwrap

HELP: dict[str, str] = {
    "socket": "unix socket the CRI gRPC API is served on",
    "data_root": "directory for images, container layers and persistent records",
    "state_root": "directory for pinned namespaces, runtime state and the daemon lock (a tmpfs)",
    "log_level": "least severe log level written: debug, info, warning, error or critical (debug logs one line "
                 "per RPC); reloaded on SIGHUP",
    "log_format": "log line format: text (key=value) or json (one object per line)",
    "shutdown_grace": "seconds in-flight calls get to finish on SIGTERM",
    "runtime.oci_runtime": "OCI runtime of the default handler: auto (crun where it works, else runc), a name on "
                           "PATH or a path",
    "runtime.conmon": "conmon binary: a name on PATH or a path",
    "runtime.cgroup_driver": "cgroupfs or systemd; must match kubelet's --cgroup-driver",
    "runtime.default_cgroup_parent": "parent cgroup for pods whose config names none",
    "runtime.default_stop_timeout": "seconds StopPodSandbox gives containers still running between their stop "
                                    "signal and SIGKILL",
    "runtime.pids_limit": "most processes per container (pids.max); 0 = no limit",
    "runtime.user_lookup_timeout": "seconds CreateContainer may spend reading the image's /etc/passwd and /etc/group",
    "runtime.seccomp_default": "containers naming no seccomp profile get RuntimeDefault (kubelet's --seccomp-default)",
    "cni.conf_dir": "CNI network config directory; the first valid file in lexical order is used, re-read on change",
    "cni.bin_dirs": "directories searched for CNI plugin binaries, in order",
    "cni.plugin_timeout": "seconds before a hung CNI plugin is killed",
    "cni.default_subnet": "subnet (or IPv4,IPv6 pair) of the default network `cni-install` writes; kubelet's pod "
                          "CIDR wins",
    "images.max_concurrent_downloads": "layer downloads in flight, node-wide",
    "images.pull_stall_timeout": "seconds a pull may receive no byte before it is cancelled",
    "images.pull_min_rate": "bytes/s a blob transfer must average over pull_rate_window, else it is cancelled "
                            "(0 = no minimum)",
    "images.pull_rate_window": "seconds over which pull_min_rate is measured",
    "images.max_manifest_bytes": "bigger manifests and indexes are refused",
    "images.max_config_bytes": "bigger image configs are refused",
    "images.max_layer_unpacked_bytes": "most bytes one layer's uncompressed tar may hold (0 = no limit)",
    "images.max_layer_expansion_ratio": "most uncompressed bytes per compressed byte of a layer bigger than "
                                        "layer_expansion_floor_bytes (0 = no limit)",
    "images.layer_expansion_floor_bytes": "layers up to this many uncompressed bytes are exempt from the ratio",
    "images.pinned_images": "image references reported pinned, which kubelet's image GC never removes; reloaded on "
                            "SIGHUP",
    "streaming.address": "address the exec/attach/port-forward streaming server listens on",
    "streaming.port": "port of the streaming server; 0 = any free port",
    "streaming.creation_timeout": "seconds a streaming client gets to open all its streams",
    "streaming.idle_timeout": "seconds without a byte either way before a stream connection is closed",
    "registry.config_path": "hosts directory in containerd's format (<host>/hosts.toml) or docker's certs.d "
                            "(<host>/ca.crt, client.cert, client.key); re-read when it changes",
}


@functools.cache
def field_comments(cls: type) -> dict[str, str]:
    """field name -> the comment lines just above it in `cls`'s source."""
    try:
        lines, _ = inspect.getsourcelines(cls)
    except (OSError, TypeError):
        return {}
    source = textwrap.dedent("".join(lines))
    src_lines = source.splitlines()
    out: dict[str, str] = {}
    for node in ast.parse(source).body[0].body:  # type: ignore[attr-defined]
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            comment: list[str] = []
            n = node.lineno - 2
            while n >= 0 and src_lines[n].strip().startswith("#"):
                comment.insert(0, src_lines[n].strip().lstrip("#").strip())
                n -= 1
            if comment:
                out[node.target.id] = " ".join(comment)
    return out


def help_for(dotted: str, owner: type, name: str, default: object) -> str:
    text = HELP.get(dotted) or field_comments(owner).get(name) or f"config key {dotted}"
    shown = "none" if default in ("", [], None) else default
    if isinstance(shown, list):
        shown = ",".join(str(x) for x in shown)
    # argparse formats help with %.
    return f"{text} (key {dotted}; default: {shown})".replace("%", "%%")

"""Debian's containerd 1.6 with its built-in CRI plugin, started on private
temp roots with a generated config.toml, so the bench never touches a system
containerd and two instances (runc and crun) can run side by side."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from bench.process import DaemonProcess

CONTAINERD_BIN = "/usr/bin/containerd"


@dataclass
class ContainerdSettings:
    base: Path                 # private root; everything the instance writes is below it
    cni_conf_dir: str
    cni_bin_dir: str
    registry_host: str         # "127.0.0.1:PORT", served over plain http
    sandbox_image: str
    oci_binary: str = "runc"   # BinaryName of the runc v2 shim: "runc" or "crun"

    @property
    def socket(self) -> str:
        return str(self.base / "containerd.sock")

    @property
    def root(self) -> Path:
        return self.base / "root"

    @property
    def state(self) -> Path:
        return self.base / "state"


def _q(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def render_config(s: ContainerdSettings) -> str:
    """config.toml (version 2) for one bench instance."""
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return "\n".join([
        "version = 2",
        f"root = {_q(str(s.root))}",
        f"state = {_q(str(s.state))}",
        # The snapshotters below either need tools this host lacks or only
        # slow start-up; the bench uses overlayfs.
        'disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",'
        ' "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",'
        ' "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]',
        "",
        "[grpc]",
        f"  address = {_q(s.socket)}",
        "",
        "[debug]",
        '  level = "warn"',
        "",
        '[plugins."io.containerd.internal.v1.opt"]',
        f"  path = {_q(str(s.base / 'opt'))}",
        "",
        f"[{cri}]",
        f"  sandbox_image = {_q(s.sandbox_image)}",
        # Two instances run at once: each streaming server takes a free port.
        '  stream_server_address = "127.0.0.1"',
        '  stream_server_port = "0"',
        # Root here cannot lower oom_score_adj (no CAP_SYS_RESOURCE);
        # unrestricted, the pause container's -998 would fail every pod.
        "  restrict_oom_score_adj = true",
        "  enable_selinux = false",
        "  disable_apparmor = true",
        "",
        f"[{cri}.containerd]",
        '  snapshotter = "overlayfs"',
        '  default_runtime_name = "runc"',
        "",
        f"[{cri}.containerd.runtimes.runc]",
        '  runtime_type = "io.containerd.runc.v2"',
        "",
        f"[{cri}.containerd.runtimes.runc.options]",
        f"  BinaryName = {_q(s.oci_binary)}",
        "  SystemdCgroup = false",
        "",
        f"[{cri}.cni]",
        f"  bin_dir = {_q(s.cni_bin_dir)}",
        f"  conf_dir = {_q(s.cni_conf_dir)}",
        "  max_conf_num = 1",
        "",
        f'[{cri}.registry.mirrors.{_q(s.registry_host)}]',
        f'  endpoint = [{_q("http://" + s.registry_host)}]',
        "",
        f'[{cri}.registry.configs.{_q(s.registry_host)}.tls]',
        "  insecure_skip_verify = true",
        "",
    ])


class ContainerdProcess(DaemonProcess):
    name = "containerd"

    def __init__(self, settings: ContainerdSettings) -> None:
        super().__init__(settings.base, settings.socket)
        self.settings = settings
        self.config_path = settings.base / "config.toml"

    def prepare(self) -> None:
        self.config_path.write_text(render_config(self.settings))

    def argv(self) -> list[str]:
        return [CONTAINERD_BIN, "--config", str(self.config_path)]

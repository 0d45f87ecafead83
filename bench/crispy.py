"""crispy started for a bench run: its own temp roots and socket, the bench
CNI conf dir and the loopback registry marked insecure (plain http)."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from bench.process import DaemonProcess


@dataclass
class CrispySettings:
    base: Path
    cni_conf_dir: str
    cni_bin_dir: str
    registry_host: str
    oci_runtime: str = "auto"   # "auto", "runc" or "crun"
    metrics_address: str = ""   # the Prometheus endpoint; "" = off

    @property
    def socket(self) -> str:
        return str(self.base / "crispy.sock")


def render_config(s: CrispySettings) -> str:
    q = json.dumps
    return "\n".join([
        f"socket = {q(s.socket)}",
        f"data_root = {q(str(s.base / 'data'))}",
        f"state_root = {q(str(s.base / 'state'))}",
        # Debug, as JSON: the bench reads the CNI plugin timings from the
        # log. It costs crispy one log line per RPC, which is measured too.
        'log_level = "debug"',
        'log_format = "json"',
        "",
        "[runtime]",
        f"oci_runtime = {q(s.oci_runtime)}",
        "",
        "[cni]",
        f"conf_dir = {q(s.cni_conf_dir)}",
        f"bin_dirs = [{q(s.cni_bin_dir)}]",
        "",
        "[metrics]",
        f"address = {q(s.metrics_address)}",
        "",
        f"[registries.{q(s.registry_host)}]",
        "insecure = true",
        "",
        # NRI on the run's own socket: the node's may be containerd's.
        "[nri]",
        f"socket_path = {q(str(s.base / 'nri' / 'nri.sock'))}",
        f"plugin_path = {q(str(s.base / 'nri' / 'plugins'))}",
        f"plugin_config_path = {q(str(s.base / 'nri' / 'conf'))}",
        "",
    ])


class CrispyProcess(DaemonProcess):
    name = "crispy"

    def __init__(self, settings: CrispySettings) -> None:
        super().__init__(settings.base, settings.socket)
        self.settings = settings
        self.config_path = settings.base / "crispy.toml"

    def prepare(self) -> None:
        # Searchable, not listable, like /run on a node: user-namespaced
        # pods' roots sit beside the state root and must be reachable by the
        # pods' unprivileged host IDs.
        os.chmod(self.settings.base, 0o711)
        self.config_path.write_text(render_config(self.settings))

    def argv(self) -> list[str]:
        return [sys.executable, "-m", "cri.cli", "--config", str(self.config_path)]

"""Runs a real crispy daemon as a subprocess on throwaway roots, for tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cri.client import CRIClient


class DaemonProcess:
    def __init__(self, base: Path, extra_args: list[str] | None = None, config_text: str | None = None,
                 env: dict[str, str | None] | None = None) -> None:
        self.base = base
        # Added to (or, with None values, removed from) the test's environment
        # for every start; tests may change it between restarts.
        self.env: dict[str, str | None] = dict(env or {})
        self.socket = str(base / "run" / "crispy.sock")
        self.data_root = str(base / "data")
        self.state_root = str(base / "run" / "state")
        self.log_path = base / "crispy.log"
        self.args = [
            sys.executable, "-m", "cri.cli",
            "--socket", self.socket, "--data-root", self.data_root, "--state-root", self.state_root,
            "--log-level", "debug",
            # NRI on a socket of the test's own, never the node's, and no
            # pre-installed plugins.
            "--nri-socket-path", str(base / "nri" / "nri.sock"), "--nri-plugin-path", str(base / "nri" / "plugins"),
            "--nri-plugin-config-path", str(base / "nri" / "conf"),
            *(extra_args or []),
        ]
        if config_text is not None:
            cfg = base / "crispy.toml"
            cfg.write_text(config_text)
            self.args += ["--config", str(cfg)]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, wait: bool = True) -> "DaemonProcess":
        self._log = open(self.log_path, "ab")
        env = dict(os.environ)
        for k, v in self.env.items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = v
        self.proc = subprocess.Popen(self.args, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        if wait:
            deadline = time.monotonic() + 30
            # After a kill the old socket file is still there: wait for a
            # daemon that answers on it, not for the file.
            while not self._answers():
                if self.proc.poll() is not None:
                    self._log.close()
                    raise RuntimeError(f"crispy exited {self.proc.returncode}:\n{self.log()}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"crispy did not create its socket:\n{self.log()}")
                time.sleep(0.05)
        return self

    def _answers(self) -> bool:
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(self.socket)
            return True
        except OSError:
            return False
        finally:
            probe.close()

    def client(self) -> CRIClient:
        c = CRIClient(self.socket, timeout=60)
        c.wait_ready(10)
        return c

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


def tmp_base() -> Path:
    # Short path: unix socket paths are limited to 108 bytes.
    return Path(tempfile.mkdtemp(prefix="crispy-t-", dir="/tmp"))

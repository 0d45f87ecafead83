"""A daemon subprocess that is ready once its socket exists, logs to a file
and is stopped with SIGTERM (then SIGKILL) — shared by the crispy and
containerd launchers."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path


class DaemonProcess:
    name = "daemon"

    def __init__(self, base: Path, socket: str) -> None:
        self.base = base
        self.socket = socket
        self.log_path = base / f"{self.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def argv(self) -> list[str]:
        raise NotImplementedError

    def prepare(self) -> None:
        """Writes config files before the process starts."""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 30.0) -> "DaemonProcess":
        self.base.mkdir(parents=True, exist_ok=True)
        self.prepare()
        self._log = open(self.log_path, "ab")
        # Own session: a Ctrl-C at the bench's terminal must not kill the
        # daemon before the bench has removed its pods through CRI.
        self.proc = subprocess.Popen(self.argv(), stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        while not os.path.exists(self.socket):
            if self.proc.poll() is not None:
                self._log.close()
                raise RuntimeError(f"{self.name} exited {self.proc.returncode}: {self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} did not create {self.socket}: {self.log_tail()}")
            time.sleep(0.05)
        return self

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if not self._log.closed:
            self._log.close()
        return self.proc.returncode

"""One runtime under test: its daemon, a CRI client to it and the clean-up
that removes everything it created (through CRI first, as kubelet would)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from bench import measure
from bench.containerd import ContainerdProcess, ContainerdSettings
from bench.crispy import CrispyProcess, CrispySettings
from bench.process import DaemonProcess
from cri.client import CRIClient
from cri.proto import api_pb2 as pb
from runtime import host

# name -> (kind, OCI runtime)
KNOWN_TARGETS: dict[str, tuple[str, str]] = {
    "crispy": ("crispy", "auto"),
    "crispy-runc": ("crispy", "runc"),
    "crispy-crun": ("crispy", "crun"),
    # crispy with its Prometheus endpoint on (scraped once before the idle
    # reading): the memory scenarios show what the exporter costs.
    "crispy-metrics": ("crispy", "auto"),
    "containerd-runc": ("containerd", "runc"),
    "containerd-crun": ("containerd", "crun"),
}


def describe_error(exc: BaseException) -> str:
    """One line: the gRPC code and message, or the exception type and text."""
    if isinstance(exc, grpc.RpcError) and hasattr(exc, "code"):
        code = exc.code()
        details = exc.details() if hasattr(exc, "details") else ""
        return f"{code.name if code else 'UNKNOWN'}: {details}".strip()
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".strip()


@dataclass
class Target:
    name: str
    kind: str
    oci_runtime: str
    base: Path
    process: DaemonProcess | None = None
    client: CRIClient | None = None
    start_error: str | None = None
    idle: measure.MemorySnapshot | None = None
    version: str = ""
    notes: list[str] = field(default_factory=list)
    # Running pods shared by the scenarios that measure a loaded node (bench.fleet).
    fleet: Any = None

    @property
    def marker(self) -> str:
        """A string every helper process of this target names on its command line."""
        return str(self.base) + "/"  # the slash keeps "crispy" from matching "crispy-runc"

    @property
    def log_root(self) -> str:
        return str(self.base / "podlogs")

    def start(self, cni_conf_dir: str, cni_bin_dir: str, registry_host: str, sandbox_image: str) -> None:
        if self.oci_runtime == "auto":
            # crispy's own rule, evaluated now (the host may just have changed).
            choice = host.choose_oci_runtime("auto", host.detect_cgroup_layout())
            self.oci_runtime = f"auto: {choice.name}" if choice else "auto: none found"
        if self.kind == "crispy":
            self.process = CrispyProcess(CrispySettings(
                self.base, cni_conf_dir, cni_bin_dir, registry_host, self.oci_runtime.split(":")[0],
                metrics_address="127.0.0.1:0" if self.name.endswith("-metrics") else ""))
        else:
            self.process = ContainerdProcess(ContainerdSettings(self.base, cni_conf_dir, cni_bin_dir, registry_host,
                                                                sandbox_image, self.oci_runtime))
        try:
            self.process.start()
            self.client = CRIClient(self.process.socket, timeout=180)
            self.client.wait_ready(20)
            v = self.client.version()
            self.version = f"{v.runtime_name} {v.runtime_version}"
            if self.name.endswith("-metrics"):
                self.scrape_metrics()
            time.sleep(1.0)  # let start-up allocations settle before the idle reading
            self.idle = measure.snapshot(self.process.pid, self.marker)
        except Exception as e:  # noqa: BLE001 - any start failure is reported, not raised
            self.start_error = f"did not start: {describe_error(e)}"
            self.notes.append(self.start_error)

    def scrape_metrics(self) -> int:
        """GET /metrics once (the address from crispy's Status); its size."""
        assert self.client is not None
        info = self.client.runtime.Status(pb.StatusRequest(verbose=True)).info
        address = json.loads(info["metrics"])["address"]
        with urllib.request.urlopen(f"http://{address}/metrics", timeout=30) as r:
            return len(r.read())

    def load_image(self, image, ref: str) -> None:
        """`crispy load` of an imagebuild Image tagged `ref` (crispy only)."""
        from tests.imagebuild import write_docker_archive

        assert self.kind == "crispy" and self.process is not None
        archive = self.base / "load.tar"
        write_docker_archive(image, archive, ref)
        try:
            r = subprocess.run([*self.process.argv(), "load", str(archive)], capture_output=True, text=True,
                               timeout=120)
        finally:
            archive.unlink(missing_ok=True)
        if r.returncode != 0:
            raise RuntimeError(f"crispy load failed: {r.stderr.strip()[-300:]}")
        note = f"{ref} imported with 'crispy load' because crispy's PullImage is UNIMPLEMENTED"
        if note not in self.notes:
            self.notes.append(note)

    def log_offset(self) -> int:
        try:
            return self.process.log_path.stat().st_size if self.process else 0
        except OSError:
            return 0

    def cni_ms_since(self, offset: int, command: str = "ADD") -> float | None:
        """Milliseconds crispy's CNI plugin calls of `command` took, from its
        JSON debug log after `offset`; None for a runtime that does not log them."""
        if self.kind != "crispy" or self.process is None:
            return None
        total = 0.0
        with open(self.process.log_path, "rb") as f:
            f.seek(offset)
            for raw in f:
                if b"CNI plugin call" not in raw:
                    continue
                try:
                    entry = json.loads(raw)
                except ValueError:
                    continue
                if entry.get("msg") == "CNI plugin call" and entry.get("command") == command:
                    total += float(entry.get("ms", 0.0))
        return total

    def exited(self) -> str | None:
        """Why the daemon is gone (exit code and last log line), or None."""
        proc = self.process.proc if self.process else None
        if proc is None or proc.poll() is None:
            return None
        tail = self.process.log_tail(1).strip()
        return f"{self.kind} daemon exited with code {proc.returncode}" + (f"; last log line: {tail}" if tail else "")

    def remove_all_pods(self) -> list[str]:
        """Stops and removes every pod through CRI; returns the errors seen."""
        errors: list[str] = []
        if self.client is None:
            return errors
        try:
            pods = self.client.list_pod_sandboxes()
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.UNIMPLEMENTED:
                errors.append(f"ListPodSandbox: {describe_error(e)}")
            return errors
        for pod in pods:
            for call in (self.client.stop_pod_sandbox, self.client.remove_pod_sandbox):
                try:
                    call(pod.id)
                except grpc.RpcError as e:
                    errors.append(f"{call.__name__} {pod.id[:12]}: {describe_error(e)}")
        return errors

    def stop(self) -> list[str]:
        """Removes pods, stops the daemon, kills leaked helpers, unmounts and
        deletes the private root. Returns what had to be forced (leaks)."""
        gone = self.exited()
        problems = [gone] if gone else self.remove_all_pods()
        if self.client is not None:
            self.client.close()
        if self.process is not None:
            self.process.stop()
            daemon_pid = self.process.pid if self.process.proc else -1
            deadline = time.monotonic() + 10
            leaked = measure.helper_pids(self.marker, {daemon_pid})
            while leaked and time.monotonic() < deadline:
                time.sleep(0.2)
                leaked = measure.helper_pids(self.marker, {daemon_pid})
            for pid in leaked:
                info = measure.proc_mem(pid)
                problems.append(f"helper process {pid} ({info.comm if info else '?'}) outlived the daemon; killed")
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for mnt in mounts_under(self.base):
            if subprocess.run(["umount", "-l", mnt], capture_output=True).returncode != 0:
                problems.append(f"could not unmount {mnt}")
        shutil.rmtree(self.base, ignore_errors=True)
        return problems


def mounts_under(root: Path) -> list[str]:
    """Mount points below `root`, deepest first."""
    prefix = str(root).rstrip("/") + "/"
    found = []
    with open("/proc/self/mounts") as f:
        for line in f:
            mnt = line.split()[1].replace("\\040", " ")
            if mnt.startswith(prefix):
                found.append(mnt)
    return sorted(set(found), key=lambda m: m.count("/"), reverse=True)

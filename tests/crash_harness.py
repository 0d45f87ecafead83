"""Crash-injection harness: make the real daemon die by SIGKILL at a named
step (runtime/crashpoints.py, `CRISPY_CRASH_AT`), restart it on the same
roots and check what the node holds afterwards.

`CrashRig` owns one daemon on its own roots and its own CNI network (a
`PodNet` from test_cni_integration: its own bridge, subnet and IPAM dataDir);
`rig.crash(call)` runs a CRI call that must kill the daemon, `rig.restart()`
brings it back unarmed while the dead one is still an unreaped zombie (its
pid then looks alive to `kill(pid, 0)`, as after a real crash under a
supervisor that has not reaped it yet), and `rig.leaks()` is the zero-leak
inventory: mounts, processes, namespace pins, cgroups, IPAM reservations,
bridge ports, iptables rules and state files that belong to the rig.

Test modules parametrize over step names: pod and pull steps in
tests/integration/test_crash_pods.py, container steps and the faults (conmon, infra,
namespace pin) in tests/integration/test_crash_containers.py.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

import grpc

from cri.client import CRIClient
from tests.daemon_proc import DaemonProcess, tmp_base
from tests.integration.test_cni_integration import CNI_BIN, SHARED_CHAINS, PodNet, iptables_rules
from tests.pods_fixtures import leftover_cgroups, leftover_mounts, leftover_processes, start_pod_daemon

ENV = "CRISPY_CRASH_AT"


def _state(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rfind(")") + 2]


def cni_chains() -> set[str]:
    """Every per-pod CNI-* chain on the node (portmap's shared top-level
    chains stay after the last DEL by design)."""
    return {r.split()[1][1:] for r in iptables_rules()
            if r.split()[1].startswith(":CNI-") and r.split()[1][1:] not in SHARED_CHAINS}


def processes_mentioning(base: Path) -> list[tuple[int, str]]:
    """Processes whose command line or environment names a path under
    `base`: CNI plugins (CNI_NETNS), infras (CRISPY_POD_DIR), conmon."""
    key = (str(base) + "/").encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        pid = int(entry)
        if _state(pid) in (None, "Z", "X"):
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            env = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if key in cmd or key in env:
            found.append((pid, cmd.replace(b"\0", b" ").decode(errors="replace")))
    return found


class CrashRig:
    def __init__(self, net: PodNet, extra_args: list[str] | None = None, crash_at: str = "") -> None:
        self.net = net
        self.base = tmp_base()
        self.chains_before = cni_chains()
        args = ["--cni-conf-dir", str(net.conf_dir), "--cni-bin-dirs", CNI_BIN, *(extra_args or [])]
        self.daemon: DaemonProcess = start_pod_daemon(self.base, args, env={ENV: crash_at or None})
        # Dead daemons kept unreaped until the rig is closed.
        self._zombies: list[Any] = []

    def client(self) -> CRIClient:
        return self.daemon.client()

    def crash(self, call: Callable[[CRIClient], Any], timeout: float = 30) -> None:
        """Runs `call`, which must make the daemon SIGKILL itself; returns
        once the daemon is dead, without reaping it."""
        proc = self.daemon.proc
        assert proc is not None
        try:
            with CRIClient(self.daemon.socket, timeout=timeout) as c:
                result = call(c)
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.UNAVAILABLE, f"{e.code()}: {e.details()}\n{self.daemon.log()[-4000:]}"
        else:
            raise AssertionError(f"the call returned {result!r} instead of killing the daemon")
        deadline = time.monotonic() + timeout
        while _state(proc.pid) not in ("Z", None):
            assert time.monotonic() < deadline, "the daemon did not die"
            time.sleep(0.01)
        assert "serving" in self.daemon.log()

    def restart(self) -> None:
        dead = self.daemon.proc
        self._zombies.append(dead)
        self.daemon._log.close()
        self.daemon.env[ENV] = None
        self.daemon.start()

    def stop(self) -> None:
        if self.daemon.proc is not None and self.daemon.proc.poll() is None:
            assert self.daemon.stop() == 0, self.daemon.log()[-4000:]

    def close(self) -> None:
        try:
            self.stop()
        finally:
            # A test that failed half-way must not leave NAT rules or
            # addresses on the node.
            left = self.leaks()
            if left["iptables"] or left["ipam"] or left["bridge_ports"]:
                self._clean_network()
            for z in self._zombies:
                if z.returncode is None:
                    z.wait()
                    assert z.returncode == -signal.SIGKILL
            self._zombies.clear()

    # ---- the inventory ---------------------------------------------------

    def leaks(self) -> dict[str, list[str]]:
        """What is left that belongs to this rig; all lists empty = no leak.
        Meant for when everything created has been removed through the CRI."""
        d, net = self.daemon, self.net
        bases = [self.base]
        state, data = Path(d.state_root), Path(d.data_root)
        prefix = net.subnet.rsplit(".", 1)[0] + "."
        rules = [r for r in iptables_rules() if net.name in r or prefix in r]
        new_chains = sorted(cni_chains() - self.chains_before)
        files = []
        for sub in ("pods", "containers", "sock", "exits", "exec"):
            p = state / sub
            files += [f"{p}/{n}" for n in (os.listdir(p) if p.is_dir() else [])]
        oci = state / "oci"
        for rt in (os.listdir(oci) if oci.is_dir() else []):
            files += [f"{oci}/{rt}/{n}" for n in os.listdir(oci / rt) if (oci / rt / n).is_dir()]
        # Records, and the containers' writable layers (upper/work dirs).
        for sub in ("pods", "containers", "rootfs"):
            p = data / sub
            files += [f"{p}/{n}" for n in (os.listdir(p) if p.is_dir() else [])]
        snaps, ingest = data / "images" / "snapshots", data / "images" / "ingest"
        files += [f"{snaps}/{n}" for n in (os.listdir(snaps) if snaps.is_dir() else []) if n.startswith(".tmp-")]
        files += [f"{ingest}/{n}" for n in (os.listdir(ingest) if ingest.is_dir() else []) if n.endswith(".tmp")]
        procs = {pid: cmd for pid, cmd in leftover_processes(bases) + processes_mentioning(self.base)}
        return {
            "mounts": leftover_mounts(bases),
            "processes": [f"{pid} {cmd}" for pid, cmd in sorted(procs.items())],
            "cgroups": leftover_cgroups(bases),
            "ipam": net.leases(),
            "bridge_ports": net.bridge_ports(),
            "iptables": rules + [f"chain {c}" for c in new_chains],
            "files": files,
        }

    def assert_no_leaks(self, settle: float = 5.0) -> None:
        # conmon and infra processes exit asynchronously after their kill.
        deadline = time.monotonic() + settle
        while True:
            found = {k: v for k, v in self.leaks().items() if v}
            if not found or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        if found:
            # Mounts, processes and cgroups are the module fixture's to
            # clean (pods_fixtures); the network's leftovers are ours.
            self._clean_network()
        assert not found, f"left behind: {found}"

    def _clean_network(self) -> None:
        net = self.net
        prefix = net.subnet.rsplit(".", 1)[0] + "."
        chains = cni_chains() - self.chains_before
        for tool in ("iptables", "ip6tables"):
            for table in ("nat", "filter"):
                save = subprocess.run([f"{tool}-save", "-t", table], capture_output=True, text=True).stdout
                doomed = set(chains)
                for line in save.splitlines():
                    if line.startswith("-A ") and (net.name in line or prefix in line):
                        words = line.split()
                        # The per-pod chains the rule jumps to go too.
                        if "-j" in words and words[words.index("-j") + 1].startswith("CNI-"):
                            doomed.add(words[words.index("-j") + 1])
                doomed -= set(SHARED_CHAINS)
                for line in save.splitlines():
                    if line.startswith("-A ") and (net.name in line or prefix in line
                                                   or any(c in line.split() for c in doomed)):
                        subprocess.run([tool, "-t", table, "-D", *shlex.split(line)[1:]], capture_output=True)
                for c in doomed:
                    subprocess.run([tool, "-t", table, "-F", c], capture_output=True)
                    subprocess.run([tool, "-t", table, "-X", c], capture_output=True)
        for lease in net.leases():
            (net.data_dir / net.name / lease).unlink(missing_ok=True)
        for port in net.bridge_ports():
            subprocess.run(["ip", "link", "del", port], capture_output=True)


def wait_gone(pattern: str, timeout: float = 10) -> bool:
    """True once no process's command line matches `pattern`."""
    rx = re.compile(pattern.encode())
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(rx.search(_cmdline(int(e))) for e in os.listdir("/proc") if e.isdigit()):
            return True
        time.sleep(0.05)
    return False


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return b""

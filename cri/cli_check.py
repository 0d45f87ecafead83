"""`crispy check`: a host preflight, as `crio check` and containerd's
start-up checks do it. One line per fact with a verdict: ok, warn (crispy
runs, but something kubelet may ask for will fail) or FAIL (crispy cannot
run pods here); exit 1 when any line fails. Reuses the probes the daemon
itself runs (runtime/host.py, runtime/features.py, runtime/cni), so the
check and the daemon never disagree."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cri import config as configmod
from runtime import features, host, idmapped
from runtime.cni import config as cni_config
from runtime.errors import CrispyError
from runtime.oci import probe as oci_probe

OK, WARN, FAIL = "ok", "warn", "FAIL"
# Plugins crispy's default network (`crispy cni-install`) chains.
DEFAULT_NETWORK_PLUGINS = ("bridge", "host-local", "portmap")
NAMESPACES = ("mnt", "uts", "ipc", "pid", "net", "cgroup")
CONTROLLERS = ("cpu", "memory", "pids")


@dataclass
class Verdict:
    what: str
    level: str
    detail: str


def render(verdicts: list[Verdict]) -> str:
    width = max((len(v.what) for v in verdicts), default=0)
    return "".join(f"{v.level:<4}  {v.what:<{width}}  {v.detail}\n" for v in verdicts)


def exit_code(verdicts: list[Verdict]) -> int:
    return 1 if any(v.level == FAIL for v in verdicts) else 0


def _version(path: str) -> str:
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=5,
                             stdin=subprocess.DEVNULL).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "unknown version"
    first = out.strip().splitlines()[0] if out.strip() else "unknown version"
    return first


def check_root(cfg: configmod.Config) -> list[Verdict]:
    if os.geteuid() == 0:
        return [Verdict("privileges", OK, "running as root")]
    return [Verdict("privileges", FAIL, "crispy must run as root (namespaces, cgroups, mounts)")]


def check_kernel(cfg: configmod.Config) -> list[Verdict]:
    k = features.probe_kernel()
    out = [Verdict("kernel", OK, f"Linux {k.release}")]
    missing = [ns for ns in NAMESPACES if not os.path.exists(f"/proc/self/ns/{ns}")]
    out.append(Verdict("namespaces", FAIL if missing else OK,
                       f"missing {', '.join(missing)}" if missing else ", ".join(NAMESPACES)))
    seccomp = _status_field("Seccomp")
    out.append(Verdict("seccomp", OK, "available") if seccomp is not None else
               Verdict("seccomp", WARN, "the kernel has no seccomp: RuntimeDefault profiles cannot apply"))
    out.append(Verdict("user namespaces", OK if k.user_namespaces else WARN,
                       "available" if k.user_namespaces else
                       "disabled (user.max_user_namespaces = 0): pods with hostUsers: false will fail"))
    return out


def _status_field(name: str) -> str | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(name + ":"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _filesystems() -> set[str]:
    try:
        return {line.split()[-1] for line in Path("/proc/filesystems").read_text().splitlines() if line.strip()}
    except OSError:
        return set()


def check_filesystems(cfg: configmod.Config) -> list[Verdict]:
    fs = _filesystems()
    out = []
    if "overlay" in fs:
        out.append(Verdict("overlayfs", OK, "in /proc/filesystems"))
    elif Path(f"/lib/modules/{os.uname().release}/kernel/fs/overlayfs").exists():
        out.append(Verdict("overlayfs", OK, "module present, loaded on first mount"))
    else:
        out.append(Verdict("overlayfs", FAIL, "the kernel has no overlay filesystem (container roots need it): "
                                              "`modprobe overlay`"))
    if idmapped.supported():
        out.append(Verdict("idmapped mounts", OK, "mount_setattr(2) available"))
    else:
        out.append(Verdict("idmapped mounts", WARN, "no mount_setattr(2) (Linux < 5.12): no user-namespaced pods, "
                                                    "no recursive read-only mounts"))
    return out


def _controllers(layout: host.CgroupLayout) -> set[str]:
    if layout.mode == "v2":
        try:
            return set(Path(host.CGROUP_ROOT, "cgroup.controllers").read_text().split())
        except OSError:
            return set()
    try:
        return {c for entry in host.CGROUP_ROOT.iterdir() for c in entry.name.split(",")
                if (entry / "cgroup.procs").exists() or entry.is_dir()}
    except OSError:
        return set()


def check_cgroups(cfg: configmod.Config) -> list[Verdict]:
    layout = host.detect_cgroup_layout()
    mode = {"v2": "v2 (unified)", "hybrid": "v1 with a v2 tree (hybrid)", "v1": "v1"}[layout.mode]
    out = [Verdict("cgroups", OK, mode)]
    have = _controllers(layout)
    missing = [c for c in CONTROLLERS if c not in have]
    out.append(Verdict("cgroup controllers", FAIL if missing else OK,
                       f"missing {', '.join(missing)} (have {', '.join(sorted(have)) or 'none'})" if missing
                       else ", ".join(c for c in sorted(have) if c in CONTROLLERS + ("cpuset", "hugetlb", "io",
                                                                                    "blkio", "devices", "freezer"))))
    if cfg.runtime.cgroup_driver == "systemd" and not Path("/run/systemd/system").is_dir():
        out.append(Verdict("cgroup driver", FAIL, "runtime.cgroup_driver is systemd but systemd is not running; "
                                                  "use cgroupfs"))
    else:
        out.append(Verdict("cgroup driver", OK, f"{cfg.runtime.cgroup_driver} (kubelet's --cgroup-driver must "
                                                "match)"))
    return out


def check_runtimes(cfg: configmod.Config) -> list[Verdict]:
    layout = host.detect_cgroup_layout()
    out = []
    for name in ("crun", "runc"):
        path = shutil.which(name)
        if not path:
            out.append(Verdict(name, WARN if name == "crun" else OK, "not installed"))
            continue
        blocker = host.crun_blocker(layout) if name == "crun" else None
        version = oci_probe.probe(path).version
        out.append(Verdict(name, WARN if blocker else OK,
                           f"{path} {version}" + (f"; unusable here: {blocker}" if blocker else "")))
    chosen = host.choose_oci_runtime(cfg.runtime.oci_runtime, layout)
    if chosen is None:
        wanted = cfg.runtime.oci_runtime
        named = "crun or runc" if wanted == "auto" else wanted
        out.append(Verdict("OCI runtime", FAIL, f"no usable OCI runtime ({named}); install runc (or crun)"))
    else:
        out.append(Verdict("OCI runtime", OK, f"{chosen.name} {chosen.version} at {chosen.path} ({chosen.reason})"))
    for handler, rt in sorted(cfg.runtime.handlers.items()):
        path = rt if os.path.isabs(rt) else shutil.which(rt)
        ok = bool(path) and os.access(str(path), os.X_OK)
        out.append(Verdict(f"handler {handler}", OK if ok else FAIL,
                           f"{path} {oci_probe.probe(str(path)).version}" if ok else f"{rt} not found"))
    conmon = cfg.runtime.conmon
    cpath = conmon if os.path.isabs(conmon) else shutil.which(conmon)
    if cpath and os.access(cpath, os.X_OK):
        out.append(Verdict("conmon", OK, f"{cpath} {_version(cpath)}"))
    else:
        out.append(Verdict("conmon", FAIL, f"{conmon} not found; install conmon"))
    # The init of pods sharing one PID namespace (shareProcessNamespace).
    init = shutil.which("catatonit")
    out.append(Verdict("catatonit", OK, init) if init else
               Verdict("catatonit", WARN, "not installed: pods sharing a PID namespace will fail (install catatonit)"))
    return out


def _find_plugin(name: str, dirs: list[str]) -> str | None:
    for d in dirs:
        p = Path(d, name)
        if p.is_file() and os.access(p, os.X_OK):
            return str(p)
    return None


def check_cni(cfg: configmod.Config) -> list[Verdict]:
    dirs = cfg.cni.bin_dirs
    scan = cni_config.scan_dir(cfg.cni.conf_dir)
    out = []
    if scan.network is not None:
        out.append(Verdict("CNI config", OK, f"{scan.network.source}: network {scan.network.name!r}, "
                                             f"plugins {', '.join(scan.network.plugin_types)}"))
        wanted = scan.network.plugin_types
    else:
        # No network yet is fine before `crispy cni-install`, which writes
        # the default one; kubelet reports the node NotReady until then.
        out.append(Verdict("CNI config", WARN, scan.problem()))
        wanted = list(DEFAULT_NETWORK_PLUGINS)
    # bridge's ipMasq and portmap program the host's firewall with it.
    ipt = shutil.which("iptables")
    out.append(Verdict("iptables", OK, ipt) if ipt else
               Verdict("iptables", WARN, "not installed: the default network's masquerade and hostPorts need it"))
    missing = [p for p in wanted if not _find_plugin(p, dirs)]
    out.append(Verdict("CNI plugins", FAIL if missing else OK,
                       f"missing {', '.join(missing)} in {', '.join(dirs)} (Debian: containernetworking-plugins)"
                       if missing else f"{', '.join(wanted)} in {', '.join(dirs)}"))
    return out


CHECKS: list[Callable[[configmod.Config], list[Verdict]]] = [
    check_root, check_kernel, check_cgroups, check_filesystems, check_runtimes, check_cni,
]


def verdicts(args: argparse.Namespace) -> list[Verdict]:
    out = []
    try:
        cfg = configmod.load(args)
        out.append(Verdict("config", OK, "loads (`crispy config --origins` shows where each key comes from)"))
    except CrispyError as e:
        out.append(Verdict("config", FAIL, e.message))
        cfg = configmod.Config()
    for check in CHECKS:
        try:
            out += check(cfg)
        except OSError as e:  # a probe that cannot even look: say so, keep checking
            out.append(Verdict(check.__name__.removeprefix("check_"), FAIL, f"cannot check: {e}"))
    return out


def run(args: argparse.Namespace) -> int:
    found = verdicts(args)
    print(render(found), end="")
    code = exit_code(found)
    print("crispy can run here" if code == 0 else "crispy cannot run here: fix the FAIL lines above")
    return code

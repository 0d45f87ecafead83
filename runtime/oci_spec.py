"""The OCI runtime spec (config.json) for a CRI container.

`build_spec` is pure apart from reading the node and the container root:
the image's /etc/passwd, a Localhost seccomp profile, /proc/self/mountinfo
for propagation checks and /dev for device numbers. It follows Docker and
containerd semantics so images and pods behave as they do elsewhere.
"""

from __future__ import annotations

import copy
import os
import re
import stat
from dataclasses import dataclass, field
from typing import Any

from cri.proto import api_pb2 as pb
from runtime import capabilities, cdi, seccomp, userns, users
from runtime.cgroups.paths import cgroups_path
from runtime.errors import FailedPrecondition, InvalidArgument, Unimplemented

__all__ = ["SandboxView", "ContainerSpecRequest", "build_spec", "resolve_user", "exec_process_spec", "cgroups_path",
           "validate_sysctls", "NodeFacts"]

OCI_VERSION = "1.0.2"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

DEFAULT_MASKED_PATHS = [
    "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
    "/sys/firmware", "/sys/devices/virtual/powercap",
]
DEFAULT_READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]

# Devices every container may use, besides the ones it is given: the
# character devices the runtime creates in /dev, ptys, and mknod of anything
# (creating a node is harmless when opening it is refused).
DEFAULT_DEVICE_RULES: list[dict[str, Any]] = [
    {"allow": False, "access": "rwm"},
    {"allow": True, "type": "c", "access": "m"},
    {"allow": True, "type": "b", "access": "m"},
    *({"allow": True, "type": "c", "major": 1, "minor": m, "access": "rwm"} for m in (3, 5, 7, 8, 9)),
    *({"allow": True, "type": "c", "major": 5, "minor": m, "access": "rwm"} for m in (0, 1, 2)),
    {"allow": True, "type": "c", "major": 136, "access": "rwm"},
    {"allow": True, "type": "c", "major": 10, "minor": 200, "access": "rwm"},
]

# Host /dev entries a privileged container does not get as device nodes:
# the runtime mounts its own instances of these.
_PRIVILEGED_DEV_SKIP = ("/dev/pts", "/dev/shm", "/dev/mqueue", "/dev/fd", "/dev/console", "/dev/ptmx")

_IPC_SYSCTLS = {"kernel.shm_rmid_forced", "kernel.shmmax", "kernel.shmall", "kernel.shmmni",
                "kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem"}

_CPUSET_RE = re.compile(r"^\d+(-\d+)?(,\d+(-\d+)?)*$")
_PAGE_SIZE_RE = re.compile(r"^\d+(KB|MB|GB|TB|PB)$")
_UNIFIED_KEY_RE = re.compile(r"^[a-z_]+\.[a-z0-9_.]+$")


@dataclass
class SandboxView:
    """What a container needs from its pod."""
    id: str
    config: pb.PodSandboxConfig
    hostname: str
    # "network"/"ipc"/"uts"/"pid" -> nsfs path to join; a kind absent = the host's.
    namespaces: dict[str, str]
    cgroup_parent: str
    etc_hosts: str
    resolv_conf: str
    etc_hostname: str
    shm: str | None


@dataclass
class ContainerSpecRequest:
    id: str
    config: pb.ContainerConfig
    sandbox: SandboxView
    image_config: dict
    rootfs: str
    cgroup_version: int
    cgroup_driver: str
    target_pid_ns: str | None = None
    seccomp_profile_root: str = "/var/lib/kubelet/seccomp"
    # A pids limit for the container cgroup (0 = none); Kubernetes sets pids
    # per pod, so this is for daemon-wide defaults.
    pids_limit: int = 0
    # `[runtime] seccomp_default`: a container that names no seccomp profile
    # gets RuntimeDefault instead of running unconfined.
    seccomp_default: bool = False
    # Facts about the node; tests pass their own.
    node: "NodeFacts | None" = None
    # Where CDI device specs are looked up (later directories win).
    cdi_spec_dirs: tuple[str, ...] = cdi.DEFAULT_SPEC_DIRS
    # The user resolved ahead by `resolve_user` (CreateContainer reads the
    # image's files apart from the rest, see runtime/isolated.py); None:
    # build_spec reads them itself.
    user: "users.ResolvedUser | None" = None
    # Why the pod's runtime handler cannot make recursive read-only mounts
    # (runtime/features.py), or None when it can.
    rro_missing: str | None = "recursive read-only mounts were not probed"
    # Image volumes mounted ahead (runtime/image_volumes.py): container
    # path -> the host directory to bind there.
    image_volumes: dict[str, str] = field(default_factory=dict)


@dataclass
class NodeFacts:
    """What build_spec reads from the node, gathered once per call unless given."""
    # The daemon's own oom_score_adj: a child may not go below it without
    # CAP_SYS_RESOURCE (which root lacks on some nodes, this one included).
    oom_score_adj: int = 0
    capabilities: tuple[str, ...] = capabilities.ALL_CAPABILITIES
    apparmor_enabled: bool = False
    selinux_enabled: bool = False
    mountinfo: str = "/proc/self/mountinfo"
    dev_root: str = "/dev"

    @classmethod
    def probe(cls) -> "NodeFacts":
        try:
            with open("/proc/self/oom_score_adj") as f:
                oom = int(f.read().strip() or 0)
        except (OSError, ValueError):
            oom = 0
        try:
            with open("/sys/module/apparmor/parameters/enabled") as f:
                apparmor = f.read().strip() == "Y"
        except OSError:
            apparmor = False
        return cls(oom_score_adj=oom, capabilities=capabilities.host_bounding_set(), apparmor_enabled=apparmor,
                   selinux_enabled=os.path.exists("/sys/fs/selinux/enforce"))


# ---- process ---------------------------------------------------------------------

def _args(config: pb.ContainerConfig, image: dict) -> list[str]:
    entrypoint = list(image.get("Entrypoint") or [])
    cmd = list(image.get("Cmd") or [])
    # Kubernetes: `command` replaces the image's Entrypoint and drops its Cmd;
    # `args` alone replaces only Cmd.
    if config.command:
        args = list(config.command) + list(config.args)
    else:
        args = entrypoint + (list(config.args) if config.args else cmd)
    if not args:
        raise InvalidArgument("no command: the image has no Entrypoint or Cmd and the container config gives no "
                              "command or args")
    return args


def _env(config: pb.ContainerConfig, image: dict, hostname: str, tty: bool) -> list[str]:
    env: dict[str, str] = {}
    if hostname:
        env["HOSTNAME"] = hostname
    for item in image.get("Env") or []:
        key, sep, value = str(item).partition("=")
        if key:
            env[key] = value
    for kv in config.envs:
        if not kv.key:
            raise InvalidArgument("an environment variable in the container config has an empty name")
        if "=" in kv.key:
            raise InvalidArgument(f"environment variable name {kv.key!r} must not contain '='")
        raw: str | bytes = kv.value
        if isinstance(raw, bytes):
            try:
                raw = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidArgument(f"environment variable {kv.key} is not valid UTF-8") from None
        env[kv.key] = raw
    env.setdefault("PATH", DEFAULT_PATH)
    if tty:
        env.setdefault("TERM", "xterm")
    return [f"{k}={v}" for k, v in env.items()]


def resolve_user(req: ContainerSpecRequest) -> users.ResolvedUser:
    """Who the container runs as, from its security context and the image's
    USER, looked up in the image's /etc/passwd and /etc/group (the only
    files build_spec reads from the container root)."""
    sc = req.config.linux.security_context
    uid = sc.run_as_user.value if sc.HasField("run_as_user") else None
    gid = sc.run_as_group.value if sc.HasField("run_as_group") else None
    for name, value in (("run_as_user", uid), ("run_as_group", gid)):
        if value is not None and not 0 <= value <= 0xFFFFFFFE:
            raise InvalidArgument(f"{name} {value} is out of range (0..4294967294)")
    for g in sc.supplemental_groups:
        if not 0 <= g <= 0xFFFFFFFE:
            raise InvalidArgument(f"supplemental group {g} is out of range (0..4294967294)")
    if gid is not None and uid is None and not sc.run_as_username:
        raise InvalidArgument("run_as_group needs run_as_user or run_as_username as well")
    return users.resolve(req.rootfs, user=str(req.image_config.get("User") or ""), uid=uid,
                         username=sc.run_as_username, gid=gid, supplemental=list(sc.supplemental_groups),
                         strict_groups=sc.supplemental_groups_policy == pb.Strict)


def _oom_score_adj(requested: int, node: NodeFacts) -> int:
    if not -1000 <= requested <= 1000:
        raise InvalidArgument(f"oom_score_adj {requested} is out of range (-1000..1000)")
    # Lowering a score below our own needs CAP_SYS_RESOURCE, which root does
    # not have on every node; the runtime would fail the start. Kubelet only
    # uses negative scores for critical pods, so clamp rather than refuse.
    return max(requested, node.oom_score_adj)


def _process(req: ContainerSpecRequest, user: users.ResolvedUser, caps: list[str], node: NodeFacts) -> dict[str, Any]:
    config = req.config
    sc = config.linux.security_context
    env = _env(config, req.image_config, req.sandbox.hostname, config.tty)
    if not any(e.startswith("HOME=") for e in env):
        env.append(f"HOME={user.home or '/'}")
    cwd = config.working_dir or req.image_config.get("WorkingDir") or "/"
    if not cwd.startswith("/"):
        raise InvalidArgument(f"working directory {cwd!r} must be an absolute path")
    ambient = [] if sc.privileged else [capabilities.normalize(c) for c in sc.capabilities.add_ambient_capabilities]
    for cap in ambient:
        if cap == "ALL" or cap not in caps:
            raise InvalidArgument(f"ambient capability {cap} must also be in the container's capabilities")
    process: dict[str, Any] = {
        "terminal": bool(config.tty),
        "user": {"uid": user.uid, "gid": user.gid, "additionalGids": user.additional_gids},
        "args": _args(config, req.image_config),
        "env": env,
        "cwd": cwd,
        "capabilities": {"bounding": list(caps), "effective": list(caps), "permitted": list(caps),
                         "inheritable": list(ambient), "ambient": list(ambient)},
        "noNewPrivileges": bool(sc.no_new_privs),
        "oomScoreAdj": _oom_score_adj(config.linux.resources.oom_score_adj, node),
    }
    apparmor = _apparmor(sc, node)
    if apparmor:
        process["apparmorProfile"] = apparmor
    label = _selinux_label(sc) if node.selinux_enabled else ""
    if label:
        process["selinuxLabel"] = label
    return process


def _apparmor(sc: pb.LinuxContainerSecurityContext, node: NodeFacts) -> str | None:
    if sc.privileged:
        return None
    if sc.HasField("apparmor"):
        kind = _profile_kind(sc.apparmor, "apparmor")
        ref = sc.apparmor.localhost_ref
    elif sc.apparmor_profile:
        p = sc.apparmor_profile
        kind, ref = ("Unconfined", "") if p == "unconfined" else ("RuntimeDefault", "") if p == "runtime/default" \
            else ("Localhost", p.removeprefix("localhost/")) if p.startswith("localhost/") else ("?", p)
        if kind == "?":
            raise InvalidArgument(f"apparmor_profile {p!r} is not understood; use runtime/default, "
                                  "unconfined or localhost/<name>")
    else:
        return None
    if kind != "Localhost":
        # crispy loads no AppArmor profile of its own: RuntimeDefault is the
        # runtime's default confinement, which needs nothing in the spec.
        return None
    if not ref.removeprefix("localhost/"):
        raise InvalidArgument("AppArmor Localhost profile needs a localhost_ref naming a loaded profile")
    if not node.apparmor_enabled:
        raise InvalidArgument(f"AppArmor profile {ref!r} was asked for, but AppArmor is not enabled on this node")
    return ref.removeprefix("localhost/")


def _profile_kind(profile: pb.SecurityProfile, what: str) -> str:
    try:
        return pb.SecurityProfile.ProfileType.Name(profile.profile_type)
    except ValueError:
        raise InvalidArgument(f"{what} profile_type {profile.profile_type} is unknown; use RuntimeDefault (0), "
                              f"Unconfined (1) or Localhost (2)") from None


def _selinux_options(opts: pb.SELinuxOption) -> str:
    if not (opts.user or opts.role or opts.type or opts.level):
        return ""
    # Parts left empty take the usual container defaults.
    return ":".join([opts.user or "system_u", opts.role or "system_r", opts.type or "container_t", opts.level or "s0"])


def _selinux_label(sc: pb.LinuxContainerSecurityContext) -> str:
    return _selinux_options(sc.selinux_options) if sc.HasField("selinux_options") else ""


def exec_process_spec(container_spec: dict, cmd: list[str], tty: bool) -> dict:
    """The `process` for `runtime exec --process`: the container's user,
    env, cwd, capabilities, no_new_privs and LSM labels, with `cmd`."""
    if not cmd:
        raise InvalidArgument("exec needs a command")
    proc = copy.deepcopy(container_spec["process"])
    proc["args"] = list(cmd)
    proc["terminal"] = bool(tty)
    proc.pop("consoleSize", None)
    # The container's oom score and rlimits were applied at its start; exec'd
    # processes inherit through the runtime as well.
    proc.pop("oomScoreAdj", None)
    if tty and not any(e.startswith("TERM=") for e in proc.get("env", [])):
        proc.setdefault("env", []).append("TERM=xterm")
    return proc


# ---- mounts ------------------------------------------------------------------------

@dataclass
class _MountPoint:
    mount_point: str
    shared: bool
    slave: bool


def _mount_point_of(path: str, mountinfo: str) -> _MountPoint:
    best: _MountPoint | None = None
    with open(mountinfo) as f:
        for line in f:
            fields = line.split()
            try:
                sep = fields.index("-")
            except ValueError:
                continue
            mnt = fields[4].replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")
            optional = fields[6:sep]
            inside = path == mnt or mnt == "/" or path.startswith(mnt.rstrip("/") + "/")
            # Later lines are mounted on top of earlier ones at the same point.
            if inside and (best is None or len(mnt) >= len(best.mount_point)):
                best = _MountPoint(mnt, any(o.startswith("shared:") for o in optional),
                                   any(o.startswith("master:") for o in optional))
    if best is None:
        raise InvalidArgument(f"cannot find the mount holding {path}")
    return best


def _standard_mounts(req: ContainerSpecRequest, privileged: bool, readonly_rootfs: bool) -> list[dict[str, Any]]:
    sb = req.sandbox
    mounts: list[dict[str, Any]] = [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs",
         "options": ["nosuid", "noexec", "nodev", "rw" if privileged else "ro"]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": ["nosuid", "noexec", "nodev", "relatime", "rw" if privileged else "ro"]},
    ]
    if sb.shm:
        mounts.append({"destination": "/dev/shm", "type": "bind", "source": sb.shm,
                       "options": ["rbind", "rprivate", "nosuid", "nodev", "noexec", "rw"]})
    elif "ipc" not in sb.namespaces:
        # Host IPC: the host's /dev/shm goes with it, as POSIX shm lives there.
        mounts.append({"destination": "/dev/shm", "type": "bind", "source": "/dev/shm",
                       "options": ["rbind", "rprivate", "rw"]})
    else:
        mounts.append({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
                       "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]})
    # Like containerd, the pod files follow the container's read-only root.
    access = "ro" if readonly_rootfs else "rw"
    for dest, src in (("/etc/hosts", sb.etc_hosts), ("/etc/resolv.conf", sb.resolv_conf),
                      ("/etc/hostname", sb.etc_hostname)):
        if src:
            mounts.append({"destination": dest, "type": "bind", "source": src,
                           "options": ["rbind", "rprivate", access]})
    return mounts


_PROPAGATION = {pb.PROPAGATION_PRIVATE: "rprivate", pb.PROPAGATION_HOST_TO_CONTAINER: "rslave",
                pb.PROPAGATION_BIDIRECTIONAL: "rshared"}


def _check_rro(m: pb.Mount, dest: str, missing: str | None) -> None:
    """A recursive read-only mount must be read-only and private (the CRI's
    rule: a submount that appears later through propagation would not be
    read-only), and the handler must be able to make one."""
    if not m.readonly:
        raise InvalidArgument(f"mount {dest}: recursive_read_only needs readonly true as well")
    if m.propagation != pb.PROPAGATION_PRIVATE:
        raise InvalidArgument(f"mount {dest}: recursive_read_only needs propagation PROPAGATION_PRIVATE, not "
                              f"{pb.MountPropagation.Name(m.propagation)}")
    if missing is not None:
        raise FailedPrecondition(f"mount {dest}: recursive read-only mounts are not available: {missing}")


def _cri_mounts(req: ContainerSpecRequest, node: NodeFacts) -> tuple[list[dict[str, Any]], str, list[str]]:
    """The container's own mounts, parents before children, the rootfs
    propagation they need ("" = the runtime default), and the missing
    sources to create once the whole spec is known to be good."""
    out: list[dict[str, Any]] = []
    missing: list[str] = []
    rootfs_propagation = ""
    seen: set[str] = set()
    for m in req.config.mounts:
        dest = m.container_path
        if not dest or not dest.startswith("/"):
            raise InvalidArgument(f"mount container_path {dest!r} must be an absolute path")
        if dest in seen:
            raise InvalidArgument(f"two mounts have the same container_path {dest}")
        seen.add(dest)
        if m.HasField("image") and m.image.image:
            out.append(_image_volume_mount(req, m))
            continue
        if m.uidMappings or m.gidMappings:
            raise Unimplemented(f"id-mapped mounts ({dest}) are not supported by crispy yet")
        if not m.host_path or not m.host_path.startswith("/"):
            raise InvalidArgument(f"mount host_path {m.host_path!r} for {dest} must be an absolute path")
        src = m.host_path
        if not os.path.lexists(src):
            # Docker and containerd create a missing bind source as a
            # directory; kubelet and crictl users rely on it.
            missing.append(src)
        src = os.path.realpath(src)
        if m.propagation not in _PROPAGATION:
            raise InvalidArgument(f"mount {dest}: unknown propagation {m.propagation}")
        propagation = _PROPAGATION[m.propagation]
        if m.recursive_read_only:
            _check_rro(m, dest, req.rro_missing)
        if m.propagation != pb.PROPAGATION_PRIVATE:
            mp = _mount_point_of(src, node.mountinfo)
            if m.propagation == pb.PROPAGATION_BIDIRECTIONAL:
                if not mp.shared:
                    raise InvalidArgument(
                        f"mount {dest}: bidirectional propagation needs {src} on a shared mount, but {mp.mount_point} "
                        f"is not shared; run `mount --make-rshared {mp.mount_point}` on the node or use another "
                        "propagation")
                rootfs_propagation = "rshared"
            else:
                if not (mp.shared or mp.slave):
                    raise InvalidArgument(
                        f"mount {dest}: host-to-container propagation needs {src} on a shared or slave mount, but "
                        f"{mp.mount_point} is private; run `mount --make-rshared {mp.mount_point}` on the node or use "
                        "private propagation")
                if rootfs_propagation != "rshared":
                    rootfs_propagation = "rslave"
        if m.selinux_relabel and node.selinux_enabled:
            raise Unimplemented(f"SELinux relabeling of {src} is not supported by crispy yet")
        # Without SELinux there is nothing to relabel, so the flag is moot.
        options = ["rbind", propagation, "ro" if m.readonly else "rw"]
        if m.recursive_read_only:
            # The runtime applies MOUNT_ATTR_RDONLY with AT_RECURSIVE after the
            # bind, so mounts under the source are read-only too.
            options.append("rro")
        out.append({"destination": dest, "type": "bind", "source": src, "options": options})
    # Parents first, so /a/b is mounted onto /a and not hidden under it.
    out.sort(key=lambda mt: len([p for p in mt["destination"].split("/") if p]))
    return out, rootfs_propagation, missing


def _image_volume_mount(req: ContainerSpecRequest, m: pb.Mount) -> dict[str, Any]:
    dest = m.container_path
    if not m.readonly:
        raise InvalidArgument(f"mount {dest}: image volumes are read-only; set readonly: true for the mount of "
                              f"image {m.image.image}")
    src = req.image_volumes.get(dest)
    if src is None:
        raise InvalidArgument(f"mount {dest}: image {m.image.image} was not mounted for this container")
    # The overlay under it is read-only already; "ro" keeps the bind so too.
    return {"destination": dest, "type": "bind", "source": src, "options": ["rbind", "rprivate", "ro"]}


# ---- devices ------------------------------------------------------------------------

def _device_entry(host_path: str, container_path: str) -> dict[str, Any] | None:
    st = os.stat(host_path)
    if stat.S_ISCHR(st.st_mode):
        kind = "c"
    elif stat.S_ISBLK(st.st_mode):
        kind = "b"
    elif stat.S_ISFIFO(st.st_mode):
        kind = "p"
    else:
        return None
    return {"path": container_path, "type": kind, "major": os.major(st.st_rdev), "minor": os.minor(st.st_rdev),
            "fileMode": stat.S_IMODE(st.st_mode), "uid": st.st_uid, "gid": st.st_gid}


def _devices(req: ContainerSpecRequest) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(linux.devices, cgroup device rules) for the container's own devices."""
    devices: list[dict[str, Any]] = []
    rules: list[dict[str, Any]] = []
    for d in req.config.devices:
        perms = d.permissions or "rwm"
        if not set(perms) <= set("rwm"):
            raise InvalidArgument(f"device {d.host_path}: permissions {d.permissions!r} must be made of r, w and m")
        if not d.host_path.startswith("/") or not d.container_path.startswith("/"):
            raise InvalidArgument(f"device paths must be absolute (host {d.host_path!r}, "
                                  f"container {d.container_path!r})")
        try:
            st = os.stat(d.host_path)
        except FileNotFoundError:
            raise InvalidArgument(f"device {d.host_path} does not exist on the node") from None
        pairs: list[tuple[str, str]] = []
        if stat.S_ISDIR(st.st_mode):
            # A directory gives every device below it, at the same relative path.
            for dirpath, _dirs, files in os.walk(d.host_path):
                for name in sorted(files):
                    host = os.path.join(dirpath, name)
                    pairs.append((host, os.path.join(d.container_path, os.path.relpath(host, d.host_path))))
        else:
            pairs.append((d.host_path, d.container_path))
        for host, ctr in pairs:
            entry = _device_entry(host, ctr)
            if entry is None:
                if host == d.host_path:
                    raise InvalidArgument(f"{d.host_path} is not a device")
                continue
            devices.append(entry)
            if entry["type"] in ("c", "b"):
                rules.append({"allow": True, "type": entry["type"], "major": entry["major"],
                              "minor": entry["minor"], "access": perms})
    return devices, rules


def _host_devices(dev_root: str) -> list[dict[str, Any]]:
    out = []
    for dirpath, dirs, files in os.walk(dev_root):
        ctr_dir = "/dev" + dirpath[len(dev_root):]
        dirs[:] = [d for d in dirs if os.path.join(ctr_dir, d) not in _PRIVILEGED_DEV_SKIP]
        for name in sorted(files):
            ctr = os.path.join(ctr_dir, name)
            if ctr in _PRIVILEGED_DEV_SKIP:
                continue
            try:
                entry = _device_entry(os.path.join(dirpath, name), ctr)
            except OSError:
                continue
            if entry and entry["type"] in ("c", "b"):
                out.append(entry)
    return out


# ---- resources ----------------------------------------------------------------------

def _nonneg(name: str, value: int) -> int:
    if value < 0:
        raise InvalidArgument(f"{name} must not be negative (got {value})")
    return value


def _resources(req: ContainerSpecRequest) -> dict[str, Any]:
    r = req.config.linux.resources
    out: dict[str, Any] = {}
    cpu: dict[str, Any] = {}
    if _nonneg("cpu_shares", r.cpu_shares):
        cpu["shares"] = r.cpu_shares
    if r.cpu_quota:
        if r.cpu_quota < 0 and r.cpu_quota != -1:
            raise InvalidArgument(f"cpu_quota must be positive or -1 for no limit (got {r.cpu_quota})")
        cpu["quota"] = r.cpu_quota
    if _nonneg("cpu_period", r.cpu_period):
        cpu["period"] = r.cpu_period
    for name, value in (("cpus", r.cpuset_cpus), ("mems", r.cpuset_mems)):
        if value:
            if not _CPUSET_RE.match(value):
                raise InvalidArgument(f"cpuset_{name} {value!r} must be a list like '0-2,4'")
            cpu[name] = value
    if cpu:
        out["cpu"] = cpu
    memory: dict[str, Any] = {}
    if _nonneg("memory_limit_in_bytes", r.memory_limit_in_bytes):
        memory["limit"] = r.memory_limit_in_bytes
    if r.memory_swap_limit_in_bytes:
        if r.memory_swap_limit_in_bytes < -1:
            raise InvalidArgument("memory_swap_limit_in_bytes must be positive or -1 (got "
                                  f"{r.memory_swap_limit_in_bytes})")
        if (r.memory_swap_limit_in_bytes > 0 and r.memory_limit_in_bytes
                and r.memory_swap_limit_in_bytes < r.memory_limit_in_bytes):
            raise InvalidArgument("memory_swap_limit_in_bytes is memory plus swap, "
                                  "so it must be at least memory_limit_in_bytes")
        memory["swap"] = r.memory_swap_limit_in_bytes
    if memory:
        out["memory"] = memory
    if r.hugepage_limits:
        pages = []
        for h in r.hugepage_limits:
            if not _PAGE_SIZE_RE.match(h.page_size):
                raise InvalidArgument(f"hugepage page_size {h.page_size!r} must look like 2MB or 1GB")
            pages.append({"pageSize": h.page_size, "limit": h.limit})
        out["hugepageLimits"] = pages
    if req.pids_limit:
        out["pids"] = {"limit": req.pids_limit}
    if r.unified:
        if req.cgroup_version != 2:
            raise InvalidArgument(
                f"resources.unified ({', '.join(sorted(r.unified))}) needs cgroup v2, but this node runs cgroup v1; "
                f"use the named resource fields instead")
        for key in r.unified:
            if not _UNIFIED_KEY_RE.match(key) or key.startswith("cgroup."):
                raise InvalidArgument(f"resources.unified key {key!r} is not a cgroup v2 controller file")
        out["unified"] = dict(r.unified)
    return out


# ---- namespaces and sysctls ---------------------------------------------------------

def _namespaces(req: ContainerSpecRequest, privileged: bool) -> list[dict[str, str]]:
    sb = req.sandbox
    opts = req.config.linux.security_context.namespace_options
    ns: list[dict[str, str]] = [{"type": "mount"}]
    if _joins_pod_userns(req):
        ns.append({"type": "user", "path": sb.namespaces["user"]})
    for kind in ("network", "ipc", "uts"):
        if kind in sb.namespaces:
            ns.append({"type": kind, "path": sb.namespaces[kind]})
    pid_mode = opts.pid
    if pid_mode == pb.NODE:
        pass
    elif pid_mode == pb.CONTAINER:
        ns.append({"type": "pid"})
    elif pid_mode == pb.TARGET:
        if not req.target_pid_ns:
            raise InvalidArgument(f"pid namespace mode TARGET needs the target container {opts.target_id!r} running")
        ns.append({"type": "pid", "path": req.target_pid_ns})
    else:  # POD
        if "pid" in sb.namespaces:
            ns.append({"type": "pid", "path": sb.namespaces["pid"]})
        elif sb.config.linux.security_context.namespace_options.pid != pb.NODE:
            # A pod without a shared PID namespace: each container its own.
            ns.append({"type": "pid"})
    if req.cgroup_version == 2 and not privileged:
        # On v2 a private cgroup namespace shows the container its own cgroup as root.
        ns.append({"type": "cgroup"})
    return ns


def _joins_pod_userns(req: ContainerSpecRequest) -> bool:
    """Whether the container runs in its pod's own user namespace: always
    when the pod has one, never otherwise; a container cannot opt out of, or
    into, what its pod was made with."""
    pod_has = "user" in req.sandbox.namespaces
    opts = req.config.linux.security_context.namespace_options
    if not opts.HasField("userns_options"):
        return pod_has
    mode = opts.userns_options.mode
    field = "ContainerConfig.linux.security_context.namespace_options.userns_options"
    if mode not in (pb.POD, pb.NODE):
        raise InvalidArgument(f"{field}.mode {userns.mode_name(mode)} is not supported: a container runs in its "
                              f"pod's user namespace (POD) or, in a pod without one, the node's (NODE)")
    if mode == pb.POD and not pod_has:
        raise InvalidArgument(f"{field}.mode is POD but pod sandbox {req.sandbox.id[:13]} was made without a user "
                              f"namespace of its own; use NODE, or run the pod with userns_options mode POD")
    if mode == pb.NODE and pod_has:
        raise InvalidArgument(f"{field}.mode is NODE but pod sandbox {req.sandbox.id[:13]} has a user namespace of "
                              f"its own, which all its containers share; use POD")
    return pod_has


def _userns_mappings(req: ContainerSpecRequest) -> dict[str, list[dict[str, int]]]:
    """The pod's ID mappings for a container joining its user namespace by
    path. The namespace already has them; runc (1.1) still wants them in the
    spec to know the container's root on the host (and refuses a user
    namespace without them), and they must be the namespace's own."""
    maps = userns.pod_userns(req.sandbox.config.linux.security_context.namespace_options)
    if maps is None:
        raise InvalidArgument(f"pod sandbox {req.sandbox.id[:13]} has a user namespace but its config names no "
                              f"mappings")
    return {"uidMappings": [maps.uids.oci()], "gidMappings": [maps.gids.oci()]}


def sysctl_namespace(name: str) -> str | None:
    """Which namespace holds sysctl `name` ("net", "ipc"), or None if it is node-wide."""
    if name in _IPC_SYSCTLS or name.startswith("fs.mqueue."):
        return "ipc"
    if name.startswith("net."):
        return "net"
    return None


def validate_sysctls(sysctls: dict[str, str], host_network: bool, host_ipc: bool) -> dict[str, str]:
    """Dotted names only for sysctls that are namespaced and whose namespace
    is the pod's own; anything else would change the whole node."""
    out = {}
    for raw, value in sysctls.items():
        # Kubernetes also accepts "net/ipv4/ip_forward"-style names.
        first = re.search(r"[./]", raw)
        name = raw.translate(str.maketrans("./", "/.")) if first and first.group() == "/" else raw
        kind = sysctl_namespace(name)
        if kind is None:
            raise InvalidArgument(f"sysctl {raw} is not namespaced; setting it would change the whole node")
        if kind == "net" and host_network:
            raise InvalidArgument(f"sysctl {raw} cannot be set for a pod on the host network")
        if kind == "ipc" and host_ipc:
            raise InvalidArgument(f"sysctl {raw} cannot be set for a pod in the host IPC namespace")
        if not name.replace(".", "").replace("_", "").replace("-", "").replace("/", "").isalnum():
            raise InvalidArgument(f"sysctl name {raw!r} is malformed")
        out[name] = value
    return out


# ---- seccomp ------------------------------------------------------------------------

def _seccomp(req: ContainerSpecRequest, caps: list[str]) -> dict[str, Any] | None:
    sc = req.config.linux.security_context
    if sc.privileged:
        return None
    if sc.HasField("seccomp"):
        kind = _profile_kind(sc.seccomp, "seccomp")
        ref = sc.seccomp.localhost_ref
    elif not sc.seccomp_profile_path and req.seccomp_default:
        # kubelet's --seccomp-default, done by the runtime for every client.
        kind, ref = "RuntimeDefault", ""
    else:
        # No profile asked for is Unconfined, as in containerd; kubelet
        # always says which it wants.
        kind, ref = seccomp.from_deprecated_path(sc.seccomp_profile_path)
    return seccomp.profile_for(kind, ref, caps, req.seccomp_profile_root)


# ---- the spec -----------------------------------------------------------------------

def _annotations(req: ContainerSpecRequest) -> dict[str, str]:
    out = dict(req.config.annotations)
    md = req.sandbox.config.metadata
    out.update({
        "io.kubernetes.cri.container-type": "container",
        "io.kubernetes.cri.container-name": req.config.metadata.name,
        "io.kubernetes.cri.sandbox-id": req.sandbox.id,
        "io.kubernetes.cri.sandbox-name": md.name,
        "io.kubernetes.cri.sandbox-namespace": md.namespace,
        "io.kubernetes.cri.sandbox-uid": md.uid,
        "io.kubernetes.cri.image-name": req.config.image.image,
    })
    return out


def build_spec(req: ContainerSpecRequest) -> dict:
    """The OCI runtime-spec config.json content for the container; raises
    InvalidArgument (or Unimplemented) with a message for the caller."""
    node = req.node or NodeFacts.probe()
    config = req.config
    sc = config.linux.security_context
    privileged = sc.privileged
    if privileged and not req.sandbox.config.linux.security_context.privileged:
        raise InvalidArgument("a privileged container needs a privileged pod sandbox (set privileged in the pod's "
                              "security context)")
    if not os.path.isdir(req.rootfs):
        raise InvalidArgument(f"container root {req.rootfs} is not a directory")
    if req.cgroup_version not in (1, 2):
        raise InvalidArgument(f"cgroup version must be 1 or 2, not {req.cgroup_version}")

    if privileged:
        caps = list(node.capabilities)
    else:
        caps = capabilities.effective_set(list(sc.capabilities.add_capabilities),
                                          list(sc.capabilities.drop_capabilities), node.capabilities)
    user = req.user if req.user is not None else resolve_user(req)
    process = _process(req, user, caps, node)

    mounts, rootfs_propagation, missing_sources = _cri_mounts(req, node)
    taken = {m["destination"] for m in mounts}
    standard = [m for m in _standard_mounts(req, privileged, sc.readonly_rootfs) if m["destination"] not in taken]

    resources = _resources(req)
    devices, device_rules = _devices(req)
    if privileged:
        host = _host_devices(node.dev_root)
        have = {d["path"] for d in devices}
        devices = devices + [d for d in host if d["path"] not in have]
        resources["devices"] = [{"allow": True, "access": "rwm"}]
    else:
        resources["devices"] = copy.deepcopy(DEFAULT_DEVICE_RULES) + device_rules

    namespaces = _namespaces(req, privileged)
    kinds = {n["type"] for n in namespaces}
    # Pod sysctls live in the pod's pinned namespaces, set once when the pod
    # starts; the container only joins them. Checked again here so a
    # container that would share the host's namespace instead is refused.
    validate_sysctls(dict(req.sandbox.config.linux.sysctls), "network" not in kinds, "ipc" not in kinds)
    linux: dict[str, Any] = {
        "namespaces": namespaces,
        "resources": resources,
        "cgroupsPath": cgroups_path(req.sandbox.cgroup_parent, req.id, req.cgroup_driver),
        "devices": devices,
    }
    if "user" in kinds:
        linux.update(_userns_mappings(req))
    if not privileged:
        linux["maskedPaths"] = list(sc.masked_paths) or list(DEFAULT_MASKED_PATHS)
        linux["readonlyPaths"] = list(sc.readonly_paths) or list(DEFAULT_READONLY_PATHS)
        profile = _seccomp(req, caps)
        if profile is not None:
            linux["seccomp"] = profile
    if rootfs_propagation:
        linux["rootfsPropagation"] = rootfs_propagation
    # Without SELinux on the node there is nothing a label could mean, and
    # runc refuses a spec that has one: ignored, as containerd does.
    if sc.HasField("selinux_options") and node.selinux_enabled:
        label = _selinux_options(sc.selinux_options)
        if label:
            linux["mountLabel"] = label

    spec: dict[str, Any] = {
        "ociVersion": OCI_VERSION,
        "process": process,
        "root": {"path": req.rootfs, "readonly": bool(sc.readonly_rootfs)},
        "mounts": standard + mounts,
        "annotations": _annotations(req),
        "linux": linux,
    }
    if "uts" in kinds and req.sandbox.hostname:
        spec["hostname"] = req.sandbox.hostname
    cdi_names = cdi.requested([d.name for d in config.CDI_devices], dict(config.annotations))
    if cdi_names:
        cdi.apply(spec, cdi_names, cdi.load(req.cdi_spec_dirs))
    # Last, so a request refused above leaves nothing behind on the node.
    for src in missing_sources:
        os.makedirs(src, mode=0o755, exist_ok=True)
    return spec

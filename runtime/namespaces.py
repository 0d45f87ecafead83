"""A pod's shared namespaces: created once, pinned by bind-mounting their
nsfs files under the pod's state directory so they outlive every process
(CNI plugins and the OCI runtime enter them by those paths), and unpinned
when the pod is removed.

Namespaces are made by util-linux `unshare`, which pins them itself
(`--net=FILE`): Python 3.11 has no unshare/setns, and forking a helper out of
a threaded asyncio process is unsafe. Hostname and namespaced sysctls are
written by a tiny POSIX shell script running inside the new namespaces, with
every value passed as an argument, never spliced into the script.

A pod-wide PID namespace needs a live init or the kernel refuses new members,
so for PodPID pods the script ends by starting Debian's `catatonit -P` (a
static reaper that only waits) in the background. `unshare --pid` without
`--fork` leaves the script in our PID namespace and makes its first child
the new namespace's PID 1, so that child is the infra process and `$!` is
its pid as crispy sees it; the script and unshare then exit and nothing
else stays per pod (with `--fork`, an unshare parent waited for the whole
pod's life). The infra is not our child: it is reparented to the node's
init, survives a crispy restart or kill, and crispy finds it again by pid
plus start time (pids get reused). Its environment names the pod
directory (CRISPY_POD_DIR) so an operator can tell whose it is.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
from dataclasses import dataclass, field
from pathlib import Path

from cri.errors import InvalidArgument, Internal
from runtime import kmount

# Sysctl names: kernel-style dotted names or slash-separated paths.
_SYSCTL_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-/]*$")
NET_SYSCTL_PREFIXES = ("net.",)
IPC_SYSCTL_PREFIXES = ("kernel.shm", "kernel.msg", "kernel.sem", "fs.mqueue.")
UTS_SYSCTLS = ("kernel.hostname", "kernel.domainname")

_SCRIPT = r"""
set -e
if [ -n "$1" ]; then printf '%s' "$1" > /proc/sys/kernel/hostname; fi
shift
while [ $# -ge 2 ]; do printf '%s' "$2" > "/proc/sys/$1"; shift 2; done
if [ -n "$CRISPY_INFRA" ]; then
    "$CRISPY_INFRA" -P </dev/null >/dev/null 2>&1 &
    echo "crispy-ns-ready $!"
else
    echo "crispy-ns-ready 0"
fi
"""


@dataclass
class NamespaceRequest:
    net: bool = True
    ipc: bool = True
    uts: bool = True
    # One PID namespace for the whole pod, with an infra process as init.
    pod_pid: bool = False
    hostname: str = ""
    sysctls: dict[str, str] = field(default_factory=dict)


@dataclass
class PodNamespaces:
    """Pinned namespace files; "" means the pod uses the host's (or, for
    pid, each container gets its own)."""
    net: str = ""
    ipc: str = ""
    uts: str = ""
    pid: str = ""
    infra_pid: int = 0
    # Field 22 of /proc/<pid>/stat when we started it, to tell our infra
    # process from an unrelated one that got its pid later.
    infra_start_time: int = 0

    def paths(self) -> dict[str, str]:
        return {k: v for k, v in (("network", self.net), ("ipc", self.ipc), ("uts", self.uts), ("pid", self.pid)) if v}


def sysctl_path(name: str) -> str:
    if not _SYSCTL_NAME.match(name) or ".." in name.split("/") or "/../" in name:
        raise InvalidArgument(f"sysctl name {name!r} is not valid; use a name like net.ipv4.ip_forward")
    # A name with slashes is already a path; dots inside its parts are literal.
    return name if "/" in name else name.replace(".", "/")


def check_sysctls(sysctls: dict[str, str], req: NamespaceRequest) -> None:
    """Only sysctls of namespaces the pod owns may be set: any other would
    change the whole node."""
    for name, value in sysctls.items():
        sysctl_path(name)
        if "\n" in value or "\0" in value:
            raise InvalidArgument(f"sysctl {name}: value must be a single line")
        if name.startswith(NET_SYSCTL_PREFIXES):
            owned = req.net
        elif name.startswith(IPC_SYSCTL_PREFIXES):
            owned = req.ipc
        elif name in UTS_SYSCTLS:
            owned = req.uts
        else:
            raise InvalidArgument(f"sysctl {name} is not namespaced; a pod may only set net.*, kernel.shm*, "
                                  f"kernel.msg*, kernel.sem, fs.mqueue.* and kernel.hostname/domainname")
        if not owned:
            raise InvalidArgument(f"sysctl {name} belongs to a namespace this pod shares with the host; "
                                  f"it would change the node, so it is refused")


def _tool(name: str) -> str:
    path = shutil.which(name)
    if not path:
        raise Internal(f"{name} is not installed; crispy needs it to create pod namespaces")
    return path


async def create(pin_dir: Path, req: NamespaceRequest, timeout: float = 30.0) -> PodNamespaces:
    """Makes and pins the namespaces `req` asks for under `pin_dir`. On
    failure nothing is left pinned or running."""
    check_sysctls(req.sysctls, req)
    pinned = PodNamespaces()
    args: list[str] = []
    for kind, wanted in (("net", req.net), ("ipc", req.ipc), ("uts", req.uts), ("pid", req.pod_pid)):
        if wanted:
            path = pin_dir / kind
            path.touch()
            setattr(pinned, kind, str(path))
            # A PID namespace cannot be opened before its init exists, so
            # it is pinned from that init below, not by unshare.
            args.append("--pid" if kind == "pid" else f"--{kind}={path}")
    if not args:
        return pinned
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")}
    script_args = [req.hostname if req.uts else ""]
    for name, value in req.sysctls.items():
        script_args += [sysctl_path(name), value]
    argv = [_tool("unshare"), *args]
    if req.pod_pid:
        env["CRISPY_INFRA"] = _tool("catatonit")
        env["CRISPY_POD_DIR"] = str(pin_dir)
    argv += ["--", "/bin/sh", "-c", _SCRIPT, "crispy-ns", *script_args]
    # Our own pipe rather than asyncio's: should the infra process ever
    # keep an end open, asyncio would hold the transport open as long.
    rfd, wfd = os.pipe2(os.O_CLOEXEC)
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=wfd, stderr=wfd, env=env, start_new_session=True)
    except BaseException:
        os.close(rfd)
        os.close(wfd)
        await _discard(pinned)
        raise
    os.close(wfd)
    errors: list[str] = []
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(rfd, "rb", 0))
    try:
        async with asyncio.timeout(timeout):
            while True:
                line = (await reader.readline()).decode(errors="replace").strip()
                if not line:
                    break
                if line.startswith("crispy-ns-ready "):
                    if req.pod_pid:
                        pinned.infra_pid = int(line.split()[1])
                        pinned.infra_start_time = process_start_time(pinned.infra_pid) or 0
                    break
                errors.append(line)
            # unshare (exec'd into the script) ends with the script.
            await proc.wait()
    except BaseException:
        if proc.returncode is None:
            proc.kill()
        await _discard(pinned)
        raise
    finally:
        transport.close()
    ready = proc.returncode == 0 and not errors and (pinned.infra_pid > 0 or not req.pod_pid)
    if ready and req.pod_pid:
        try:
            await asyncio.to_thread(_pin_pid_namespace, pinned)
        except BaseException as e:
            await _discard(pinned)
            if isinstance(e, OSError):
                raise Internal(f"pinning the pod's PID namespace failed: {e}") from None
            raise
    if not ready:
        await _discard(pinned)
        message = "; ".join(errors) or f"unshare exited {proc.returncode}"
        if "/proc/sys/" in message:
            raise InvalidArgument(f"cannot apply the pod's sysctls: {message}")
        raise Internal(f"creating pod namespaces failed: {message}")
    return pinned


def _pin_pid_namespace(ns: PodNamespaces) -> None:
    kmount.mount(f"/proc/{ns.infra_pid}/ns/pid", ns.pid, None, kmount.MS_BIND)
    # The pid could have been reused between the start and the mount.
    if not ns.infra_start_time or not infra_alive(ns):
        raise OSError(f"the infra process {ns.infra_pid} died at once")


async def _discard(ns: PodNamespaces) -> None:
    await kill_infra(ns)
    await unpin(ns)


def process_start_time(pid: int) -> int | None:
    """Start time (clock ticks since boot) of a live, non-zombie `pid`."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name may hold spaces and parentheses; fields follow the last ')'.
    fields = stat[stat.rfind(")") + 2:].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def infra_alive(ns: PodNamespaces) -> bool:
    if not ns.infra_pid:
        return False
    return process_start_time(ns.infra_pid) == ns.infra_start_time


async def kill_infra(ns: PodNamespaces, timeout: float = 10.0) -> None:
    """SIGKILLs the pod's init, which takes every process of the pod's PID
    namespace with it. Idempotent."""
    if not infra_alive(ns):
        return
    try:
        os.kill(ns.infra_pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    delay = 0.002
    while infra_alive(ns) and loop.time() < deadline:
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.1)


async def unpin(ns: PodNamespaces) -> None:
    """Unmounts and deletes the pin files. Idempotent."""
    def _unpin() -> None:
        for path in (ns.net, ns.ipc, ns.uts, ns.pid):
            if path:
                kmount.umount_all(path)
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
    await asyncio.to_thread(_unpin)

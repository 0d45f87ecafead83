"""A pod's shared namespaces: created once, pinned by bind-mounting their
nsfs files under the pod's state directory so they outlive every process
(CNI plugins and the OCI runtime enter them by those paths), and unpinned
when the pod is removed.

They are made by a short-lived thread of our own, not by a helper process:
unshare(2) of the network, IPC and UTS namespaces is allowed in a threaded
process and moves only the calling thread, so that thread sets the hostname,
writes the namespaced sysctls (/proc/sys resolves against the writer's
namespaces), brings `lo` up, bind-mounts /proc/thread-self/ns/* onto the pin
files and exits. A failure can never leave a pool thread in a pod's
namespaces, and no fork/exec of unshare(1) or a shell is paid per pod.

A pod-wide PID namespace needs a live init or the kernel refuses new members.
The same thread also unshares the PID namespace, which applies to its future
children only, and spawns Debian's `catatonit -P` (a static reaper that only
waits): it is PID 1 of the new namespace and a member of the pod's other
namespaces. The infra is our child while crispy runs (kill_infra reaps it;
nothing else waits for it: asyncio waits for its own pids only) and is
reparented to the node's init when crispy exits, so it survives a crispy
restart or kill; crispy finds it again by pid plus start time (pids get
reused). Its environment names the pod directory (CRISPY_POD_DIR) so an
operator can tell whose it is.

A pod with its own user namespace (`hostUsers: false`) needs the others
owned by it: the OCI runtime, once in the user namespace, can only join
namespaces that namespace owns, and only in such a network namespace may
it mount /sys, only in such a PID namespace /proc. A threaded process can
neither unshare nor enter a user namespace, so a holder process makes them
all (runtime/userns_holder.py), forking the infra when the pod shares a PID
namespace; crispy writes the mappings from outside and pins the user and
PID namespaces from the holder and the infra, and the pod's thread enters
the holder's network, IPC and UTS namespaces with setns(2) (allowed to a
thread, and to the node's root, whose capabilities cover every user
namespace below its own) and goes on as above.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import re
import shutil
import signal
import socket
import struct
import threading
from dataclasses import dataclass, field
from pathlib import Path

from runtime import kmount, procfs, userns_holder
from runtime.crashpoints import crashpoint
from runtime.errors import Internal, InvalidArgument
from runtime.libc import CLONE_NEWIPC, CLONE_NEWNET, CLONE_NEWPID, CLONE_NEWUTS, check, libc
from runtime.procfs import process_start_time
from runtime.userns import PodUserns

# Sysctl names: kernel-style dotted names or slash-separated paths.
_SYSCTL_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-/]*$")
NET_SYSCTL_PREFIXES = ("net.",)
IPC_SYSCTL_PREFIXES = ("kernel.shm", "kernel.msg", "kernel.sem", "fs.mqueue.")
UTS_SYSCTLS = ("kernel.hostname", "kernel.domainname")

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
_IFREQ_FLAGS = struct.Struct("16sH22x")  # struct ifreq: name, then ifr_flags in a 24-byte union


@dataclass
class NamespaceRequest:
    net: bool = True
    ipc: bool = True
    uts: bool = True
    # One PID namespace for the whole pod, with an infra process as init.
    pod_pid: bool = False
    hostname: str = ""
    sysctls: dict[str, str] = field(default_factory=dict)
    # The pod's own user namespace, owning every namespace made here.
    userns: PodUserns | None = None


@dataclass
class PodNamespaces:
    """Pinned namespace files; "" means the pod uses the host's (or, for
    pid, each container gets its own)."""
    net: str = ""
    ipc: str = ""
    uts: str = ""
    pid: str = ""
    user: str = ""
    infra_pid: int = 0
    # Field 22 of /proc/<pid>/stat when we started it, to tell our infra
    # process from an unrelated one that got its pid later.
    infra_start_time: int = 0

    def paths(self) -> dict[str, str]:
        return {k: v for k, v in (("network", self.net), ("ipc", self.ipc), ("uts", self.uts), ("pid", self.pid),
                                  ("user", self.user)) if v}


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


async def create(pin_dir: Path, req: NamespaceRequest) -> PodNamespaces:
    """Makes and pins the namespaces `req` asks for under `pin_dir`, with
    `lo` up in a new network namespace. On failure nothing is left pinned
    or running."""
    check_sysctls(req.sysctls, req)
    if not (req.net or req.ipc or req.uts or req.pod_pid):
        return PodNamespaces()
    sysctls = [(sysctl_path(name), value) for name, value in req.sysctls.items()]
    infra = _tool("catatonit") if req.pod_pid else ""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[PodNamespaces] = loop.create_future()

    def settle(result: PodNamespaces | None, error: BaseException | None) -> None:
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(result)  # type: ignore[arg-type]  # result is set whenever error is not

    def work() -> None:
        try:
            result, error = _make(pin_dir, req, sysctls, infra), None
        except BaseException as e:  # noqa: BLE001 - handed to the awaiting task
            result, error = None, e
        try:
            loop.call_soon_threadsafe(settle, result, error)
        except RuntimeError:  # the loop is gone: nobody will use what we made
            if result is not None:
                _discard_now(result)

    # Its own thread, never a pool thread: it ends in the pod's namespaces.
    threading.Thread(target=work, name="crispy-pod-ns", daemon=True).start()
    try:
        return await asyncio.shield(done)
    except asyncio.CancelledError:
        # The thread cannot be stopped halfway: undo whatever it made.
        try:
            made = await done
        except Exception:  # noqa: BLE001 - it cleaned up after itself
            raise asyncio.CancelledError() from None
        await _discard(made)
        raise


def _make(pin_dir: Path, req: NamespaceRequest, sysctls: list[tuple[str, str]], infra: str) -> PodNamespaces:
    """Runs in a dedicated thread that exits afterwards (see the module doc)."""
    pinned = PodNamespaces()
    flags = ((CLONE_NEWNET if req.net else 0) | (CLONE_NEWIPC if req.ipc else 0)
             | (CLONE_NEWUTS if req.uts else 0) | (CLONE_NEWPID if req.pod_pid else 0))
    holder: userns_holder.Holder | None = None
    try:
        try:
            if req.userns is not None:
                holder = userns_holder.spawn(flags, infra, _infra_env(pin_dir))
                infra_pid = userns_holder.map_ids(holder, req.userns)
                _pin(pinned, pin_dir, "user", f"/proc/{holder.pid}/ns/user")
                if infra_pid:
                    _adopt_infra(pinned, pin_dir, infra_pid)
                crashpoint("pod.userns.holder_alive")
                _enter_holder_namespaces(holder.pid, flags)
                userns_holder.end(holder)
                holder = None
            else:
                check(libc.unshare(flags), "unshare")
            for kind, wanted in (("net", req.net), ("ipc", req.ipc), ("uts", req.uts)):
                if wanted:
                    path = str(pin_dir / kind)
                    _touch(path)
                    setattr(pinned, kind, path)
                    kmount.mount(f"/proc/thread-self/ns/{kind}", path, None, kmount.MS_BIND)
            if req.uts and req.hostname:
                name = req.hostname.encode()
                check(libc.sethostname(name, len(name)), "sethostname")
            if req.net:
                _loopback_up()
        except OSError as e:
            raise Internal(f"creating pod namespaces failed: {e}") from None
        for path, value in sysctls:
            try:
                with open(f"/proc/sys/{path}", "w") as f:
                    f.write(value)
            except OSError as e:
                raise InvalidArgument(f"cannot apply the pod's sysctls: /proc/sys/{path}: "
                                      f"{e.strerror or e}") from None
        if req.pod_pid and req.userns is None:
            try:
                _start_infra(pinned, pin_dir, infra)
            except OSError as e:
                raise Internal(f"starting the pod's infra process failed: {e}") from None
    except BaseException:
        if holder is not None:
            userns_holder.end(holder)
        _discard_now(pinned)
        raise
    return pinned


def _infra_env(pin_dir: Path) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "CRISPY_POD_DIR": str(pin_dir)}


def _pin(pinned: PodNamespaces, pin_dir: Path, kind: str, nsfs: str) -> None:
    path = str(pin_dir / kind)
    _touch(path)
    setattr(pinned, kind, path)
    kmount.mount(nsfs, path, None, kmount.MS_BIND)


def _adopt_infra(pinned: PodNamespaces, pin_dir: Path, pid: int) -> None:
    """The holder's infra becomes the pod's, as one `_start_infra` made."""
    pinned.infra_pid = pid
    pinned.infra_start_time = process_start_time(pid) or 0
    _pin(pinned, pin_dir, "pid", f"/proc/{pid}/ns/pid")
    if not pinned.infra_start_time or not infra_alive(pinned):
        raise OSError(f"the infra process {pid} died at once")


def _enter_holder_namespaces(holder: int, flags: int) -> None:
    """The calling thread joins the holder's network, IPC and UTS
    namespaces, which its user namespace owns."""
    for flag, name in ((CLONE_NEWNET, "net"), (CLONE_NEWIPC, "ipc"), (CLONE_NEWUTS, "uts")):
        if flags & flag:
            fd = os.open(f"/proc/{holder}/ns/{name}", os.O_RDONLY | os.O_CLOEXEC)
            try:
                check(libc.setns(fd, flag), f"setns({name})")
            finally:
                os.close(fd)


def _touch(path: str) -> None:
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o444))


def _loopback_up() -> None:
    """`ip link set lo up` in the calling thread's network namespace (the
    kernel then gives lo 127.0.0.1 and ::1), with two ioctls instead of the
    CNI loopback plugin's fork/exec; CRI-O brings lo up itself too."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
        got = fcntl.ioctl(s.fileno(), SIOCGIFFLAGS, _IFREQ_FLAGS.pack(b"lo", 0))
        flags = _IFREQ_FLAGS.unpack(got)[1]
        if not flags & IFF_UP:
            fcntl.ioctl(s.fileno(), SIOCSIFFLAGS, _IFREQ_FLAGS.pack(b"lo", flags | IFF_UP))


def _start_infra(pinned: PodNamespaces, pin_dir: Path, infra: str) -> None:
    """From the thread that unshared the PID namespace, so catatonit is its
    PID 1 (posix_spawn: no Popen object whose clean-up could reap a reused
    pid behind us)."""
    path = str(pin_dir / "pid")
    _touch(path)
    pinned.pid = path
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "CRISPY_POD_DIR": str(pin_dir)}
    null = [(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDWR, 0),
            (os.POSIX_SPAWN_DUP2, 0, 1), (os.POSIX_SPAWN_DUP2, 0, 2)]
    # Python ignores SIGPIPE/SIGXFSZ and an ignored disposition survives exec.
    pid = os.posix_spawn(infra, [infra, "-P"], env, file_actions=null, setsid=True, setsigmask=(),
                         setsigdef=(signal.SIGPIPE, signal.SIGXFSZ))
    pinned.infra_pid = pid
    pinned.infra_start_time = process_start_time(pid) or 0
    kmount.mount(f"/proc/{pid}/ns/pid", path, None, kmount.MS_BIND)
    # The pid could have been reused between the start and the mount.
    if not pinned.infra_start_time or not infra_alive(pinned):
        raise OSError(f"the infra process {pid} died at once")


def _discard_now(ns: PodNamespaces) -> None:
    """Blocking undo of `_make`: kill and reap the infra, unpin."""
    if ns.infra_pid:
        try:
            os.kill(ns.infra_pid, signal.SIGKILL)
            os.waitpid(ns.infra_pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
    _unpin_now(ns)


async def _discard(ns: PodNamespaces) -> None:
    await kill_infra(ns)
    await unpin(ns)


def _reap(ns: PodNamespaces) -> None:
    """Collects the exit of an infra this crispy started (a zombie child
    otherwise stays until crispy exits). Only our own zombie by pid and
    start time is waited for, never another child that got the pid."""
    st = procfs.state_and_start(ns.infra_pid) if ns.infra_pid else None
    if st is None or st[0] != "Z" or st[1] != ns.infra_start_time:
        return
    try:
        os.waitpid(ns.infra_pid, os.WNOHANG)
    except ChildProcessError:  # started by an earlier crispy: init reaps it
        pass


def infra_alive(ns: PodNamespaces) -> bool:
    if not ns.infra_pid:
        return False
    return process_start_time(ns.infra_pid) == ns.infra_start_time


async def kill_infra(ns: PodNamespaces, timeout: float = 10.0) -> None:
    """SIGKILLs the pod's init, which takes every process of the pod's PID
    namespace with it. Idempotent."""
    if not infra_alive(ns):
        _reap(ns)
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
    _reap(ns)


async def unpin(ns: PodNamespaces) -> None:
    """Unmounts and deletes the pin files. Idempotent."""
    await asyncio.to_thread(_unpin_now, ns)


def _unpin_now(ns: PodNamespaces) -> None:
    for path in (ns.net, ns.ipc, ns.uts, ns.pid, ns.user):
        if path:
            kmount.umount_all(path)
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

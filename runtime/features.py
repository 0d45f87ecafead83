"""What this node can do for a pod, per runtime handler, as kubelet asks
through `Status.runtime_handlers` and `Status.features`.

kubelet refuses a pod that needs a feature no handler advertises, and
trusts the ones we do: so a feature is advertised only when the kernel,
the handler's OCI runtime and crispy itself all implement it. The probes
run once, at start-up, in a thread (`NodeFeatures.probe`); Status reads
the cached answer.

- Recursive read-only mounts need the kernel's `mount_setattr(2)` (5.12:
  MOUNT_ATTR_RDONLY with AT_RECURSIVE) and a runtime that takes the `rro`
  mount option. A runtime with a `features` command lists its mount
  options (runc since 1.1, crun since 1.8.6); crun 1.8.0-1.8.5 has no such
  command but has the option (checked on 1.8.1 by the integration tests),
  so for crun without `features` the version decides.
- User namespaces need the kernel's user namespaces and idmapped mounts
  (5.12: crispy maps container roots and volumes itself, runtime/idmapped.py,
  so the runtime's own idmap support is not needed) and a runtime that joins
  a pinned user namespace by path given its mappings (runc, crun).
"""

from __future__ import annotations

import ctypes
import dataclasses
import errno
import json
import logging
import os
import re
import subprocess
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from runtime.oci import probe as oci_probe
from runtime.oci.interface import RuntimeKind

log = logging.getLogger("crispy.runtime")

# crispy runs pods in their own user namespace (NamespaceOption.userns_options
# mode POD: runtime/userns.py, userns_holder.py, idmapped.py).
USER_NAMESPACES_IMPLEMENTED = True

# kubelet may send SupplementalGroupsPolicy Strict: oci_spec.resolve_user
# honours it and ContainerStatus.user reports the process's real groups.
SUPPLEMENTAL_GROUPS_POLICY = True
# A user-namespaced pod on the host network: not supported.
USER_NAMESPACES_HOST_NETWORK = False

FEATURES_TIMEOUT = 5.0
# mount_setattr(2) and MOUNT_ATTR_IDMAP arrived in Linux 5.12.
MOUNT_SETATTR_KERNEL = (5, 12)
# crun without a `features` command: the first version known to take `rro`
# (and to implement idmapped mounts).
CRUN_RRO_SINCE = (1, 8)
CRUN_IDMAP_SINCE = (1, 8)

_SYS_MOUNT_SETATTR = 442  # the same number on every architecture (new syscall table)


@dataclass(frozen=True)
class KernelFeatures:
    mount_setattr: bool
    release: str = ""
    # Unprivileged-or-not, user namespaces can be made at all
    # (user.max_user_namespaces > 0).
    user_namespaces: bool = True


@dataclass(frozen=True)
class RuntimeFeatures:
    """What one runtime binary supports, and how we know."""
    rro: bool
    idmap_mounts: bool
    source: str  # "features" (its own JSON), "version", or why neither worked
    # Joins an existing user namespace by path when given its mappings, as
    # pods with their own user namespace need (runc and crun do).
    joins_userns: bool = False


@dataclass(frozen=True)
class HandlerFeatures:
    recursive_read_only_mounts: bool
    user_namespaces: bool
    # Why recursive read-only mounts are not available ("" when they are),
    # for the FAILED_PRECONDITION a container asking for one gets.
    rro_missing: str = ""


UNPROBED = HandlerFeatures(False, False, "the node's features have not been probed yet")


# ---- sans-IO parsing ------------------------------------------------------

def parse_release(release: str) -> tuple[int, int]:
    """'6.1.0-13-amd64' -> (6, 1); (0, 0) when it does not start with a version."""
    m = re.match(r"(\d+)\.(\d+)", release)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def parse_version(version: str) -> tuple[int, ...]:
    """'1.8.1' -> (1, 8, 1); '1.1.5+ds1' -> (1, 1, 5); () when unreadable."""
    m = re.match(r"(\d+(?:\.\d+)*)", version)
    return tuple(int(p) for p in m.group(1).split(".")) if m else ()


def parse_features(output: str) -> RuntimeFeatures | None:
    """`<runtime> features` JSON (the OCI runtime-spec features document);
    None when the output is not that document."""
    try:
        doc = json.loads(output)
    except ValueError:
        return None
    if not isinstance(doc, dict) or "ociVersionMin" not in doc:
        return None
    options = doc.get("mountOptions") or []
    linux = doc.get("linux") or {}
    idmap = ((linux.get("mountExtensions") or {}).get("idmap") or {}).get("enabled") is True
    return RuntimeFeatures(rro="rro" in options, idmap_mounts=idmap, source="features")


def runtime_features(found: oci_probe.Probe, features_output: str | None) -> RuntimeFeatures:
    """What a runtime supports: its `features` document when it has one,
    else what its version is known to support."""
    joins = found.kind in (RuntimeKind.RUNC, RuntimeKind.CRUN)
    if features_output is not None:
        parsed = parse_features(features_output)
        if parsed is not None:
            return dataclasses.replace(parsed, joins_userns=joins)
    if found.kind is RuntimeKind.CRUN:
        version = parse_version(found.version)
        return RuntimeFeatures(rro=version >= CRUN_RRO_SINCE, idmap_mounts=version >= CRUN_IDMAP_SINCE,
                               source=f"version {found.version}", joins_userns=True)
    # runc has had `features` since 1.1, before it had `rro`; anything else
    # we know nothing about.
    if found.kind is RuntimeKind.RUNC:
        return RuntimeFeatures(False, False, source=f"runc {found.version} has no features command",
                               joins_userns=True)
    says = found.banner or "nothing"
    return RuntimeFeatures(False, False, source=f"neither runc nor crun (--version says {says!r}) and no features "
                                                "command")


def handler_features(kernel: KernelFeatures, rt: RuntimeFeatures, name: str,
                     userns_implemented: bool) -> HandlerFeatures:
    missing = ""
    if not kernel.mount_setattr:
        missing = f"the kernel ({kernel.release or 'unknown'}) has no mount_setattr (Linux 5.12 or newer needed)"
    elif not rt.rro:
        missing = f"its OCI runtime does not support the rro mount option ({rt.source})"
    return HandlerFeatures(recursive_read_only_mounts=not missing,
                           user_namespaces=(userns_implemented and kernel.mount_setattr and kernel.user_namespaces
                                            and rt.joins_userns),
                           rro_missing=missing)


# ---- probes (blocking) -------------------------------------------------------

def probe_kernel() -> KernelFeatures:
    release = os.uname().release
    if parse_release(release) < MOUNT_SETATTR_KERNEL:
        return KernelFeatures(False, release)
    # A seccomp filter or an old backport can hide the call whatever the
    # version says: an invalid fd answers EBADF when the call exists.
    libc = ctypes.CDLL(None, use_errno=True)
    rc = libc.syscall(_SYS_MOUNT_SETATTR, -1, b"", 0, None, 0)
    err = ctypes.get_errno()
    return KernelFeatures(rc == 0 or err != errno.ENOSYS, release, _user_namespaces_allowed())


def _user_namespaces_allowed() -> bool:
    try:
        with open("/proc/sys/user/max_user_namespaces") as f:
            return int(f.read().strip() or "0") > 0
    except (OSError, ValueError):
        return os.path.exists("/proc/self/ns/user")


def run_features(path: str) -> str | None:
    """`<path> features`' output, None when the binary has no such command."""
    try:
        done = subprocess.run([path, "features"], check=False, capture_output=True, text=True,
                              timeout=FEATURES_TIMEOUT, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def probe_runtime(path: str) -> RuntimeFeatures:
    return runtime_features(oci_probe.probe(path), run_features(path))


# ---- the node's answer -------------------------------------------------------

class NodeFeatures:
    """Per handler name (the default "" first, then `[runtime.handlers]`),
    probed once by `probe()`; every read after that is a dict lookup."""

    def __init__(self, handler_paths: Callable[[], Iterable[tuple[str, str | None]]], *,
                 kernel: Callable[[], KernelFeatures] = probe_kernel,
                 runtime: Callable[[str], RuntimeFeatures] = probe_runtime) -> None:
        # (name, binary path or None when the handler cannot run anything)
        self._handler_paths = handler_paths
        self._probe_kernel = kernel
        self._probe_runtime = runtime
        self._lock = threading.Lock()
        self._by_name: dict[str, HandlerFeatures] = {}
        self._by_path: dict[str, HandlerFeatures] = {}
        self.supplemental_groups_policy = SUPPLEMENTAL_GROUPS_POLICY
        self.user_namespaces_host_network = USER_NAMESPACES_HOST_NETWORK

    def probe(self) -> None:
        """Blocking: asks the kernel and each handler's binary once."""
        kernel = self._probe_kernel()
        by_name: dict[str, HandlerFeatures] = {}
        by_path: dict[str, HandlerFeatures] = {}
        for name, path in self._handler_paths():
            if path is None:
                by_name[name] = HandlerFeatures(False, False, "the handler has no usable OCI runtime")
                continue
            if path not in by_path:
                rt = self._probe_runtime(path)
                by_path[path] = handler_features(kernel, rt, name, USER_NAMESPACES_IMPLEMENTED)
                log.info("runtime features", extra={"fields": {
                    "path": path, "rro": rt.rro, "idmap_mounts": rt.idmap_mounts, "from": rt.source,
                    "kernel_mount_setattr": kernel.mount_setattr}})
            by_name[name] = by_path[path]
        with self._lock:
            self._by_name, self._by_path = by_name, by_path

    def handlers(self) -> dict[str, HandlerFeatures]:
        with self._lock:
            return dict(self._by_name)

    def for_path(self, path: str) -> HandlerFeatures:
        """Features of the runtime binary a pod's containers run with."""
        with self._lock:
            return self._by_path.get(path, UNPROBED)

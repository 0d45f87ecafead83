"""What this crispy build can do for kubelet's feature checks.

Minimal stand-in written with user namespace support (#15, part userns);
the Status advertisement (Status.features, runtime_handlers) lives with the
features work, which reads these.
"""

from __future__ import annotations

import os

from runtime import idmapped

# Pods with `hostUsers: false` (userns_options mode POD) are run.
USER_NAMESPACES_IMPLEMENTED = True


def userns_supported(runtime_path: str) -> bool:
    """Whether pods with their own user namespace can run with the OCI
    runtime at `runtime_path` on this node: the kernel allows user
    namespaces and has ID-mapped mounts (container roots are mapped views
    of the layers), util-linux `unshare` makes the namespace, and the
    runtime binary exists (runc >= 1.0 and crun join a user namespace by
    path given the mappings, which crispy always passes)."""
    try:
        with open("/proc/sys/user/max_user_namespaces") as f:
            if int(f.read().strip() or "0") <= 0:
                return False
    except (OSError, ValueError):
        return False
    if not os.path.exists("/proc/self/ns/user") or not idmapped.supported():
        return False
    if not any(os.access(os.path.join(d, "unshare"), os.X_OK)
               for d in os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin").split(os.pathsep)):
        return False
    return os.access(runtime_path, os.X_OK)

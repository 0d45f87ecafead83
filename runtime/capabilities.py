"""Linux capability names and the sets a container starts with.

Kubernetes writes capability names with or without the `CAP_` prefix and in
any case ("NET_ADMIN", "cap_net_admin"); the OCI spec wants `CAP_NET_ADMIN`.
"""

from __future__ import annotations

from runtime.errors import InvalidArgument

# Index = capability number (linux/capability.h), up to CAP_CHECKPOINT_RESTORE.
ALL_CAPABILITIES: tuple[str, ...] = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK",
    "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG",
    "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
)

# What an unprivileged container gets when the pod asks for nothing else:
# the set Docker and containerd have used for years, so images behave the same.
DEFAULT_CAPABILITIES: tuple[str, ...] = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
)


def normalize(name: str) -> str:
    """"net_admin", "CAP_NET_ADMIN", "cap_net_admin" -> "CAP_NET_ADMIN"; "all" -> "ALL"."""
    upper = name.strip().upper()
    if upper == "ALL":
        return "ALL"
    if not upper.startswith("CAP_"):
        upper = "CAP_" + upper
    if upper not in ALL_CAPABILITIES:
        raise InvalidArgument(f"unknown capability {name!r}; use a Linux capability name such as NET_ADMIN or "
                              "CAP_NET_ADMIN, or ALL")
    return upper


def host_bounding_set(status_path: str = "/proc/self/status") -> tuple[str, ...]:
    """The capabilities this daemon may hand out: a child can never gain a
    capability outside its parent's bounding set (root here lacks
    CAP_SYS_RESOURCE, for example), so "ALL" means these."""
    try:
        with open(status_path) as f:
            for line in f:
                if line.startswith("CapBnd:"):
                    mask = int(line.split()[1], 16)
                    return tuple(c for i, c in enumerate(ALL_CAPABILITIES) if mask & (1 << i))
    except OSError:
        pass
    return ALL_CAPABILITIES


def effective_set(add: list[str], drop: list[str], available: tuple[str, ...],
                  base: tuple[str, ...] = DEFAULT_CAPABILITIES) -> list[str]:
    """The container's capabilities from the CRI add/drop lists.

    Like containerd: an "ALL" in add starts from every available capability,
    an "ALL" in drop starts from none; then the named adds are added and the
    named drops removed, so `drop: [ALL], add: [NET_BIND_SERVICE]` keeps just
    that one and a capability both added and dropped ends up dropped."""
    adds = [normalize(c) for c in add]
    drops = [normalize(c) for c in drop]
    caps: list[str] = [c for c in base if c in available]
    if "ALL" in adds:
        caps = list(available)
    if "ALL" in drops:
        caps = []
    for cap in adds:
        if cap == "ALL" or cap in caps or cap in drops:
            continue
        if cap not in available:
            raise InvalidArgument(
                f"capability {cap} cannot be granted: it is not in crispy's own bounding set on this node; "
                f"remove it from capabilities.add")
        caps.append(cap)
    caps = [c for c in caps if c not in drops]
    order = {c: i for i, c in enumerate(ALL_CAPABILITIES)}
    return sorted(caps, key=order.__getitem__)

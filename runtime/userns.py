"""A pod's user namespace (`hostUsers: false`): the ID mappings kubelet
sends in `NamespaceOption.userns_options`, checked before anything is made.

kubelet allocates each such pod one range of host IDs (65536 long, at a
multiple of 65536) and sends it as a single mapping for uids and one for
gids, container ID 0 first. crispy takes exactly that shape: one mapping
each, starting at container ID 0, not reaching host ID 0 (the container's
root would be the node's root) and within the kernel's 32-bit ID space.
Anything else is refused rather than guessed at, since a wrong mapping
hands the pod files and processes of other pods or of the node.
"""

from __future__ import annotations

from dataclasses import dataclass

from cri.proto import api_pb2 as pb
from runtime.errors import InvalidArgument

# uid_t is 32 bits; (uid_t)-1 itself is never a valid ID.
ID_SPACE = 1 << 32


@dataclass(frozen=True)
class IdMapping:
    container_id: int
    host_id: int
    length: int

    def line(self) -> str:
        """The /proc/<pid>/uid_map (or gid_map) line for this range."""
        return f"{self.container_id} {self.host_id} {self.length}\n"

    def oci(self) -> dict[str, int]:
        return {"containerID": self.container_id, "hostID": self.host_id, "size": self.length}


@dataclass(frozen=True)
class PodUserns:
    uids: IdMapping
    gids: IdMapping


def mode_name(mode: int) -> str:
    try:
        return pb.NamespaceMode.Name(mode)
    except ValueError:
        return str(mode)


def pod_userns(ns: pb.NamespaceOption, where: str = "PodSandboxConfig.linux.security_context") -> PodUserns | None:
    """The pod's mappings when `ns` asks for a user namespace of the pod's
    own, None when it stays in the node's; InvalidArgument naming the field
    for anything crispy cannot honour exactly."""
    if not ns.HasField("userns_options"):
        return None
    opts = ns.userns_options
    field = f"{where}.namespace_options.userns_options"
    if opts.mode == pb.NODE:
        if opts.uids or opts.gids:
            raise InvalidArgument(f"{field}: uids/gids mappings are only for mode POD; the NODE user namespace "
                                  f"is the node's own and cannot be remapped")
        return None
    if opts.mode != pb.POD:
        raise InvalidArgument(f"{field}.mode {mode_name(opts.mode)} is not supported: a user namespace is "
                              f"either the node's (NODE) or the pod's own (POD)")
    if ns.network == pb.NODE or ns.pid == pb.NODE or ns.ipc == pb.NODE:
        shared = [k for k, m in (("network", ns.network), ("pid", ns.pid), ("ipc", ns.ipc)) if m == pb.NODE]
        raise InvalidArgument(f"{field}: a pod with its own user namespace cannot share the node's "
                              f"{', '.join(shared)} namespace (hostUsers: false excludes hostNetwork, hostPID "
                              f"and hostIPC)")
    return PodUserns(uids=_one_mapping(list(opts.uids), f"{field}.uids"),
                     gids=_one_mapping(list(opts.gids), f"{field}.gids"))


def _one_mapping(maps: list[pb.IDMapping], field: str) -> IdMapping:
    if len(maps) != 1:
        raise InvalidArgument(f"{field} has {len(maps)} mappings; mode POD takes exactly one, from container "
                              f"ID 0 (as kubelet sends for hostUsers: false)")
    m = maps[0]
    if m.container_id != 0:
        raise InvalidArgument(f"{field}: container ID 0 is not mapped (the mapping starts at container ID "
                              f"{m.container_id}); map a range starting at container ID 0")
    if m.length == 0:
        raise InvalidArgument(f"{field}: the mapping's length is 0; give the number of IDs to map (kubelet "
                              f"uses 65536)")
    if m.host_id == 0:
        raise InvalidArgument(f"{field}: host ID 0 would make the container's root the node's root; map "
                              f"container ID 0 to an unused host range (kubelet uses multiples of 65536)")
    if m.host_id + m.length >= ID_SPACE or m.container_id + m.length >= ID_SPACE:
        raise InvalidArgument(f"{field}: host IDs {m.host_id}..{m.host_id + m.length - 1} run past the "
                              f"largest ID ({ID_SPACE - 2}); shorten the mapping or start it lower")
    return IdMapping(m.container_id, m.host_id, m.length)

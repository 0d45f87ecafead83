"""Which namespaces a process is in: each kind's inode, and whether it is
the container's own, shared with its pod (the pinned file), or the
host's — next to what the OCI spec asked for, with every disagreement
named."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from runtime.explain.sources import PROC, host_ns_inode, ns_inode, path_inode

# /proc/<pid>/ns names, in the order reports list them.
KINDS = ("net", "ipc", "uts", "pid", "mnt", "user", "cgroup", "time")
# OCI spec namespace types by /proc name.
SPEC_TYPES = {"net": "network", "mnt": "mount"}
# PodNamespaces.paths() keys by /proc name.
POD_KEYS = {"net": "network", "ipc": "ipc", "uts": "uts", "pid": "pid", "user": "user"}
# What sharing the host's namespace of a kind means, said once per kind.
HOST_MEANS = {
    "net": "the node's network: its interfaces, ports and firewall",
    "ipc": "the node's System V IPC and POSIX message queues",
    "uts": "the node's hostname",
    "pid": "every process on the node is visible and signalable",
    "mnt": "the node's mount table",
    "user": "no user namespace: root in the container is root on the node",
    "cgroup": "the node's cgroup tree is visible as it is",
    "time": "the node's clocks (there is no reason for another)",
}


@dataclass
class NamespaceFacts:
    kind: str
    inode: int | None
    holder: str  # "own" | "pod" | "host" | "container" (another container's, by path) | "gone"
    path: str = ""  # the pinned file when the pod holds it
    expected: str = ""  # what the spec asked: "own", "pod", "host" or "path:<file>"
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _expected(kind: str, spec_namespaces: list[dict[str, Any]], pod_paths: dict[str, str]) -> tuple[str, str]:
    """(what the spec asked, the path it joins)."""
    wanted = SPEC_TYPES.get(kind, kind)
    for ns in spec_namespaces:
        if ns.get("type") == wanted:
            path = str(ns.get("path") or "")
            if not path:
                return "own", ""
            return ("pod" if path in pod_paths.values() else f"path:{path}"), path
    return "host", ""


def of_container(pid: int, spec_namespaces: list[dict[str, Any]], pod_paths: dict[str, str],
                 proc: Path = PROC, inode_of: Callable[[str], int | None] = path_inode) -> list[NamespaceFacts]:
    """`pod_paths`: the pod's pinned files (PodNamespaces.paths())."""
    pinned = {kind: (path, inode_of(path)) for kind, key in POD_KEYS.items() if (path := pod_paths.get(key))}
    out = []
    for kind in KINDS:
        inode = ns_inode(proc, pid, kind)
        host = host_ns_inode(proc, kind)
        expected, joined = _expected(kind, spec_namespaces, pod_paths)
        facts = NamespaceFacts(kind=kind, inode=inode, holder="gone", expected=expected)
        if inode is None:
            out.append(facts)
            continue
        pin = pinned.get(kind)
        if inode == host:
            facts.holder = "host"
        elif pin is not None and pin[1] == inode:
            facts.holder, facts.path = "pod", pin[0]
        elif joined and inode_of(joined) == inode:
            facts.holder, facts.path = "container", joined
        else:
            facts.holder = "own"
        facts.warnings = _disagreements(kind, facts, joined, inode_of)
        out.append(facts)
    return out


def _disagreements(kind: str, facts: NamespaceFacts, joined: str,
                   inode_of: Callable[[str], int | None]) -> list[str]:
    exp = facts.expected
    if exp == "host" and facts.holder != "host":
        # The runtime may make namespaces the spec left out; only the
        # kinds crispy decides on are worth a word.
        return [f"{kind}: the spec leaves it to the host's, but the process is in another"] \
            if kind in POD_KEYS else []
    if exp == "own" and facts.holder != "own":
        return [f"{kind}: the spec asked for a namespace of its own, but it is the {facts.holder}'s"]
    if joined:
        target = inode_of(joined)
        if target is None:
            return [f"{kind}: the spec joins {joined}, which no longer exists"]
        if target != facts.inode:
            return [f"{kind}: NOT shared — the spec joins {joined} (inode {target}), "
                    f"the process is in inode {facts.inode}"]
    return []


def of_pod(infra_pid: int, pod_paths: dict[str, str], host_network: bool, host_ipc: bool, pid_mode: str,
           proc: Path = PROC, inode_of: Callable[[str], int | None] = path_inode) -> list[NamespaceFacts]:
    """A pod's namespaces: its pinned files, checked against the host's and
    (when the pod has an infra process) against the infra's."""
    wants_host = {"net": host_network, "uts": host_network, "ipc": host_ipc, "pid": pid_mode == "node"}
    out = []
    for kind in ("net", "ipc", "uts", "pid", "user"):
        host = host_ns_inode(proc, kind)
        path = pod_paths.get(POD_KEYS[kind], "")
        if wants_host.get(kind):
            expected = "host"
        elif kind == "pid" and pid_mode != "pod":
            expected = "own"  # each container its own
        elif kind == "user":
            expected = "pod" if path else "host"
        else:
            expected = "pod"
        facts = NamespaceFacts(kind=kind, inode=None, holder="host", path=path, expected=expected)
        if path:
            facts.inode = inode_of(path)
            facts.holder = "gone" if facts.inode is None else "host" if facts.inode == host else "pod"
            if facts.holder == "gone":
                facts.warnings.append(f"{kind}: the pinned file {path} is gone")
            elif facts.holder == "host":
                facts.warnings.append(f"{kind}: the pinned file {path} is the HOST's namespace")
            if infra_pid and facts.inode is not None:
                infra = ns_inode(proc, infra_pid, kind)
                if infra is not None and infra != facts.inode:
                    facts.warnings.append(f"{kind}: the infra process {infra_pid} is in inode {infra}, "
                                          f"not the pinned {facts.inode}")
        elif expected == "own":
            facts.holder, facts.inode = "own", None
        else:
            facts.inode = host
        if expected == "pod" and not path:
            facts.warnings.append(f"{kind}: the pod should hold one but has no pinned file")
        out.append(facts)
    return out

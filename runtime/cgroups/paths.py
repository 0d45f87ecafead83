"""Cgroup names in both driver forms and where they live in the tree.

cgroupfs names are paths ("/crispy/pod1/crispy-<id>"); systemd names are
slices and scopes ("kubepods-pod1.slice", "kubepods-pod1.slice:crispy:<id>"),
which the OCI runtime turns into "<slice path>/crispy-<id>.scope".
"""

from __future__ import annotations

from runtime.errors import InvalidArgument

PREFIX = "crispy"


def _check_parent_cgroupfs(parent: str) -> str:
    if not parent.startswith("/"):
        raise InvalidArgument(f"cgroup_parent {parent!r} must be an absolute path with the cgroupfs driver")
    if ".." in parent.split("/"):
        raise InvalidArgument(f"cgroup_parent {parent!r} must not contain '..'")
    return "/" + "/".join(p for p in parent.split("/") if p)


def slice_path(name: str) -> str:
    """"a-b-c.slice" -> "/a.slice/a-b.slice/a-b-c.slice" (systemd's nesting
    by dashes); "-.slice" or "" is the root."""
    if name in ("", "-.slice", "/"):
        return "/"
    if not name.endswith(".slice") or "/" in name:
        raise InvalidArgument(f"cgroup_parent {name!r} must be a systemd slice name like 'kubepods-pod1.slice' with "
                              "the systemd driver")
    stem = name[: -len(".slice")]
    if stem.startswith("-") or stem.endswith("-") or "--" in stem:
        raise InvalidArgument(f"systemd slice name {name!r} is malformed")
    parts = stem.split("-")
    out = []
    for i in range(1, len(parts) + 1):
        out.append("-".join(parts[:i]) + ".slice")
    return "/" + "/".join(out)


def cgroups_path(parent: str, container_id: str, driver: str) -> str:
    """The OCI `linux.cgroupsPath` for a container under `parent`."""
    if driver == "systemd":
        slice_path(parent or "-.slice")  # validates
        return f"{parent or 'system.slice'}:{PREFIX}:{container_id}"
    if driver == "cgroupfs":
        base = _check_parent_cgroupfs(parent or "/")
        return f"{base.rstrip('/')}/{PREFIX}-{container_id}"
    raise InvalidArgument(f"unknown cgroup driver {driver!r}; use cgroupfs or systemd")


def fs_path(name: str, driver: str) -> str:
    """Where the cgroup named `name` (either a spec cgroupsPath or a pod's
    cgroup_parent) sits below each hierarchy root."""
    if driver == "systemd":
        if name.count(":") == 2:
            parent, prefix, unit = name.split(":")
            base = slice_path(parent or "system.slice")
            unit = unit if unit.endswith(".slice") else f"{prefix}-{unit}.scope" if prefix else f"{unit}.scope"
            return base.rstrip("/") + "/" + unit
        return slice_path(name)
    return _check_parent_cgroupfs(name)

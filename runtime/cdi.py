"""Container Device Interface: devices named "vendor.com/class=name",
described by spec files (JSON or YAML) that vendors drop into /etc/cdi and
/var/run/cdi, and applied to an OCI spec as container edits.

Only what the CDI spec defines for containers is applied: env, device
nodes, mounts, hooks and additional GIDs. A later directory wins over an
earlier one for the same device, as the spec orders them.
"""

from __future__ import annotations

import json
import os
import re
import stat
from dataclasses import dataclass, field
from typing import Any

from runtime import untrusted_files
from runtime.errors import InvalidArgument

DEFAULT_SPEC_DIRS = ("/etc/cdi", "/var/run/cdi")
ANNOTATION_PREFIX = "cdi.k8s.io/"
_KIND_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9.-]*[a-zA-Z0-9]/[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.:-]*$")
_HOOKS = {"prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"}
MAX_SPEC_BYTES = 4 * 1024 * 1024


@dataclass
class Device:
    kind: str
    name: str
    edits: dict[str, Any]
    spec_edits: dict[str, Any]
    source: str


@dataclass
class Registry:
    devices: dict[str, Device] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def parse_qualified(name: str) -> tuple[str, str]:
    kind, sep, dev = name.partition("=")
    if not sep or not _KIND_RE.match(kind) or not _NAME_RE.match(dev):
        raise InvalidArgument(f"CDI device {name!r} is not a qualified name like vendor.com/class=name")
    return kind, dev


def _load_document(path: str) -> Any:
    # Only a regular file: a FIFO among the specs would block every
    # CreateContainer that asks for a CDI device.
    try:
        data = untrusted_files.read_host_file(path, MAX_SPEC_BYTES)
    except untrusted_files.UnreadableFile as e:
        raise ValueError(e.reason) from None
    if path.endswith(".json"):
        return json.loads(data)
    import yaml  # only CDI needs YAML; keep it off the daemon's start-up path
    return yaml.safe_load(data)


def load(spec_dirs: tuple[str, ...] | list[str] = DEFAULT_SPEC_DIRS) -> Registry:
    """Every device in the spec directories. Broken files are recorded in
    `errors` and skipped, so one bad vendor file does not hide the others."""
    reg = Registry()
    for d in spec_dirs:
        try:
            names = sorted(os.listdir(d))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for fname in names:
            if not fname.endswith((".json", ".yaml", ".yml")):
                continue
            path = os.path.join(d, fname)
            try:
                doc = _load_document(path)
                _check_spec(doc)
            except Exception as e:  # noqa: BLE001 - any parse error is the file's fault
                reg.errors.append(f"{path}: {e}")
                continue
            for dev in doc.get("devices") or []:
                qualified = f"{doc['kind']}={dev['name']}"
                reg.devices[qualified] = Device(doc["kind"], dev["name"], dev.get("containerEdits") or {},
                                                doc.get("containerEdits") or {}, path)
    return reg


def _check_spec(doc: Any) -> None:
    if not isinstance(doc, dict):
        raise ValueError("not a mapping")
    if not isinstance(doc.get("cdiVersion"), str):
        raise ValueError("cdiVersion missing")
    if not isinstance(doc.get("kind"), str) or not _KIND_RE.match(doc["kind"]):
        raise ValueError(f"kind {doc.get('kind')!r} is not vendor/class")
    devices = doc.get("devices")
    if not isinstance(devices, list) or not devices:
        raise ValueError("no devices")
    for dev in devices:
        if not isinstance(dev, dict) or not isinstance(dev.get("name"), str) or not _NAME_RE.match(dev["name"]):
            raise ValueError(f"device {dev!r} has no valid name")
        _check_edits(dev.get("containerEdits") or {})
    _check_edits(doc.get("containerEdits") or {})


def _check_edits(edits: Any) -> None:
    if not isinstance(edits, dict):
        raise ValueError("containerEdits is not a mapping")
    for e in edits.get("env") or []:
        if not isinstance(e, str) or "=" not in e:
            raise ValueError(f"env entry {e!r} is not KEY=VALUE")
    for n in edits.get("deviceNodes") or []:
        if not isinstance(n, dict) or not isinstance(n.get("path"), str) or not n["path"].startswith("/"):
            raise ValueError(f"device node {n!r} needs an absolute path")
        if n.get("type") not in (None, "", "c", "b", "u", "p"):
            raise ValueError(f"device node {n['path']} has unknown type {n['type']!r}")
        if n.get("permissions") and not set(n["permissions"]) <= set("rwm"):
            raise ValueError(f"device node {n['path']} permissions must be made of r, w and m")
    for m in edits.get("mounts") or []:
        if (not isinstance(m, dict) or not isinstance(m.get("hostPath"), str)
                or not str(m.get("containerPath", "")).startswith("/")):
            raise ValueError(f"mount {m!r} needs hostPath and an absolute containerPath")
    for h in edits.get("hooks") or []:
        if not isinstance(h, dict) or h.get("hookName") not in _HOOKS or not isinstance(h.get("path"), str):
            raise ValueError(f"hook {h!r} needs a hookName in {sorted(_HOOKS)} and a path")
    for g in edits.get("additionalGids") or []:
        if not isinstance(g, int) or g < 0:
            raise ValueError(f"additionalGids entry {g!r} is not a gid")


def requested(cdi_names: list[str], annotations: dict[str, str]) -> list[str]:
    """Device names from the CRI field and from cdi.k8s.io/* annotations,
    in order, without repeats."""
    out: list[str] = []
    for n in list(cdi_names) + [d.strip() for k, v in sorted(annotations.items()) if k.startswith(ANNOTATION_PREFIX)
                                for d in v.split(",") if d.strip()]:
        if n not in out:
            out.append(n)
    return out


def _node(n: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    host = n.get("hostPath") or n["path"]
    kind, major, minor = n.get("type") or "", n.get("major"), n.get("minor")
    mode = n.get("fileMode")
    if not kind or major is None:
        try:
            st = os.stat(host)
        except FileNotFoundError:
            raise InvalidArgument(f"CDI device node {host} does not exist on this node") from None
        if stat.S_ISCHR(st.st_mode):
            kind = kind or "c"
        elif stat.S_ISBLK(st.st_mode):
            kind = kind or "b"
        elif stat.S_ISFIFO(st.st_mode):
            kind = kind or "p"
        else:
            raise InvalidArgument(f"CDI device node {host} is not a device")
        if major is None:
            major, minor = os.major(st.st_rdev), os.minor(st.st_rdev)
        if mode is None:
            mode = stat.S_IMODE(st.st_mode)
    dev: dict[str, Any] = {"path": n["path"], "type": kind, "major": major, "minor": minor or 0}
    if mode is not None:
        dev["fileMode"] = mode
    for k in ("uid", "gid"):
        if n.get(k) is not None:
            dev[k] = n[k]
    rule = None
    if kind in ("c", "b", "u"):
        rule = {"allow": True, "type": "c" if kind == "u" else kind, "major": major, "minor": minor or 0,
                "access": n.get("permissions") or "rwm"}
    return dev, rule


def apply(spec: dict[str, Any], names: list[str], registry: Registry) -> None:
    """Edit `spec` in place for the CDI devices `names`; InvalidArgument
    naming the device if one is unknown."""
    if not names:
        return
    devices = []
    for name in names:
        parse_qualified(name)
        dev = registry.devices.get(name)
        if dev is None:
            hint = f" (broken CDI spec files: {'; '.join(registry.errors)})" if registry.errors else ""
            raise InvalidArgument(f"CDI device {name} is not described by any spec in /etc/cdi or /var/run/cdi{hint}")
        devices.append(dev)
    # Spec-wide edits once per spec file, then each device's own.
    edits: list[dict[str, Any]] = []
    seen_specs: set[str] = set()
    for dev in devices:
        if dev.source not in seen_specs:
            seen_specs.add(dev.source)
            edits.append(dev.spec_edits)
        edits.append(dev.edits)
    process = spec["process"]
    linux = spec.setdefault("linux", {})
    for e in edits:
        env = {x.split("=", 1)[0]: i for i, x in enumerate(process.get("env", []))}
        for item in e.get("env") or []:
            key = item.split("=", 1)[0]
            if key in env:
                process["env"][env[key]] = item
            else:
                env[key] = len(process.setdefault("env", []))
                process["env"].append(item)
        for n in e.get("deviceNodes") or []:
            node, rule = _node(n)
            linux["devices"] = [d for d in linux.get("devices", []) if d["path"] != node["path"]] + [node]
            if rule is not None:
                linux.setdefault("resources", {}).setdefault("devices", []).append(rule)
        for m in e.get("mounts") or []:
            spec["mounts"] = [x for x in spec.get("mounts", []) if x["destination"] != m["containerPath"]]
            spec["mounts"].append({"destination": m["containerPath"], "source": m["hostPath"],
                                   "type": m.get("type") or "bind",
                                   "options": list(m.get("options") or ["rbind", "rprivate"])})
        for h in e.get("hooks") or []:
            hook = {"path": h["path"]}
            for k in ("args", "env", "timeout"):
                if h.get(k):
                    hook[k] = h[k]
            spec.setdefault("hooks", {}).setdefault(h["hookName"], []).append(hook)
        for g in e.get("additionalGids") or []:
            gids = process["user"].setdefault("additionalGids", [])
            if g not in gids:
                gids.append(g)

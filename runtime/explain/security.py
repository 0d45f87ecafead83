"""What confines a process: its capability sets by name, NoNewPrivs, its
seccomp mode and the profile crispy gave it, its AppArmor or SELinux
label, its user-namespace ID mappings and the devices its cgroup allows —
each read from the kernel and set against the OCI spec."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from runtime.capabilities import ALL_CAPABILITIES
from runtime.explain.processes import parse_id_map
from runtime.explain.sources import PROC, read, status_fields

SECCOMP_MODES = {"0": "disabled", "1": "strict", "2": "filter"}


def cap_names(mask_hex: str) -> list[str]:
    try:
        mask = int(mask_hex, 16)
    except ValueError:
        return []
    names = [c for i, c in enumerate(ALL_CAPABILITIES) if mask & (1 << i)]
    # Capabilities newer than crispy's table keep their number.
    names += [f"CAP_{i}" for i in range(len(ALL_CAPABILITIES), 64) if mask & (1 << i)]
    return names


@dataclass
class SecurityFacts:
    capabilities: dict[str, list[str]] = field(default_factory=dict)  # effective, permitted, bounding, ...
    no_new_privs: bool | None = None
    seccomp_mode: str = ""
    seccomp_filters: int | None = None
    seccomp_profile: str = ""  # as CRI asked: RuntimeDefault / Localhost <path> / Unconfined
    lsm: str = ""  # the label the kernel shows (AppArmor profile or SELinux context)
    lsm_modules: list[str] = field(default_factory=list)
    uid_map: list[list[int]] = field(default_factory=list)  # inside, outside, count
    gid_map: list[list[int]] = field(default_factory=list)
    devices: list[str] = field(default_factory=list)  # the cgroup's rules (v1) or the spec's (v2)
    devices_source: str = ""
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def profile_of(config: dict[str, Any], spec_has_seccomp: bool) -> str:
    """The seccomp profile the CRI ContainerConfig (as the record keeps it:
    proto JSON with proto field names, default values left out) asked for,
    as oci_spec.py chose it."""
    sc = (config.get("linux") or {}).get("security_context") or {}
    if sc.get("privileged"):
        return "none (privileged)"
    if "seccomp" in sc:
        prof = sc["seccomp"] or {}
        kind = prof.get("profile_type", "RuntimeDefault")  # the enum's zero value
        return f"Localhost {prof.get('localhost_ref', '')}" if kind == "Localhost" else str(kind)
    legacy = sc.get("seccomp_profile_path", "")
    if legacy:
        return str(legacy)
    return "RuntimeDefault (the node's seccomp_default)" if spec_has_seccomp else "Unconfined (none asked)"


def read_facts(pid: int, proc: Path = PROC, lsm_list: Path = Path("/sys/kernel/security/lsm")) -> SecurityFacts:
    st = status_fields(proc, pid)
    facts = SecurityFacts()
    for key, name in (("CapEff", "effective"), ("CapPrm", "permitted"), ("CapBnd", "bounding"),
                      ("CapInh", "inheritable"), ("CapAmb", "ambient")):
        if key in st:
            facts.capabilities[name] = cap_names(st[key])
    if "NoNewPrivs" in st:
        facts.no_new_privs = st["NoNewPrivs"] == "1"
    facts.seccomp_mode = SECCOMP_MODES.get(st.get("Seccomp", ""), st.get("Seccomp", "?"))
    if st.get("Seccomp_filters", "").isdigit():
        facts.seccomp_filters = int(st["Seccomp_filters"])
    facts.lsm_modules = [m for m in (read(lsm_list) or "").strip().split(",") if m]
    label = read(proc / str(pid) / "attr" / "apparmor" / "current") or read(proc / str(pid) / "attr" / "current")
    facts.lsm = (label or "").strip("\0\n ")
    facts.uid_map = [list(t) for t in parse_id_map(read(proc / str(pid) / "uid_map") or "")]
    facts.gid_map = [list(t) for t in parse_id_map(read(proc / str(pid) / "gid_map") or "")]
    return facts


def compare(facts: SecurityFacts, spec: dict[str, Any]) -> list[str]:
    """Where the kernel's view differs from the spec's `process` and `linux`."""
    out = []
    process = spec.get("process") or {}
    caps = process.get("capabilities") or {}
    for name in ("effective", "permitted", "bounding"):
        if name not in caps or name not in facts.capabilities:
            continue
        wanted, held = set(caps[name] or []), set(facts.capabilities[name])
        if wanted != held:
            extra, missing = sorted(held - wanted), sorted(wanted - held)
            out.append(f"{name} capabilities differ from the spec:"
                       + (f" has {', '.join(extra)} not asked for" if extra else "")
                       + (f" lacks {', '.join(missing)}" if missing else ""))
    if facts.no_new_privs is not None and bool(process.get("noNewPrivileges")) != facts.no_new_privs:
        out.append(f"NoNewPrivs is {int(facts.no_new_privs)}, the spec asks for "
                   f"{int(bool(process.get('noNewPrivileges')))}")
    linux = spec.get("linux") or {}
    if linux.get("seccomp") and facts.seccomp_mode != "filter":
        out.append(f"the spec has a seccomp profile but the process's seccomp mode is {facts.seccomp_mode}")
    if not linux.get("seccomp") and facts.seccomp_mode == "filter":
        out.append("the process has a seccomp filter the spec did not ask for")
    apparmor = process.get("apparmorProfile", "")
    if apparmor and "apparmor" in facts.lsm_modules and not facts.lsm.startswith(apparmor):
        out.append(f"the spec asks for AppArmor profile {apparmor}, the process is confined by {facts.lsm or 'none'}")
    selinux = process.get("selinuxLabel", "")
    if selinux and "selinux" in facts.lsm_modules and facts.lsm != selinux:
        out.append(f"the spec asks for SELinux label {selinux}, the process has {facts.lsm or 'none'}")
    for kind, have in (("uid", facts.uid_map), ("gid", facts.gid_map)):
        want = [[m.get("containerID"), m.get("hostID"), m.get("size")] for m in linux.get(f"{kind}Mappings") or []]
        if want and want != have:
            out.append(f"{kind} mappings differ: the spec has {want}, the kernel {have}")
    return out


def spec_devices(spec: dict[str, Any]) -> list[str]:
    """The spec's device cgroup rules in devices.list form ("c 1:3 rwm"),
    for v2 where the kernel enforces them with an eBPF program that has no
    readable list."""
    out = []
    for rule in ((spec.get("linux") or {}).get("resources") or {}).get("devices") or []:
        if not rule.get("allow"):
            continue
        kind = rule.get("type") or "a"
        major = "*" if rule.get("major") in (None, -1) else rule["major"]
        minor = "*" if rule.get("minor") in (None, -1) else rule["minor"]
        out.append(f"{kind} {major}:{minor} {rule.get('access') or 'rwm'}")
    return out

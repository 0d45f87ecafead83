"""Seccomp profiles: crispy's RuntimeDefault profile, Localhost profiles from
files, and their translation to the OCI `linux.seccomp` object.

Profiles are written in the format Docker made common (and kubelet users
write): `defaultAction`, `archMap` or `architectures`, and `syscalls` rules
that may carry `includes`/`excludes` conditions on capabilities and
architectures. OCI runtimes understand none of the conditions, so they are
evaluated here, for the container's actual capabilities and the node's
architecture.
"""

from __future__ import annotations

import json
import os
import platform
from importlib import resources
from typing import Any

from runtime import untrusted_files
from runtime.errors import InvalidArgument

ACTIONS = {"SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_TRAP",
           "SCMP_ACT_ERRNO", "SCMP_ACT_TRACE", "SCMP_ACT_ALLOW", "SCMP_ACT_LOG", "SCMP_ACT_NOTIFY"}
OPERATORS = {"SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ", "SCMP_CMP_GE",
             "SCMP_CMP_GT", "SCMP_CMP_MASKED_EQ"}
FLAGS = {"SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
         "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"}
# What the conditions in profiles call architectures (Go's GOARCH names and
# the SCMP ones without prefix), per machine.
_MACHINE_ARCHES = {
    "x86_64": {"amd64", "x86_64"}, "aarch64": {"arm64", "aarch64"}, "ppc64le": {"ppc64le"},
    "s390x": {"s390x"}, "riscv64": {"riscv64"}, "i686": {"386", "x86"}, "armv7l": {"arm"},
}
_NATIVE_SCMP = {"x86_64": "SCMP_ARCH_X86_64", "aarch64": "SCMP_ARCH_AARCH64", "ppc64le": "SCMP_ARCH_PPC64LE",
                "s390x": "SCMP_ARCH_S390X", "riscv64": "SCMP_ARCH_RISCV64", "i686": "SCMP_ARCH_X86",
                "armv7l": "SCMP_ARCH_ARM"}

DEFAULT_PROFILE_FILE = "seccomp_default.json"
MAX_PROFILE_BYTES = 8 * 1024 * 1024


def load_default() -> dict[str, Any]:
    return json.loads(resources.files("runtime").joinpath(DEFAULT_PROFILE_FILE).read_text())


def load_file(path: str) -> dict[str, Any]:
    """A Localhost profile; InvalidArgument naming the path if it is missing
    or not a valid profile."""
    try:
        # Only a regular file: opening a FIFO put there would block the
        # request (and a pool thread) until someone writes to it.
        data = untrusted_files.read_host_file(path, MAX_PROFILE_BYTES)
    except FileNotFoundError:
        raise InvalidArgument(f"seccomp profile {path} does not exist; "
                              "put the profile there or choose another localhost_ref") from None
    except untrusted_files.UnreadableFile as e:
        raise InvalidArgument(f"seccomp profile {path} {e.reason}; a profile must be a JSON file") from None
    except OSError as e:
        raise InvalidArgument(f"seccomp profile {path} cannot be read: {e.strerror}") from None
    try:
        profile = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InvalidArgument(f"seccomp profile {path} is not valid JSON: {e}") from None
    validate(profile, path)
    return profile


def validate(profile: Any, source: str) -> None:
    def bad(why: str) -> InvalidArgument:
        return InvalidArgument(f"seccomp profile {source}: {why}")

    if not isinstance(profile, dict):
        raise bad("must be a JSON object")
    if profile.get("defaultAction") not in ACTIONS:
        raise bad(f"defaultAction {profile.get('defaultAction')!r} is not one of {', '.join(sorted(ACTIONS))}")
    for key in ("architectures", "flags"):
        if key in profile and profile[key] is not None and not (
                isinstance(profile[key], list) and all(isinstance(a, str) for a in profile[key])):
            raise bad(f"{key} must be a list of strings")
    for flag in profile.get("flags") or []:
        if flag not in FLAGS:
            raise bad(f"unknown flag {flag!r}")
    arch_map = profile.get("archMap") or []
    if not isinstance(arch_map, list) or not all(isinstance(a, dict) and isinstance(a.get("architecture"), str)
                                                 for a in arch_map):
        raise bad("archMap must be a list of {architecture, subArchitectures}")
    syscalls = profile.get("syscalls") or []
    if not isinstance(syscalls, list):
        raise bad("syscalls must be a list")
    for i, rule in enumerate(syscalls):
        where = f"syscalls[{i}]"
        if not isinstance(rule, dict):
            raise bad(f"{where} must be an object")
        names = rule.get("names")
        if names is None and isinstance(rule.get("name"), str):
            names = [rule["name"]]
        if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
            raise bad(f"{where} needs a non-empty list of syscall names")
        if rule.get("action") not in ACTIONS:
            raise bad(f"{where} action {rule.get('action')!r} is not one of {', '.join(sorted(ACTIONS))}")
        for arg in rule.get("args") or []:
            if not isinstance(arg, dict) or not isinstance(arg.get("index"), int) or not 0 <= arg["index"] <= 5:
                raise bad(f"{where} args need an index 0..5")
            if arg.get("op") not in OPERATORS:
                raise bad(f"{where} arg op {arg.get('op')!r} is not one of {', '.join(sorted(OPERATORS))}")
            for k in ("value", "valueTwo"):
                if k in arg and (not isinstance(arg[k], int) or arg[k] < 0):
                    raise bad(f"{where} arg {k} must be a non-negative integer")
        for cond in ("includes", "excludes"):
            c = rule.get(cond) or {}
            if not isinstance(c, dict):
                raise bad(f"{where} {cond} must be an object")


def _kernel_version(release: str) -> tuple[int, ...]:
    parts = []
    for p in release.split("-")[0].split(".")[:3]:
        digits = "".join(ch for ch in p if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def _condition_holds(cond: dict[str, Any], caps: set[str], arches: set[str], all_of: bool,
                     kernel: str = "") -> bool:
    """includes: every listed cap held, one of the arches matches and the
    kernel is at least minKernel; excludes: any listed cap held or any arch
    matches."""
    if all_of and cond.get("minKernel"):
        if _kernel_version(kernel or platform.release()) < _kernel_version(str(cond["minKernel"])):
            return False
    want_caps = [c if c.upper().startswith("CAP_") else "CAP_" + c for c in (cond.get("caps") or [])]
    want_caps = [c.upper() for c in want_caps]
    want_arches = set(cond.get("arches") or [])
    if all_of:
        if want_caps and not all(c in caps for c in want_caps):
            return False
        if want_arches and not (want_arches & arches):
            return False
        return True
    return bool(set(want_caps) & caps) or bool(want_arches & arches)


def to_oci(profile: dict[str, Any], caps: list[str], machine: str | None = None, kernel: str = "") -> dict[str, Any]:
    """The OCI `linux.seccomp` object for a container holding `caps`, on
    `machine` with kernel release `kernel` (this node's by default)."""
    machine = machine or platform.machine()
    arches = _MACHINE_ARCHES.get(machine, {machine})
    held = set(caps)
    out: dict[str, Any] = {"defaultAction": profile["defaultAction"]}
    if isinstance(profile.get("defaultErrnoRet"), int):
        out["defaultErrnoRet"] = profile["defaultErrnoRet"]
    architectures: list[str] = []
    if profile.get("archMap"):
        native = _NATIVE_SCMP.get(machine)
        for entry in profile["archMap"]:
            if native is not None and entry["architecture"] == native:
                architectures = [native] + list(entry.get("subArchitectures") or [])
    elif profile.get("architectures"):
        architectures = list(profile["architectures"])
    if architectures:
        out["architectures"] = architectures
    if profile.get("flags"):
        out["flags"] = list(profile["flags"])
    for key in ("listenerPath", "listenerMetadata"):
        if profile.get(key):
            out[key] = profile[key]
    rules = []
    for rule in profile.get("syscalls") or []:
        if rule.get("includes") and not _condition_holds(rule["includes"], held, arches, all_of=True, kernel=kernel):
            continue
        if rule.get("excludes") and _condition_holds(rule["excludes"], held, arches, all_of=False):
            continue
        names = rule.get("names") or [rule["name"]]
        oci: dict[str, Any] = {"names": list(names), "action": rule["action"]}
        if isinstance(rule.get("errnoRet"), int):
            oci["errnoRet"] = rule["errnoRet"]
        if rule.get("args"):
            oci["args"] = [{"index": a["index"], "value": a.get("value", 0), "valueTwo": a.get("valueTwo", 0),
                            "op": a["op"]} for a in rule["args"]]
        rules.append(oci)
    out["syscalls"] = rules
    return out


def localhost_path(ref: str, profile_root: str) -> str:
    """kubelet sends absolute paths; a relative ref is under the seccomp root."""
    ref = ref.removeprefix("localhost/")
    if not ref:
        raise InvalidArgument("seccomp Localhost profile needs a localhost_ref naming the profile file")
    path = ref if os.path.isabs(ref) else os.path.join(profile_root, ref)
    if not os.path.isabs(ref) and ".." in ref.split("/"):
        raise InvalidArgument(f"seccomp localhost_ref {ref!r} must not leave {profile_root}")
    return path


def profile_for(kind: str, ref: str, caps: list[str], profile_root: str) -> dict[str, Any] | None:
    """`kind` is "RuntimeDefault", "Unconfined" or "Localhost"; None = no filter."""
    if kind == "Unconfined":
        return None
    if kind == "RuntimeDefault":
        return to_oci(load_default(), caps)
    if kind == "Localhost":
        return to_oci(load_file(localhost_path(ref, profile_root)), caps)
    raise InvalidArgument(f"unknown seccomp profile type {kind!r}; use RuntimeDefault, Unconfined or Localhost")


def from_deprecated_path(path: str) -> tuple[str, str]:
    """The old `seccomp_profile_path` strings as (kind, ref)."""
    if path in ("", "unconfined"):
        return "Unconfined", ""
    if path in ("runtime/default", "docker/default"):
        return "RuntimeDefault", ""
    if path.startswith("localhost/"):
        return "Localhost", path.removeprefix("localhost/")
    raise InvalidArgument(
        f"seccomp_profile_path {path!r} is not understood; use 'runtime/default', 'unconfined' or 'localhost/<path>'")

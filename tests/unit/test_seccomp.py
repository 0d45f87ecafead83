"""Seccomp profiles: the shipped RuntimeDefault profile, conditions, and
validation of Localhost profiles."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from runtime import capabilities, seccomp
from runtime.errors import InvalidArgument

UNISTD = Path("/usr/include/x86_64-linux-gnu/asm/unistd_64.h")


def test_default_profile_is_valid_and_shipped():
    profile = seccomp.load_default()
    seccomp.validate(profile, "default")
    assert profile["defaultAction"] == "SCMP_ACT_ERRNO"
    # pyproject's package data must carry it into wheels.
    assert 'runtime = ["*.json"]' in (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()


def _allowed_names(oci: dict) -> set[str]:
    return {n for r in oci["syscalls"] if r["action"] == "SCMP_ACT_ALLOW" and not r.get("args") for n in r["names"]}


@pytest.mark.skipif(not UNISTD.exists(), reason="needs the x86_64 kernel headers")
def test_default_profile_names_are_real_syscalls():
    known = set(re.findall(r"#define __NR_(\w+)", UNISTD.read_text()))
    oci = seccomp.to_oci(seccomp.load_default(), list(capabilities.ALL_CAPABILITIES), machine="x86_64")
    names = {n for r in oci["syscalls"] for n in r["names"]}
    # Names missing from the x86_64 table must be other architectures' calls.
    # Calls newer than these 6.1 headers, listed so new libcs work.
    foreign = names - known - {"fchmodat2", "cachestat", "map_shadow_stack", "futex_wake", "futex_wait",
                               "futex_requeue", "mseal", "uretprobe"}
    assert all(re.search(r"32|64|time64|^_|^arm_|^s390|^riscv|^(ipc|socketcall|send|recv|sigaction|signal|sigprocmask|"
                         r"sigreturn|sigsuspend|sigpending|waitpid|stime|breakpoint|cacheflush|set_tls|"
                         r"sync_file_range2|fadvise64_64|ugetrlimit|umount|mmap2)$", n) for n in foreign), sorted(foreign)


def test_default_profile_refuses_dangerous_calls_without_caps():
    oci = seccomp.to_oci(seccomp.load_default(), list(capabilities.DEFAULT_CAPABILITIES), machine="x86_64")
    allowed = _allowed_names(oci)
    for ok in ("read", "write", "openat", "execve", "clone", "futex", "epoll_wait", "socket", "setuid", "chown", "ptrace"):
        assert ok in allowed or any(ok in r["names"] for r in oci["syscalls"] if r["action"] == "SCMP_ACT_ALLOW"), ok
    for bad in ("mount", "umount2", "setns", "unshare", "reboot", "kexec_load", "init_module", "bpf", "keyctl",
                "add_key", "settimeofday", "open_by_handle_at", "pivot_root", "swapon", "iopl", "userfaultfd",
                "io_uring_setup"):
        assert bad not in allowed, bad
    assert "modify_ldt" in allowed  # an x86-only rule, on x86


def test_capabilities_unlock_their_calls():
    profile = seccomp.load_default()
    with_caps = _allowed_names(seccomp.to_oci(profile, ["CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_MODULE",
                                                         "CAP_SYS_TIME", "CAP_SYS_PTRACE"], machine="x86_64"))
    for name in ("mount", "setns", "unshare", "reboot", "init_module", "settimeofday", "process_vm_readv", "clone"):
        assert name in with_caps, name
    without = seccomp.to_oci(profile, [], machine="x86_64")
    assert [r for r in without["syscalls"] if r["names"] == ["clone3"]][0]["errnoRet"] == 38


def test_arch_conditions_and_arch_map():
    profile = seccomp.load_default()
    arm = seccomp.to_oci(profile, [], machine="aarch64")
    assert arm["architectures"] == ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]
    assert "modify_ldt" not in _allowed_names(arm)
    s390 = seccomp.to_oci(profile, [], machine="s390x")
    clone_rules = [r for r in s390["syscalls"] if r["names"] == ["clone"]]
    assert [a["index"] for r in clone_rules for a in r["args"]] == [1]


def test_includes_needs_all_caps_excludes_any():
    profile = {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
        {"names": ["a"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_X", "CAP_Y"]}},
        {"names": ["b"], "action": "SCMP_ACT_ALLOW", "excludes": {"caps": ["CAP_X", "CAP_Z"]}},
        {"names": ["c"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["Y"]}},
    ]}
    seccomp.validate(profile, "t")
    assert _allowed_names(seccomp.to_oci(profile, ["CAP_X"])) == set()
    assert _allowed_names(seccomp.to_oci(profile, ["CAP_X", "CAP_Y"])) == {"a", "c"}
    assert _allowed_names(seccomp.to_oci(profile, ["CAP_Y"])) == {"b", "c"}


def test_oci_format_profile_passes_through():
    profile = {"defaultAction": "SCMP_ACT_LOG", "architectures": ["SCMP_ARCH_X86_64"], "flags": ["SECCOMP_FILTER_FLAG_LOG"],
               "syscalls": [{"names": ["kill"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
                             "args": [{"index": 1, "value": 9, "op": "SCMP_CMP_EQ"}]}]}
    seccomp.validate(profile, "t")
    assert seccomp.to_oci(profile, []) == {
        "defaultAction": "SCMP_ACT_LOG", "architectures": ["SCMP_ARCH_X86_64"], "flags": ["SECCOMP_FILTER_FLAG_LOG"],
        "syscalls": [{"names": ["kill"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
                      "args": [{"index": 1, "value": 9, "valueTwo": 0, "op": "SCMP_CMP_EQ"}]}]}


@pytest.mark.parametrize("profile,why", [
    ([], "JSON object"),
    ({"defaultAction": "ALLOW"}, "defaultAction"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": [], "action": "SCMP_ACT_ALLOW"}]}, "non-empty list"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["x"], "action": "nope"}]}, "action"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["x"], "action": "SCMP_ACT_ALLOW",
                                                      "args": [{"index": 7, "op": "SCMP_CMP_EQ"}]}]}, "index"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["x"], "action": "SCMP_ACT_ALLOW",
                                                      "args": [{"index": 0, "op": "EQ"}]}]}, "op"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_BOGUS"]}, "flag"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": {"x": 1}}, "list"),
])
def test_validation_errors(profile, why, tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps(profile))
    with pytest.raises(InvalidArgument, match=why) as err:
        seccomp.load_file(str(path))
    assert str(path) in err.value.message


def test_localhost_paths(tmp_path):
    assert seccomp.localhost_path("/abs/p.json", "/root") == "/abs/p.json"
    assert seccomp.localhost_path("localhost/rel/p.json", "/var/lib/kubelet/seccomp") == "/var/lib/kubelet/seccomp/rel/p.json"
    with pytest.raises(InvalidArgument, match="must not leave"):
        seccomp.localhost_path("../../etc/shadow", "/var/lib/kubelet/seccomp")
    with pytest.raises(InvalidArgument, match="localhost_ref"):
        seccomp.localhost_path("", "/x")


def test_min_kernel_condition():
    profile = {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
        {"names": ["new"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "5.10"}}]}
    assert _allowed_names(seccomp.to_oci(profile, [], kernel="6.1.0-13-amd64")) == {"new"}
    assert _allowed_names(seccomp.to_oci(profile, [], kernel="5.4.0")) == set()
    assert _allowed_names(seccomp.to_oci(profile, [], kernel="5.10")) == {"new"}

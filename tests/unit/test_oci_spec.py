"""build_spec: CRI container config + image config -> OCI config.json."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cri.proto import api_pb2 as pb
from runtime import capabilities
from runtime.errors import FailedPrecondition, InvalidArgument
from runtime.oci_spec import (
    DEFAULT_MASKED_PATHS,
    DEFAULT_READONLY_PATHS,
    ContainerSpecRequest,
    NodeFacts,
    SandboxView,
    build_spec,
    cgroups_path,
    exec_process_spec,
    validate_sysctls,
)

PASSWD = """root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
alice:x:1000:1000:Alice:/home/alice:/bin/sh
bob:x:1001:1001::/home/bob:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
"""
GROUP = """root:x:0:
daemon:x:1:
wheel:x:10:alice,root
alice:x:1000:
bob:x:1001:
audio:x:29:alice,bob
staff:x:50:bob
nogroup:x:65534:
"""


@pytest.fixture
def rootfs(tmp_path: Path) -> str:
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text(PASSWD)
    (root / "etc/group").write_text(GROUP)
    return str(root)


@pytest.fixture
def mountinfo(tmp_path: Path) -> str:
    p = tmp_path / "mountinfo"
    p.write_text(
        "22 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw\n"
        f"30 22 0:40 / {tmp_path}/mnt/shared rw shared:5 - tmpfs tmpfs rw\n"
        f"31 22 0:41 / {tmp_path}/mnt/slave rw master:5 - tmpfs tmpfs rw\n"
        f"32 22 0:42 / {tmp_path}/mnt/private rw - tmpfs tmpfs rw\n"
    )
    for d in ("shared/data", "slave/data", "private/data"):
        (tmp_path / "mnt" / d).mkdir(parents=True, exist_ok=True)
    return str(p)


def node(**kw) -> NodeFacts:
    kw.setdefault("capabilities", capabilities.ALL_CAPABILITIES)
    return NodeFacts(**kw)


def sandbox(**kw) -> SandboxView:
    cfg = pb.PodSandboxConfig(metadata=pb.PodSandboxMetadata(name="pod", namespace="ns", uid="uid-1"),
                              hostname="podhost")
    if kw.pop("privileged", False):
        cfg.linux.security_context.privileged = True
    for k, v in kw.pop("sysctls", {}).items():
        cfg.linux.sysctls[k] = v
    base = dict(id="sb1", config=cfg, hostname="podhost",
                namespaces={"network": "/run/crispy/ns/net", "ipc": "/run/crispy/ns/ipc", "uts": "/run/crispy/ns/uts"},
                cgroup_parent="/crispy/pod-sb1", etc_hosts="/run/crispy/sb1/hosts", resolv_conf="/run/crispy/sb1/resolv.conf",
                etc_hostname="/run/crispy/sb1/hostname", shm="/run/crispy/sb1/shm")
    base.update(kw)
    return SandboxView(**base)


def request(rootfs: str, config: pb.ContainerConfig | None = None, image: dict | None = None,
            sb: SandboxView | None = None, facts: NodeFacts | None = None, **kw) -> ContainerSpecRequest:
    config = config or pb.ContainerConfig()
    if not config.metadata.name:
        config.metadata.name = "c"
    return ContainerSpecRequest(
        id="ctr1", config=config, sandbox=sb or sandbox(),
        image_config=image if image is not None else {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin:/usr/bin"]},
        rootfs=rootfs, cgroup_version=kw.pop("cgroup_version", 1), cgroup_driver=kw.pop("cgroup_driver", "cgroupfs"),
        node=facts or node(), **kw)


def spec_for(rootfs: str, **config_kw) -> dict:
    image = config_kw.pop("image", None)
    return build_spec(request(rootfs, pb.ContainerConfig(**config_kw), image))


# ---- process ---------------------------------------------------------------------

@pytest.mark.parametrize("image,command,args,want", [
    ({"Entrypoint": ["/ep"], "Cmd": ["a", "b"]}, [], [], ["/ep", "a", "b"]),
    ({"Entrypoint": ["/ep"], "Cmd": ["a", "b"]}, ["/cmd"], [], ["/cmd"]),          # command drops Cmd
    ({"Entrypoint": ["/ep"], "Cmd": ["a", "b"]}, [], ["x"], ["/ep", "x"]),        # args replace Cmd only
    ({"Entrypoint": ["/ep"], "Cmd": ["a", "b"]}, ["/cmd"], ["x"], ["/cmd", "x"]),
    ({"Cmd": ["/bin/sh", "-c", "true"]}, [], [], ["/bin/sh", "-c", "true"]),
    ({"Cmd": ["/bin/sh"]}, [], ["/bin/echo", "hi"], ["/bin/echo", "hi"]),
    ({}, ["/bin/true"], [], ["/bin/true"]),
])
def test_args_docker_semantics(rootfs, image, command, args, want):
    spec = spec_for(rootfs, image=image, command=command, args=args)
    assert spec["process"]["args"] == want


def test_no_command_anywhere_is_invalid(rootfs):
    with pytest.raises(InvalidArgument, match="no command"):
        spec_for(rootfs, image={})


def test_env_merge_container_wins_and_defaults(rootfs):
    spec = spec_for(rootfs, image={"Cmd": ["x"], "Env": ["A=image", "B=image", "PATH=/img"]},
                    envs=[pb.KeyValue(key="B", value=b"ctr"), pb.KeyValue(key="C", value=b"new=with=eq")])
    env = spec["process"]["env"]
    assert "A=image" in env and "B=ctr" in env and "C=new=with=eq" in env and "PATH=/img" in env
    assert "B=image" not in env
    assert "HOSTNAME=podhost" in env
    assert "HOME=/root" in env


def test_env_default_path_and_term_with_tty(rootfs):
    spec = spec_for(rootfs, image={"Cmd": ["x"]}, tty=True)
    env = spec["process"]["env"]
    assert "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" in env
    assert "TERM=xterm" in env
    assert spec["process"]["terminal"] is True
    assert spec_for(rootfs)["process"]["terminal"] is False


def test_bad_env_name(rootfs):
    with pytest.raises(InvalidArgument, match="empty name"):
        spec_for(rootfs, envs=[pb.KeyValue(key="", value=b"x")])


@pytest.mark.parametrize("config_wd,image_wd,want", [("/c", "/i", "/c"), ("", "/i", "/i"), ("", "", "/")])
def test_working_dir(rootfs, config_wd, image_wd, want):
    spec = spec_for(rootfs, image={"Cmd": ["x"], "WorkingDir": image_wd}, working_dir=config_wd)
    assert spec["process"]["cwd"] == want


def test_relative_working_dir_is_invalid(rootfs):
    with pytest.raises(InvalidArgument, match="absolute"):
        spec_for(rootfs, working_dir="rel")


# ---- user --------------------------------------------------------------------------

def user_of(rootfs, image_user="", sc=None):
    config = pb.ContainerConfig()
    if sc:
        config.linux.security_context.CopyFrom(sc)
    spec = build_spec(request(rootfs, config, {"Cmd": ["x"], "User": image_user}))
    return spec["process"]["user"], spec["process"]["env"]


@pytest.mark.parametrize("image_user,uid,gid,groups", [
    ("", 0, 0, [0, 10]),                 # root is in wheel
    ("alice", 1000, 1000, [1000, 10, 29]),
    ("1001", 1001, 1001, [1001, 29, 50]),
    ("1000:50", 1000, 50, [50, 10, 29]),
    ("alice:staff", 1000, 50, [50, 10, 29]),
    ("bob:10", 1001, 10, [10, 29, 50]),
    ("4242", 4242, 0, [0]),              # unknown uid: gid 0, like Docker
    ("4242:4243", 4242, 4243, [4243]),
])
def test_image_user(rootfs, image_user, uid, gid, groups):
    user, _ = user_of(rootfs, image_user)
    assert (user["uid"], user["gid"], user["additionalGids"]) == (uid, gid, groups)


def test_unknown_user_name_is_invalid(rootfs):
    with pytest.raises(InvalidArgument, match="not in the image's /etc/passwd"):
        user_of(rootfs, "mallory")
    with pytest.raises(InvalidArgument, match="not in the image's /etc/group"):
        user_of(rootfs, "alice:nosuch")


def test_run_as_user_overrides_image_user(rootfs):
    sc = pb.LinuxContainerSecurityContext(run_as_user=pb.Int64Value(value=1001))
    user, env = user_of(rootfs, "alice", sc)
    assert (user["uid"], user["gid"]) == (1001, 1001)
    assert "HOME=/home/bob" in env


def test_run_as_user_zero_is_honoured(rootfs):
    sc = pb.LinuxContainerSecurityContext(run_as_user=pb.Int64Value(value=0))
    user, _ = user_of(rootfs, "alice", sc)
    assert (user["uid"], user["gid"]) == (0, 0)


def test_run_as_username_and_group(rootfs):
    sc = pb.LinuxContainerSecurityContext(run_as_username="alice", run_as_group=pb.Int64Value(value=29))
    user, _ = user_of(rootfs, "", sc)
    assert (user["uid"], user["gid"]) == (1000, 29)
    assert user["additionalGids"] == [29, 10]


def test_run_as_group_alone_is_invalid(rootfs):
    sc = pb.LinuxContainerSecurityContext(run_as_group=pb.Int64Value(value=29))
    with pytest.raises(InvalidArgument, match="run_as_group needs"):
        user_of(rootfs, "", sc)


def test_supplemental_groups_merge_and_strict(rootfs):
    sc = pb.LinuxContainerSecurityContext(run_as_user=pb.Int64Value(value=1000), supplemental_groups=[5555, 10])
    user, _ = user_of(rootfs, "", sc)
    assert user["additionalGids"] == [1000, 10, 29, 5555]
    sc.supplemental_groups_policy = pb.Strict
    user, _ = user_of(rootfs, "", sc)
    assert user["additionalGids"] == [1000, 5555, 10]


def test_passwd_symlink_stays_in_rootfs(rootfs, tmp_path):
    # An absolute symlink must resolve inside the container root, not on the host.
    etc = Path(rootfs, "etc")
    (etc / "real").mkdir()
    os.rename(etc / "passwd", etc / "real/passwd")
    os.symlink("/etc/real/passwd", etc / "passwd")
    user, _ = user_of(rootfs, "alice")
    assert user["uid"] == 1000
    os.unlink(etc / "passwd")
    os.symlink("/../../../../etc/passwd", etc / "passwd")  # would be the host's file if followed naively
    with pytest.raises(InvalidArgument):
        user_of(rootfs, "alice")


# ---- capabilities, privileges, seccomp -----------------------------------------------

def caps_of(rootfs, add=(), drop=(), facts=None, **sc_kw):
    config = pb.ContainerConfig()
    config.linux.security_context.CopyFrom(pb.LinuxContainerSecurityContext(
        capabilities=pb.Capability(add_capabilities=list(add), drop_capabilities=list(drop)), **sc_kw))
    return build_spec(request(rootfs, config, facts=facts))["process"]["capabilities"]


def test_default_capabilities(rootfs):
    caps = caps_of(rootfs)
    assert sorted(caps["bounding"]) == sorted(capabilities.DEFAULT_CAPABILITIES)
    assert len(caps["effective"]) == 14
    assert caps["ambient"] == []


def test_capabilities_add_drop_prefix_forms(rootfs):
    caps = caps_of(rootfs, add=["NET_ADMIN", "cap_sys_time"], drop=["CAP_CHOWN", "kill"])
    assert "CAP_NET_ADMIN" in caps["effective"] and "CAP_SYS_TIME" in caps["effective"]
    assert "CAP_CHOWN" not in caps["effective"] and "CAP_KILL" not in caps["bounding"]


def test_drop_all_add_one(rootfs):
    caps = caps_of(rootfs, add=["NET_BIND_SERVICE"], drop=["ALL"])
    assert caps["effective"] == ["CAP_NET_BIND_SERVICE"]


def test_add_all_and_drop(rootfs):
    caps = caps_of(rootfs, add=["ALL"], drop=["SYS_ADMIN"])
    assert "CAP_SYS_ADMIN" not in caps["effective"]
    assert len(caps["effective"]) == len(capabilities.ALL_CAPABILITIES) - 1


def test_add_all_limited_to_node_bounding_set(rootfs):
    facts = node(capabilities=tuple(c for c in capabilities.ALL_CAPABILITIES if c != "CAP_SYS_RESOURCE"))
    caps = caps_of(rootfs, add=["ALL"], facts=facts)
    assert "CAP_SYS_RESOURCE" not in caps["effective"]
    with pytest.raises(InvalidArgument, match="CAP_SYS_RESOURCE"):
        caps_of(rootfs, add=["SYS_RESOURCE"], facts=facts)


def test_unknown_capability(rootfs):
    with pytest.raises(InvalidArgument, match="unknown capability"):
        caps_of(rootfs, add=["FLY"])


def test_privileged(rootfs):
    config = pb.ContainerConfig()
    config.linux.security_context.privileged = True
    config.linux.security_context.seccomp.profile_type = pb.SecurityProfile.RuntimeDefault
    spec = build_spec(request(rootfs, config, sb=sandbox(privileged=True)))
    assert len(spec["process"]["capabilities"]["effective"]) == len(capabilities.ALL_CAPABILITIES)
    assert "seccomp" not in spec["linux"]
    assert "maskedPaths" not in spec["linux"] and "readonlyPaths" not in spec["linux"]
    assert spec["linux"]["resources"]["devices"] == [{"allow": True, "access": "rwm"}]
    assert any(d["path"] == "/dev/null" for d in spec["linux"]["devices"])
    sysfs = next(m for m in spec["mounts"] if m["destination"] == "/sys")
    assert "rw" in sysfs["options"]


def test_privileged_container_needs_privileged_pod(rootfs):
    config = pb.ContainerConfig()
    config.linux.security_context.privileged = True
    with pytest.raises(InvalidArgument, match="privileged pod"):
        build_spec(request(rootfs, config))


def test_unprivileged_defaults(rootfs):
    spec = spec_for(rootfs)
    linux = spec["linux"]
    assert linux["maskedPaths"] == DEFAULT_MASKED_PATHS
    assert linux["readonlyPaths"] == DEFAULT_READONLY_PATHS
    assert linux["resources"]["devices"][0] == {"allow": False, "access": "rwm"}
    assert "seccomp" not in linux  # nothing asked = Unconfined, as kubelet always says
    sysfs = next(m for m in spec["mounts"] if m["destination"] == "/sys")
    assert "ro" in sysfs["options"]
    assert spec["process"]["noNewPrivileges"] is False
    assert spec["root"] == {"path": rootfs, "readonly": False}


def test_masked_readonly_paths_from_cri(rootfs):
    config = pb.ContainerConfig()
    config.linux.security_context.masked_paths.append("/proc/x")
    config.linux.security_context.readonly_paths.append("/proc/y")
    spec = build_spec(request(rootfs, config))
    assert spec["linux"]["maskedPaths"] == ["/proc/x"]
    assert spec["linux"]["readonlyPaths"] == ["/proc/y"]


def test_readonly_rootfs_and_no_new_privs(rootfs):
    config = pb.ContainerConfig()
    config.linux.security_context.readonly_rootfs = True
    config.linux.security_context.no_new_privs = True
    spec = build_spec(request(rootfs, config))
    assert spec["root"]["readonly"] is True
    assert spec["process"]["noNewPrivileges"] is True
    hosts = next(m for m in spec["mounts"] if m["destination"] == "/etc/hosts")
    assert "ro" in hosts["options"]


def seccomp_of(rootfs, profile: pb.SecurityProfile | None = None, path: str = "", add=(), **kw):
    config = pb.ContainerConfig()
    sc = config.linux.security_context
    if profile is not None:
        sc.seccomp.CopyFrom(profile)
    sc.seccomp_profile_path = path
    sc.capabilities.add_capabilities.extend(add)
    return build_spec(request(rootfs, config, **kw))["linux"].get("seccomp")


def _allowed(profile: dict, name: str) -> list[dict]:
    return [r for r in profile["syscalls"] if name in r["names"] and r["action"] == "SCMP_ACT_ALLOW"]


def test_seccomp_runtime_default(rootfs):
    prof = seccomp_of(rootfs, pb.SecurityProfile(profile_type=pb.SecurityProfile.RuntimeDefault))
    assert prof["defaultAction"] == "SCMP_ACT_ERRNO"
    assert _allowed(prof, "read") and _allowed(prof, "execve")
    assert not _allowed(prof, "mount") and not _allowed(prof, "reboot") and not _allowed(prof, "kexec_load")
    # clone only without namespace flags; clone3 answers ENOSYS
    clone = _allowed(prof, "clone")
    assert clone and all(r.get("args") for r in clone)
    assert any(r["names"] == ["clone3"] and r.get("errnoRet") == 38 for r in prof["syscalls"])
    if os.uname().machine == "x86_64":
        assert prof["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]


def test_seccomp_runtime_default_follows_capabilities(rootfs):
    prof = seccomp_of(rootfs, pb.SecurityProfile(profile_type=pb.SecurityProfile.RuntimeDefault), add=["SYS_ADMIN", "SYS_TIME"])
    assert _allowed(prof, "mount") and _allowed(prof, "setns") and _allowed(prof, "clock_settime")
    assert any(not r.get("args") for r in _allowed(prof, "clone"))
    assert not any(r["names"] == ["clone3"] and r["action"] == "SCMP_ACT_ERRNO" for r in prof["syscalls"])


def test_seccomp_deprecated_paths(rootfs):
    assert seccomp_of(rootfs, path="runtime/default")["defaultAction"] == "SCMP_ACT_ERRNO"
    assert seccomp_of(rootfs, path="docker/default") is not None
    assert seccomp_of(rootfs, path="unconfined") is None
    with pytest.raises(InvalidArgument, match="seccomp_profile_path"):
        seccomp_of(rootfs, path="weird")


def test_seccomp_unconfined(rootfs):
    assert seccomp_of(rootfs, pb.SecurityProfile(profile_type=pb.SecurityProfile.Unconfined)) is None


def test_seccomp_default_key_makes_runtime_default_the_default(rootfs):
    assert seccomp_of(rootfs) is None
    assert seccomp_of(rootfs, seccomp_default=True)["defaultAction"] == "SCMP_ACT_ERRNO"
    # Asked for explicitly, Unconfined stays unconfined.
    assert seccomp_of(rootfs, pb.SecurityProfile(profile_type=pb.SecurityProfile.Unconfined), seccomp_default=True) is None
    assert seccomp_of(rootfs, path="unconfined", seccomp_default=True) is None


def test_seccomp_localhost(rootfs, tmp_path):
    prof = tmp_path / "prof.json"
    prof.write_text('{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]}')
    got = seccomp_of(rootfs, pb.SecurityProfile(profile_type=pb.SecurityProfile.Localhost, localhost_ref=str(prof)))
    assert got == {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]}
    # relative refs are under the seccomp root; deprecated localhost/ path too
    got = seccomp_of(rootfs, pb.SecurityProfile(profile_type=pb.SecurityProfile.Localhost, localhost_ref="prof.json"),
                     seccomp_profile_root=str(tmp_path))
    assert got["defaultAction"] == "SCMP_ACT_ALLOW"
    assert seccomp_of(rootfs, path=f"localhost/{prof}")["defaultAction"] == "SCMP_ACT_ALLOW"


def test_seccomp_localhost_missing_or_bad(rootfs, tmp_path):
    missing = tmp_path / "nope.json"
    with pytest.raises(InvalidArgument, match=str(missing)):
        seccomp_of(rootfs, pb.SecurityProfile(profile_type=pb.SecurityProfile.Localhost, localhost_ref=str(missing)))
    bad = tmp_path / "bad.json"
    bad.write_text('{"defaultAction": "SCMP_ACT_MAYBE"}')
    with pytest.raises(InvalidArgument, match="defaultAction"):
        seccomp_of(rootfs, pb.SecurityProfile(profile_type=pb.SecurityProfile.Localhost, localhost_ref=str(bad)))
    bad.write_text("{not json")
    with pytest.raises(InvalidArgument, match="not valid JSON"):
        seccomp_of(rootfs, pb.SecurityProfile(profile_type=pb.SecurityProfile.Localhost, localhost_ref=str(bad)))


def test_apparmor_and_selinux_pass_through(rootfs):
    config = pb.ContainerConfig()
    sc = config.linux.security_context
    sc.apparmor.profile_type = pb.SecurityProfile.Localhost
    sc.apparmor.localhost_ref = "my-profile"
    sc.selinux_options.CopyFrom(pb.SELinuxOption(user="u", role="r", type="t", level="s0:c1,c2"))
    spec = build_spec(request(rootfs, config, facts=node(apparmor_enabled=True, selinux_enabled=True)))
    assert spec["process"]["apparmorProfile"] == "my-profile"
    assert spec["process"]["selinuxLabel"] == "u:r:t:s0:c1,c2"
    assert spec["linux"]["mountLabel"] == "u:r:t:s0:c1,c2"
    with pytest.raises(InvalidArgument, match="AppArmor is not enabled"):
        build_spec(request(rootfs, config, facts=node(apparmor_enabled=False)))


def test_selinux_options_ignored_on_a_node_without_selinux(rootfs):
    # runc refuses a label when SELinux is off; containerd drops it too.
    config = pb.ContainerConfig()
    config.linux.security_context.selinux_options.CopyFrom(pb.SELinuxOption(type="spc_t"))
    spec = build_spec(request(rootfs, config, facts=node(selinux_enabled=False)))
    assert "selinuxLabel" not in spec["process"] and "mountLabel" not in spec["linux"]


def test_unknown_profile_types_are_invalid_arguments(rootfs):
    for field in ("seccomp", "apparmor"):
        config = pb.ContainerConfig()
        getattr(config.linux.security_context, field).profile_type = 99
        with pytest.raises(InvalidArgument, match=f"{field} profile_type 99 is unknown"):
            build_spec(request(rootfs, config, facts=node(apparmor_enabled=True)))


def test_no_lsm_fields_when_unset(rootfs):
    spec = spec_for(rootfs)
    assert "apparmorProfile" not in spec["process"] and "selinuxLabel" not in spec["process"]
    assert "mountLabel" not in spec["linux"]


def test_ambient_capabilities(rootfs):
    config = pb.ContainerConfig()
    caps = config.linux.security_context.capabilities
    caps.add_capabilities.append("NET_ADMIN")
    caps.add_ambient_capabilities.append("NET_ADMIN")
    c = build_spec(request(rootfs, config))["process"]["capabilities"]
    assert c["ambient"] == ["CAP_NET_ADMIN"] and c["inheritable"] == ["CAP_NET_ADMIN"]


# ---- mounts -------------------------------------------------------------------------

def dest_map(spec):
    return {m["destination"]: m for m in spec["mounts"]}


def test_standard_mounts_and_pod_files(rootfs):
    mounts = dest_map(spec_for(rootfs))
    for d in ("/proc", "/dev", "/dev/pts", "/dev/mqueue", "/sys", "/sys/fs/cgroup", "/dev/shm",
              "/etc/hosts", "/etc/resolv.conf", "/etc/hostname"):
        assert d in mounts, d
    assert mounts["/dev/shm"]["source"] == "/run/crispy/sb1/shm"
    assert mounts["/etc/resolv.conf"]["source"] == "/run/crispy/sb1/resolv.conf"
    assert mounts["/dev"]["type"] == "tmpfs"


def test_shm_private_or_host(rootfs):
    spec = build_spec(request(rootfs, sb=sandbox(shm=None)))
    assert dest_map(spec)["/dev/shm"]["type"] == "tmpfs"
    spec = build_spec(request(rootfs, sb=sandbox(shm=None, namespaces={"network": "/n"})))
    assert dest_map(spec)["/dev/shm"]["source"] == "/dev/shm"


def test_cri_mounts(rootfs, tmp_path, mountinfo):
    src = tmp_path / "data"
    src.mkdir()
    config = pb.ContainerConfig(mounts=[
        pb.Mount(container_path="/data/sub", host_path=str(src), readonly=True),
        pb.Mount(container_path="/data", host_path=str(src)),
        pb.Mount(container_path="/etc/hosts", host_path=str(src)),
        pb.Mount(container_path="/new", host_path=str(tmp_path / "created")),
    ])
    spec = build_spec(request(rootfs, config, facts=node(mountinfo=mountinfo)))
    dests = [m["destination"] for m in spec["mounts"]]
    assert dests.index("/data") < dests.index("/data/sub")
    assert dests.count("/etc/hosts") == 1  # the CRI mount replaces the pod's
    m = dest_map(spec)
    assert m["/data/sub"]["options"] == ["rbind", "rprivate", "ro"]
    assert m["/data"]["options"] == ["rbind", "rprivate", "rw"]
    assert m["/etc/hosts"]["source"] == str(src)
    assert (tmp_path / "created").is_dir()  # a missing source is created, like Docker
    assert "rootfsPropagation" not in spec["linux"]


def test_mount_propagation(rootfs, tmp_path, mountinfo):
    def build(path, prop):
        config = pb.ContainerConfig(mounts=[pb.Mount(container_path="/m", host_path=str(tmp_path / "mnt" / path / "data"),
                                                     propagation=prop)])
        return build_spec(request(rootfs, config, facts=node(mountinfo=mountinfo)))

    spec = build("shared", pb.PROPAGATION_BIDIRECTIONAL)
    assert dest_map(spec)["/m"]["options"][1] == "rshared"
    assert spec["linux"]["rootfsPropagation"] == "rshared"
    spec = build("slave", pb.PROPAGATION_HOST_TO_CONTAINER)
    assert dest_map(spec)["/m"]["options"][1] == "rslave"
    assert spec["linux"]["rootfsPropagation"] == "rslave"
    with pytest.raises(InvalidArgument, match="not shared"):
        build("slave", pb.PROPAGATION_BIDIRECTIONAL)
    with pytest.raises(InvalidArgument, match="is private"):
        build("private", pb.PROPAGATION_HOST_TO_CONTAINER)


def test_bad_mounts(rootfs, tmp_path):
    with pytest.raises(InvalidArgument, match="absolute"):
        build_spec(request(rootfs, pb.ContainerConfig(mounts=[pb.Mount(container_path="rel", host_path="/tmp")])))
    with pytest.raises(InvalidArgument, match="absolute"):
        build_spec(request(rootfs, pb.ContainerConfig(mounts=[pb.Mount(container_path="/x", host_path="tmp")])))
    # Image volumes are implemented (runtime/image_volumes.py); a writable one is refused.
    with pytest.raises(InvalidArgument, match="read-only"):
        build_spec(request(rootfs, pb.ContainerConfig(mounts=[pb.Mount(container_path="/x", image=pb.ImageSpec(image="busybox"))])))


def _rro_spec(rootfs, tmp_path, mountinfo, missing=None, **mount_kw):
    mount_kw.setdefault("readonly", True)
    config = pb.ContainerConfig(mounts=[pb.Mount(container_path="/m", host_path=str(tmp_path / "mnt/private/data"),
                                                 recursive_read_only=True, **mount_kw)])
    return build_spec(request(rootfs, config, facts=node(mountinfo=mountinfo), rro_missing=missing))


def test_recursive_read_only_mount_uses_rro(rootfs, tmp_path, mountinfo):
    spec = _rro_spec(rootfs, tmp_path, mountinfo)
    assert dest_map(spec)["/m"]["options"] == ["rbind", "rprivate", "ro", "rro"]


@pytest.mark.parametrize("mount_kw,says", [
    ({"readonly": False}, "needs readonly true"),
    ({"propagation": pb.PROPAGATION_HOST_TO_CONTAINER}, "PROPAGATION_PRIVATE, not PROPAGATION_HOST_TO_CONTAINER"),
    ({"propagation": pb.PROPAGATION_BIDIRECTIONAL}, "PROPAGATION_PRIVATE, not PROPAGATION_BIDIRECTIONAL"),
])
def test_recursive_read_only_needs_readonly_and_private(rootfs, tmp_path, mountinfo, mount_kw, says):
    # Checked before whether the handler could: the request itself is wrong.
    with pytest.raises(InvalidArgument, match=says):
        _rro_spec(rootfs, tmp_path, mountinfo, missing="runtime handler 'x' cannot", **mount_kw)


def test_recursive_read_only_on_a_handler_without_it(rootfs, tmp_path, mountinfo):
    with pytest.raises(FailedPrecondition, match="/m: recursive read-only mounts are not available: runtime handler 'old'"):
        _rro_spec(rootfs, tmp_path, mountinfo, missing="runtime handler 'old' (/opt/old-runc) cannot: no rro")


# ---- devices ------------------------------------------------------------------------

def test_devices(rootfs):
    config = pb.ContainerConfig(devices=[pb.Device(container_path="/dev/mynull", host_path="/dev/null", permissions="rw")])
    spec = build_spec(request(rootfs, config))
    dev = next(d for d in spec["linux"]["devices"] if d["path"] == "/dev/mynull")
    assert (dev["type"], dev["major"], dev["minor"]) == ("c", 1, 3)
    assert {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rw"} in spec["linux"]["resources"]["devices"]


def test_bad_devices(rootfs, tmp_path):
    with pytest.raises(InvalidArgument, match="does not exist"):
        build_spec(request(rootfs, pb.ContainerConfig(devices=[pb.Device(container_path="/dev/x", host_path="/dev/nonexistent-x")])))
    with pytest.raises(InvalidArgument, match="permissions"):
        build_spec(request(rootfs, pb.ContainerConfig(devices=[pb.Device(container_path="/dev/x", host_path="/dev/null", permissions="rwx")])))
    (tmp_path / "plain").write_text("")
    with pytest.raises(InvalidArgument, match="not a device"):
        build_spec(request(rootfs, pb.ContainerConfig(devices=[pb.Device(container_path="/dev/x", host_path=str(tmp_path / "plain"))])))
    with pytest.raises(InvalidArgument, match="CDI device vendor.com/gpu=0 is not described"):
        build_spec(request(rootfs, pb.ContainerConfig(CDI_devices=[pb.CDIDevice(name="vendor.com/gpu=0")]),
                           cdi_spec_dirs=(str(tmp_path / "no-cdi"),)))


# ---- namespaces, hostname, sysctls ----------------------------------------------------

def ns_of(spec):
    return {n["type"]: n.get("path") for n in spec["linux"]["namespaces"]}


def test_namespaces_from_pod(rootfs):
    spec = spec_for(rootfs)
    ns = ns_of(spec)
    assert ns == {"mount": None, "network": "/run/crispy/ns/net", "ipc": "/run/crispy/ns/ipc", "uts": "/run/crispy/ns/uts",
                  "pid": None}
    assert spec["hostname"] == "podhost"


def test_pid_namespace_modes(rootfs):
    def pid_for(mode, sb=None, target=None):
        config = pb.ContainerConfig()
        config.linux.security_context.namespace_options.pid = mode
        config.linux.security_context.namespace_options.target_id = "other"
        spec = build_spec(request(rootfs, config, sb=sb, target_pid_ns=target))
        return [n for n in spec["linux"]["namespaces"] if n["type"] == "pid"]

    pod_sb = sandbox(namespaces={"network": "/n", "ipc": "/i", "uts": "/u", "pid": "/p"})
    assert pid_for(pb.POD, pod_sb) == [{"type": "pid", "path": "/p"}]
    assert pid_for(pb.CONTAINER, pod_sb) == [{"type": "pid"}]
    assert pid_for(pb.NODE) == []
    assert pid_for(pb.TARGET, target="/proc/9/ns/pid") == [{"type": "pid", "path": "/proc/9/ns/pid"}]
    with pytest.raises(InvalidArgument, match="TARGET"):
        pid_for(pb.TARGET)


def test_host_namespaces(rootfs):
    spec = build_spec(request(rootfs, sb=sandbox(namespaces={}, shm=None)))
    assert ns_of(spec) == {"mount": None, "pid": None}
    assert "hostname" not in spec  # host UTS: the runtime must not set a hostname


def test_cgroup_namespace_on_v2(rootfs):
    assert "cgroup" in ns_of(build_spec(request(rootfs, cgroup_version=2)))
    assert "cgroup" not in ns_of(build_spec(request(rootfs, cgroup_version=1)))


def _userns_sandbox() -> SandboxView:
    sb = sandbox()
    sb.namespaces["user"] = "/run/crispy/ns/user"
    opts = sb.config.linux.security_context.namespace_options.userns_options
    opts.mode = pb.POD
    opts.uids.add(container_id=0, host_id=65536 * 3, length=65536)
    opts.gids.add(container_id=0, host_id=65536 * 4, length=65536)
    return sb


def test_container_joins_the_pods_user_namespace_with_its_mappings(rootfs):
    sb = _userns_sandbox()
    config = pb.ContainerConfig()
    config.linux.security_context.namespace_options.userns_options.CopyFrom(
        sb.config.linux.security_context.namespace_options.userns_options)
    for cfg in (config, pb.ContainerConfig()):  # as kubelet sends it, and left unset
        spec = build_spec(request(rootfs, cfg, sb=sb))
        assert ns_of(spec)["user"] == "/run/crispy/ns/user"
        # runc 1.1 needs the namespace's own mappings beside its path.
        assert spec["linux"]["uidMappings"] == [{"containerID": 0, "hostID": 196608, "size": 65536}]
        assert spec["linux"]["gidMappings"] == [{"containerID": 0, "hostID": 262144, "size": 65536}]


def test_no_user_namespace_without_the_pods(rootfs):
    spec = build_spec(request(rootfs))
    assert "user" not in ns_of(spec)
    assert "uidMappings" not in spec["linux"] and "gidMappings" not in spec["linux"]


def test_container_user_namespace_must_match_the_pods(rootfs):
    config = pb.ContainerConfig()
    config.linux.security_context.namespace_options.userns_options.mode = pb.POD
    with pytest.raises(InvalidArgument, match="without a user namespace of its own"):
        build_spec(request(rootfs, config))
    config.linux.security_context.namespace_options.userns_options.mode = pb.NODE
    with pytest.raises(InvalidArgument, match="use POD"):
        build_spec(request(rootfs, config, sb=_userns_sandbox()))
    for mode in (pb.CONTAINER, pb.TARGET):
        config.linux.security_context.namespace_options.userns_options.mode = mode
        with pytest.raises(InvalidArgument, match=f"mode {pb.NamespaceMode.Name(mode)} is not supported"):
            build_spec(request(rootfs, config, sb=_userns_sandbox()))


def test_sysctls(rootfs):
    spec = build_spec(request(rootfs, sb=sandbox(sysctls={"net.ipv4.ip_forward": "1", "kernel.shmmax": "1000",
                                                          "net/ipv4/conf/eth0.100/forwarding": "1"})))
    assert "sysctl" not in spec["linux"]  # set in the pod's namespaces, which the container joins
    assert validate_sysctls({"net/ipv4/conf/eth0.100/forwarding": "1"}, False, False) == {
        "net.ipv4.conf.eth0/100.forwarding": "1"}
    with pytest.raises(InvalidArgument, match="not namespaced"):
        build_spec(request(rootfs, sb=sandbox(sysctls={"kernel.panic": "1"})))
    with pytest.raises(InvalidArgument, match="host network"):
        build_spec(request(rootfs, sb=sandbox(sysctls={"net.ipv4.ip_forward": "1"}, namespaces={"ipc": "/i"})))
    with pytest.raises(InvalidArgument, match="host IPC"):
        validate_sysctls({"fs.mqueue.msg_max": "10"}, host_network=False, host_ipc=True)


# ---- resources ----------------------------------------------------------------------

def resources_of(rootfs, facts=None, **kw):
    config = pb.ContainerConfig()
    config.linux.resources.CopyFrom(pb.LinuxContainerResources(**{k: v for k, v in kw.items() if k != "cgroup_version"}))
    spec = build_spec(request(rootfs, config, facts=facts, cgroup_version=kw.get("cgroup_version", 1)))
    return spec


def test_resources(rootfs):
    spec = resources_of(rootfs, cpu_period=100000, cpu_quota=50000, cpu_shares=512, cpuset_cpus="0-1", cpuset_mems="0",
                        memory_limit_in_bytes=64 << 20, memory_swap_limit_in_bytes=64 << 20,
                        hugepage_limits=[pb.HugepageLimit(page_size="2MB", limit=0)])
    r = spec["linux"]["resources"]
    assert r["cpu"] == {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0-1", "mems": "0"}
    assert r["memory"] == {"limit": 64 << 20, "swap": 64 << 20}
    assert r["hugepageLimits"] == [{"pageSize": "2MB", "limit": 0}]
    assert spec["linux"]["cgroupsPath"] == "/crispy/pod-sb1/crispy-ctr1"


def test_resources_empty_means_no_limits(rootfs):
    r = spec_for(rootfs)["linux"]["resources"]
    assert set(r) == {"devices"}


def test_bad_resources(rootfs):
    with pytest.raises(InvalidArgument, match="cpuset_cpus"):
        resources_of(rootfs, cpuset_cpus="zero")
    with pytest.raises(InvalidArgument, match="memory_limit_in_bytes"):
        resources_of(rootfs, memory_limit_in_bytes=-5)
    with pytest.raises(InvalidArgument, match="page_size"):
        resources_of(rootfs, hugepage_limits=[pb.HugepageLimit(page_size="huge", limit=1)])
    with pytest.raises(InvalidArgument, match="at least"):
        resources_of(rootfs, memory_limit_in_bytes=100 << 20, memory_swap_limit_in_bytes=50 << 20)


def test_unified_needs_v2(rootfs):
    spec = resources_of(rootfs, unified={"memory.high": "1000000", "pids.max": "10"}, cgroup_version=2)
    assert spec["linux"]["resources"]["unified"] == {"memory.high": "1000000", "pids.max": "10"}
    with pytest.raises(InvalidArgument, match="cgroup v1"):
        resources_of(rootfs, unified={"memory.high": "1000000"}, cgroup_version=1)
    with pytest.raises(InvalidArgument, match="not a cgroup v2 controller file"):
        resources_of(rootfs, unified={"../escape": "1"}, cgroup_version=2)


def test_oom_score_adj_clamped_to_daemon(rootfs):
    assert resources_of(rootfs, oom_score_adj=500, facts=node(oom_score_adj=0))["process"]["oomScoreAdj"] == 500
    assert resources_of(rootfs, oom_score_adj=-998, facts=node(oom_score_adj=0))["process"]["oomScoreAdj"] == 0
    assert resources_of(rootfs, oom_score_adj=-998, facts=node(oom_score_adj=-999))["process"]["oomScoreAdj"] == -998
    with pytest.raises(InvalidArgument, match="oom_score_adj"):
        resources_of(rootfs, oom_score_adj=1001)


def test_pids_limit(rootfs):
    spec = build_spec(request(rootfs, pids_limit=64))
    assert spec["linux"]["resources"]["pids"] == {"limit": 64}


# ---- annotations, cgroups path, exec --------------------------------------------------

def test_annotations(rootfs):
    config = pb.ContainerConfig(annotations={"user": "x"}, image=pb.ImageSpec(image="busybox:latest"))
    config.metadata.name = "web"
    a = build_spec(request(rootfs, config))["annotations"]
    assert a["user"] == "x"
    assert a["io.kubernetes.cri.container-name"] == "web"
    assert a["io.kubernetes.cri.sandbox-id"] == "sb1"
    assert a["io.kubernetes.cri.sandbox-namespace"] == "ns"
    assert a["io.kubernetes.cri.image-name"] == "busybox:latest"


def test_cgroups_path_forms():
    assert cgroups_path("/kubepods/pod1", "abc", "cgroupfs") == "/kubepods/pod1/crispy-abc"
    assert cgroups_path("/", "abc", "cgroupfs") == "/crispy-abc"
    assert cgroups_path("kubepods-pod1.slice", "abc", "systemd") == "kubepods-pod1.slice:crispy:abc"
    with pytest.raises(InvalidArgument):
        cgroups_path("relative", "abc", "cgroupfs")
    with pytest.raises(InvalidArgument):
        cgroups_path("/kubepods", "abc", "systemd")
    with pytest.raises(InvalidArgument):
        cgroups_path("/a/../b", "abc", "cgroupfs")


def test_systemd_cgroups_path_in_spec(rootfs):
    spec = build_spec(request(rootfs, sb=sandbox(cgroup_parent="kubepods-besteffort.slice"), cgroup_driver="systemd"))
    assert spec["linux"]["cgroupsPath"] == "kubepods-besteffort.slice:crispy:ctr1"


def test_exec_process_spec(rootfs):
    config = pb.ContainerConfig()
    config.linux.security_context.run_as_user.value = 1000
    config.linux.security_context.no_new_privs = True
    spec = build_spec(request(rootfs, config, image={"Cmd": ["x"], "WorkingDir": "/work"}))
    proc = exec_process_spec(spec, ["/bin/ls", "-l"], tty=True)
    assert proc["args"] == ["/bin/ls", "-l"]
    assert proc["terminal"] is True
    assert proc["user"] == spec["process"]["user"]
    assert proc["cwd"] == "/work" and proc["noNewPrivileges"] is True
    assert proc["capabilities"] == spec["process"]["capabilities"]
    assert "TERM=xterm" in proc["env"]
    assert spec["process"]["args"] == ["x"]  # the container spec is untouched
    with pytest.raises(InvalidArgument):
        exec_process_spec(spec, [], tty=False)


def test_spec_is_json_serializable(rootfs):
    import json
    config = pb.ContainerConfig()
    config.linux.security_context.seccomp.profile_type = pb.SecurityProfile.RuntimeDefault
    json.dumps(build_spec(request(rootfs, config)))


def test_missing_mount_source_not_created_when_refused(rootfs, tmp_path):
    config = pb.ContainerConfig(mounts=[pb.Mount(container_path="/new", host_path=str(tmp_path / "later"))])
    config.linux.resources.cpuset_cpus = "bogus"
    with pytest.raises(InvalidArgument):
        build_spec(request(rootfs, config))
    assert not (tmp_path / "later").exists()

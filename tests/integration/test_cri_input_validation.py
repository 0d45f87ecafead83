"""Malformed CRI input on the real daemon: each crafted request is refused
with INVALID_ARGUMENT naming the field (never INTERNAL, never half made),
SELinux options on a node without SELinux are ignored, one pod or container
can carry only so much metadata, and a List too big for one reply says to
use a filter."""

from __future__ import annotations

import os
import uuid

import grpc
import pytest

from cri.limits import MAX_OBJECT_METADATA_BYTES
from cri.proto import api_pb2 as pb
from tests.daemon_proc import tmp_base
from tests.pods_fixtures import *  # noqa: F403
from tests.pods_fixtures import container_config, load_image, pod_config, remove_all_pods, start_pod_daemon

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def image(module_daemon):
    return load_image(module_daemon)


@pytest.fixture
def c(clean_pods, image):
    with clean_pods.client() as client:
        yield client


def refused(fn, code=grpc.StatusCode.INVALID_ARGUMENT) -> str:
    with pytest.raises(grpc.RpcError) as e:
        fn()
    assert e.value.code() == code, e.value.details()
    return e.value.details()


def run_pod(c, cfg):
    return c.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg)).pod_sandbox_id


def create(c, pod_id, cfg, config):
    return c.runtime.CreateContainer(pb.CreateContainerRequest(
        pod_sandbox_id=pod_id, config=config, sandbox_config=cfg)).container_id


def _pod_with(**kw):
    edit = kw.pop("edit", None)
    cfg = pod_config(kw.pop("name", "bad"), **kw)
    if edit:
        edit(cfg)
    return cfg


BAD_PODS = [
    ("metadata.name", lambda: _pod_with(name="a\0b")),
    ("hostname", lambda: _pod_with(name="h1", hostname="x\0y")),
    ("hostname", lambda: _pod_with(name="h2", hostname="x" * 65)),
    ("hostname", lambda: _pod_with(name="h3", hostname="x\n1.2.3.4 evil")),
    ("log_directory", lambda: _pod_with(name="l1", log_directory=f"relative-{uuid.uuid4().hex[:8]}/logs")),
    ("log_directory", lambda: _pod_with(name="l2", log_directory="/var/log/pods/../../etc")),
    ("labels", lambda: _pod_with(name="lab", edit=lambda cfg: cfg.labels.update({"k": "v\0"}))),
    ("annotations", lambda: _pod_with(name="ann", edit=lambda cfg: cfg.annotations.update({"k\0": "v"}))),
    ("cgroup_parent", lambda: _pod_with(name="cg1", cgroup_parent="/a\0b")),
    ("cgroup_parent", lambda: _pod_with(name="cg2", cgroup_parent="../../escape")),
    ("namespace_options.pid", lambda: _pod_with(
        name="ns", edit=lambda cfg: setattr(cfg.linux.security_context.namespace_options, "pid", 99))),
]


@pytest.mark.parametrize("field,make", BAD_PODS, ids=[f"{f}-{i}" for i, (f, _) in enumerate(BAD_PODS)])
def test_bad_pod_configs_are_invalid_arguments(c, field, make):
    cfg = make()
    msg = refused(lambda: run_pod(c, cfg))
    assert field in msg
    assert c.runtime.ListPodSandbox(pb.ListPodSandboxRequest()).items == []
    if not cfg.log_directory.startswith("/") and cfg.log_directory:
        # Nothing was made relative to the daemon's working directory.
        assert not os.path.exists(cfg.log_directory.split("/")[0])


def _edit(fn):
    def make(config):
        fn(config)
        return config
    return make


def _sc(config):
    return config.linux.security_context


BAD_CONTAINERS = [
    ("metadata.name", _edit(lambda cc: setattr(cc.metadata, "name", "a\0b"))),
    ("envs[0].key", _edit(lambda cc: cc.envs.append(pb.KeyValue(key="A\0B", value=b"x")))),
    ("envs[0].value", _edit(lambda cc: cc.envs.append(pb.KeyValue(key="A", value=b"x\0y")))),
    ("command[1]", _edit(lambda cc: cc.command.__setitem__(1, "10\0"))),
    ("args[0]", _edit(lambda cc: cc.args.append("\0"))),
    ("working_dir", _edit(lambda cc: setattr(cc, "working_dir", "/a\0b"))),
    ("mounts[0].container_path", _edit(lambda cc: cc.mounts.append(pb.Mount(container_path="/x\0", host_path="/tmp")))),
    ("devices[0].container_path", _edit(lambda cc: cc.devices.append(
        pb.Device(container_path="/dev/x\0", host_path="/dev/null", permissions="rwm")))),
    ("log_path", _edit(lambda cc: setattr(cc, "log_path", "a\0.log"))),
    ("log_path", _edit(lambda cc: setattr(cc, "log_path", "sub/"))),
    ("annotations", _edit(lambda cc: cc.annotations.update({"a": "b\0"}))),
    ("masked_paths[0]", _edit(lambda cc: _sc(cc).masked_paths.append("/proc/kc\0"))),
    ("seccomp.profile_type", _edit(lambda cc: setattr(_sc(cc).seccomp, "profile_type", 99))),
    ("apparmor.profile_type", _edit(lambda cc: setattr(_sc(cc).apparmor, "profile_type", 99))),
    ("stop_signal", _edit(lambda cc: setattr(cc, "stop_signal", 999))),
    ("namespace_options.pid", _edit(lambda cc: setattr(_sc(cc).namespace_options, "pid", 99))),
]


@pytest.mark.parametrize("field,edit", BAD_CONTAINERS, ids=[f"{f}-{i}" for i, (f, _) in enumerate(BAD_CONTAINERS)])
def test_bad_container_configs_are_invalid_arguments(c, tmp_path, field, edit):
    cfg = pod_config("ctrs", log_directory=str(tmp_path))
    pod_id = run_pod(c, cfg)
    config = edit(container_config("main", ["sleep", "1000"]))
    msg = refused(lambda: create(c, pod_id, cfg, config))
    assert field in msg, msg
    assert c.runtime.ListContainers(pb.ListContainersRequest()).containers == []
    # The pod is fine: a good container still runs in it.
    ok = create(c, pod_id, cfg, container_config("good", ["sleep", "1000"]))
    c.runtime.StartContainer(pb.StartContainerRequest(container_id=ok))


def test_exec_with_a_nul_in_its_command_is_refused(c):
    cfg = pod_config("execnul")
    pod_id = run_pod(c, cfg)
    ctr = create(c, pod_id, cfg, container_config("main", ["sleep", "1000"]))
    c.runtime.StartContainer(pb.StartContainerRequest(container_id=ctr))
    msg = refused(lambda: c.runtime.ExecSync(pb.ExecSyncRequest(container_id=ctr, cmd=["echo", "a\0b"])))
    assert "cmd[1]" in msg
    msg = refused(lambda: c.runtime.Exec(pb.ExecRequest(container_id=ctr, cmd=["\0"], stdout=True)))
    assert "cmd[0]" in msg


def test_selinux_options_are_ignored_without_selinux(c):
    if os.path.exists("/sys/fs/selinux/enforce"):
        pytest.skip("this node has SELinux")
    cfg = pod_config("selinux")
    cfg.linux.security_context.selinux_options.type = "spc_t"
    pod_id = run_pod(c, cfg)
    config = container_config("main", ["sleep", "1000"])
    config.linux.security_context.selinux_options.CopyFrom(pb.SELinuxOption(user="system_u", type="spc_t", level="s0"))
    ctr = create(c, pod_id, cfg, config)
    c.runtime.StartContainer(pb.StartContainerRequest(container_id=ctr))
    r = c.runtime.ExecSync(pb.ExecSyncRequest(container_id=ctr, cmd=["true"], timeout=30))
    assert r.exit_code == 0


# ---- how much one object carries, and Lists beyond one reply -----------------

def test_metadata_beyond_the_limit_is_refused_naming_it(c):
    big = "x" * (MAX_OBJECT_METADATA_BYTES + 1)
    cfg = pod_config("fat")
    cfg.annotations["blob"] = big
    msg = refused(lambda: run_pod(c, cfg))
    assert str(MAX_OBJECT_METADATA_BYTES) in msg and "annotations" in msg
    assert c.runtime.ListPodSandbox(pb.ListPodSandboxRequest()).items == []
    # Kubernetes' own limit (256 KiB of annotations) fits.
    ok = pod_config("k8s-sized")
    ok.annotations["blob"] = "y" * (256 * 1024 - 10)
    pod_id = run_pod(c, ok)
    config = container_config("main", ["sleep", "1000"])
    config.labels["blob"] = big
    msg = refused(lambda: create(c, pod_id, ok, config))
    assert str(MAX_OBJECT_METADATA_BYTES) in msg
    assert [p.id for p in c.runtime.ListPodSandbox(pb.ListPodSandboxRequest()).items] == [pod_id]


def test_a_list_too_big_for_one_reply_says_to_filter(c):
    # 40 pods of 450 KiB each: every one allowed, together beyond 16 MiB.
    ids: list[str] = []
    try:
        _too_big_for_one_reply(c, ids)
    finally:
        # The fixture's cleanup lists every pod, which is what fails here.
        for pod_id in ids:
            c.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod_id))
            c.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod_id))


def _too_big_for_one_reply(c, ids):
    for i in range(40):
        cfg = pod_config(f"wide-{i}", hostname="wide")
        cfg.linux.security_context.namespace_options.network = pb.NODE
        cfg.labels["group"] = "a" if i < 5 else "b"
        cfg.annotations["blob"] = "z" * (450 * 1024)
        ids.append(run_pod(c, cfg))
    msg = refused(lambda: c.runtime.ListPodSandbox(pb.ListPodSandboxRequest()), grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert "filter" in msg and "40 pod sandboxes" in msg
    msg = refused(lambda: c.runtime.ListPodSandboxStats(pb.ListPodSandboxStatsRequest()),
                  grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert "filter" in msg
    # A filter gets through, and so does every pod on its own.
    few = c.runtime.ListPodSandbox(pb.ListPodSandboxRequest(
        filter=pb.PodSandboxFilter(label_selector={"group": "a"}))).items
    assert sorted(p.id for p in few) == sorted(ids[:5])
    st = c.runtime.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=ids[-1])).status
    assert len(st.annotations["blob"]) == 450 * 1024


# ---- [runtime] seccomp_default ------------------------------------------------

def _seccomp_mode(d, extra_args):
    """The Seccomp: line of /proc/self/status in a container that names no
    profile, on a daemon started with `extra_args`."""
    with d.client() as c:
        cfg = pod_config("seccomp")
        pod_id = run_pod(c, cfg)
        ids = {}
        for name, edit in (("none", None), ("unconfined", "Unconfined")):
            config = container_config(name, ["sleep", "1000"])
            if edit:
                config.linux.security_context.seccomp.profile_type = pb.SecurityProfile.Unconfined
            ctr = create(c, pod_id, cfg, config)
            c.runtime.StartContainer(pb.StartContainerRequest(container_id=ctr))
            out = c.runtime.ExecSync(pb.ExecSyncRequest(container_id=ctr, cmd=["cat", "/proc/self/status"],
                                                        timeout=30)).stdout.decode()
            ids[name] = [line.split()[1] for line in out.splitlines() if line.startswith("Seccomp:")][0]
        return ids


@pytest.mark.parametrize("flag,want", [([], "0"), (["--runtime-seccomp-default"], "2")])
def test_seccomp_default_key(flag, want):
    d = start_pod_daemon(tmp_base(), flag)
    try:
        load_image(d)
        modes = _seccomp_mode(d, flag)
        assert modes == {"none": want, "unconfined": "0"}
    finally:
        try:
            remove_all_pods(d)
        finally:
            d.stop()

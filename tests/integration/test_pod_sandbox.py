"""Pod sandboxes on the real kernel through the real daemon: pinned
namespaces, hostname, DNS files, sysctls, the infra process of a shared PID
namespace, idempotent stop/remove, filters, name reservations, restarts."""

from __future__ import annotations

import json
import os
import signal
import subprocess

import grpc
import pytest

from cri.proto import api_pb2 as pb
from tests.pods_fixtures import *  # noqa: F403
from tests.pods_fixtures import TEST_CGROUP_PARENT, pod_config

pytestmark = pytest.mark.integration


def run_pod(c, cfg, handler=""):
    return c.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg, runtime_handler=handler)).pod_sandbox_id


def status(c, pod_id, verbose=True):
    r = c.runtime.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=pod_id, verbose=verbose))
    return r.status, (json.loads(r.info["info"]) if verbose else None)


def nsenter(ns_args, *cmd):
    return subprocess.run(["nsenter", *ns_args, "--", *cmd], capture_output=True, text=True, check=True).stdout


def is_nsfs_mount(path):
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == path and " nsfs " in line for line in f)


def test_pod_lifecycle_pins_namespaces_and_cleans_up(pod_daemon):
    cfg = pod_config("web", hostname="web-0", labels={"app": "web"}, annotations={"a": "b"})
    cfg.dns_config.CopyFrom(pb.DNSConfig(servers=["10.96.0.10"], searches=["default.svc.cluster.local"], options=["ndots:5"]))
    cfg.linux.sysctls["net.ipv4.ip_unprivileged_port_start"] = "80"
    cfg.linux.sysctls["kernel.shmmni"] = "1000"
    cfg.linux.security_context.namespace_options.pid = pb.POD
    with pod_daemon.client() as c:
        pod = run_pod(c, cfg)
        st, info = status(c, pod)
        assert st.state == pb.SANDBOX_READY
        assert st.metadata.name == "web" and st.labels == {"app": "web"} and st.annotations == {"a": "b"}
        assert st.linux.namespaces.options.pid == pb.POD
        assert st.linux.namespaces.options.network == pb.POD
        paths = info["namespaces"]
        assert set(paths) == {"network", "ipc", "uts", "pid"}
        for p in paths.values():
            assert is_nsfs_mount(p), p
        # The pinned namespaces are different from the node's and hold what we set.
        assert os.stat(paths["network"]).st_ino != os.stat("/proc/self/ns/net").st_ino
        assert nsenter([f"--uts={paths['uts']}"], "hostname").strip() == "web-0"
        assert nsenter([f"--net={paths['network']}"], "cat", "/proc/sys/net/ipv4/ip_unprivileged_port_start").strip() == "80"
        assert nsenter([f"--ipc={paths['ipc']}"], "cat", "/proc/sys/kernel/shmmni").strip() == "1000"
        assert "lo" in nsenter([f"--net={paths['network']}"], "ip", "-o", "link", "show", "up")
        # The infra process is the init of the pod's PID namespace.
        infra = info["pid"]
        assert infra > 0 and os.readlink(f"/proc/{infra}/ns/pid") == f"pid:[{os.stat(paths['pid']).st_ino}]"
        resolv = open(info["files"]["resolv.conf"]).read()
        assert "nameserver 10.96.0.10" in resolv and "search default.svc.cluster.local" in resolv and "options ndots:5" in resolv
        assert open(info["files"]["hostname"]).read() == "web-0\n"
        assert "localhost" in open(info["files"]["hosts"]).read()
        # A pod that names no cgroup parent gets its own cgroup under the default.
        assert info["cgroupPath"].startswith(TEST_CGROUP_PARENT + "/") and "/pod-" in info["cgroupPath"]
        assert os.path.isdir(f"/sys/fs/cgroup/memory{info['cgroupPath']}")

        c.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod))
        st, info2 = status(c, pod)
        assert st.state == pb.SANDBOX_NOTREADY
        assert not os.path.exists(f"/proc/{infra}") or open(f"/proc/{infra}/stat").read().split(") ")[1][0] == "Z"
        c.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod))  # idempotent

        c.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod))
        for p in paths.values():
            assert not is_nsfs_mount(p)
        assert not os.path.exists(info["podDir"])
        assert not os.path.exists(f"/sys/fs/cgroup/memory{info['cgroupPath']}")
        with pytest.raises(grpc.RpcError) as e:
            status(c, pod)
        assert e.value.code() == grpc.StatusCode.NOT_FOUND
        c.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod))  # idempotent
        c.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod))


def test_host_namespaces_and_default_dns(pod_daemon):
    cfg = pod_config("hostnet")
    opts = cfg.linux.security_context.namespace_options
    opts.network, opts.ipc, opts.pid = pb.NODE, pb.NODE, pb.NODE
    with pod_daemon.client() as c:
        pod = run_pod(c, cfg)
        st, info = status(c, pod)
        assert info["namespaces"] == {}
        assert info["pid"] == 0 and info["shm"] == ""
        assert st.linux.namespaces.options.network == pb.NODE
        # No DnsConfig: the node's resolv.conf.
        assert open(info["files"]["resolv.conf"], "rb").read() == open("/etc/resolv.conf", "rb").read()
        c.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod))


def test_container_pid_mode_has_no_infra_process(pod_daemon):
    cfg = pod_config("nopid")
    cfg.linux.security_context.namespace_options.pid = pb.CONTAINER
    with pod_daemon.client() as c:
        pod = run_pod(c, cfg)
        _, info = status(c, pod)
        assert set(info["namespaces"]) == {"network", "ipc", "uts"}
        assert info["pid"] == 0
        assert info["shm"] and any(line.split()[4] == info["shm"] for line in open("/proc/self/mountinfo"))


def test_bad_requests_leave_nothing(pod_daemon):
    with pod_daemon.client() as c:
        with pytest.raises(grpc.RpcError) as e:
            run_pod(c, pod_config("h"), handler="kata")
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "'kata'" in e.value.details() and "''" in e.value.details()
        bad = pod_config("sysctl")
        bad.linux.sysctls["net.ipv4.no_such_thing"] = "1"
        with pytest.raises(grpc.RpcError) as e:
            run_pod(c, bad)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "no_such_thing" in e.value.details()
        host = pod_config("hostsysctl")
        host.linux.security_context.namespace_options.network = pb.NODE
        host.linux.sysctls["net.ipv4.ip_forward"] = "1"
        with pytest.raises(grpc.RpcError) as e:
            run_pod(c, host)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        nometa = pb.PodSandboxConfig(metadata=pb.PodSandboxMetadata(name="x"))
        with pytest.raises(grpc.RpcError) as e:
            run_pod(c, nometa)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert list(c.runtime.ListPodSandbox(pb.ListPodSandboxRequest()).items) == []
        pods_dir = os.path.join(pod_daemon.state_root, "pods")
        assert os.listdir(pods_dir) == []


def test_list_filters(pod_daemon):
    with pod_daemon.client() as c:
        a = run_pod(c, pod_config("a", labels={"tier": "front", "x": "1"}))
        b = run_pod(c, pod_config("b", labels={"tier": "back"}))
        c.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=b))

        def ids(**f):
            flt = pb.PodSandboxFilter(**f)
            return [p.id for p in c.runtime.ListPodSandbox(pb.ListPodSandboxRequest(filter=flt)).items]
        assert ids() == [a, b]
        assert ids(id=a) == [a]
        assert ids(id=b[:12]) == [b]
        assert ids(state=pb.PodSandboxStateValue(state=pb.SANDBOX_READY)) == [a]
        assert ids(state=pb.PodSandboxStateValue(state=pb.SANDBOX_NOTREADY)) == [b]
        assert ids(label_selector={"tier": "front"}) == [a]
        assert ids(label_selector={"tier": "front", "x": "2"}) == []


def test_same_name_retry_returns_same_pod_and_clash_is_refused(pod_daemon):
    cfg = pod_config("retry")
    with pod_daemon.client() as c:
        # A caller that gives up at once: the work still finishes, and the
        # retry gets that pod rather than a clash or a second one.
        # A deadline well inside the time the work takes, so the request is
        # being worked on when the caller gives up. Not a fraction of a
        # measured pod start (a slow first pod made that race a fast second
        # one): 2 ms, and a pod whose start cannot be that quick (a shared
        # PID namespace: an infra process, moved into the pod's cgroup).
        cfg.linux.security_context.namespace_options.pid = pb.POD
        warm = run_pod(c, pod_config("warmup"))
        with pytest.raises(grpc.RpcError) as e:
            c.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg), timeout=0.002)
        assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        first = run_pod(c, cfg)
        assert run_pod(c, cfg) == first
        assert [p.id for p in c.runtime.ListPodSandbox(pb.ListPodSandboxRequest()).items] == [warm, first]
        c.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=warm))
        other = pod_config("retry", hostname="different")
        with pytest.raises(grpc.RpcError) as e:
            run_pod(c, other)
        assert e.value.code() == grpc.StatusCode.ALREADY_EXISTS
        # A new attempt is a new pod; after removal the name is free again.
        second = run_pod(c, pod_config("retry", attempt=1))
        assert second != first
        c.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=first))
        third = run_pod(c, other)
        assert third not in (first, second)


def test_pods_survive_daemon_kill(pod_daemon):
    cfg = pod_config("survivor")
    cfg.linux.security_context.namespace_options.pid = pb.POD
    with pod_daemon.client() as c:
        pod = run_pod(c, cfg)
        _, info = status(c, pod)
    pod_daemon.stop(signal.SIGKILL)
    assert os.path.exists(f"/proc/{info['pid']}")
    pod_daemon.start()
    with pod_daemon.client() as c:
        st, info2 = status(c, pod)
        assert st.state == pb.SANDBOX_READY
        assert info2["pid"] == info["pid"]
        # The same name is still taken by this pod.
        assert run_pod(c, cfg) == pod
    # Infra killed while the daemon is away: the pod comes back not ready.
    pod_daemon.stop(signal.SIGKILL)
    os.kill(info["pid"], signal.SIGKILL)
    pod_daemon.start()
    with pod_daemon.client() as c:
        st, _ = status(c, pod)
        assert st.state == pb.SANDBOX_NOTREADY


def test_runtime_handlers_from_config():
    from tests.daemon_proc import tmp_base
    from tests.pods_fixtures import remove_all_pods, start_pod_daemon
    d = start_pod_daemon(tmp_base(), ["--set", 'runtime.handlers.fast="runc"'])
    try:
        with d.client() as c:
            pod = run_pod(c, pod_config("handled"), handler="fast")
            st, info = status(c, pod)
            assert st.runtime_handler == "fast" and info["ociRuntime"].endswith("/runc")
            listed = c.runtime.ListPodSandbox(pb.ListPodSandboxRequest()).items
            assert [p.runtime_handler for p in listed] == ["fast"]
            with pytest.raises(grpc.RpcError) as e:
                run_pod(c, pod_config("other"), handler="slow")
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "'fast'" in e.value.details() and "'slow'" in e.value.details()
        remove_all_pods(d)
    finally:
        d.stop()


def test_crun_handler_refused_early_where_crun_cannot_run():
    from runtime import host
    from tests.daemon_proc import tmp_base
    from tests.pods_fixtures import remove_all_pods, start_pod_daemon
    blocker = host.crun_blocker(host.detect_cgroup_layout())
    d = start_pod_daemon(tmp_base(), ["--set", 'runtime.handlers.crun="crun"'])
    try:
        with d.client() as c:
            if blocker:
                with pytest.raises(grpc.RpcError) as e:
                    run_pod(c, pod_config("crun"), handler="crun")
                assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "crun" in e.value.details()
            else:
                pod = run_pod(c, pod_config("crun"), handler="crun")
                assert status(c, pod)[1]["ociRuntime"].endswith("/crun")
        remove_all_pods(d)
    finally:
        d.stop()

"""ExecSync through the real daemon: output, exit codes, timeouts that kill
the process, and the shared PID namespace seen from inside."""

from __future__ import annotations

import grpc
import pytest

from cri.proto import api_pb2 as pb
from tests.pods_fixtures import *  # noqa: F403
from tests.pods_fixtures import container_config, load_image, pod_config, wait_state

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def image(module_daemon):
    return load_image(module_daemon)


@pytest.fixture
def c(clean_pods, image):
    with clean_pods.client() as client:
        yield client


def start(c, pod, cfg, name, command, **kw):
    ctr = c.runtime.CreateContainer(pb.CreateContainerRequest(
        pod_sandbox_id=pod, config=container_config(name, command, **kw), sandbox_config=cfg)).container_id
    c.runtime.StartContainer(pb.StartContainerRequest(container_id=ctr))
    return ctr


def pod(c, name="exec", pid=pb.CONTAINER):
    cfg = pod_config(name)
    cfg.linux.security_context.namespace_options.pid = pid
    return c.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg)).pod_sandbox_id, cfg


def exec_sync(c, ctr, cmd, timeout=0, **kw):
    return c.runtime.ExecSync(pb.ExecSyncRequest(container_id=ctr, cmd=cmd, timeout=timeout), **kw)


def test_exec_output_and_exit_code(c):
    p, cfg = pod(c)
    ctr = start(c, p, cfg, "main", ["sleep", "1000"], envs=[pb.KeyValue(key="GREETING", value=b"hi")])
    r = exec_sync(c, ctr, ["/bin/sh", "-c", "echo out $GREETING; echo err >&2; exit 4"])
    assert (r.stdout, r.stderr, r.exit_code) == (b"out hi\n", b"err\n", 4)
    r = exec_sync(c, ctr, ["true"])
    assert r.exit_code == 0 and r.stdout == b"" and r.stderr == b""
    big = exec_sync(c, ctr, ["/bin/sh", "-c", "head -c 3000000 /dev/zero"])
    assert big.stdout == b"\0" * 3000000
    with pytest.raises(grpc.RpcError) as e:
        exec_sync(c, ctr, [])
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    r = exec_sync(c, ctr, ["/no/such/thing"])
    assert r.exit_code != 0


def test_exec_timeout_kills_the_process(c):
    p, cfg = pod(c)
    ctr = start(c, p, cfg, "main", ["sleep", "1000"])
    with pytest.raises(grpc.RpcError) as e:
        exec_sync(c, ctr, ["/bin/sh", "-c", "echo started; exec sleep 777"], timeout=1)
    assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "timed out" in e.value.details()
    # Gone at once, not even a zombie: `sleep 1000` as the container's init
    # would never reap it.
    ps = exec_sync(c, ctr, ["ps", "-o", "stat,args"]).stdout.decode().splitlines()[1:]
    assert [line.split(None, 1)[1].strip() for line in ps] == ["sleep 1000", "ps -o stat,args"], ps


def test_exec_needs_a_running_container(c):
    p, cfg = pod(c)
    ctr = start(c, p, cfg, "quick", ["true"])
    wait_state(c, ctr, pb.CONTAINER_EXITED)
    with pytest.raises(grpc.RpcError) as e:
        exec_sync(c, ctr, ["true"])
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.RpcError) as e:
        exec_sync(c, "f" * 64, ["true"])
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


def test_shared_pid_namespace_sees_siblings(c):
    p, cfg = pod(c, "sharedpid", pid=pb.POD)
    start(c, p, cfg, "a", ["sleep", "4242"])
    b = start(c, p, cfg, "b", ["sleep", "1000"])
    ps = exec_sync(c, b, ["ps", "-o", "pid,args"]).stdout.decode()
    assert "sleep 4242" in ps and "sleep 1000" in ps
    # The pod's infra process is PID 1 of the shared namespace.
    first = [line.split(None, 1) for line in ps.splitlines()[1:]]
    assert ["1", "/usr/bin/catatonit -P"] in [[x.strip() for x in f] for f in first]
    # Without a shared namespace each container sees only itself.
    p2, cfg2 = pod(c, "ownpid", pid=pb.CONTAINER)
    x = start(c, p2, cfg2, "x", ["sleep", "5151"])
    y = start(c, p2, cfg2, "y", ["sleep", "1000"])
    ps = exec_sync(c, y, ["ps", "-o", "args"]).stdout.decode()
    assert "sleep 5151" not in ps and "sleep 1000" in ps
    assert x

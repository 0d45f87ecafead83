"""Security settings reach the container process through the whole stack
(CRI -> build_spec -> runc under conmon): users, capabilities, read-only
root, and mount propagation of bind mounts."""

from __future__ import annotations

import subprocess
import time

import pytest

from cri.proto import api_pb2 as pb
from runtime.capabilities import ALL_CAPABILITIES, DEFAULT_CAPABILITIES
from tests.pods_fixtures import *  # noqa: F403
from tests.pods_fixtures import container_config, load_image, pod_config

pytestmark = pytest.mark.integration

PASSWD = "root:x:0:0:root:/root:/bin/sh\napp:x:1234:2345:app:/home:/bin/sh\n"
GROUP = "root:x:0:\napp:x:2345:\nextra:x:3456:app\n"


@pytest.fixture(scope="module")
def images(module_daemon):
    load_image(module_daemon, passwd=PASSWD, group=GROUP)
    load_image(module_daemon, "crispy.test/appuser:1", config={"Cmd": ["/bin/sh"], "User": "app"},
               passwd=PASSWD, group=GROUP)


@pytest.fixture
def c(clean_pods, images):
    with clean_pods.client() as client:
        yield client


def pod(c, privileged=False):
    cfg = pod_config("sec")
    cfg.linux.security_context.privileged = privileged
    return c.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg)).pod_sandbox_id, cfg


def start(c, p, cfg, name, config_edit=None, image="crispy.test/busybox:1", command=("sleep", "1000")):
    config = container_config(name, list(command), image=image)
    if config_edit:
        config_edit(config)
    ctr = c.runtime.CreateContainer(pb.CreateContainerRequest(pod_sandbox_id=p, config=config, sandbox_config=cfg)).container_id
    c.runtime.StartContainer(pb.StartContainerRequest(container_id=ctr))
    return ctr


def sh(c, ctr, script):
    r = c.runtime.ExecSync(pb.ExecSyncRequest(container_id=ctr, cmd=["/bin/sh", "-c", script], timeout=30))
    return r.exit_code, r.stdout.decode(), r.stderr.decode()


def cap_mask(names):
    return sum(1 << ALL_CAPABILITIES.index(n) for n in names)


def test_users(c):
    p, cfg = pod(c)
    as_root = start(c, p, cfg, "root")
    assert sh(c, as_root, "id -u")[1].strip() == "0"
    by_uid = start(c, p, cfg, "uid", lambda x: x.linux.security_context.run_as_user.CopyFrom(pb.Int64Value(value=4321)))
    assert sh(c, by_uid, "id -u; id -g")[1].split() == ["4321", "0"]
    image_user = start(c, p, cfg, "imageuser", image="crispy.test/appuser:1")
    out = sh(c, image_user, "id -u; id -g; id -G")[1].split("\n")
    assert out[0] == "1234" and out[1] == "2345" and set(out[2].split()) == {"2345", "3456"}

    def groups(x):
        x.linux.security_context.run_as_user.CopyFrom(pb.Int64Value(value=1234))
        x.linux.security_context.run_as_group.CopyFrom(pb.Int64Value(value=777))
        x.linux.security_context.supplemental_groups.append(888)
    grouped = start(c, p, cfg, "grouped", groups)
    out = sh(c, grouped, "id -u; id -g; id -G")[1].split("\n")
    assert out[0] == "1234" and out[1] == "777" and {"777", "888"} <= set(out[2].split())
    st = c.runtime.ContainerStatus(pb.ContainerStatusRequest(container_id=grouped)).status
    assert st.user.linux.uid == 1234 and st.user.linux.gid == 777 and 888 in st.user.linux.supplemental_groups


def test_capabilities(c):
    p, cfg = pod(c)
    default = start(c, p, cfg, "default")
    eff = int(sh(c, default, "grep CapEff /proc/self/status")[1].split()[1], 16)
    assert eff == cap_mask(DEFAULT_CAPABILITIES)

    def drop_all(x):
        x.linux.security_context.capabilities.drop_capabilities.append("ALL")
        x.linux.security_context.capabilities.add_capabilities.append("NET_BIND_SERVICE")
    minimal = start(c, p, cfg, "minimal", drop_all)
    eff = int(sh(c, minimal, "grep CapEff /proc/self/status")[1].split()[1], 16)
    assert eff == cap_mask(["CAP_NET_BIND_SERVICE"])
    # Without CAP_CHOWN even root cannot give a file away.
    code, _, err = sh(c, minimal, "touch /tmp/f && chown 1:1 /tmp/f")
    assert code != 0 and "not permitted" in err.lower()


def test_read_only_rootfs(c):
    p, cfg = pod(c)

    def ro(x):
        x.linux.security_context.readonly_rootfs = True
    ctr = start(c, p, cfg, "ro", ro)
    code, _, err = sh(c, ctr, "touch /newfile")
    assert code != 0 and "read-only" in err.lower()
    # The pod's files and /dev/shm stay writable where they should be.
    assert sh(c, ctr, "touch /dev/shm/ok")[0] == 0
    rw = start(c, p, cfg, "rw")
    assert sh(c, rw, "touch /newfile")[0] == 0


@pytest.fixture
def shared_dir(tmp_path):
    d = tmp_path / "prop"
    d.mkdir()
    subprocess.run(["mount", "--bind", str(d), str(d)], check=True)
    subprocess.run(["mount", "--make-shared", str(d)], check=True)
    yield d
    subprocess.run(["umount", "-R", "-l", str(d)], check=False)


def test_bind_mount_propagation(c, shared_dir):
    p, cfg = pod(c)

    def mounts(prop):
        def edit(x):
            x.mounts.append(pb.Mount(container_path="/data", host_path=str(shared_dir), propagation=prop))
        return edit
    slave = start(c, p, cfg, "slave", mounts(pb.PROPAGATION_HOST_TO_CONTAINER))
    private = start(c, p, cfg, "private", mounts(pb.PROPAGATION_PRIVATE))
    (shared_dir / "file").write_text("x")
    sub = shared_dir / "sub"
    sub.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(sub)], check=True)
    (sub / "inner").write_text("y")
    deadline = time.monotonic() + 5
    while sh(c, slave, "cat /data/sub/inner")[1] != "y":
        assert time.monotonic() < deadline, "a host mount did not reach the HostToContainer mount"
        time.sleep(0.05)
    assert sh(c, private, "cat /data/file")[1] == "x"
    assert sh(c, private, "cat /data/sub/inner")[0] != 0
    st = c.runtime.ContainerStatus(pb.ContainerStatusRequest(container_id=slave)).status
    assert [(m.container_path, m.host_path, m.propagation) for m in st.mounts] == \
        [("/data", str(shared_dir), pb.PROPAGATION_HOST_TO_CONTAINER)]

"""cri/validation.py and the pod checks in runtime/pod_config.py, without a
daemon: which field an error names, and that errors stay short whatever
the caller sent."""

from __future__ import annotations

import pytest

from cri.proto import api_pb2 as pb
from cri.validation import check_request
from runtime import pod_config
from runtime.errors import InvalidArgument


def _msg(fn) -> str:
    with pytest.raises(InvalidArgument) as e:
        fn()
    return e.value.message


def test_paths_name_nested_repeated_and_map_fields():
    req = pb.CreateContainerRequest(config=pb.ContainerConfig(
        envs=[pb.KeyValue(key="OK", value=b"1"), pb.KeyValue(key="B\0AD", value=b"2")]))
    assert _msg(lambda: check_request(req)).startswith("config.envs[1].key contains a NUL byte")
    req = pb.CreateContainerRequest(config=pb.ContainerConfig(annotations={"k": "v\0"}))
    assert _msg(lambda: check_request(req)).startswith("config.annotations['k'] contains a NUL byte")
    req = pb.RunPodSandboxRequest(config=pb.PodSandboxConfig(labels={"k" * 10000 + "\0": "v"}))
    msg = _msg(lambda: check_request(req))
    assert msg.startswith("config.labels key 'kkk") and len(msg) < 300
    req = pb.UpdateContainerResourcesRequest(linux=pb.LinuxContainerResources(unified={"memory.max": "1\0"}))
    assert "linux.unified['memory.max']" in _msg(lambda: check_request(req))


def test_unknown_enums_are_named_with_the_known_values():
    req = pb.CreateContainerRequest(config=pb.ContainerConfig(stop_signal=999))
    msg = _msg(lambda: check_request(req))
    assert msg.startswith("config.stop_signal is 999, which is not a Signal") and "SIGKILL" in msg


def test_clean_requests_pass():
    check_request(pb.CreateContainerRequest(pod_sandbox_id="x", config=pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name="c"), command=["sh", "-c", "echo ü"],
        envs=[pb.KeyValue(key="A", value="é".encode())], labels={"a": "b"},
        linux=pb.LinuxContainerConfig(security_context=pb.LinuxContainerSecurityContext(
            seccomp=pb.SecurityProfile(profile_type=pb.SecurityProfile.Localhost, localhost_ref="/p.json"))))))


def _pod(**kw):
    return pb.PodSandboxConfig(metadata=pb.PodSandboxMetadata(name="a", namespace="b", uid="c"), **kw)


@pytest.mark.parametrize("kw,needle", [
    (dict(log_directory="x" * 1_000_000), "must be an absolute path"),
    (dict(log_directory="/var/log/pods/./p"), "'.' or '..'"),
    (dict(hostname="h" * 1_000_000), "at most 64"),
    (dict(hostname="a\tb"), "whitespace"),
    (dict(linux=pb.LinuxPodSandboxConfig(cgroup_parent="/kubepods/" + "../" * 100000)), "'..'"),
])
def test_pod_checks_stay_short(kw, needle):
    msg = _msg(lambda: pod_config.validate(_pod(**kw)))
    assert needle in msg and len(msg) < 500


def test_good_pod_passes():
    pod_config.validate(_pod(hostname="web-0", log_directory="/var/log/pods/ns_web-0_uid",
                          linux=pb.LinuxPodSandboxConfig(cgroup_parent="/kubepods/burstable/poduid")))

"""User namespace mappings of a pod (runtime/userns.py) and their refusal
by RunPodSandbox's validation: what kubelet sends for hostUsers: false is
taken exactly, anything else is INVALID_ARGUMENT naming the field (the
critest UserNamespaces specs send these shapes)."""

from __future__ import annotations

import pytest

from cri.proto import api_pb2 as pb
from runtime import pod_config
from runtime.errors import InvalidArgument
from runtime.userns import IdMapping, PodUserns, pod_userns

KUBELET = [pb.IDMapping(container_id=0, host_id=65536 * 2, length=65536)]


def options(mode: int = pb.POD, uids: list[pb.IDMapping] | None = None, gids: list[pb.IDMapping] | None = None,
            **modes: int) -> pb.NamespaceOption:
    ns = pb.NamespaceOption(**modes)
    ns.userns_options.mode = mode
    ns.userns_options.uids.extend(KUBELET if uids is None else uids)
    ns.userns_options.gids.extend(KUBELET if gids is None else gids)
    return ns


def refused(ns: pb.NamespaceOption) -> str:
    with pytest.raises(InvalidArgument) as e:
        pod_userns(ns)
    return str(e.value)


def test_kubelets_mapping_is_taken():
    got = pod_userns(options(uids=[pb.IDMapping(container_id=0, host_id=131072, length=65536)],
                             gids=[pb.IDMapping(container_id=0, host_id=196608, length=65536)]))
    assert got == PodUserns(IdMapping(0, 131072, 65536), IdMapping(0, 196608, 65536))
    assert got.uids.line() == "0 131072 65536\n"


def test_critest_mapping_is_taken():
    # critest maps 0 -> 1000, 100000 long: not kubelet's alignment, still valid.
    m = [pb.IDMapping(container_id=0, host_id=1000, length=100000)]
    assert pod_userns(options(uids=m, gids=m)) == PodUserns(IdMapping(0, 1000, 100000), IdMapping(0, 1000, 100000))


def test_node_and_unset_mean_no_user_namespace():
    assert pod_userns(pb.NamespaceOption()) is None
    assert pod_userns(options(pb.NODE, uids=[], gids=[])) is None


def test_node_mode_with_mappings_is_refused():
    assert "only for mode POD" in refused(options(pb.NODE))


@pytest.mark.parametrize("mode", [pb.CONTAINER, pb.TARGET])
def test_container_and_target_modes_are_refused(mode):
    msg = refused(options(mode, uids=[], gids=[]))
    assert f"userns_options.mode {pb.NamespaceMode.Name(mode)} is not supported" in msg


def test_more_than_one_mapping_is_refused():
    two = [pb.IDMapping(container_id=0, host_id=1000, length=100000),
           pb.IDMapping(container_id=0, host_id=2000, length=100000)]
    assert "userns_options.uids has 2 mappings" in refused(options(uids=two, gids=two))
    assert "userns_options.gids has 2 mappings" in refused(options(gids=two))


def test_missing_mappings_are_refused():
    assert "uids has 0 mappings" in refused(options(uids=[]))
    assert "gids has 0 mappings" in refused(options(gids=[]))


def test_container_id_zero_must_be_mapped():
    m = [pb.IDMapping(container_id=1, host_id=1000, length=100000)]
    assert "uids: container ID 0 is not mapped" in refused(options(uids=m, gids=m))
    assert "gids: container ID 0 is not mapped" in refused(options(gids=m))


def test_host_root_and_empty_and_overflowing_ranges_are_refused():
    assert "host ID 0" in refused(options(uids=[pb.IDMapping(container_id=0, host_id=0, length=65536)]))
    assert "length is 0" in refused(options(gids=[pb.IDMapping(container_id=0, host_id=65536, length=0)]))
    # (uid_t)-1 is no ID: the last usable host ID is 2^32 - 2.
    assert "run past the largest ID" in refused(
        options(uids=[pb.IDMapping(container_id=0, host_id=(1 << 32) - 65536, length=65536)]))
    assert pod_userns(options(uids=[pb.IDMapping(container_id=0, host_id=(1 << 32) - 65537, length=65536)]))


@pytest.mark.parametrize("shared", ["network", "pid", "ipc"])
def test_host_namespaces_are_refused_with_a_user_namespace(shared):
    assert f"cannot share the node's {shared} namespace" in refused(options(**{shared: pb.NODE}))


def _pod(ns: pb.NamespaceOption) -> pb.PodSandboxConfig:
    cfg = pb.PodSandboxConfig(metadata=pb.PodSandboxMetadata(name="p", namespace="n", uid="u"))
    cfg.linux.security_context.namespace_options.CopyFrom(ns)
    return cfg


def test_run_pod_sandbox_validation_takes_pod_mode_and_refuses_the_rest():
    pod_config.validate(_pod(options()))
    with pytest.raises(InvalidArgument, match="PodSandboxConfig.linux.security_context.namespace_options"
                                              ".userns_options.mode CONTAINER"):
        pod_config.validate(_pod(options(pb.CONTAINER, uids=[], gids=[])))
    with pytest.raises(InvalidArgument, match="container ID 0 is not mapped"):
        pod_config.validate(_pod(options(uids=[pb.IDMapping(container_id=1, host_id=1000, length=10)])))


def test_user_namespaced_roots_need_searchable_parents(tmp_path):
    import os

    from runtime import rootfs
    from runtime.errors import FailedPrecondition
    private = tmp_path / "private"
    private.mkdir()
    os.chmod(private, 0o700)
    with pytest.raises(FailedPrecondition, match=f"chmod o\\+x {private}`"):
        rootfs.userns_root_of(private / "state", "c1")
    assert not (private / "state-userns").exists()

"""runtime/features.py: what the probes' outputs mean, and what a handler
advertises from them (kernel, runtime and crispy must all agree)."""

from __future__ import annotations

import json

import pytest

from runtime import features
from runtime.features import HandlerFeatures, KernelFeatures, NodeFeatures, RuntimeFeatures
from runtime.oci.interface import RuntimeKind
from runtime.oci.probe import Probe

# Trimmed from `runc features` of runc 1.1.5 (Debian 12): rro listed, no idmap extension.
RUNC_115 = {"ociVersionMin": "1.0.0", "ociVersionMax": "1.0.2-dev",
            "mountOptions": ["bind", "rbind", "ro", "rprivate", "rro", "rrw", "rw"],
            "linux": {"namespaces": ["mount", "user"], "cgroup": {"v1": True}}}
# A newer runtime's document: idmap mounts enabled.
WITH_IDMAP = {"ociVersionMin": "1.0.0", "ociVersionMax": "1.2.0", "mountOptions": ["rbind", "rro", "idmap"],
              "linux": {"mountExtensions": {"idmap": {"enabled": True}}}}

CRUN_181 = Probe(RuntimeKind.CRUN, "1.8.1")
CRUN_17 = Probe(RuntimeKind.CRUN, "1.7.2")
RUNC = Probe(RuntimeKind.RUNC, "1.1.5+ds1")
NEW_KERNEL = KernelFeatures(True, "6.1.0")
OLD_KERNEL = KernelFeatures(False, "5.10.0")


def test_runc_features_document():
    rt = features.parse_features(json.dumps(RUNC_115))
    assert rt == RuntimeFeatures(rro=True, idmap_mounts=False, source="features")
    assert features.parse_features(json.dumps(WITH_IDMAP)) == RuntimeFeatures(True, True, "features")


def test_features_document_without_rro():
    doc = dict(RUNC_115, mountOptions=["bind", "rbind", "ro"])
    assert features.parse_features(json.dumps(doc)).rro is False


@pytest.mark.parametrize("out", ["", "unknown command features\n", "[]", '{"hooks": []}', "{not json"])
def test_not_a_features_document(out):
    assert features.parse_features(out) is None


def test_crun_without_features_command_goes_by_version():
    rt = features.runtime_features(CRUN_181, None)
    assert (rt.rro, rt.idmap_mounts) == (True, True)
    assert "1.8.1" in rt.source
    assert features.runtime_features(CRUN_17, None).rro is False
    # crun's own features document wins over its version.
    assert features.runtime_features(CRUN_17, json.dumps(RUNC_115)).rro is True


def test_runc_without_features_supports_nothing():
    rt = features.runtime_features(RUNC, None)
    assert (rt.rro, rt.idmap_mounts) == (False, False)
    other = features.runtime_features(Probe(RuntimeKind.OTHER, "0.1", banner="oldrt version 0.1"), "garbage")
    assert other.rro is False and "oldrt version 0.1" in other.source


@pytest.mark.parametrize("text,want", [("6.18.44-fc-v1045", (6, 18)), ("5.12.0", (5, 12)), ("5.4.0-100-generic", (5, 4)),
                                       ("weird", (0, 0))])
def test_kernel_release(text, want):
    assert features.parse_release(text) == want


def test_runtime_version():
    assert features.parse_version("1.1.5+ds1") == (1, 1, 5)
    assert features.parse_version("1.8.1") >= features.CRUN_RRO_SINCE
    assert features.parse_version("unknown") == ()


def test_handler_needs_kernel_and_runtime_for_rro():
    good = RuntimeFeatures(True, True, "features")
    assert features.handler_features(NEW_KERNEL, good, "", False).recursive_read_only_mounts
    old = features.handler_features(OLD_KERNEL, good, "", True)
    assert not old.recursive_read_only_mounts and not old.user_namespaces
    assert "5.10.0" in old.rro_missing and "5.12" in old.rro_missing
    no_rro = features.handler_features(NEW_KERNEL, RuntimeFeatures(False, False, "runc 1.0 has no features command"),
                                       "", True)
    assert not no_rro.recursive_read_only_mounts
    assert "rro" in no_rro.rro_missing and "runc 1.0" in no_rro.rro_missing


def test_user_namespaces_only_when_crispy_implements_them():
    # crispy maps roots itself: the runtime's own idmap support is not needed,
    # only that it joins the pod's user namespace (runc and crun).
    rt = RuntimeFeatures(True, False, "features", joins_userns=True)
    assert features.handler_features(NEW_KERNEL, rt, "", userns_implemented=False).user_namespaces is False
    assert features.handler_features(NEW_KERNEL, rt, "", userns_implemented=True).user_namespaces is True
    assert features.handler_features(NEW_KERNEL, RuntimeFeatures(True, True, "features"), "",
                                     userns_implemented=True).user_namespaces is False
    no_userns = KernelFeatures(True, "6.18.0", user_namespaces=False)
    assert features.handler_features(no_userns, rt, "", userns_implemented=True).user_namespaces is False
    old_kernel = KernelFeatures(False, "5.10.0")
    assert features.handler_features(old_kernel, rt, "", userns_implemented=True).user_namespaces is False


def test_node_features_probe_each_binary_once_and_name_every_handler():
    asked: list[str] = []

    def runtime(path: str) -> RuntimeFeatures:
        asked.append(path)
        return RuntimeFeatures(rro=path.endswith("runc"), idmap_mounts=False, source="features")

    nf = NodeFeatures(lambda: [("", "/usr/bin/crun"), ("runc", "/usr/sbin/runc"), ("fast", "/usr/bin/crun"),
                               ("broken", None)],
                      kernel=lambda: NEW_KERNEL, runtime=runtime)
    # Before the probe: nothing advertised, and a reason for a refusal.
    assert nf.handlers() == {}
    assert nf.for_path("/usr/sbin/runc") == features.UNPROBED
    assert nf.for_path("/usr/sbin/runc").rro_missing
    nf.probe()
    assert asked == ["/usr/bin/crun", "/usr/sbin/runc"]
    h = nf.handlers()
    assert list(h) == ["", "runc", "fast", "broken"]
    assert h["runc"].recursive_read_only_mounts and not h[""].recursive_read_only_mounts
    assert h["broken"] == HandlerFeatures(False, False, "the handler has no usable OCI runtime")
    assert nf.for_path("/usr/sbin/runc").recursive_read_only_mounts
    assert nf.supplemental_groups_policy is True
    assert nf.user_namespaces_host_network is False


def test_kernel_probe_on_this_machine_answers():
    # Whatever the kernel, the probe must answer without raising.
    k = features.probe_kernel()
    assert isinstance(k.mount_setattr, bool) and k.release

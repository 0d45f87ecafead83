"""CDI devices in build_spec: spec files (JSON and YAML) in CDI directories,
requested through ContainerConfig.CDI_devices or cdi.k8s.io/* annotations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cri.proto import api_pb2 as pb
from runtime import cdi
from runtime.errors import InvalidArgument
from runtime.oci_spec import build_spec
from tests.unit.test_oci_spec import request, rootfs  # noqa: F401 - fixture

VENDOR = {
    "cdiVersion": "0.6.0",
    "kind": "example.com/dev",
    "containerEdits": {"env": ["VENDOR_LIB=/opt/vendor"]},
    "devices": [
        {"name": "null0", "containerEdits": {
            "deviceNodes": [{"path": "/dev/vendor-null", "hostPath": "/dev/null", "permissions": "rw"}],
            "env": ["DEV=null0"], "additionalGids": [44],
            "mounts": [{"hostPath": "/usr/lib", "containerPath": "/opt/vendor/lib", "options": ["ro", "rbind"]}],
            "hooks": [{"hookName": "createContainer", "path": "/usr/bin/true", "args": ["true", "x"]}]}},
        {"name": "zero0", "containerEdits": {
            "deviceNodes": [{"path": "/dev/vendor-zero", "type": "c", "major": 1, "minor": 5}], "env": ["DEV=zero0"]}},
    ],
}


@pytest.fixture
def cdi_dirs(tmp_path: Path) -> tuple[str, str]:
    etc, run = tmp_path / "etc-cdi", tmp_path / "run-cdi"
    etc.mkdir()
    run.mkdir()
    (etc / "vendor.json").write_text(json.dumps(VENDOR))
    (run / "other.yaml").write_text(
        "cdiVersion: 0.5.0\nkind: other.org/thing\ndevices:\n  - name: a\n    containerEdits:\n      env: [OTHER=a]\n")
    (run / "broken.json").write_text("{nope")
    return str(etc), str(run)


def test_registry_loads_json_and_yaml_and_records_broken_files(cdi_dirs):
    reg = cdi.load(cdi_dirs)
    assert set(reg.devices) == {"example.com/dev=null0", "example.com/dev=zero0", "other.org/thing=a"}
    assert len(reg.errors) == 1 and "broken.json" in reg.errors[0]


def test_cdi_devices_applied(rootfs, cdi_dirs):  # noqa: F811
    config = pb.ContainerConfig(CDI_devices=[pb.CDIDevice(name="example.com/dev=null0")],
                                annotations={"cdi.k8s.io/extra": "example.com/dev=zero0,other.org/thing=a"})
    spec = build_spec(request(rootfs, config, cdi_spec_dirs=cdi_dirs))
    env = spec["process"]["env"]
    assert "VENDOR_LIB=/opt/vendor" in env and "OTHER=a" in env
    assert "DEV=zero0" in env and "DEV=null0" not in env  # later device's value wins
    devs = {d["path"]: d for d in spec["linux"]["devices"]}
    assert (devs["/dev/vendor-null"]["major"], devs["/dev/vendor-null"]["minor"]) == (1, 3)  # from the host node
    assert (devs["/dev/vendor-zero"]["major"], devs["/dev/vendor-zero"]["minor"]) == (1, 5)
    rules = spec["linux"]["resources"]["devices"]
    assert {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rw"} in rules
    assert {"allow": True, "type": "c", "major": 1, "minor": 5, "access": "rwm"} in rules
    assert 44 in spec["process"]["user"]["additionalGids"]
    mount = next(m for m in spec["mounts"] if m["destination"] == "/opt/vendor/lib")
    assert mount["source"] == "/usr/lib" and mount["options"] == ["ro", "rbind"]
    assert spec["hooks"]["createContainer"] == [{"path": "/usr/bin/true", "args": ["true", "x"]}]


def test_cdi_bad_names(rootfs, cdi_dirs):  # noqa: F811
    with pytest.raises(InvalidArgument, match="qualified name"):
        build_spec(request(rootfs, pb.ContainerConfig(CDI_devices=[pb.CDIDevice(name="gpu0")]), cdi_spec_dirs=cdi_dirs))
    with pytest.raises(InvalidArgument, match="broken.json"):
        build_spec(request(rootfs, pb.ContainerConfig(CDI_devices=[pb.CDIDevice(name="example.com/dev=nope")]),
                           cdi_spec_dirs=cdi_dirs))


def test_cdi_missing_host_node(rootfs, tmp_path):  # noqa: F811
    d = tmp_path / "cdi"
    d.mkdir()
    (d / "x.json").write_text(json.dumps({"cdiVersion": "0.6.0", "kind": "x.io/y", "devices": [
        {"name": "a", "containerEdits": {"deviceNodes": [{"path": "/dev/does-not-exist-crispy"}]}}]}))
    with pytest.raises(InvalidArgument, match="does-not-exist-crispy does not exist"):
        build_spec(request(rootfs, pb.ContainerConfig(CDI_devices=[pb.CDIDevice(name="x.io/y=a")]), cdi_spec_dirs=(str(d),)))


@pytest.mark.parametrize("doc,why", [
    ({"kind": "x.io/y", "devices": [{"name": "a"}]}, "cdiVersion"),
    ({"cdiVersion": "0.6.0", "kind": "noslash", "devices": [{"name": "a"}]}, "kind"),
    ({"cdiVersion": "0.6.0", "kind": "x.io/y", "devices": []}, "no devices"),
    ({"cdiVersion": "0.6.0", "kind": "x.io/y", "devices": [{"name": "a", "containerEdits": {"env": ["NOEQ"]}}]}, "KEY=VALUE"),
    ({"cdiVersion": "0.6.0", "kind": "x.io/y", "devices": [{"name": "a", "containerEdits": {
        "hooks": [{"hookName": "whenever", "path": "/x"}]}}]}, "hookName"),
])
def test_invalid_spec_files_are_skipped_with_reason(tmp_path, doc, why):
    (tmp_path / "s.json").write_text(json.dumps(doc))
    reg = cdi.load((str(tmp_path),))
    assert reg.devices == {} and why in reg.errors[0]

"""Our NRI and ttrpc protos against the ones containerd/nri v0.12.1 and ttrpc vendor.

Wire identity means: same package (it is part of every ttrpc method name),
same services and methods, and for every message and enum the same names,
numbers, types and labels. Comments and file options are not on the wire,
so they are cleared before comparing.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

from runtime.nri.proto import api_pb2, ttrpc_pb2

VENDOR = Path("/opt/cri-tools-src/vendor/github.com/containerd")
NRI_PROTO = VENDOR / "nri/pkg/api/api.proto"
TTRPC_PROTO = VENDOR / "ttrpc/request.proto"

protoc = pytest.importorskip("grpc_tools.protoc")


def _compile(root: Path, name: str) -> descriptor_pb2.FileDescriptorProto:
    out = root / "out.pb"
    include = Path(protoc.__file__).parent / "_proto"
    rc = protoc.main(["protoc", f"-I{root}", f"-I{include}", f"--descriptor_set_out={out}", name])
    assert rc == 0, f"protoc failed on {name}"
    fds = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    (fd,) = [f for f in fds.file if f.name == name]
    return fd


def _ours(module) -> descriptor_pb2.FileDescriptorProto:  # type: ignore[no-untyped-def]
    fd = descriptor_pb2.FileDescriptorProto()
    module.DESCRIPTOR.CopyToProto(fd)
    return fd


def _wire(fd: descriptor_pb2.FileDescriptorProto) -> descriptor_pb2.FileDescriptorProto:
    fd = descriptor_pb2.FileDescriptorProto.FromString(fd.SerializeToString())
    fd.ClearField("name")
    fd.ClearField("options")
    fd.ClearField("source_code_info")
    for m in fd.message_type:
        _drop_json_names(m)
    return fd


def _drop_json_names(m: descriptor_pb2.DescriptorProto) -> None:
    # protoc fills json_name in descriptor sets, the Python runtime does not;
    # it is derived from the field name anyway.
    for f in m.field:
        f.ClearField("json_name")
    for nested in m.nested_type:
        _drop_json_names(nested)


@pytest.mark.skipif(not NRI_PROTO.exists(), reason="containerd/nri vendored proto not present")
def test_nri_api_is_wire_identical_to_containerd_nri() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "api.proto").write_text(NRI_PROTO.read_text())
        theirs = _wire(_compile(root, "api.proto"))
    ours = _wire(_ours(api_pb2))

    assert ours.package == theirs.package == "nri.pkg.api.v1alpha1"
    # Compare piece by piece first so a difference names what differs.
    assert [s.name for s in ours.service] == [s.name for s in theirs.service]
    for mine, other in zip(ours.service, theirs.service, strict=True):
        assert mine == other, f"service {mine.name} differs"
    assert sorted(m.name for m in ours.message_type) == sorted(m.name for m in theirs.message_type)
    theirs_msgs = {m.name: m for m in theirs.message_type}
    for m in ours.message_type:
        assert m == theirs_msgs[m.name], f"message {m.name} differs"
    theirs_enums = {e.name: e for e in theirs.enum_type}
    assert sorted(theirs_enums) == sorted(e.name for e in ours.enum_type)
    for e in ours.enum_type:
        assert e == theirs_enums[e.name], f"enum {e.name} differs"
    assert list(ours.dependency) == list(theirs.dependency) == []


@pytest.mark.skipif(not TTRPC_PROTO.exists(), reason="containerd/ttrpc vendored proto not present")
def test_ttrpc_envelope_is_wire_identical_to_containerd_ttrpc() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "request.proto").write_text(TTRPC_PROTO.read_text())
        # ttrpc builds against a copy of google.rpc.Status without a package; its shape:
        (root / "proto").mkdir()
        (root / "proto/status.proto").write_text(
            'syntax = "proto3";\nimport "google/protobuf/any.proto";\n'
            "message Status { int32 code = 1; string message = 2; repeated google.protobuf.Any details = 3; }\n"
        )
        theirs_fd = _compile(root, "request.proto")
        status_fd = _compile(root, "proto/status.proto")
    ours = _ours(ttrpc_pb2)
    mine = {m.name: m for m in ours.message_type}
    theirs = {m.name: m for m in [*theirs_fd.message_type, *status_fd.message_type]}

    def shape(m: descriptor_pb2.DescriptorProto) -> list[tuple[str, int, int, int, str]]:
        return [(f.name, f.number, f.type, f.label, f.type_name.rsplit(".", 1)[-1]) for f in m.field]

    for name in ("Request", "Response", "KeyValue", "Status"):
        assert shape(mine[name]) == shape(theirs[name]), f"{name} differs"


def test_event_numbers_match_the_subscription_mask_bits() -> None:
    # ConfigureResponse.events sets bit (event - 1); LAST bounds the valid ones.
    assert api_pb2.RUN_POD_SANDBOX == 1
    assert api_pb2.VALIDATE_CONTAINER_ADJUSTMENT == 14
    assert api_pb2.LAST == 15
    assert api_pb2.Field.Value("None") == 0

"""Every RPC of the CRI contract has a servicer method: nothing falls
through to the generic UNIMPLEMENTED answer of cri/rpc.py."""

from __future__ import annotations

from cri.proto import api_pb2 as pb
from cri.servicers.image import ImageServicer
from cri.servicers.runtime import RuntimeServicer


def test_every_cri_rpc_has_a_servicer_method():
    missing = []
    for service, cls in (("RuntimeService", RuntimeServicer), ("ImageService", ImageServicer)):
        for method in pb.DESCRIPTOR.services_by_name[service].methods:
            if not callable(getattr(cls, method.name, None)):
                missing.append(f"{service}.{method.name}")
    assert missing == []

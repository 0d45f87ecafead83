"""A small CRI client over crispy's stubs, used by the tests, bench/ and
critest/ to talk to crispy or to any other CRI runtime (containerd)."""

from __future__ import annotations

import grpc

from cri.proto import api_pb2 as pb
from cri.proto import api_pb2_grpc


class CRIClient:
    """Synchronous client; `runtime` and `image` are the raw stubs."""

    def __init__(self, socket_path: str, timeout: float = 120.0) -> None:
        target = socket_path if socket_path.startswith("unix:") else f"unix://{socket_path}"
        self.channel = grpc.insecure_channel(target, options=[("grpc.max_receive_message_length", 16 * 1024 * 1024)])
        self.runtime = api_pb2_grpc.RuntimeServiceStub(self.channel)
        self.image = api_pb2_grpc.ImageServiceStub(self.channel)
        self.timeout = timeout

    def wait_ready(self, timeout: float = 30.0) -> None:
        grpc.channel_ready_future(self.channel).result(timeout=timeout)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> "CRIClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def version(self) -> pb.VersionResponse:
        return self.runtime.Version(pb.VersionRequest(version="v1"), timeout=self.timeout)

    def status(self, verbose: bool = False) -> pb.StatusResponse:
        return self.runtime.Status(pb.StatusRequest(verbose=verbose), timeout=self.timeout)

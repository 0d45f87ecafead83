"""Stream* lists through a real gRPC server (in-process, on a unix socket)
with the daemon's message limits: a pod list far past 16 MiB, which
ListPodSandbox refuses, arrives whole in pages; filters as in List."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

import grpc
import pytest

from cri import rpc
from cri.limits import MAX_MESSAGE_BYTES
from cri.proto import api_pb2 as pb
from cri.proto import api_pb2_grpc
from cri.servicers.runtime import RuntimeServicer
from runtime.index import RecordIndex
from runtime.store import SandboxRecord

OPTIONS = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES), ("grpc.max_send_message_length", MAX_MESSAGE_BYTES)]


def fleet(n: int, annotation_bytes: int) -> RecordIndex:
    index = RecordIndex()
    for i in range(n):
        rec = SandboxRecord(id=f"{i:064x}", name=f"p{i}", namespace="ns", uid=f"u{i}", attempt=0,
                            config={"labels": {"team": "a" if i % 2 else "b"},
                                    "annotations": {"big": "x" * annotation_bytes}},
                            created_at=i, runtime_handler="", oci_runtime="")
        index.sandboxes[rec.id] = rec
    return index


def test_a_pod_list_past_the_message_limit_streams_in_pages(tmp_path: Path) -> None:
    index = fleet(48, 400_000)  # ~19 MB of pods

    async def main() -> None:
        server = grpc.aio.server(options=OPTIONS)
        api_pb2_grpc.add_RuntimeServiceServicer_to_server(
            rpc.bind(RuntimeServicer(SimpleNamespace(index=index)), "RuntimeService"), server)  # type: ignore[arg-type]
        sock = f"unix://{tmp_path}/s.sock"
        server.add_insecure_port(sock)
        await server.start()
        try:
            async with grpc.aio.insecure_channel(sock, options=OPTIONS) as ch:
                stub = api_pb2_grpc.RuntimeServiceStub(ch)
                with pytest.raises(grpc.aio.AioRpcError) as e:
                    await stub.ListPodSandbox(pb.ListPodSandboxRequest())
                assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                pages = [r async for r in stub.StreamPodSandboxes(pb.StreamPodSandboxesRequest())]
                assert len(pages) >= 4 and all(p.ByteSize() <= MAX_MESSAGE_BYTES // 4 + 1024 for p in pages)
                assert [p.id for r in pages for p in r.pod_sandboxes] == sorted(index.sandboxes)
                f = pb.PodSandboxFilter(label_selector={"team": "a"})
                only = [p for r in [x async for x in stub.StreamPodSandboxes(pb.StreamPodSandboxesRequest(filter=f))]
                        for p in r.pod_sandboxes]
                assert [p.metadata.name for p in only] == [f"p{i}" for i in range(1, 48, 2)]
        finally:
            await server.stop(None)
    asyncio.run(main())

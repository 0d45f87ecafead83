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

    # ---- convenience wrappers (bench/ and tests) -----------------------------

    def pull_image(self, image: str, sandbox_config: pb.PodSandboxConfig | None = None) -> str:
        req = pb.PullImageRequest(image=pb.ImageSpec(image=image), sandbox_config=sandbox_config)
        return self.image.PullImage(req, timeout=self.timeout).image_ref

    def image_status(self, image: str) -> pb.Image | None:
        resp = self.image.ImageStatus(pb.ImageStatusRequest(image=pb.ImageSpec(image=image)), timeout=self.timeout)
        return resp.image if resp.HasField("image") else None

    def remove_image(self, image: str) -> None:
        self.image.RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image=image)), timeout=self.timeout)

    def run_pod_sandbox(self, config: pb.PodSandboxConfig, runtime_handler: str = "") -> str:
        req = pb.RunPodSandboxRequest(config=config, runtime_handler=runtime_handler)
        return self.runtime.RunPodSandbox(req, timeout=self.timeout).pod_sandbox_id

    def stop_pod_sandbox(self, pod_id: str) -> None:
        self.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod_id), timeout=self.timeout)

    def remove_pod_sandbox(self, pod_id: str) -> None:
        self.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod_id), timeout=self.timeout)

    def list_pod_sandboxes(self) -> list[pb.PodSandbox]:
        return list(self.runtime.ListPodSandbox(pb.ListPodSandboxRequest(), timeout=self.timeout).items)

    def create_container(self, pod_id: str, config: pb.ContainerConfig,
                         sandbox_config: pb.PodSandboxConfig) -> str:
        req = pb.CreateContainerRequest(pod_sandbox_id=pod_id, config=config, sandbox_config=sandbox_config)
        return self.runtime.CreateContainer(req, timeout=self.timeout).container_id

    def start_container(self, container_id: str) -> None:
        self.runtime.StartContainer(pb.StartContainerRequest(container_id=container_id), timeout=self.timeout)

    def stop_container(self, container_id: str, timeout: int = 0) -> None:
        self.runtime.StopContainer(pb.StopContainerRequest(container_id=container_id, timeout=timeout),
                                   timeout=self.timeout)

    def remove_container(self, container_id: str) -> None:
        self.runtime.RemoveContainer(pb.RemoveContainerRequest(container_id=container_id), timeout=self.timeout)

    def exec_sync(self, container_id: str, cmd: list[str], timeout: int = 0) -> pb.ExecSyncResponse:
        req = pb.ExecSyncRequest(container_id=container_id, cmd=cmd, timeout=timeout)
        return self.runtime.ExecSync(req, timeout=self.timeout)

"""The pods and containers the scenarios create: the same CRI configs for
every runtime, the way kubelet would send them for a plain pod."""

from __future__ import annotations

import uuid

from cri.proto import api_pb2 as pb

CGROUP_ROOT_NAME = "crispybench"
NAMESPACE = "crispy-bench"


def pod_config(target: str, log_root: str, host_network: bool,
               share_process_namespace: bool = False) -> pb.PodSandboxConfig:
    uid = uuid.uuid4().hex
    name = f"bench-{uid[:12]}"
    # kubelet's namespaces for a pod: a PID namespace per container unless
    # the pod sets shareProcessNamespace (the proto default, POD, is not
    # what kubelet sends for a plain pod).
    net = pb.NamespaceOption(network=pb.NODE if host_network else pb.POD, ipc=pb.POD,
                             pid=pb.POD if share_process_namespace else pb.CONTAINER)
    return pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name=name, uid=uid, namespace=NAMESPACE, attempt=0),
        # A host-network pod shares the node's UTS namespace: runc refuses
        # to set a hostname there, and kubelet's pod keeps the node's name.
        hostname="" if host_network else name,
        log_directory=f"{log_root}/{name}",
        labels={"app": "crispy-bench"},
        linux=pb.LinuxPodSandboxConfig(
            # kubelet's cgroupfs layout: one cgroup per pod under a parent;
            # the bench's parent lets clean-up find every leftover.
            cgroup_parent=f"/{CGROUP_ROOT_NAME}/{target}/pod{uid}",
            security_context=pb.LinuxSandboxSecurityContext(namespace_options=net),
        ),
    )


def sleeper_config(image: str, name: str = "sleeper") -> pb.ContainerConfig:
    return pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name=name, attempt=0),
        image=pb.ImageSpec(image=image),
        command=["/bin/sleep", "3600"],
        log_path=f"{name}.log",
        linux=pb.LinuxContainerConfig(),
    )


def ensure_image(target, image: str, fallback=None) -> None:
    """Makes `image` present on `target` for scenarios that are not about
    pulling: PullImage, or — for crispy while its PullImage answers
    UNIMPLEMENTED — `crispy load` of `fallback` (an imagebuild Image)."""
    import grpc

    client = target.client
    if client.image_status(image) is not None:
        return
    try:
        client.pull_image(image)
    except grpc.RpcError as e:
        if e.code() != grpc.StatusCode.UNIMPLEMENTED or fallback is None or target.kind != "crispy":
            raise
        target.load_image(fallback, image)


def remove_pod_quietly(client, pod_id: str) -> None:
    """Teardown path after a failure: best effort, errors are not the result."""
    for call in (client.stop_pod_sandbox, client.remove_pod_sandbox):
        try:
            call(pod_id)
        except Exception:  # noqa: BLE001
            pass

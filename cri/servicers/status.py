"""Version, Status, RuntimeConfig and UpdateRuntimeConfig."""

from __future__ import annotations

import json
from typing import Any

from cri.proto import api_pb2 as pb
from cri.servicers.node import Node

RUNTIME_NAME = "crispy"
RUNTIME_API_VERSION = "v1"


class StatusRPCs:
    daemon: Node

    async def Version(self, request: pb.VersionRequest, context: Any) -> pb.VersionResponse:
        return pb.VersionResponse(
            version="0.1.0",  # version of the kubelet-facing API, fixed by CRI
            runtime_name=RUNTIME_NAME,
            runtime_version=self.daemon.version,
            runtime_api_version=RUNTIME_API_VERSION,
        )

    async def Status(self, request: pb.StatusRequest, context: Any) -> pb.StatusResponse:
        conditions = [
            pb.RuntimeCondition(type="RuntimeReady", **self.daemon.runtime_readiness()),
            pb.RuntimeCondition(type="NetworkReady", **self.daemon.network_readiness()),
        ]
        info = {}
        if request.verbose:
            info = {k: json.dumps(v, sort_keys=True) for k, v in self.daemon.status_info().items()}
        features = self.daemon.features
        handlers = [pb.RuntimeHandler(name=name, features=pb.RuntimeHandlerFeatures(
            recursive_read_only_mounts=f.recursive_read_only_mounts, user_namespaces=f.user_namespaces))
            for name, f in features.handlers().items()]
        return pb.StatusResponse(
            status=pb.RuntimeStatus(conditions=conditions), info=info, runtime_handlers=handlers,
            features=pb.RuntimeFeatures(supplemental_groups_policy=features.supplemental_groups_policy,
                                        user_namespaces_host_network=features.user_namespaces_host_network))

    async def RuntimeConfig(self, request: pb.RuntimeConfigRequest, context: Any) -> pb.RuntimeConfigResponse:
        driver = pb.SYSTEMD if self.daemon.config.runtime.cgroup_driver == "systemd" else pb.CGROUPFS
        return pb.RuntimeConfigResponse(linux=pb.LinuxRuntimeConfiguration(cgroup_driver=driver))

    async def UpdateRuntimeConfig(self, request: pb.UpdateRuntimeConfigRequest,
                                  context: Any) -> pb.UpdateRuntimeConfigResponse:
        cidr = request.runtime_config.network_config.pod_cidr
        if cidr:
            await self.daemon.set_pod_cidr(cidr)
        return pb.UpdateRuntimeConfigResponse()

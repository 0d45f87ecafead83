"""A pod's PodSandboxConfig: checked before anything is made, kept in the
record as proto JSON and parsed back from it, and turned into the request
the pod network gets."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format

from cri.proto import api_pb2 as pb
from runtime import userns
from runtime.errors import InvalidArgument
from runtime.network import PodNetworkRequest, PortMapping
from runtime.store import SandboxRecord

PROTOCOLS = {pb.TCP: "tcp", pb.UDP: "udp", pb.SCTP: "sctp"}
PID_MODES = {pb.POD: "pod", pb.CONTAINER: "container", pb.NODE: "node", pb.TARGET: "target"}

# The kernel's limit (HOST_NAME_MAX) for sethostname.
MAX_HOSTNAME = 64


def to_json(message: Any) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def config_of(rec: SandboxRecord) -> pb.PodSandboxConfig:
    return json_format.ParseDict(rec.config, pb.PodSandboxConfig(), ignore_unknown_fields=True)


def validate(config: pb.PodSandboxConfig) -> None:
    md = config.metadata
    if not md.name or not md.namespace or not md.uid:
        raise InvalidArgument("PodSandboxConfig.metadata needs name, namespace and uid")
    ns = config.linux.security_context.namespace_options
    if ns.network == pb.TARGET or ns.ipc == pb.TARGET:
        raise InvalidArgument("namespace mode TARGET is only valid for the PID namespace of a container")
    if ns.pid == pb.TARGET:
        raise InvalidArgument("a pod sandbox cannot target another container's PID namespace; use POD, "
                              "CONTAINER or NODE")
    userns.pod_userns(ns)
    for pm in config.port_mappings:
        if pm.protocol not in PROTOCOLS:
            raise InvalidArgument(f"port mapping protocol {pm.protocol} is unknown; use TCP, UDP or SCTP")
    _validate_hostname(config.hostname)
    if config.log_directory:
        _validate_log_directory(config.log_directory)
    if ".." in config.linux.cgroup_parent.split("/"):
        raise InvalidArgument(f"cgroup_parent {shown(config.linux.cgroup_parent)} must not contain '..'; "
                              f"name the cgroup by its path from the hierarchy's root")


def shown(text: str, limit: int = 256) -> str:
    """`text` quoted for an error message, cut short: the caller sent it and
    may have sent megabytes."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + f"... ({len(text)} characters)"


def _validate_hostname(hostname: str) -> None:
    if len(hostname.encode()) > MAX_HOSTNAME:
        raise InvalidArgument(f"hostname {shown(hostname, MAX_HOSTNAME)} is {len(hostname.encode())} bytes; "
                              f"the kernel allows at most {MAX_HOSTNAME}")
    # It goes into /etc/hosts and /etc/hostname as a line of its own.
    if any(ch.isspace() or not ch.isprintable() for ch in hostname):
        raise InvalidArgument(f"hostname {hostname!r} must not contain whitespace or control characters")


def _validate_log_directory(path: str) -> None:
    # A relative one would land under crispy's working directory; '..'
    # would let container log paths name files outside the pod's logs.
    if not path.startswith("/"):
        raise InvalidArgument(f"log_directory {shown(path)} must be an absolute path (kubelet uses /var/log/pods/...)")
    if any(part in (".", "..") for part in path.split("/")):
        raise InvalidArgument(f"log_directory {shown(path)} must not contain '.' or '..' components")


def network_request(rec: SandboxRecord, config: pb.PodSandboxConfig) -> PodNetworkRequest:
    return PodNetworkRequest(
        sandbox_id=rec.id, netns_path=rec.namespaces.get("net", ""), pod_name=rec.name,
        pod_namespace=rec.namespace, pod_uid=rec.uid,
        port_mappings=[PortMapping(PROTOCOLS[p.protocol], p.container_port, p.host_port, p.host_ip)
                       for p in config.port_mappings if p.host_port],
        cgroup_parent=rec.cgroup_parent)

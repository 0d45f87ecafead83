"""`crispy status`: asks the running daemon over its CRI socket whether it
is up, its version, its runtime and network conditions and how many pods
and containers it holds. Exit 0 when it answers and every condition is
true, 1 otherwise (so it can gate a script or a health check)."""

from __future__ import annotations

import os
import sys
from collections import Counter
from dataclasses import dataclass

import grpc

from cri.client import CRIClient
from cri.proto import api_pb2 as pb


@dataclass
class Report:
    lines: list[str]
    ok: bool


def _row(label: str, text: str) -> str:
    return f"{label + ':':<14}{text}"


def render(socket: str, version: pb.VersionResponse, status: pb.StatusResponse, pods: list[pb.PodSandbox],
           containers: list[pb.Container]) -> Report:
    lines = [_row("daemon", f"up on {socket}"),
             _row("version", f"{version.runtime_name} {version.runtime_version} (CRI {version.runtime_api_version})")]
    ok = True
    for cond in status.status.conditions:
        text = "true" if cond.status else "false"
        if not cond.status:
            ok = False
            text += f" ({cond.reason}: {cond.message})" if cond.reason or cond.message else ""
        lines.append(_row(cond.type, text))
    pod_states = Counter(pb.PodSandboxState.Name(p.state) for p in pods)
    ctr_states = Counter(pb.ContainerState.Name(c.state) for c in containers)
    lines.append(_row("pods", f"{len(pods)} ({pod_states.get('SANDBOX_READY', 0)} ready, "
                 f"{pod_states.get('SANDBOX_NOTREADY', 0)} not ready)"))
    lines.append(_row("containers", f"{len(containers)} ({ctr_states.get('CONTAINER_RUNNING', 0)} running, "
                 f"{ctr_states.get('CONTAINER_EXITED', 0)} exited, {ctr_states.get('CONTAINER_CREATED', 0)} created)"))
    return Report(lines, ok)


def run(socket: str, timeout: float) -> int:
    if not os.path.exists(socket):
        print(_row("daemon", f"down ({socket} does not exist; is crispy running? `systemctl status crispy` or "
                             f"`journalctl -u crispy`)"))
        return 1
    client = CRIClient(socket, timeout=timeout)
    try:
        try:
            client.wait_ready(timeout=timeout)
        except grpc.FutureTimeoutError:
            print(_row("daemon", f"down (nothing answers on {socket} within {timeout:g} s; is crispy running? "
                  f"`systemctl status crispy` or `journalctl -u crispy`)"))
            return 1
        try:
            report = render(socket, client.version(), client.status(),
                            list(client.runtime.ListPodSandbox(pb.ListPodSandboxRequest(), timeout=timeout).items),
                            list(client.runtime.ListContainers(pb.ListContainersRequest(),
                                                               timeout=timeout).containers))
        except grpc.RpcError as e:
            print(_row("daemon", f"answers on {socket} but failed: {e.code().name}: {e.details()}"), file=sys.stderr)
            return 1
    finally:
        client.close()
    print("\n".join(report.lines))
    return 0 if report.ok else 1

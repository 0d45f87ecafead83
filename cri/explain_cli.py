"""`crispy explain NAME_OR_ID`: what a pod or container is on this node, as
the kernel sees it.

The report is made by the daemon, which holds the records, the image store
and the node's cgroup layout, and served as the `explain` key of the
verbose ContainerStatus/PodSandboxStatus info — the same call `crictl
inspect` makes, so `crictl inspect` shows it too, while kubelet (which
never asks for verbose status) pays nothing. This command finds the object
by ID, ID prefix or name, asks for that status and prints the report.
`--path` is answered here, from the report's layers and mounts: the status
call takes no arguments, and the layers are readable by root on the node,
which is who may use the socket anyway.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from typing import Any

import grpc

from cri import config as configmod
from cri.client import CRIClient
from cri.proto import api_pb2 as pb
from runtime.errors import CrispyError
from runtime.explain.paths import origin
from runtime.explain.render import render, render_origin

TIMEOUT_S = 30.0


@dataclass
class Candidate:
    kind: str  # "pod" | "container"
    id: str
    name: str
    namespace: str
    pod: str  # a container's pod's name
    attempt: int = 0
    state: str = ""

    def line(self) -> str:
        where = f"{self.namespace}/{self.pod}" if self.kind == "container" else self.namespace
        return f"  {self.kind:<9} {self.id[:13]}  {where}/{self.name}  {self.state}"


class Refused(Exception):
    """What the user must change; printed as it is."""


def _candidates(c: CRIClient) -> list[Candidate]:
    pods = {p.id: p for p in c.list_pod_sandboxes()}
    out = [Candidate("pod", p.id, p.metadata.name, p.metadata.namespace, p.metadata.name,
                     state=pb.PodSandboxState.Name(p.state)) for p in pods.values()]
    ctrs = c.runtime.ListContainers(pb.ListContainersRequest(), timeout=c.timeout).containers
    for ctr in ctrs:
        pod = pods.get(ctr.pod_sandbox_id)
        out.append(Candidate("container", ctr.id, ctr.metadata.name, pod.metadata.namespace if pod else "?",
                             pod.metadata.name if pod else "?", ctr.metadata.attempt,
                             pb.ContainerState.Name(ctr.state)))
    return out


def resolve(candidates: list[Candidate], target: str, namespace: str = "") -> Candidate:
    """The one object `target` names; Refused naming the candidates if it is
    unknown or ambiguous."""
    kind = ""
    if target.startswith(("pod/", "container/")):
        kind, _, target = target.partition("/")
    if not target:
        raise Refused("name a pod or container: an ID, a unique ID prefix or a name")
    pool = [x for x in candidates if (not kind or x.kind == kind) and (not namespace or x.namespace == namespace)]
    exact = [x for x in pool if x.id == target]
    if exact:
        return exact[0]
    by_id = [x for x in pool if x.id.startswith(target)]
    by_name = [x for x in pool if x.name == target]
    # A restarted container keeps its name: its latest attempt is "the" container.
    latest: dict[tuple[str, str, str], Candidate] = {}
    for x in by_name:
        key = (x.kind, x.namespace, x.pod)
        if key not in latest or x.attempt > latest[key].attempt:
            latest[key] = x
    found = {x.id: x for x in [*by_id, *latest.values()]}
    if len(found) == 1:
        return next(iter(found.values()))
    scope = f" in namespace {namespace!r}" if namespace else ""
    if not found:
        raise Refused(f"no pod or container{scope} has the name or an ID starting with {target!r}; "
                      f"`crictl pods` and `crictl ps -a` list them")
    lines = "\n".join(x.line() for x in sorted(found.values(), key=lambda x: (x.kind, x.namespace, x.name)))
    raise Refused(f"{target!r} is ambiguous{scope}: it names {len(found)} objects:\n{lines}\n"
                  f"give a longer ID, --namespace, or pod/NAME or container/NAME")


def fetch(c: CRIClient, cand: Candidate) -> dict[str, Any]:
    if cand.kind == "pod":
        info = c.runtime.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=cand.id, verbose=True),
                                          timeout=c.timeout).info
    else:
        info = c.runtime.ContainerStatus(pb.ContainerStatusRequest(container_id=cand.id, verbose=True),
                                         timeout=c.timeout).info
    if "explain" not in info:
        raise Refused("the daemon's status has no explain report: it is a crispy from before `crispy explain`; "
                      "restart it with this version")
    report: dict[str, Any] = json.loads(info["explain"])
    return report


def path_origin(report: dict[str, Any], path: str) -> dict[str, Any]:
    if report["kind"] != "container":
        raise Refused("--path needs a container: a pod has no root filesystem of its own")
    if not report.get("pid") or "filesystem" not in report:
        raise Refused(f"container {report['id'][:13]} is {report.get('state')}: --path needs a running container")
    fs = report["filesystem"]
    try:
        found = origin(path, f"/proc/{report['pid']}/root", fs["mounts"], fs["root"].get("upper", ""),
                       fs["root"].get("layers") or [], report.get("image", ""))
    except PermissionError as e:
        raise Refused(f"--path reads the container's layers, which only root may: {e}") from None
    return found.to_dict()


def main(cfg: configmod.Config, args: argparse.Namespace) -> int:
    try:
        with CRIClient(cfg.socket, timeout=TIMEOUT_S) as c:
            cand = resolve(_candidates(c), args.target, args.namespace)
            report = fetch(c, cand)
        if "error" in report:
            raise Refused(f"the daemon could not explain {cand.kind} {cand.id[:13]}: {report['error']}")
        if args.path:
            found = path_origin(report, args.path)
            sys.stdout.write(json.dumps(found, indent=2) + "\n" if args.json else render_origin(found))
            return 0
        sys.stdout.write(json.dumps(report, indent=2, sort_keys=True) + "\n" if args.json else render(report))
        return 0
    except Refused as e:
        print(f"crispy explain: {e}", file=sys.stderr)
        return 1
    except CrispyError as e:
        print(f"crispy explain: {e.message}", file=sys.stderr)
        return 1
    except grpc.RpcError as e:
        code = e.code() if hasattr(e, "code") else None
        if code == grpc.StatusCode.UNAVAILABLE:
            print(f"crispy explain: no daemon answers on {cfg.socket}; start it (crispy serve) or point --socket "
                  f"at it", file=sys.stderr)
        else:
            print(f"crispy explain: {e.details() if hasattr(e, 'details') else e}", file=sys.stderr)
        return 1

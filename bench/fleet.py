"""N running pods of one `sleep` container each, as a loaded node has. The
memory, relist and stats scenarios share one fleet per runtime (starting
hundreds of pods three times over would dominate the run); the runner drops
it before any scenario that wants a quiet node."""

from __future__ import annotations

from dataclasses import dataclass, field

from bench import workload
from bench.target import Target


@dataclass
class Fleet:
    pod_ids: list[str] = field(default_factory=list)
    container_ids: list[str] = field(default_factory=list)


def ensure_fleet(target: Target, image: str, n: int) -> Fleet:
    """The target's fleet, grown to `n` pods. It is recorded on the target
    before it is filled, so a failure half-way still gets torn down."""
    if target.fleet is None:
        target.fleet = Fleet()
    fleet: Fleet = target.fleet
    c = target.client
    while len(fleet.pod_ids) < n:
        cfg = workload.pod_config(target.name, target.log_root, host_network=True)
        pod_id = c.run_pod_sandbox(cfg)
        fleet.pod_ids.append(pod_id)
        cid = c.create_container(pod_id, workload.sleeper_config(image), cfg)
        fleet.container_ids.append(cid)
        c.start_container(cid)
    return fleet


def drop_fleet(target: Target) -> None:
    fleet = target.fleet
    target.fleet = None
    if fleet is None or target.client is None:
        return
    for pod_id in fleet.pod_ids:
        workload.remove_pod_quietly(target.client, pod_id)

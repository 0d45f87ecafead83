"""N running pods of one `sleep` container each, as a loaded node has: the
memory, relist and stats scenarios measure against such a fleet."""

from __future__ import annotations

from dataclasses import dataclass, field

from bench import workload
from bench.target import Target


@dataclass
class Fleet:
    pod_ids: list[str] = field(default_factory=list)
    container_ids: list[str] = field(default_factory=list)


def start_fleet(target: Target, image: str, n: int, fleet: Fleet) -> None:
    """Fills `fleet` as it goes, so a failure half-way still tears down."""
    c = target.client
    for _ in range(n):
        cfg = workload.pod_config(target.name, target.log_root, host_network=True)
        pod_id = c.run_pod_sandbox(cfg)
        fleet.pod_ids.append(pod_id)
        cid = c.create_container(pod_id, workload.sleeper_config(image), cfg)
        fleet.container_ids.append(cid)
        c.start_container(cid)


def stop_fleet(target: Target, fleet: Fleet | None) -> None:
    if fleet is None:
        return
    for pod_id in fleet.pod_ids:
        workload.remove_pod_quietly(target.client, pod_id)

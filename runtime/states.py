"""The states a pod or container record can be in, and the one place that
says which change of state is legal.

Every lifecycle step changes a record's state through `set_pod_state` or
`set_container_state`, which check the move against the table below and
set the fields that go with it (a container's exit code, finish time and
reason). `RecordStore.move_pod` and `move_container` (runtime/store.py) do
that and save, in one step; the bare setters remain for the two places that
save later on purpose: StopPodSandbox marks its pod NOT_READY in memory at
its first step (its `stopping` file is the mark on disk) and saves at the
end, and the exit watcher saves only records still in the index.

The values are the strings records have always held on disk, and the enums
are `StrEnum`s so that they compare equal to them and are written as them.
"""

from __future__ import annotations

import enum
from typing import Protocol

from runtime.errors import Internal


class PodState(enum.StrEnum):
    READY = "ready"
    NOT_READY = "notready"


class ContainerState(enum.StrEnum):
    CREATED = "created"
    RUNNING = "running"
    EXITED = "exited"
    UNKNOWN = "unknown"


# From each state, the states a record may move to. A pod only ever goes
# down: a NOT_READY pod is stopped again (StopPodSandbox repeats) but never
# made ready; kubelet runs a new sandbox instead.
POD_TRANSITIONS: dict[PodState, frozenset[PodState]] = {
    PodState.READY: frozenset({PodState.NOT_READY}),
    PodState.NOT_READY: frozenset({PodState.NOT_READY}),
}

# A container that ends before its start is recorded goes from CREATED to
# EXITED directly; EXITED is final (a restart is a new container).
CONTAINER_TRANSITIONS: dict[ContainerState, frozenset[ContainerState]] = {
    ContainerState.CREATED: frozenset({ContainerState.RUNNING, ContainerState.EXITED}),
    ContainerState.RUNNING: frozenset({ContainerState.EXITED}),
    ContainerState.UNKNOWN: frozenset({ContainerState.EXITED}),
    ContainerState.EXITED: frozenset(),
}


class PodStateful(Protocol):
    """What a state change touches of a pod record (runtime/store.py's
    SandboxRecord), named here so that the states need no records."""
    id: str
    state: PodState


class ContainerStateful(Protocol):
    """What a state change touches of a container record."""
    id: str
    state: ContainerState
    exit_code: int
    started_at: int
    finished_at: int
    reason: str


def pod_can_move(current: PodState, new: PodState) -> bool:
    return new in POD_TRANSITIONS[current]


def container_can_move(current: ContainerState, new: ContainerState) -> bool:
    return new in CONTAINER_TRANSITIONS[current]


def set_pod_state(rec: PodStateful, new: PodState) -> None:
    """Callers check the state first (each step knows what it acts on), so
    an illegal move here is crispy's own bug, not the client's."""
    current = PodState(rec.state)
    if not pod_can_move(current, new):
        raise Internal(f"pod sandbox {rec.id[:13]} cannot go from {current.value} to {new.value}")
    rec.state = new


def set_container_state(ctr: ContainerStateful, new: ContainerState, *, at: int = 0,
                        exit_code: int | None = None, reason: str | None = None) -> None:
    """`at` (ns since the epoch): when the container started (RUNNING) or
    ended (EXITED). Moving to EXITED needs its exit code."""
    current = ContainerState(ctr.state)
    if not container_can_move(current, new):
        raise Internal(f"container {ctr.id[:13]} cannot go from {current.value} to {new.value}")
    if new is ContainerState.EXITED:
        if exit_code is None:
            raise Internal(f"container {ctr.id[:13]} exited without an exit code")
        ctr.exit_code, ctr.finished_at = exit_code, at
    elif new is ContainerState.RUNNING and at:
        ctr.started_at = at
    if reason is not None:
        ctr.reason = reason
    ctr.state = new

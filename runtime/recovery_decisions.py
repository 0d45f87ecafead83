"""What start-up does with a container crispy finds recorded, decided from
its record's state and what is observed on the node. Pure, so every case
is tested without root (tests/unit/test_recovery_decisions.py)."""

from __future__ import annotations

import enum

from runtime.states import ContainerState

# Runtime statuses of a container whose process was started.
_STARTED = frozenset({"running", "paused"})


class Recovery(enum.Enum):
    # Exited before crispy stopped: nothing to do.
    KEEP = "keep"
    # Its conmon still supervises it: watch for its exit again.
    WATCH = "watch"
    # Started just before crispy stopped, still recorded created: record it
    # running (now), then watch it.
    RECORD_RUNNING = "record running"
    # Created, never started and unsupervised (a create that a crash cut
    # short): deleted, so that kubelet's retried create makes a fresh one.
    DISCARD = "discard"
    # Its conmon is gone: record how it ended (killing it first if it runs).
    RECORD_EXIT = "record exit"


def needs_runtime_status(state: ContainerState, conmon_alive: bool, exit_recorded: bool) -> bool:
    """Whether `decide` looks at the runtime's status (asking costs a
    runtime process, so it is asked only then)."""
    return state == ContainerState.CREATED and (conmon_alive or not exit_recorded)


def decide(state: ContainerState, conmon_alive: bool, exit_recorded: bool, runtime_status: str | None) -> Recovery:
    """`exit_recorded`: conmon's exit file holds a code. `runtime_status`:
    what the OCI runtime reports ("created", "running", "paused",
    "stopped"), None when it does not know the container or was not asked."""
    if state == ContainerState.EXITED:
        return Recovery.KEEP
    if conmon_alive:
        if state == ContainerState.CREATED and runtime_status == "running":
            return Recovery.RECORD_RUNNING
        return Recovery.WATCH
    if state == ContainerState.CREATED and not exit_recorded and runtime_status not in _STARTED:
        return Recovery.DISCARD
    return Recovery.RECORD_EXIT

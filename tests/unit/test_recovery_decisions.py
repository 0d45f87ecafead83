"""runtime/recovery_decisions.py: what start-up does with each recorded
container, over every combination of its recorded state and what is found
on the node (conmon alive, exit file present, the runtime's status)."""

from __future__ import annotations

import itertools

import pytest

from runtime.recovery_decisions import Recovery, decide, needs_runtime_status
from runtime.states import ContainerState

C = ContainerState
STATUSES = [None, "created", "running", "paused", "stopped"]
CASES = list(itertools.product(ContainerState, [True, False], [True, False], STATUSES))


def expected(state: ContainerState, alive: bool, exit_recorded: bool, status: str | None) -> Recovery:
    """The rules as the README's crash-consistency section states them."""
    if state is C.EXITED:
        return Recovery.KEEP  # its end is on record already
    if alive:
        # Still supervised. Created but found running: the start landed
        # just before crispy stopped.
        return Recovery.RECORD_RUNNING if (state is C.CREATED and status == "running") else Recovery.WATCH
    # conmon is gone. A created container that never ran and left no exit
    # is deleted so that kubelet's retried create makes a fresh one.
    if state is C.CREATED and not exit_recorded and status not in ("running", "paused"):
        return Recovery.DISCARD
    return Recovery.RECORD_EXIT


@pytest.mark.parametrize("state,alive,exit_recorded,status", CASES)
def test_every_combination(state: ContainerState, alive: bool, exit_recorded: bool, status: str | None) -> None:
    assert decide(state, alive, exit_recorded, status) is expected(state, alive, exit_recorded, status)


@pytest.mark.parametrize("state,alive,exit_recorded", list(itertools.product(ContainerState, [True, False], [True, False])))
def test_the_runtime_is_asked_exactly_when_its_answer_matters(state: ContainerState, alive: bool,
                                                              exit_recorded: bool) -> None:
    answers = {decide(state, alive, exit_recorded, s) for s in STATUSES}
    # Not asked: the decision must not depend on the status (recovery then passes None).
    assert needs_runtime_status(state, alive, exit_recorded) is (len(answers) > 1)


def test_each_decision_is_reachable() -> None:
    assert {decide(*case) for case in CASES} == set(Recovery)


def test_some_cases_by_name() -> None:
    # A running container whose conmon died: killed and recorded exited.
    assert decide(C.RUNNING, False, False, None) is Recovery.RECORD_EXIT
    # A create cut short by a crash: discarded.
    assert decide(C.CREATED, False, False, "created") is Recovery.DISCARD
    # Started, then crispy died before recording it; conmon still there.
    assert decide(C.CREATED, True, False, "running") is Recovery.RECORD_RUNNING
    # Created, conmon gone, but conmon wrote an exit: recorded, not discarded.
    assert decide(C.CREATED, False, True, None) is Recovery.RECORD_EXIT
    # An unknown-state container with live conmon: watched again.
    assert decide(C.UNKNOWN, True, False, None) is Recovery.WATCH

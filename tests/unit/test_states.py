"""runtime/states.py: every move between states, legal and illegal, for
pods and containers, and the fields a container's move sets."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from runtime.errors import Internal
from runtime.states import (
    ContainerState,
    PodState,
    container_can_move,
    pod_can_move,
    set_container_state,
    set_pod_state,
)
from runtime.store import ContainerRecord, RecordStore, SandboxRecord

C, P = ContainerState, PodState

# Written out here, independently of the table in runtime/states.py.
LEGAL_CONTAINER = {(C.CREATED, C.RUNNING), (C.CREATED, C.EXITED), (C.RUNNING, C.EXITED), (C.UNKNOWN, C.EXITED)}
LEGAL_POD = {(P.READY, P.NOT_READY), (P.NOT_READY, P.NOT_READY)}


def _ctr(state: ContainerState) -> ContainerRecord:
    return ContainerRecord(id="c" * 64, sandbox_id="p" * 64, name="app", attempt=0, config={}, created_at=1,
                           state=state, reason="before", exit_code=0, started_at=5, finished_at=0)


def _pod(state: PodState) -> SandboxRecord:
    return SandboxRecord(id="p" * 64, name="web", namespace="default", uid="u", attempt=0, config={},
                         runtime_handler="", oci_runtime="/usr/bin/runc", created_at=1, state=state)


def test_the_values_are_the_strings_records_hold() -> None:
    assert [s.value for s in PodState] == ["ready", "notready"]
    assert [s.value for s in ContainerState] == ["created", "running", "exited", "unknown"]


@pytest.mark.parametrize("current,new", list(itertools.product(ContainerState, ContainerState)))
def test_every_container_move(current: ContainerState, new: ContainerState) -> None:
    ctr = _ctr(current)
    legal = (current, new) in LEGAL_CONTAINER
    assert container_can_move(current, new) is legal
    if not legal:
        with pytest.raises(Internal, match=f"cannot go from {current.value} to {new.value}"):
            set_container_state(ctr, new, at=99, exit_code=3, reason="x")
        # Refused moves leave the record as it was.
        assert (ctr.state, ctr.exit_code, ctr.finished_at, ctr.started_at, ctr.reason) == (current, 0, 0, 5, "before")
        return
    set_container_state(ctr, new, at=99, exit_code=3, reason="x")
    assert ctr.state is new and ctr.reason == "x"
    if new is C.EXITED:
        assert (ctr.exit_code, ctr.finished_at, ctr.started_at) == (3, 99, 5)
    else:
        assert (ctr.started_at, ctr.finished_at, ctr.exit_code) == (99, 0, 0)


@pytest.mark.parametrize("current,new", list(itertools.product(PodState, PodState)))
def test_every_pod_move(current: PodState, new: PodState) -> None:
    rec = _pod(current)
    legal = (current, new) in LEGAL_POD
    assert pod_can_move(current, new) is legal
    if legal:
        set_pod_state(rec, new)
        assert rec.state is new
    else:
        with pytest.raises(Internal, match=f"cannot go from {current.value} to {new.value}"):
            set_pod_state(rec, new)
        assert rec.state is current


def test_an_exit_needs_its_code() -> None:
    ctr = _ctr(C.RUNNING)
    with pytest.raises(Internal, match="without an exit code"):
        set_container_state(ctr, C.EXITED, at=1)
    assert ctr.state is C.RUNNING


def test_a_reason_is_kept_unless_given() -> None:
    ctr = _ctr(C.CREATED)
    set_container_state(ctr, C.EXITED, at=7, exit_code=128)
    assert (ctr.state, ctr.exit_code, ctr.finished_at, ctr.reason) == (C.EXITED, 128, 7, "before")


def test_records_hold_enums_even_when_built_from_strings() -> None:
    ctr = ContainerRecord(id="c", sandbox_id="p", name="a", attempt=0, config={}, created_at=0, state="running")  # type: ignore[arg-type]
    pod = SandboxRecord(id="p", name="w", namespace="d", uid="u", attempt=0, config={}, runtime_handler="",
                        oci_runtime="", created_at=0, state="notready")  # type: ignore[arg-type]
    assert ctr.state is C.RUNNING and pod.state is P.NOT_READY
    with pytest.raises(ValueError):
        ContainerRecord(id="c", sandbox_id="p", name="a", attempt=0, config={}, created_at=0, state="paused")  # type: ignore[arg-type]


def test_nothing_outside_states_assigns_a_state() -> None:
    """The one owner of transitions: no other module of runtime/ sets `.state`."""
    import re
    from pathlib import Path
    root = Path(__file__).resolve().parents[2] / "runtime"
    assigning = re.compile(r"\.state\s*=[^=]|\.state,[^\n]*=[^=]")
    offenders = [f"{p.relative_to(root)}:{n}" for p in root.rglob("*.py") if p.name not in ("states.py", "store.py")
                 for n, line in enumerate(p.read_text().splitlines(), 1) if assigning.search(line)]
    assert offenders == []


def test_a_move_through_the_store_is_checked_made_and_saved(tmp_path) -> None:
    store = RecordStore(tmp_path)
    store.prepare()
    ctr, pod = _ctr(C.CREATED), _pod(P.READY)

    async def moves() -> None:
        await store.move_container(ctr, C.RUNNING, at=7)
        await store.move_pod(pod, P.NOT_READY)
        with pytest.raises(Internal):
            await store.move_container(ctr, C.CREATED)
    asyncio.run(moves())
    pods, ctrs = store.load()
    assert [(c.state, c.started_at) for c in ctrs] == [(C.RUNNING, 7)]
    assert [p.state for p in pods] == [P.NOT_READY]
    # The refused move changed nothing, in memory or on disk.
    assert ctr.state == C.RUNNING

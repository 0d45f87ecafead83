"""Start-up recovery end to end, root-less: records written by one daemon's
services, the node changed while no daemon ran (a container exits, its
conmon dies, a create or a pod run is cut short), then a new daemon's
StartupRecovery over the same roots and the same (fake) runtime. The pure
decision table is tests/test_recovery_decisions.py; this is what each
decision does to the records, the runtime and the names."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from runtime.errors import AlreadyExists
from runtime.exits import MONITOR_LOST
from runtime.states import ContainerState, PodState
from runtime.store import RecordStore
from tests.unit.lifecycle_kit import Lifecycle, Node, run


def stored_state(life: Lifecycle, ctr_id: str) -> tuple[ContainerState, int, str]:
    """(state, exit code, reason) as the records on disk hold them."""
    _, ctrs = RecordStore(life.node.data_root).load()
    ctr = next(c for c in ctrs if c.id == ctr_id)
    return ctr.state, ctr.exit_code, ctr.reason


async def until(cond, what: str) -> None:
    for _ in range(10_000):
        if cond():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"never happened: {what}")


async def running_container(life: Lifecycle) -> tuple[str, str]:
    pod_id = await life.run_pod()
    ctr_id = await life.create(pod_id)
    await life.containers.start(ctr_id)
    return pod_id, ctr_id


def test_a_running_container_still_supervised_is_watched_again(tmp_path: Path) -> None:
    async def body(node: Node, life: Lifecycle) -> None:
        _, ctr_id = await running_container(life)
        life = await life.restart()
        ctr = life.ctr(ctr_id)
        assert ctr.state == ContainerState.RUNNING
        # The new daemon notices the exit without being asked.
        node.runtime.exit(ctr_id, 0)
        assert await life.exits.wait(ctr, 5.0)
        assert stored_state(life, ctr_id) == (ContainerState.EXITED, 0, "Completed")
    run(tmp_path, body)


def test_a_container_that_exited_while_crispy_was_down_is_exited_with_its_code(tmp_path: Path) -> None:
    async def body(node: Node, life: Lifecycle) -> None:
        _, ctr_id = await running_container(life)
        life.shut_down()
        node.runtime.exit(ctr_id, 7)  # conmon writes the exit and ends
        life = await Lifecycle(node).start()
        ctr = life.ctr(ctr_id)
        assert (ctr.state, ctr.exit_code, ctr.reason) == (ContainerState.EXITED, 7, "Error")
        assert stored_state(life, ctr_id) == (ContainerState.EXITED, 7, "Error")
    run(tmp_path, body)


def test_a_running_container_the_runtime_says_stopped_is_exited_monitor_lost(tmp_path: Path) -> None:
    async def body(node: Node, life: Lifecycle) -> None:
        _, ctr_id = await running_container(life)
        life.shut_down()
        # Container and conmon both gone, and no exit file written.
        node.runtime.containers[ctr_id].status = "stopped"
        node.runtime.lose_monitor(ctr_id)
        life = await Lifecycle(node).start()
        state, code, reason = stored_state(life, ctr_id)
        assert (state, code, reason) == (ContainerState.EXITED, 255, MONITOR_LOST)
        assert life.ctr(ctr_id).state == ContainerState.EXITED
    run(tmp_path, body)


def test_a_running_container_whose_monitor_died_is_killed_and_exited(tmp_path: Path) -> None:
    async def body(node: Node, life: Lifecycle) -> None:
        _, ctr_id = await running_container(life)
        life.shut_down()
        node.runtime.lose_monitor(ctr_id)  # the container itself runs on
        life = await Lifecycle(node).start()
        assert stored_state(life, ctr_id) == (ContainerState.EXITED, 137, MONITOR_LOST)
        assert node.runtime.containers[ctr_id].status == "stopped", "left running without a monitor"
    run(tmp_path, body)


def test_a_created_container_whose_create_was_cut_short_is_deleted_and_its_name_freed(tmp_path: Path) -> None:
    async def body(node: Node, life: Lifecycle) -> None:
        pod_id = await life.run_pod()
        ctr_id = await life.create(pod_id)
        life.shut_down()
        node.runtime.lose_monitor(ctr_id)  # runtime still says "created"
        life = await Lifecycle(node).start()
        assert ctr_id not in life.index.containers
        assert ctr_id not in node.runtime.containers
        disk = life.on_disk()
        assert disk["container records"] == set() and disk["bundles"] == set() and disk["layers"] == set()
        # kubelet's retried create makes a fresh container.
        again = await life.create(pod_id)
        assert again != ctr_id and life.ctr(again).state == ContainerState.CREATED
    run(tmp_path, body)


def test_a_container_started_just_before_the_crash_is_recorded_running(tmp_path: Path) -> None:
    async def body(node: Node, life: Lifecycle) -> None:
        pod_id = await life.run_pod()
        ctr_id = await life.create(pod_id)
        life.shut_down()
        # The runtime started it; the record still says created.
        await node.runtime.start(ctr_id)
        life = await Lifecycle(node).start()
        ctr = life.ctr(ctr_id)
        assert ctr.state == ContainerState.RUNNING and ctr.started_at > 0
        assert stored_state(life, ctr_id)[0] == ContainerState.RUNNING
        node.runtime.exit(ctr_id, 0)
        assert await life.exits.wait(ctr, 5.0) and ctr.state == ContainerState.EXITED
    run(tmp_path, body)


def test_a_created_container_still_supervised_stays_created_and_can_start(tmp_path: Path) -> None:
    async def body(node: Node, life: Lifecycle) -> None:
        pod_id = await life.run_pod()
        ctr_id = await life.create(pod_id)
        life = await life.restart()
        assert life.ctr(ctr_id).state == ContainerState.CREATED
        await life.containers.start(ctr_id)
        assert stored_state(life, ctr_id)[0] == ContainerState.RUNNING
    run(tmp_path, body)


def test_an_exited_container_is_kept_as_it_was(tmp_path: Path) -> None:
    async def body(node: Node, life: Lifecycle) -> None:
        _, ctr_id = await running_container(life)
        await life.containers.stop(ctr_id, 1)
        before = stored_state(life, ctr_id)
        finished = life.ctr(ctr_id).finished_at
        life = await life.restart()
        assert stored_state(life, ctr_id) == before and life.ctr(ctr_id).finished_at == finished
    run(tmp_path, body)


def test_names_survive_a_restart(tmp_path: Path) -> None:
    async def body(node: Node, life: Lifecycle) -> None:
        pod_id = await life.run_pod()
        ctr_id = await life.create(pod_id)
        life = await life.restart()
        assert await life.run_pod() == pod_id
        assert await life.create(pod_id) == ctr_id
        with pytest.raises(AlreadyExists):
            await life.run_pod(hostname="other")
        with pytest.raises(AlreadyExists):
            await life.create(pod_id, command=["/app", "other"])
        assert len(node.network.setups) == 1 and len(node.runtime.begun) == 1
        assert life.index.sandboxes[pod_id].state == PodState.READY
    run(tmp_path, body)


def test_a_pod_run_cut_short_during_network_setup_is_released_and_swept(tmp_path: Path) -> None:
    async def body(node: Node, life: Lifecycle) -> None:
        node.network.gate = asyncio.Event()
        # The daemon "dies" here: its run never gets past the CNI ADD.
        dead = asyncio.ensure_future(life.run_pod())
        await until(lambda: node.network.setups, "the run reaches the network")
        half_made = node.network.setups[0]
        try:
            life = await life.restart()
            assert node.network.teardowns == [half_made], "the half-made pod's network was not released"
            assert life.index.sandboxes == {} and life.on_disk()["pod dirs"] == set()
        finally:
            dead.cancel()
            await asyncio.gather(dead, return_exceptions=True)
    run(tmp_path, body)


def test_a_container_create_cut_short_before_its_record_is_swept(tmp_path: Path) -> None:
    async def body(node: Node, life: Lifecycle) -> None:
        pod_id = await life.run_pod()
        node.runtime.create_gate = asyncio.Event()
        dead = asyncio.ensure_future(life.create(pod_id))
        await until(lambda: node.runtime.begun, "the create reaches the runtime")
        half_made = node.runtime.begun[0]
        try:
            assert life.on_disk()["bundles"] == {half_made}
            life = await life.restart()
            assert life.on_disk()["bundles"] == set() and life.index.containers == {}
        finally:
            dead.cancel()
            await asyncio.gather(dead, return_exceptions=True)
    run(tmp_path, body)

"""State transitions and stop/remove idempotence through the lifecycle
services, root-less (tests/unit/lifecycle_kit.py): created -> running ->
exited with what the monitor recorded, illegal moves refused as FAILED_PRECONDITION,
stop and remove safe to repeat and OK for unknown ids (CRI), a stopped pod
taking its running containers down with it."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime.errors import ErrorKind, FailedPrecondition
from runtime.exits import MONITOR_LOST
from runtime.states import ContainerState, PodState
from runtime.store import ContainerRecord, RecordStore, SandboxRecord
from tests.unit.lifecycle_kit import Lifecycle, Node, run

UNKNOWN = "0123456789abcdef" * 4


def stored(life: Lifecycle, record_id: str) -> ContainerRecord | SandboxRecord:
    """The record as a restarted crispy would read it."""
    pods, ctrs = RecordStore(life.node.data_root).load()
    records: list[ContainerRecord | SandboxRecord] = [*pods, *ctrs]
    return next(r for r in records if r.id == record_id)


# ---- transitions --------------------------------------------------------------


@pytest.mark.parametrize("code,reason", [(0, "Completed"), (3, "Error")])
def test_container_goes_created_running_exited_with_the_monitors_exit_code(tmp_path: Path, code: int, reason: str) -> None:
    async def body(node: Node, life: Lifecycle) -> None:
        pod_id = await life.run_pod()
        ctr_id = await life.create(pod_id)
        ctr = life.ctr(ctr_id)
        assert ctr.state == ContainerState.CREATED and stored(life, ctr_id).state == ContainerState.CREATED
        await life.containers.start(ctr_id)
        assert ctr.state == ContainerState.RUNNING and ctr.started_at > 0
        assert stored(life, ctr_id).state == ContainerState.RUNNING
        node.runtime.exit(ctr_id, code)
        assert await life.exits.wait(ctr, 5.0)
        assert (ctr.state, ctr.exit_code, ctr.reason) == (ContainerState.EXITED, code, reason)
        assert ctr.finished_at >= ctr.started_at
        on_disk = stored(life, ctr_id)
        assert (on_disk.state, on_disk.exit_code) == (ContainerState.EXITED, code)
    run(tmp_path, body)


def test_starting_a_running_or_exited_container_is_refused(tmp_path: Path) -> None:
    async def body(node: Node, life: Lifecycle) -> None:
        pod_id = await life.run_pod()
        ctr_id = await life.create(pod_id)
        await life.containers.start(ctr_id)
        with pytest.raises(FailedPrecondition) as running:
            await life.containers.start(ctr_id)
        assert running.value.kind is ErrorKind.FAILED_PRECONDITION and "running" in running.value.message
        await life.containers.stop(ctr_id, 1)
        with pytest.raises(FailedPrecondition) as exited:
            await life.containers.start(ctr_id)
        assert "exited" in exited.value.message
        assert life.ctr(ctr_id).state == ContainerState.EXITED
    run(tmp_path, body)


def test_calls_that_need_a_running_container_are_refused_otherwise(tmp_path: Path) -> None:
    async def body(node: Node, life: Lifecycle) -> None:
        pod_id = await life.run_pod()
        ctr_id = await life.create(pod_id)
        for call in (lambda: life.containers.exec_sync(ctr_id, ["true"], 1.0),
                     lambda: life.containers.reopen_log(ctr_id)):
            with pytest.raises(FailedPrecondition):
                await call()
        assert life.ctr(ctr_id).state == ContainerState.CREATED
    run(tmp_path, body)


def test_start_that_the_runtime_refuses_leaves_the_container_exited_with_start_error(tmp_path: Path) -> None:
    async def body(node: Node, life: Lifecycle) -> None:
        pod_id = await life.run_pod()
        ctr_id = await life.create(pod_id)
        node.runtime.fail_start = "executable file not found"
        with pytest.raises(Exception) as failed:
            await life.containers.start(ctr_id)
        assert getattr(failed.value, "kind", None) is ErrorKind.INTERNAL
        ctr = life.ctr(ctr_id)
        assert (ctr.state, ctr.reason, ctr.exit_code) == (ContainerState.EXITED, "StartError", 128)
        assert "executable file not found" in ctr.message
        assert stored(life, ctr_id).state == ContainerState.EXITED
    run(tmp_path, body)


def test_a_container_whose_monitor_dies_is_killed_and_reported_monitor_lost(tmp_path: Path) -> None:
    async def body(node: Node, life: Lifecycle) -> None:
        pod_id = await life.run_pod()
        ctr_id = await life.create(pod_id)
        await life.containers.start(ctr_id)
        node.runtime.lose_monitor(ctr_id)
        ctr = life.ctr(ctr_id)
        assert await life.exits.wait(ctr, 5.0)
        assert (ctr.state, ctr.reason, ctr.exit_code) == (ContainerState.EXITED, MONITOR_LOST, 137)
        assert node.runtime.containers[ctr_id].status == "stopped", "the orphaned container was left running"
    run(tmp_path, body)


def test_no_container_is_created_in_a_stopped_pod_nor_started_there(tmp_path: Path) -> None:
    async def body(node: Node, life: Lifecycle) -> None:
        pod_id = await life.run_pod()
        ctr_id = await life.create(pod_id)
        await life.pods.stop(pod_id)
        assert life.index.sandboxes[pod_id].state == PodState.NOT_READY
        with pytest.raises(FailedPrecondition):
            await life.create(pod_id, name="late")
        with pytest.raises(FailedPrecondition):
            await life.containers.start(ctr_id)
        assert len(node.runtime.begun) == 1
    run(tmp_path, body)


# ---- stop / remove idempotence --------------------------------------------------


def test_container_stop_and_remove_are_idempotent(tmp_path: Path) -> None:
    async def body(node: Node, life: Lifecycle) -> None:
        pod_id = await life.run_pod()
        ctr_id = await life.create(pod_id)
        await life.containers.start(ctr_id)
        await life.containers.stop(ctr_id, 1)
        ctr = life.ctr(ctr_id)
        first = (ctr.state, ctr.exit_code, ctr.finished_at)
        assert first[:2] == (ContainerState.EXITED, 128 + 15)
        await life.containers.stop(ctr_id, 1)
        assert (ctr.state, ctr.exit_code, ctr.finished_at) == first, "a second stop changed the exit"
        await life.containers.remove(ctr_id)
        await life.containers.remove(ctr_id)
        assert ctr_id not in life.index.containers and ctr_id not in node.runtime.containers
        assert life.on_disk()["container records"] == set() and life.on_disk()["bundles"] == set()
        # Unknown ids: stopped and removed already, as far as CRI is concerned.
        await life.containers.stop(UNKNOWN, 1)
        await life.containers.remove(UNKNOWN)
    run(tmp_path, body)


def test_removing_a_running_container_stops_it_first(tmp_path: Path) -> None:
    async def body(node: Node, life: Lifecycle) -> None:
        pod_id = await life.run_pod()
        ctr_id = await life.create(pod_id)
        await life.containers.start(ctr_id)
        await life.containers.remove(ctr_id)
        assert node.runtime.containers == {}
        monitor = node.runtime.monitor_of(ctr_id)
        assert monitor is not None and monitor.gone.is_set()
        assert node.rootfs.mounted == set()
    run(tmp_path, body)


def test_stopping_a_pod_stops_its_running_containers_and_releases_the_network(tmp_path: Path) -> None:
    async def body(node: Node, life: Lifecycle) -> None:
        pod_id = await life.run_pod()
        running = await life.create(pod_id, name="a")
        created = await life.create(pod_id, name="b")
        await life.containers.start(running)
        await life.pods.stop(pod_id)
        for ctr_id in (running, created):
            assert life.ctr(ctr_id).state == ContainerState.EXITED
            assert node.runtime.containers[ctr_id].status == "stopped"
        assert node.network.teardowns == [pod_id] and node.network.attached == set()
        pod = life.index.sandboxes[pod_id]
        assert pod.state == PodState.NOT_READY and pod.network_status is None
        assert stored(life, pod_id).state == PodState.NOT_READY
        # Again: nothing more to do, the network is not released twice.
        await life.pods.stop(pod_id)
        assert node.network.teardowns == [pod_id]
    run(tmp_path, body)


def test_pod_remove_is_idempotent_and_takes_its_containers_and_names_with_it(tmp_path: Path) -> None:
    async def body(node: Node, life: Lifecycle) -> None:
        pod_id = await life.run_pod()
        ctr_id = await life.create(pod_id)
        await life.containers.start(ctr_id)
        # Without a stop first: remove stops what runs.
        await life.pods.remove(pod_id)
        await life.pods.remove(pod_id)
        await life.pods.stop(pod_id)
        assert life.index.sandboxes == {} and life.index.containers == {}
        assert node.runtime.containers == {} and node.network.attached == set()
        assert node.network.teardowns == [pod_id]
        assert all(not v for v in life.on_disk().values()), life.on_disk()
        await life.pods.remove(UNKNOWN)
        await life.pods.stop(UNKNOWN)
        # Both names are free: the same requests make new objects.
        again = await life.run_pod()
        assert again != pod_id and await life.create(again) != ctr_id
    run(tmp_path, body)

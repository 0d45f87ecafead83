"""Name reservations and kubelet-style retries through PodService and
ContainerService, root-less (tests/unit/lifecycle_kit.py): a retry of the
same request joins the work in flight or gets its result, a different
request for the same name is refused as ALREADY_EXISTS, a name is free
again after its object is removed, and a create that failed half-way
leaves nothing behind and can be retried."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from runtime.errors import AlreadyExists, ErrorKind, Internal, InvalidArgument
from runtime.states import ContainerState, PodState
from tests.unit.lifecycle_kit import (
    Lifecycle,
    Node,
    container_request,
    pod_request,
    run,
)

NOTHING: dict[str, set[str]] = {"pod records": set(), "container records": set(), "pod dirs": set(), "bundles": set(), "layers": set()}


async def until(cond, what: str) -> None:
    """Lets other tasks run until `cond()` holds (no wall-clock waits)."""
    for _ in range(10_000):
        if cond():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"never happened: {what}")


async def settle() -> None:
    """Lets every runnable task run as far as it can."""
    for _ in range(50):
        await asyncio.sleep(0)


# ---- pods ---------------------------------------------------------------------


def test_pod_retry_while_the_first_run_is_in_flight_gets_the_same_id(tmp_path: Path) -> None:
    async def body(node: Node, life: Lifecycle) -> None:
        node.network.gate = asyncio.Event()
        first = asyncio.ensure_future(life.run_pod())
        await until(lambda: node.network.setups, "the first run reaches the network")
        retry = asyncio.ensure_future(life.run_pod())
        await settle()
        assert not retry.done()
        node.network.gate.set()
        ids = await asyncio.gather(first, retry)
        assert ids[0] == ids[1]
        assert len(node.network.setups) == 1, "the retry made a second pod"
        assert set(life.index.sandboxes) == {ids[0]}
    run(tmp_path, body)


def test_pod_retry_after_the_caller_timed_out_gets_the_same_id(tmp_path: Path) -> None:
    async def body(node: Node, life: Lifecycle) -> None:
        node.network.gate = asyncio.Event()
        caller = asyncio.ensure_future(life.run_pod())
        await until(lambda: node.network.setups, "the run reaches the network")
        caller.cancel()  # kubelet's deadline passed; its RPC is cancelled
        with pytest.raises(asyncio.CancelledError):
            await caller
        node.network.gate.set()
        pod_id = await life.run_pod()
        assert len(node.network.setups) == 1
        assert life.index.sandboxes[pod_id].state == PodState.READY
        assert life.on_disk()["pod records"] == {pod_id}
    run(tmp_path, body)


def test_pod_with_the_same_name_but_another_request_is_already_exists(tmp_path: Path) -> None:
    async def body(node: Node, life: Lifecycle) -> None:
        node.network.gate = asyncio.Event()
        first = asyncio.ensure_future(life.run_pod())
        await until(lambda: node.network.setups, "the first run reaches the network")
        # In flight, and once done: another config under the same metadata clashes.
        with pytest.raises(AlreadyExists) as in_flight:
            await life.run_pod(hostname="other")
        assert in_flight.value.kind is ErrorKind.ALREADY_EXISTS
        assert "still in progress" in in_flight.value.message
        node.network.gate.set()
        pod_id = await first
        with pytest.raises(AlreadyExists) as done:
            await life.run_pod(hostname="other")
        assert pod_id[:13] in done.value.message and "new attempt" in done.value.message
        # A new attempt number is a new name.
        other = await life.run_pod(attempt=1, hostname="other")
        assert other != pod_id
        assert len(node.network.setups) == 2
    run(tmp_path, body)


def test_pod_name_is_free_again_after_remove(tmp_path: Path) -> None:
    async def body(node: Node, life: Lifecycle) -> None:
        first = await life.run_pod()
        await life.pods.stop(first)
        # Stopped but not removed: the name is still taken.
        assert await life.run_pod() == first
        await life.pods.remove(first)
        second = await life.run_pod()
        assert second != first
        assert set(life.index.sandboxes) == {second}
    run(tmp_path, body)


@pytest.mark.parametrize("fail", ["network", "namespaces"])
def test_pod_run_that_failed_half_way_leaves_nothing_and_a_retry_succeeds(tmp_path: Path, fail: str) -> None:
    async def body(node: Node, life: Lifecycle) -> None:
        if fail == "network":
            node.network.fail_setup = "plugin bridge failed"
        else:
            node.namespaces.fail = "unshare: no space left"
        with pytest.raises(Internal):
            await life.run_pod()
        assert life.index.sandboxes == {}
        assert life.on_disk() == NOTHING
        assert node.network.attached == set()
        node.network.fail_setup = node.namespaces.fail = None
        pod_id = await life.run_pod()
        assert life.index.sandboxes[pod_id].state == PodState.READY
        assert life.on_disk()["pod dirs"] == {pod_id}
    run(tmp_path, body)


def test_pod_with_a_sysctl_of_the_node_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    async def body(node: Node, life: Lifecycle) -> None:
        with pytest.raises(InvalidArgument) as refused:
            await life.run_pod(sysctls={"kernel.panic": "1"})
        assert "kernel.panic" in refused.value.message
        assert life.on_disk() == NOTHING
        assert node.network.setups == []
        assert await life.run_pod()  # the name was released
    run(tmp_path, body)


# ---- containers -----------------------------------------------------------------


def test_container_retry_while_the_first_create_is_in_flight_gets_the_same_id(tmp_path: Path) -> None:
    async def body(node: Node, life: Lifecycle) -> None:
        pod_id = await life.run_pod()
        node.runtime.create_gate = asyncio.Event()
        first = asyncio.ensure_future(life.create(pod_id))
        await until(lambda: node.runtime.begun, "the create reaches the runtime")
        retry = asyncio.ensure_future(life.create(pod_id))
        await settle()
        assert not retry.done()
        node.runtime.create_gate.set()
        ids = await asyncio.gather(first, retry)
        assert ids[0] == ids[1]
        assert len(node.runtime.begun) == 1 and list(node.runtime.containers) == [ids[0]]
    run(tmp_path, body)


def test_container_retry_after_the_caller_timed_out_gets_the_same_id(tmp_path: Path) -> None:
    async def body(node: Node, life: Lifecycle) -> None:
        pod_id = await life.run_pod()
        node.runtime.create_gate = asyncio.Event()
        caller = asyncio.ensure_future(life.create(pod_id))
        await until(lambda: node.runtime.begun, "the create reaches the runtime")
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        node.runtime.create_gate.set()
        ctr_id = await life.create(pod_id)
        assert node.runtime.begun == [ctr_id]
        assert life.ctr(ctr_id).state == ContainerState.CREATED
        assert life.on_disk()["container records"] == {ctr_id}
    run(tmp_path, body)


def test_container_with_the_same_name_but_another_config_is_already_exists(tmp_path: Path) -> None:
    async def body(node: Node, life: Lifecycle) -> None:
        pod_id = await life.run_pod()
        ctr_id = await life.create(pod_id)
        with pytest.raises(AlreadyExists) as clash:
            await life.create(pod_id, command=["/app", "other"])
        assert clash.value.kind is ErrorKind.ALREADY_EXISTS and ctr_id[:13] in clash.value.message
        assert await life.create(pod_id) == ctr_id  # the same request is a retry
        assert await life.create(pod_id, attempt=1) != ctr_id
        assert len(node.runtime.begun) == 2
    run(tmp_path, body)


def test_container_name_is_free_again_after_remove(tmp_path: Path) -> None:
    async def body(node: Node, life: Lifecycle) -> None:
        pod_id = await life.run_pod()
        first = await life.create(pod_id)
        await life.containers.remove(first)
        second = await life.create(pod_id)
        assert second != first
        assert set(life.index.containers) == {second}
        assert list(node.runtime.containers) == [second]
    run(tmp_path, body)


@pytest.mark.parametrize("fail", ["runtime create", "rootfs mount", "user lookup"])
def test_container_create_that_failed_half_way_leaves_nothing_and_a_retry_succeeds(tmp_path: Path, fail: str) -> None:
    async def body(node: Node, life: Lifecycle) -> None:
        pod_id = await life.run_pod()
        user = ""
        if fail == "runtime create":
            node.runtime.fail_create = "exec format error"
        elif fail == "rootfs mount":
            node.rootfs.fail = "no such device"
        else:
            user = "ghost"  # not in the image's /etc/passwd
        with pytest.raises((Internal, InvalidArgument, OSError)):
            await life.create(pod_id, user=user)
        begun = node.runtime.begun[0]
        # conmon was started and held; the undo killed it.
        assert node.runtime.aborted == [begun]
        assert life.index.containers == {}
        assert {k: v for k, v in life.on_disk().items() if k != "pod dirs" and k != "pod records"} == {
            "container records": set(), "bundles": set(), "layers": set()}
        assert node.rootfs.mounted == set()
        assert node.runtime.containers == {}
        node.runtime.fail_create = node.rootfs.fail = None
        ctr_id = await life.create(pod_id)
        assert ctr_id != begun and life.ctr(ctr_id).state == ContainerState.CREATED
    run(tmp_path, body)


def test_container_request_naming_no_pod_is_refused(tmp_path: Path) -> None:
    async def body(node: Node, life: Lifecycle) -> None:
        with pytest.raises(InvalidArgument):
            await life.containers.create(container_request(""))
        req = container_request("f" * 64)
        with pytest.raises(Exception) as missing:
            await life.containers.create(req)
        assert getattr(missing.value, "kind", None) is ErrorKind.NOT_FOUND
        assert node.runtime.begun == []
    run(tmp_path, body)


def test_pod_request_without_metadata_is_refused(tmp_path: Path) -> None:
    async def body(node: Node, life: Lifecycle) -> None:
        req = pod_request()
        req.config.metadata.uid = ""
        with pytest.raises(InvalidArgument):
            await life.pods.run(req)
        assert life.on_disk() == NOTHING
    run(tmp_path, body)

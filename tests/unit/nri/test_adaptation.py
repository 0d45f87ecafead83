"""The adaptation's fan-out with fake plugin sessions: order, fatal and
non-fatal failures, Synchronize holding events back and seeing objects
mid-creation, one StopContainer per container."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from runtime.index import RecordIndex
from runtime.nri.adaptation import Nri, PluginRefused
from runtime.nri.plugin import PluginError, PluginGone
from runtime.nri.proto import api_pb2 as api
from runtime.states import ContainerState
from runtime.store import ContainerRecord, RecordStore, SandboxRecord


class FakeSession:
    def __init__(self, name: str, index: str = "10", *, fail: set[str] | None = None, gone: set[str] | None = None,
                 adjust: api.ContainerAdjustment | None = None, calls: list[tuple[str, str]] | None = None,
                 evict: list[str] | None = None) -> None:
        self.name, self.index = name, index
        self.fail, self.gone = fail or set(), gone or set()
        self.adjust = adjust
        self.evict = [api.ContainerEviction(container_id=c, reason="test") for c in evict or []]
        self.calls = calls if calls is not None else []
        self.closed = False
        self.synced: tuple[list[str], list[str]] | None = None
        self.sync_gate: asyncio.Event | None = None

    @property
    def full_name(self) -> str:
        return f"{self.index}-{self.name}"

    @property
    def order_key(self) -> tuple[str, str]:
        return (self.index, self.name)

    def subscribes(self, event: int) -> bool:
        return True

    async def _call(self, method: str) -> None:
        self.calls.append((self.name, method))
        if method in self.gone:
            self.closed = True
            raise PluginGone(self.full_name, "timed out")
        if method in self.fail:
            raise PluginError(self.full_name, f"{method} failed: induced")

    async def synchronize(self, pods: list[api.PodSandbox], ctrs: list[api.Container]) -> list[api.ContainerUpdate]:
        self.synced = ([p.id for p in pods], [c.id for c in ctrs])
        if self.sync_gate is not None:
            await self.sync_gate.wait()
        return []

    async def run_pod_sandbox(self, pod: api.PodSandbox) -> None:
        await self._call("RunPodSandbox")

    async def stop_pod_sandbox(self, pod: api.PodSandbox) -> None:
        await self._call("StopPodSandbox")

    async def remove_pod_sandbox(self, pod: api.PodSandbox) -> None:
        await self._call("RemovePodSandbox")

    async def create_container(self, pod: api.PodSandbox, ctr: api.Container) -> api.CreateContainerResponse:
        await self._call("CreateContainer")
        self.shown = ctr
        return api.CreateContainerResponse(adjust=self.adjust, evict=self.evict)

    async def post_create_container(self, pod: api.PodSandbox, ctr: api.Container) -> None:
        await self._call("PostCreateContainer")

    async def stop_container(self, pod: api.PodSandbox, ctr: api.Container) -> api.StopContainerResponse:
        await self._call("StopContainer")
        return api.StopContainerResponse()

    async def remove_container(self, pod: api.PodSandbox, ctr: api.Container) -> None:
        await self._call("RemoveContainer")

    async def validate_container_adjustment(self, req: Any) -> api.ValidateContainerAdjustmentResponse:
        await self._call("ValidateContainerAdjustment")
        return api.ValidateContainerAdjustmentResponse()


def _nri(tmp_path: Path) -> tuple[Nri, RecordIndex]:
    index = RecordIndex()
    return Nri(enabled=True, index=index, store=RecordStore(tmp_path), cgroups=None), index


def _pod(pid: str = "p1") -> SandboxRecord:
    return SandboxRecord(id=pid, name="pod", namespace="ns", uid="u", attempt=0, config={}, runtime_handler="",
                         oci_runtime="runc", created_at=1)


def _ctr(cid: str = "c1", pod: str = "p1") -> ContainerRecord:
    return ContainerRecord(id=cid, sandbox_id=pod, name="ctr", attempt=0, config={}, created_at=1)


async def _join(nri: Nri, *sessions: FakeSession) -> None:
    for s in sessions:
        await nri.synchronize(s)  # type: ignore[arg-type]


def test_events_go_to_plugins_in_index_order(tmp_path: Path) -> None:
    async def main() -> None:
        nri, _ = _nri(tmp_path)
        calls: list[tuple[str, str]] = []
        await _join(nri, FakeSession("late", "20", calls=calls), FakeSession("early", "05", calls=calls))
        await nri.run_pod(_pod())
        assert calls == [("early", "RunPodSandbox"), ("late", "RunPodSandbox")]
    asyncio.run(main())


def test_plugin_error_fails_the_step_but_a_gone_plugin_does_not(tmp_path: Path) -> None:
    async def main() -> None:
        nri, _ = _nri(tmp_path)
        gone = FakeSession("gone", "01", gone={"RunPodSandbox"})
        await _join(nri, gone, FakeSession("failing", "10", fail={"RunPodSandbox", "StopPodSandbox"}))
        with pytest.raises(PluginRefused) as e:
            await nri.run_pod(_pod())
        assert "10-failing" in e.value.message and "induced" in e.value.message
        await nri.stop_pod(_pod())  # a notification's failure is only logged
        nri.plugin_gone(gone, "timed out")  # type: ignore[arg-type]
        assert [p["name"] for p in nri.status()["plugins"]] == ["failing"]
    asyncio.run(main())


def test_adjustment_is_applied_to_the_spec(tmp_path: Path) -> None:
    async def main() -> None:
        nri, _ = _nri(tmp_path)
        await _join(nri, FakeSession("env", adjust=api.ContainerAdjustment(env=[api.KeyValue(key="A", value="1")])))
        later = FakeSession("later", "20", adjust=api.ContainerAdjustment(env=[api.KeyValue(key="B", value="2")]))
        await _join(nri, later)
        spec: dict[str, Any] = {"process": {"env": ["PATH=/bin"]}}
        await nri.create_container(_pod(), _ctr(), spec)
        assert spec["process"]["env"] == ["PATH=/bin", "A=1", "B=2"]
        # The later plugin is shown the container as the earlier one left it.
        assert list(later.shown.env) == ["PATH=/bin", "A=1"]
    asyncio.run(main())


def test_synchronize_holds_events_back_and_sees_objects_being_created(tmp_path: Path) -> None:
    async def main() -> None:
        nri, index = _nri(tmp_path)
        first = FakeSession("first", "01")
        await _join(nri, first)
        pod = _pod()
        index.sandboxes[pod.id] = pod
        # Shown to the first plugin, not yet in the index.
        await nri.create_container(pod, _ctr("creating"), {})
        late = FakeSession("late", "10")
        late.sync_gate = asyncio.Event()
        joining = asyncio.ensure_future(nri.synchronize(late))  # type: ignore[arg-type]
        await asyncio.sleep(0.01)
        assert late.synced == (["p1"], ["creating"])
        running = asyncio.ensure_future(nri.run_pod(_pod("p2")))
        await asyncio.sleep(0.01)
        assert not running.done() and late.calls == []  # held back while synchronizing
        late.sync_gate.set()
        await joining
        await running
        assert late.calls == [("late", "RunPodSandbox")]
    asyncio.run(main())


def test_a_container_is_reported_stopped_once(tmp_path: Path) -> None:
    async def main() -> None:
        nri, index = _nri(tmp_path)
        s = FakeSession("s")
        await _join(nri, s)
        pod, ctr = _pod(), _ctr()
        index.sandboxes[pod.id], index.containers[ctr.id] = pod, ctr
        ctr.state = ContainerState.EXITED
        nri.container_exited(ctr)  # its own exit ...
        await nri.stop_container(pod, ctr)  # ... and StopContainer
        await nri.remove_container(pod, ctr)
        assert s.calls == [("s", "StopContainer"), ("s", "RemoveContainer")]
    asyncio.run(main())


def test_without_plugins_nothing_is_called(tmp_path: Path) -> None:
    async def main() -> None:
        nri, _ = _nri(tmp_path)
        spec: dict[str, Any] = {}
        assert not nri.active
        await nri.run_pod(_pod())
        await nri.create_container(_pod(), _ctr(), spec)
        await nri.stop_container(_pod(), _ctr())
        assert spec == {}
    asyncio.run(main())


def test_a_refused_create_is_undone_for_the_plugins_that_saw_it(tmp_path: Path) -> None:
    async def main() -> None:
        nri, _ = _nri(tmp_path)
        calls: list[tuple[str, str]] = []
        await _join(nri, FakeSession("ok", "01", calls=calls), FakeSession("no", "02", fail={"CreateContainer"},
                                                                           calls=calls))
        pod, ctr = _pod(), _ctr()
        with pytest.raises(PluginRefused):
            await nri.create_container(pod, ctr, {})
        await nri.undo_create_container(pod, ctr)  # the service's undo
        assert calls == [("ok", "CreateContainer"), ("no", "CreateContainer"), ("ok", "StopContainer"),
                         ("no", "StopContainer"), ("ok", "RemoveContainer"), ("no", "RemoveContainer")]
        await nri.undo_create_container(pod, ctr)  # once only
        assert len(calls) == 6
    asyncio.run(main())


class FakeStopper:
    def __init__(self, fail: set[str] | None = None) -> None:
        self.stopped: list[tuple[str, float]] = []
        self.fail = fail or set()

    async def stop_record(self, ctr: ContainerRecord, timeout: float, skip_futile: bool = False) -> None:
        if ctr.id in self.fail:
            raise OSError("induced")
        self.stopped.append((ctr.id, timeout))


def test_evictions_with_a_create_stop_at_once_and_a_failed_one_does_not_fail_it(tmp_path: Path) -> None:
    async def main() -> None:
        nri, index = _nri(tmp_path)
        stopper = FakeStopper(fail={"stuck"})
        nri.evict_with(stopper)
        pod = _pod()
        index.sandboxes[pod.id] = pod
        for cid in ("victim", "stuck"):
            index.containers[cid] = _ctr(cid)
        await _join(nri, FakeSession("evictor", evict=["victim", "stuck", "absent"]))
        await nri.create_container(pod, _ctr("new"), {})
        assert stopper.stopped == [("victim", 0)]
        # The container being created cannot be evicted by its own creation.
        with pytest.raises(PluginRefused, match="10-self.*evict"):
            await _join(nri, FakeSession("self", evict=["new2"]))
            await nri.create_container(pod, _ctr("new2"), {})
    asyncio.run(main())


def test_unsolicited_evictions_are_carried_out_after_the_answer(tmp_path: Path) -> None:
    async def main() -> None:
        nri, index = _nri(tmp_path)
        stopper = FakeStopper()
        nri.evict_with(stopper)
        index.containers["victim"] = _ctr("victim")
        s = FakeSession("evictor")
        await _join(nri, s)
        reply = await nri.update_containers(s, api.UpdateContainersRequest(  # type: ignore[arg-type]
            evict=[api.ContainerEviction(container_id="victim")]))
        assert list(reply.failed) == [] and stopper.stopped == []
        for _ in range(10):
            await asyncio.sleep(0)
        assert stopper.stopped == [("victim", 0)]
    asyncio.run(main())

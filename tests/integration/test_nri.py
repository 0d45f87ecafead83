"""NRI against the real daemon: a Python plugin (tests/nri_plugin.py) on
crispy's NRI socket adjusts containers, fails and hangs, and is told what
exists after a restart. The plugin runs on an event loop of its own in a
thread; the test drives crispy over CRI from the main thread."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import grpc
import pytest

from cri.proto import api_pb2 as pb
from runtime import host
from runtime.nri.proto import api_pb2 as api
from tests.daemon_proc import tmp_base
from tests.nri_plugin import NriTestPlugin
from tests.pods_fixtures import *  # noqa: F403
from tests.pods_fixtures import (
    container_config,
    load_image,
    pod_config,
    remove_all_pods,
    start_pod_daemon,
    stop_pod_daemon,
    wait_state,
)

pytestmark = pytest.mark.integration

LAYOUT = host.detect_cgroup_layout()
MiB = 1024 * 1024
# Order of requests across every plugin of a test: (plugin name, method).
ORDER: list[tuple[str, str]] = []


class OrderedPlugin(NriTestPlugin):
    async def _serve(self, method: str, payload: bytes) -> bytes:
        ORDER.append((self.name, method))
        return await super()._serve(method, payload)


class PluginLoop:
    """An event loop in a thread, for plugins."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.plugins: list[NriTestPlugin] = []

    def run(self, coro: Any, timeout: float = 15.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def connect(self, d: Any, name: str, index: str, events: tuple[int, ...] = (), **kw: Any) -> NriTestPlugin:
        async def make() -> NriTestPlugin:
            p = OrderedPlugin(name, index, events, **kw)
            await p.connect(nri_socket(d))
            await asyncio.wait_for(p.synchronized.wait(), 10)
            return p
        plugin = self.run(make())
        self.plugins.append(plugin)
        # Synchronize answered; the runtime adds the plugin right after.
        time.sleep(0.2)
        return plugin

    def close(self) -> None:
        for p in self.plugins:
            try:
                self.run(p.close(), 5)
            except Exception:  # noqa: BLE001 - closing what may be gone
                pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def nri_socket(d: Any) -> str:
    return str(d.base / "nri" / "nri.sock")


@pytest.fixture(scope="module")
def daemon() -> Iterator[Any]:
    d = start_pod_daemon(tmp_base(), ["--nri-request-timeout", "1.5"])
    load_image(d)
    yield d
    stop_pod_daemon(d)


@pytest.fixture
def env(daemon: Any, tmp_path: Path) -> Iterator[dict[str, Any]]:
    ORDER.clear()
    plugins = PluginLoop()
    with daemon.client() as c:
        yield {"c": c, "d": daemon, "plugins": plugins, "logs": tmp_path}
    plugins.close()
    remove_all_pods(daemon)


def make_pod(e: dict[str, Any], name: str = "nri") -> tuple[str, pb.PodSandboxConfig]:
    cfg = pod_config(name, log_directory=str(e["logs"]))
    return e["c"].runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg)).pod_sandbox_id, cfg


def create(e: dict[str, Any], pod: str, cfg: pb.PodSandboxConfig, name: str,
           command: list[str] | None = None) -> str:
    return e["c"].runtime.CreateContainer(pb.CreateContainerRequest(
        pod_sandbox_id=pod, config=container_config(name, command or ["sleep", "1000"]),
        sandbox_config=cfg)).container_id


def info(c: Any, ctr: str) -> dict[str, Any]:
    return json.loads(c.runtime.ContainerStatus(pb.ContainerStatusRequest(container_id=ctr, verbose=True)).info["info"])


def memory_limit(cgroup_path: str) -> int:
    if LAYOUT.mode == "v2":
        text = (Path(LAYOUT.unified_path) / cgroup_path.lstrip("/") / "memory.max").read_text()
    else:
        text = (Path("/sys/fs/cgroup/memory") / cgroup_path.lstrip("/") / "memory.limit_in_bytes").read_text()
    return int(text.strip())


def exec_out(c: Any, ctr: str, cmd: list[str]) -> str:
    r = c.runtime.ExecSync(pb.ExecSyncRequest(container_id=ctr, cmd=cmd, timeout=10))
    assert r.exit_code == 0, r.stderr
    return r.stdout.decode()


def test_adjustments_are_applied_and_visible_inside_the_container(env: dict[str, Any], tmp_path: Path) -> None:
    c, d = env["c"], env["d"]
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "hello").write_text("from the plugin\n")
    adjust = api.ContainerAdjustment(
        annotations={"nri.test/adjusted": "yes"},
        env=[api.KeyValue(key="NRI_TEST", value="adjusted")],
        mounts=[api.Mount(destination="/nri-data", type="bind", source=str(shared), options=["rbind", "ro"])])
    adjust.linux.resources.memory.limit.value = 48 * MiB
    env["plugins"].connect(d, "adjuster", "10", (api.CREATE_CONTAINER,),
                           replies={"CreateContainer": api.CreateContainerResponse(adjust=adjust)})
    pod, cfg = make_pod(env)
    ctr = create(env, pod, cfg, "adjusted")
    c.runtime.StartContainer(pb.StartContainerRequest(container_id=ctr))
    assert exec_out(c, ctr, ["sh", "-c", "echo $NRI_TEST"]) == "adjusted\n"
    assert exec_out(c, ctr, ["cat", "/nri-data/hello"]) == "from the plugin\n"
    assert memory_limit(info(c, ctr)["cgroupPath"]) == 48 * MiB
    spec = json.loads((Path(d.state_root) / "containers" / ctr / "config.json").read_text())
    assert spec["annotations"]["nri.test/adjusted"] == "yes"
    # Read-only as the plugin asked.
    r = c.runtime.ExecSync(pb.ExecSyncRequest(container_id=ctr, cmd=["touch", "/nri-data/x"], timeout=10))
    assert r.exit_code != 0


def test_plugin_error_fails_create_cleanly_and_the_retry_succeeds(env: dict[str, Any]) -> None:
    c, d = env["c"], env["d"]
    plugin = env["plugins"].connect(d, "refuser", "10", (api.CREATE_CONTAINER, api.RUN_POD_SANDBOX),
                                    fail={"CreateContainer": "no capacity", "RunPodSandbox": "not today"})
    with pytest.raises(grpc.RpcError) as e:
        make_pod(env, "refused")
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "refuser" in e.value.details() and "not today" in e.value.details()
    assert not c.runtime.ListPodSandbox(pb.ListPodSandboxRequest()).items
    assert not list((Path(d.state_root) / "pods").iterdir())
    plugin.fail.pop("RunPodSandbox")
    pod, cfg = make_pod(env, "refused")  # the same pod, retried
    with pytest.raises(grpc.RpcError) as e:
        create(env, pod, cfg, "refused")
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "refuser" in e.value.details() and "no capacity" in e.value.details()
    assert not c.runtime.ListContainers(pb.ListContainersRequest()).containers
    assert not list((Path(d.state_root) / "containers").iterdir())
    plugin.fail.pop("CreateContainer")
    ctr = create(env, pod, cfg, "refused")
    c.runtime.StartContainer(pb.StartContainerRequest(container_id=ctr))
    assert wait_state(c, ctr, pb.CONTAINER_RUNNING).state == pb.CONTAINER_RUNNING


def test_a_hanging_plugin_is_dropped_after_the_timeout_and_crispy_goes_on(env: dict[str, Any]) -> None:
    c, d = env["c"], env["d"]
    plugin = env["plugins"].connect(d, "hanger", "10", (api.RUN_POD_SANDBOX,), hang=["RunPodSandbox"])
    started = time.monotonic()
    pod, _ = make_pod(env, "hung")
    assert 1.0 < time.monotonic() - started < 10
    env["plugins"].run(asyncio.wait_for(plugin.wait_closed(), 5))
    started = time.monotonic()
    make_pod(env, "after")
    # Not waited for again: less than the 1.5 s request timeout.
    assert time.monotonic() - started < 1.4
    status = json.loads(c.runtime.Status(pb.StatusRequest(verbose=True)).info["nri"])
    assert status["enabled"] and status["plugins"] == []
    assert pod in [p.id for p in c.runtime.ListPodSandbox(pb.ListPodSandboxRequest()).items]


def test_plugins_are_called_in_index_order_and_conflicts_name_both(env: dict[str, Any]) -> None:
    d = env["d"]
    same = api.ContainerAdjustment(env=[api.KeyValue(key="OWNER", value="x")])
    env["plugins"].connect(d, "second", "20", (api.CREATE_CONTAINER,),
                           replies={"CreateContainer": api.CreateContainerResponse(adjust=same)})
    env["plugins"].connect(d, "first", "10", (api.CREATE_CONTAINER,),
                           replies={"CreateContainer": api.CreateContainerResponse(adjust=same)})
    status = json.loads(env["c"].runtime.Status(pb.StatusRequest(verbose=True)).info["nri"])
    assert [p["name"] for p in status["plugins"]] == ["first", "second"]
    pod, cfg = make_pod(env)
    ORDER.clear()
    with pytest.raises(grpc.RpcError) as e:
        create(env, pod, cfg, "contested")
    assert ORDER == [("first", "CreateContainer"), ("second", "CreateContainer")]
    assert "10-first" in e.value.details() and "20-second" in e.value.details()


def test_unsolicited_updates_reach_the_cgroup_and_failures_are_reported(env: dict[str, Any]) -> None:
    c, d = env["c"], env["d"]
    plugin = env["plugins"].connect(d, "updater", "10", (api.CREATE_CONTAINER,))
    pod, cfg = make_pod(env)
    ctr = create(env, pod, cfg, "updated")
    c.runtime.StartContainer(pb.StartContainerRequest(container_id=ctr))
    update = api.ContainerUpdate(container_id=ctr)
    update.linux.resources.memory.limit.value = 40 * MiB
    missing = api.ContainerUpdate(container_id="0" * 64)
    missing.linux.resources.memory.limit.value = 40 * MiB
    failed = env["plugins"].run(plugin.update_containers([update, missing]))
    assert [u.container_id for u in failed] == ["0" * 64]
    assert memory_limit(info(c, ctr)["cgroupPath"]) == 40 * MiB


def test_evictions_a_plugin_asks_for_stop_the_container(env: dict[str, Any]) -> None:
    c, d = env["c"], env["d"]
    pod, cfg = make_pod(env)
    victim, other, kept = (create(env, pod, cfg, n) for n in ("victim", "other", "kept"))
    for ctr in (victim, other, kept):
        c.runtime.StartContainer(pb.StartContainerRequest(container_id=ctr))
    # With a container's creation, as containerd: the new one is made, the
    # evicted one is killed at once (kubelet then applies the restart policy).
    make_room = api.CreateContainerResponse(evict=[api.ContainerEviction(container_id=victim, reason="room")])
    plugin = env["plugins"].connect(d, "evictor", "10",
                                    (api.CREATE_CONTAINER, api.UPDATE_CONTAINER, api.STOP_CONTAINER),
                                    replies={"CreateContainer": make_room})
    newcomer = create(env, pod, cfg, "newcomer")
    st = c.runtime.ContainerStatus(pb.ContainerStatusRequest(container_id=victim)).status
    assert (st.state, st.exit_code) == (pb.CONTAINER_EXITED, 137)
    assert c.runtime.ContainerStatus(pb.ContainerStatusRequest(container_id=newcomer)).status.state == \
        pb.CONTAINER_CREATED
    stopped = [r.container.id for m, r in plugin.seen if m == "StopContainer"]
    assert stopped == [victim]
    # Unsolicited, after the answer; a container that is gone is no failure.
    gone = api.ContainerEviction(container_id="0" * 64, reason="gone")
    failed = env["plugins"].run(plugin.update_containers([], [api.ContainerEviction(container_id=other), gone]))
    assert failed == []
    wait_state(c, other, pb.CONTAINER_EXITED)
    # Evicting the container being updated is refused, and it runs on.
    plugin.replies["UpdateContainer"] = api.UpdateContainerResponse(
        evict=[api.ContainerEviction(container_id=kept, reason="self")])
    with pytest.raises(grpc.RpcError) as e:
        c.runtime.UpdateContainerResources(pb.UpdateContainerResourcesRequest(
            container_id=kept, linux=pb.LinuxContainerResources(memory_limit_in_bytes=64 * MiB)))
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "10-evictor" in e.value.details() and "evict" in e.value.details()
    assert c.runtime.ContainerStatus(pb.ContainerStatusRequest(container_id=kept)).status.state == \
        pb.CONTAINER_RUNNING


def test_events_reach_the_plugin_in_lifecycle_order(env: dict[str, Any]) -> None:
    c, d = env["c"], env["d"]
    plugin = env["plugins"].connect(d, "watcher", "10")
    pod, cfg = make_pod(env)
    ctr = create(env, pod, cfg, "short", ["sh", "-c", "exit 3"])
    c.runtime.StartContainer(pb.StartContainerRequest(container_id=ctr))
    wait_state(c, ctr, pb.CONTAINER_EXITED)
    deadline = time.monotonic() + 10
    while "StopContainer" not in plugin.methods_seen() and time.monotonic() < deadline:
        time.sleep(0.05)  # a container that ends on its own is reported stopped
    c.runtime.RemoveContainer(pb.RemoveContainerRequest(container_id=ctr))
    c.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod))
    c.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod))  # once is enough for plugins
    c.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod))
    seen = [m for m in plugin.methods_seen() if m not in ("Configure", "Synchronize")]
    # Subscribed to everything, it is asked to validate too.
    assert seen == ["RunPodSandbox", "CreateContainer", "ValidateContainerAdjustment", "PostCreateContainer",
                    "StartContainer",
                    "PostStartContainer", "StopContainer", "RemoveContainer", "StopPodSandbox", "RemovePodSandbox"]


def test_plugins_are_synchronized_with_what_crispy_recovered(tmp_path: Path) -> None:
    d = start_pod_daemon(tmp_base())
    plugins = PluginLoop()
    try:
        load_image(d)
        with d.client() as c:
            cfg = pod_config("recovered", log_directory=str(tmp_path))
            pod = c.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg)).pod_sandbox_id
            ctr = c.runtime.CreateContainer(pb.CreateContainerRequest(
                pod_sandbox_id=pod, config=container_config("kept", ["sleep", "1000"]), sandbox_config=cfg)).container_id
            c.runtime.StartContainer(pb.StartContainerRequest(container_id=ctr))
        d.stop()
        d.start()
        plugin = plugins.connect(d, "late", "10")
        assert plugin.synced is not None
        pods, ctrs = plugin.synced
        assert [p.id for p in pods] == [pod]
        assert [(x.id, x.state, x.name) for x in ctrs] == [(ctr, api.CONTAINER_RUNNING, "kept")]
        assert os.path.exists(nri_socket(d))
    finally:
        plugins.close()
        stop_pod_daemon(d)


def test_update_container_resources_goes_through_plugins(env: dict[str, Any]) -> None:
    c, d = env["c"], env["d"]
    pod, cfg = make_pod(env)
    ctr = create(env, pod, cfg, "resized")
    c.runtime.StartContainer(pb.StartContainerRequest(container_id=ctr))
    # The plugin turns kubelet's 64 MiB into 56 MiB.
    own = api.ContainerUpdate(container_id=ctr)
    own.linux.resources.memory.limit.value = 56 * MiB
    plugin = env["plugins"].connect(d, "resizer", "10", (api.UPDATE_CONTAINER, api.POST_UPDATE_CONTAINER),
                                    replies={"UpdateContainer": api.UpdateContainerResponse(update=[own])})
    c.runtime.UpdateContainerResources(pb.UpdateContainerResourcesRequest(
        container_id=ctr, linux=pb.LinuxContainerResources(memory_limit_in_bytes=64 * MiB)))
    assert memory_limit(info(c, ctr)["cgroupPath"]) == 56 * MiB
    assert plugin.methods_seen()[-2:] == ["UpdateContainer", "PostUpdateContainer"]
    request = plugin.seen[-2][1]
    assert isinstance(request, api.UpdateContainerRequest)
    assert request.linux_resources.memory.limit.value == 64 * MiB


def test_update_pod_sandbox_resources_reaches_plugins(env: dict[str, Any]) -> None:
    c, d = env["c"], env["d"]
    plugin = env["plugins"].connect(d, "podwatch", "10", (api.UPDATE_POD_SANDBOX, api.POST_UPDATE_POD_SANDBOX))
    pod, _ = make_pod(env)
    c.runtime.UpdatePodSandboxResources(pb.UpdatePodSandboxResourcesRequest(
        pod_sandbox_id=pod, resources=pb.LinuxContainerResources(cpu_shares=512)))
    assert plugin.methods_seen()[-2:] == ["UpdatePodSandbox", "PostUpdatePodSandbox"]
    request = plugin.seen[-2][1]
    assert isinstance(request, api.UpdatePodSandboxRequest)
    assert request.pod.id == pod and request.linux_resources.cpu.shares.value == 512
    pod_info = json.loads(c.runtime.PodSandboxStatus(pb.PodSandboxStatusRequest(
        pod_sandbox_id=pod, verbose=True)).info["info"])
    if LAYOUT.mode != "v2":  # crispy made the pod's cgroup: it gets the pod's totals
        shares = Path("/sys/fs/cgroup/cpu") / pod_info["cgroupPath"].lstrip("/") / "cpu.shares"
        assert int(shares.read_text()) == 512
    plugin.fail["UpdatePodSandbox"] = "no"
    with pytest.raises(grpc.RpcError) as e:
        c.runtime.UpdatePodSandboxResources(pb.UpdatePodSandboxResourcesRequest(
            pod_sandbox_id=pod, resources=pb.LinuxContainerResources(cpu_shares=256)))
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "podwatch" in e.value.details()


def test_a_pre_installed_plugin_is_started_and_called(tmp_path: Path) -> None:
    base = tmp_base()
    plugins = base / "nri" / "plugins"
    plugins.mkdir(parents=True)
    record = tmp_path / "calls.jsonl"
    repo = Path(__file__).resolve().parents[2]
    script = plugins / "10-recorder"
    # crispy gives a plugin nothing but its NRI variables: no PATH.
    script.write_text(f"#!/bin/sh\ncd {repo} && exec {sys.executable} -m tests.nri_plugin "
                      f"--record {record} --events RUN_POD_SANDBOX\n")
    script.chmod(0o755)
    d = start_pod_daemon(base)
    try:
        with d.client() as c:
            status = json.loads(c.runtime.Status(pb.StatusRequest(verbose=True)).info["nri"])
            assert status["plugins"] == [{"name": "recorder", "index": "10"}]
            pod = c.runtime.RunPodSandbox(pb.RunPodSandboxRequest(
                config=pod_config("preinstalled", log_directory=str(tmp_path)))).pod_sandbox_id
        calls = [json.loads(line) for line in record.read_text().splitlines()]
        assert [x["method"] for x in calls if x["method"] not in ("Configure", "Synchronize")] == ["RunPodSandbox"]
        assert calls[-1]["request"]["pod"]["id"] == pod
    finally:
        stop_pod_daemon(d)

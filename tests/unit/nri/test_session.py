"""Plugin sessions end to end over real unix sockets in one event loop:
PluginServer (the runtime side) against tests/nri_plugin.py (a plugin on the
same ttrpc core), and pre-installed plugins started as processes."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import stat
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from runtime.nri.plugin import PluginError, PluginGone, PluginSession, event_mask
from runtime.nri.plugin_server import PluginServer
from runtime.nri.proto import api_pb2 as api
from runtime.nri.settings import NriSettings
from runtime.nri.ttrpc import Code, TtrpcError
from tests.nri_plugin import NriTestPlugin, read_record

REPO = Path(__file__).resolve().parents[3]


class FakeHost:
    def __init__(self, pods: int = 1, containers: int = 1) -> None:
        self.pods = [api.PodSandbox(id=f"pod{i}", name=f"p{i}", namespace="default") for i in range(pods)]
        self.containers = [api.Container(id=f"ctr{i}", pod_sandbox_id="pod0", name=f"c{i}") for i in range(containers)]
        self.synced: list[tuple[str, list[api.ContainerUpdate]]] = []
        self.updates: list[api.UpdateContainersRequest] = []
        self.gone: list[tuple[str, str]] = []
        self.gone_event = asyncio.Event()
        self.refuse = False

    async def synchronize(self, session: PluginSession) -> None:
        if self.refuse:
            raise RuntimeError("host refuses")
        updates = await session.synchronize(self.pods, self.containers)
        self.synced.append((session.full_name, updates))

    async def update_containers(
        self, session: PluginSession, request: api.UpdateContainersRequest
    ) -> api.UpdateContainersResponse:
        self.updates.append(request)
        return api.UpdateContainersResponse(failed=[u for u in request.update if u.container_id == "bad"])

    def plugin_gone(self, session: PluginSession, reason: str) -> None:
        self.gone.append((session.full_name, reason))
        self.gone_event.set()


def _settings(tmp_path: Path, **kw: object) -> NriSettings:
    opts: dict[str, object] = dict(
        socket_path=str(tmp_path / "run/nri/nri.sock"),
        plugin_path=str(tmp_path / "plugins"),
        plugin_config_path=str(tmp_path / "conf.d"),
        registration_timeout=2.0,
        request_timeout=0.5,
    )
    opts.update(kw)
    return NriSettings(**opts)  # type: ignore[arg-type]


def run(fn: Callable[[], Awaitable[None]]) -> None:
    async def main() -> None:
        await asyncio.wait_for(fn(), 30)

    asyncio.run(main())


async def _until(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


def test_register_configure_synchronize_events_timeout_and_shutdown(tmp_path: Path) -> None:
    async def body() -> None:
        host = FakeHost(pods=2, containers=3)
        settings = _settings(tmp_path)
        server = PluginServer(settings, "crispy", "9.9", host)
        await server.start()
        sock = Path(settings.socket_path)
        assert stat.S_ISSOCK(sock.stat().st_mode)
        assert stat.S_IMODE(sock.stat().st_mode) == 0o600
        assert stat.S_IMODE(sock.parent.stat().st_mode) == 0o700

        adjust = api.CreateContainerResponse(adjust=api.ContainerAdjustment(annotations={"nri": "yes"}))
        plugin = NriTestPlugin(
            "probe", "20",
            events={api.CREATE_CONTAINER, api.STOP_CONTAINER, api.RUN_POD_SANDBOX},
            replies={"CreateContainer": adjust},
        )
        other = NriTestPlugin("early", "05", events={api.CREATE_CONTAINER})
        await plugin.connect(sock)
        await other.connect(sock)
        await _until(lambda: len(server.plugins()) == 2)

        # Configure carried the runtime and timeouts; Synchronize everything.
        assert plugin.config is not None
        assert (plugin.config.runtime_name, plugin.config.runtime_version) == ("crispy", "9.9")
        assert (plugin.config.registration_timeout, plugin.config.request_timeout) == (2000, 500)
        assert plugin.synced is not None
        assert [p.id for p in plugin.synced[0]] == ["pod0", "pod1"]
        assert [c.id for c in plugin.synced[1]] == ["ctr0", "ctr1", "ctr2"]
        assert sorted(n for n, _ in host.synced) == ["05-early", "20-probe"]

        # Index order, subscriptions.
        early, probe = server.plugins()
        assert (early.full_name, probe.full_name) == ("05-early", "20-probe")
        assert probe.subscribes(api.CREATE_CONTAINER) and not probe.subscribes(api.START_CONTAINER)
        assert probe.events == event_mask(api.CREATE_CONTAINER, api.STOP_CONTAINER, api.RUN_POD_SANDBOX)

        pod, ctr = host.pods[0], host.containers[0]
        rsp = await probe.create_container(pod, ctr)
        assert rsp is not None and dict(rsp.adjust.annotations) == {"nri": "yes"}
        assert await probe.start_container(pod, ctr) is None  # not subscribed: not sent
        assert "StartContainer" not in plugin.methods_seen()
        await probe.run_pod_sandbox(pod)
        method, req = plugin.seen[-1]
        assert method == "RunPodSandbox" and isinstance(req, api.RunPodSandboxRequest) and req.pod.id == "pod0"

        # Plugin -> runtime: unsolicited updates reach the host.
        failed = await plugin.update_containers([api.ContainerUpdate(container_id="ok"),
                                                 api.ContainerUpdate(container_id="bad")])
        assert [u.container_id for u in failed] == ["bad"]
        assert [u.container_id for u in host.updates[0].update] == ["ok", "bad"]

        # An error status is a PluginError; the plugin stays.
        plugin.fail["StopContainer"] = "no way"
        with pytest.raises(PluginError, match="no way") as e:
            await probe.stop_container(pod, ctr)
        assert not isinstance(e.value, PluginGone) and not probe.closed

        # A hang is a timeout: the plugin is dropped and the host told.
        plugin.hang.add("CreateContainer")
        t0 = time.monotonic()
        with pytest.raises(PluginGone, match="timed out"):
            await probe.create_container(pod, ctr)
        assert time.monotonic() - t0 < 2.0
        assert probe.closed
        await asyncio.wait_for(plugin.wait_closed(), 5)
        await asyncio.wait_for(host.gone_event.wait(), 5)
        assert host.gone[0][0] == "20-probe" and "timed out" in host.gone[0][1]
        assert [s.full_name for s in server.plugins()] == ["05-early"]
        with pytest.raises(PluginGone):
            await probe.run_pod_sandbox(pod)

        # Stop: Shutdown reaches the remaining plugin, the socket goes away.
        await server.stop()
        assert other.shut_down.is_set()
        await asyncio.wait_for(other.wait_closed(), 5)
        assert not sock.exists()
        assert server.plugins() == []

    run(body)


def test_disconnect_is_noticed_and_reported(tmp_path: Path) -> None:
    async def body() -> None:
        host = FakeHost()
        server = PluginServer(_settings(tmp_path), "crispy", "1", host)
        await server.start()
        plugin = NriTestPlugin("leaver", "30")
        await plugin.connect(server.settings.socket_path)
        await _until(lambda: len(server.plugins()) == 1)
        (session,) = server.plugins()
        assert session.events == (1 << (api.LAST - 1)) - 1  # no mask = every event
        await plugin.close()
        await asyncio.wait_for(host.gone_event.wait(), 5)
        assert server.plugins() == [] and session.closed
        with pytest.raises(PluginGone, match="connection closed"):
            await session.create_container(host.pods[0], host.containers[0])
        await server.stop()

    run(body)


def test_refusals_at_admission(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def body() -> None:
        host = FakeHost()
        server = PluginServer(_settings(tmp_path, registration_timeout=0.3), "crispy", "1", host)
        await server.start()
        path = server.settings.socket_path

        # Connects but never registers: dropped after the registration timeout.
        reader, writer = await asyncio.open_unix_connection(path)
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()

        # Invalid index, a failing Configure, a host refusing the sync.
        bad = NriTestPlugin("bad", "1x")
        with pytest.raises(Exception, match="index"):
            await bad.connect(path)
        cfg = NriTestPlugin("cfg", "40", fail={"Configure": "broken config"})
        await cfg.connect(path)
        await asyncio.wait_for(cfg.wait_closed(), 5)
        host.refuse = True
        refused = NriTestPlugin("refused", "41")
        await refused.connect(path)
        await asyncio.wait_for(refused.wait_closed(), 5)
        assert server.plugins() == [] and host.gone == []

        # The server goes on admitting good plugins.
        host.refuse = False
        good = NriTestPlugin("good", "50")
        await good.connect(path)
        await _until(lambda: len(server.plugins()) == 1)
        await server.stop()

    with caplog.at_level(logging.INFO, logger="crispy.nri"):
        run(body)
    assert "registration timed out" in caplog.text
    assert "broken config" in caplog.text


def test_synchronize_pages_large_state(tmp_path: Path) -> None:
    async def body() -> None:
        # ~5 MiB of containers: more than one ttrpc message can carry.
        # One pod: a page split by ratio alone would carry no pod at all.
        host = FakeHost(pods=1, containers=0)
        blob = "x" * 4096
        host.containers = [api.Container(id=f"c{i}", pod_sandbox_id="pod0", args=[blob]) for i in range(1300)]
        server = PluginServer(_settings(tmp_path, request_timeout=10.0), "crispy", "1", host)
        await server.start()
        plugin = NriTestPlugin("pager", "10")
        await plugin.connect(server.settings.socket_path)
        await _until(lambda: len(server.plugins()) == 1, timeout=20)
        pages = [r for m, r in plugin.seen if m == "Synchronize"]
        assert 2 <= len(pages) <= 3
        assert all(isinstance(p, api.SynchronizeRequest) and p.more for p in pages[:-1])
        assert all(isinstance(p, api.SynchronizeRequest) and (p.pods or p.containers) for p in pages)
        assert plugin.synced is not None
        assert [c.id for c in plugin.synced[1]] == [c.id for c in host.containers]
        assert [p.id for p in plugin.synced[0]] == ["pod0"]
        await server.stop()

    run(body)


def test_plugin_without_dedicated_rpc_gets_state_change(tmp_path: Path) -> None:
    async def body() -> None:
        host = FakeHost()
        server = PluginServer(_settings(tmp_path), "crispy", "1", host)
        await server.start()
        plugin = NriTestPlugin("old", "10", events={api.START_CONTAINER})
        await plugin.connect(server.settings.socket_path)
        await _until(lambda: len(server.plugins()) == 1)
        (session,) = server.plugins()
        orig = plugin._serve

        async def old_style(method: str, payload: bytes) -> bytes:
            if method == "StartContainer":
                raise TtrpcError(Code.UNIMPLEMENTED, "method StartContainer")
            return await orig(method, payload)

        plugin._conn._handler = old_style  # type: ignore[union-attr]
        await session.start_container(host.pods[0], host.containers[0])
        method, req = plugin.seen[-1]
        assert method == "StateChange"
        assert isinstance(req, api.StateChangeEvent)
        assert (req.event, req.container.id) == (api.START_CONTAINER, "ctr0")
        await server.stop()

    run(body)


def _install_plugin(plugin_dir: Path, file_name: str, record: Path, *extra: str) -> None:
    plugin_dir.mkdir(parents=True, exist_ok=True)
    script = plugin_dir / file_name
    args = " ".join(["--record", str(record), *extra])
    script.write_text(
        f"#!/bin/sh\ncd {REPO}\nexport PYTHONPATH={REPO}\nexec {sys.executable} -m tests.nri_plugin {args}\n"
    )
    script.chmod(0o755)


def test_pre_installed_plugins_are_started_configured_and_stopped(tmp_path: Path) -> None:
    async def body() -> None:
        host = FakeHost()
        settings = _settings(tmp_path, registration_timeout=20.0, request_timeout=10.0, disable_connections=True)
        plugins = Path(settings.plugin_path)
        _install_plugin(plugins, "20-second", tmp_path / "second.jsonl")
        _install_plugin(plugins, "10-first", tmp_path / "first.jsonl", "--events", "create_container")
        (plugins / "99-not-executable").write_text("")
        (plugins / "noindex").write_text("#!/bin/sh\n")
        (plugins / "noindex").chmod(0o755)
        conf = Path(settings.plugin_config_path)
        conf.mkdir()
        (conf / "10-first.conf").write_text("mode: strict\n")
        (conf / "second.conf").write_text("mode: lax\n")

        server = PluginServer(settings, "crispy", "1", host)
        await server.start()
        assert not Path(settings.socket_path).exists()  # connections disabled
        first, second = server.plugins()
        assert (first.full_name, second.full_name) == ("10-first", "20-second")
        assert first.launched and first.pid is not None
        assert first.events == event_mask(api.CREATE_CONTAINER)
        assert [r["method"] for r in read_record(tmp_path / "first.jsonl")] == ["Configure", "Synchronize"]
        (cfg,) = [r["request"] for r in read_record(tmp_path / "first.jsonl") if r["method"] == "Configure"]
        assert cfg["config"] == "mode: strict\n"  # type: ignore[index]
        (cfg2,) = [r["request"] for r in read_record(tmp_path / "second.jsonl") if r["method"] == "Configure"]
        assert cfg2["config"] == "mode: lax\n"  # type: ignore[index]
        pids = [first.pid, second.pid]

        await server.stop()
        assert "Shutdown" in [r["method"] for r in read_record(tmp_path / "first.jsonl")]
        for pid in pids:
            assert pid is not None
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)

    run(body)


def test_stale_socket_is_replaced_and_other_files_are_not(tmp_path: Path) -> None:
    async def body() -> None:
        settings = _settings(tmp_path)
        sock = Path(settings.socket_path)
        sock.parent.mkdir(parents=True)
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(sock))
        s.close()
        server = PluginServer(settings, "crispy", "1", FakeHost())
        await server.start()
        await server.stop()

        sock.write_text("not a socket")
        server = PluginServer(settings, "crispy", "1", FakeHost())
        with pytest.raises(FileExistsError, match="not a socket"):
            await server.start()
        assert sock.read_text() == "not a socket"

    run(body)


def test_disabled_nri_does_nothing(tmp_path: Path) -> None:
    async def body() -> None:
        settings = _settings(tmp_path, enable=False)
        server = PluginServer(settings, "crispy", "1", FakeHost())
        await server.start()
        assert not Path(settings.socket_path).exists() and server.plugins() == []
        await server.stop()

    run(body)

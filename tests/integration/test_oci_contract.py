"""The OciRuntime contract the lifecycle relies on, held against real runc
(created through conmon, as crispy creates) and against the in-memory fake
(tests/fake_oci_runtime.py), so that root-less tests on the fake mean
something: states created -> running -> stopped, kill's False for a
stopped or unknown container, delete idempotent, state None once deleted,
an aborted create leaving nothing."""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import signal
import subprocess
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runtime import exec_sync
from runtime.oci.factory import RuntimeFactory
from runtime.oci.interface import CreateParams, OciRuntime, OciRuntimeError
from tests.fake_oci_runtime import FakeOciRuntime
from tests.imagebuild import busybox_entries, make_layer

RUNC = shutil.which("runc")
CONMON = shutil.which("conmon")
REAL_OK = os.geteuid() == 0 and RUNC is not None and CONMON is not None


class Harness:
    """A runtime plus what a create needs: a bundle per container."""

    def __init__(self, runtime: OciRuntime, base: Path, real: bool) -> None:
        self.runtime, self.base, self.real = runtime, base, real
        self.made: list[str] = []

    def params(self, args: list[str]) -> CreateParams:
        cid = "crispy-ct-" + uuid.uuid4().hex[:10]
        bundle = self.base / cid
        bundle.mkdir(mode=0o700)
        if self.real:
            (bundle / "rootfs").mkdir()
            with tarfile.open(fileobj=io.BytesIO(make_layer(busybox_entries()))) as tar:
                tar.extractall(bundle / "rootfs", filter="tar")
            subprocess.run([RUNC or "runc", "spec"], cwd=bundle, check=True)
            spec = json.loads((bundle / "config.json").read_text())
            spec["process"].update(args=args, terminal=False)
            spec["root"]["readonly"] = False
            spec["linux"]["cgroupsPath"] = f"/{cid}"
            (bundle / "config.json").write_text(json.dumps(spec))
        self.made.append(cid)
        return CreateParams(
            conmon=CONMON or "conmon", container_id=cid, name=cid, bundle=str(bundle),
            log_path=str(bundle / "ctr.log"), exit_dir=str(self.base / "exits"), persist_dir=str(bundle),
            container_pidfile=str(bundle / "pidfile"), conmon_pidfile=str(bundle / "conmon.pid"),
            socket_dir=str(self.base / "sock"))

    async def create(self, args: list[str]) -> str:
        p = self.params(args)
        monitors: list[int] = []

        async def on_monitor(pid: int, start: int) -> None:
            monitors.append(pid)
        pending = await self.runtime.begin_create(p)
        created = await pending.release(on_monitor=on_monitor)
        assert created.pid > 0 and monitors == [created.monitor_pid]
        return p.container_id

    async def wait_status(self, cid: str, wanted: str) -> dict[str, Any] | None:
        for _ in range(400):
            st = await self.runtime.state(cid)
            if (st or {}).get("status") == wanted:
                return st
            await asyncio.sleep(0.025)
        raise AssertionError(f"{cid} never reached {wanted}: {st}")

    async def cleanup(self) -> None:
        for cid in self.made:
            await self.runtime.kill(cid, int(signal.SIGKILL), all_processes=True)
            await self.runtime.delete(cid)


@pytest.fixture(params=["fake", pytest.param("runc", marks=[
    pytest.mark.integration, pytest.mark.skipif(not REAL_OK, reason="needs root, runc and conmon")])])
def harness(request, tmp_path: Path) -> Iterator[Harness]:
    factory = RuntimeFactory(tmp_path / "state")
    if request.param == "fake":
        h = Harness(FakeOciRuntime(root=str(tmp_path / "state" / "oci" / "fake")), tmp_path, real=False)
    else:
        (tmp_path / "exits").mkdir()
        (tmp_path / "sock").mkdir()
        h = Harness(factory.for_path(RUNC or "runc"), tmp_path, real=True)
    try:
        yield h
    finally:
        asyncio.run(h.cleanup())
        factory.close()


def run(coro) -> Any:  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_lifecycle_states_and_kill_answers(harness: Harness) -> None:
    rt = harness.runtime

    async def body() -> None:
        cid = await harness.create(["sleep", "600"])
        st = await rt.state(cid)
        assert st is not None and st["status"] == "created" and st["id"] == cid
        await rt.start(cid)
        await harness.wait_status(cid, "running")
        assert await rt.kill(cid, int(signal.SIGKILL)) is True
        await harness.wait_status(cid, "stopped")
        # Stopped: kill says so instead of failing (stop relies on it).
        assert await rt.kill(cid, int(signal.SIGTERM)) is False
        # (runc 1.1 answers `kill --all` of a stopped container with success:
        # it signals whatever is left in the cgroup. Callers ignore that answer.)
        await rt.delete(cid)
        assert await rt.state(cid) is None
        await rt.delete(cid)  # idempotent
    run(body())


def test_unknown_container(harness: Harness) -> None:
    rt = harness.runtime

    async def body() -> None:
        assert await rt.state("crispy-ct-never") is None
        assert await rt.kill("crispy-ct-never", 9) is False
        await rt.delete("crispy-ct-never")
        with pytest.raises(OciRuntimeError):
            await rt.start("crispy-ct-never")
    run(body())


def test_start_of_a_running_container_fails(harness: Harness) -> None:
    rt = harness.runtime

    async def body() -> None:
        cid = await harness.create(["sleep", "600"])
        await rt.start(cid)
        await harness.wait_status(cid, "running")
        with pytest.raises(OciRuntimeError):
            await rt.start(cid)
    run(body())


def test_aborted_create_leaves_no_container(harness: Harness) -> None:
    rt = harness.runtime

    async def body() -> None:
        p = harness.params(["sleep", "600"])
        pending = await rt.begin_create(p)
        assert pending.pid > 0
        await pending.abort()
        await pending.abort()  # idempotent
        assert await rt.state(p.container_id) is None
    run(body())


def test_exec_sync_through_the_runtime(harness: Harness, tmp_path: Path) -> None:
    rt = harness.runtime

    async def body() -> None:
        cid = await harness.create(["sleep", "600"])
        await rt.start(cid)
        await harness.wait_status(cid, "running")
        process = {"args": ["sh", "-c", "echo out; echo err >&2; exit 3"], "cwd": "/", "env": ["PATH=/bin:/usr/bin"],
                   "user": {"uid": 0, "gid": 0}}
        work = tmp_path / "work"
        work.mkdir(exist_ok=True)
        res = await exec_sync.exec_sync(rt, cid, process, work, timeout=30)
        assert (res.stdout, res.stderr, res.exit_code) == (b"out\n", b"err\n", 3)
    run(body())


# ---- the fake's injected failures ------------------------------------------------------

def test_fake_create_failure(tmp_path: Path) -> None:
    rt = FakeOciRuntime()
    rt.fail_create = "no such file: /bin/app"
    h = Harness(rt, tmp_path, real=False)

    async def body() -> None:
        pending = await rt.begin_create(h.params(["app"]))
        with pytest.raises(OciRuntimeError, match="no such file"):
            await pending.release()
        assert rt.containers == {}
    run(body())


def test_fake_start_failure_exits_the_container(tmp_path: Path) -> None:
    rt = FakeOciRuntime()
    h = Harness(rt, tmp_path, real=False)

    async def body() -> None:
        cid = await h.create(["app"])
        rt.fail_start = "exec: app: not found"
        with pytest.raises(OciRuntimeError, match="not found"):
            await rt.start(cid)
        assert (await rt.state(cid) or {}).get("status") == "stopped"
        assert await rt.kill(cid, 9) is False
    run(body())


def test_fake_kill_hangs_until_cancelled(tmp_path: Path) -> None:
    rt = FakeOciRuntime()
    h = Harness(rt, tmp_path, real=False)

    async def body() -> None:
        cid = await h.create(["app"])
        await rt.start(cid)
        rt.kill_hangs = True
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await rt.kill(cid, "SIGTERM")
        rt.kill_hangs = False
        assert await rt.kill(cid, "SIGTERM") is True
        assert rt.containers[cid].exit_code == 128 + int(signal.SIGTERM)
    run(body())


def test_fake_reopen_log_needs_a_live_container(tmp_path: Path) -> None:
    rt = FakeOciRuntime()
    h = Harness(rt, tmp_path, real=False)

    async def body() -> None:
        cid = await h.create(["app"])
        bundle = rt.containers[cid].bundle
        await rt.reopen_log(bundle)
        assert rt.reopened == [bundle]
        await rt.kill(cid, 9)
        with pytest.raises(OSError):
            await rt.reopen_log(bundle)
        assert rt.attach_socket(bundle) == os.path.join(bundle, "attach")
    run(body())

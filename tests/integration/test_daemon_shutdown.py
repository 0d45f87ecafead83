"""SIGTERM with a shutdown grace shorter than the work in flight: a
RunPodSandbox stuck in a CNI plugin (a stand-in that hangs on ADD and DEL).
The daemon exits within a bounded time, holds its root locks until it is
gone, leaves no plugin running, and the next daemon on the same roots
starts cleanly and finishes the half-made pod's clean-up: nothing leaks."""

from __future__ import annotations

import fcntl
import json
import os
import random
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Iterator

import grpc
import pytest

from cri.proto import api_pb2 as pb
from tests.crash_harness import CrashRig
from tests.integration.test_cni_integration import CNI_BIN, PodNet, host_guard  # noqa: F401
from tests.pods_fixtures import *  # noqa: F403
from tests.pods_fixtures import pod_config

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists(f"{CNI_BIN}/bridge"),
                                 reason="needs root and containernetworking-plugins")]

# The hang must outlast the test's patience, so a daemon that waits for it
# (or for the plugin timeout) is caught.
EXIT_BOUND_S = 30


def _lock_free(path: str) -> bool:
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def _running(marker: str) -> bool:
    return subprocess.run(["pgrep", "-f", f"sleep {marker}"], capture_output=True).returncode == 0


@pytest.fixture
def stuck_net(tmp_path, host_guard) -> Iterator[tuple[PodNet, Path, str]]:  # noqa: F811 - the pytest fixture imported above
    net = PodNet(tmp_path, host_guard)
    bins = tmp_path / "bin"
    bins.mkdir()
    marker = f"{random.randrange(10**6, 10**7)}.25"  # a sleep no one else runs
    stuck = tmp_path / "stuck"
    stuck.touch()
    plugin = bins / "stuckplug"
    plugin.write_text(f"#!/bin/sh\ncat >/dev/null\n[ -e {stuck} ] && exec sleep {marker}\nexit 0\n")
    plugin.chmod(0o755)
    conf = next(net.conf_dir.iterdir())
    doc = json.loads(conf.read_text())
    doc["plugins"].append({"type": "stuckplug"})
    conf.write_text(json.dumps(doc))
    yield net, stuck, marker
    subprocess.run(["pkill", "-f", f"sleep {marker}"], capture_output=True)


def test_sigterm_with_short_grace_while_a_plugin_hangs(stuck_net, tmp_path):
    net, stuck, marker = stuck_net
    rig = CrashRig(net, ["--cni-bin-dirs", str(tmp_path / "bin"), "--cni-plugin-timeout", "300",
                         "--shutdown-grace", "0.5"])
    try:
        d = rig.daemon
        errors: list[grpc.RpcError] = []

        def run() -> None:
            try:
                with rig.client() as c:
                    c.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=pod_config("stuckpod")))
            except grpc.RpcError as e:
                errors.append(e)
        caller = threading.Thread(target=run)
        caller.start()
        deadline = time.monotonic() + 20
        while not _running(marker):
            assert time.monotonic() < deadline, "the stand-in plugin never ran"
            time.sleep(0.02)
        assert len(net.leases()) == 1  # bridge's ADD got an address before the hang

        assert d.proc is not None
        d.proc.send_signal(signal.SIGTERM)
        locks = [os.path.join(d.state_root, "crispy.lock"), os.path.join(d.data_root, "crispy.lock")]
        released_early = False
        deadline = time.monotonic() + EXIT_BOUND_S
        while d.proc.poll() is None:
            if any(_lock_free(p) for p in locks) and d.proc.poll() is None:
                released_early = True
            if time.monotonic() > deadline:
                d.proc.kill()
                d.proc.wait()
                pytest.fail(f"crispy did not exit within {EXIT_BOUND_S}s of SIGTERM:\n{d.log()[-3000:]}")
            time.sleep(0.02)
        caller.join(10)
        assert d.proc.returncode == 0
        assert not released_early, "a root lock was free while the old daemon still ran"
        assert errors and errors[0].code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
        # No plugin outlives the daemon that started it.
        deadline = time.monotonic() + 5
        while _running(marker):
            assert time.monotonic() < deadline, "the hung plugin outlived the daemon"
            time.sleep(0.05)

        # The plugin's trouble is over; the next crispy undoes the half-made pod.
        stuck.unlink()
        rig.restart()
        with rig.client() as c:
            assert list(c.runtime.ListPodSandbox(pb.ListPodSandboxRequest()).items) == []
        assert net.leases() == []
        rig.stop()
        rig.assert_no_leaks()
    finally:
        rig.close()

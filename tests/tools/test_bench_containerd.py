"""The bench's containerd launcher on the real containerd: it starts with
the generated config on private temp roots, answers CRI Version through our
client, and stops leaving no process or mount behind."""

import shutil
import tempfile
from pathlib import Path

import pytest

from bench import measure
from bench.containerd import ContainerdProcess, ContainerdSettings
from bench.target import mounts_under
from cri.client import CRIClient

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not Path("/usr/bin/containerd").exists(), reason="Debian's containerd is not installed")]


def test_containerd_starts_on_private_roots_answers_version_and_stops():
    base = Path(tempfile.mkdtemp(prefix="cb-t-", dir="/tmp"))
    try:
        (base / "cni").mkdir()
        settings = ContainerdSettings(base / "ctrd", str(base / "cni"), "/usr/lib/cni", "127.0.0.1:1",
                                      "127.0.0.1:1/bench/pause:1")
        proc = ContainerdProcess(settings).start()
        try:
            with CRIClient(proc.socket, timeout=10) as client:
                client.wait_ready(10)
                v = client.version()
                assert v.runtime_name == "containerd"
                assert v.runtime_api_version == "v1"
            assert (settings.root / "io.containerd.metadata.v1.bolt").is_dir()
            assert measure.proc_mem(proc.pid).comm == "containerd"
        finally:
            assert proc.stop() == 0
        assert proc.proc.poll() == 0
        assert measure.helper_pids(str(base) + "/", set()) == set()
        assert mounts_under(base) == []
    finally:
        shutil.rmtree(base, ignore_errors=True)

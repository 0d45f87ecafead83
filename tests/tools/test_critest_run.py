"""critest/run.py pieces that need no critest binary."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import grpc
import pytest

from cri import config as configmod
from critest import images, run


def test_without_critest_it_says_where_to_get_it_and_exits_0(capsys, tmp_path: Path) -> None:
    assert run.main(["--critest", "", "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "critest is not on PATH" in out and "cri-tools" in out
    assert list(tmp_path.iterdir()) == []  # nothing started, nothing written


def test_unknown_flags_go_to_critest() -> None:
    args, extra = run.parse_args(["--keep", "--ginkgo.focus=Image Manager", "--parallel=2"])
    assert args.keep
    assert extra == ["--ginkgo.focus=Image Manager", "--parallel=2"]


def test_throwaway_config_is_valid_crispy_config(tmp_path: Path) -> None:
    r = run.Run(base=tmp_path, cgroup_parent="/crispy-critest-abcd1234", bridge="crct000000", subnet="10.201.7.0/24")
    r.registry = SimpleNamespace(url="http://127.0.0.1:5999", host="127.0.0.1:5999")
    path = tmp_path / "crispy.toml"
    path.write_text(run.crispy_config(r))
    cfg = configmod.load(path=str(path))
    for host in images.MIRRORED_HOSTS:
        assert cfg.registries[host].mirrors == ["http://127.0.0.1:5999"]
        assert cfg.registries[host].mirrors_only
    assert cfg.registries["127.0.0.1:5999"].insecure
    assert cfg.runtime.default_cgroup_parent == "/crispy-critest-abcd1234"
    assert cfg.cni.conf_dir == str(tmp_path / "cni")
    assert cfg.cni.default_subnet == "10.201.7.0/24"


def test_cgroup_dirs_lists_children_before_parents(tmp_path: Path, monkeypatch) -> None:
    # Only the ordering logic: a fake hierarchy under tmp_path stands in for /sys/fs/cgroup.
    root = tmp_path / "cg"
    (root / "memory" / "crispy-critest-x" / "pod1" / "ctr").mkdir(parents=True)
    (root / "cpu" / "crispy-critest-x").mkdir(parents=True)
    real_path = run.Path
    monkeypatch.setattr(run, "Path", lambda p, *a: root if p == "/sys/fs/cgroup" else real_path(p, *a))
    dirs = [str(d.relative_to(root)) for d in run.cgroup_dirs("/crispy-critest-x")]
    assert dirs.index("memory/crispy-critest-x/pod1/ctr") < dirs.index("memory/crispy-critest-x/pod1") \
        < dirs.index("memory/crispy-critest-x")
    assert "cpu/crispy-critest-x" in dirs


class _RpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


class _FakeClient:
    """Stands in for CRIClient at the gRPC boundary: 2 containers, 7 pods whose
    removal fails."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.runtime = SimpleNamespace(ListContainers=lambda req, timeout: SimpleNamespace(
            containers=[SimpleNamespace(id=f"c{i}" * 8) for i in range(2)]))

    def stop_container(self, cid: str, timeout: int) -> None:
        self.calls.append(f"stop {cid}")

    def remove_container(self, cid: str) -> None:
        self.calls.append(f"rm {cid}")

    def list_pod_sandboxes(self) -> list:
        return [SimpleNamespace(id=f"p{i}" * 8) for i in range(7)]

    def stop_pod_sandbox(self, pid: str) -> None:
        self.calls.append(f"stoppod {pid}")

    def remove_pod_sandbox(self, pid: str) -> None:
        raise _RpcError(grpc.StatusCode.FAILED_PRECONDITION, f"cannot remove {pid}")


def test_cleanup_removes_everything_and_caps_error_notes() -> None:
    client, notes = _FakeClient(), []
    run.remove_everything(client, notes)
    assert client.calls[:4] == ["stop " + "c0" * 8, "rm " + "c0" * 8, "stop " + "c1" * 8, "rm " + "c1" * 8]
    assert sum(c.startswith("stoppod") for c in client.calls) == 7
    assert notes[0] == "cleanup: the suite left 7 pod(s) and 2 container(s) behind"
    assert len([n for n in notes if "FAILED_PRECONDITION" in n]) == run.MAX_CLEANUP_ERRORS
    assert notes[-1] == "cleanup: ... and 2 more such error(s), see crispy.log"


def test_cleanup_of_an_empty_runtime_notes_nothing() -> None:
    client = _FakeClient()
    client.runtime = SimpleNamespace(ListContainers=lambda req, timeout: SimpleNamespace(containers=[]))
    client.list_pod_sandboxes = lambda: []
    notes: list[str] = []
    run.remove_everything(client, notes)
    assert notes == []


FAKE_CRITEST = '''#!{python}
"""Stands in for critest: pulls through crispy as the suite would, writes a JUnit report."""
import sys
from xml.sax.saxutils import quoteattr
from cri.client import CRIClient

args = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--") and "=" in a)
if "--version" in sys.argv:
    print("critest version: v0.0.0-fake")
    sys.exit(0)
client = CRIClient(args["runtime-endpoint"], timeout=120)
cases = []
for ref in {refs!r}:
    try:
        image_ref = client.pull_image(ref)
        status = client.image_status(ref)
        ok = status is not None and ref in status.repo_tags and status.id == image_ref
        cases.append((ref, ok, "" if ok else f"status {{status}}"))
    except Exception as e:
        cases.append((ref, False, str(e)))
# A pod on the run's own network, left behind for the harness to clean up.
from cri.proto import api_pb2 as pb
meta = pb.PodSandboxMetadata(name="fake-critest", uid="fake-critest-uid", namespace="fake", attempt=0)
try:
    pod = client.run_pod_sandbox(pb.PodSandboxConfig(metadata=meta, linux=pb.LinuxPodSandboxConfig()))
    ip = client.runtime.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=pod)).status.network.ip
    cases.append(("pod ip " + ip, ip.startswith("10.201."), "pod ip " + repr(ip)))
except Exception as e:
    cases.append(("pod", False, str(e)))
body = "".join(
    f'<testcase name="[It] pull {{r}}" status="{{"passed" if ok else "failed"}}" time="0.1">'
    + ("" if ok else f'<failure message={{quoteattr(m)}} type="failed"></failure>') + "</testcase>"
    for r, ok, m in cases)
failed = sum(not ok for _, ok, _ in cases)
open(args["ginkgo.junit-report"], "w").write(
    f'<testsuites><testsuite name="fake" tests="{{len(cases)}}" failures="{{failed}}" errors="0" skipped="0" '
    f'disabled="0">{{body}}</testsuite></testsuites>')
sys.exit(1 if failed else 0)
'''


@pytest.mark.integration
def test_harness_end_to_end_with_a_stand_in_critest(tmp_path: Path, monkeypatch, capsys) -> None:
    """Builds and pushes the images, starts crispy with the mirrors and its
    own pod network, runs a critest stand-in that pulls by upstream names and
    leaves a pod behind, summarises, cleans up."""
    refs = [images.E2E + "busybox:1.29-2", images.CRI_TOOLS + "test-image-tags:2", "k8s.gcr.io/pause:3.9"]
    fake = tmp_path / "critest"
    fake.write_text(FAKE_CRITEST.format(python=sys.executable, refs=refs))
    fake.chmod(0o755)
    monkeypatch.setenv("PYTHONPATH", str(Path(run.__file__).resolve().parent.parent))
    results = tmp_path / "results"
    assert run.main(["--critest", str(fake), "--results", str(results)]) == 0
    base = re.search(r"up on (/tmp/crispy-ct-[^/]+)/", capsys.readouterr().out).group(1)
    s = json.loads((results / "summary.json").read_text())
    assert (s["passed"], s["failed"], s["mismatches"]) == (4, 0, []), s
    md = (results / "summary.md").read_text()
    assert "| specs | 4 | 0 | 0 | 0 | 4 |" in md
    assert "cleanup: the suite left 1 pod(s) and 0 container(s) behind" in md
    bridge = re.search(r"on bridge (crct[0-9a-f]+),", md).group(1)
    assert not Path("/sys/class/net", bridge).exists()
    assert "crispy" in (results / "crispy.log").read_text(errors="replace").lower()
    # Its temporary roots are gone, nothing stays mounted there, and no
    # process (crispy, conmon, container) still refers to them.
    assert not Path(base).exists()
    assert base + "/" not in Path("/proc/self/mountinfo").read_text()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                assert base.encode() not in (proc / "cmdline").read_bytes()
            except OSError:
                pass

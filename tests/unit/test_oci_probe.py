"""What a runtime binary is (runtime/oci/probe.py) and which implementation
the factory gives it (runtime/oci/factory.py): by what the binary says,
never by its file name."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from runtime.oci import probe
from runtime.oci.cli import CliRuntime
from runtime.oci.crun import CrunRuntime
from runtime.oci.factory import RuntimeFactory
from runtime.oci.interface import RuntimeKind
from runtime.oci.runc import RuncRuntime

RUNC = shutil.which("runc")
CRUN = shutil.which("crun")

CRUN_OUT = """crun version 1.8.1
commit: f8a096be060b22ccd3d5f3ebe44108517fbf6c30
rundir: /run/crun
spec: 1.0.0
+SYSTEMD +SELINUX +APPARMOR +CAP +SECCOMP +EBPF -CRIU +YAJL
"""
RUNC_OUT = """runc version 1.1.5+ds1
commit: 1.1.5+ds1-1+deb12u1
spec: 1.0.2-dev
go: go1.19.8
libseccomp: 2.5.4
"""


def test_parse_crun() -> None:
    p = probe.parse_version(CRUN_OUT)
    assert (p.kind, p.version, p.spec) == (RuntimeKind.CRUN, "1.8.1", "1.0.0")
    assert {"SYSTEMD", "SECCOMP", "EBPF"} <= p.features and "CRIU" not in p.features


def test_parse_runc() -> None:
    p = probe.parse_version(RUNC_OUT)
    assert (p.kind, p.version, p.spec) == (RuntimeKind.RUNC, "1.1.5+ds1", "1.0.2-dev")
    assert "SECCOMP" in p.features


@pytest.mark.parametrize("out", ["", "youki version 0.3.0\n", "my wrapper around runc\n", "runc-ish version 1\n"])
def test_parse_anything_else_is_other(out: str) -> None:
    assert probe.parse_version(out).kind is RuntimeKind.OTHER


@pytest.mark.skipif(RUNC is None, reason="needs runc")
def test_real_runc() -> None:
    assert RUNC is not None
    p = probe.probe(RUNC)
    first = subprocess.run([RUNC, "--version"], check=False, capture_output=True, text=True).stdout.splitlines()[0]
    assert p.kind is RuntimeKind.RUNC and first == f"runc version {p.version}"


@pytest.mark.skipif(CRUN is None, reason="needs crun")
def test_real_crun() -> None:
    assert CRUN is not None
    p = probe.probe(CRUN)
    first = subprocess.run([CRUN, "--version"], check=False, capture_output=True, text=True).stdout.splitlines()[0]
    assert p.kind is RuntimeKind.CRUN and first == f"crun version {p.version}"
    assert "SECCOMP" in p.features


@pytest.fixture
def factory(tmp_path: Path):  # type: ignore[no-untyped-def]
    f = RuntimeFactory(tmp_path / "state")
    yield f
    f.close()


@pytest.mark.skipif(CRUN is None, reason="needs crun")
def test_a_renamed_crun_is_still_crun_with_its_fast_paths(factory: RuntimeFactory, tmp_path: Path) -> None:
    assert CRUN is not None
    mine = tmp_path / "bin" / "my-runtime"
    mine.parent.mkdir()
    shutil.copy2(CRUN, mine)
    rt = factory.for_path(str(mine))
    assert isinstance(rt, CrunRuntime) and rt.kind is RuntimeKind.CRUN and rt.name == "crun"
    assert rt.path == str(mine) and rt.root == str(tmp_path / "state" / "oci" / "my-runtime")
    # Run from a sealed copy, made once.
    assert rt.exe.startswith(f"/proc/{os.getpid()}/fd/") and factory.for_path(str(mine)) is rt
    assert rt.exe == rt.exe
    # Start goes through crun's FIFO handshake, not a `my-runtime start` process.
    state = Path(rt.root) / "c1"
    state.mkdir(parents=True)
    (state / "config.json").write_text(json.dumps({"process": {"args": ["/bin/true"]}}))
    os.mkfifo(state / "exec.fifo", 0o600)
    init = os.open(state / "exec.fifo", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        asyncio.run(rt.start("c1"))
        assert os.read(init, 4) == b"\0" and not (state / "exec.fifo").exists()
    finally:
        os.close(init)


@pytest.mark.skipif(RUNC is None, reason="needs runc")
def test_runc_gets_runc_from_a_sealed_copy(factory: RuntimeFactory) -> None:
    assert RUNC is not None
    rt = factory.for_path(RUNC)
    assert isinstance(rt, RuncRuntime) and rt.kind is RuntimeKind.RUNC
    assert rt.exe.startswith(f"/proc/{os.getpid()}/fd/")
    assert rt.version == probe.probe(RUNC).version


def test_an_unknown_binary_gets_the_plain_cli(factory: RuntimeFactory, tmp_path: Path,
                                             caplog: pytest.LogCaptureFixture) -> None:
    calls = tmp_path / "calls"
    script = tmp_path / "crun"  # named crun, but is not
    script.write_text(f"#!/bin/sh\necho \"$@\" >> {calls}\necho 'something else 2.0'\n")
    script.chmod(0o755)
    with caplog.at_level(logging.WARNING, logger="crispy.runtime"):
        rt = factory.for_path(str(script))
    assert type(rt) is CliRuntime and rt.kind is RuntimeKind.OTHER and rt.name == "crun"
    assert rt.exe == str(script)  # no sealed copy
    assert any("neither runc nor crun" in r.getMessage() for r in caplog.records)
    # start is the CLI's, even with a waiting init in the state directory.
    state = Path(rt.root) / "c1"
    state.mkdir(parents=True)
    (state / "config.json").write_text("{}")
    os.mkfifo(state / "exec.fifo", 0o600)
    init = os.open(state / "exec.fifo", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        asyncio.run(rt.start("c1"))
        assert os.read(init, 4) == b""
    finally:
        os.close(init)
    assert calls.read_text().splitlines() == ["--version", f"--root {rt.root} start c1"]


def test_each_binary_is_asked_once(factory: RuntimeFactory, tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    script = tmp_path / "rt"
    script.write_text(f"#!/bin/sh\necho \"$@\" >> {calls}\necho 'runc version 9.9'\n")
    script.chmod(0o755)
    from runtime import host
    first = factory.for_path(str(script))
    assert factory.for_path(str(script)) is first and isinstance(first, RuncRuntime)
    # The daemon's start-up choice reads the same answer.
    choice = host.choose_oci_runtime(str(script), host.detect_cgroup_layout())
    assert choice is not None and choice.version == "9.9"
    assert calls.read_text().splitlines() == ["--version"]


def test_a_missing_binary_is_other(factory: RuntimeFactory, tmp_path: Path) -> None:
    rt = factory.for_path(str(tmp_path / "nope"))
    assert rt.kind is RuntimeKind.OTHER and rt.exe == str(tmp_path / "nope")

"""crun's start handshake done in-process (runtime/oci/crun_start.py), against a
state directory laid out the way crun 1.8 leaves a created container: its
copy of the spec and the exec FIFO whose read end the waiting init holds.
(The real crun path is exercised by the daemon's container tests wherever
crun runs; crun refuses CI's hybrid host.)"""

from __future__ import annotations

import asyncio
import json
import os
import stat
from pathlib import Path
from typing import Iterator

import pytest

from runtime.oci import crun_start
from runtime.oci.crun import CrunRuntime
from runtime.oci.interface import OciRuntimeError
from runtime.oci.runc import RuncRuntime

CID = "c1"


@pytest.fixture
def state(tmp_path: Path) -> Iterator[Path]:
    d = tmp_path / "root" / CID
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"ociVersion": "1.0.2", "process": {"args": ["/bin/true"]}}))
    os.mkfifo(d / "exec.fifo", 0o600)
    yield d


@pytest.fixture
def waiting_init(state: Path) -> Iterator[int]:
    """The read end, opened as crun opens it for the init."""
    fd = os.open(state / "exec.fifo", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    yield fd
    os.close(fd)


def test_releases_a_waiting_init_and_marks_it_started(state: Path, waiting_init: int) -> None:
    assert crun_start.release_init(str(state.parent), CID) is True
    assert os.read(waiting_init, 16) == b"\0"
    # `crun state` says "running" once the FIFO is gone.
    assert not (state / "exec.fifo").exists()


def test_declines_when_no_init_waits(state: Path) -> None:
    assert crun_start.release_init(str(state.parent), CID) is False
    assert stat.S_ISFIFO((state / "exec.fifo").stat().st_mode)


def test_declines_when_already_started(state: Path, waiting_init: int) -> None:
    (state / "exec.fifo").unlink()
    assert crun_start.release_init(str(state.parent), CID) is False


def test_leaves_poststart_hooks_to_crun_start(state: Path, waiting_init: int) -> None:
    (state / "config.json").write_text(json.dumps({"hooks": {"poststart": [{"path": "/bin/true"}]}}))
    assert crun_start.release_init(str(state.parent), CID) is False
    assert (state / "exec.fifo").exists()
    assert os.read(waiting_init, 16) == b""  # nothing was written (and no writer is left)


def test_other_hooks_do_not_matter_at_start(state: Path, waiting_init: int) -> None:
    (state / "config.json").write_text(json.dumps({"hooks": {"prestart": [{"path": "/bin/true"}], "poststart": []}}))
    assert crun_start.release_init(str(state.parent), CID) is True


@pytest.mark.parametrize("spec", [None, "{not json"])
def test_declines_without_a_readable_spec(state: Path, waiting_init: int, spec: str | None) -> None:
    if spec is None:
        (state / "config.json").unlink()
    else:
        (state / "config.json").write_text(spec)
    assert crun_start.release_init(str(state.parent), CID) is False
    assert (state / "exec.fifo").exists()


def test_never_writes_into_something_that_is_not_a_fifo(state: Path) -> None:
    (state / "exec.fifo").unlink()
    (state / "exec.fifo").write_bytes(b"keep")
    assert crun_start.release_init(str(state.parent), CID) is False
    assert (state / "exec.fifo").read_bytes() == b"keep"


def _break_write(monkeypatch: pytest.MonkeyPatch) -> None:
    """The init closes its end between our open and our write."""
    def broken(fd: int, data: bytes) -> int:
        raise BrokenPipeError(32, "Broken pipe")
    monkeypatch.setattr(crun_start.os, "write", broken)


def test_init_gone_between_open_and_write(state: Path, waiting_init: int, monkeypatch: pytest.MonkeyPatch) -> None:
    _break_write(monkeypatch)
    with pytest.raises(crun_start.InitGone, match="exited before it was started"):
        crun_start.release_init(str(state.parent), CID)


def _fake_runtime(tmp_path: Path, name: str = "crun") -> Path:
    """A stand-in runtime binary that records its arguments in `calls`."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    script = bindir / name
    script.write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path / 'calls'}\n")
    script.chmod(0o755)
    return script


def test_oci_runtime_start_uses_the_fifo_for_crun(tmp_path: Path, state: Path, waiting_init: int) -> None:
    rt = CrunRuntime(str(_fake_runtime(tmp_path)), str(state.parent))
    asyncio.run(rt.start(CID))
    assert os.read(waiting_init, 16) == b"\0"
    assert not (tmp_path / "calls").exists()


def test_oci_runtime_start_falls_back_to_crun_start(tmp_path: Path, state: Path) -> None:
    rt = CrunRuntime(str(_fake_runtime(tmp_path)), str(state.parent))
    asyncio.run(rt.start(CID))
    assert (tmp_path / "calls").read_text().split() == ["--root", str(state.parent), "start", CID]


def test_oci_runtime_start_reports_an_init_that_went_away(tmp_path: Path, state: Path, waiting_init: int,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    _break_write(monkeypatch)
    rt = CrunRuntime(str(_fake_runtime(tmp_path)), str(state.parent))
    with pytest.raises(OciRuntimeError, match="crun start failed: the container's init exited"):
        asyncio.run(rt.start(CID))


def test_runc_always_goes_through_its_cli(tmp_path: Path, state: Path, waiting_init: int) -> None:
    asyncio.run(RuncRuntime(str(_fake_runtime(tmp_path, "runc")), str(state.parent)).start(CID))
    assert (tmp_path / "calls").read_text().split() == ["--root", str(state.parent), "start", CID]
    assert os.read(waiting_init, 16) == b""

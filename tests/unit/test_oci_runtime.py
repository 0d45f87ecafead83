"""The runc-compatible command line's (runtime/oci/cli.py) reading of the runtime's answers, with a stand-in runtime
binary that answers the way runc or crun do."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import pytest

from runtime.oci.cli import CliRuntime
from runtime.oci.interface import OciRuntime, OciRuntimeError


def fake_runtime(tmp_path: Path, stderr: str, rc: int) -> OciRuntime:
    script = tmp_path / "fake-runtime"
    script.write_text(f"#!/bin/sh\nprintf '%s\\n' '{stderr}' >&2\nexit {rc}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return CliRuntime(str(script), str(tmp_path / "root"))


@pytest.mark.parametrize("stderr", [
    "open pidfd: No such process",  # crun 1.8, the init already exited
    "container not running",  # runc
    "process already finished",  # runc, older wording
    "container abc does not exist",
])
def test_kill_of_a_container_that_already_stopped_is_not_an_error(tmp_path: Path, stderr: str) -> None:
    assert asyncio.run(fake_runtime(tmp_path, stderr, 1).kill("abc", 15)) is False


def test_kill_failing_otherwise_raises_with_the_runtime_message(tmp_path: Path) -> None:
    with pytest.raises(OciRuntimeError, match="permission denied"):
        asyncio.run(fake_runtime(tmp_path, "kill: permission denied", 1).kill("abc", 15))


def test_kill_that_worked(tmp_path: Path) -> None:
    assert asyncio.run(fake_runtime(tmp_path, "", 0).kill("abc", 9)) is True

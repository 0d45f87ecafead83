from __future__ import annotations

import os
import signal
import subprocess
import sys


def _run(env_value: str | None) -> int:
    env = dict(os.environ)
    env.pop("CRISPY_CRASH_AT", None)
    if env_value is not None:
        env["CRISPY_CRASH_AT"] = env_value
    code = "from runtime.crashpoints import crashpoint\ncrashpoint('a.step')\nprint('survived')"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, cwd=os.getcwd()).returncode


def test_armed_step_dies_by_sigkill() -> None:
    assert _run("other, a.step") == -signal.SIGKILL


def test_unarmed_or_other_step_goes_on() -> None:
    assert _run(None) == 0
    assert _run("a.step.not") == 0

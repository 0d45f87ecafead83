"""Runs `<runtime> exec --detach ... --pid-file F` and waits for the exec'd
process as its child subreaper, exiting with that process's status.

A TTY exec needs this helper: both runc and crun only hand out a console
socket when they detach, and a detached process is re-parented to the
nearest subreaper. Making the daemon itself a subreaper would also adopt
every conmon it deliberately detaches; this short-lived process adopts
only the one exec. SIGTERM kills the exec'd process, so a client that goes
away does not leave it running.

Usage: python -m runtime.exec_reaper <pid-file> <runtime argv...>
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys

PR_SET_CHILD_SUBREAPER = 36


def _status_code(status: int) -> int:
    code = os.waitstatus_to_exitcode(status)
    # Shell convention, which is also what runc reports for a signalled process.
    return 128 - code if code < 0 else code


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: exec_reaper <pid-file> <runtime argv...>", file=sys.stderr)
        return 125
    pid_file, cmd = argv[0], argv[1:]
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        print(f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(ctypes.get_errno())}", file=sys.stderr)
        return 125
    target = 0

    def terminate(signum: int, frame: object) -> None:
        if target:
            try:
                os.kill(target, signal.SIGKILL)
            except ProcessLookupError:
                pass
        else:
            os._exit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    res = subprocess.run(cmd, stdin=subprocess.DEVNULL)
    if res.returncode != 0:
        return 125  # the runtime printed why on stderr
    with open(pid_file) as f:
        target = int(f.read().strip())
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            # Not ours after all (should not happen): we cannot learn its status.
            print(f"exec'd process {target} is not our child", file=sys.stderr)
            return 125
        except InterruptedError:
            continue
        if pid == target:
            return _status_code(status)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""The configuration values the pod and container lifecycle use, taken
from the daemon's configuration and node facts once, at start-up. The
lifecycle sees these, never the configuration file's shape."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from runtime.host import CgroupLayout


@dataclass(frozen=True)
class LifecycleSettings:
    state_root: Path
    data_root: Path
    cgroup_layout: CgroupLayout
    cgroup_driver: str = "cgroupfs"  # or "systemd"
    default_cgroup_parent: str = "/crispy"
    # Seconds StopPodSandbox gives containers still running before SIGKILL.
    default_stop_timeout: float = 10.0
    pids_limit: int = 0
    seccomp_default: bool = False
    user_lookup_timeout: float = 30.0
    conmon: str = "conmon"  # as configured, for messages
    conmon_path: str | None = None  # where it is installed; None if nowhere
    # runtime_handler name -> OCI runtime (name or path), as configured.
    handlers: dict[str, str] = field(default_factory=dict)
    default_runtime_path: str | None = None  # the runtime of the "" handler

"""One runtime object per binary, for the daemon's lifetime.

`for_path` asks the binary what it is once (runtime/oci/probe.py) and
picks its implementation: crun and runc run from a sealed copy made here
once per binary (runtime/oci/sealed_binary.py), crun starts containers
with its FIFO handshake; an unknown binary gets the plain runc-compatible
command line, run from its own file, and a log line saying so.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol

from runtime.oci import probe
from runtime.oci.cli import CliRuntime, root_for
from runtime.oci.crun import CrunRuntime
from runtime.oci.interface import OciRuntime, RuntimeKind
from runtime.oci.runc import RuncRuntime
from runtime.oci.sealed_binary import SealedBinaries
from runtime.telemetry import NO_TELEMETRY, Telemetry

log = logging.getLogger("crispy.runtime")

_IMPLEMENTATIONS: dict[RuntimeKind, type[CliRuntime]] = {
    RuntimeKind.RUNC: RuncRuntime,
    RuntimeKind.CRUN: CrunRuntime,
    RuntimeKind.OTHER: CliRuntime,
}


class RuntimeRecord(Protocol):
    """A pod or container record: names its runtime binary's path."""
    oci_runtime: str


class RuntimeFactory:
    def __init__(self, state_root: Path, telemetry: Telemetry = NO_TELEMETRY) -> None:
        self.state_root = state_root
        self._telemetry = telemetry
        self._sealed = SealedBinaries()
        self._runtimes: dict[str, OciRuntime] = {}

    def for_path(self, path: str) -> OciRuntime:
        """The runtime installed at `path`. Blocking the first time for a
        path (the binary is asked what it is, and copied)."""
        rt = self._runtimes.get(path)
        if rt is None:
            rt = self._runtimes[path] = self._make(path)
            if isinstance(rt, CliRuntime):
                rt.telemetry = self._telemetry
        return rt

    def for_record(self, rec: RuntimeRecord) -> OciRuntime:
        """The runtime that runs a pod's or container's containers. Records
        keep the binary's path in `oci_runtime` (the field's name on disk);
        this is the one place that reads it."""
        return self.for_path(rec.oci_runtime)

    def _make(self, path: str) -> OciRuntime:
        found = probe.probe(path)
        cls = _IMPLEMENTATIONS[found.kind]
        if found.kind is RuntimeKind.OTHER:
            log.warning("the OCI runtime is neither runc nor crun; using the plain runc command line, "
                        "without a sealed copy or crun's in-process start",
                        extra={"fields": {"path": path, "says": found.banner}})
            return cls(path, root_for(path, self.state_root), None, found.version)
        self._sealed.exe(path)  # the copy is made now, not on the first container
        return cls(path, root_for(path, self.state_root), self._sealed, found.version)

    def close(self) -> None:
        self._runtimes.clear()
        self._sealed.close()

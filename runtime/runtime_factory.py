"""The one way the lifecycle gets an OCI runtime: `for_path(binary)`.

Stands in until runtime/oci/ (its RuntimeFactory) replaces it: today it
runs each binary from its sealed copy (runtime/sealed_binary.py)."""

from __future__ import annotations

from pathlib import Path

from runtime.oci_runtime import OciRuntime
from runtime.sealed_binary import SealedBinaries


class RuntimeFactory:
    def __init__(self, state_root: Path) -> None:
        self._state_root = state_root
        self._binaries = SealedBinaries()

    def for_path(self, path: str) -> OciRuntime:
        """The runtime installed at `path`, run from its sealed copy."""
        return OciRuntime.under(path, self._state_root, self._binaries.exe(path))

    def close(self) -> None:
        self._binaries.close()

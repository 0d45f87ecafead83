"""runc: the shared command line as it is; run from a sealed copy
(runtime/oci/sealed_binary.py) so it does not copy its 9 MB self on every
container start."""

from __future__ import annotations

from runtime.oci.cli import CliRuntime
from runtime.oci.interface import RuntimeKind


class RuncRuntime(CliRuntime):
    kind = RuntimeKind.RUNC

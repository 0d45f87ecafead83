"""What the domain reports for the operator's metrics: OCI runtime and
conmon invocations, CNI plugin calls, image pulls. This base class records
nothing; the daemon gives the parts a recording one (cri/prometheus.py)
when `[metrics] address` is set. runtime/ and images/ know only this
interface, never the exporter or its transport.

Labels are bounded by construction: runtime names, OCI subcommands, plugin
types and CNI commands, error kinds; never pod or container ids."""

from __future__ import annotations


class Telemetry:
    def oci_call(self, runtime: str, command: str, ok: bool, seconds: float) -> None:
        """One invocation of the OCI runtime binary (`runtime state`, `kill`, ...)."""

    def conmon_spawn(self, ok: bool) -> None:
        """conmon started for a container (ok), or failed to start or to
        report the container's creation."""

    def cni_call(self, plugin: str, command: str, ok: bool, seconds: float) -> None:
        """One CNI plugin invocation (ADD, DEL, CHECK)."""

    def image_pull(self, ok: bool, reason: str, size: int, seconds: float) -> None:
        """A PullImage: `reason` is the error kind when it failed, `size` the
        image's size when it succeeded."""


# Shared by every part not given a recording Telemetry: it holds nothing.
NO_TELEMETRY = Telemetry()

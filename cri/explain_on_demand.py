"""The `crispy explain` report maker, made on the first verbose status.

Its modules (runtime/explain/: processes, namespaces, cgroups, layers,
mounts, security, network) are about 1 MiB of an idle daemon's memory, and
kubelet never asks for a verbose status: they load when an operator first
runs `crispy explain` or `crictl inspect`, not at start-up."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from runtime.lazy_module import on_first_use
from runtime.store import ContainerRecord, SandboxRecord

if TYPE_CHECKING:
    from runtime.explain import report
else:
    report = on_first_use("runtime.explain.report")


class ExplainOnDemand:
    def __init__(self, make: Callable[[], "report.Explainer"]) -> None:
        self._make = make
        self._explainer: report.Explainer | None = None

    def _get(self) -> "report.Explainer":
        if self._explainer is None:
            self._explainer = self._make()
        return self._explainer

    async def container(self, ctr: ContainerRecord) -> dict[str, Any]:
        return await self._get().container(ctr)

    async def pod(self, rec: SandboxRecord) -> dict[str, Any]:
        return await self._get().pod(rec)


def explainer(*args: Any, **kwargs: Any) -> ExplainOnDemand:
    """An ExplainOnDemand whose Explainer gets these arguments."""
    return ExplainOnDemand(lambda: report.Explainer(*args, **kwargs))

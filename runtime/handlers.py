"""Runtime handlers (RuntimeClass): which OCI runtime binary runs a pod's
containers."""

from __future__ import annotations

import os
import shutil

from runtime.errors import FailedPrecondition, InvalidArgument
from runtime.host import crun_blocker
from runtime.oci.factory import RuntimeFactory
from runtime.oci.interface import RuntimeKind
from runtime.settings import LifecycleSettings


class RuntimeHandlers:
    def __init__(self, settings: LifecycleSettings, runtimes: RuntimeFactory) -> None:
        self._runtimes = runtimes
        self._handlers = dict(settings.handlers)
        self._default = settings.default_runtime_path
        self._layout = settings.cgroup_layout

    def resolve(self, handler: str) -> str:
        """The path of the runtime binary for `handler`."""
        handlers = self._handlers
        if handler in handlers:
            wanted = handlers[handler]
            path = wanted if os.path.isabs(wanted) else shutil.which(wanted)
            if not path:
                raise InvalidArgument(f"runtime handler {handler!r} maps to {wanted!r}, which is not installed")
            # By what the binary is, not what it is called: a crun installed
            # as /opt/bin/oci is still crun.
            if self._runtimes.for_path(path).kind is RuntimeKind.CRUN:
                blocker = crun_blocker(self._layout)
                if blocker:
                    # Say so now rather than at the first CreateContainer.
                    raise FailedPrecondition(f"runtime handler {handler!r} uses crun, which cannot run containers "
                                             f"on this node: {blocker}")
            return path
        if handler == "":
            if self._default is None:
                raise FailedPrecondition("no OCI runtime is available on this node; install crun or runc")
            return self._default
        known = ", ".join(repr(h) for h in sorted({"", *handlers}))
        raise InvalidArgument(f"unknown runtime handler {handler!r}; this node has: {known} "
                              f"(configure more under [runtime.handlers])")

    def by_name(self) -> list[tuple[str, str | None]]:
        """Every handler, the default "" first, with the binary it runs
        (None when it cannot run anything here), for the features probe."""
        out: list[tuple[str, str | None]] = []
        for name in ["", *sorted(h for h in self._handlers if h != "")]:
            try:
                out.append((name, self.resolve(name)))
            except (InvalidArgument, FailedPrecondition):
                out.append((name, None))
        return out

    def installed_paths(self) -> list[str]:
        """Every runtime binary a handler may name, that is installed."""
        paths = set()
        if self._default is not None:
            paths.add(self._default)
        for wanted in self._handlers.values():
            path = wanted if os.path.isabs(wanted) else shutil.which(wanted)
            if path:
                paths.add(path)
        return sorted(paths)

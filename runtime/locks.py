"""Per-object locks (one per pod or container id) that serialise lifecycle
calls on the object, and the rule that a started step runs to its end."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable

log = logging.getLogger("crispy.pods")


class ObjectLocks:
    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}

    def lock(self, object_id: str) -> asyncio.Lock:
        lk = self._locks.get(object_id)
        if lk is None:
            lk = self._locks[object_id] = asyncio.Lock()
        return lk

    def forget(self, object_id: str) -> None:
        self._locks.pop(object_id, None)


async def uncancellable(coro: Awaitable[Any]) -> Any:
    """Runs a lifecycle step to its end even if the caller goes away (its
    deadline passed): a half-done stop or remove would leave state that
    neither the caller nor its retry could see. The lock is held by the
    step itself, so it stays held until the step is really over."""
    task = asyncio.ensure_future(coro)

    def _log(t: "asyncio.Future[Any]") -> None:
        if not t.cancelled() and t.exception() is not None:
            log.info("a lifecycle step finished with an error after its caller left",
                     extra={"fields": {"error": str(t.exception())}})
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        task.add_done_callback(_log)
        raise

"""Name reservations: what makes RunPodSandbox and CreateContainer safe to
retry. The work runs in its own task, shielded from the caller's deadline,
and a retry with the same metadata and the same request joins that task (or
gets its finished result) instead of failing with a clash or making a
second copy. A failed or cancelled work frees the name."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Hashable

from runtime.errors import AlreadyExists
from runtime.store import ContainerRecord, SandboxRecord


@dataclass
class _Reservation:
    digest: str
    task: "asyncio.Future[Any]"
    owner_id: str = ""


def request_digest(*messages: Any) -> str:
    """Fingerprint of a request, to tell a retry from a clash."""
    h = hashlib.sha256()
    for m in messages:
        h.update(m.SerializeToString(deterministic=True) if hasattr(m, "SerializeToString") else str(m).encode())
        h.update(b"\0")
    return h.hexdigest()


def pod_key(name: str, namespace: str, uid: str, attempt: int) -> Hashable:
    return ("pod", name, namespace, uid, attempt)


def pod_key_of(rec: SandboxRecord) -> Hashable:
    return pod_key(rec.name, rec.namespace, rec.uid, rec.attempt)


def container_key(sandbox_id: str, name: str, attempt: int) -> Hashable:
    return ("ctr", sandbox_id, name, attempt)


def container_key_of(ctr: ContainerRecord) -> Hashable:
    return container_key(ctr.sandbox_id, ctr.name, ctr.attempt)


class Reservations:
    def __init__(self) -> None:
        self._names: dict[Hashable, _Reservation] = {}

    def reserve_done(self, key: Hashable, digest: str, owner_id: str) -> None:
        """A name whose work finished before (a record loaded at start-up)."""
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        fut.set_result(owner_id)
        self._names[key] = _Reservation(digest, fut, owner_id)

    def release(self, key: Hashable, owner_id: str) -> None:
        r = self._names.get(key)
        if r is not None and r.owner_id == owner_id:
            del self._names[key]

    async def reserved(self, key: Hashable, digest: str, what: str,
                       work: Callable[[], Awaitable[Any]]) -> Any:
        """Runs `work` once per name; see the module docstring."""
        r = self._names.get(key)
        if r is not None:
            if r.digest != digest:
                holder = f"{r.owner_id[:13]}" if r.owner_id else "a request still in progress"
                raise AlreadyExists(f"{what} is already in use by {holder}; "
                                    "remove it first or use a new attempt number")
            return await asyncio.shield(r.task)
        task = asyncio.ensure_future(work())
        reservation = _Reservation(digest, task)
        self._names[key] = reservation

        def _done(t: "asyncio.Future[Any]") -> None:
            if t.cancelled() or t.exception() is not None:
                if self._names.get(key) is reservation:
                    del self._names[key]
            else:
                reservation.owner_id = t.result()
        task.add_done_callback(_done)
        return await asyncio.shield(task)

"""The pods and containers crispy knows, in memory: the records loaded at
start-up plus those made since, looked up by id or by a unique id prefix
(crictl and people type prefixes)."""

from __future__ import annotations

from typing import TypeVar

from runtime.errors import InvalidArgument, NotFound
from runtime.store import ContainerRecord, SandboxRecord

R = TypeVar("R", SandboxRecord, ContainerRecord)


class RecordIndex:
    def __init__(self) -> None:
        self.sandboxes: dict[str, SandboxRecord] = {}
        self.containers: dict[str, ContainerRecord] = {}

    def sandbox(self, ref: str) -> SandboxRecord:
        return _find(self.sandboxes, ref, "pod sandbox")

    def container(self, ref: str) -> ContainerRecord:
        return _find(self.containers, ref, "container")

    def containers_of(self, sandbox_id: str) -> list[ContainerRecord]:
        return [c for c in self.containers.values() if c.sandbox_id == sandbox_id]

    def image_users(self, image_id: str) -> list[str]:
        """IDs of containers created from `image_id` or mounting it as an
        image volume (RemoveImage refuses while there are any)."""
        return [c.id for c in self.containers.values()
                if c.image_id == image_id or any(v.get("image_id") == image_id for v in c.image_volumes)]


def _find(table: dict[str, R], ref: str, what: str) -> R:
    if not ref:
        raise InvalidArgument(f"{what} id is empty")
    rec = table.get(ref)
    if rec is not None:
        return rec
    matches = [v for k, v in table.items() if k.startswith(ref)]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise InvalidArgument(f"{what} id prefix {ref!r} is ambiguous ({len(matches)} match); give more characters")
    raise NotFound(f"{what} {ref!r} not found")

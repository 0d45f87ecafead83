"""Stream* replies in pages: as many items per message as fit well under
the gRPC message limit, so a list of any length goes through (a List reply
past the limit answers RESOURCE_EXHAUSTED instead)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Generic, TypeVar

from google.protobuf.message import Message

from cri.limits import MAX_MESSAGE_BYTES

M = TypeVar("M", bound=Message)

# A quarter of the limit: one item may carry 512 KiB of metadata
# (cri/limits.py), and a page's framing adds a few bytes per item.
PAGE_BYTES = MAX_MESSAGE_BYTES // 4


class _Page(Generic[M]):
    """Items gathered until the next would take the page past `budget`
    encoded bytes; an item bigger than the budget alone makes a page."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.items: list[M] = []
        self.size = 0

    def add(self, item: M) -> list[M] | None:
        """Adds `item`; the full page it closed, if it closed one."""
        # The field tag and length prefix of a repeated message.
        n = item.ByteSize() + 6
        full = None
        if self.items and self.size + n > self.budget:
            full, self.items, self.size = self.items, [], 0
        self.items.append(item)
        self.size += n
        return full


def pages(items: Iterable[M], budget: int = PAGE_BYTES) -> Iterator[list[M]]:
    """`items` in consecutive pages (see _Page). Nothing for no items."""
    page: _Page[M] = _Page(budget)
    for item in items:
        full = page.add(item)
        if full:
            yield full
    if page.items:
        yield page.items


async def async_pages(items: AsyncIterator[M], budget: int = PAGE_BYTES) -> AsyncIterator[list[M]]:
    """`pages` of items read one by one (stats: each page is sent before
    the next is read)."""
    page: _Page[M] = _Page(budget)
    async for item in items:
        full = page.add(item)
        if full:
            yield full
    if page.items:
        yield page.items

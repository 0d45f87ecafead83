"""Stream* replies in pages: as many items per message as fit well under
the gRPC message limit, so a list of any length goes through (a List reply
past the limit answers RESOURCE_EXHAUSTED instead)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

from google.protobuf.message import Message

from cri.limits import MAX_MESSAGE_BYTES

M = TypeVar("M", bound=Message)

# A quarter of the limit: one item may carry 512 KiB of metadata
# (cri/limits.py), and a page's framing adds a few bytes per item.
PAGE_BYTES = MAX_MESSAGE_BYTES // 4


def pages(items: Iterable[M], budget: int = PAGE_BYTES) -> Iterator[list[M]]:
    """`items` in consecutive lists of at most `budget` encoded bytes each
    (an item bigger than that alone makes a page of its own). Nothing for
    no items."""
    page: list[M] = []
    size = 0
    for item in items:
        # The field tag and length prefix of a repeated message.
        n = item.ByteSize() + 6
        if page and size + n > budget:
            yield page
            page, size = [], 0
        page.append(item)
        size += n
    if page:
        yield page

"""What the container lifecycle needs from the image store."""

from __future__ import annotations

from typing import Any, Protocol


class ImageProvider(Protocol):
    async def get(self, ref_or_id: str) -> Any:
        """The image record (id, repo_digests, config); NotFound if absent."""

    def layer_dirs(self, record: Any) -> list[str]:
        """The image's unpacked layers, bottom first, as overlay lower dirs."""

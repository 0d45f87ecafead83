"""ImageService: pulling, listing and removing images."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cri.daemon import Daemon


class ImageServicer:
    def __init__(self, daemon: "Daemon") -> None:
        self.daemon = daemon

"""The CRI's list-filter rules shared by pods, containers and their stats."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def labels_match(config: Mapping[str, Any], selector: Mapping[str, str]) -> bool:
    """Every selector key is a label of the object with exactly that value
    (an empty selector matches everything)."""
    labels = config.get("labels", {})
    return all(labels.get(k) == v for k, v in selector.items())

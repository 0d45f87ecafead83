"""Modules loaded when one of their names is first used, not when crispy
starts: a big dependency that only some nodes or some calls need (httpx
for the first pull, prometheus_client with the metrics endpoint on) costs
the idle daemon nothing."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType


def on_first_use(name: str) -> ModuleType:
    """The module `name`, executed when one of its attributes is first read
    (importlib's LazyLoader); the loaded one if it already is."""
    found = sys.modules.get(name)
    if found is not None:
        return found
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ImportError(f"no module named {name!r}")
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    return module

"""mirrors_only: an air-gapped node's pulls never leave for the registry itself."""

import pytest

from cri.config import RegistryHostConfig
from images.registry.hosts import endpoints_for
from runtime.errors import InvalidArgument


def test_mirrors_only_drops_the_upstream_endpoint():
    regs = {"gcr.io": RegistryHostConfig(mirrors=["http://127.0.0.1:5000"], mirrors_only=True)}
    eps = endpoints_for("gcr.io", regs)
    assert [str(e) for e in eps] == ["http://127.0.0.1:5000"]
    assert all(e.mirror for e in eps)


def test_without_mirrors_only_the_upstream_is_the_fallback():
    regs = {"gcr.io": RegistryHostConfig(mirrors=["http://127.0.0.1:5000"])}
    assert [str(e) for e in endpoints_for("gcr.io", regs)][-1] == "https://gcr.io"


def test_mirrors_only_without_mirrors_is_a_clear_error():
    with pytest.raises(InvalidArgument) as e:
        endpoints_for("quay.io", {"quay.io": RegistryHostConfig(mirrors_only=True)})
    assert "mirrors_only" in e.value.message and "quay.io" in e.value.message

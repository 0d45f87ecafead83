from __future__ import annotations

import shutil
from typing import Iterator

import pytest

from tests.daemon_proc import DaemonProcess, tmp_base


@pytest.fixture
def daemon_base() -> Iterator:
    base = tmp_base()
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def daemon(daemon_base) -> Iterator[DaemonProcess]:
    d = DaemonProcess(daemon_base).start()
    yield d
    d.stop()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # tests/integration/ is by definition what needs root and the real
    # components: `-m integration` selects the same tests as the directory.
    for item in items:
        if "integration" in item.path.parts[-2:-1]:
            item.add_marker(pytest.mark.integration)

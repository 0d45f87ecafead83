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

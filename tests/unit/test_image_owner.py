"""Temp files of interrupted pulls and imports are owned by `<pid>.<start
time>`: at start-up they are removed when that process is gone, also when
its pid is a zombie or belongs to another process by now, and kept while
their writer really runs."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path

from cri.config import Config
from images import owner
from images.manager import ImageManager


def _open(root: Path) -> ImageManager:
    m = ImageManager(Config(), root, lambda _id: [])
    asyncio.run(m.open())
    return m


def _temps(m: ImageManager, token: str, tag: str) -> list[Path]:
    d = m.snapshots.dir / f".tmp-{tag * 64}-{token}-0000"
    d.mkdir()
    (d / "half").write_bytes(b"x")
    f = m.content.ingest_dir / f"import-{token}-{tag * 12}.tmp"
    f.write_bytes(b"y")
    return [d, f]



def _state(pid: int) -> str:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rfind(")") + 2]


def test_owner_token_tells_live_dead_zombie_and_reused(tmp_path):
    me = owner.current()
    assert me == owner.token_of(os.getpid()) and owner.alive(me)
    pid, start = me.split(".")
    assert not owner.alive(f"{pid}.{int(start) + 1}")  # same pid, another process
    assert not owner.alive("garbage") and not owner.alive("0.1")
    p = subprocess.Popen(["sleep", "600"])
    try:
        tok = owner.token_of(p.pid)
        assert owner.alive(tok) and owner.alive(str(p.pid))
        os.kill(p.pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while _state(p.pid) != "Z":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        # kill(pid, 0) still succeeds on a zombie: not good enough.
        os.kill(p.pid, 0)
        assert not owner.alive(tok) and not owner.alive(str(p.pid))
    finally:
        p.kill()
        p.wait()


def test_open_keeps_temps_of_a_live_writer_and_removes_those_of_a_reused_pid(tmp_path):
    m = _open(tmp_path)
    p = subprocess.Popen(["sleep", "600"])
    try:
        tok = owner.token_of(p.pid)
        pid, start = tok.split(".")
        live = _temps(m, tok, "a")
        reused = _temps(m, f"{pid}.{int(start) - 1}", "b")
        _open(tmp_path)
        assert all(x.exists() for x in live)
        assert not any(x.exists() for x in reused)
    finally:
        p.kill()
        p.wait()


def test_open_removes_temps_whose_writer_is_a_zombie(tmp_path):
    m = _open(tmp_path)
    p = subprocess.Popen(["sleep", "600"])
    try:
        tok = owner.token_of(p.pid)
        os.kill(p.pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while _state(p.pid) != "Z":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        # Both forms: with the start time, and the bare pid older crispy wrote.
        stale = _temps(m, tok, "c") + _temps(m, str(p.pid), "d")
        _open(tmp_path)
        assert not any(x.exists() for x in stale)
    finally:
        p.wait()

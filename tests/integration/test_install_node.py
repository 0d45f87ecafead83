"""The README's "Install on a node" flow, in a temporary root: `pip
install` of this checkout into a venv, `crispy install` (its own venv
under the prefix, unit, config, CNI network), the systemctl-free smoke
test (`crispy check`, `systemd-analyze verify`), and `crispy uninstall`
leaving nothing behind. Needs PyPI (pip fetches crispy's dependencies)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(*cmd: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(list(cmd), cwd=cwd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_pip_install_then_crispy_install_check_verify_uninstall():
    base = Path(tempfile.mkdtemp(prefix="crispy-node-"))
    # pip builds in the source tree; build output must not be left in the checkout.
    src = base / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "__pycache__",
                                                             ".mypy_cache", ".pytest_cache", "critest", "bench"))
    try:
        _run("/usr/bin/python3", "-m", "venv", str(base / "setup"), cwd=base)
        _run(str(base / "setup/bin/pip"), "install", "-q", str(src), cwd=base)
        where = ["--prefix", str(base / "opt/crispy"), "--unit-dir", str(base / "etc/systemd/system"),
                 "--config-dir", str(base / "etc/crispy"), "--cni-conf-dir", str(base / "etc/cni/net.d"),
                 "--data-root", str(base / "var/lib/crispy")]
        before = sorted(p.name for p in base.iterdir())
        out = _run(str(base / "setup/bin/crispy"), "install", *where, cwd=base).stdout
        assert f"installed crispy from {src} into the venv" in out
        crispy = base / "opt/crispy/bin/crispy"
        check = _run(str(crispy), "check", "--config", str(base / "etc/crispy/crispy.toml"), cwd=base).stdout
        assert "crispy can run here" in check and "ok    CNI config" in check
        _run("systemd-analyze", "verify", str(base / "etc/systemd/system/crispy.service"), cwd=base)
        # The installed package carries its data files.
        _run(str(base / "opt/crispy/bin/python"), "-c",
             "from importlib import resources as r; "
             "assert r.files('runtime').joinpath('seccomp_default.json').is_file(); "
             "assert r.files('cri.systemd').joinpath('crispy.service').is_file(); "
             "assert r.files('cri.proto').joinpath('api.proto').is_file()", cwd=base)
        _run(str(base / "setup/bin/crispy"), "uninstall", *where[:2], *where[-2:], cwd=base)
        assert sorted(p.name for p in base.iterdir()) == before
    finally:
        shutil.rmtree(base, ignore_errors=True)

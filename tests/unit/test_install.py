"""crispy install / uninstall into a temporary prefix, the shipped unit."""

import json
import shutil
import subprocess
import tomllib

import pytest

from cri import cli, install


def _tree(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture
def node(tmp_path):
    (tmp_path / "keep").mkdir()  # something of the operator's: must survive
    args = ["--cni-conf-dir", str(tmp_path / "etc/cni/net.d"), "--data-root", str(tmp_path / "var/lib/crispy"),
            "--state-root", str(tmp_path / "run/crispy")]
    where = ["--prefix", str(tmp_path / "opt/crispy"), "--unit-dir", str(tmp_path / "etc/systemd/system"),
             "--config-dir", str(tmp_path / "etc/crispy")]
    return tmp_path, args, where


def test_install_then_uninstall_leaves_nothing(node, capsys):
    root, args, where = node
    before = _tree(root)
    assert cli.main(["install", *where, "--no-venv", *args]) == 0
    unit = (root / "etc/systemd/system/crispy.service").read_text()
    assert f"ExecStart={root}/opt/crispy/bin/crispy --config {root}/etc/crispy/crispy.toml" in unit
    assert (root / "etc/crispy/crispy.d").is_dir()
    # The config written is the one install ran with, and it loads.
    installed = tomllib.loads((root / "etc/crispy/crispy.toml").read_text())
    assert installed["data_root"] == str(root / "var/lib/crispy")
    assert installed["cni"]["conf_dir"] == str(root / "etc/cni/net.d")
    conflist = json.loads((root / "etc/cni/net.d/10-crispy.conflist").read_text())
    assert conflist["plugins"][0]["type"] == "bridge"
    # The wrapper runs this crispy, with the installed config.
    out = subprocess.run([str(root / "opt/crispy/bin/crispy"), "--config", str(root / "etc/crispy/crispy.toml"),
                          "version"], capture_output=True, text=True, check=True).stdout
    assert out.startswith("crispy ")
    capsys.readouterr()
    assert cli.main(["uninstall", *where[:2], *args]) == 0
    assert _tree(root) == before
    assert "kept" in capsys.readouterr().out  # says the data stays


def test_install_keeps_an_existing_config_and_uninstall_keeps_an_edited_one(node, capsys):
    root, args, where = node
    cfg = root / "etc/crispy/crispy.toml"
    assert cli.main(["install", *where, "--no-venv", *args]) == 0
    cfg.write_text(cfg.read_text() + "\n# mine\n")
    assert cli.main(["uninstall", *where[:2], *args]) == 0
    assert cfg.exists() and "kept" in capsys.readouterr().out
    # A second install leaves the operator's file alone.
    assert cli.main(["install", *where, "--no-venv", *args]) == 0
    assert cfg.read_text().endswith("# mine\n")
    assert cli.main(["uninstall", *where[:2], *args]) == 0


def test_install_refuses_twice_and_uninstall_refuses_nothing_installed(node, capsys):
    root, args, where = node
    assert cli.main(["uninstall", *where[:2], *args]) == 1
    assert "no crispy installed" in capsys.readouterr().err
    assert cli.main(["install", *where, "--no-venv", *args]) == 0
    assert cli.main(["install", *where, "--no-venv", *args]) == 1
    assert "already installed" in capsys.readouterr().err
    assert cli.main(["uninstall", *where[:2], *args]) == 0


def test_purge_removes_data_root(node):
    root, args, where = node
    assert cli.main(["install", *where, "--no-venv", *args]) == 0
    (root / "var/lib/crispy/images").mkdir(parents=True)
    assert cli.main(["uninstall", *where[:2], *args]) == 0
    assert (root / "var/lib/crispy/images").is_dir()
    assert cli.main(["install", *where, "--no-venv", *args]) == 0
    assert cli.main(["uninstall", "--purge", *where[:2], *args]) == 0
    assert not (root / "var/lib/crispy").exists()


def test_the_shipped_unit_is_what_a_node_runtime_needs():
    unit = install.unit_template()
    for line in ("Type=notify", "Delegate=yes", "KillMode=process", "Restart=always", "LimitNOFILE=1048576",
                 "TasksMax=infinity", "ExecStart=@CRISPY@", "ExecReload=/bin/kill -HUP $MAINPID"):
        assert f"\n{line}\n" in unit


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_installed_unit_passes_systemd_analyze_verify(node):
    root, args, where = node
    assert cli.main(["install", *where, "--no-venv", *args]) == 0
    try:
        done = subprocess.run(["systemd-analyze", "verify", str(root / "etc/systemd/system/crispy.service")],
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        # verify also warns without failing: none of those either.
        assert "crispy.service" not in done.stderr, done.stderr
        broken = root / "broken.service"
        broken.write_text(install.render_unit([str(root / "nowhere/crispy")]))
        assert subprocess.run(["systemd-analyze", "verify", str(broken)], capture_output=True).returncode != 0
    finally:
        assert cli.main(["uninstall", *where[:2], *args]) == 0

import argparse

import pytest

from cri import config
from cri.errors import InvalidArgument


def _parse(argv):
    p = argparse.ArgumentParser()
    config.add_flags(p)
    return p.parse_args(argv)


def test_defaults_work_without_a_file(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "DEFAULT_CONFIG_PATH", tmp_path / "absent.toml")
    cfg = config.load(_parse([]))
    assert cfg.socket == "/run/crispy/crispy.sock"
    assert cfg.data_root == "/var/lib/crispy"
    assert cfg.state_root == "/run/crispy"


def test_flag_beats_file_and_set(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('[cni]\nconf_dir = "/from/file"\nplugin_timeout = 5\n')
    cfg = config.load(_parse(["--config", str(f), "--set", "cni.conf_dir='/from/set'", "--cni-conf-dir", "/from/flag"]))
    assert cfg.cni.conf_dir == "/from/flag"
    assert cfg.cni.plugin_timeout == 5.0


def test_every_scalar_key_has_a_flag():
    flags = {flag for flag, _, _ in config._scalar_fields(config.Config)}
    assert "--runtime-cgroup-driver" in flags
    assert "--images-max-concurrent-downloads" in flags
    assert "--streaming-port" in flags
    assert "--log-format" in flags


def test_set_reaches_tables_of_tables():
    cfg = config.load(_parse(["--config", "/dev/null", "--set", 'registries."docker.io".mirrors=["http://127.0.0.1:5000"]']))
    assert cfg.registries["docker.io"].mirrors == ["http://127.0.0.1:5000"]


@pytest.mark.parametrize("text,needle", [
    ("bogus = 1", "unknown key"),
    ("[images]\nmax_concurrent_downloads = 'x'", "must be int"),
    ("log_format = 'xml'", "log_format"),
    ("socket = 'relative.sock'", "absolute"),
    ("[runtime]\ncgroup_driver = 'nope'", "cgroup_driver"),
])
def test_bad_values_are_refused_clearly(tmp_path, text, needle):
    f = tmp_path / "c.toml"
    f.write_text(text)
    with pytest.raises(InvalidArgument) as e:
        config.load(_parse(["--config", str(f)]))
    assert needle in e.value.message

import argparse

import pytest

from cri import config
from runtime.errors import InvalidArgument


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
    # NRI is on, on containerd's socket, as in containerd 2.x.
    assert cfg.nri.enable and cfg.nri.socket_path == "/var/run/nri/nri.sock"


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
    ("log_level = 'verbose'", "log_level must be one of debug, info, warning, error, critical"),
    ("shutdown_grace = -1", "shutdown_grace must be at least 0"),
    ("[images]\nmax_concurrent_downloads = 0", "max_concurrent_downloads must be at least 1"),
    ("[streaming]\nport = 70000", "streaming.port must be between 0 and 65535"),
    ("[cni]\ndefault_subnet = '10.88.0.0/33'", "cni.default_subnet"),
    ("[runtime]\noci_runtime = ''", "runtime.oci_runtime"),
    ("[runtime.handlers]\nfast = ''", "runtime.handlers.fast"),
    ("[runtime]\ndefault_cgroup_parent = 'crispy'", "default_cgroup_parent"),
    ("[nri]\nrequest_timeout = 0", "nri.request_timeout must be more than 0"),
    ("[nri]\nsocket_path = 'nri.sock'", "nri.socket_path must be an absolute path"),
    ("[nri]\nenable = 'yes'", "must be bool"),
])
def test_bad_values_are_refused_clearly(tmp_path, text, needle):
    f = tmp_path / "c.toml"
    f.write_text(text)
    with pytest.raises(InvalidArgument) as e:
        config.load(_parse(["--config", str(f)]))
    assert needle in e.value.message


@pytest.mark.parametrize("argv,needle", [
    (["--log-level", "verbose", "config"], "log_level must be one of"),
    (["--log-format", "xml", "version"], "log_format must be one of text, json"),
    (["--runtime-cgroup-driver", "cgroupv2", "config"], "runtime.cgroup_driver must be one of cgroupfs, systemd"),
    (["--set", "images.pull_stall_timeout=0", "config"], "images.pull_stall_timeout must be more than 0"),
])
def test_the_command_refuses_bad_values_in_one_line_with_status_2(argv, needle, tmp_path, capsys):
    from cri import cli
    assert cli.main(["--config", "/dev/null", *argv]) == 2
    err = capsys.readouterr().err
    assert needle in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err

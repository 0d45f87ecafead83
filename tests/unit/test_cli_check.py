"""crispy check's verdicts and exit status, and crispy status' report."""

import argparse
import socket

from cri import cli_check, cli_status, config
from cri.proto import api_pb2 as pb


def _cfg(tmp_path, **cni):
    cfg = config.Config()
    cfg.cni.conf_dir = str(tmp_path / "net.d")
    cfg.cni.bin_dirs = [str(tmp_path / "bin")]
    return cfg


def _plugin(tmp_path, name):
    p = tmp_path / "bin" / name
    p.parent.mkdir(exist_ok=True)
    p.write_text("#!/bin/sh\n")
    p.chmod(0o755)


def test_cni_without_plugins_fails_and_without_config_warns(tmp_path):
    got = {v.what: v for v in cli_check.check_cni(_cfg(tmp_path))}
    assert got["CNI config"].level == cli_check.WARN and "cni-install" in got["CNI config"].detail
    assert got["CNI plugins"].level == cli_check.FAIL and "bridge" in got["CNI plugins"].detail
    for name in cli_check.DEFAULT_NETWORK_PLUGINS:
        _plugin(tmp_path, name)
    assert {v.level for v in cli_check.check_cni(_cfg(tmp_path))} == {cli_check.OK, cli_check.WARN}


def test_cni_plugins_of_the_configured_network_are_checked(tmp_path):
    (tmp_path / "net.d").mkdir()
    (tmp_path / "net.d" / "10-x.conflist").write_text(
        '{"cniVersion": "1.0.0", "name": "x", "plugins": [{"type": "macvlan"}]}')
    got = {v.what: v for v in cli_check.check_cni(_cfg(tmp_path))}
    assert got["CNI config"].level == cli_check.OK
    assert got["CNI plugins"].level == cli_check.FAIL and "macvlan" in got["CNI plugins"].detail
    _plugin(tmp_path, "macvlan")
    assert all(v.level == cli_check.OK for v in cli_check.check_cni(_cfg(tmp_path)))


def test_missing_conmon_and_handler_runtime_fail(tmp_path):
    cfg = config.Config()
    cfg.runtime.conmon = str(tmp_path / "no-conmon")
    cfg.runtime.handlers = {"fast": "no-such-runtime"}
    got = {v.what: v for v in cli_check.check_runtimes(cfg)}
    assert got["conmon"].level == cli_check.FAIL
    assert got["handler fast"].level == cli_check.FAIL


def test_a_broken_config_is_a_failing_line_not_a_crash(tmp_path):
    bad = tmp_path / "c.toml"
    bad.write_text("log_level = 3\n")
    found = cli_check.verdicts(argparse.Namespace(config=str(bad)))
    assert found[0].what == "config" and found[0].level == cli_check.FAIL and f"{bad}:1" in found[0].detail
    assert cli_check.exit_code(found) == 1
    assert len(found) > 5  # the other checks still ran


def test_render_one_line_per_verdict():
    text = cli_check.render([cli_check.Verdict("a", cli_check.OK, "fine"),
                             cli_check.Verdict("longer", cli_check.FAIL, "broken")])
    assert text.splitlines() == ["ok    a       fine", "FAIL  longer  broken"]
    assert cli_check.exit_code([cli_check.Verdict("a", cli_check.WARN, "")]) == 0


def test_status_report():
    version = pb.VersionResponse(runtime_name="crispy", runtime_version="0.1.0", runtime_api_version="v1")
    status = pb.StatusResponse(status=pb.RuntimeStatus(conditions=[
        pb.RuntimeCondition(type="RuntimeReady", status=True),
        pb.RuntimeCondition(type="NetworkReady", status=False, reason="NetworkPluginNotReady", message="no config")]))
    pods = [pb.PodSandbox(state=pb.SANDBOX_READY), pb.PodSandbox(state=pb.SANDBOX_NOTREADY)]
    ctrs = [pb.Container(state=pb.CONTAINER_RUNNING)]
    r = cli_status.render("/s", version, status, pods, ctrs)
    assert not r.ok
    text = "\n".join(r.lines)
    assert "crispy 0.1.0 (CRI v1)" in text
    assert "NetworkReady: false (NetworkPluginNotReady: no config)" in text
    assert "pods:         2 (1 ready, 1 not ready)" in text
    assert "containers:   1 (1 running" in text


def test_status_says_down_for_a_missing_or_stale_socket(tmp_path, capsys):
    assert cli_status.run(str(tmp_path / "none.sock"), 0.5) == 1
    assert "down" in capsys.readouterr().out
    stale = tmp_path / "stale.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(stale))
    s.close()  # the file stays, nobody listens
    assert cli_status.run(str(stale), 0.5) == 1
    assert "down (nothing answers" in capsys.readouterr().out

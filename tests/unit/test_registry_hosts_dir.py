"""hosts.toml and docker certs.d parsing, re-reading on change, errors
that name file, line and key."""

import argparse
import os
import time
from types import SimpleNamespace

import pytest

from cri import config
from images.registry import hosts_dir
from images.registry.hosts_dir import HostsDir, HostsFileError, parse_hosts_toml
from images.registry.puller import Puller
from images.settings import ImagesConfig
from runtime.errors import InvalidArgument

FULL = '''server = "https://registry.example:5000"
ca = "ca.crt"
client = [["client.cert", "client.key"]]
[header]
x-node = "n1"

[host."https://m1.example/prefix"]
capabilities = ["pull", "resolve"]
ca = ["/etc/a.pem", "b.pem"]
client = "/etc/both.pem"
skip_verify = true

[host."http://m2.example:5000/api/v2"]
capabilities = ["pull"]
override_path = true
[host."http://m2.example:5000/api/v2".header]
x-multi = ["a", "b"]
'''


def test_full_hosts_toml(tmp_path):
    eps = parse_hosts_toml(FULL, tmp_path / "hosts.toml", "registry.example:5000")
    m1, m2, server = eps
    assert [e.mirror for e in eps] == [True, True, False]
    assert (m1.host, m1.base_path, m1.scheme, m1.verify) == ("m1.example", "/prefix", "https", False)
    assert (m1.ca_file, m1.extra_cas) == ("/etc/a.pem", (str(tmp_path / "b.pem"),))
    assert m1.client_cert == ("/etc/both.pem", "")
    assert m2.capabilities == frozenset({"pull"}) and m2.override_path and m2.base_path == "/api/v2"
    assert m2.api_path("/v2/app/manifests/v1") == "/app/manifests/v1"
    assert str(m2) == "http://m2.example:5000/api/v2" and not m2.verify and not m2.http_fallback
    assert m2.headers == (("x-multi", "a, b"),)
    assert (server.host, server.scheme, server.verify) == ("registry.example:5000", "https", True)
    assert server.ca_file == str(tmp_path / "ca.crt")
    assert server.client_cert == (str(tmp_path / "client.cert"), str(tmp_path / "client.key"))
    assert server.headers == (("x-node", "n1"),) and server.api_path("/v2/x") == "/v2/x"
    assert server.config_key == "registry.example:5000" and server.source == str(tmp_path / "hosts.toml")


def test_defaults_server_is_the_registry_itself(tmp_path):
    (server,) = parse_hosts_toml("", tmp_path / "hosts.toml", "docker.io")
    assert str(server) == "https://registry-1.docker.io" and server.verify
    (loop,) = parse_hosts_toml("", tmp_path / "hosts.toml", "127.0.0.1:5000")
    assert loop.http_fallback and not loop.verify  # as crispy's own tables treat loopback
    m, _ = parse_hosts_toml('[host."127.0.0.1:5001/v2"]\n', tmp_path / "hosts.toml", "docker.io")
    assert m.base_path == "" and m.capabilities == frozenset({"pull", "resolve"})


@pytest.mark.parametrize("text,line,needle", [
    ('server = "https://r"\nbogus = 1\n', 2, "bogus: unknown key"),
    ('[host."https://m"]\ncapabilities = ["fly"]\n', 2, 'host."https://m".capabilities: must be a list of'),
    ('[host."https://m"]\n\nclient = [["only-one"]]\n', 3, 'host."https://m".client'),
    ('[host."https://m"]\nskip_verify = "yes"\n', 2, "skip_verify: must be true or false"),
    ('server = "ftp://r"\n', 1, "server: 'ftp://r' must be http(s)"),
    ('[header]\nx = 1\n', 2, "header.x: must be a string"),
    ('[host."https://m"\n', None, "not valid TOML"),
])
def test_errors_name_file_line_and_key(tmp_path, text, line, needle):
    path = tmp_path / "hosts.toml"
    with pytest.raises(HostsFileError) as e:
        parse_hosts_toml(text, path, "r.example")
    where = f"{path}:{line}:" if line else f"{path}:"
    assert e.value.message.startswith(where) and needle in e.value.message, e.value.message


def test_docker_certs_d(tmp_path):
    d = tmp_path / "certs.d" / "r.example"
    d.mkdir(parents=True)
    for name in ("ca.crt", "client.cert", "client.key"):
        (d / name).write_text("x")
    (server,) = HostsDir().endpoints(str(tmp_path / "certs.d"), "r.example")
    assert server.ca_file == str(d / "ca.crt") and server.verify
    assert server.client_cert == (str(d / "client.cert"), str(d / "client.key"))
    (d / "client.key").unlink()
    with pytest.raises(HostsFileError) as e:
        hosts_dir.validate(str(tmp_path / "certs.d"))
    assert "without its key" in e.value.message


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    # A distinct mtime even on coarse clocks.
    t = time.time() + len(text)
    os.utime(path, (t, t))


def test_reread_on_change_and_last_good_kept_when_broken(tmp_path):
    cp = str(tmp_path / "certs.d")
    h = HostsDir()
    assert h.endpoints(cp, "r.example") is None
    f = tmp_path / "certs.d" / "r.example" / "hosts.toml"
    _write(f, '[host."http://m1"]\n')
    assert [e.host for e in h.endpoints(cp, "r.example")] == ["m1", "r.example"]
    first = h.endpoints(cp, "r.example")
    assert h.endpoints(cp, "r.example") is first  # unchanged: not parsed again
    _write(f, '[host."http://m2.example"]\n')
    assert [e.host for e in h.endpoints(cp, "r.example")] == ["m2.example", "r.example"]
    _write(f, '[host."http://m3"]\nbogus = 1\n')
    assert [e.host for e in h.endpoints(cp, "r.example")] == ["m2.example", "r.example"]
    # A fresh reader has no good reading to fall back on: the error.
    with pytest.raises(HostsFileError):
        HostsDir().endpoints(cp, "r.example")


def test_default_dir_applies_to_hosts_without_their_own(tmp_path):
    _write(tmp_path / "certs.d" / "_default" / "hosts.toml", '[host."http://cache.local"]\n')
    eps = HostsDir().endpoints(str(tmp_path / "certs.d"), "quay.io")
    assert [e.host for e in eps] == ["cache.local", "quay.io"]


def test_a_broken_hosts_toml_stops_the_config_from_loading(tmp_path):
    _write(tmp_path / "certs.d" / "r.example" / "hosts.toml", "server = 1\n")
    with pytest.raises(InvalidArgument) as e:
        config.load(_ns(["--config", "/dev/null", "--registry-config-path", str(tmp_path / "certs.d")]))
    assert "hosts.toml:1: server" in e.value.message


def _ns(argv):
    p = argparse.ArgumentParser()
    config.add_flags(p)
    return p.parse_args(argv)


def test_crispys_own_table_wins_over_the_hosts_dir_and_push_only_hosts_are_dropped(tmp_path):
    cfg = config.Config()
    cfg.registry.config_path = str(tmp_path / "certs.d")
    _write(tmp_path / "certs.d" / "r.example" / "hosts.toml",
           '[host."http://push-only"]\ncapabilities = ["push"]\n[host."http://m1"]\n')
    puller = Puller(SimpleNamespace(images_cfg=ImagesConfig(), config=cfg))
    assert [str(e) for e in puller._endpoints("r.example")] == ["http://m1", "https://r.example"]
    cfg.registries = {"r.example": config.RegistryHostConfig(mirrors=["http://own"])}
    assert [str(e) for e in puller._endpoints("r.example")] == ["http://own", "https://r.example"]
    # Other hosts are untouched by either.
    assert [str(e) for e in puller._endpoints("q.example")] == ["https://q.example"]


def test_config_path_must_be_absolute_or_empty():
    with pytest.raises(InvalidArgument) as e:
        config.load(_ns(["--config", "/dev/null", "--registry-config-path", "certs.d"]))
    assert "registry.config_path must be an absolute directory" in e.value.message
    cfg = config.load(_ns(["--config", "/dev/null", "--registry-config-path", ""]))
    assert HostsDir().endpoints(cfg.registry.config_path, "docker.io") is None

"""The configs the bench generates: containerd's config.toml, crispy's
crispy.toml (loaded by crispy's own loader) and the shared CNI conflist."""

import json
import tomllib
from pathlib import Path

from bench import network
from bench.containerd import ContainerdSettings
from bench.containerd import render_config as containerd_config
from bench.crispy import CrispySettings
from bench.crispy import render_config as crispy_config
from cri import config as crispy_cfg

CRI = "io.containerd.grpc.v1.cri"


def _containerd(oci: str = "runc") -> dict:
    s = ContainerdSettings(Path("/tmp/cb x/ctrd"), "/tmp/cb x/cni", "/usr/lib/cni", "127.0.0.1:5000",
                           "127.0.0.1:5000/bench/pause:1", oci)
    return tomllib.loads(containerd_config(s))


def test_containerd_config_keeps_everything_under_its_own_roots():
    cfg = _containerd()
    assert cfg["version"] == 2
    assert cfg["root"] == "/tmp/cb x/ctrd/root"
    assert cfg["state"] == "/tmp/cb x/ctrd/state"
    assert cfg["grpc"]["address"] == "/tmp/cb x/ctrd/containerd.sock"
    assert cfg["plugins"]["io.containerd.internal.v1.opt"]["path"] == "/tmp/cb x/ctrd/opt"


def test_containerd_cri_plugin_settings():
    cri = _containerd()["plugins"][CRI]
    assert cri["sandbox_image"] == "127.0.0.1:5000/bench/pause:1"
    assert cri["stream_server_port"] == "0"  # two instances run side by side
    assert cri["restrict_oom_score_adj"] is True
    assert cri["containerd"]["snapshotter"] == "overlayfs"
    runc = cri["containerd"]["runtimes"]["runc"]
    assert runc["runtime_type"] == "io.containerd.runc.v2"
    assert runc["options"] == {"BinaryName": "runc", "SystemdCgroup": False}
    assert cri["cni"] == {"bin_dir": "/usr/lib/cni", "conf_dir": "/tmp/cb x/cni", "max_conf_num": 1}
    assert cri["registry"]["mirrors"]["127.0.0.1:5000"]["endpoint"] == ["http://127.0.0.1:5000"]
    assert cri["registry"]["configs"]["127.0.0.1:5000"]["tls"]["insecure_skip_verify"] is True


def test_containerd_crun_variant_only_changes_the_binary():
    runc, crun = _containerd("runc"), _containerd("crun")
    assert crun["plugins"][CRI]["containerd"]["runtimes"]["runc"]["options"]["BinaryName"] == "crun"
    crun["plugins"][CRI]["containerd"]["runtimes"]["runc"]["options"]["BinaryName"] = "runc"
    assert crun == runc


def test_crispy_config_loads_with_crispys_loader(tmp_path):
    s = CrispySettings(tmp_path / "crispy", str(tmp_path / "cni"), "/usr/lib/cni", "127.0.0.1:5000", "crun")
    path = tmp_path / "crispy.toml"
    path.write_text(crispy_config(s))
    cfg = crispy_cfg.load(path=str(path))
    assert cfg.socket == s.socket == str(tmp_path / "crispy" / "crispy.sock")
    assert cfg.data_root.startswith(str(tmp_path / "crispy"))
    assert cfg.state_root.startswith(str(tmp_path / "crispy"))
    assert cfg.runtime.oci_runtime == "crun"
    assert cfg.cni.conf_dir == str(tmp_path / "cni")
    assert cfg.cni.bin_dirs == ["/usr/lib/cni"]
    assert cfg.registries["127.0.0.1:5000"].insecure is True
    assert (cfg.log_level, cfg.log_format) == ("debug", "json")  # the bench reads CNI timings from it


def test_conflist_is_one_bridge_network_on_the_bench_subnet(tmp_path):
    net = network.BenchNetwork()
    path = network.write_conf_dir(tmp_path / "cni", net, tmp_path / "ipam")
    conf = json.loads(path.read_text())
    assert path.name.endswith(".conflist")
    assert conf["name"] == "crispybench"
    bridge, portmap = conf["plugins"]
    assert bridge["type"] == "bridge" and bridge["bridge"] == "crispybench0"
    assert bridge["ipam"]["type"] == "host-local"
    assert bridge["ipam"]["ranges"] == [[{"subnet": "10.99.0.0/16"}]]
    assert bridge["ipam"]["dataDir"] == str(tmp_path / "ipam")
    assert portmap == {"type": "portmap", "capabilities": {"portMappings": True}}
    for plugin in ("bridge", "host-local", "portmap"):
        assert (Path(network.CNI_BIN_DIR) / plugin).exists()

"""CNI parts that need no root: config files, the plugin protocol, result
parsing, readiness messages, the default network. Plugin calls here run real
(tiny, fake) plugin executables; the real plugins are in test_cni_integration."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import textwrap
import time
from pathlib import Path

import grpc
import pytest

from cri.rpc import status_for
from runtime.cni import config as cniconfig
from runtime.cni import default_network, invoke
from runtime.cni.config import ConfigError, ConfigSource
from runtime.cni.invoke import CallArgs, PluginError, PluginMissing, PluginTimeout
from runtime.cni.network import CniNetwork, capability_args, cni_args, pod_ips
from runtime.errors import FailedPrecondition, InvalidArgument
from runtime.network import PodNetworkRequest, PortMapping

CONFLIST = {"cniVersion": "1.0.0", "name": "net1",
            "plugins": [{"type": "bridge", "bridge": "b0", "ipam": {"type": "host-local"}},
                        {"type": "portmap", "capabilities": {"portMappings": True}}]}


def write(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return path


def script(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + textwrap.dedent(body))
    path.chmod(0o755)
    return path


# ---- config files ----------------------------------------------------------

def test_conflist_and_single_plugin_conf_parse():
    net = cniconfig.parse_file("a.conflist", json.dumps(CONFLIST).encode())
    assert net.name == "net1" and net.cni_version == "1.0.0"
    assert net.plugin_types == ["bridge", "portmap"]
    assert net.supports_check
    single = {"cniVersion": "0.3.1", "name": "old", "type": "bridge", "bridge": "b1"}
    net = cniconfig.parse_file("b.conf", json.dumps(single).encode())
    assert net.plugin_types == ["bridge"] and net.plugins[0]["bridge"] == "b1"
    assert not net.supports_check  # CHECK came with 0.4.0
    assert cniconfig.from_dict(net.to_dict()) == cniconfig.NetworkConfigList("old", "0.3.1", net.plugins, False)


@pytest.mark.parametrize("doc, words", [
    ("{nope", "not valid JSON"),
    ({"name": "x", "plugins": [{"type": "bridge"}]}, "cniVersion is missing"),
    ({"cniVersion": "0.2.0", "name": "x", "plugins": [{"type": "bridge"}]}, "'0.2.0' is not supported"),
    ({"cniVersion": "1.0.0", "plugins": [{"type": "bridge"}]}, "name is missing"),
    ({"cniVersion": "1.0.0", "name": "x", "plugins": []}, "non-empty list"),
    ({"cniVersion": "1.0.0", "name": "x", "plugins": [{"bridge": "b"}]}, "plugin 0 has no plugin type"),
    ({"cniVersion": "1.0.0", "name": "x", "plugins": [{"type": "../../bin/sh"}]}, "plain plugin name"),
    ({"cniVersion": "1.0.0", "name": "a/b", "plugins": [{"type": "bridge"}]}, "must not contain"),
])
def test_invalid_conflists_are_rejected_with_reason(doc, words):
    data = doc.encode() if isinstance(doc, str) else json.dumps(doc).encode()
    with pytest.raises(ConfigError, match=words.replace("(", r"\(").replace(".", r"\.")):
        cniconfig.parse_file("x.conflist", data)


def test_dir_scan_takes_first_valid_file_in_lexical_order(tmp_path):
    write(tmp_path / "05-broken.conflist", "{")
    write(tmp_path / "20-second.conflist", {**CONFLIST, "name": "second"})
    write(tmp_path / "10-first.conflist", {**CONFLIST, "name": "first"})
    write(tmp_path / "00-ignored.txt", {**CONFLIST, "name": "txt"})
    scan = cniconfig.scan_dir(str(tmp_path))
    assert scan.network.name == "first"
    assert scan.network.source == str(tmp_path / "10-first.conflist")
    assert len(scan.invalid) == 1 and "05-broken.conflist" in scan.invalid[0]


def test_config_source_reloads_when_dir_changes(tmp_path):
    src = ConfigSource(str(tmp_path / "net.d"))
    assert src.current().network is None and not src.current().exists
    write(tmp_path / "net.d" / "10-a.conflist", {**CONFLIST, "name": "a"})
    assert src.current().network.name == "a"
    write(tmp_path / "net.d" / "05-b.conflist", {**CONFLIST, "name": "b"})
    assert src.current().network.name == "b"
    # In-place rewrite of the same file (same name) is seen too.
    p = write(tmp_path / "net.d" / "05-b.conflist", {**CONFLIST, "name": "b2", "plugins": CONFLIST["plugins"][:1]})
    os.utime(p, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    assert src.current().network.name == "b2"
    (tmp_path / "net.d" / "05-b.conflist").unlink()
    assert src.current().network.name == "a"


# ---- readiness ---------------------------------------------------------------

def fake_bin(tmp_path: Path, *names: str) -> str:
    d = tmp_path / "bin"
    for n in names:
        script(d / n, "exit 0\n")
    return str(d)


def test_readiness_says_what_is_wrong(tmp_path):
    conf = tmp_path / "net.d"
    bins = fake_bin(tmp_path, "bridge")
    net = CniNetwork(str(conf), [bins], 5)
    r = net.readiness()
    assert (r.ready, r.reason) == (False, "NetworkPluginNotReady")
    assert f"{conf} does not exist" in r.message and "crispy cni-install" in r.message
    conf.mkdir()
    assert f"no CNI network config in {conf}" in net.readiness().message
    write(conf / "10-bad.conflist", {"cniVersion": "9.9.9", "name": "x", "plugins": [{"type": "bridge"}]})
    r = net.readiness()
    assert not r.ready
    assert f"invalid file {conf / '10-bad.conflist'}: cniVersion '9.9.9' is not supported" in r.message
    write(conf / "20-good.conflist", CONFLIST)
    r = net.readiness()
    assert not r.ready and "needs plugin(s) portmap" in r.message and bins in r.message
    script(Path(bins) / "portmap", "exit 0\n")
    assert net.readiness().ready
    with pytest.raises(FailedPrecondition):
        CniNetwork(str(tmp_path / "none"), [bins], 5).current_network()


def test_setup_with_a_broken_config_is_a_clear_failed_precondition(tmp_path):
    conf = write(tmp_path / "net.d" / "10-x.conflist", {"cniVersion": "1.0.0", "name": "x", "plugins": [{"type": "nope"}]})
    net = CniNetwork(str(conf.parent), [fake_bin(tmp_path, "loopback")], 5)
    req = PodNetworkRequest("sb1", "/nonexistent", "p", "ns", "uid")
    with pytest.raises(FailedPrecondition, match="pod network is not ready: CNI network 'x' .* needs plugin.s. nope"):
        asyncio.run(net.setup(req))


def test_with_no_config_at_all_a_pod_gets_loopback_only(tmp_path):
    bins = tmp_path / "bin"
    log = tmp_path / "calls"
    script(bins / "loopback", f"""\
        echo "$CNI_COMMAND $CNI_IFNAME $CNI_NETNS" >> {log}
        cat >/dev/null
        echo '{{"cniVersion":"1.0.0"}}'
    """)
    net = CniNetwork(str(tmp_path / "net.d"), [str(bins)], 5)
    req = PodNetworkRequest("sb1", "/run/netns/x", "p", "ns", "uid")
    st = asyncio.run(net.setup(req))
    assert (st.ip, st.additional_ips, st.state) == ("", [], {"network": "", "loopbackOnly": True})
    # lo came up with the namespace (runtime/namespaces.py): no plugin runs.
    assert not log.exists()
    asyncio.run(net.teardown(req, st))
    assert not net.readiness().ready


# ---- the plugin protocol ------------------------------------------------------

def call_args(**kw) -> CallArgs:
    base = dict(container_id="c1", netns="/run/netns/x", ifname="eth0", bin_dirs=["/a", "/b"],
                cni_args=[("K8S_POD_NAME", "p"), ("K8S_POD_NAMESPACE", "ns")],
                capability_args={"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}],
                                 "bandwidth": {"ingressRate": 1}})
    base.update(kw)
    return CallArgs(**base)


def test_invocation_env_and_stdin():
    net = cniconfig.from_dict(CONFLIST)
    inv = invoke.build("ADD", net, net.plugins[1], call_args(), prev_result={"cniVersion": "1.0.0", "ips": []},
                       base_path="/usr/bin")
    assert inv.env == {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/run/netns/x",
                       "CNI_IFNAME": "eth0", "CNI_ARGS": "K8S_POD_NAME=p;K8S_POD_NAMESPACE=ns",
                       "CNI_PATH": "/a:/b", "PATH": "/usr/bin"}
    conf = json.loads(inv.stdin)
    assert conf["name"] == "net1" and conf["cniVersion"] == "1.0.0" and conf["type"] == "portmap"
    # Only the capabilities the plugin declares.
    assert conf["runtimeConfig"] == {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]}
    assert conf["prevResult"] == {"cniVersion": "1.0.0", "ips": []}
    bridge = json.loads(invoke.build("ADD", net, net.plugins[0], call_args()).stdin)
    assert "runtimeConfig" not in bridge and "prevResult" not in bridge
    # 0.3.x had no prevResult on DEL; 0.4.0 and later do.
    old = cniconfig.from_dict({**CONFLIST, "cniVersion": "0.3.1"})
    assert "prevResult" not in json.loads(invoke.build("DEL", old, old.plugins[0], call_args(), {"ips": []}).stdin)
    assert "prevResult" in json.loads(invoke.build("DEL", net, net.plugins[0], call_args(), {"ips": []}).stdin)


def test_failure_is_reported_verbatim():
    net = cniconfig.from_dict(CONFLIST)
    inv = invoke.build("ADD", net, net.plugins[0], call_args())
    err = invoke.parse_failure(inv, 1, b'{"cniVersion":"1.0.0","code":11,"msg":"failed to allocate","details":"range is full"}', b"")
    assert str(err) == "CNI plugin bridge ADD (network net1) failed: failed to allocate: range is full"
    assert err.cni_code == 11 and status_for(err)[0] == grpc.StatusCode.UNKNOWN
    err = invoke.parse_failure(inv, 2, b"", b"panic: something odd\n")
    assert str(err) == "CNI plugin bridge ADD (network net1) failed (exit status 2): panic: something odd"
    with pytest.raises(PluginError, match="not JSON"):
        invoke.parse_success(inv, b"hello")
    with pytest.raises(PluginError, match="printed no result"):
        invoke.parse_success(inv, b"")
    assert invoke.parse_success(invoke.build("DEL", net, net.plugins[0], call_args()), b"") is None


def test_pod_ips_only_the_pod_interface_ipv4_first():
    result = {
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "cni0"}, {"name": "veth1"}, {"name": "eth0", "sandbox": "/run/netns/x"}],
        "ips": [{"interface": 2, "address": "fd00::5/64"}, {"interface": 0, "address": "10.0.0.1/24"},
                {"interface": 2, "address": "10.0.0.5/24"}],
    }
    assert pod_ips(result, "eth0") == ["10.0.0.5", "fd00::5"]
    # 0.3.x plugins may give no interface index at all.
    assert pod_ips({"ips": [{"address": "10.1.0.9/16", "version": "4"}]}, "eth0") == ["10.1.0.9"]
    assert pod_ips(None, "eth0") == []


def test_request_to_capability_and_cni_args():
    req = PodNetworkRequest("sb1", "/x", "web", "default", "u-1",
                            [PortMapping("TCP", 80, 8080, "127.0.0.1"), PortMapping("udp", 53, 0)], "/kubepods/p1")
    assert capability_args(req) == {
        "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": "127.0.0.1"}],
        "cgroupPath": "/kubepods/p1"}
    assert dict(cni_args(req)) == {"IgnoreUnknown": "1", "K8S_POD_NAMESPACE": "default", "K8S_POD_NAME": "web",
                                   "K8S_POD_INFRA_CONTAINER_ID": "sb1", "K8S_POD_UID": "u-1"}


# ---- running plugins (fake executables) ------------------------------------------

def test_hung_plugin_is_killed_after_the_timeout(tmp_path):
    pidfile = tmp_path / "child.pid"
    bins = tmp_path / "bin"
    # The plugin starts a child that would outlive it: both must die.
    script(bins / "hang", f"""\
        sleep 300 &
        echo $! > {pidfile}
        wait
    """)
    net = cniconfig.from_dict({"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "hang"}]})
    inv = invoke.build("ADD", net, net.plugins[0], call_args(bin_dirs=[str(bins)]))

    async def go():
        t0 = time.monotonic()
        with pytest.raises(PluginTimeout) as ei:
            await invoke.run(inv, [str(bins)], 1.0)
        return ei.value, time.monotonic() - t0

    err, took = asyncio.run(go())
    assert "CNI plugin hang ADD (network n) did not finish within 1s and was killed" in str(err)
    assert status_for(err)[0] == grpc.StatusCode.DEADLINE_EXCEEDED
    child = int(pidfile.read_text())
    for _ in range(50):
        if not os.path.exists(f"/proc/{child}") or "Z" in Path(f"/proc/{child}/stat").read_text().split()[2]:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"child {child} of the hung plugin survived")


def test_plugin_sees_env_and_stdin_and_its_error_is_verbatim(tmp_path):
    bins = tmp_path / "bin"
    dump = tmp_path / "dump"
    script(bins / "tattle", f"""\
        env | grep ^CNI_ | sort > {dump}.env
        cat > {dump}.stdin
        echo '{{"cniVersion":"1.0.0","code":7,"msg":"invalid network config","details":"bridge b0 is busy"}}'
        exit 1
    """)
    net = cniconfig.from_dict({"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "tattle", "x": 1}]})
    inv = invoke.build("ADD", net, net.plugins[0], call_args(bin_dirs=[str(bins)]))
    with pytest.raises(PluginError) as ei:
        asyncio.run(invoke.run(inv, [str(bins)], 10))
    assert str(ei.value) == "CNI plugin tattle ADD (network n) failed: invalid network config: bridge b0 is busy"
    env = dict(line.split("=", 1) for line in Path(f"{dump}.env").read_text().splitlines())
    assert env["CNI_COMMAND"] == "ADD" and env["CNI_CONTAINERID"] == "c1" and env["CNI_IFNAME"] == "eth0"
    assert json.loads(Path(f"{dump}.stdin").read_text())["x"] == 1


def test_missing_plugin_binary(tmp_path):
    net = cniconfig.from_dict({"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "nothere"}]})
    inv = invoke.build("ADD", net, net.plugins[0], call_args())
    with pytest.raises(PluginMissing, match=f"plugin 'nothere' is not in {tmp_path}"):
        asyncio.run(invoke.run(inv, [str(tmp_path)], 10))


def test_failed_add_runs_del_for_the_whole_chain(tmp_path):
    """A chain that fails half way is undone: DEL runs for every plugin, in
    reverse, so the first plugin's allocation is released."""
    bins = tmp_path / "bin"
    log = tmp_path / "calls"
    script(bins / "good", f"""\
        echo "good $CNI_COMMAND" >> {log}
        cat >/dev/null
        [ "$CNI_COMMAND" = ADD ] && echo '{{"cniVersion":"1.0.0","ips":[{{"address":"10.9.0.2/24"}}]}}'
        exit 0
    """)
    script(bins / "bad", f"""\
        echo "bad $CNI_COMMAND" >> {log}
        cat >/dev/null
        [ "$CNI_COMMAND" = DEL ] && exit 0
        echo '{{"code":100,"msg":"no luck"}}'; exit 1
    """)
    script(bins / "loopback", f"""\
        echo "loopback $CNI_COMMAND $CNI_IFNAME" >> {log}
        cat >/dev/null
        [ "$CNI_COMMAND" = ADD ] && echo '{{"cniVersion":"1.0.0"}}'
        exit 0
    """)
    conf = write(tmp_path / "net.d" / "10-n.conflist",
                 {"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "good"}, {"type": "bad"}]})
    net = CniNetwork(str(conf.parent), [str(bins)], 10)
    # The fake plugins never enter it; DEL only needs it to be a live netns.
    req = PodNetworkRequest("sb1", "/proc/self/ns/net", "p", "ns", "uid")
    with pytest.raises(PluginError, match="setting up the network of pod ns/p: CNI plugin bad ADD .* failed: no luck"):
        asyncio.run(net.setup(req))
    # No loopback plugin: lo is up with the namespace, and goes with it.
    assert log.read_text().split("\n")[:-1] == ["good ADD", "bad ADD", "bad DEL", "good DEL"]


# ---- the default network ----------------------------------------------------------

def test_default_conflist_single_and_dual_stack():
    doc = default_network.conflist(default_network.parse_subnets("10.88.0.0/16"))
    net = cniconfig.from_dict(doc)
    assert net.plugin_types == ["bridge", "portmap"]
    assert net.plugins[0]["ipam"]["ranges"] == [[{"subnet": "10.88.0.0/16"}]]
    assert net.plugins[1]["capabilities"] == {"portMappings": True}
    dual = default_network.conflist(default_network.parse_subnets("10.244.1.0/24, fd00:10:244:1::/64"))
    assert dual["plugins"][0]["ipam"]["ranges"] == [[{"subnet": "10.244.1.0/24"}], [{"subnet": "fd00:10:244:1::/64"}]]
    assert dual["plugins"][0]["ipam"]["routes"] == [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]
    for bad in ("", "10.0.0.0/33", "10.0.0.0/24,10.1.0.0/24", "10.0.0.0/31"):
        with pytest.raises(InvalidArgument):
            default_network.parse_subnets(bad)


def test_default_network_is_written_only_into_an_empty_dir(tmp_path):
    conf = tmp_path / "net.d"
    path = default_network.install(str(conf), ["10.77.0.0/16"])
    assert path == conf / "10-crispy.conflist"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert cniconfig.scan_dir(str(conf)).network.name == "crispy"
    assert default_network.install(str(conf), ["10.78.0.0/16"]) is None
    assert "10.77.0.0/16" in path.read_text()
    other = tmp_path / "other"
    write(other / "99-mine.conf", {"cniVersion": "1.0.0", "name": "mine", "type": "ptp"})
    assert default_network.install(str(other), ["10.79.0.0/16"]) is None
    assert sorted(os.listdir(other)) == ["99-mine.conf"]


def test_masquerade_cleanup_commands_from_iptables_save():
    from runtime.cni import masq
    chain = masq.chain_name("crispyt-smoke", "abc123")
    assert chain == "CNI-91493c530c8ec3dc30e7078d"  # as the bridge plugin names it
    other = masq.chain_name("crispyt-smoke", "zzz")
    save = "\n".join([
        "*nat", ":POSTROUTING ACCEPT [0:0]", f":{chain} - [0:0]", f":{other} - [0:0]",
        f'-A POSTROUTING -s 10.251.0.2/32 -m comment --comment "name: \\"crispyt-smoke\\" id: \\"abc123\\"" -j {chain}',
        f'-A POSTROUTING -s 10.251.0.3/32 -m comment --comment "name: \\"crispyt-smoke\\" id: \\"zzz\\"" -j {other}',
        f'-A {chain} ! -d 224.0.0.0/4 -m comment --comment "name: \\"crispyt-smoke\\" id: \\"abc123\\"" -j MASQUERADE',
        "COMMIT"])
    assert masq.cleanup_commands(save, "crispyt-smoke", "abc123") == [
        ["-t", "nat", "-D", "POSTROUTING", "-s", "10.251.0.2/32", "-m", "comment", "--comment",
         'name: "crispyt-smoke" id: "abc123"', "-j", chain],
        ["-t", "nat", "-F", chain], ["-t", "nat", "-X", chain]]
    assert masq.cleanup_commands(save, "crispyt-smoke", "nope") == []
    assert masq.needs_cleanup([{"type": "bridge", "ipMasq": True}, {"type": "portmap"}])
    assert not masq.needs_cleanup([{"type": "bridge"}])


def test_cni_install_command(tmp_path):
    import subprocess
    import sys

    def crispy(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "cri.cli", "--data-root", str(tmp_path / "data"), *args],
                              capture_output=True, text=True, timeout=60)

    conf = tmp_path / "net.d"
    r = crispy("--cni-conf-dir", str(conf), "--cni-default-subnet", "10.66.0.0/16", "cni-install")
    assert r.returncode == 0, r.stderr
    assert "bridge crispy0 on 10.66.0.0/16 ([cni] default_subnet)" in r.stdout
    assert cniconfig.scan_dir(str(conf)).network.plugins[0]["ipam"]["ranges"] == [[{"subnet": "10.66.0.0/16"}]]
    r = crispy("--cni-conf-dir", str(conf), "cni-install")
    assert r.returncode == 0 and "already has a network config" in r.stdout
    # The pod CIDR kubelet gave (persisted by UpdateRuntimeConfig) wins.
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "runtime-config.json").write_text('{"pod_cidr": "10.244.7.0/24"}')
    r = crispy("--cni-conf-dir", str(tmp_path / "net2"), "cni-install")
    assert r.returncode == 0 and "10.244.7.0/24 (pod CIDR from UpdateRuntimeConfig)" in r.stdout
    (tmp_path / "data" / "runtime-config.json").unlink()
    r = crispy("--cni-conf-dir", str(tmp_path / "net3"), "--cni-default-subnet", "banana", "cni-install")
    # A malformed subnet is a config error, refused before any command runs (issue #11: exit 2).
    assert r.returncode == 2 and "cni.default_subnet" in r.stderr and "'banana'" in r.stderr


def test_retarget_only_crispys_own_untouched_default(tmp_path):
    conf = tmp_path / "net.d"
    default_network.install(str(conf), ["10.88.0.0/16"])
    plan = default_network.retarget_plan(str(conf), "10.244.3.0/24,fd00:3::/64")
    assert plan.old == ["10.88.0.0/16"] and plan.new == ["10.244.3.0/24", "fd00:3::/64"]
    assert plan.bridge == "crispy0" and plan.path == conf / "10-crispy.conflist"
    assert default_network.generated_subnets(plan.doc) == plan.new
    assert default_network.retarget_plan(str(conf), "10.88.0.0/16") is None  # nothing to do
    # Edited by hand: the operator's now, never rewritten.
    doc = json.loads((conf / "10-crispy.conflist").read_text())
    doc["plugins"][0]["mtu"] = 1400
    (conf / "10-crispy.conflist").write_text(json.dumps(doc))
    assert default_network.retarget_plan(str(conf), "10.244.3.0/24") is None
    assert default_network.retarget_plan(str(tmp_path / "none"), "10.244.3.0/24") is None


def test_is_netns(tmp_path):
    from runtime.cni.network import is_netns
    assert is_netns("/proc/self/ns/net")
    assert not is_netns("/proc/self/ns/uts")
    (tmp_path / "leftover").write_text("")  # a pin file whose mount is gone
    assert not is_netns(str(tmp_path / "leftover"))
    assert not is_netns(str(tmp_path / "missing"))


def test_plugin_that_cannot_be_executed(tmp_path):
    bins = tmp_path / "bin"
    bins.mkdir()
    (bins / "garbage").write_bytes(b"\x00\x01not an executable format")
    (bins / "garbage").chmod(0o755)
    net = cniconfig.from_dict({"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "garbage"}]})
    inv = invoke.build("ADD", net, net.plugins[0], call_args(bin_dirs=[str(bins)]))
    with pytest.raises(PluginError, match="cannot run .*garbage: Exec format error"):
        asyncio.run(invoke.run(inv, [str(bins)], 10))


def test_host_network_status_and_its_teardown_is_a_no_op(tmp_path):
    from runtime.cni import host_network_status, host_primary_ip
    st = asyncio.run(host_network_status())
    assert st.ip == host_primary_ip() and st.state["hostNetwork"]
    bins = tmp_path / "bin"
    calls = tmp_path / "calls"
    script(bins / "bridge", f"echo called >> {calls}\n")
    script(bins / "loopback", f"echo called >> {calls}\n")
    write(tmp_path / "net.d" / "10-n.conflist", {"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "bridge"}]})
    net = CniNetwork(str(tmp_path / "net.d"), [str(bins)], 5)
    asyncio.run(net.teardown(PodNetworkRequest("sb1", "", "p", "ns", "uid"), st))
    assert not calls.exists()


# ---- the node's address (rtnetlink, sans-IO part) ------------------------------------

def _nlmsg(kind, seq, body, attrs=()):
    import struct
    payload = body
    for t, v in attrs:
        a = struct.pack("=HH", 4 + len(v), t) + v
        payload += a + b"\0" * (-len(a) % 4)
    return struct.pack("=IHHII", 16 + len(payload), kind, 2, seq, 0) + payload


def test_host_ip_parsing_picks_the_default_route_interface():
    import socket
    import struct

    from runtime.cni import hostip

    def route(fam, dst_len, table, oif):
        return _nlmsg(hostip.RTM_NEWROUTE, 7, struct.pack("=BBBBBBBBI", fam, dst_len, 0, 0, table, 0, 0, 1, 0),
                      [(hostip.RTA_OIF, struct.pack("=I", oif))])

    def addr(fam, scope, idx, raw):
        return _nlmsg(hostip.RTM_NEWADDR, 7, struct.pack("=BBBBI", fam, 24, 0, scope, idx),
                      [(hostip.IFA_ADDRESS, raw), (hostip.IFA_LOCAL, raw)])

    data = (route(socket.AF_INET, 24, 254, 3) + route(socket.AF_INET, 0, 255, 3) + route(socket.AF_INET, 0, 254, 2)
            + _nlmsg(hostip.RTM_NEWROUTE, 6, struct.pack("=BBBBBBBBI", 2, 0, 0, 0, 254, 0, 0, 1, 0)))  # other seq: ignored
    routes, done = hostip.parse(data, 7)
    assert not done and [(r.dst_len, r.table, r.oif) for r in routes] == [(24, 254, 3), (0, 255, 3), (0, 254, 2)]
    addrs, done = hostip.parse(addr(socket.AF_INET, 0, 3, bytes([10, 0, 0, 5])) + addr(socket.AF_INET, 254, 2, bytes([127, 0, 0, 1]))
                               + addr(socket.AF_INET, 0, 2, bytes([192, 0, 2, 9])) + _nlmsg(hostip.NLMSG_DONE, 7, b"\0" * 4), 7)
    assert done and [a.address for a in addrs] == ["10.0.0.5", "127.0.0.1", "192.0.2.9"]
    # The main table's default route goes out of interface 2: its global address.
    assert hostip.primary_ip(routes, addrs) == "192.0.2.9"
    # No default route: any global address; nothing at all: "".
    assert hostip.primary_ip([], addrs) == "10.0.0.5"
    assert hostip.primary_ip(routes, [a for a in addrs if a.scope != 0]) == ""
    with pytest.raises(OSError):
        hostip.parse(_nlmsg(hostip.NLMSG_ERROR, 7, struct.pack("=i", -1) + b"\0" * 16), 7)


def test_host_ip_matches_ip_route():
    import subprocess

    from runtime.cni import host_primary_ip
    out = subprocess.run(["ip", "-4", "route", "show", "default"], capture_output=True, text=True).stdout.split()
    if "dev" not in out:
        pytest.skip("no IPv4 default route on this host")
    dev = out[out.index("dev") + 1]
    addrs = subprocess.run(["ip", "-4", "-o", "addr", "show", "dev", dev, "scope", "global"], capture_output=True, text=True).stdout
    assert host_primary_ip() in [line.split()[3].split("/")[0] for line in addrs.splitlines()]

"""Pod networking through the real daemon: RunPodSandbox on a CNI network,
the IP in PodSandboxStatus, hostPorts, StopPodSandbox releasing the address,
NetworkReady and a clear RunPodSandbox error for a broken config."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
from typing import Iterator

import grpc
import pytest

from cri.proto import api_pb2 as pb
from runtime.cni import host_primary_ip
from tests.daemon_proc import tmp_base
from tests.integration.test_cni_integration import CNI_BIN, PodNet, host_guard, rules_of, unique_subnet  # noqa: F401
from tests.pods_fixtures import *  # noqa: F403
from tests.pods_fixtures import pod_config, start_pod_daemon, stop_pod_daemon

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not shutil.which("nsenter") or not os.path.exists(f"{CNI_BIN}/bridge"),
                                 reason="needs nsenter and containernetworking-plugins")]


@pytest.fixture
def net_daemon(tmp_path, host_guard) -> Iterator[tuple]:  # noqa: F811 - the pytest fixture imported above
    net = PodNet(tmp_path, host_guard)
    d = start_pod_daemon(tmp_base(), ["--cni-conf-dir", str(net.conf_dir), "--cni-bin-dirs", CNI_BIN])
    yield d, net
    # Pods go before the bridge does (host_guard); the daemon roots go
    # after the module's leftover check (pods_fixtures).
    stop_pod_daemon(d)


def run_pod(c, cfg) -> str:
    return c.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg)).pod_sandbox_id


def pod_status(c, pod_id) -> tuple[pb.PodSandboxStatus, dict]:
    r = c.runtime.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=pod_id, verbose=True))
    return r.status, json.loads(r.info["info"])


def network_ready(c) -> pb.RuntimeCondition:
    return {x.type: x for x in c.status().status.conditions}["NetworkReady"]


def test_pod_gets_an_ip_and_stop_frees_it(net_daemon):
    d, net = net_daemon
    with d.client() as c:
        assert network_ready(c).status
        cfg = pod_config("netpod")
        pod = run_pod(c, cfg)
        st, info = pod_status(c, pod)
        ip = st.network.ip
        assert ip.startswith(net.subnet.rsplit(".", 1)[0] + ".")
        assert net.leases() == [ip]
        netns = info["namespaces"]["network"]
        inside = subprocess.run(["nsenter", f"--net={netns}", "--", "ip", "-o", "-4", "addr", "show", "dev", "eth0"],
                                capture_output=True, text=True, check=True).stdout
        assert f"inet {ip}/" in inside
        # lo is up (with the namespace, not by a loopback plugin) and answers.
        lo = subprocess.run(["nsenter", f"--net={netns}", "--", "busybox", "ping", "-c", "1", "-W", "5", "127.0.0.1"],
                            capture_output=True, text=True)
        assert lo.returncode == 0, lo.stdout + lo.stderr
        # The host reaches the pod over the bridge.
        ping = subprocess.run(["busybox", "ping", "-c", "1", "-W", "5", ip], capture_output=True, text=True)
        assert ping.returncode == 0, ping.stdout + ping.stderr

        c.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod))
        assert net.leases() == [] and net.bridge_ports() == []
        assert rules_of(net, [pod]) == []
        c.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod))  # idempotent
        c.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod))


def test_network_survives_daemon_restart_and_config_change(net_daemon, tmp_path):
    """ADD, crispy is killed, the network config is replaced: StopPodSandbox
    still releases the address from the network the pod was set up on."""
    d, net = net_daemon
    with d.client() as c:
        pod = run_pod(c, pod_config("restartpod", port_mappings=[pb.PortMapping(
            protocol=pb.TCP, container_port=80, host_port=31080)]))
        ip = pod_status(c, pod)[0].network.ip
    assert net.leases() == [ip]
    d.stop(signal.SIGKILL)
    for f in net.conf_dir.iterdir():
        f.unlink()
    (net.conf_dir / "10-broken.conflist").write_text("{")
    d.start()
    with d.client() as c:
        assert pod_status(c, pod)[0].network.ip == ip
        ready = network_ready(c)
        assert not ready.status and "10-broken.conflist" in ready.message
        c.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod))
    assert net.leases() == [] and net.bridge_ports() == []
    assert rules_of(net, [pod]) == []


def test_broken_config_fails_run_pod_sandbox_clearly(tmp_path, host_guard):  # noqa: F811 - the pytest fixture imported above
    conf = tmp_path / "net.d"
    conf.mkdir()
    (conf / "10-bad.conflist").write_text(json.dumps({"cniVersion": "1.0.0", "name": "crispyt-bad",
                                                      "plugins": [{"type": "no-such-plugin"}]}))
    d = start_pod_daemon(tmp_base(), ["--cni-conf-dir", str(conf), "--cni-bin-dirs", CNI_BIN])
    try:
        with d.client() as c:
            ready = network_ready(c)
            assert not ready.status and ready.reason == "NetworkPluginNotReady"
            assert "no-such-plugin" in ready.message and CNI_BIN in ready.message
            with pytest.raises(grpc.RpcError) as e:
                run_pod(c, pod_config("brokennet"))
            assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "pod network is not ready" in e.value.details() and "no-such-plugin" in e.value.details()
            assert list(c.runtime.ListPodSandbox(pb.ListPodSandboxRequest()).items) == []
    finally:
        d.stop()



def test_update_runtime_config_moves_the_default_network_to_the_pod_cidr(net_daemon):
    d, net = net_daemon
    new_subnet = unique_subnet()
    # Only the file crispy itself writes is ever moved.
    conf_file = net.conf_dir / "10-crispy.conflist"
    next(net.conf_dir.iterdir()).rename(conf_file)
    with d.client() as c:
        # A pod on the old subnet holds the bridge: the switch waits.
        pod = run_pod(c, pod_config("oldsubnet"))
        old_ip = pod_status(c, pod)[0].network.ip
        update = pb.UpdateRuntimeConfigRequest(runtime_config=pb.RuntimeConfig(
            network_config=pb.NetworkConfig(pod_cidr=new_subnet)))
        c.runtime.UpdateRuntimeConfig(update)
        assert net.subnet in conf_file.read_text()
        c.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod))
        c.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod))
        # Kubelet repeats UpdateRuntimeConfig; with the bridge free it applies.
        c.runtime.UpdateRuntimeConfig(update)
        assert new_subnet in conf_file.read_text() and net.subnet not in conf_file.read_text()
        pod = run_pod(c, pod_config("newsubnet"))
        ip = pod_status(c, pod)[0].network.ip
        assert ip.startswith(new_subnet.rsplit(".", 1)[0] + ".") and ip != old_ip
        c.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod))
    assert net.leases() == []


def test_hung_plugin_fails_run_pod_sandbox_with_its_timeout_and_leaks_nothing(tmp_path, host_guard):  # noqa: F811 - the pytest fixture imported above
    """A chain whose second plugin hangs on ADD: RunPodSandbox answers
    DEADLINE_EXCEEDED naming the plugin, and the first plugin's address is
    released."""
    net = PodNet(tmp_path, host_guard)
    bins = tmp_path / "bin"
    bins.mkdir()
    hang = bins / "hang"
    marker = f"{random.randrange(10**6, 10**7)}.5"  # a sleep no one else runs
    hang.write_text(f"#!/bin/sh\ncat >/dev/null\n[ \"$CNI_COMMAND\" = ADD ] && exec sleep {marker}\nexit 0\n")
    hang.chmod(0o755)
    conf_file = next(net.conf_dir.iterdir())
    doc = json.loads(conf_file.read_text())
    doc["plugins"].append({"type": "hang"})
    conf_file.write_text(json.dumps(doc))
    d = start_pod_daemon(tmp_base(), ["--cni-conf-dir", str(net.conf_dir), "--cni-bin-dirs", str(bins),
                                      "--cni-bin-dirs", CNI_BIN, "--cni-plugin-timeout", "1"])
    try:
        with d.client() as c:
            assert network_ready(c).status
            with pytest.raises(grpc.RpcError) as e:
                run_pod(c, pod_config("hangpod"))
            assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert "CNI plugin hang ADD" in e.value.details() and "did not finish within 1s and was killed" in e.value.details()
            assert list(c.runtime.ListPodSandbox(pb.ListPodSandboxRequest()).items) == []
        assert net.leases() == [] and net.bridge_ports() == []
        # The hung plugin was killed, not left behind.
        assert subprocess.run(["pgrep", "-f", f"sleep {marker}"], capture_output=True).returncode == 1
    finally:
        d.stop()


def test_verbose_status_shows_the_cni_config(net_daemon):
    d, net = net_daemon
    with d.client() as c:
        info = json.loads(c.status(verbose=True).info["cniconfig"])
    assert info["confDir"] == str(net.conf_dir) and info["binDirs"] == [CNI_BIN]
    assert info["network"]["name"] == net.name and info["network"]["plugins"] == ["bridge", "portmap"]
    assert info["problem"] == "" and info["invalidFiles"] == []


def test_host_network_pod_reports_the_node_ip(net_daemon):
    d, net = net_daemon
    cfg = pod_config("hostnetpod")
    cfg.linux.security_context.namespace_options.network = pb.NODE
    with d.client() as c:
        pod = run_pod(c, cfg)
        st, _ = pod_status(c, pod)
        assert st.network.ip == host_primary_ip()
        assert net.leases() == [] and net.bridge_ports() == []  # CNI was not involved
        # Stopping it must not run CNI DEL against the node's own network.
        c.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod))
        c.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod))
    assert "CNI plugin call" not in d.log()  # the only pod this daemon ever had

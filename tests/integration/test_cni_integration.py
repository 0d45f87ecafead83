"""Pod networking with the real CNI plugins (/usr/lib/cni) and real network
namespaces. Every test uses its own bridge (crispyt<N>), a private 10.x
subnet, its own IPAM dataDir and namespaces named crispyt-*; the host
changes the plugins make (bridges, iptables chains, forwarding and
route_localnet sysctls) are undone after each test."""

from __future__ import annotations

import asyncio
import ctypes
import hashlib
import http.server
import json
import os
import random
import re
import shlex
import subprocess
import threading
import urllib.request
import uuid
from pathlib import Path

import pytest

from runtime.cni import default_network, host_primary_ip
from runtime.cni.invoke import PluginError
from runtime.cni.network import CniNetwork
from runtime.network import PodNetworkRequest, PodNetworkStatus, PortMapping

CNI_BIN = "/usr/lib/cni"
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists(f"{CNI_BIN}/bridge"),
                       reason="needs root and containernetworking-plugins"),
]

CLONE_NEWNET = 0x40000000
SYSCTLS = ["net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding", "net/ipv4/conf/all/route_localnet"]
SHARED_CHAINS = ("CNI-HOSTPORT-DNAT", "CNI-HOSTPORT-SNAT", "CNI-HOSTPORT-MASQ", "CNI-HOSTPORT-SETMARK")


def sh(*cmd: str, check: bool = True) -> str:
    return subprocess.run(cmd, check=check, capture_output=True, text=True).stdout


def run(coro):
    return asyncio.run(coro)


# ---- host state: snapshot, leak checks, restore -----------------------------

def nft_tables() -> set[str]:
    return {line.split(" ", 1)[1] for line in sh("nft", "list", "tables").splitlines() if line.startswith("table ")}


def iptables_rules() -> list[str]:
    out = []
    for tool in ("iptables-save", "ip6tables-save"):
        for line in sh(tool).splitlines():
            if line.startswith((":", "-A")):
                # Counters change all the time; they are not rules.
                out.append(tool[:-5] + " " + re.sub(r" \[\d+:\d+\]$", "", line))
    return out


def _undo_shared_chains() -> None:
    """portmap leaves its shared top-level chains (and the jumps to them) in
    place after the last DEL; remove them when no rules hang off them."""
    for tool in ("iptables", "ip6tables"):
        save = sh(f"{tool}-save", "-t", "nat", check=False)
        if any(line.startswith("-A CNI-") and not line.startswith(tuple(f"-A {c} " for c in SHARED_CHAINS))
               for line in save.splitlines()):
            continue  # someone's pods still use them
        if any(line.startswith("-A CNI-HOSTPORT-DNAT ") for line in save.splitlines()):
            continue
        for line in save.splitlines():
            if line.startswith("-A ") and any(f"-j {c}" in line for c in SHARED_CHAINS) \
                    and not line.split()[1].startswith("CNI-"):
                args = shlex.split(line)
                args[0] = "-D"
                subprocess.run([tool, "-t", "nat", *args], capture_output=True)
        for c in SHARED_CHAINS:
            subprocess.run([tool, "-t", "nat", "-F", c], capture_output=True)
            subprocess.run([tool, "-t", "nat", "-X", c], capture_output=True)


def _undo_empty_new_tables(before: set[str]) -> None:
    for table in nft_tables() - before:
        listing = sh("nft", "list", "table", *table.split(), check=False)
        # Only base chains with no rules: what iptables-nft left behind.
        body = [line.strip() for line in listing.splitlines()
                if line.strip() and not line.strip().startswith(("table ", "chain ", "type ", "}"))]
        if not body:
            subprocess.run(["nft", "delete", "table", *table.split()], capture_output=True)


@pytest.fixture
def host_guard():
    sysctls = {k: Path("/proc/sys", k).read_text() for k in SYSCTLS}
    tables = nft_tables()
    made: list[str] = []  # bridges
    yield made
    for br in made:
        subprocess.run(["ip", "link", "del", br], capture_output=True)
    _undo_shared_chains()
    _undo_empty_new_tables(tables)
    for k, v in sysctls.items():
        Path("/proc/sys", k).write_text(v)


class Netns:
    """Named network namespaces (/run/netns/crispyt-*) for one test."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def new(self) -> str:
        name = f"crispyt-{uuid.uuid4().hex[:10]}"
        sh("ip", "netns", "add", name)
        self.names.append(name)
        return f"/run/netns/{name}"

    def delete(self, path: str) -> None:
        sh("ip", "netns", "del", os.path.basename(path))

    def cleanup(self) -> None:
        for n in self.names:
            subprocess.run(["ip", "netns", "del", n], capture_output=True)


@pytest.fixture
def netns():
    ns = Netns()
    yield ns
    ns.cleanup()


def unique_bridge() -> str:
    # Other runs of this suite may share the host: names must not collide.
    return f"crispyt{uuid.uuid4().hex[:8]}"  # 15 characters, the kernel's limit


def unique_subnet() -> str:
    return f"10.{random.randrange(128, 255)}.{random.randrange(256)}.0/24"


class PodNet:
    """A private network config written into its own conf dir."""

    def __init__(self, tmp: Path, guard: list[str], subnets: list[str] | None = None,
                 doc: dict | None = None, filename: str = "10-test.conflist", timeout: float = 60) -> None:
        self.name = f"crispyt-{uuid.uuid4().hex[:8]}"
        self.bridge = unique_bridge()
        self.subnet = unique_subnet()
        self.data_dir = tmp / "ipam"
        self.conf_dir = tmp / "net.d"
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        if doc is None:
            doc = default_network.conflist(subnets or [self.subnet], name=self.name, bridge=self.bridge,
                                           data_dir=str(self.data_dir))
        (self.conf_dir / filename).write_text(json.dumps(doc))
        guard.append(self.bridge)
        self.cni = CniNetwork(str(self.conf_dir), [CNI_BIN], timeout)

    def leases(self) -> list[str]:
        d = self.data_dir / self.name
        if not d.exists():
            return []
        return sorted(f for f in os.listdir(d) if f != "lock" and not f.startswith("last_reserved_ip"))

    def bridge_ports(self) -> list[str]:
        return [line.split()[0].split("@")[0] for line in sh("ip", "-br", "link", "show", "master", self.bridge, check=False).splitlines()]


def request(netns_path: str, ports: list[PortMapping] | None = None, sid: str | None = None) -> PodNetworkRequest:
    sid = sid or uuid.uuid4().hex
    return PodNetworkRequest(sid, netns_path, f"pod-{sid[:6]}", "crispy-test", f"uid-{sid[:8]}", ports or [])


def in_ns(path: str, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", os.path.basename(path), *cmd], capture_output=True, text=True,
                          check=check, timeout=60)


def host_veths() -> set[str]:
    return {line.split()[1].split("@")[0].rstrip(":") for line in sh("ip", "-o", "link", "show", "type", "veth").splitlines()}


def pod_chains(network: str, sandbox_id: str) -> list[str]:
    """The iptables chains bridge (ipMasq) and portmap name after a pod."""
    h = hashlib.sha512((network + sandbox_id).encode()).hexdigest()
    return ["CNI-" + h[:24], "CNI-DN-" + h[:21]]


def rules_of(net: PodNet, sandbox_ids: list[str]) -> list[str]:
    chains = {c for sid in sandbox_ids for c in pod_chains(net.name, sid)}
    prefix = net.subnet.rsplit(".", 1)[0] + "."
    return [r for r in iptables_rules() if net.name in r or prefix in r or any(c in r for c in chains)]


# ---- tests --------------------------------------------------------------------------

def test_add_gives_eth0_an_address_and_del_removes_it(tmp_path, host_guard, netns):
    net = PodNet(tmp_path, host_guard)
    assert net.cni.readiness().ready
    ns = netns.new()
    req = request(ns)
    st = run(net.cni.setup(req))
    assert st.ip.startswith(net.subnet.rsplit(".", 1)[0] + ".") and st.additional_ips == []
    addrs = in_ns(ns, "ip", "-o", "-4", "addr", "show", "dev", "eth0").stdout
    assert f"inet {st.ip}/24" in addrs
    # lo is the namespace's creator's job (runtime/namespaces.py), not CNI's.
    assert "UP" not in in_ns(ns, "ip", "-br", "link", "show", "lo").stdout
    assert net.leases() == [st.ip]
    assert len(net.bridge_ports()) == 1
    # What DEL needs is in the persisted state, JSON-serialisable.
    state = json.loads(json.dumps(st.state))
    assert state["network"] == net.name and state["ips"] == [st.ip] and state["ifname"] == "eth0"

    run(net.cni.teardown(req, PodNetworkStatus(st.ip, [], state)))
    assert in_ns(ns, "ip", "link", "show", "eth0", check=False).returncode != 0
    assert net.leases() == [] and net.bridge_ports() == []
    assert rules_of(net, [req.sandbox_id]) == []
    run(net.cni.teardown(req, st))  # idempotent


def test_two_pods_reach_each_other_and_the_bridge(tmp_path, host_guard, netns):
    net = PodNet(tmp_path, host_guard)
    a, b = netns.new(), netns.new()
    ra, rb = request(a), request(b)
    sa, sb = run(net.cni.setup(ra)), run(net.cni.setup(rb))
    try:
        assert sa.ip != sb.ip
        gateway = net.subnet.rsplit(".", 1)[0] + ".1"
        for src, dst in ((a, sb.ip), (b, sa.ip), (a, gateway)):
            p = in_ns(src, "busybox", "ping", "-c", "1", "-W", "5", dst, check=False)
            assert p.returncode == 0, f"ping {dst} from {src}: {p.stdout}{p.stderr}"
        # And the negative: an address nobody holds does not answer.
        unused = net.subnet.rsplit(".", 1)[0] + ".250"
        assert in_ns(a, "busybox", "ping", "-c", "1", "-W", "1", unused, check=False).returncode != 0
    finally:
        run(net.cni.teardown(ra, sa))
        run(net.cni.teardown(rb, sb))
    assert net.leases() == []


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"hello from the pod\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def serve_in_netns(path: str, port: int) -> http.server.HTTPServer:
    """An HTTP server whose socket lives in the pod's namespace: the socket
    is created by a thread that has joined that namespace."""
    box: dict = {}

    def make() -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            # os.setns arrives with Python 3.12; setns moves only this thread.
            if ctypes.CDLL(None, use_errno=True).setns(fd, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns")
        finally:
            os.close(fd)
        box["srv"] = http.server.HTTPServer(("0.0.0.0", port), _Hello)

    t = threading.Thread(target=make)
    t.start()
    t.join()
    srv = box["srv"]
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read().decode()


def test_hostport_reaches_a_server_in_the_pod(tmp_path, host_guard, netns):
    net = PodNet(tmp_path, host_guard)
    ns = netns.new()
    host_port = random.randrange(30000, 40000)
    req = request(ns, [PortMapping("tcp", 8080, host_port)])
    st = run(net.cni.setup(req))
    srv = None
    try:
        srv = serve_in_netns(ns, 8080)
        # 127.0.0.1 only works with route_localnet on the bridge, which the
        # portmap plugin sets (the bridge goes away with the test).
        assert fetch(f"http://127.0.0.1:{host_port}/") == "hello from the pod\n"
        host_ip = host_primary_ip()
        assert host_ip
        assert fetch(f"http://{host_ip}:{host_port}/") == "hello from the pod\n"
        assert fetch(f"http://{st.ip}:8080/") == "hello from the pod\n"
    finally:
        if srv is not None:
            srv.shutdown()
            srv.server_close()
        run(net.cni.teardown(req, st))
    assert rules_of(net, [req.sandbox_id]) == []
    with pytest.raises(OSError):
        fetch(f"http://127.0.0.1:{host_port}/")


def test_del_after_the_namespace_is_gone_frees_everything(tmp_path, host_guard, netns):
    net = PodNet(tmp_path, host_guard)
    ns = netns.new()
    req = request(ns, [PortMapping("tcp", 80, random.randrange(30000, 40000))])
    st = run(net.cni.setup(req))
    netns.delete(ns)  # takes eth0 and its veth peer with it
    run(net.cni.teardown(req, st))
    assert net.leases() == []
    assert net.bridge_ports() == []
    assert rules_of(net, [req.sandbox_id]) == []


def test_teardown_uses_the_config_add_used(tmp_path, host_guard, netns):
    """The admin replaces the network between ADD and DEL (and crispy may have
    restarted): DEL still releases the address from the original network."""
    net = PodNet(tmp_path, host_guard)
    ns = netns.new()
    req = request(ns)
    st = run(net.cni.setup(req))
    saved = json.loads(json.dumps(st.state))
    other_bridge = unique_bridge()
    other = default_network.conflist([unique_subnet()], name="crispyt-other", bridge=other_bridge,
                                     data_dir=str(tmp_path / "ipam-other"))
    host_guard.append(other_bridge)
    for f in net.conf_dir.iterdir():
        f.unlink()
    (net.conf_dir / "05-other.conflist").write_text(json.dumps(other))
    fresh = CniNetwork(str(net.conf_dir), [CNI_BIN], 60)  # as after a restart
    assert fresh.current_network().name == "crispyt-other"
    run(fresh.teardown(req, PodNetworkStatus(st.ip, [], saved)))
    assert net.leases() == [] and net.bridge_ports() == []
    assert in_ns(ns, "ip", "link", "show", "eth0", check=False).returncode != 0


def test_dual_stack_pod_gets_both_families(tmp_path, host_guard, netns):
    n6 = random.randrange(1, 0xffff)
    net = PodNet(tmp_path, host_guard)
    net = PodNet(tmp_path / "dual", host_guard, subnets=[net.subnet, f"fd00:c7:{n6:x}::/64"])
    ns = netns.new()
    req = request(ns)
    st = run(net.cni.setup(req))
    try:
        assert ":" not in st.ip and len(st.additional_ips) == 1 and ":" in st.additional_ips[0]
        assert st.additional_ips[0].startswith(f"fd00:c7:{n6:x}:")
        v6 = in_ns(ns, "ip", "-o", "-6", "addr", "show", "dev", "eth0").stdout
        assert st.additional_ips[0] in v6
    finally:
        run(net.cni.teardown(req, st))
    assert net.leases() == []


@pytest.mark.parametrize("version", ["0.3.1", "0.4.0", "1.0.0"])
def test_older_spec_versions_and_check(tmp_path, host_guard, netns, version):
    name, bridge, subnet = f"crispyt-v{uuid.uuid4().hex[:6]}", unique_bridge(), unique_subnet()
    doc = {"cniVersion": version, "name": name, "type": "bridge", "bridge": bridge, "isGateway": True,
           "ipam": {"type": "host-local", "subnet": subnet, "dataDir": str(tmp_path / "ipam")}}
    net = PodNet(tmp_path, host_guard, doc=doc, filename="10-single.conf")
    net.name, net.bridge, net.subnet = name, bridge, subnet
    host_guard.append(net.bridge)
    ns = netns.new()
    req = request(ns)
    st = run(net.cni.setup(req))
    assert st.ip.startswith(subnet.rsplit(".", 1)[0] + ".")
    if version != "0.3.1":
        run(net.cni.check(req, st))
        in_ns(ns, "ip", "link", "del", "eth0")
        with pytest.raises(PluginError, match="CHECK"):
            run(net.cni.check(req, st))
    run(net.cni.teardown(req, st))
    assert net.leases() == []


def test_broken_config_is_not_ready_and_setup_fails_clearly(tmp_path, host_guard, netns):
    conf = tmp_path / "net.d"
    conf.mkdir()
    (conf / "10-bad.conflist").write_text('{"cniVersion": "1.0.0", "name": "x", "plugins": [')
    cni = CniNetwork(str(conf), [CNI_BIN], 60)
    r = cni.readiness()
    assert not r.ready and r.reason == "NetworkPluginNotReady"
    assert f"invalid file {conf}/10-bad.conflist: not valid JSON" in r.message
    from runtime.errors import FailedPrecondition
    with pytest.raises(FailedPrecondition, match="invalid file"):
        run(cni.setup(request(netns.new())))
    # A plugin that does not exist in the bin dirs.
    (conf / "10-bad.conflist").write_text(json.dumps({"cniVersion": "1.0.0", "name": "x",
                                                      "plugins": [{"type": "flannel-nothere"}]}))
    r = cni.readiness()
    assert not r.ready and "flannel-nothere" in r.message and CNI_BIN in r.message
    # Fixed: ready again without a restart.
    net = PodNet(tmp_path, host_guard, filename="05-good.conflist")
    assert cni.readiness().ready and cni.current_network().name == net.name


def test_failed_add_in_the_middle_of_the_chain_leaks_nothing(tmp_path, host_guard, netns):
    net = PodNet(tmp_path, host_guard)
    # portmap with a host port it cannot parse fails after bridge allocated.
    ns = netns.new()
    req = request(ns, [PortMapping("sctp-nope", 80, 31234)])
    with pytest.raises(PluginError, match="portmap ADD"):
        run(net.cni.setup(req))
    assert net.leases() == [] and net.bridge_ports() == []
    assert in_ns(ns, "ip", "link", "show", "eth0", check=False).returncode != 0
    assert rules_of(net, [req.sandbox_id]) == []


def test_many_cycles_leak_nothing(tmp_path, host_guard, netns):
    """200 pods created and destroyed, four at a time: afterwards no lease,
    veth, namespace or iptables rule is left."""
    net = PodNet(tmp_path, host_guard)
    # One warm-up pod creates the shared state (bridge, portmap's top chains).
    warm = request(netns.new(), [PortMapping("tcp", 80, 31999)])
    run(net.cni.teardown(warm, run(net.cni.setup(warm))))
    netns.delete(warm.netns_path)
    ids: list[str] = []
    veths: list[str] = []

    async def cycle(i: int) -> None:
        path = await asyncio.to_thread(netns.new)
        req = request(path, [PortMapping("tcp", 80, 32000 + i)] if i % 2 else [])
        ids.append(req.sandbox_id)
        st = PodNetworkStatus()
        try:
            st = await net.cni.setup(req)
            assert st.ip
            veths.extend(i["name"] for i in st.state["result"]["interfaces"] if i["name"].startswith("veth"))
        finally:
            # Even when a cycle fails, the others' pods are torn down.
            await net.cni.teardown(req, st)
            await asyncio.to_thread(netns.delete, path)

    async def all_cycles() -> None:
        sem = asyncio.Semaphore(4)

        async def one(i: int) -> None:
            async with sem:
                await cycle(i)
        results = await asyncio.gather(*(one(i) for i in range(200)), return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            raise failures[0]

    run(all_cycles())
    assert net.leases() == []
    assert net.bridge_ports() == []
    assert rules_of(net, ids + [warm.sandbox_id]) == []
    # Only what this test made is looked at: other suites may be adding and
    # removing their own pods on this host at the same time.
    assert len(veths) == 200 and host_veths() & set(veths) == set()
    alive = set(sh("ip", "netns", "list").split())
    assert [n for n in netns.names if n in alive] == []

"""runtime/explain/ on fixture /proc and cgroup trees, and the name
resolution of `crispy explain`: no root, no kernel facts of this machine."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from cri import cli
from cri.explain_cli import Candidate, Refused, resolve
from runtime.explain import cgroup, filesystem, namespaces, network, paths, processes, render, security
from runtime.explain.report import Explainer
from runtime.host import CgroupLayout
from runtime.index import RecordIndex
from runtime.store import ContainerRecord, SandboxRecord

# ---- fixture /proc ------------------------------------------------------------------


def make_proc(root: Path, pid: int, ppid: int, cmd: list[str], uid: int = 0, nspid: str = "", comm: str = "sh",
              uid_map: str = "         0          0 4294967295\n") -> None:
    d = root / str(pid)
    d.mkdir(parents=True)
    (d / "stat").write_text(f"{pid} ({comm}) S {ppid} {pid} {pid} 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 100\n")
    (d / "status").write_text(f"Name:\t{comm}\nState:\tS (sleeping)\nNSpid:\t{nspid or pid}\n"
                              f"Uid:\t{uid}\t{uid}\t{uid}\t{uid}\nGid:\t{uid}\t{uid}\t{uid}\t{uid}\nGroups:\t10 20\n"
                              "CapInh:\t0000000000000000\nCapPrm:\t00000000a80425fb\nCapEff:\t00000000a80425fb\n"
                              "CapBnd:\t00000000a80425fb\nCapAmb:\t0000000000000000\nNoNewPrivs:\t1\n"
                              "Seccomp:\t2\nSeccomp_filters:\t1\n")
    (d / "cmdline").write_text("\0".join(cmd) + "\0")
    (d / "uid_map").write_text(uid_map)
    (d / "gid_map").write_text(uid_map)


def ns_links(root: Path, pid: int | str, inodes: dict[str, int]) -> None:
    d = root / str(pid) / "ns"
    d.mkdir(parents=True, exist_ok=True)
    for kind, inode in inodes.items():
        os.symlink(f"{kind}:[{inode}]", d / kind)


HOST = {k: 4026531800 + i for i, k in enumerate(namespaces.KINDS)}


def test_process_tree_with_pids_in_the_namespace_and_mapped_ids(tmp_path: Path):
    mapped = "         0     100000      65536\n"
    make_proc(tmp_path, 100, 50, ["sh", "-c", "sleep 1 & wait"], uid=100000, nspid="100 1", uid_map=mapped)
    make_proc(tmp_path, 102, 100, ["sleep", "1"], uid=101000, nspid="102 3", uid_map=mapped, comm="sleep) (x")
    make_proc(tmp_path, 103, 102, ["cat"], nspid="103 4", uid=5, uid_map=mapped)
    make_proc(tmp_path, 200, 1, ["unrelated"])
    tree = processes.tree(100, tmp_path)
    assert [(p.pid, p.ns_pid, p.depth, p.ppid) for p in tree] == [(100, 1, 0, 50), (102, 3, 1, 100), (103, 4, 2, 102)]
    assert (tree[0].uid, tree[0].host_uid) == (0, 100000) and tree[1].uid == 1000
    assert tree[2].uid is None  # host uid 5 is not mapped into the container
    assert tree[0].command == ["sh", "-c", "sleep 1 & wait"] and tree[0].groups == [10, 20]
    assert processes.tree(999, tmp_path) == []


def test_parse_stat_survives_parentheses_in_the_command_name():
    assert processes.parse_stat("7 (a) b) (c) R 3 7 7 0") == ("R", 3)
    assert processes.parse_stat("garbage") is None


def test_namespaces_own_pod_and_host_and_what_the_spec_asked(tmp_path: Path):
    ns_links(tmp_path, 1, HOST)
    mine = dict(HOST, net=11, pid=12, mnt=13, ipc=14, uts=15)
    ns_links(tmp_path, 100, mine)
    pins = {"network": "/pods/p/net", "pid": "/pods/p/pid", "ipc": "/pods/p/ipc", "uts": "/pods/p/uts"}
    inodes = {"/pods/p/net": 11, "/pods/p/pid": 12, "/pods/p/ipc": 99, "/pods/p/uts": 15}
    spec = [{"type": "network", "path": "/pods/p/net"}, {"type": "pid", "path": "/pods/p/pid"},
            {"type": "ipc", "path": "/pods/p/ipc"}, {"type": "uts", "path": "/pods/p/uts"}, {"type": "mount"}]
    facts = {n.kind: n for n in namespaces.of_container(100, spec, pins, tmp_path, inodes.get)}
    assert (facts["net"].holder, facts["net"].path, facts["net"].warnings) == ("pod", "/pods/p/net", [])
    assert facts["mnt"].holder == "own" and facts["mnt"].expected == "own" and facts["mnt"].warnings == []
    assert facts["user"].holder == "host" and facts["user"].inode == HOST["user"] and facts["user"].warnings == []
    # The spec joins the pod's IPC namespace, the process is in another one.
    assert facts["ipc"].holder == "own" and facts["ipc"].expected == "pod"
    assert facts["ipc"].warnings == ["ipc: NOT shared — the spec joins /pods/p/ipc (inode 99), the process is in "
                                     "inode 14"]


def test_namespaces_asked_for_but_the_hosts(tmp_path: Path):
    ns_links(tmp_path, 1, HOST)
    ns_links(tmp_path, 100, HOST)
    facts = {n.kind: n for n in namespaces.of_container(100, [{"type": "mount"}, {"type": "pid"}], {}, tmp_path,
                                                        lambda p: None)}
    assert facts["mnt"].holder == "host"
    assert facts["pid"].warnings == ["pid: the spec asked for a namespace of its own, but it is the host's"]


def test_host_namespaces_fall_back_to_the_daemons_own_when_pid_1_is_hidden(tmp_path: Path):
    ns_links(tmp_path, "self", HOST)
    ns_links(tmp_path, 100, dict(HOST, mnt=13))
    facts = {n.kind: n for n in namespaces.of_container(100, [{"type": "mount"}], {}, tmp_path, lambda p: None)}
    assert facts["user"].holder == "host" and facts["mnt"].holder == "own"


def test_pod_namespaces_host_network_and_a_pin_that_is_the_hosts(tmp_path: Path):
    ns_links(tmp_path, 1, HOST)
    ns_links(tmp_path, 7, dict(HOST, ipc=21, pid=22))
    pins = {"ipc": "/p/ipc", "pid": "/p/pid"}
    inodes = {"/p/ipc": 21, "/p/pid": HOST["pid"]}
    facts = {n.kind: n for n in namespaces.of_pod(7, pins, True, False, "pod", tmp_path, inodes.get)}
    assert facts["net"].holder == "host" and facts["net"].expected == "host" and facts["net"].warnings == []
    assert facts["uts"].holder == "host" and facts["ipc"].holder == "pod"
    assert facts["pid"].warnings[0] == "pid: the pinned file /p/pid is the HOST's namespace"


# ---- cgroups ------------------------------------------------------------------------


def write_files(d: Path, files: dict[str, str]) -> None:
    d.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (d / name).write_text(text)


def test_proc_cgroup_on_a_hybrid_host():
    text = "9:name=systemd:/\n4:memory:/crispy/pod/c\n2:cpu,cpuacct:/crispy/pod/c\n0::/crispy/pod/c\n"
    assert cgroup.parse_proc_cgroup(text) == {"name=systemd": "/", "memory": "/crispy/pod/c", "cpu": "/crispy/pod/c",
                                              "cpuacct": "/crispy/pod/c", "unified": "/crispy/pod/c"}


def test_cgroup_v2_limits_and_usage(tmp_path: Path):
    write_files(tmp_path / "kubepods" / "c", {
        "memory.max": "67108864\n", "memory.high": "max\n", "memory.current": "1048576\n", "memory.peak": "2097152\n",
        "memory.swap.max": "0\n", "memory.events": "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n",
        "cpu.max": "50000 100000\n", "cpu.weight": "39\n",
        "cpu.stat": "usage_usec 1500\nnr_periods 10\nnr_throttled 4\nthrottled_usec 200\n",
        "pids.max": "max\n", "pids.current": "3\n"})
    facts = cgroup.read_v2("/kubepods/c", tmp_path)
    assert facts.memory == {"max": 64 << 20, "high": None, "current": 1 << 20, "peak": 2 << 20, "swap_max": 0,
                            "oom_kills": 1, "oom_events": 1}
    assert facts.cpu == {"quota_us": 50000, "period_us": 100000, "weight": 39, "usage_ns": 1500000, "periods": 10,
                         "throttled_periods": 4, "throttled_ns": 200000}
    assert facts.pids == {"max": None, "current": 3}
    asked = {"memory": {"limit": 64 << 20}, "cpu": {"quota": 50000, "period": 100000, "shares": 1024}}
    assert cgroup.compare(facts, asked) == []
    asked = {"memory": {"limit": 128 << 20}, "cpu": {"quota": 20000, "period": 100000}, "pids": {"limit": 50}}
    assert cgroup.compare(facts, asked) == [
        f"memory limit differs: the spec asks for {128 << 20} bytes, the cgroup has {64 << 20}",
        "CPU quota differs: the spec asks for 20000us per period, the cgroup has 50000",
        "pids limit differs: the spec asks for 50, the cgroup has max"]


def test_cgroup_v2_limit_not_applied(tmp_path: Path):
    write_files(tmp_path / "c", {"memory.max": "max\n", "cpu.max": "max 100000\n"})
    facts = cgroup.read_v2("/c", tmp_path)
    assert facts.cpu["quota_us"] is None
    assert cgroup.compare(facts, {"memory": {"limit": 1 << 20}}) == [
        f"memory limit NOT applied: the spec asks for {1 << 20} bytes, the cgroup has no limit"]


def test_cgroup_v1_across_hierarchies(tmp_path: Path):
    rel = "crispy/pod/c"
    write_files(tmp_path / "memory" / rel, {
        "memory.limit_in_bytes": "67108864\n", "memory.soft_limit_in_bytes": "9223372036854771712\n",
        "memory.usage_in_bytes": "4096\n", "memory.max_usage_in_bytes": "8192\n",
        "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n"})
    write_files(tmp_path / "cpu" / rel, {"cpu.cfs_quota_us": "-1\n", "cpu.cfs_period_us": "100000\n",
                                         "cpu.shares": "512\n", "cpu.stat": "nr_periods 0\nnr_throttled 0\n"
                                                                            "throttled_time 0\n"})
    write_files(tmp_path / "cpuacct" / rel, {"cpuacct.usage": "123456\n"})
    write_files(tmp_path / "pids" / rel, {"pids.max": "1024\n", "pids.current": "2\n"})
    write_files(tmp_path / "devices" / rel, {"devices.list": "c 1:3 rwm\nc 136:* rwm\n"})
    paths_ = {c: "/" + rel for c in ("memory", "cpu", "cpuacct", "pids", "devices")}
    hierarchies = {c: tmp_path / c for c in ("memory", "cpu", "cpuacct", "pids", "devices")}
    facts = cgroup.read_v1(paths_, hierarchies)
    assert facts.path == "/" + rel and facts.dirs["memory"] == str(tmp_path / "memory" / rel)
    assert facts.memory == {"max": 64 << 20, "high": None, "current": 4096, "peak": 8192, "swap_max": None,
                            "oom_kills": 2, "under_oom": 0}
    assert facts.cpu["quota_us"] is None and facts.cpu["shares"] == 512 and facts.cpu["usage_ns"] == 123456
    assert facts.pids == {"max": 1024, "current": 2} and facts.devices == ["c 1:3 rwm", "c 136:* rwm"]
    assert cgroup.compare(facts, {"cpu": {"shares": 512}, "pids": {"limit": 1024}}) == []
    assert cgroup.compare(facts, {"cpu": {"shares": 2}}) == ["CPU shares differ: the spec asks for 2, the cgroup has 512"]


# ---- filesystem -----------------------------------------------------------------------

MOUNTINFO = (
    "600 500 0:50 / / rw,relatime master:1 - overlay overlay rw,lowerdir=/s/ccc:/s/bbb:/s/aaa,upperdir=/c/upper,"
    "workdir=/c/work\n"
    "601 600 0:51 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw\n"
    "602 600 8:1 /srv/my\\040data /data ro,relatime shared:7 - ext4 /dev/sda1 rw\n"
    "603 601 0:52 / /proc/acpi ro,relatime - tmpfs tmpfs ro\n"
    "604 601 0:51 /sys /proc/sys ro,relatime - proc proc rw\n"
    "605 601 0:51 /sys /proc/sys rw,relatime - proc proc rw\n"
)


def test_mountinfo_parsing_with_propagation_and_escapes():
    mounts = filesystem.parse_mountinfo(MOUNTINFO)
    root, data = mounts[0], mounts[2]
    assert root.fstype == "overlay" and root.propagation == "master:1" and not root.readonly
    assert filesystem.overlay_dirs(root) == (["/s/ccc", "/s/bbb", "/s/aaa"], "/c/upper", "/c/work")
    assert data.root == "/srv/my data" and data.readonly and data.propagation == "shared:7"
    # A later mount on the same point hides the earlier one.
    assert [m.mount_id for m in filesystem.visible(mounts)] == [600, 601, 602, 603, 605]


def test_root_layers_in_order_with_the_images_digests(tmp_path: Path):
    hexes = ["a" * 64, "b" * 64, "c" * 64]
    text = MOUNTINFO.replace("/s/ccc:/s/bbb:/s/aaa", ":".join(f"/s/{h}" for h in reversed(hexes)))
    image = SimpleNamespace(id="sha256:img", chain_ids=[f"sha256:{h}" for h in hexes],
                            layer_blobs=["sha256:l1", "sha256:l2", "sha256:l3"], diff_ids=["d1", "d2", "d3"])
    sizes = {f"sha256:{hexes[0]}": 100}
    root = filesystem.root_facts(filesystem.parse_mountinfo(text), image, "busybox:1", {}, sizes)
    assert [(layer.index, layer.digest, layer.diff_id) for layer in root.layers] == [
        (1, "sha256:l1", "d1"), (2, "sha256:l2", "d2"), (3, "sha256:l3", "d3")]
    assert root.layers[0].size == 100 and root.layers[1].size is None and root.warnings == []
    other = SimpleNamespace(id="sha256:x", chain_ids=["sha256:" + "d" * 64], layer_blobs=["x"], diff_ids=["x"])
    root = filesystem.root_facts(filesystem.parse_mountinfo(text), other, "other:1", {"readonly": True}, {})
    assert "the spec asks for a read-only root, the root is mounted rw" in root.warnings
    assert f"lower dir /s/{hexes[0]} is not a layer of image other:1" in root.warnings


def test_masked_readonly_and_spec_mounts():
    mounts = filesystem.parse_mountinfo(MOUNTINFO)
    masked = filesystem.masked_paths(mounts, ["/proc/acpi", "/proc/kcore", "/proc/keys"], lambda p: p == "/proc/keys")
    assert [(c.path, c.state) for c in masked] == [("/proc/acpi", "masked"), ("/proc/kcore", "absent"),
                                                   ("/proc/keys", "NOT masked")]
    ro = filesystem.readonly_paths(mounts, ["/proc/sys"], lambda p: True)
    assert ro[0].state == "NOT read-only"  # the read-only mount is covered by a read-write one
    spec = [{"destination": "/data", "type": "bind", "source": "/srv/my data", "options": ["rbind", "ro"]},
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/missing", "type": "bind", "source": "/x", "options": ["rbind"]}]
    table, warnings = filesystem.mount_table(mounts, spec)
    assert {m["mountpoint"]: m.get("host_path") for m in table}["/data"] == "/srv/my data"
    assert warnings == ["/missing: the spec mounts /x there, the container has no mount at that point"]
    _, warnings = filesystem.mount_table(mounts, [{"destination": "/proc", "type": "bind", "source": "/hp",
                                                   "options": ["rbind", "ro"]}])
    assert warnings == ["/proc: the spec asks for a read-only bind of /hp, the kernel has it read-write"]


# ---- --path ---------------------------------------------------------------------------


def test_path_origin_top_layer_wins_then_upper_then_mounts(tmp_path: Path):
    root, upper, l1, l2 = (tmp_path / n for n in ("root", "upper", "l1", "l2"))
    for d, files in ((l1, {"bin/tool": "1", "etc/conf": "1"}), (l2, {"etc/conf": "2", "opt/x": "2"}),
                     (upper, {"tmp/new": "u"}), (root, {"bin/tool": "1", "etc/conf": "2", "opt/x": "2",
                                                        "tmp/new": "u"})):
        for rel, text in files.items():
            (d / rel).parent.mkdir(parents=True, exist_ok=True)
            (d / rel).write_text(text)
    (upper / "etc").mkdir()  # a directory copied up, not a file the container wrote
    os.symlink("/opt", root / "link")
    layers = [{"index": 1, "dir": str(l1), "digest": "sha256:one"}, {"index": 2, "dir": str(l2), "digest": "sha256:two"}]
    mounts = [{"mountpoint": "/data", "fstype": "ext4", "source": "/dev/sda1", "host_path": "/srv/data",
               "readonly": True}, {"mountpoint": "/proc", "fstype": "proc", "source": "proc", "readonly": False}]

    def where(p: str) -> paths.PathOrigin:
        return paths.origin(p, str(root), mounts, str(upper), layers, "img:1")
    conf = where("/etc/conf")
    assert (conf.kind, conf.layer, conf.digest, conf.host_path) == ("layer", 2, "sha256:two", str(l2 / "etc/conf"))
    assert conf.answer == "layer 2 of img:1 (sha256:two)"
    assert (where("/bin/tool").layer, where("/tmp/new").kind) == (1, "upper")
    assert where("/tmp/new").answer == f"written by the container (its upper dir: {upper / 'tmp/new'})"
    assert where("/etc").answer == "layer 2 of img:1 (sha256:two), a directory the container has written in"
    x = where("/link/x")  # /link -> /opt, followed inside the container
    assert (x.resolved, x.layer) == ("/opt/x", 2)
    last = where("/link")  # the last component is looked at, not followed
    assert (last.resolved, last.symlink_to) == ("/link", "/opt")
    data = where("/data/sub/f")
    assert data.answer == "bind mount of /srv/data/sub/f, read-only" and data.host_path == "/srv/data/sub/f"
    assert where("/proc/1/status").answer == "proc mounted at /proc (source proc), read-write"
    assert where("/nope").kind == "missing"
    with pytest.raises(Exception, match="must be absolute"):
        where("etc/conf")


# ---- security and network -----------------------------------------------------------------


def test_capabilities_by_name_and_disagreements(tmp_path: Path):
    make_proc(tmp_path, 100, 1, ["x"])
    facts = security.read_facts(100, tmp_path, lsm_list=tmp_path / "lsm")
    assert facts.capabilities["effective"][:3] == ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER"]
    assert "CAP_SYS_ADMIN" not in facts.capabilities["effective"] and facts.capabilities["ambient"] == []
    assert (facts.no_new_privs, facts.seccomp_mode, facts.seccomp_filters) == (True, "filter", 1)
    spec = {"process": {"noNewPrivileges": True,
                        "capabilities": {"effective": [*facts.capabilities["effective"], "CAP_SYS_ADMIN"]}},
            "linux": {"seccomp": {"defaultAction": "SCMP_ACT_ERRNO"}}}
    assert security.compare(facts, spec) == ["effective capabilities differ from the spec: lacks CAP_SYS_ADMIN"]
    assert security.cap_names("1" + "0" * 11) == ["CAP_44"]
    def profile(sc: dict, spec_has: bool = False) -> str:
        return security.profile_of({"linux": {"security_context": sc}}, spec_has)
    assert profile({"seccomp": {"profile_type": "Localhost", "localhost_ref": "/p.json"}}) == "Localhost /p.json"
    assert profile({"seccomp": {}}) == "RuntimeDefault"
    assert profile({}) == "Unconfined (none asked)"
    assert profile({}, True) == "RuntimeDefault (the node's seccomp_default)"
    assert profile({"privileged": True, "seccomp": {}}) == "none (privileged)"
    assert security.spec_devices({"linux": {"resources": {"devices": [
        {"allow": False, "access": "rwm"}, {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"}]}}}) \
        == ["c 1:3 rwm"]


def test_network_parsers():
    addrs = ('[{"ifname":"lo","operstate":"UNKNOWN","address":"00:00:00:00:00:00","mtu":65536,'
             '"addr_info":[{"local":"127.0.0.1","prefixlen":8}]},{"ifname":"eth0","operstate":"UP",'
             '"address":"aa:bb:cc:dd:ee:ff","mtu":1500,"addr_info":[{"local":"10.88.0.5","prefixlen":16}]}]')
    assert network.parse_addresses(addrs)[1] == {"name": "eth0", "state": "UP", "mac": "aa:bb:cc:dd:ee:ff",
                                                 "mtu": 1500, "addresses": ["10.88.0.5/16"]}
    assert network.parse_routes('[{"dst":"default","gateway":"10.88.0.1","dev":"eth0"}]') == [
        {"dst": "default", "gateway": "10.88.0.1", "dev": "eth0", "src": ""}]
    assert network.parse_resolv_conf("# x\nnameserver 10.96.0.10\nsearch a b\noptions ndots:5\n") == {
        "nameservers": ["10.96.0.10"], "search": ["a", "b"], "options": ["ndots:5"]}
    rules = ("-A CNI-HOSTPORT-DNAT -p tcp -m comment --comment \"dnat name: \\\"n\\\" id: \\\"abc\\\"\" -j CNI-DN-1\n"
             "-A CNI-DN-1 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.88.0.5:80\n"
             "-A CNI-DN-2 -p tcp -m tcp --dport 8081 -j DNAT --to-destination 10.88.0.50:80\n")
    assert len(network.rules_for(rules, "abc", ["10.88.0.5"])) == 2
    facts = network.NetworkFacts(netns="/p/net")
    network.cni_facts(facts, {"state": {"network": "n", "conflist": {"plugins": [{"type": "bridge"},
                                                                                 {"type": "portmap"}]},
                                        "ifname": "eth0", "ips": ["10.88.0.5"], "capabilityArgs": {
                                            "portMappings": [{"hostPort": 8080, "containerPort": 80}]}}})
    assert (facts.cni_network, facts.cni_plugins, facts.ips) == ("n", ["bridge", "portmap"], ["10.88.0.5"])


# ---- rendering and name resolution ----------------------------------------------------------


def test_render_says_what_the_json_says():
    report = {"kind": "container", "id": "c" * 64, "name": "app", "pod": {"id": "p" * 64, "name": "web",
                                                                          "namespace": "shop"},
              "state": "running", "pid": 42, "image": "img:1", "image_id": "sha256:" + "f" * 64,
              "warnings": ["memory limit NOT applied: x"],
              "processes": [{"pid": 42, "ns_pid": 1, "ppid": 1, "depth": 0, "state": "S", "command": ["sleep", "9"],
                             "uid": 0, "gid": 0, "host_uid": 100000, "host_gid": 100000, "groups": []}],
              "namespaces": [{"kind": "net", "inode": 5, "holder": "host", "path": "", "expected": "host",
                              "warnings": []}],
              "cgroup": {"version": 2, "path": "/k/c", "dirs": {}, "memory": {"max": 64 << 20, "current": 1 << 20},
                         "cpu": {}, "pids": {"max": None, "current": 1}, "devices": [], "warnings": []}}
    text = render.render(report)
    assert text.startswith("container app ccccccccccccc in pod shop/web ppppppppppppp: running, pid 42\n")
    assert "  ! memory limit NOT applied: x" in text
    assert "        42     1  0(100000)    0(100000)    sleep 9" in text
    assert "  net     5           HOST   ! the node's network" in text
    assert "  memory  max 64.0 MiB, high none; current 1.0 MiB" in text and "pids    max none, current 1" in text


CANDIDATES = [
    Candidate("pod", "aaa111", "web", "shop", "web"),
    Candidate("container", "bbb222", "web", "shop", "web", attempt=0),
    Candidate("container", "bbb333", "web", "shop", "web", attempt=1),
    Candidate("pod", "ccc444", "db", "shop", "db"),
    Candidate("pod", "ddd555", "db", "lab", "db"),
]


def test_names_ids_and_prefixes_resolve_or_are_refused_with_the_candidates():
    assert resolve(CANDIDATES, "bbb222").id == "bbb222"
    assert resolve(CANDIDATES, "ccc").id == "ccc444"
    assert resolve(CANDIDATES, "pod/web").id == "aaa111"
    assert resolve(CANDIDATES, "container/web").id == "bbb333"  # the latest attempt
    assert resolve(CANDIDATES, "db", namespace="lab").id == "ddd555"
    with pytest.raises(Refused, match=r"'web' is ambiguous: it names 2 objects") as e:
        resolve(CANDIDATES, "web")
    assert "aaa111" in str(e.value) and "bbb333" in str(e.value) and "pod/NAME" in str(e.value)
    with pytest.raises(Refused, match="'bbb' is ambiguous"):
        resolve(CANDIDATES, "bbb")
    with pytest.raises(Refused, match="no pod or container in namespace 'lab' has the name or an ID starting"):
        resolve(CANDIDATES, "web", namespace="lab")


# ---- the whole report, on a fixture node with cgroup v2 ----------------------------------------


class FakeImages:
    def __init__(self, record: SimpleNamespace, dirs: list[str]) -> None:
        self.record, self.dirs = record, dirs

    async def find(self, ref_or_id: str) -> SimpleNamespace | None:
        return self.record if ref_or_id == self.record.id else None

    def layer_dirs(self, record: SimpleNamespace) -> list[str]:
        return self.dirs


def test_container_report_on_a_fixture_v2_node(tmp_path: Path):
    proc, cg, bundle = tmp_path / "proc", tmp_path / "cgroup", tmp_path / "bundle"
    snaps = tmp_path / "snapshots"
    hexes = ["a" * 64, "b" * 64]
    for h in hexes:
        write_files(snaps / h, {"f": "x" * 5000})
    upper = tmp_path / "upper"
    write_files(upper, {"new": "y"})
    make_proc(proc, 300, 250, ["app", "--serve"], nspid="300 1")
    ns_links(proc, 1, HOST)
    ns_links(proc, 300, dict(HOST, mnt=31, pid=32))
    (proc / "300" / "cgroup").write_text("0::/kubepods/pod1/crispy-c1\n")
    lowers = ":".join(str(snaps / h) for h in reversed(hexes))
    (proc / "300" / "mountinfo").write_text(
        f"1 0 0:50 / / rw - overlay overlay rw,lowerdir={lowers},upperdir={upper},workdir=/w\n"
        "2 1 0:51 / /proc rw,nosuid - proc proc rw\n")
    write_files(cg / "kubepods" / "pod1" / "crispy-c1", {
        "memory.max": "max\n", "memory.current": "100\n", "cpu.max": "max 100000\n", "cpu.weight": "100\n",
        "pids.max": "max\n", "pids.current": "1\n"})
    spec = {"root": {"path": "rootfs"}, "process": {"noNewPrivileges": True},
            "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "network"}],
                      "resources": {"memory": {"limit": 1 << 20}, "devices": [
                          {"allow": False, "access": "rwm"}, {"allow": True, "type": "c", "major": 1, "minor": 3,
                                                              "access": "rwm"}]},
                      "seccomp": {"defaultAction": "SCMP_ACT_ERRNO"}, "maskedPaths": ["/proc/kcore"]}}
    bundle.mkdir()
    (bundle / "config.json").write_text(json.dumps(spec))
    index = RecordIndex()
    index.sandboxes["p1"] = SandboxRecord(id="p1", name="web", namespace="shop", uid="u", attempt=0, config={},
                                          runtime_handler="", oci_runtime="runc", created_at=1)
    ctr = ContainerRecord(id="c1", sandbox_id="p1", name="app", attempt=0, config={}, created_at=2, image="img:1",
                          image_id="sha256:img", state="running", pid=300, bundle=str(bundle),
                          cgroup_path="/kubepods/pod1/crispy-c1")
    image = SimpleNamespace(id="sha256:img", repo_tags=["img:1"], chain_ids=[f"sha256:{h}" for h in hexes],
                            layer_blobs=["sha256:l1", "sha256:l2"], diff_ids=["d1", "d2"])
    explainer = Explainer(index, FakeImages(image, [str(snaps / h) for h in hexes]), CgroupLayout("v2", str(cg)),
                          "cgroupfs", cgroup_root=cg, proc=proc)
    report = asyncio.run(explainer.container(ctr))
    assert report["pod"] == {"id": "p1", "name": "web", "namespace": "shop"} and report["image"] == "img:1"
    assert report["cgroup"]["version"] == 2 and report["cgroup"]["path"] == "/kubepods/pod1/crispy-c1"
    assert [layer["digest"] for layer in report["filesystem"]["root"]["layers"]] == ["sha256:l1", "sha256:l2"]
    assert all(layer["size"] >= 5000 for layer in report["filesystem"]["root"]["layers"])
    assert report["filesystem"]["root"]["upper_size"] > 0
    assert report["security"]["devices"] == ["c 1:3 rwm"] and "eBPF" in report["security"]["devices_source"]
    # The spec asked for a memory limit and a network namespace of its own;
    # the fixture kernel has neither. NoNewPrivs and seccomp agree.
    assert report["warnings"] == [
        "net: the spec asked for a namespace of its own, but it is the host's",
        f"memory limit NOT applied: the spec asks for {1 << 20} bytes, the cgroup has no limit",
    ], report["warnings"]
    text = render.render(report)
    assert "WHAT THE KERNEL HAS IS NOT WHAT WAS ASKED" in text and "layer 2  sha256:l2" in text


def test_no_daemon_is_said_plainly(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    sock = str(tmp_path / "nobody.sock")
    assert cli.main(["--socket", sock, "--data-root", str(tmp_path / "d"), "--state-root", str(tmp_path / "s"),
                     "explain", "web"]) == 1
    assert capsys.readouterr().err == f"crispy explain: no daemon answers on {sock}; start it (crispy serve) or " \
                                      f"point --socket at it\n"


def test_lsm_labels_read_and_set_against_the_spec(tmp_path: Path):
    make_proc(tmp_path, 100, 1, ["x"])
    (tmp_path / "100" / "attr").mkdir()
    (tmp_path / "100" / "attr" / "current").write_text("crispy-default (enforce)\n")
    (tmp_path / "lsm").write_text("lockdown,capability,apparmor")
    facts = security.read_facts(100, tmp_path, lsm_list=tmp_path / "lsm")
    assert facts.lsm == "crispy-default (enforce)" and "apparmor" in facts.lsm_modules
    spec = {"process": {"noNewPrivileges": True, "apparmorProfile": "crispy-default"},
            "linux": {"seccomp": {"defaultAction": "SCMP_ACT_ERRNO"}}}
    assert security.compare(facts, spec) == []
    spec["process"]["apparmorProfile"] = "other"
    assert security.compare(facts, spec) == [
        "the spec asks for AppArmor profile other, the process is confined by crispy-default (enforce)"]

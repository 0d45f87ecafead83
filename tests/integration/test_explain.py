"""`crispy explain` on real pods, through the command line and the running
daemon: a pod with a shared PID namespace, a host-network pod, a container
with a memory limit and a bind mount, a three-layer image. Every fact the
report gives is checked against what the test reads itself from /proc,
cgroupfs and the image it built — never through runtime/explain/."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cri.proto import api_pb2 as pb
from tests import imagebuild as ib
from tests.daemon_proc import DaemonProcess, tmp_base
from tests.integration.test_cni_integration import CNI_BIN, PodNet, host_guard  # noqa: F401
from tests.pods_fixtures import *  # noqa: F403
from tests.pods_fixtures import container_config, load_image, pod_config, remove_all_pods, start_pod_daemon, wait_state

pytestmark = pytest.mark.integration

MULTI = "crispy.test/layers:3"
MiB = 1 << 20


def crispy(d: DaemonProcess, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cri.cli", "--socket", d.socket, "--data-root", d.data_root,
                           "--state-root", d.state_root, *args], capture_output=True, text=True, timeout=60)


def explain_json(d: DaemonProcess, *args: str) -> dict[str, Any]:
    out = crispy(d, "explain", "--json", *args)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def layered_image() -> ib.Image:
    """busybox; then /opt with two files and /etc/gone; then /opt/a.txt
    rewritten, /etc/gone deleted (a whiteout) and /opt/top.txt."""
    base = ib.make_layer(ib.busybox_entries())
    middle = ib.make_layer({"opt": ib.Dir(), "opt/a.txt": ib.File(b"from layer 2\n"),
                            "opt/base.txt": ib.File(b"only in layer 2\n"), "etc": ib.Dir(),
                            "etc/gone": ib.File(b"deleted above\n")})
    top = ib.make_layer({"opt": ib.Dir(), "opt/a.txt": ib.File(b"from layer 3\n"),
                         "opt/top.txt": ib.File(b"layer 3\n"), "etc": ib.Dir(), "etc/.wh.gone": ib.File(b"")})
    return ib.build_image([base, middle, top])


@pytest.fixture(scope="module")
def image(module_daemon: DaemonProcess) -> ib.Image:
    img = layered_image()
    layout = module_daemon.base / "layout"
    ib.write_oci_layout(img, layout, ref_name=MULTI)
    out = crispy(module_daemon, "load", str(layout))
    assert out.returncode == 0, out.stderr
    load_image(module_daemon)  # crispy.test/busybox:1, one layer
    return img


def ns_inode(pid: int | str, kind: str) -> int:
    # The node's namespaces: the test's own (/proc/1 may be hidden), as the daemon's.
    link = os.readlink(f"/proc/{pid}/ns/{kind}")
    return int(link[link.index("[") + 1:-1])


def status_field(pid: int, key: str) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return line.split(":", 1)[1].strip()
    raise KeyError(key)


def memory_cgroup_dir(pid: int) -> Path:
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        hid, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return Path("/sys/fs/cgroup/memory") / path.lstrip("/")
        if hid == "0" and not controllers and Path("/sys/fs/cgroup/cgroup.controllers").exists():
            return Path("/sys/fs/cgroup") / path.lstrip("/")
    raise AssertionError("no memory cgroup")


def root_overlay(pid: int) -> dict[str, str]:
    """The container root's overlay options, from its mountinfo."""
    root = [line for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines() if line.split()[4] == "/"][-1]
    opts = root.split(" - ", 1)[1].split()[2]
    return dict(o.partition("=")[::2] for o in opts.split(","))


def capsh_decode(mask: str) -> set[str]:
    out = subprocess.run(["capsh", f"--decode={mask}"], capture_output=True, text=True, check=True).stdout
    names = out.split("=", 1)[1].strip()
    return {n.upper() for n in names.split(",") if n}


def run_pod_and_container(c, pod_cfg: pb.PodSandboxConfig, ctr_cfg: pb.ContainerConfig) -> tuple[str, str, int]:
    pod = c.run_pod_sandbox(pod_cfg)
    ctr = c.create_container(pod, ctr_cfg, pod_cfg)
    c.start_container(ctr)
    assert wait_state(c, ctr, pb.CONTAINER_RUNNING).state == pb.CONTAINER_RUNNING
    info = json.loads(c.runtime.ContainerStatus(pb.ContainerStatusRequest(container_id=ctr, verbose=True)).info["info"])
    return pod, ctr, info["pid"]


def test_container_in_a_shared_pid_pod_with_memory_limit_bind_mount_and_layers(clean_pods, image, tmp_path):
    d = clean_pods
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "hello").write_text("from the node\n")
    pod_cfg = pod_config("explained", namespace="team-a")
    pod_cfg.linux.security_context.namespace_options.pid = pb.POD
    ctr_cfg = container_config("app", ["sh", "-c", "sleep 3600 & wait"], image=MULTI)
    ctr_cfg.linux.resources.memory_limit_in_bytes = 64 * MiB
    ctr_cfg.mounts.append(pb.Mount(container_path="/data", host_path=str(shared), readonly=True))
    with d.client() as c:
        pod, ctr, pid = run_pod_and_container(c, pod_cfg, ctr_cfg)
        pod_info = json.loads(c.runtime.PodSandboxStatus(
            pb.PodSandboxStatusRequest(pod_sandbox_id=pod, verbose=True)).info["info"])
        c.exec_sync(ctr, ["sh", "-c", "echo mine > /tmp/written; rm /opt/base.txt"], timeout=10)

    report = explain_json(d, "app", "--namespace", "team-a")
    assert report["kind"] == "container" and report["id"] == ctr and report["pid"] == pid
    assert report["pod"]["name"] == "explained" and report["image"] == MULTI
    assert report["warnings"] == [], report["warnings"]

    # Processes: sh and its sleep child, host and in-pod PIDs as /proc has them.
    procs = report["processes"]
    assert procs[0]["pid"] == pid and procs[0]["command"][:2] == ["sh", "-c"]
    assert [p["command"][0] for p in procs] == ["sh", "sleep"] and procs[1]["depth"] == 1
    for p in procs:
        assert p["ns_pid"] == int(status_field(p["pid"], "NSpid").split()[-1])
        assert p["host_uid"] == int(status_field(p["pid"], "Uid").split()[1]) == p["uid"] == 0
    # In the pod's PID namespace the infra process is PID 1, not the container.
    assert procs[0]["ns_pid"] != 1

    # Namespaces: inodes as /proc links say; pid and net are the pod's pins.
    nss = {n["kind"]: n for n in report["namespaces"]}
    for kind, n in nss.items():
        assert n["inode"] == ns_inode(pid, kind), kind
    assert nss["pid"]["holder"] == "pod" and nss["pid"]["path"] == pod_info["namespaces"]["pid"]
    assert nss["pid"]["inode"] == os.stat(pod_info["namespaces"]["pid"]).st_ino
    assert nss["net"]["holder"] == "pod" and nss["net"]["inode"] == os.stat(pod_info["namespaces"]["network"]).st_ino
    assert nss["mnt"]["holder"] == "own" and nss["mnt"]["inode"] != ns_inode("self", "mnt")
    assert nss["user"]["holder"] == "host" and nss["user"]["inode"] == ns_inode("self", "user")

    # cgroup: the 64 MiB limit is in the kernel's file, usage is live.
    cg = report["cgroup"]
    mem_dir = memory_cgroup_dir(pid)
    limit_file = "memory.max" if (mem_dir / "memory.max").exists() else "memory.limit_in_bytes"
    assert cg["memory"]["max"] == int((mem_dir / limit_file).read_text()) == 64 * MiB
    assert 0 < cg["memory"]["current"] <= 64 * MiB
    assert cg["pids"]["current"] >= 2

    # Filesystem: three layers, bottom first, with the digests the test built.
    root = report["filesystem"]["root"]
    manifest = json.loads(image.manifest)
    assert [layer["digest"] for layer in root["layers"]] == [desc["digest"] for desc in manifest["layers"]]
    assert [layer["index"] for layer in root["layers"]] == [1, 2, 3]
    overlay = root_overlay(pid)
    assert root["upper"] == overlay["upperdir"]
    assert [layer["dir"] for layer in reversed(root["layers"])] == overlay["lowerdir"].split(":")
    assert root["upper_size"] > 0 and all(layer["size"] > 0 for layer in root["layers"])
    mounts = {m["mountpoint"]: m for m in report["filesystem"]["mounts"]}
    assert mounts["/data"]["host_path"] == str(shared) and mounts["/data"]["readonly"]
    assert mounts["/proc"]["fstype"] == "proc"
    masked = {m["path"]: m["state"] for m in report["filesystem"]["masked_paths"]}
    # Same kernel: what exists on the node exists in the container, and must be masked there.
    assert masked and masked == {p: "masked" if os.path.exists(p) else "absent" for p in masked}
    assert "masked" in masked.values()

    # Security: the sets as capsh decodes the kernel's masks.
    sec = report["security"]
    for key, name in (("CapEff", "effective"), ("CapBnd", "bounding"), ("CapPrm", "permitted")):
        assert set(sec["capabilities"][name]) == capsh_decode(status_field(pid, key)), name
    assert "CAP_SYS_ADMIN" not in sec["capabilities"]["effective"]
    assert sec["seccomp_mode"] == {"0": "disabled", "1": "strict", "2": "filter"}[status_field(pid, "Seccomp")]
    assert sec["no_new_privs"] == (status_field(pid, "NoNewPrivs") == "1")

    # --path: which layer, written or deleted by the container, a bind mount.
    def where(path: str) -> dict[str, Any]:
        return explain_json(d, "app", "--path", path)
    a = where("/opt/a.txt")
    assert a["kind"] == "layer" and a["layer"] == 3 and a["digest"] == manifest["layers"][2]["digest"]
    assert Path(a["host_path"]).read_text() == "from layer 3\n"
    assert where("/opt/top.txt")["layer"] == 3
    busybox = where("/bin/busybox")
    assert busybox["layer"] == 1 and busybox["digest"] == manifest["layers"][0]["digest"]
    assert where("/etc/gone")["kind"] == "deleted" and "layer 3" in where("/etc/gone")["answer"]
    written = where("/tmp/written")
    assert written["kind"] == "upper" and Path(written["host_path"]).read_text() == "mine\n"
    assert written["host_path"].startswith(overlay["upperdir"])
    assert where("/opt/base.txt")["kind"] == "deleted"
    assert "by the container" in where("/opt/base.txt")["answer"]
    data = where("/data/hello")
    assert data["kind"] == "mount" and data["host_path"] == str(shared / "hello") and data["readonly"]
    assert where("/no/such/file")["kind"] == "missing"
    text = crispy(d, "explain", "app", "--path", "/opt/a.txt").stdout
    assert text.startswith(f"/opt/a.txt: layer 3 of {MULTI} (sha256:")

    # The human report says the same things.
    text = crispy(d, "explain", ctr[:12]).stdout
    assert f"container app {ctr[:13]} in pod team-a/explained" in text
    assert "NAMESPACES" in text and "HOST   ! no user namespace" in text
    assert "memory  max 64.0 MiB" in text
    assert f"layer 3  {manifest['layers'][2]['digest'][:19]}" in text
    assert "WHAT THE KERNEL HAS IS NOT WHAT WAS ASKED" not in text

    # The pod's report: its pinned namespaces, the infra and the container's processes.
    pod_report = explain_json(d, "pod/explained")
    assert pod_report["kind"] == "pod" and pod_report["id"] == pod and pod_report["infra_pid"] == pod_info["pid"]
    pod_nss = {n["kind"]: n for n in pod_report["namespaces"]}
    assert pod_nss["pid"]["holder"] == "pod" and pod_nss["pid"]["inode"] == ns_inode(pod_info["pid"], "pid")
    assert pod_nss["net"]["inode"] == nss["net"]["inode"]
    groups = {g["container"]: g["processes"] for g in pod_report["processes"]}
    assert groups["(infra)"][0]["pid"] == pod_info["pid"] and groups["(infra)"][0]["ns_pid"] == 1
    assert groups["app"][0]["pid"] == pid
    lo = {i["name"]: i for i in pod_report["network"]["interfaces"]}["lo"]
    assert "127.0.0.1/8" in lo["addresses"]


def test_a_limit_changed_behind_crispys_back_is_reported(clean_pods, image):
    d = clean_pods
    pod_cfg = pod_config("drift")
    ctr_cfg = container_config("limited", ["sleep", "3600"])
    ctr_cfg.linux.resources.memory_limit_in_bytes = 32 * MiB
    sc = ctr_cfg.linux.security_context
    sc.seccomp.profile_type = pb.SecurityProfile.RuntimeDefault
    sc.no_new_privs = True
    sc.capabilities.drop_capabilities.append("NET_RAW")
    sc.capabilities.add_capabilities.append("SYS_TIME")
    with d.client() as c:
        _, ctr, pid = run_pod_and_container(c, pod_cfg, ctr_cfg)
    # Before the drift: what the container asked for, as the kernel applied it.
    sec = explain_json(d, "limited")["security"]
    assert sec["seccomp_mode"] == "filter" and status_field(pid, "Seccomp") == "2"
    assert sec["seccomp_profile"] == "RuntimeDefault" and sec["seccomp_filters"] >= 1
    assert sec["no_new_privs"] is True and status_field(pid, "NoNewPrivs") == "1"
    effective = capsh_decode(status_field(pid, "CapEff"))
    assert set(sec["capabilities"]["effective"]) == effective
    assert "CAP_SYS_TIME" in effective and "CAP_NET_RAW" not in effective
    mem_dir = memory_cgroup_dir(pid)
    limit_file = "memory.max" if (mem_dir / "memory.max").exists() else "memory.limit_in_bytes"
    (mem_dir / limit_file).write_text(str(48 * MiB))
    report = explain_json(d, "limited")
    assert report["cgroup"]["memory"]["max"] == 48 * MiB
    assert any("memory limit differs" in w and str(32 * MiB) in w for w in report["warnings"]), report["warnings"]
    text = crispy(d, "explain", "limited").stdout
    assert "WHAT THE KERNEL HAS IS NOT WHAT WAS ASKED" in text and "memory limit differs" in text


def test_host_network_pod_is_flagged(clean_pods, image):
    d = clean_pods
    pod_cfg = pod_config("hostnet")
    pod_cfg.linux.security_context.namespace_options.network = pb.NODE
    ctr_cfg = container_config("web", ["sleep", "3600"])
    with d.client() as c:
        pod, ctr, pid = run_pod_and_container(c, pod_cfg, ctr_cfg)
    report = explain_json(d, "pod/hostnet")
    nss = {n["kind"]: n for n in report["namespaces"]}
    assert nss["net"]["holder"] == "host" and nss["net"]["inode"] == ns_inode("self", "net")
    assert nss["uts"]["holder"] == "host" and nss["ipc"]["holder"] == "pod"
    assert report["network"]["netns"] == "host"
    host_links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    names = {line.split(":")[1].strip().split("@")[0] for line in host_links.splitlines()}
    assert {i["name"] for i in report["network"]["interfaces"]} == names
    assert report["warnings"] == []  # the host network is what it asked for
    text = crispy(d, "explain", "pod/hostnet").stdout
    assert "net     " in text and "HOST   ! the node's network" in text and "! HOST network" in text
    ctr_report = explain_json(d, "web")
    ctr_nss = {n["kind"]: n for n in ctr_report["namespaces"]}
    assert ctr_nss["net"]["holder"] == "host" and ctr_nss["net"]["inode"] == ns_inode(pid, "net")
    assert ctr_nss["net"]["expected"] == "host" and ctr_report["warnings"] == []
    if shutil.which("crictl"):
        # crictl inspect makes the same verbose call: it shows the report too.
        out = subprocess.run(["crictl", "--runtime-endpoint", f"unix://{d.socket}", "inspect", "-o", "json", ctr],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        # Each info key is a top-level member of its output, beside "status" and "info".
        assert json.loads(out.stdout)["explain"]["id"] == ctr


def test_unknown_and_ambiguous_names_are_refused(clean_pods, image):
    d = clean_pods
    with d.client() as c:
        ids = [c.run_pod_sandbox(pod_config("twin", namespace=ns, uid=f"uid-{ns}")) for ns in ("ns-a", "ns-b")]
    out = crispy(d, "explain", "twin")
    assert out.returncode == 1 and "'twin' is ambiguous" in out.stderr
    assert ids[0][:13] in out.stderr and ids[1][:13] in out.stderr
    assert explain_json(d, "twin", "--namespace", "ns-b")["id"] == ids[1]
    assert explain_json(d, ids[0][:10])["id"] == ids[0]
    out = crispy(d, "explain", "nobody-has-this-name")
    assert out.returncode == 1 and "no pod or container" in out.stderr and "nobody-has-this-name" in out.stderr
    out = crispy(d, "explain", "pod/twin", "--namespace", "ns-a", "--path", "/etc")
    assert out.returncode == 1 and "--path needs a container" in out.stderr


@pytest.mark.skipif(not shutil.which("nsenter") or not os.path.exists(f"{CNI_BIN}/bridge"),
                    reason="needs nsenter and containernetworking-plugins")
def test_pod_on_a_cni_network_with_a_host_port(tmp_path, host_guard):  # noqa: F811 - the fixture imported above
    net = PodNet(tmp_path, host_guard)
    d = start_pod_daemon(tmp_base(), ["--cni-conf-dir", str(net.conf_dir), "--cni-bin-dirs", CNI_BIN])
    try:
        host_port = random.randrange(30000, 40000)
        cfg = pod_config("netpod", namespace="net")
        cfg.port_mappings.append(pb.PortMapping(protocol=pb.TCP, container_port=80, host_port=host_port))
        cfg.dns_config.servers.append("10.96.0.10")
        cfg.dns_config.searches.append("net.svc.cluster.local")
        with d.client() as c:
            pod = c.run_pod_sandbox(cfg)
            r = c.runtime.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=pod, verbose=True))
        ip, netns = r.status.network.ip, json.loads(r.info["info"])["namespaces"]["network"]
        report = explain_json(d, "netpod")
        assert report["warnings"] == [], report["warnings"]
        nw = report["network"]
        assert nw["netns"] == netns and nw["ips"] == [ip]
        # Interfaces and routes as iproute2 shows them inside the namespace.
        inside = subprocess.run(["nsenter", f"--net={netns}", "--", "ip", "-o", "-4", "addr", "show"],
                                capture_output=True, text=True, check=True).stdout
        have = {(line.split()[1], line.split()[3]) for line in inside.splitlines()}
        assert have == {(i["name"], a) for i in nw["interfaces"] for a in i["addresses"] if "." in a}
        assert ("eth0", next(a for n, a in have if n == "eth0")) in have and ip in inside
        default = subprocess.run(["nsenter", f"--net={netns}", "--", "ip", "-4", "route", "show", "default"],
                                 capture_output=True, text=True, check=True).stdout.split()
        assert {"dst": "default", "gateway": default[2], "dev": "eth0"}.items() <= next(
            r for r in nw["routes"] if r["dst"] == "default").items()
        # The CNI chain from the config the test wrote; the hostPort and its DNAT rule.
        conflist = json.loads(next(net.conf_dir.iterdir()).read_text())
        assert nw["cni_network"] == net.name and nw["cni_plugins"] == [p["type"] for p in conflist["plugins"]]
        assert nw["cni_ifname"] == "eth0"
        assert nw["port_mappings"] == [{"containerPort": 80, "hostIP": "", "hostPort": host_port, "protocol": "tcp"}]
        nat = subprocess.run(["iptables", "-w", "5", "-t", "nat", "-S"], capture_output=True, text=True,
                             check=True).stdout.splitlines()
        assert nw["nat_rules"] and set(nw["nat_rules"]) <= set(nat)
        assert any(f"--dport {host_port}" in rule and f"{ip}:80" in rule for rule in nw["nat_rules"]), nw["nat_rules"]
        assert nw["dns"]["nameservers"] == ["10.96.0.10"] and nw["dns"]["search"] == ["net.svc.cluster.local"]
        text = crispy(d, "explain", "netpod").stdout
        assert f"hostPort 0.0.0.0:{host_port} -> 80/tcp" in text and f"network {net.name}: bridge -> portmap" in text
    finally:
        try:
            remove_all_pods(d)
        finally:
            d.stop()


def test_exited_container_and_stopped_pod_say_so(clean_pods, image):
    d = clean_pods
    pod_cfg = pod_config("done")
    with d.client() as c:
        pod = c.run_pod_sandbox(pod_cfg)
        ctr = c.create_container(pod, container_config("once", ["true"]), pod_cfg)
        c.start_container(ctr)
        assert wait_state(c, ctr, pb.CONTAINER_EXITED).state == pb.CONTAINER_EXITED
        report = explain_json(d, "once")
        assert report["state"] == "exited" and report["pid"] == 0 and "processes" not in report
        assert report["notes"] == ["the container is exited: it has no processes, so there are no kernel facts to show"]
        out = crispy(d, "explain", "once", "--path", "/bin")
        assert out.returncode == 1 and "--path needs a running container" in out.stderr
        c.stop_pod_sandbox(pod)
        report = explain_json(d, "pod/done")
        assert report["state"] == "notready" and report["infra_pid"] == 0
        assert "the pod is stopped" in report["notes"][0] and report["warnings"] == []


def test_container_in_a_pods_user_namespace(clean_pods, image):
    d = clean_pods
    host_id, length = 65536 * 41, 65536
    # User-namespaced roots live beside the state root, which the
    # container's root must be able to search (as /run is on a node).
    for p in (d.base, Path(d.state_root).parent):
        os.chmod(p, 0o711)
    pod_cfg = pod_config("mapped")
    ns = pod_cfg.linux.security_context.namespace_options
    ns.pid = pb.POD
    ns.userns_options.mode = pb.POD
    ns.userns_options.uids.add(container_id=0, host_id=host_id, length=length)
    ns.userns_options.gids.add(container_id=0, host_id=host_id + length, length=length)
    ctr_cfg = container_config("app", ["sleep", "3600"], image=MULTI)
    ctr_cfg.linux.security_context.namespace_options.CopyFrom(ns)
    with d.client() as c:
        pod, ctr, pid = run_pod_and_container(c, pod_cfg, ctr_cfg)
        pod_info = json.loads(c.runtime.PodSandboxStatus(
            pb.PodSandboxStatusRequest(pod_sandbox_id=pod, verbose=True)).info["info"])
    report = explain_json(d, "app")
    assert report["warnings"] == [], report["warnings"]
    proc = report["processes"][0]
    # Root inside, the mapped IDs outside, as /proc/<pid>/status has them.
    assert (proc["uid"], proc["gid"]) == (0, 0)
    assert (proc["host_uid"], proc["host_gid"]) == (host_id, host_id + length)
    assert int(status_field(pid, "Uid").split()[1]) == host_id
    nss = {n["kind"]: n for n in report["namespaces"]}
    assert nss["user"]["holder"] == "pod" and nss["user"]["path"] == pod_info["namespaces"]["user"]
    assert nss["user"]["inode"] == ns_inode(pid, "user") != ns_inode("self", "user")
    sec = report["security"]
    assert sec["uid_map"] == [[0, host_id, length]] and sec["gid_map"] == [[0, host_id + length, length]]
    assert Path(f"/proc/{pid}/uid_map").read_text().split() == [str(v) for v in sec["uid_map"][0]]
    # The layers still name the image's (through the ID-mapped view of the store).
    manifest = json.loads(image.manifest)
    assert [layer["digest"] for layer in report["filesystem"]["root"]["layers"]] == \
        [desc["digest"] for desc in manifest["layers"]]
    text = crispy(d, "explain", "app").stdout
    assert "uid map    0-65535 -> host " in text and "user    " in text

"""Unit tests of the sans-IO and pure parts of pods and containers: conmon's
sync pipe and command line, the CRI log format, runtime error messages,
pod files, sysctl checks, overlay options, name reservations."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from runtime import cri_log, namespaces, pod_files, rootfs
from runtime.errors import AlreadyExists, Internal, InvalidArgument
from runtime.oci import conmon
from runtime.oci.cli import _clean
from runtime.oci.crun import CrunRuntime
from runtime.oci.runc import RuncRuntime
from runtime.reservations import Reservations

# ---- conmon ---------------------------------------------------------------------------

def test_sync_parser_handles_any_chunking():
    p = conmon.SyncPipeParser()
    assert p.feed(b'{"pi') == []
    assert p.feed(b'd": 4242}\n{"pid": -1, "mess') == [conmon.SyncMessage(4242, "")]
    msgs = p.feed(b'age": "runc create failed: boom"}\n')
    assert msgs == [conmon.SyncMessage(-1, "runc create failed: boom")] and msgs[0].failed
    assert p.feed(b'{"exit_code": 3, "message": "x"}') == []
    assert p.close() == [conmon.SyncMessage(3, "x")]
    assert conmon.parse_sync_line(b'{"data": 7}').value == 7


@pytest.mark.parametrize("bad", [b"not json", b"[1,2]", b'{"other": 1}'])
def test_sync_parser_rejects_garbage(bad):
    with pytest.raises(ValueError):
        conmon.SyncPipeParser().feed(bad + b"\n")


def test_create_argv():
    rt = RuncRuntime("/usr/sbin/runc", "/run/crispy/oci/runc")
    base = dict(conmon="/usr/bin/conmon", runtime=rt, container_id="abc", name="web", bundle="/b",
                log_path="/logs/web.log", exit_dir="/e", persist_dir="/b", container_pidfile="/b/pidfile",
                conmon_pidfile="/b/conmon.pid", socket_dir="/s")
    argv = conmon.create_argv(conmon.ConmonCreate(**base))
    joined = " ".join(argv)
    assert argv[0] == "/usr/bin/conmon"
    assert "--runtime /usr/sbin/runc" in joined and "--runtime-arg --root=/run/crispy/oci/runc" in joined
    assert "--log-path k8s-file:/logs/web.log" in joined and "--exit-dir /e" in joined
    assert "--terminal" not in argv and "--stdin" not in argv and "--systemd-cgroup" not in argv
    argv = conmon.create_argv(conmon.ConmonCreate(**base, tty=True, stdin=True, systemd_cgroup=True))
    assert {"--terminal", "--stdin", "--leave-stdin-open", "--systemd-cgroup"} <= set(argv)
    argv = conmon.create_argv(conmon.ConmonCreate(**base, stdin=True, stdin_once=True))
    assert "--stdin" in argv and "--leave-stdin-open" not in argv


# A stand-in for conmon's start protocol (the real one runs in the
# integration tests): wait on the start pipe, fork the monitor, write its pid
# to the pid file and exit; the monitor reports the "container" on the sync
# pipe and lingers a little, as conmon's monitor outlives the create.
FAKE_CONMON = r"""
read -r _ <&$_OCI_STARTPIPE
( sleep 0.2; echo '{"pid": 4242}' >&$_OCI_SYNCPIPE; exec sleep 5 ) &
echo $! > "$1"
"""


def test_release_reports_the_container_and_the_monitor(tmp_path):
    pidfile = tmp_path / "conmon.pid"
    seen: list[int] = []

    async def on_monitor(pid: int, start_time: int) -> None:
        seen.append(pid)
        assert start_time == namespaces.process_start_time(pid)

    async def main() -> conmon.Created:
        # bash: dash takes no file descriptor numbers above 9
        p = await conmon.spawn(["/bin/bash", "-c", FAKE_CONMON, "sh", str(pidfile)], str(tmp_path))
        return await conmon.release(p, str(pidfile), timeout=10, on_monitor=on_monitor)
    created = asyncio.run(main())
    try:
        assert created.pid == 4242
        assert created.monitor_pid == int(pidfile.read_text()) and seen == [created.monitor_pid]
        # told apart from a later process with the same pid
        assert created.monitor_start_time == namespaces.process_start_time(created.monitor_pid)
    finally:
        import os
        import signal
        os.kill(created.monitor_pid, signal.SIGKILL)


def test_release_of_a_conmon_that_died_first(tmp_path):
    async def main() -> None:
        p = await conmon.spawn(["/bin/false"], str(tmp_path))
        await p.proc.wait()
        with pytest.raises(Internal, match="exited"):
            await conmon.release(p, str(tmp_path / "conmon.pid"))
        assert p.start_fd == -1 and p.sync_fd == -1
    asyncio.run(main())


def test_runtime_messages_are_cleaned():
    err = 'time="2026-01-01T00:00:00Z" level=error msg="container \\"x\\" does not exist"'
    assert _clean(err) == 'container "x" does not exist'
    assert _clean("plain failure\n") == "plain failure"
    assert CrunRuntime.under("/usr/bin/crun", Path("/run/c")).root == "/run/c/oci/crun"


# ---- CRI log -------------------------------------------------------------------------

def test_cri_log_reader_joins_partials_per_stream():
    r = cri_log.LogReader()
    data = (b"2026-11-28T13:05:33.551727581+00:00 stdout P hel\n"
            b"2026-11-28T13:05:33.551727581Z stderr F err line\n"
            b"2026-11-28T13:05:33.6Z stdout F lo world\n"
            b"2026-11-28T13:05:33.7Z stdout F \n"
            b"2026-11-28T13:05:33.8Z stdout P tail")
    out = r.feed(data[:30]) + r.feed(data[30:])
    assert out == [("stderr", b"err line"), ("stdout", b"hello world"), ("stdout", b"")]
    assert r.feed(b"\n") == []
    assert r.close() == [("stdout", b"tail")]
    assert cri_log.split_streams(data + b"\n") == (b"hello world\n\ntail", b"err line\n")


@pytest.mark.parametrize("line", [b"", b"2026 stdout F x", b"2026-11-28T13:05:33Z stdin F x",
                                  b"2026-11-28T13:05:33Z stdout X x"])
def test_cri_log_rejects_bad_lines(line):
    with pytest.raises(ValueError):
        cri_log.parse_line(line)


# ---- pod files, sysctls, overlay --------------------------------------------------------

def test_resolv_conf(tmp_path):
    dns = pod_files.DnsSettings(["10.0.0.10", "10.0.0.11"], ["ns.svc.cluster.local", "svc.cluster.local"], ["ndots:5"])
    assert pod_files.resolv_conf(dns) == (b"search ns.svc.cluster.local svc.cluster.local\n"
                                          b"nameserver 10.0.0.10\nnameserver 10.0.0.11\noptions ndots:5\n")
    host = tmp_path / "resolv.conf"
    host.write_text("nameserver 1.1.1.1\n")
    assert pod_files.resolv_conf(pod_files.DnsSettings(), host) == b"nameserver 1.1.1.1\n"
    with pytest.raises(InvalidArgument):
        pod_files.resolv_conf(pod_files.DnsSettings(servers=["1.1.1.1\nnameserver evil"]))
    hosts = pod_files.hosts("web-0", ["10.1.2.3"]).decode()
    assert "127.0.0.1\tlocalhost" in hosts and "10.1.2.3\tweb-0" in hosts


def test_sysctl_checks():
    own = namespaces.NamespaceRequest()
    namespaces.check_sysctls({"net.ipv4.ip_forward": "1", "kernel.shmmax": "1", "kernel.msgmax": "2"}, own)
    assert namespaces.sysctl_path("net.ipv4.conf.all.forwarding") == "net/ipv4/conf/all/forwarding"
    assert namespaces.sysctl_path("net/ipv4/conf/eth0.100/forwarding") == "net/ipv4/conf/eth0.100/forwarding"
    for bad in ({"kernel.panic": "1"}, {"net/../../etc": "1"}, {"net.ipv4.x": "1\n2"}):
        with pytest.raises(InvalidArgument):
            namespaces.check_sysctls(bad, own)
    with pytest.raises(InvalidArgument, match="shares with the host"):
        namespaces.check_sysctls({"net.ipv4.ip_forward": "1"}, namespaces.NamespaceRequest(net=False))


def test_overlay_options_put_the_top_layer_first():
    assert rootfs.overlay_options(["/l/base", "/l/top"], "/c/upper", "/c/work") == \
        "lowerdir=/l/top:/l/base,upperdir=/c/upper,workdir=/c/work"
    with pytest.raises(InvalidArgument):
        rootfs.overlay_options(["/l/a:b"], "/u", "/w")
    with pytest.raises(InvalidArgument, match="too many layers"):
        rootfs.overlay_options([f"/very/long/layer/path/{i:064d}" for i in range(100)], "/u", "/w")


def test_process_start_time_spots_dead_and_reused_pids():
    import os
    assert namespaces.process_start_time(os.getpid()) is not None
    assert not namespaces.infra_alive(namespaces.PodNamespaces(infra_pid=os.getpid(), infra_start_time=1))


# ---- name reservations ---------------------------------------------------------------

def _manager():
    return Reservations()


def test_reservation_joins_retries_and_refuses_clashes():
    async def scenario():
        mgr = _manager()
        started = asyncio.Event()
        release = asyncio.Event()
        runs = []

        async def work():
            runs.append(1)
            started.set()
            await release.wait()
            return "id-1"
        first = asyncio.create_task(mgr.reserved("k", "d1", "thing", work))
        await started.wait()
        # The first caller gives up (its deadline passed): the work goes on.
        first.cancel()
        retry = asyncio.create_task(mgr.reserved("k", "d1", "thing", work))
        await asyncio.sleep(0)
        with pytest.raises(AlreadyExists):
            await mgr.reserved("k", "other", "thing", work)
        release.set()
        assert await retry == "id-1"
        assert await mgr.reserved("k", "d1", "thing", work) == "id-1"
        assert runs == [1]

        async def failing():
            raise InvalidArgument("nope")
        with pytest.raises(InvalidArgument):
            await mgr.reserved("f", "d", "thing", failing)
        # A failure frees the name.
        assert await mgr.reserved("f", "d2", "thing", work) == "id-1"
        mgr.release("k", "id-1")
        assert await mgr.reserved("k", "d3", "thing", work) == "id-1"
    asyncio.run(scenario())


def test_cpu_rate_and_layer_usage(tmp_path):
    from runtime import container_stats as cs
    assert cs.nano_cores(None, cs.CpuSample(10, 5)) is None
    assert cs.nano_cores(cs.CpuSample(1_000_000_000, 0), cs.CpuSample(2_000_000_000, 500_000_000)) == 500_000_000
    assert cs.nano_cores(cs.CpuSample(5, 10), cs.CpuSample(5, 20)) is None  # no time passed
    assert cs.layer_usage(tmp_path / "missing") is None
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_bytes(b"x" * 10000)
    usage = cs.layer_usage(tmp_path)
    assert usage.inodes_used == 2 and usage.used_bytes >= 10000


def test_net_dev_parsing():
    from runtime import container_stats as cs
    text = ("Inter-|   Receive                                                |  Transmit\n"
            " face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n"
            "    lo:     100       2    0    0    0     0          0         0      100       2    0    0    0     0       0          0\n"
            "  eth0: 5000 40 3 0 0 0 0 0 7000 50 4 0 0 0 0 0\n"
            "garbage line\n")
    assert cs.parse_net_dev(text) == [cs.InterfaceUsage("lo", 100, 2, 0, 0, 100, 2, 0, 0),
                                      cs.InterfaceUsage("eth0", 5000, 40, 3, 0, 7000, 50, 4, 0)]

"""The daemon as a user meets it: a real subprocess on a unix socket."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import stat

import grpc
import pytest

from cri import rpc
from cri.proto import api_pb2 as pb
from tests.daemon_proc import DaemonProcess


def test_version(daemon):
    with daemon.client() as c:
        v = c.version()
    assert v.runtime_name == "crispy"
    assert v.runtime_api_version == "v1"
    assert v.runtime_version == "0.1.0"


def test_socket_and_dir_modes(daemon):
    st = os.stat(daemon.socket)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o660
    # The socket's directory is above the state root here: others may
    # search it (user-namespaced roots beside the state root need that).
    assert stat.S_IMODE(os.stat(os.path.dirname(daemon.socket)).st_mode) == 0o751


def test_socket_dir_not_above_the_state_root_is_closed_to_others(daemon_base):
    d = DaemonProcess(daemon_base, extra_args=["--state-root", str(daemon_base / "state")]).start()
    try:
        assert stat.S_IMODE(os.stat(os.path.dirname(d.socket)).st_mode) == 0o750
    finally:
        d.stop()


def test_status_conditions_and_verbose_info(daemon):
    with daemon.client() as c:
        st = c.status(verbose=True)
    conds = {cond.type: cond for cond in st.status.conditions}
    assert set(conds) == {"RuntimeReady", "NetworkReady"}
    for cond in conds.values():
        # A false condition must say why.
        assert cond.status or (cond.reason and cond.message)
    info = {k: json.loads(v) for k, v in st.info.items()}
    assert info["config"]["socket"] == daemon.socket
    assert info["cgroup"]["driver"] == "cgroupfs"
    assert info["cgroup"]["version"] in (1, 2)
    if conds["RuntimeReady"].status:
        assert info["ociRuntime"]["name"] in ("crun", "runc")
    # NRI is on, on the test's own socket, with no plugin yet.
    assert info["nri"] == {"enabled": True, "socket": str(daemon.base / "nri" / "nri.sock"), "plugins": []}
    not_verbose = daemon.client().status()
    assert dict(not_verbose.info) == {}


def test_runtime_config_reports_cgroup_driver(daemon):
    with daemon.client() as c:
        r = c.runtime.RuntimeConfig(pb.RuntimeConfigRequest())
    assert r.linux.cgroup_driver == pb.CGROUPFS


def test_update_runtime_config_stores_pod_cidr(daemon):
    req = pb.UpdateRuntimeConfigRequest(runtime_config=pb.RuntimeConfig(network_config=pb.NetworkConfig(pod_cidr="10.244.3.0/24")))
    with daemon.client() as c:
        c.runtime.UpdateRuntimeConfig(req)
        info = json.loads(c.status(verbose=True).info["podCIDR"])
        assert info == "10.244.3.0/24"
        bad = pb.UpdateRuntimeConfigRequest(runtime_config=pb.RuntimeConfig(network_config=pb.NetworkConfig(pod_cidr="10.244.3.0/99")))
        with pytest.raises(grpc.RpcError) as e:
            c.runtime.UpdateRuntimeConfig(bad)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "10.244.3.0/99" in e.value.details()
    # Survives a restart.
    assert daemon.stop() == 0
    again = DaemonProcess(daemon.base).start()
    try:
        with again.client() as c:
            assert json.loads(c.status(verbose=True).info["podCIDR"]) == "10.244.3.0/24"
    finally:
        again.stop()


def test_unimplemented_rpc_names_itself():
    class Aborted(Exception):
        pass

    class Context:
        async def abort(self, code, details):
            raise Aborted(code, details)

    handlers = rpc.bind(object(), "RuntimeService")
    with pytest.raises(Aborted) as e:
        asyncio.run(handlers.CheckpointContainer(pb.CheckpointContainerRequest(container_id="x"), Context()))
    assert e.value.args[0] == grpc.StatusCode.UNIMPLEMENTED
    assert "CheckpointContainer" in e.value.args[1]


def test_checkpoint_of_an_unknown_container_is_not_found(daemon):
    with daemon.client() as c:
        with pytest.raises(grpc.RpcError) as e:
            c.runtime.CheckpointContainer(pb.CheckpointContainerRequest(container_id="x"))
    # No such container: found out before CRIU is asked.
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


def test_second_daemon_on_same_roots_is_refused(daemon):
    other_sock = str(daemon.base / "other.sock")
    second = DaemonProcess(daemon.base)
    second.args[second.args.index("--socket") + 1] = other_sock
    second.start(wait=False)
    assert second.proc.wait(30) == 1
    second._log.close()
    assert "another crispy daemon" in second.log()
    assert not os.path.exists(other_sock)
    # The first one is unharmed.
    with daemon.client() as c:
        assert c.version().runtime_name == "crispy"


def test_an_nri_socket_another_runtime_serves_is_not_taken(daemon_base):
    path = daemon_base / "nri" / "nri.sock"
    path.parent.mkdir(parents=True)
    other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    other.bind(str(path))
    other.listen()
    try:
        d = DaemonProcess(daemon_base)
        d.start(wait=False)
        assert d.proc.wait(30) == 1
        d._log.close()
        assert "in use by another runtime's NRI" in d.log()
        assert path.exists()
    finally:
        other.close()


def test_stale_socket_is_replaced(daemon_base):
    d = DaemonProcess(daemon_base)
    os.makedirs(os.path.dirname(d.socket), exist_ok=True)
    import socket as s
    stale = s.socket(s.AF_UNIX, s.SOCK_STREAM)
    stale.bind(d.socket)
    stale.close()  # bound but nobody listening: stale
    d.start()
    try:
        with d.client() as c:
            assert c.version().runtime_name == "crispy"
    finally:
        d.stop()


def test_sigterm_exits_cleanly_and_removes_socket(daemon_base):
    d = DaemonProcess(daemon_base).start()
    with d.client() as c:
        c.version()
    assert d.stop(signal.SIGTERM) == 0
    assert not os.path.exists(d.socket)
    assert "Traceback" not in d.log()


def test_bad_config_file_is_a_clear_error(daemon_base):
    d = DaemonProcess(daemon_base, config_text="[cni]\nconf_dri = '/x'\n")
    d.start(wait=False)
    assert d.proc.wait(30) == 2
    d._log.close()
    assert "unknown key cni.'conf_dri'" in d.log() or "conf_dri" in d.log()
    assert "Traceback" not in d.log()


def test_config_file_values_are_used(daemon_base):
    d = DaemonProcess(daemon_base, config_text="[streaming]\nport = 12345\n[registries.'localhost:5000']\ninsecure = true\n")
    d.start()
    try:
        info = json.loads(d.client().status(verbose=True).info["config"])
        assert info["streaming"]["port"] == 12345
        assert info["registries"]["localhost:5000"]["insecure"] is True
    finally:
        d.stop()


def test_json_logs_have_a_line_per_rpc_with_latency(daemon_base):
    d = DaemonProcess(daemon_base, extra_args=["--log-format", "json"]).start()
    try:
        with d.client() as c:
            c.version()
            with pytest.raises(grpc.RpcError):
                c.runtime.UpdateRuntimeConfig(pb.UpdateRuntimeConfigRequest(
                    runtime_config=pb.RuntimeConfig(network_config=pb.NetworkConfig(pod_cidr="nonsense"))))
    finally:
        d.stop()
    lines = [json.loads(line) for line in d.log().splitlines() if line.strip()]
    ok = [r for r in lines if r.get("rpc") == "RuntimeService/Version"]
    assert ok and isinstance(ok[0]["ms"], float)
    failed = [r for r in lines if r.get("rpc") == "RuntimeService/UpdateRuntimeConfig"]
    assert failed and failed[0]["code"] == "INVALID_ARGUMENT" and "nonsense" in failed[0]["error"]

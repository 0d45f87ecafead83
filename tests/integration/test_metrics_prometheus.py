"""The Prometheus endpoint on a real daemon, scraped over loopback while a
pod runs: the crispy_* families with their labels, RPC codes, container
exits by reason, OCI runtime and conmon invocations; no pod or container
ids as labels; only /metrics served; nothing listening when off."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import grpc
import pytest

from cri.proto import api_pb2 as pb
from tests.daemon_proc import tmp_base
from tests.pods_fixtures import *  # noqa: F403
from tests.pods_fixtures import container_config, load_image, pod_config, start_pod_daemon, stop_pod_daemon, wait_state
from tests.registry import free_port

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def daemon():
    port = free_port()
    d = start_pod_daemon(tmp_base(), ["--metrics-address", f"127.0.0.1:{port}"])
    d.metrics_url = f"http://127.0.0.1:{port}/metrics"
    load_image(d)
    yield d
    stop_pod_daemon(d)


def scrape(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url, timeout=10) as r:
        assert r.headers["Content-Type"].startswith("text/plain")
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def test_scrape_while_a_pod_runs(daemon, tmp_path):
    with daemon.client() as c:
        cfg = pod_config("prom", log_directory=str(tmp_path))
        pod = c.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg)).pod_sandbox_id
        run = c.runtime.CreateContainer(pb.CreateContainerRequest(
            pod_sandbox_id=pod, config=container_config("run", ["sleep", "3600"]), sandbox_config=cfg)).container_id
        c.runtime.StartContainer(pb.StartContainerRequest(container_id=run))
        bad = c.runtime.CreateContainer(pb.CreateContainerRequest(
            pod_sandbox_id=pod, config=container_config("bad", ["/bin/sh", "-c", "exit 2"]),
            sandbox_config=cfg)).container_id
        c.runtime.StartContainer(pb.StartContainerRequest(container_id=bad))
        assert wait_state(c, bad, pb.CONTAINER_EXITED).exit_code == 2
        with pytest.raises(grpc.RpcError):
            c.runtime.ContainerStatus(pb.ContainerStatusRequest(container_id="f" * 64))
        with pytest.raises(grpc.RpcError):  # nothing listens on port 1
            c.image.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image="127.0.0.1:1/none:1")))
        m = scrape(daemon.metrics_url)
        assert m['crispy_pods{state="ready"}'] == 1
        assert m['crispy_containers{state="running"}'] == 1 and m['crispy_containers{state="exited"}'] == 1
        assert m['crispy_grpc_requests_total{code="OK",method="RunPodSandbox"}'] == 1
        assert m['crispy_grpc_requests_total{code="NOT_FOUND",method="ContainerStatus"}'] == 1
        assert m['crispy_grpc_request_duration_seconds_count{code="OK",method="CreateContainer"}'] == 2
        assert m['crispy_grpc_request_duration_seconds_bucket{code="OK",le="+Inf",method="StartContainer"}'] == 2
        assert m["crispy_container_creates_total"] == 2 and m["crispy_container_starts_total"] == 2
        assert m['crispy_container_exits_total{reason="Error"}'] == 1
        assert m['crispy_container_failures_total{reason="Error"}'] == 1
        assert m["crispy_container_oom_kills_total"] == 0
        assert m["crispy_conmon_invocations_total"] == 2 and m["crispy_conmon_failures_total"] == 0
        # runc starts each container with `runc start`; crun's start is a
        # handshake done in-process (runtime/oci/crun.py): no binary is run.
        runtime = json.loads(c.status(verbose=True).info["ociRuntime"])["name"]
        starts = {k: v for k, v in m.items() if k.startswith('crispy_oci_runtime_invocations_total{command="start"')}
        assert starts == ({f'crispy_oci_runtime_invocations_total{{command="start",runtime="{runtime}"}}': 2}
                          if runtime == "runc" else {}), (runtime, starts)
        assert m["crispy_image_pulls_total"] == 0 and m["crispy_image_pull_duration_seconds_count"] == 1
        (failed,) = [k for k in m if k.startswith("crispy_image_pull_failures_total{reason=")]
        assert m[failed] == 1
        assert not any(k.endswith("_created") or "_created{" in k for k in m)
        assert m["crispy_process_resident_memory_bytes"] > 10 * 1024 * 1024
        assert m["crispy_process_threads"] >= 1 and m["crispy_process_open_fds"] > 3
        assert m["crispy_events_subscribers"] == 0 and m["crispy_streaming_sessions"] == 0
        # Bounded labels: no pod or container id anywhere.
        assert not any(pod[:12] in k or run[:12] in k for k in m)
        info = c.status(verbose=True).info
        assert f'"address": "127.0.0.1:{daemon.metrics_url.split(":")[2].split("/")[0]}"' in info["metrics"]


def test_only_metrics_is_served(daemon):
    base = daemon.metrics_url.rsplit("/", 1)[0]
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(base + "/", timeout=10)
    assert e.value.code == 404
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(urllib.request.Request(daemon.metrics_url, data=b"x", method="POST"), timeout=10)
    assert e.value.code == 405

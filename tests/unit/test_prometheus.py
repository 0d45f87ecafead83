"""The Prometheus exporter without a daemon: the [metrics] address, the
one path it serves, counters fed by events and telemetry (that an idle
daemon with metrics off never loads prometheus_client: test_startup_imports)."""

from __future__ import annotations

import pytest

from cri.metrics_settings import parse_address
from cri.prometheus import PrometheusMetrics
from runtime.errors import InvalidArgument
from runtime.events import Event, EventKind
from runtime.store import ContainerRecord


@pytest.mark.parametrize("address,expected", [("127.0.0.1:9090", ("127.0.0.1", 9090)), ("[::1]:1", ("::1", 1)),
                                              (":9090", ("0.0.0.0", 9090)), ("localhost:80", ("localhost", 80))])
def test_addresses(address: str, expected: tuple[str, int]) -> None:
    assert parse_address(address) == expected


@pytest.mark.parametrize("address", ["127.0.0.1", "127.0.0.1:-1", "127.0.0.1:70000", "example.com:80", "x"])
def test_bad_addresses_are_refused_with_an_example(address: str) -> None:
    with pytest.raises(InvalidArgument) as e:
        parse_address(address)
    assert "metrics.address" in e.value.message


def _exit(reason: str) -> Event:
    ctr = ContainerRecord(id="c" * 64, sandbox_id="p", name="app", attempt=0, config={}, created_at=1, reason=reason)
    return Event(EventKind.STOPPED, ctr.id, 1, None, (ctr,))


def test_counters_from_events_telemetry_and_rpcs() -> None:
    m = PrometheusMetrics()
    for reason in ("Completed", "Error", "OOMKilled", "OOMKilled"):
        m.on_event(_exit(reason))
    m.oci_call("runc", "kill", False, 0.01)
    m.cni_call("bridge", "ADD", True, 0.2)
    m.image_pull(True, "", 1000, 2.0)
    m.image_pull(False, "unavailable", 0, 1.0)
    m.rpc_done("CreateContainer", "FAILED_PRECONDITION", 0.001)
    text = m.exposition().decode()
    for line in ('crispy_container_exits_total{reason="OOMKilled"} 2.0', "crispy_container_oom_kills_total 2.0",
                 'crispy_container_failures_total{reason="Error"} 1.0',
                 'crispy_container_failures_total{reason="CreateFailed"} 1.0',
                 'crispy_oci_runtime_failures_total{command="kill",runtime="runc"} 1.0',
                 'crispy_cni_plugin_duration_seconds_count{command="ADD",plugin="bridge"} 1.0',
                 "crispy_image_pull_bytes_total 1000.0", 'crispy_image_pull_failures_total{reason="unavailable"} 1.0',
                 'crispy_grpc_requests_total{code="FAILED_PRECONDITION",method="CreateContainer"} 1.0'):
        assert line in text, line
    assert 'reason="Completed"' not in text.split("crispy_container_failures_total")[-1]


def test_only_get_of_metrics_is_answered() -> None:
    m = PrometheusMetrics()
    assert m.answer(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")[0] == "200 OK"
    assert m.answer(b"GET /metrics?x=1 HTTP/1.1\r\n\r\n")[0] == "200 OK"
    assert m.answer(b"HEAD /metrics HTTP/1.1\r\n\r\n")[2] == b""
    assert m.answer(b"GET / HTTP/1.1\r\n\r\n")[0].startswith("404")
    assert m.answer(b"POST /metrics HTTP/1.1\r\n\r\n")[0].startswith("405")
    assert m.answer(b"GET /metrics HTTP/1.1\r\n" + b"X: y\r\n" * 2000 + b"\r\n")[0].startswith("431")

"""The Prometheus endpoint (`[metrics] address`): GET /metrics in the text
exposition format, families named crispy_* with their unit in the name and
labels bounded by construction (RPC methods and status codes, states,
reasons, runtime and plugin names; never pod or container ids).

Where the numbers come from:
- per-RPC counts and latencies: a gRPC server interceptor (installed only
  when the endpoint is on);
- container creates, starts, exits by reason and OOM kills: a listener on
  the event bus (runtime/events.py);
- OCI runtime and conmon invocations, CNI plugin calls, image pulls: the
  domain's Telemetry interface (runtime/telemetry.py), which this class
  implements;
- pods and containers by state, streaming sessions, events subscribers
  and the process's own RSS, fds and threads: read at scrape time.

prometheus_client (and the http.client, urllib and wsgiref it imports) is
loaded only when the endpoint is on: an idle daemon without it stays
~3 MiB smaller.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

import grpc

from cri.metrics_settings import parse_address
from runtime.events import Event, EventBus, EventKind
from runtime.index import RecordIndex
from runtime.lazy_module import on_first_use
from runtime.telemetry import Telemetry

log = logging.getLogger("crispy.metrics")


if TYPE_CHECKING:
    import prometheus_client as prom
else:
    prom = on_first_use("prometheus_client")

# RPC latencies: kubelet's calls take 0.1 ms (a cached list) to seconds
# (RunPodSandbox with CNI, a pull goes to its own family).
RPC_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
CNI_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
PULL_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)

# Request heads bigger than this, or slower than the timeout, are dropped.
MAX_REQUEST_HEAD = 8192
REQUEST_TIMEOUT_S = 10.0

# Exit reasons (runtime/exits.py) that are not failures.
_NOT_FAILURES = frozenset({"Completed", ""})


class StreamingSessions(Protocol):
    def open_sessions(self) -> int: ...


class PrometheusMetrics(Telemetry):
    def __init__(self) -> None:
        # A *_created series per counter would double the output for a
        # timestamp nobody reads here.
        prom.disable_created_metrics()
        r = self.registry = prom.CollectorRegistry(auto_describe=False)
        self.rpc_requests = prom.Counter("crispy_grpc_requests", "CRI calls served, by method and status code.",
                                         ["method", "code"], registry=r)
        self.rpc_seconds = prom.Histogram("crispy_grpc_request_duration_seconds",
                                          "Time to answer a CRI call (a stream: until it ended).",
                                          ["method", "code"], buckets=RPC_BUCKETS, registry=r)
        self.creates = prom.Counter("crispy_container_creates", "Containers created.", registry=r)
        self.starts = prom.Counter("crispy_container_starts", "Containers started.", registry=r)
        self.exits = prom.Counter("crispy_container_exits", "Containers that ended, by reason "
                                  "(Completed, Error, OOMKilled, StartError, MonitorLost).", ["reason"], registry=r)
        self.failures = prom.Counter("crispy_container_failures", "Container failures by reason: a failed "
                                     "CreateContainer or StartContainer (CreateFailed, StartFailed) or an exit "
                                     "other than Completed.", ["reason"], registry=r)
        self.ooms = prom.Counter("crispy_container_oom_kills", "Containers ended by the OOM killer.", registry=r)
        self.pulls = prom.Counter("crispy_image_pulls", "Images pulled.", registry=r)
        self.pull_failures = prom.Counter("crispy_image_pull_failures", "Failed image pulls, by error kind.",
                                          ["reason"], registry=r)
        self.pull_bytes = prom.Counter("crispy_image_pull_bytes", "Size of the images pulled, in bytes.", registry=r)
        self.pull_seconds = prom.Histogram("crispy_image_pull_duration_seconds", "Time a PullImage took.",
                                           buckets=PULL_BUCKETS, registry=r)
        self.cni_seconds = prom.Histogram("crispy_cni_plugin_duration_seconds", "CNI plugin calls, by plugin and "
                                          "command.", ["plugin", "command"], buckets=CNI_BUCKETS, registry=r)
        self.cni_failures = prom.Counter("crispy_cni_plugin_failures", "CNI plugin calls that failed.",
                                         ["plugin", "command"], registry=r)
        self.oci_calls = prom.Counter("crispy_oci_runtime_invocations", "Invocations of the OCI runtime binary, by "
                                      "runtime and command.", ["runtime", "command"], registry=r)
        self.oci_failures = prom.Counter("crispy_oci_runtime_failures", "OCI runtime invocations that failed.",
                                         ["runtime", "command"], registry=r)
        self.conmon_calls = prom.Counter("crispy_conmon_invocations", "conmon processes started.", registry=r)
        self.conmon_failures = prom.Counter("crispy_conmon_failures", "conmon processes that could not be started.",
                                            registry=r)
        # Read at scrape time (refresh()).
        self.pods = prom.Gauge("crispy_pods", "Pod sandboxes by state.", ["state"], registry=r)
        self.containers = prom.Gauge("crispy_containers", "Containers by state.", ["state"], registry=r)
        self.sessions = prom.Gauge("crispy_streaming_sessions", "Exec, attach and port-forward connections open.",
                                   registry=r)
        self.subscribers = prom.Gauge("crispy_events_subscribers", "GetContainerEvents streams open.", registry=r)
        self.rss = prom.Gauge("crispy_process_resident_memory_bytes", "The daemon's resident memory.", registry=r)
        self.threads = prom.Gauge("crispy_process_threads", "The daemon's threads.", registry=r)
        self.fds = prom.Gauge("crispy_process_open_fds", "The daemon's open file descriptors.", registry=r)
        self._index: RecordIndex | None = None
        self._events: EventBus | None = None
        self._streaming: StreamingSessions | None = None
        self._server: asyncio.base_events.Server | None = None
        self.address = ""

    # ---- what the domain reports (runtime/telemetry.py) --------------------

    def oci_call(self, runtime: str, command: str, ok: bool, seconds: float) -> None:
        self.oci_calls.labels(runtime, command).inc()
        if not ok:
            self.oci_failures.labels(runtime, command).inc()

    def conmon_spawn(self, ok: bool) -> None:
        self.conmon_calls.inc()
        if not ok:
            self.conmon_failures.inc()

    def cni_call(self, plugin: str, command: str, ok: bool, seconds: float) -> None:
        self.cni_seconds.labels(plugin, command).observe(seconds)
        if not ok:
            self.cni_failures.labels(plugin, command).inc()

    def image_pull(self, ok: bool, reason: str, size: int, seconds: float) -> None:
        self.pull_seconds.observe(seconds)
        if ok:
            self.pulls.inc()
            self.pull_bytes.inc(size)
        else:
            self.pull_failures.labels(reason).inc()

    # ---- events -------------------------------------------------------------

    def on_event(self, event: Event) -> None:
        if event.is_pod:
            return
        if event.kind is EventKind.CREATED:
            self.creates.inc()
        elif event.kind is EventKind.STARTED:
            self.starts.inc()
        elif event.kind is EventKind.STOPPED:
            ctr = next((c for c in event.containers if c.id == event.container_id), None)
            reason = ctr.reason if ctr is not None else ""
            self.exits.labels(reason or "Unknown").inc()
            if reason not in _NOT_FAILURES:
                self.failures.labels(reason).inc()
            if reason == "OOMKilled":
                self.ooms.inc()

    # ---- RPCs -----------------------------------------------------------------

    def rpc_done(self, method: str, code: str, seconds: float) -> None:
        self.rpc_requests.labels(method, code).inc()
        self.rpc_seconds.labels(method, code).observe(seconds)
        if code != "OK" and method in ("CreateContainer", "StartContainer"):
            self.failures.labels("CreateFailed" if method == "CreateContainer" else "StartFailed").inc()

    def interceptor(self) -> grpc.aio.ServerInterceptor:
        return RpcMetricsInterceptor(self.rpc_done)

    # ---- read at scrape time ------------------------------------------------------

    def watch(self, index: RecordIndex, events: EventBus, streaming: StreamingSessions) -> None:
        events.listen(self.on_event)
        self._index, self._events, self._streaming = index, events, streaming

    def refresh(self) -> None:
        if self._index is not None:
            for gauge, states, records in (
                    (self.pods, ("ready", "notready"), self._index.sandboxes.values()),
                    (self.containers, ("created", "running", "exited", "unknown"), self._index.containers.values())):
                counts = dict.fromkeys(states, 0)
                for rec in records:
                    counts[str(rec.state)] = counts.get(str(rec.state), 0) + 1
                for state, n in counts.items():
                    gauge.labels(state).set(n)
        if self._events is not None:
            self.subscribers.set(self._events.subscribers())
        if self._streaming is not None:
            self.sessions.set(self._streaming.open_sessions())
        rss, threads = _self_status()
        self.rss.set(rss)
        self.threads.set(threads)
        try:
            self.fds.set(len(os.listdir("/proc/self/fd")))
        except OSError:
            pass

    def exposition(self) -> bytes:
        self.refresh()
        return bytes(prom.generate_latest(self.registry))

    # ---- the endpoint -------------------------------------------------------------

    async def serve(self, address: str) -> None:
        host, port = parse_address(address)
        self._server = await asyncio.start_server(self._on_connection, host, port)
        bound = self._server.sockets[0].getsockname()
        self.address = f"{host}:{bound[1]}"
        log.info("metrics endpoint listening", extra={"fields": {"address": self.address}})

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                head = await reader.readuntil(b"\r\n\r\n")
            status, ctype, body = self.answer(head)
            writer.write(f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                         f"Connection: close\r\n\r\n".encode() + body)
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()

    def answer(self, head: bytes) -> tuple[str, str, bytes]:
        """(status line, content type, body) for a request head."""
        if len(head) > MAX_REQUEST_HEAD:
            return "431 Request Header Fields Too Large", "text/plain", b"request head too large\n"
        method, _, rest = head.split(b"\r\n", 1)[0].decode("latin-1").partition(" ")
        path = rest.split(" ", 1)[0].split("?", 1)[0]
        if path != "/metrics":
            return "404 Not Found", "text/plain", b"crispy serves /metrics only\n"
        if method not in ("GET", "HEAD"):
            return "405 Method Not Allowed", "text/plain", b"use GET\n"
        body = self.exposition()
        return "200 OK", str(prom.CONTENT_TYPE_LATEST), body if method == "GET" else b""


class RpcMetricsInterceptor(grpc.aio.ServerInterceptor):
    """Counts every RPC and times it, by method and the status code it ended
    with (read from the call's context, whatever set it)."""

    def __init__(self, done: Callable[[str, str, float], None]) -> None:
        self._done = done

    async def intercept_service(self, continuation: Callable[[Any], Awaitable[Any]],
                                details: grpc.HandlerCallDetails) -> Any:
        handler = await continuation(details)
        if handler is None:
            return None
        method = details.method.rsplit("/", 1)[-1]
        done = self._done
        if handler.unary_unary is not None:
            inner = handler.unary_unary

            async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                started = time.perf_counter()
                try:
                    return await inner(request, context)
                finally:
                    done(method, _code(context), time.perf_counter() - started)
            return grpc.unary_unary_rpc_method_handler(unary, handler.request_deserializer,
                                                       handler.response_serializer)
        if handler.unary_stream is not None:
            inner_stream = handler.unary_stream

            async def stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
                started = time.perf_counter()
                try:
                    async for item in inner_stream(request, context):
                        yield item
                finally:
                    done(method, _code(context), time.perf_counter() - started)
            return grpc.unary_stream_rpc_method_handler(stream, handler.request_deserializer,
                                                        handler.response_serializer)
        return handler


def _code(context: grpc.aio.ServicerContext) -> str:
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code.name
    if context.cancelled():
        return "CANCELLED"
    return "OK"


def _self_status() -> tuple[int, int]:
    rss = threads = 0
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) * 1024
                elif line.startswith("Threads:"):
                    threads = int(line.split()[1])
    except (OSError, ValueError):
        pass
    return rss, threads

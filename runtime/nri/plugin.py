"""One connected NRI plugin, seen from the runtime.

A session owns the plugin's trunk: it serves the Runtime service the plugin
calls (RegisterPlugin, UpdateContainers) and offers a typed async method for
every Plugin service call, each bounded by the request timeout.

Failures come in two kinds:
- `PluginError`: the plugin answered with an error status (it refused). The
  session stays usable; the caller decides what the refusal means.
- `PluginGone` (a PluginError too): the plugin did not answer in time, broke
  the protocol or hung up. The session is closed before the exception is
  raised, so it is never called again; containerd/nri drops such a plugin
  and carries on with the operation as if it had not been subscribed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from google.protobuf.message import DecodeError, Message

from runtime.nri import multiplex
from runtime.nri.proto import api_pb2 as api
from runtime.nri.settings import NriSettings
from runtime.nri.transport import ConnectionClosed, NriConnection
from runtime.nri.ttrpc import MAX_MESSAGE, Code, TtrpcError

log = logging.getLogger("crispy.nri")

PLUGIN_SERVICE = "nri.pkg.api.v1alpha1.Plugin"
RUNTIME_SERVICE = "nri.pkg.api.v1alpha1.Runtime"
# NRI version crispy reports in Configure: the API this proto mirrors.
NRI_VERSION = "v0.12.1"
# Events 1..LAST-1 are valid subscription bits (bit e-1 for event e).
VALID_EVENTS = (1 << (api.LAST - 1)) - 1
# Below this many objects per page a too-large Synchronize is given up.
MIN_SYNC_OBJECTS = 8

M = TypeVar("M", bound=Message)

UpdateHandler = Callable[["PluginSession", api.UpdateContainersRequest], Awaitable[api.UpdateContainersResponse]]


class PluginError(Exception):
    """A plugin call failed; `code` is the ttrpc status when the plugin sent one."""

    def __init__(self, plugin: str, message: str, code: int | None = None) -> None:
        self.plugin = plugin
        self.code = code
        super().__init__(f"NRI plugin {plugin}: {message}")


class PluginGone(PluginError):
    """The plugin timed out or disconnected; its session is closed."""


def event_mask(*events: int) -> int:
    mask = 0
    for e in events:
        mask |= 1 << (e - 1)
    return mask


def check_plugin_index(index: str) -> None:
    if len(index) != 2 or not index.isascii() or not index.isdigit():
        raise ValueError(f"invalid plugin index {index!r}: must be 2 digits")


def check_plugin_name(name: str) -> None:
    if not name:
        raise ValueError("invalid plugin name: name is empty")
    for ch in name:
        if not (ch.isascii() and (ch.isalnum() or ch in "-_.+")):
            raise ValueError(f"invalid plugin name {name!r}: contains invalid character {ch!r}")


def parse_plugin_file_name(file_name: str) -> tuple[str, str]:
    """`NN-name` -> (index, name), as pre-installed plugins are named."""
    index, sep, name = file_name.partition("-")
    if not sep:
        raise ValueError(f"invalid plugin name {file_name!r}: NN-name expected")
    check_plugin_index(index)
    return index, name


# Pod/container events older plugins only receive through StateChange: when a
# plugin answers UNIMPLEMENTED to the dedicated call, it gets the event there.
_STATE_CHANGE_FALLBACK = {
    api.RUN_POD_SANDBOX,
    api.POST_UPDATE_POD_SANDBOX,
    api.STOP_POD_SANDBOX,
    api.REMOVE_POD_SANDBOX,
    api.POST_CREATE_CONTAINER,
    api.START_CONTAINER,
    api.POST_START_CONTAINER,
    api.POST_UPDATE_CONTAINER,
    api.REMOVE_CONTAINER,
}


class PluginSession:
    """A connected plugin. Create it on an accepted (or pre-connected) trunk,
    then `await open()`: registration, configuration, ready for synchronize."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        settings: NriSettings,
        *,
        on_update: UpdateHandler | None = None,
        on_close: Callable[[PluginSession, str], None] | None = None,
        index: str = "",
        name: str = "",
        config: str = "",
        pid: int | None = None,
    ) -> None:
        self.settings = settings
        # Pre-installed plugins are named by their file; external ones by
        # what they register with.
        self.launched = bool(index)
        self.index = index
        self.name = name
        self.config = config
        self.pid = pid
        self.events = 0
        self.nri_version = ""
        self._on_update = on_update
        self._on_close = on_close
        self._registered: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._conn = NriConnection(
            reader,
            writer,
            client_conn=multiplex.PLUGIN_SERVICE_CONN,
            server_conn=multiplex.RUNTIME_SERVICE_CONN,
            service=RUNTIME_SERVICE,
            handler=self._serve,
            on_close=self._closed_by_conn,
        )

    # ---- identity and state ----

    @property
    def full_name(self) -> str:
        return f"{self.index or '??'}-{self.name or 'plugin'}"

    @property
    def order_key(self) -> tuple[str, str]:
        """Plugins are called in ascending index order, then by name."""
        return (self.index, self.name)

    @property
    def closed(self) -> bool:
        return self._conn.closed

    @property
    def close_reason(self) -> str:
        return self._conn.close_reason

    def subscribes(self, event: int) -> bool:
        return bool(self.events & (1 << (event - 1)))

    def __repr__(self) -> str:
        return f"<PluginSession {self.full_name} events=0x{self.events:x}{' closed' if self.closed else ''}>"

    # ---- setup ----

    async def open(self, runtime_name: str, runtime_version: str) -> None:
        """Wait for RegisterPlugin, then Configure. PluginGone/PluginError on
        failure, with the session closed either way."""
        self._conn.start()
        try:
            await asyncio.wait_for(asyncio.shield(self._registered), self.settings.registration_timeout)
        except TimeoutError:
            await self.close("plugin registration timed out")
            raise PluginGone(self.full_name, "registration timed out") from None
        except (ConnectionClosed, ValueError) as e:
            await self.close(f"registration failed: {e}")
            raise PluginGone(self.full_name, f"registration failed: {e}") from None
        try:
            await self.configure(runtime_name, runtime_version)
        except PluginError:
            await self.close("configuration failed")
            raise

    async def configure(self, runtime_name: str, runtime_version: str) -> int:
        req = api.ConfigureRequest(
            config=self.config,
            runtime_name=runtime_name,
            runtime_version=runtime_version,
            registration_timeout=int(self.settings.registration_timeout * 1000),
            request_timeout=int(self.settings.request_timeout * 1000),
            NRI_version=NRI_VERSION,
        )
        rpl = await self._call("Configure", req, api.ConfigureResponse)
        events = rpl.events
        if events == 0:
            events = VALID_EVENTS  # no subscription means every event
        elif events & ~VALID_EVENTS:
            raise PluginError(self.full_name, f"invalid plugin events: 0x{events & ~VALID_EVENTS:x}")
        self.events = events
        log.info("NRI plugin %s configured, events 0x%x", self.full_name, events)
        return events

    async def synchronize(
        self, pods: Sequence[api.PodSandbox], containers: Sequence[api.Container]
    ) -> list[api.ContainerUpdate]:
        """Send every pod and container; the plugin's requested updates.

        One message if it fits ttrpc's 4 MiB, else pages with more=true, each
        of which the plugin must acknowledge with more=true and no updates
        (the Go stub collects pages and answers the last one)."""
        deadline = time.monotonic() + self.settings.request_timeout
        pods, containers = list(pods), list(containers)
        per_page = len(pods) + len(containers)  # objects per message, shrunk if too big
        while True:
            # Pods first, then containers: the plugin only sees the union.
            n_pods = min(per_page, len(pods))
            n_ctrs = min(per_page - n_pods, len(containers))
            page = api.SynchronizeRequest(pods=pods[:n_pods], containers=containers[:n_ctrs])
            page.more = len(pods) > n_pods or len(containers) > n_ctrs
            size = page.ByteSize()
            if size > MAX_MESSAGE - 1024:  # room for the ttrpc envelope
                if per_page <= MIN_SYNC_OBJECTS:
                    raise PluginError(self.full_name, "failed to synchronize plugin with split messages")
                per_page = max(int(per_page * min(MAX_MESSAGE / size, 0.9)), MIN_SYNC_OBJECTS)
                continue
            rpl = await self._call("Synchronize", page, api.SynchronizeResponse, deadline=deadline)
            if not page.more:
                return list(rpl.update)
            if len(rpl.update) > 0 or rpl.more != page.more:
                await self.close("plugin does not handle split sync requests")
                raise PluginGone(self.full_name, "plugin does not handle split sync requests")
            pods, containers = pods[n_pods:], containers[n_ctrs:]

    # ---- lifecycle events (None when the plugin is not subscribed) ----

    async def run_pod_sandbox(self, pod: api.PodSandbox) -> None:
        await self._event(api.RUN_POD_SANDBOX, "RunPodSandbox", api.RunPodSandboxRequest(pod=pod),
                          api.RunPodSandboxResponse, pod)

    async def update_pod_sandbox(
        self,
        pod: api.PodSandbox,
        overhead: api.LinuxResources | None = None,
        resources: api.LinuxResources | None = None,
    ) -> None:
        req = api.UpdatePodSandboxRequest(pod=pod, overhead_linux_resources=overhead, linux_resources=resources)
        await self._event(api.UPDATE_POD_SANDBOX, "UpdatePodSandbox", req, api.UpdatePodSandboxResponse, pod)

    async def post_update_pod_sandbox(self, pod: api.PodSandbox) -> None:
        await self._event(api.POST_UPDATE_POD_SANDBOX, "PostUpdatePodSandbox",
                          api.PostUpdatePodSandboxRequest(pod=pod), api.PostUpdatePodSandboxResponse, pod)

    async def stop_pod_sandbox(self, pod: api.PodSandbox) -> None:
        await self._event(api.STOP_POD_SANDBOX, "StopPodSandbox", api.StopPodSandboxRequest(pod=pod),
                          api.StopPodSandboxResponse, pod)

    async def remove_pod_sandbox(self, pod: api.PodSandbox) -> None:
        await self._event(api.REMOVE_POD_SANDBOX, "RemovePodSandbox", api.RemovePodSandboxRequest(pod=pod),
                          api.RemovePodSandboxResponse, pod)

    async def create_container(
        self, pod: api.PodSandbox, container: api.Container
    ) -> api.CreateContainerResponse | None:
        return await self._event(api.CREATE_CONTAINER, "CreateContainer",
                                 api.CreateContainerRequest(pod=pod, container=container),
                                 api.CreateContainerResponse, pod, container)

    async def post_create_container(self, pod: api.PodSandbox, container: api.Container) -> None:
        await self._event(api.POST_CREATE_CONTAINER, "PostCreateContainer",
                          api.PostCreateContainerRequest(pod=pod, container=container),
                          api.PostCreateContainerResponse, pod, container)

    async def start_container(self, pod: api.PodSandbox, container: api.Container) -> None:
        await self._event(api.START_CONTAINER, "StartContainer",
                          api.StartContainerRequest(pod=pod, container=container),
                          api.StartContainerResponse, pod, container)

    async def post_start_container(self, pod: api.PodSandbox, container: api.Container) -> None:
        await self._event(api.POST_START_CONTAINER, "PostStartContainer",
                          api.PostStartContainerRequest(pod=pod, container=container),
                          api.PostStartContainerResponse, pod, container)

    async def update_container(
        self, pod: api.PodSandbox, container: api.Container, resources: api.LinuxResources | None
    ) -> api.UpdateContainerResponse | None:
        return await self._event(api.UPDATE_CONTAINER, "UpdateContainer",
                                 api.UpdateContainerRequest(pod=pod, container=container, linux_resources=resources),
                                 api.UpdateContainerResponse, pod, container)

    async def post_update_container(self, pod: api.PodSandbox, container: api.Container) -> None:
        await self._event(api.POST_UPDATE_CONTAINER, "PostUpdateContainer",
                          api.PostUpdateContainerRequest(pod=pod, container=container),
                          api.PostUpdateContainerResponse, pod, container)

    async def stop_container(
        self, pod: api.PodSandbox, container: api.Container
    ) -> api.StopContainerResponse | None:
        return await self._event(api.STOP_CONTAINER, "StopContainer",
                                 api.StopContainerRequest(pod=pod, container=container),
                                 api.StopContainerResponse, pod, container)

    async def remove_container(self, pod: api.PodSandbox, container: api.Container) -> None:
        await self._event(api.REMOVE_CONTAINER, "RemoveContainer",
                          api.RemoveContainerRequest(pod=pod, container=container),
                          api.RemoveContainerResponse, pod, container)

    async def state_change(
        self, event: int, pod: api.PodSandbox | None = None, container: api.Container | None = None
    ) -> None:
        if not self.subscribes(event):
            return
        await self._call("StateChange", api.StateChangeEvent(event=event, pod=pod, container=container), api.Empty)  # type: ignore[arg-type]

    async def validate_container_adjustment(
        self, request: api.ValidateContainerAdjustmentRequest
    ) -> api.ValidateContainerAdjustmentResponse | None:
        if not self.subscribes(api.VALIDATE_CONTAINER_ADJUSTMENT):
            return None
        return await self._call("ValidateContainerAdjustment", request, api.ValidateContainerAdjustmentResponse)

    async def shutdown(self) -> None:
        """Tell the plugin the runtime is going away (errors ignored), then close."""
        if not self.closed:
            try:
                await self._call("Shutdown", api.Empty(), api.Empty)
            except PluginError as e:
                log.info("NRI plugin %s: shutdown: %s", self.full_name, e)
        await self.close("runtime shutting down")

    async def close(self, reason: str) -> None:
        await self._conn.close(reason)

    # ---- internals ----

    async def _event(
        self,
        event: int,
        method: str,
        req: Message,
        reply_type: type[M],
        pod: api.PodSandbox,
        container: api.Container | None = None,
    ) -> M | None:
        if not self.subscribes(event):
            return None
        try:
            return await self._call(method, req, reply_type)
        except PluginError as e:
            if isinstance(e, PluginGone) or e.code != Code.UNIMPLEMENTED or event not in _STATE_CHANGE_FALLBACK:
                raise
        await self._call("StateChange", api.StateChangeEvent(event=event, pod=pod, container=container), api.Empty)  # type: ignore[arg-type]
        return reply_type()

    async def _call(self, method: str, req: Message, reply_type: type[M], *, deadline: float | None = None) -> M:
        timeout = budget = self.settings.request_timeout
        if deadline is not None:
            timeout = max(deadline - time.monotonic(), 0.0)
        try:
            payload = await self._conn.call(PLUGIN_SERVICE, method, req.SerializeToString(), timeout)
        except TimeoutError:
            await self.close(f"{method} timed out")
            log.warning("NRI plugin %s: %s timed out after %gs; plugin dropped", self.full_name, method, budget)
            raise PluginGone(self.full_name, f"{method} timed out after {budget:g}s") from None
        except ConnectionClosed as e:
            raise PluginGone(self.full_name, f"{method}: connection closed ({e})") from None
        except TtrpcError as e:
            if e.code == Code.RESOURCE_EXHAUSTED and method != "Synchronize":
                log.warning("NRI plugin %s: %s: %s", self.full_name, method, e.message)
            raise PluginError(self.full_name, f"{method} failed: {e}", int(e.code)) from None
        try:
            return reply_type.FromString(payload)
        except DecodeError as e:
            await self.close(f"{method}: undecodable reply")
            raise PluginGone(self.full_name, f"{method}: undecodable reply: {e}") from None

    async def _serve(self, method: str, payload: bytes) -> bytes:
        if method == "RegisterPlugin":
            return self._register(api.RegisterPluginRequest.FromString(payload)).SerializeToString()
        if method == "UpdateContainers":
            req = api.UpdateContainersRequest.FromString(payload)
            if self._on_update is None or not self._registered.done():
                raise TtrpcError(Code.FAILED_PRECONDITION, "plugin is not ready for container updates")
            log.info("NRI plugin %s requested updates of %d containers", self.full_name, len(req.update))
            return (await self._on_update(self, req)).SerializeToString()
        raise TtrpcError(Code.UNIMPLEMENTED, f"method {method}")

    def _register(self, req: api.RegisterPluginRequest) -> api.Empty:
        if self._registered.done():
            raise TtrpcError(Code.FAILED_PRECONDITION, "plugin already registered")
        if not self.launched:
            try:
                check_plugin_name(req.plugin_name)
                check_plugin_index(req.plugin_idx)
            except ValueError as e:
                self._registered.set_exception(e)
                self._registered.exception()  # open() still sees it
                raise TtrpcError(Code.INVALID_ARGUMENT, str(e)) from None
            self.name, self.index = req.plugin_name, req.plugin_idx
        self.nri_version = req.NRI_version or "unknown"
        log.info("NRI plugin %s registered (NRI version %s)", self.full_name, self.nri_version)
        self._registered.set_result(None)
        return api.Empty()

    def _closed_by_conn(self, reason: str) -> None:
        if not self._registered.done():
            self._registered.set_exception(ConnectionClosed(reason))
            # Retrieved by open() if it is waiting; silence "never retrieved".
            self._registered.exception()
        log.info("NRI plugin %s connection closed: %s", self.full_name, reason)
        if self._on_close is not None:
            self._on_close(self, reason)

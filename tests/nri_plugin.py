"""A small NRI plugin for tests, speaking crispy's own ttrpc/multiplexer core.

In process:

    plugin = NriTestPlugin("probe", "10", events={api.CREATE_CONTAINER})
    await plugin.connect("/run/crispy-test/nri.sock")   # or connect_fd(fd)
    await plugin.configured.wait()
    ... plugin.seen, plugin.update_containers([...]), await plugin.close()

Behaviour is set per Plugin method name ("CreateContainer", "Synchronize",
...): `fail` answers with an error status, `hang` never answers, `replies`
gives the response message to send (e.g. a CreateContainerResponse with an
adjustment). Every request received is recorded in `seen` (method, request)
and, when `record` is a path, appended there as one JSON line per request.

As a program (a pre-installed plugin, or an external one in another
process): `python -m tests.nri_plugin --help`. Without --socket it uses the
connection crispy passes (NRI_PLUGIN_SOCKET, NRI_PLUGIN_NAME, NRI_PLUGIN_IDX).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
from collections.abc import Iterable
from pathlib import Path

from google.protobuf import json_format
from google.protobuf.message import Message

from runtime.nri import multiplex
from runtime.nri.plugin import PLUGIN_SERVICE, RUNTIME_SERVICE, event_mask
from runtime.nri.proto import api_pb2 as api
from runtime.nri.transport import NriConnection
from runtime.nri.ttrpc import Code, TtrpcError

# Plugin method -> (request type, default response type).
METHODS: dict[str, tuple[type[Message], type[Message]]] = {
    "Configure": (api.ConfigureRequest, api.ConfigureResponse),
    "Synchronize": (api.SynchronizeRequest, api.SynchronizeResponse),
    "Shutdown": (api.Empty, api.Empty),
    "RunPodSandbox": (api.RunPodSandboxRequest, api.RunPodSandboxResponse),
    "UpdatePodSandbox": (api.UpdatePodSandboxRequest, api.UpdatePodSandboxResponse),
    "PostUpdatePodSandbox": (api.PostUpdatePodSandboxRequest, api.PostUpdatePodSandboxResponse),
    "StopPodSandbox": (api.StopPodSandboxRequest, api.StopPodSandboxResponse),
    "RemovePodSandbox": (api.RemovePodSandboxRequest, api.RemovePodSandboxResponse),
    "CreateContainer": (api.CreateContainerRequest, api.CreateContainerResponse),
    "PostCreateContainer": (api.PostCreateContainerRequest, api.PostCreateContainerResponse),
    "StartContainer": (api.StartContainerRequest, api.StartContainerResponse),
    "PostStartContainer": (api.PostStartContainerRequest, api.PostStartContainerResponse),
    "UpdateContainer": (api.UpdateContainerRequest, api.UpdateContainerResponse),
    "PostUpdateContainer": (api.PostUpdateContainerRequest, api.PostUpdateContainerResponse),
    "StopContainer": (api.StopContainerRequest, api.StopContainerResponse),
    "RemoveContainer": (api.RemoveContainerRequest, api.RemoveContainerResponse),
    "StateChange": (api.StateChangeEvent, api.Empty),
    "ValidateContainerAdjustment": (api.ValidateContainerAdjustmentRequest, api.ValidateContainerAdjustmentResponse),
}


class NriTestPlugin:
    def __init__(
        self,
        name: str = "test",
        index: str = "10",
        events: Iterable[int] = (),
        *,
        fail: dict[str, str] | None = None,
        hang: Iterable[str] = (),
        replies: dict[str, Message] | None = None,
        record: str | Path | None = None,
        timeout: float = 5.0,
    ) -> None:
        self.name = name
        self.index = index
        self.events = event_mask(*events)  # 0 = every event, as NRI reads it
        self.fail = dict(fail or {})
        self.hang = set(hang)
        self.replies = dict(replies or {})
        self.record = Path(record) if record else None
        self.timeout = timeout
        self.seen: list[tuple[str, Message]] = []
        self.config: api.ConfigureRequest | None = None
        self.synced: tuple[list[api.PodSandbox], list[api.Container]] | None = None
        self.configured = asyncio.Event()
        self.synchronized = asyncio.Event()
        self.shut_down = asyncio.Event()
        self.changed = asyncio.Event()  # set at every request; clear it to wait for the next
        self._pages: list[api.SynchronizeRequest] = []
        self._conn: NriConnection | None = None

    # ---- connecting ----

    async def connect(self, socket_path: str | Path) -> None:
        reader, writer = await asyncio.open_unix_connection(str(socket_path))
        await self._start(reader, writer)

    async def connect_fd(self, fd: int) -> None:
        sock = socket.socket(fileno=fd)
        reader, writer = await asyncio.open_unix_connection(sock=sock)
        await self._start(reader, writer)

    async def _start(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._conn = NriConnection(
            reader, writer,
            client_conn=multiplex.RUNTIME_SERVICE_CONN,
            server_conn=multiplex.PLUGIN_SERVICE_CONN,
            service=PLUGIN_SERVICE,
            handler=self._serve,
        )
        self._conn.start()
        req = api.RegisterPluginRequest(plugin_name=self.name, plugin_idx=self.index, NRI_version="crispy-test")
        await self._conn.call(RUNTIME_SERVICE, "RegisterPlugin", req.SerializeToString(), self.timeout)

    async def update_containers(
        self, updates: Iterable[api.ContainerUpdate], evict: Iterable[api.ContainerEviction] = ()
    ) -> list[api.ContainerUpdate]:
        """Unsolicited updates; the ones the runtime failed to apply."""
        assert self._conn is not None, "not connected"
        req = api.UpdateContainersRequest(update=list(updates), evict=list(evict))
        raw = await self._conn.call(RUNTIME_SERVICE, "UpdateContainers", req.SerializeToString(), self.timeout)
        return list(api.UpdateContainersResponse.FromString(raw).failed)

    @property
    def closed(self) -> bool:
        return self._conn is None or self._conn.closed

    async def wait_closed(self) -> None:
        if self._conn is not None:
            await self._conn.wait_closed()

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close("plugin closed")

    def methods_seen(self) -> list[str]:
        return [m for m, _ in self.seen]

    # ---- serving the Plugin service ----

    async def _serve(self, method: str, payload: bytes) -> bytes:
        if method not in METHODS:
            raise TtrpcError(Code.UNIMPLEMENTED, f"method {method}")
        req_type, rsp_type = METHODS[method]
        req = req_type.FromString(payload)
        self.seen.append((method, req))
        self._record(method, req)
        self.changed.set()
        if method in self.hang:
            await asyncio.Event().wait()
        if method in self.fail:
            raise TtrpcError(Code.UNKNOWN, self.fail[method])
        if method == "Configure":
            assert isinstance(req, api.ConfigureRequest)
            self.config = req
            self.configured.set()
            return api.ConfigureResponse(events=self.events).SerializeToString()
        if method == "Synchronize":
            assert isinstance(req, api.SynchronizeRequest)
            return self._synchronize(req).SerializeToString()
        if method == "Shutdown":
            self.shut_down.set()
        reply = self.replies.get(method)
        return (reply if reply is not None else rsp_type()).SerializeToString()

    def _synchronize(self, req: api.SynchronizeRequest) -> api.SynchronizeResponse:
        # Collect pages until the last one, as containerd/nri's stub does.
        self._pages.append(req)
        if req.more:
            return api.SynchronizeResponse(more=True)
        pods = [p for page in self._pages for p in page.pods]
        ctrs = [c for page in self._pages for c in page.containers]
        self._pages.clear()
        self.synced = (pods, ctrs)
        self.synchronized.set()
        reply = self.replies.get("Synchronize")
        return reply if isinstance(reply, api.SynchronizeResponse) else api.SynchronizeResponse()

    def _record(self, method: str, req: Message) -> None:
        if self.record is None:
            return
        line = json.dumps({"method": method, "request": json_format.MessageToDict(req)})
        with self.record.open("a") as f:
            f.write(line + "\n")


def read_record(path: str | Path) -> list[dict[str, object]]:
    """What a plugin run as a program recorded."""
    p = Path(path)
    if not p.exists():
        return []
    return [json.loads(line) for line in p.read_text().splitlines() if line]


def _event_number(name: str) -> int:
    return api.Event.Value(name.strip().upper())


async def _amain(args: argparse.Namespace) -> int:
    fail = dict(item.split("=", 1) for item in args.fail)
    replies: dict[str, Message] = {}
    if args.adjust_annotation:
        key, _, value = args.adjust_annotation.partition("=")
        replies["CreateContainer"] = api.CreateContainerResponse(
            adjust=api.ContainerAdjustment(annotations={key: value}))
    name = args.name or os.environ.get("NRI_PLUGIN_NAME", "test")
    index = args.idx or os.environ.get("NRI_PLUGIN_IDX", "10")
    events = [_event_number(e) for e in args.events.split(",") if e.strip()]
    plugin = NriTestPlugin(name, index, events, fail=fail, hang=args.hang, replies=replies, record=args.record)
    if args.socket:
        await plugin.connect(args.socket)
    else:
        fd = os.environ.get("NRI_PLUGIN_SOCKET")
        if not fd:
            print("nri_plugin: no --socket and no NRI_PLUGIN_SOCKET", file=sys.stderr)
            return 2
        await plugin.connect_fd(int(fd))
    await plugin.wait_closed()
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.nri_plugin", description="crispy's NRI test plugin")
    ap.add_argument("--socket", help="NRI socket to connect to (default: the inherited NRI_PLUGIN_SOCKET fd)")
    ap.add_argument("--name", help="plugin name (default NRI_PLUGIN_NAME, else 'test')")
    ap.add_argument("--idx", help="plugin index, 2 digits (default NRI_PLUGIN_IDX, else '10')")
    ap.add_argument("--events", default="", help="comma-separated Event names to subscribe to (default: all)")
    ap.add_argument("--fail", action="append", default=[], metavar="METHOD=MESSAGE", help="answer METHOD with an error")
    ap.add_argument("--hang", action="append", default=[], metavar="METHOD", help="never answer METHOD")
    ap.add_argument("--adjust-annotation", metavar="KEY=VALUE", help="CreateContainer adds this annotation")
    ap.add_argument("--record", help="append every request received to this file as JSON lines")
    return asyncio.run(_amain(ap.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())

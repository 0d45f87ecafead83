"""Exec, Attach and PortForward: validate, then hand out a one-time URL of
the streaming server (cri/streaming/server.py), which does the work."""

from __future__ import annotations

from typing import Any

from cri.proto import api_pb2 as pb
from cri.servicers.node import Node
from cri.streaming.tokens import TooManyInFlight
from cri.validation import check_request
from runtime.errors import InvalidArgument, ResourceExhausted


def check_stdio(stdin: bool, stdout: bool, stderr: bool, tty: bool) -> None:
    if tty and stderr:
        raise InvalidArgument("tty and stderr cannot both be set: a terminal carries stderr on stdout")
    if not (stdin or stdout or stderr):
        raise InvalidArgument("at least one of stdin, stdout or stderr must be set")


class StreamingRPCs:
    daemon: Node

    def _streaming(self) -> Any:
        # The server listens before the CRI socket does (Daemon.start), so
        # every call here finds it running.
        return self.daemon.streaming

    def _issue(self, kind: str, request: Any) -> str:
        try:
            return self._streaming().issue(kind, request)
        except TooManyInFlight as exc:
            raise ResourceExhausted(str(exc)) from None

    async def Exec(self, request: pb.ExecRequest, context: Any) -> pb.ExecResponse:
        check_stdio(request.stdin, request.stdout, request.stderr, request.tty)
        if not request.cmd:
            raise InvalidArgument("cmd is empty; name the command to run")
        check_request(request)
        ctr = self._streaming().backend.running_container(request.container_id)
        saved = pb.ExecRequest()
        saved.CopyFrom(request)
        saved.container_id = ctr.id
        return pb.ExecResponse(url=self._issue("exec", saved))

    async def Attach(self, request: pb.AttachRequest, context: Any) -> pb.AttachResponse:
        check_stdio(request.stdin, request.stdout, request.stderr, request.tty)
        ctr = self._streaming().backend.running_container(request.container_id)
        saved = pb.AttachRequest()
        saved.CopyFrom(request)
        saved.container_id = ctr.id
        return pb.AttachResponse(url=self._issue("attach", saved))

    async def PortForward(self, request: pb.PortForwardRequest, context: Any) -> pb.PortForwardResponse:
        if not request.pod_sandbox_id:
            raise InvalidArgument("pod_sandbox_id is empty")
        for port in request.port:
            if not 0 < port <= 65535:
                raise InvalidArgument(f"port {port} is out of range 1-65535")
        sb = self._streaming().backend.ready_sandbox(request.pod_sandbox_id)
        saved = pb.PortForwardRequest()
        saved.CopyFrom(request)
        saved.pod_sandbox_id = sb.id
        return pb.PortForwardResponse(url=self._issue("portforward", saved))

"""The runtime's NRI endpoint: the socket external plugins connect to, and
the pre-installed plugins crispy starts itself.

Every plugin goes through the same admission: register (within the
registration timeout), configure, then `host.synchronize(session)` with the
pods and containers the runtime has. Only then does it show up in
`plugins()`. Admissions run one at a time, so the host synchronizes one
plugin at a time (it still has to keep lifecycle changes out while it
synchronizes, so that nothing created meanwhile is missed).

Pre-installed plugins are executables in plugin_path named NN-name, started
with one end of a socketpair as their connection, announced to them the way
containerd/nri's stub expects: NRI_PLUGIN_SOCKET (the fd number),
NRI_PLUGIN_NAME, NRI_PLUGIN_IDX, and nothing else in the environment.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import stat
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, Protocol

from runtime.nri.plugin import PluginError, PluginSession, parse_plugin_file_name
from runtime.nri.proto import api_pb2 as api
from runtime.nri.settings import NriSettings

log = logging.getLogger("crispy.nri")

SOCKET_ENV = "NRI_PLUGIN_SOCKET"
NAME_ENV = "NRI_PLUGIN_NAME"
INDEX_ENV = "NRI_PLUGIN_IDX"
# How long a started plugin gets to exit after its connection is closed.
PLUGIN_EXIT_GRACE = 1.0


class PluginHost(Protocol):
    """What the plugin server needs from the runtime (the NRI adaptation)."""

    async def synchronize(self, session: PluginSession) -> None:
        """Call `session.synchronize(pods, containers)` with everything the
        runtime has and apply the updates it returns. Raising refuses the
        plugin (its session is closed)."""

    async def update_containers(
        self, session: PluginSession, request: api.UpdateContainersRequest
    ) -> api.UpdateContainersResponse:
        """A plugin's unsolicited update (and eviction) request; the reply
        lists the updates that failed."""

    def plugin_gone(self, session: PluginSession, reason: str) -> None:
        """A synchronized plugin's session ended (disconnect, timeout, stop)."""


class PluginServer:
    def __init__(self, settings: NriSettings, runtime_name: str, runtime_version: str, host: PluginHost) -> None:
        self.settings = settings
        self.runtime_name = runtime_name
        self.runtime_version = runtime_version
        self.host = host
        self._ready: list[PluginSession] = []
        self._admitting: set[PluginSession] = set()
        self._admit_lock = asyncio.Lock()
        self._server: asyncio.Server | None = None
        self._processes: dict[PluginSession, asyncio.subprocess.Process] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False

    # ---- public ----

    def plugins(self) -> list[PluginSession]:
        """Synchronized plugins still connected, in invocation order."""
        return sorted((s for s in self._ready if not s.closed), key=lambda s: s.order_key)

    async def start(self) -> None:
        """Start pre-installed plugins (each admitted before this returns),
        then listen for external ones."""
        if not self.settings.enable:
            return
        for index, name, path in self._discover():
            await self._launch(index, name, path)
        if not self.settings.disable_connections:
            await self._listen()

    async def stop(self) -> None:
        """Stop listening, tell every plugin to shut down, kill the ones we started."""
        self._stopping = True
        server, self._server = self._server, None
        if server is not None:
            server.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.settings.socket_path)
        ready, admitting = list(self._ready), list(self._admitting - set(self._ready))
        await asyncio.gather(
            *(s.shutdown() for s in ready),
            *(s.close("runtime shutting down") for s in admitting),
            return_exceptions=True,
        )
        if server is not None:
            # Only now: from 3.12 on this waits for every connection to end.
            with contextlib.suppress(Exception):
                await server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for session in list(self._processes):
            await self._reap(session)
        self._ready.clear()

    # ---- external plugins ----

    async def _listen(self) -> None:
        path = Path(self.settings.socket_path)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(path.lstat().st_mode):
                path.unlink()  # left over from an earlier run
            else:
                raise FileExistsError(f"{path} exists and is not a socket; remove it or set nri socket_path")
        self._server = await asyncio.start_unix_server(self._accepted, path=str(path))
        os.chmod(path, 0o600)
        log.info("NRI listening on %s", path)

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._stopping:
            writer.close()
            return
        pid = _peer_pid(writer)
        session = PluginSession(
            reader, writer, self.settings,
            on_update=self.host.update_containers, on_close=self._session_closed, pid=pid,
        )
        await self._admit(session)

    # ---- pre-installed plugins ----

    def _discover(self) -> list[tuple[str, str, Path]]:
        root = Path(self.settings.plugin_path)
        try:
            entries = sorted(root.iterdir())
        except FileNotFoundError:
            return []
        found = []
        for entry in entries:
            try:
                st = entry.stat()
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode) or not st.st_mode & 0o111:
                continue
            try:
                index, name = parse_plugin_file_name(entry.name)
            except ValueError as e:
                log.warning("NRI: not starting %s: %s", entry, e)
                continue
            found.append((index, name, entry))
        return found

    def _config_for(self, index: str, name: str) -> str:
        root = Path(self.settings.plugin_config_path)
        for candidate in (root / f"{index}-{name}.conf", root / f"{name}.conf"):
            try:
                return candidate.read_text()
            except FileNotFoundError:
                continue
        return ""

    async def _launch(self, index: str, name: str, path: Path) -> None:
        try:
            config = self._config_for(index, name)
        except OSError as e:
            log.warning("NRI: not starting %s: cannot read its configuration: %s", path, e)
            return
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            env = {SOCKET_ENV: str(theirs.fileno()), NAME_ENV: name, INDEX_ENV: index}
            proc = await asyncio.create_subprocess_exec(
                str(path), env=env, pass_fds=(theirs.fileno(),),
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as e:
            ours.close()
            log.warning("NRI: failed to start plugin %s: %s", path, e)
            return
        finally:
            theirs.close()
        reader, writer = await asyncio.open_unix_connection(sock=ours)
        session = PluginSession(
            reader, writer, self.settings,
            on_update=self.host.update_containers, on_close=self._session_closed,
            index=index, name=name, config=config, pid=proc.pid,
        )
        self._processes[session] = proc
        log.info("NRI: started pre-installed plugin %s (pid %d)", session.full_name, proc.pid)
        await self._admit(session)

    async def _reap(self, session: PluginSession) -> None:
        proc = self._processes.pop(session, None)
        if proc is None or proc.returncode is not None:
            return
        try:
            await asyncio.wait_for(proc.wait(), PLUGIN_EXIT_GRACE)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()

    # ---- admission and departure ----

    async def _admit(self, session: PluginSession) -> None:
        self._admitting.add(session)
        try:
            async with self._admit_lock:
                if self._stopping:
                    await session.close("runtime shutting down")
                    return
                try:
                    await session.open(self.runtime_name, self.runtime_version)
                except PluginError as e:
                    log.warning("NRI: plugin %s refused: %s", session.full_name, e)
                    return
                try:
                    await self.host.synchronize(session)
                except Exception as e:  # the host refused it or the plugin failed the sync
                    log.warning("NRI: plugin %s failed to synchronize: %s", session.full_name, e)
                    await session.close(f"synchronization failed: {e}")
                    return
                if session.closed:
                    return
                self._ready.append(session)
                log.info("NRI: plugin %s connected and synchronized; order %s",
                         session.full_name, [s.full_name for s in self.plugins()])
        finally:
            self._admitting.discard(session)
            if session.closed:
                self._spawn(self._reap(session))

    def _session_closed(self, session: PluginSession, reason: str) -> None:
        if session in self._ready:
            self._ready.remove(session)
            log.warning("NRI: plugin %s gone: %s", session.full_name, reason)
            try:
                self.host.plugin_gone(session, reason)
            except Exception:
                log.exception("NRI: plugin_gone(%s) failed", session.full_name)
        if session in self._processes and not self._stopping:
            self._spawn(self._reap(session))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _peer_pid(writer: asyncio.StreamWriter) -> int | None:
    sock = writer.get_extra_info("socket")
    if sock is None:
        return None
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
    except OSError:
        return None
    return int.from_bytes(creds[:4], "little")

"""What a crash in the middle of RunPodSandbox or CreateContainer leaves
behind: state directories with no record (the record is written last).
Found at start-up and undone step by step: the pod's CNI attachment (DEL
with the config persisted before ADD, runtime/pod_intent.py), its
processes, mounts and cgroup, then the directory; a container's runtime
state, mounts, directories and conmon socket link.

A pod directory whose network could not be released keeps its intent file
(its mounts are gone) so that the next start tries again."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import signal
import time
from pathlib import Path
from typing import Collection

from runtime import kmount, pod_intent, procfs, rootfs
from runtime.handlers import RuntimeHandlers
from runtime.index import RecordIndex
from runtime.network import PodNetwork, PodNetworkStatus
from runtime.oci.factory import RuntimeFactory
from runtime.oci.interface import OciRuntime
from runtime.pod_cgroups import PodCgroups

log = logging.getLogger("crispy.orphans")


def _pid_ns_members(ns_inode: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}/ns/pid").st_ino == ns_inode:
                    out.append(int(entry))
            except OSError:
                pass
    return out


# How long the sweep waits for killed processes to be gone before it
# removes the cgroup they were in.
EXIT_WAIT_S = 5.0
_ID = re.compile(r"[0-9a-f]{64}")


def _kill_and_wait(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + EXIT_WAIT_S
    while not all(procfs.gone(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.01)


def _strays(pods_dir: Path, sandbox_ids: set[str]) -> list[int]:
    """Processes the dead daemon started for these pods that no pin leads
    to: CNI plugins (they run in their own session and outlive it; one
    finishing ADD after the sweep's DEL would leak what it reserved) and an
    infra started but not yet pinned. Both name their pod in their
    environment."""
    wanted = {f"CNI_CONTAINERID={i}".encode() for i in sandbox_ids}
    wanted |= {f"CRISPY_POD_DIR={pods_dir / i}".encode() for i in sandbox_ids}
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue
        if wanted.intersection(env):
            found.append(int(entry))
    return found


def _kill_pod_processes(pod_dir: Path) -> None:
    pid_pin = pod_dir / "pid"
    try:
        if kmount.mounts_under(str(pid_pin)):
            # The infra process (and anything else) of the pinned PID namespace.
            _kill_and_wait(_pid_ns_members(os.stat(pid_pin).st_ino))
    except OSError:
        pass


def _unmount_and_remove(pod_dir: Path, keep_intent: bool) -> None:
    for point in kmount.mounts_under(str(pod_dir)):
        kmount.umount_all(point)
    if kmount.mounts_under(str(pod_dir)):
        return
    if not keep_intent:
        shutil.rmtree(pod_dir, ignore_errors=True)
        return
    for entry in os.listdir(pod_dir):
        if entry != pod_intent.FILE_NAME:
            p = pod_dir / entry
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)


class OrphanSweep:
    """`keep`: ids whose records exist but this crispy refused to read (a
    newer schema); their directories are not leftovers."""

    def __init__(self, state_root: Path, data_root: Path, *, index: RecordIndex, network: PodNetwork,
                 pod_cgroups: PodCgroups, runtimes: RuntimeFactory, handlers: RuntimeHandlers) -> None:
        self._state_root = state_root
        self._data_root = data_root
        self._index = index
        self._network = network
        self._pod_cgroups = pod_cgroups
        self._runtimes = runtimes
        self._handlers = handlers

    async def _sweep_pod(self, pod_dir: Path) -> None:
        intent = await asyncio.to_thread(pod_intent.read, pod_dir) or pod_intent.PodIntent()
        released = True
        req = intent.request()
        if req is not None:
            # DEL while the netns pin still holds the namespace: the plugins
            # then remove the pod's interface and the rules keyed on its address.
            try:
                await self._network.teardown(req, PodNetworkStatus(state=intent.network_state))
            except Exception as e:  # noqa: BLE001 - keep sweeping; retried next start
                released = False
                log.error("could not release the network of a half-made pod; will retry at the next start",
                          extra={"fields": {"id": pod_dir.name, "error": getattr(e, "message", str(e))}})
        await asyncio.to_thread(_kill_pod_processes, pod_dir)
        if intent.cgroup_path:
            try:
                await self._pod_cgroups.remove_path(intent.cgroup_path)
            except Exception as e:  # noqa: BLE001 - keep sweeping
                log.error("could not remove the cgroup of a half-made pod",
                          extra={"fields": {"id": pod_dir.name, "cgroup": intent.cgroup_path,
                                            "error": getattr(e, "message", str(e))}})
        await asyncio.to_thread(_unmount_and_remove, pod_dir, not released)

    async def sweep(self, keep: Collection[str] = ()) -> None:
        pods_dir = self._state_root / "pods"
        half_made = [n for n in await asyncio.to_thread(os.listdir, pods_dir)
                     if n not in self._index.sandboxes and n not in keep]
        if half_made:
            await asyncio.to_thread(_kill_and_wait, await asyncio.to_thread(_strays, pods_dir, set(half_made)))
        for name in half_made:
            log.warning("removing a pod left half-made by a crash", extra={"fields": {"id": name}})
            await self._sweep_pod(pods_dir / name)
        ctrs_dir = self._state_root / "containers"
        known = set(self._index.containers) | set(keep)
        orphans = [n for n in await asyncio.to_thread(os.listdir, ctrs_dir) if n not in known]
        await asyncio.to_thread(_remove_dangling_socket_links, self._state_root / "sock", known)
        if not orphans:
            return
        runtimes = self._known_runtimes()
        for name in orphans:
            log.warning("removing a container left half-made by a crash", extra={"fields": {"id": name}})
            for rt in runtimes:
                try:
                    await rt.kill(name, int(signal.SIGKILL), all_processes=True)
                    await rt.delete(name)
                except Exception as e:  # noqa: BLE001 - best effort, keep sweeping
                    log.error("runtime cleanup of an orphan failed", extra={"fields": {"id": name, "error": str(e)}})
            await asyncio.to_thread(_remove_orphan_dirs, ctrs_dir / name, self._data_root / "rootfs" / name)
            # A user-namespaced container's root is mounted outside its bundle.
            await asyncio.to_thread(rootfs.remove_userns_root, str(rootfs.userns_roots(self._state_root) / name))

    def _known_runtimes(self) -> list[OciRuntime]:
        # Only runtimes that have a state directory can know the container.
        runtimes = [self._runtimes.for_path(p) for p in self._handlers.installed_paths()]
        return [rt for rt in runtimes if os.path.isdir(rt.root)]


def _remove_orphan_dirs(bundle: Path, scratch: Path) -> None:
    for point in kmount.mounts_under(str(bundle)):
        kmount.umount_all(point)
    if not kmount.mounts_under(str(bundle)):
        shutil.rmtree(bundle, ignore_errors=True)
    shutil.rmtree(scratch, ignore_errors=True)


def _remove_dangling_socket_links(sock_dir: Path, known: set[str]) -> None:
    """conmon links `<state_root>/sock/<id>` to the bundle; a container that
    never got a record (or whose removal was cut short) leaves the link."""
    for name in os.listdir(sock_dir):
        if _ID.fullmatch(name) and name not in known:
            p = sock_dir / name
            if p.is_symlink():
                p.unlink(missing_ok=True)

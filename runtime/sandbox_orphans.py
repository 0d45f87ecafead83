"""What a crash in the middle of RunPodSandbox or CreateContainer leaves
behind: state directories with no record (the record is written last).
Found at start-up and removed, along with their mounts and processes."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
from pathlib import Path
from typing import TYPE_CHECKING

from runtime import kmount
from runtime.oci_runtime import OciRuntime

if TYPE_CHECKING:
    from runtime.manager import PodManager

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


def _sweep_pod_dir(pod_dir: Path) -> None:
    pid_pin = pod_dir / "pid"
    try:
        if kmount.mounts_under(str(pid_pin)):
            # Kill the infra process (and anything else) of the pinned PID namespace.
            for pid in _pid_ns_members(os.stat(pid_pin).st_ino):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
    except OSError:
        pass
    for point in kmount.mounts_under(str(pod_dir)):
        kmount.umount_all(point)
    if not kmount.mounts_under(str(pod_dir)):
        shutil.rmtree(pod_dir, ignore_errors=True)


async def sweep(mgr: "PodManager") -> None:
    pods_dir = mgr.state_root / "pods"
    for name in await asyncio.to_thread(os.listdir, pods_dir):
        if name not in mgr.sandboxes:
            log.warning("removing a pod left half-made by a crash", extra={"fields": {"id": name}})
            await asyncio.to_thread(_sweep_pod_dir, pods_dir / name)
    ctrs_dir = mgr.state_root / "containers"
    orphans = [n for n in await asyncio.to_thread(os.listdir, ctrs_dir) if n not in mgr.containers]
    if not orphans:
        return
    runtimes = _known_runtimes(mgr)
    for name in orphans:
        log.warning("removing a container left half-made by a crash", extra={"fields": {"id": name}})
        for rt in runtimes:
            try:
                await rt.kill(name, int(signal.SIGKILL), all_processes=True)
                await rt.delete(name)
            except Exception as e:  # noqa: BLE001 - best effort, keep sweeping
                log.error("runtime cleanup of an orphan failed", extra={"fields": {"id": name, "error": str(e)}})
        bundle = ctrs_dir / name

        def _rm() -> None:
            for point in kmount.mounts_under(str(bundle)):
                kmount.umount_all(point)
            if not kmount.mounts_under(str(bundle)):
                shutil.rmtree(bundle, ignore_errors=True)
            shutil.rmtree(mgr.daemon.data_root / "rootfs" / name, ignore_errors=True)
        await asyncio.to_thread(_rm)


def _known_runtimes(mgr: "PodManager") -> list[OciRuntime]:
    paths = set()
    if mgr.daemon.oci_runtime is not None:
        paths.add(mgr.daemon.oci_runtime.path)
    for wanted in mgr.daemon.config.runtime.handlers.values():
        path = wanted if os.path.isabs(wanted) else shutil.which(wanted)
        if path:
            paths.add(path)
    # Only runtimes that have a state directory can know the container.
    return [mgr.oci_runtime(p) for p in sorted(paths)
            if os.path.isdir(mgr.state_root / "oci" / os.path.basename(p))]

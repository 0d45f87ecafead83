"""Calling one CNI plugin.

The sans-IO part builds what a plugin receives (the `CNI_*` environment and
the network config on stdin, per the CNI spec) and interprets what it
returns (a result on stdout, or an error object and a non-zero exit). The
asyncio shell below runs the binary with a deadline; a plugin that hangs is
killed with everything it started, and its error reaches the caller as the
plugin wrote it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import time
from dataclasses import dataclass, field
from typing import Any

from runtime.cni.config import NetworkConfigList, version_at_least
from runtime.errors import CrispyError, ErrorKind

log = logging.getLogger("crispy.cni")

# Plugins run iptables, ip, modprobe...: they need a PATH even when the
# daemon was started with a minimal environment.
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class PluginError(CrispyError):
    """A plugin failed; the message carries the plugin's own words."""

    kind = ErrorKind.UNKNOWN

    def __init__(self, message: str, cni_code: int = 0) -> None:
        super().__init__(message)
        self.cni_code = cni_code


class PluginTimeout(PluginError):
    kind = ErrorKind.DEADLINE_EXCEEDED


class PluginMissing(PluginError):
    kind = ErrorKind.FAILED_PRECONDITION


@dataclass
class Invocation:
    """One plugin call, ready to run."""
    command: str  # ADD, DEL, CHECK, VERSION
    plugin_type: str
    network: str
    env: dict[str, str]
    stdin: bytes

    def describe(self) -> str:
        return f"CNI plugin {self.plugin_type} {self.command} (network {self.network})"


@dataclass
class CallArgs:
    """What the runtime says about the pod, the same for every plugin of a chain."""
    container_id: str
    netns: str  # "" on DEL when the namespace is gone
    ifname: str
    bin_dirs: list[str]
    # CNI_ARGS pairs (K8S_POD_NAME, ...).
    cni_args: list[tuple[str, str]] = field(default_factory=list)
    # Capability name -> value; a plugin gets those it declares.
    capability_args: dict[str, Any] = field(default_factory=dict)


def plugin_config(net: NetworkConfigList, plugin: dict[str, Any], prev_result: dict[str, Any] | None,
                  capability_args: dict[str, Any]) -> dict[str, Any]:
    conf = dict(plugin)
    conf["name"] = net.name
    conf["cniVersion"] = net.cni_version
    declared = plugin.get("capabilities") or {}
    runtime_config = {k: v for k, v in capability_args.items() if declared.get(k)}
    if runtime_config:
        conf["runtimeConfig"] = runtime_config
    else:
        conf.pop("runtimeConfig", None)
    if prev_result is not None:
        conf["prevResult"] = prev_result
    else:
        conf.pop("prevResult", None)
    return conf


def plugin_env(command: str, args: CallArgs, base_path: str | None = None) -> dict[str, str]:
    return {
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": args.container_id,
        "CNI_NETNS": args.netns,
        "CNI_IFNAME": args.ifname,
        "CNI_ARGS": ";".join(f"{k}={v}" for k, v in args.cni_args),
        "CNI_PATH": os.pathsep.join(args.bin_dirs),
        "PATH": base_path or DEFAULT_PATH,
    }


def build(command: str, net: NetworkConfigList, plugin: dict[str, Any], args: CallArgs,
          prev_result: dict[str, Any] | None = None, base_path: str | None = None) -> Invocation:
    # Before 0.4.0 the spec had no prevResult for DEL.
    if command == "DEL" and not version_at_least(net.cni_version, "0.4.0"):
        prev_result = None
    conf = plugin_config(net, plugin, prev_result, args.capability_args)
    return Invocation(command, plugin["type"], net.name, plugin_env(command, args, base_path),
                      json.dumps(conf).encode())


def parse_success(inv: Invocation, stdout: bytes) -> dict[str, Any] | None:
    """The plugin's result (ADD), or None when it printed nothing (DEL/CHECK)."""
    text = stdout.strip()
    if not text:
        if inv.command == "ADD":
            raise PluginError(f"{inv.describe()} succeeded but printed no result")
        return None
    try:
        result = json.loads(text)
    except ValueError:
        raise PluginError(f"{inv.describe()} printed a result that is not JSON: {_clip(text)}") from None
    if not isinstance(result, dict):
        raise PluginError(f"{inv.describe()} printed a result that is not a JSON object: {_clip(text)}")
    for ip in result.get("ips") or []:
        if not isinstance(ip, dict) or not isinstance(ip.get("address"), str):
            raise PluginError(f"{inv.describe()} printed a result with a malformed ips entry: {ip!r}")
    return result


def parse_failure(inv: Invocation, returncode: int, stdout: bytes, stderr: bytes) -> PluginError:
    """The error a failed plugin reported, kept verbatim."""
    try:
        err = json.loads(stdout)
    except ValueError:
        err = None
    if isinstance(err, dict) and ("msg" in err or "code" in err):
        msg = str(err.get("msg", ""))
        details = str(err.get("details", "") or "")
        text = f"{msg}: {details}" if details else msg
        code = err.get("code", 0)
        return PluginError(f"{inv.describe()} failed: {text}", code if isinstance(code, int) else 0)
    words = (stderr.strip() or stdout.strip()).decode(errors="replace")
    return PluginError(f"{inv.describe()} failed (exit status {returncode}): {_clip(words) or 'no output'}")


def _clip(text: bytes | str, limit: int = 4000) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return text if len(text) <= limit else text[:limit] + "..."


def find_plugin(plugin_type: str, bin_dirs: list[str]) -> str | None:
    for d in bin_dirs:
        path = os.path.join(d, plugin_type)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


# ---- asyncio shell ------------------------------------------------------

# Plugins running now (each leads its own process group). A daemon that
# must exit before they finish kills them: a plugin outliving crispy would
# race the next crispy's clean-up of the same pod.
_running: set[int] = set()


def running() -> int:
    return len(_running)


def kill_running() -> int:
    """SIGKILLs every running plugin with whatever it started; returns how
    many. Safe from any thread."""
    killed = 0
    for pid in list(_running):
        try:
            os.killpg(pid, signal.SIGKILL)
            killed += 1
        except ProcessLookupError:
            pass
    return killed


async def run(inv: Invocation, bin_dirs: list[str], timeout: float, path: str | None = None) -> dict[str, Any] | None:
    """`path`: the plugin's binary when the caller looked it up already."""
    if path is None:
        path = await asyncio.to_thread(find_plugin, inv.plugin_type, bin_dirs)
    if path is None:
        raise PluginMissing(f"{inv.describe()}: plugin {inv.plugin_type!r} is not in {', '.join(bin_dirs)}; "
                            f"install it (Debian: containernetworking-plugins) or fix [cni] bin_dirs")
    started = time.monotonic()
    # Its own session, so a timeout kills whatever it started too.
    try:
        proc = await asyncio.create_subprocess_exec(
            path, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env=inv.env, start_new_session=True)
    except OSError as e:
        raise PluginError(f"{inv.describe()}: cannot run {path}: {e.strerror or e}") from None
    _running.add(proc.pid)
    try:
        stdout, stderr = await asyncio.wait_for(proc.communicate(inv.stdin), timeout)
    except TimeoutError:
        await _kill(proc)
        raise PluginTimeout(f"{inv.describe()} did not finish within {timeout:g}s and was killed; "
                            f"the plugin or something it waits for is hung") from None
    except BaseException:
        await _kill(proc)
        raise
    finally:
        _running.discard(proc.pid)
    log.debug("CNI plugin call", extra={"fields": {
        "plugin": inv.plugin_type, "command": inv.command, "network": inv.network, "rc": proc.returncode,
        "ms": round((time.monotonic() - started) * 1000, 1), "stderr": _clip(stderr.strip(), 500)}})
    if proc.returncode != 0:
        assert proc.returncode is not None  # communicate() returned: the plugin has exited
        raise parse_failure(inv, proc.returncode, stdout, stderr)
    return parse_success(inv, stdout)


async def _kill(proc: asyncio.subprocess.Process) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    await asyncio.shield(proc.wait())

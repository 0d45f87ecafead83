"""`CniNetwork`: pod networking through the CNI plugins of the configured
network (the PodNetwork protocol of runtime/network.py).

ADD runs the network's plugins in order, each getting the previous one's
result; DEL runs them in reverse. Everything DEL needs (the exact config
ADD used, the interface, the result) goes into the pod's persisted state, so
a restart or a config change between ADD and DEL still tears down what was
set up. `lo` is not CNI's: the namespace comes with it up
(runtime/namespaces.py), so no loopback plugin runs per pod, unless a
network's own config lists one.
"""

from __future__ import annotations

import asyncio
import fcntl
import ipaddress
import json
import logging
import os
import time
from typing import Any, Awaitable, Callable

from runtime import atomicfile
from runtime.cni import default_network, invoke, masq
from runtime.cni.config import ConfigError, ConfigSource, DirScan, NetworkConfigList, from_dict
from runtime.cni.hostip import host_primary_ip
from runtime.cni.invoke import CallArgs, PluginError
from runtime.cni.settings import CniConfig
from runtime.crashpoints import crashpoint
from runtime.errors import CrispyError, FailedPrecondition
from runtime.libc import CLONE_NEWNET
from runtime.network import PodNetworkRequest, PodNetworkStatus, Readiness
from runtime.telemetry import NO_TELEMETRY, Telemetry

log = logging.getLogger("crispy.cni")

NS_GET_NSTYPE = 0xB703  # _IO(0xb7, 0x3), Linux 4.11
POD_IFNAME = "eth0"


def capability_args(req: PodNetworkRequest) -> dict[str, Any]:
    """The runtimeConfig values kubelet's pod config implies."""
    caps: dict[str, Any] = {}
    ports = [{"hostPort": p.host_port, "containerPort": p.container_port,
              "protocol": (p.protocol or "tcp").lower(), "hostIP": p.host_ip}
             for p in req.port_mappings if p.host_port > 0]
    if ports:
        caps["portMappings"] = ports
    if req.cgroup_parent:
        caps["cgroupPath"] = req.cgroup_parent
    return caps


def cni_args(req: PodNetworkRequest) -> list[tuple[str, str]]:
    return [("IgnoreUnknown", "1"), ("K8S_POD_NAMESPACE", req.pod_namespace), ("K8S_POD_NAME", req.pod_name),
            ("K8S_POD_INFRA_CONTAINER_ID", req.sandbox_id), ("K8S_POD_UID", req.pod_uid)]


def pod_ips(result: dict[str, Any] | None, ifname: str) -> list[str]:
    """The addresses the result puts on the pod's interface, IPv4 first (the
    first is the pod IP kubelet shows; the others are additional IPs)."""
    if not result:
        return []
    interfaces = result.get("interfaces") or []
    ips: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for entry in result.get("ips") or []:
        idx = entry.get("interface")
        if isinstance(idx, int) and 0 <= idx < len(interfaces):
            iface = interfaces[idx]
            # Host-side veths and bridges are listed too; they have no sandbox.
            if iface.get("name") != ifname or not iface.get("sandbox"):
                continue
        try:
            addr = ipaddress.ip_interface(entry["address"]).ip
        except ValueError:
            continue
        if str(addr) not in (str(a) for a in ips):
            ips.append(addr)
    ips.sort(key=lambda a: a.version)
    return [str(a) for a in ips]


def is_netns(path: str) -> bool:
    """True if `path` still is a network namespace. A pin whose mount is gone
    can leave a plain file behind; plugins given that fail DEL forever."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        return fcntl.ioctl(fd, NS_GET_NSTYPE) == CLONE_NEWNET
    except OSError:
        return False
    finally:
        os.close(fd)


def _delete_link(name: str) -> None:
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    with IPRoute() as ipr:
        try:
            ipr.link("del", ifname=name)
        except NetlinkError as e:
            if e.code != 19:  # ENODEV: already gone
                raise


async def host_network_status() -> PodNetworkStatus:
    """What a host-network pod reports: no CNI, the node's own address.
    Teardown of this status does nothing."""
    ip = await asyncio.to_thread(host_primary_ip)
    return PodNetworkStatus(ip=ip, state={"network": "", "hostNetwork": True})


class CniNetwork:
    def __init__(self, conf_dir: str, bin_dirs: list[str], plugin_timeout: float, ifname: str = POD_IFNAME,
                 telemetry: Telemetry = NO_TELEMETRY) -> None:
        self.telemetry = telemetry
        self.configs = ConfigSource(conf_dir)
        self.bin_dirs = list(bin_dirs)
        self.plugin_timeout = plugin_timeout
        self.ifname = ifname
        # Plugins inherit our PATH plus the usual sbin dirs (they run iptables).
        parts = os.environ.get("PATH", "").split(os.pathsep) + invoke.DEFAULT_PATH.split(os.pathsep)
        self._path = os.pathsep.join(dict.fromkeys(p for p in parts if p))

    @classmethod
    def from_config(cls, cfg: CniConfig, telemetry: Telemetry = NO_TELEMETRY) -> "CniNetwork":
        """From the `[cni]` table."""
        return cls(cfg.conf_dir, cfg.bin_dirs, cfg.plugin_timeout, telemetry=telemetry)

    # ---- readiness -----------------------------------------------------

    def _usable(self) -> tuple[NetworkConfigList | None, str]:
        net, problem, _ = self._resolve()
        return net, problem

    def _resolve(self) -> tuple[NetworkConfigList | None, str, dict[str, str]]:
        """The network, or why there is none usable, and each plugin's binary."""
        scan: DirScan = self.configs.current()
        net = scan.network
        if net is None:
            return None, scan.problem(), {}
        paths = self._plugin_paths(net)
        missing = [t for t, path in paths.items() if path is None]
        if missing:
            return None, (f"CNI network {net.name!r} from {net.source} needs plugin(s) {', '.join(missing)}, "
                          f"not found in {', '.join(self.bin_dirs)}"), {}
        return net, "", {t: path for t, path in paths.items() if path}

    def _plugin_paths(self, net: NetworkConfigList) -> dict[str, str | None]:
        """Each plugin type of `net` (once) and its binary, None if missing."""
        return {t: invoke.find_plugin(t, self.bin_dirs) for t in dict.fromkeys(net.plugin_types)}

    def readiness(self) -> Readiness:
        net, problem = self._usable()
        if net is None:
            return Readiness(False, "NetworkPluginNotReady", problem)
        return Readiness(True)

    def info(self) -> dict[str, Any]:
        """For verbose Status (`crictl info`): where crispy looks and what it found."""
        scan = self.configs.current()
        net = scan.network
        return {"confDir": self.configs.conf_dir, "binDirs": self.bin_dirs, "pluginTimeout": self.plugin_timeout,
                "network": None if net is None else {"name": net.name, "source": net.source,
                                                     "cniVersion": net.cni_version, "plugins": net.plugin_types},
                "invalidFiles": scan.invalid, "problem": self.readiness().message}

    def current_network(self) -> NetworkConfigList:
        return self._ready_network()[0]

    def _ready_network(self) -> tuple[NetworkConfigList, dict[str, str]]:
        """The usable network and its plugins' binaries, or FailedPrecondition."""
        net, problem, paths = self._resolve()
        if net is None:
            raise FailedPrecondition(f"pod network is not ready: {problem}")
        return net, paths

    # ---- ADD / DEL / CHECK -------------------------------------------------

    def _call_args(self, req: PodNetworkRequest, netns: str, ifname: str, caps: dict[str, Any]) -> CallArgs:
        return CallArgs(container_id=req.sandbox_id, netns=netns, ifname=ifname, bin_dirs=self.bin_dirs,
                        cni_args=cni_args(req), capability_args=caps)

    async def _chain(self, command: str, net: NetworkConfigList, args: CallArgs,
                     prev: dict[str, Any] | None = None, paths: dict[str, str] | None = None) -> dict[str, Any] | None:
        """ADD/CHECK: the plugins in order, each result feeding the next.
        `paths`: plugin binaries already looked up (else each is, on its turn)."""
        result = prev if command == "CHECK" else None
        for plugin in net.plugins:
            inv = invoke.build(command, net, plugin, args, result, self._path)
            out = await self._invoke(inv, paths)
            if command == "ADD":
                result = out
                crashpoint(f"cni.after_add.{inv.plugin_type}")
        return result

    async def _invoke(self, inv: invoke.Invocation, paths: dict[str, str] | None) -> dict[str, Any] | None:
        started = time.perf_counter()
        ok = False
        try:
            out = await invoke.run(inv, self.bin_dirs, self.plugin_timeout, (paths or {}).get(inv.plugin_type))
            ok = True
            return out
        finally:
            self.telemetry.cni_call(inv.plugin_type, inv.command, ok, time.perf_counter() - started)

    async def _delete(self, net: NetworkConfigList, args: CallArgs, prev: dict[str, Any] | None,
                      paths: dict[str, str] | None = None) -> None:
        """DEL: every plugin in reverse order. A failing plugin does not stop
        the others from releasing what they hold; the first error is raised
        afterwards so the caller retries."""
        first: PluginError | None = None
        for plugin in reversed(net.plugins):
            inv = invoke.build("DEL", net, plugin, args, prev, self._path)
            try:
                await self._invoke(inv, paths)
            except PluginError as e:
                log.warning("CNI DEL failed", extra={"fields": {"sandbox": args.container_id, "error": e.message}})
                first = first or e
        if first is not None:
            raise first

    def _no_network_at_all(self) -> bool:
        scan = self.configs.current()
        return scan.network is None and not scan.invalid

    def _plan_add(self) -> tuple[NetworkConfigList | None, dict[str, str]]:
        """Blocking, one trip to a thread for all of it: (None, {}) when no
        config exists at all, else the network and its plugins' binaries."""
        if self._no_network_at_all():
            return None, {}
        return self._ready_network()

    async def setup(self, req: PodNetworkRequest,
                    before_add: Callable[[dict[str, Any]], Awaitable[None]] | None = None) -> PodNetworkStatus:
        """`before_add` gets the teardown state (what DEL needs) before the
        first plugin runs, so a crash mid-ADD can still be undone."""
        net, paths = await asyncio.to_thread(self._plan_add)
        if net is None:
            # Nothing configured yet (NetworkReady is false, so kubelet only
            # starts host-network pods): a pod gets its own namespace with
            # just lo, as before any network existed. A config that is there
            # but broken fails below instead, with the reason.
            log.warning("no CNI network configured; pod gets loopback only",
                        extra={"fields": {"sandbox": req.sandbox_id, "conf_dir": self.configs.conf_dir}})
            return PodNetworkStatus(state={"network": "", "loopbackOnly": True})
        caps = capability_args(req)
        state: dict[str, Any] = {"network": net.name, "conflist": net.to_dict(), "source": net.source,
                                 "ifname": self.ifname, "capabilityArgs": caps}
        args = self._call_args(req, req.netns_path, self.ifname, caps)
        if before_add is not None:
            await before_add(state)
        try:
            result = await self._chain("ADD", net, args, paths=paths)
        except BaseException as e:
            # No half-configured pod: release whatever the chain got so far
            # (addresses, port maps) even if we are being cancelled.
            await asyncio.shield(self._undo(req, state))
            if isinstance(e, PluginError):
                raise type(e)(f"setting up the network of pod {req.pod_namespace}/{req.pod_name}: {e.message}",
                              e.cni_code) from None
            raise
        ips = pod_ips(result, self.ifname)
        state["result"] = result
        state["ips"] = ips
        log.info("pod network added", extra={"fields": {"sandbox": req.sandbox_id, "network": net.name, "ips": ips}})
        return PodNetworkStatus(ip=ips[0] if ips else "", additional_ips=ips[1:], state=state)

    async def _undo(self, req: PodNetworkRequest, state: dict[str, Any]) -> None:
        try:
            await self.teardown(req, PodNetworkStatus(state=state))
        except Exception as e:
            log.warning("cleanup after failed CNI ADD failed",
                        extra={"fields": {"sandbox": req.sandbox_id, "error": str(e)}})

    def _network_for_teardown(self, state: dict[str, Any]) -> NetworkConfigList | None:
        if state.get("conflist"):
            try:
                return from_dict(state["conflist"], state.get("source", ""))
            except ConfigError as e:
                log.warning("persisted network config unusable; using the current one",
                            extra={"fields": {"error": str(e)}})
        # Setup never recorded anything (a crash mid-ADD): the current
        # network is our best guess; DEL of what does not exist is harmless.
        net, _ = self._usable()
        return net

    def _plan_teardown(self, state: dict[str, Any], netns_path: str
                       ) -> tuple[NetworkConfigList | None, str, dict[str, str]]:
        """Blocking, one thread hop: the network to DEL from, the namespace
        path if it still is one (else ""), and the plugins' binaries found
        (a missing one is looked up again, and reported, when its turn comes)."""
        net = self._network_for_teardown(state)
        netns = netns_path if netns_path and is_netns(netns_path) else ""
        if net is None:
            return None, netns, {}
        return net, netns, {t: p for t, p in self._plugin_paths(net).items() if p}

    async def teardown(self, req: PodNetworkRequest, status: PodNetworkStatus) -> None:
        state = status.state or {}
        if state.get("loopbackOnly") or state.get("hostNetwork"):
            return  # lo goes away with the namespace; the host's network is not ours
        net, netns, paths = await asyncio.to_thread(self._plan_teardown, state, req.netns_path)
        if net is None:
            log.warning("no CNI network to tear down pod network with",
                        extra={"fields": {"sandbox": req.sandbox_id}})
            return
        caps = state.get("capabilityArgs")
        if caps is None:
            caps = capability_args(req)
        args = self._call_args(req, netns, state.get("ifname", self.ifname), caps)
        await self._delete(net, args, state.get("result"), paths)
        if not netns and masq.needs_cleanup(list(net.plugins)):
            for problem in await masq.remove_rules(net.name, req.sandbox_id, self.plugin_timeout):
                log.warning("could not remove a masquerade rule of a pod whose namespace is gone",
                            extra={"fields": {"sandbox": req.sandbox_id, "error": problem}})
        log.info("pod network deleted", extra={"fields": {"sandbox": req.sandbox_id, "network": net.name,
                                                           "netns_gone": not netns}})

    async def pod_cidr_changed(self, pod_cidr: str) -> None:
        """Kubelet's pod CIDR (UpdateRuntimeConfig) applied to the default
        network crispy wrote; an operator's config is never touched. Pods
        already on the old subnet keep it, so the switch waits until none is
        attached to the bridge (the next UpdateRuntimeConfig retries)."""
        try:
            plan = await asyncio.to_thread(default_network.retarget_plan, self.configs.conf_dir, pod_cidr)
        except CrispyError as e:
            log.warning("pod CIDR not usable for the default network", extra={"fields": {"error": e.message}})
            return
        if plan is None:
            return
        ports = await asyncio.to_thread(default_network.bridge_ports, plan.bridge)
        if ports:
            log.warning("pod CIDR changed but pods still use the default network; keeping the old subnet",
                        extra={"fields": {"bridge": plan.bridge, "old": plan.old, "new": plan.new,
                                          "ports": len(ports)}})
            return
        await asyncio.to_thread(atomicfile.write_bytes, plan.path,
                                json.dumps(plan.doc, indent=2).encode() + b"\n", 0o644)
        if ports is not None:
            # The bridge still has the old gateway address, which the bridge
            # plugin refuses to replace; it recreates the bridge on next ADD.
            await asyncio.to_thread(_delete_link, plan.bridge)
        log.info("default network moved to the pod CIDR",
                 extra={"fields": {"path": str(plan.path), "old": plan.old, "new": plan.new}})

    async def check(self, req: PodNetworkRequest, status: PodNetworkStatus) -> None:
        """CHECK (0.4.0 and later, unless the config disables it): raises
        PluginError when a plugin finds the pod's network not as it set it up."""
        state = status.state or {}
        net = await asyncio.to_thread(self._network_for_teardown, state)
        if net is None or not net.supports_check or not state.get("result"):
            return
        args = self._call_args(req, req.netns_path, state.get("ifname", self.ifname), state.get("capabilityArgs") or {})
        await self._chain("CHECK", net, args, state["result"])

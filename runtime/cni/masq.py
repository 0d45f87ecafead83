"""Removing a pod's IP-masquerade rules when its namespace is already gone.

The bridge and ptp plugins find the pod's addresses for their masquerade
rules by looking inside the namespace on DEL; without it they release the
address but leave the rules. Those rules are recognisable without the
namespace: a chain named from a hash of network name and container id, and
a jump to it from POSTROUTING commented with both (the plugins' shared
ipmasq helper names them that way since CNI plugins 0.7).
"""

from __future__ import annotations

import asyncio
import hashlib
import shlex

MASQ_PLUGINS = ("bridge", "ptp")


def chain_name(network: str, container_id: str) -> str:
    return "CNI-" + hashlib.sha512((network + container_id).encode()).hexdigest()[:24]


def cleanup_commands(save_text: str, network: str, container_id: str) -> list[list[str]]:
    """iptables arguments that remove the pod's masquerade jump rules and
    chain, given `iptables-save -t nat` output."""
    chain = chain_name(network, container_id)
    cmds: list[list[str]] = []
    declared = False
    for line in save_text.splitlines():
        if line.startswith(f":{chain} "):
            declared = True
        elif line.startswith("-A ") and not line.startswith(f"-A {chain} ") and line.endswith(f"-j {chain}"):
            words = shlex.split(line)
            if words[-2:] == ["-j", chain]:
                cmds.append(["-t", "nat", "-D", *words[1:]])
    if declared:
        cmds += [["-t", "nat", "-F", chain], ["-t", "nat", "-X", chain]]
    return cmds


def needs_cleanup(plugins: list[dict]) -> bool:
    return any(p.get("type") in MASQ_PLUGINS and p.get("ipMasq") for p in plugins)


async def _run(*cmd: str, timeout: float) -> tuple[int, str]:
    try:
        proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.STDOUT)
    except FileNotFoundError:
        return 127, f"{cmd[0]} not found"
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return -1, f"{cmd[0]} timed out"
    return proc.returncode or 0, out.decode(errors="replace")


async def remove_rules(network: str, container_id: str, timeout: float) -> list[str]:
    """Removes the rules in both families; returns problems (empty when all went well)."""
    problems = []
    for tool in ("iptables", "ip6tables"):
        rc, save = await _run(f"{tool}-save", "-t", "nat", timeout=timeout)
        if rc != 0:
            continue  # no such table or no tool: nothing of ours there
        for args in cleanup_commands(save, network, container_id):
            rc, out = await _run(tool, "-w", "5", *args, timeout=timeout)
            if rc != 0:
                problems.append(f"{tool} {' '.join(args)}: {out.strip()}")
    return problems

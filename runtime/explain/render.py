"""The explain report as text for people: sans-IO, from the same dict
`--json` prints, so the two never say different things."""

from __future__ import annotations

from typing import Any

from runtime.explain.namespaces import HOST_MEANS


def size(n: int | None) -> str:
    if n is None:
        return "?"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def _limit(n: int | None) -> str:
    return "none" if n is None else size(n)


def _short(digest: str) -> str:
    return digest[:19] if digest.startswith("sha256:") else digest[:12]


def _processes(lines: list[str], procs: list[dict[str, Any]]) -> None:
    lines.append(f"  {'HOST PID':>8} {'PID':>5}  {'UID(host)':<12} {'GID(host)':<12} COMMAND")
    for p in procs:
        uid = f"{'?' if p['uid'] is None else p['uid']}({p['host_uid']})"
        gid = f"{'?' if p['gid'] is None else p['gid']}({p['host_gid']})"
        cmd = " ".join(p["command"])
        lines.append(f"  {p['pid']:>8} {p['ns_pid']:>5}  {uid:<12} {gid:<12} {'  ' * p['depth']}{cmd[:100]}")


def _namespaces(lines: list[str], nss: list[dict[str, Any]]) -> None:
    for n in nss:
        holder = n["holder"]
        inode = n["inode"] if n["inode"] is not None else "-"
        if holder == "host":
            text = f"HOST   ! {HOST_MEANS.get(n['kind'], '')}"
        elif holder == "pod":
            text = f"pod    {n['path']}"
        elif holder == "container":
            text = f"shared {n['path']}"
        elif holder == "own" and n["inode"] is None:
            text = "own    (each container has its own)"
        else:
            text = holder
        lines.append(f"  {n['kind']:<7} {inode!s:<11} {text}")


def _cgroup(lines: list[str], cg: dict[str, Any]) -> None:
    if not cg:
        lines.append("  (none recorded)")
        return
    lines.append(f"  v{cg['version']} {cg['path'] or '(none)'}")
    m = cg.get("memory") or {}
    if m:
        lines.append(f"  memory  max {_limit(m.get('max'))}, high {_limit(m.get('high'))}; current "
                     f"{size(m.get('current'))}, peak {size(m.get('peak'))}; OOM kills {m.get('oom_kills', '?')}")
    c = cg.get("cpu") or {}
    if c:
        quota = f"{c['quota_us']}us per {c.get('period_us')}us" if c.get("quota_us") else "none"
        weight = f"shares {c.get('shares')}" if "shares" in c else f"weight {c.get('weight')}"
        usage = f"{c['usage_ns'] / 1e9:.2f}s" if c.get("usage_ns") is not None else "?"
        throttled = f"{(c.get('throttled_ns') or 0) / 1e9:.2f}s"
        lines.append(f"  cpu     quota {quota}, {weight}; used {usage}, throttled in "
                     f"{c.get('throttled_periods', '?')} of {c.get('periods', '?')} periods ({throttled})")
    p = cg.get("pids") or {}
    if p:
        lines.append(f"  pids    max {p.get('max') or 'none'}, current {p.get('current', '?')}")


def _filesystem(lines: list[str], fs: dict[str, Any]) -> None:
    root = fs["root"]
    lines.append(f"  root    {root['fstype']} {'read-only' if root['readonly'] else 'read-write'}, "
                 f"image {root['image']}")
    if root.get("upper"):
        lines.append(f"  upper   {root['upper']}  ({size(root.get('upper_size'))} written by the container)")
    for layer in reversed(root.get("layers") or []):
        lines.append(f"  layer {layer['index']:<2} {_short(layer['digest'] or layer['chain_id']):<20} "
                     f"{size(layer.get('size')):>10}  {layer['dir']}")
    lines.append("  mounts  (mount point, type, options, propagation, source)")
    for m in fs.get("mounts") or []:
        kind = f"bind({m['fstype']})" if m.get("host_path") else m["fstype"]
        source = m.get("host_path") or m["source"]
        opts = ",".join(m["options"])
        lines.append(f"    {m['mountpoint']:<24} {kind:<12} {opts:<32} {m['propagation']:<8} {source}")
    masked = fs.get("masked_paths") or []
    if masked:
        lines.append("  masked    " + ", ".join(f"{c['path']} ({c['state']})" for c in masked))
    ro = fs.get("readonly_paths") or []
    if ro:
        lines.append("  read-only " + ", ".join(f"{c['path']} ({c['state']})" for c in ro))


def _caps(names: list[str]) -> str:
    return ", ".join(n.removeprefix("CAP_") for n in names) or "none"


def _security(lines: list[str], sec: dict[str, Any]) -> None:
    caps = sec.get("capabilities") or {}
    for name in ("effective", "permitted", "bounding"):
        if name in caps:
            lines.append(f"  {name:<10} {_caps(caps[name])}")
    for name in ("inheritable", "ambient"):
        if caps.get(name):
            lines.append(f"  {name:<10} {_caps(caps[name])}")
    nnp = sec.get("no_new_privs")
    lines.append(f"  NoNewPrivs {'?' if nnp is None else int(nnp)}")
    filters = f", {sec['seccomp_filters']} filter(s)" if sec.get("seccomp_filters") else ""
    lines.append(f"  seccomp    {sec.get('seccomp_mode')}{filters}; profile {sec.get('seccomp_profile')}")
    lsm = ",".join(sec.get("lsm_modules") or []) or "none"
    lines.append(f"  LSM        {sec.get('lsm') or 'unconfined'} (modules: {lsm})")
    for kind in ("uid", "gid"):
        maps = sec.get(f"{kind}_map") or []
        if maps == [[0, 0, 4294967295]]:
            text = "identity (no user namespace)"
        else:
            text = "; ".join(f"{a}-{a + n - 1} -> host {b}-{b + n - 1}" for a, b, n in maps) or "?"
        lines.append(f"  {kind} map    {text}")
    devices = sec.get("devices") or []
    lines.append(f"  devices    ({sec.get('devices_source')}) {'; '.join(devices) or 'none'}")


def _network(lines: list[str], net: dict[str, Any]) -> None:
    lines.append(f"  netns   {net['netns']}" + ("   ! HOST network" if net["netns"] == "host" else ""))
    lines += [f"  note    {n}" for n in net.get("notes") or []]
    for i in net.get("interfaces") or []:
        lines.append(f"  {i['name']:<8} {i['state']:<8} {i['mac']:<18} mtu {i['mtu']}  {' '.join(i['addresses'])}")
    for r in net.get("routes") or []:
        via = f" via {r['gateway']}" if r.get("gateway") else ""
        lines.append(f"  route   {r['dst']}{via} dev {r['dev']}")
    dns = net.get("dns") or {}
    servers, search = " ".join(dns.get("nameservers") or []), " ".join(dns.get("search") or [])
    lines.append(f"  dns     nameservers {servers or 'none'}; search {search or 'none'}; "
                 f"options {' '.join(dns.get('options') or []) or 'none'}")
    if net.get("cni_network"):
        lines.append(f"  cni     network {net['cni_network']}: {' -> '.join(net.get('cni_plugins') or [])}"
                     f" on {net.get('cni_ifname')}, IPs {' '.join(net.get('ips') or []) or 'none'}")
    for p in net.get("port_mappings") or []:
        lines.append(f"  hostPort {p.get('hostIP') or '0.0.0.0'}:{p.get('hostPort')} -> {p.get('containerPort')}"
                     f"/{p.get('protocol')}")
    for rule in net.get("nat_rules") or []:
        lines.append(f"    {rule}")


def _warnings(lines: list[str], warnings: list[str]) -> None:
    if warnings:
        lines.append("")
        lines.append("WHAT THE KERNEL HAS IS NOT WHAT WAS ASKED")
        lines += [f"  ! {w}" for w in warnings]


def render(report: dict[str, Any]) -> str:
    lines: list[str] = []
    if report["kind"] == "container":
        pod = report["pod"]
        lines.append(f"container {report['name']} {report['id'][:13]} in pod {pod['namespace']}/{pod['name']} "
                     f"{pod['id'][:13]}: {report['state']}" + (f", pid {report['pid']}" if report["pid"] else ""))
        lines.append(f"image {report['image']} ({_short(report['image_id'])})")
    else:
        lines.append(f"pod {report['namespace']}/{report['name']} {report['id'][:13]}: {report['state']}, "
                     f"infra pid {report['infra_pid'] or 'none'}, pid namespace mode {report['pid_mode']}")
        for c in report.get("containers") or []:
            lines.append(f"  container {c['name']:<20} {c['id'][:13]}  {c['state']}"
                         + (f", pid {c['pid']}" if c["pid"] else ""))
    lines += [f"  note: {n}" for n in report.get("notes") or []]
    _warnings(lines, report.get("warnings") or [])
    if "processes" in report:
        lines += ["", "PROCESSES"]
        if report["kind"] == "container":
            _processes(lines, report["processes"])
        else:
            for group in report["processes"]:
                lines.append(f"  {group['container']}:")
                _processes(lines, group["processes"])
    if "namespaces" in report:
        lines += ["", "NAMESPACES"]
        _namespaces(lines, report["namespaces"])
    if "cgroup" in report:
        lines += ["", "CGROUP"]
        _cgroup(lines, report["cgroup"])
    if "filesystem" in report:
        lines += ["", "FILESYSTEM"]
        _filesystem(lines, report["filesystem"])
    if "security" in report:
        lines += ["", "SECURITY"]
        _security(lines, report["security"])
    if "network" in report:
        lines += ["", "NETWORK"]
        _network(lines, report["network"])
    return "\n".join(lines) + "\n"


def render_origin(origin: dict[str, Any]) -> str:
    text = f"{origin['path']}: {origin['answer']}"
    if origin.get("resolved") and origin["resolved"] != origin["path"]:
        text += f"\n  (resolved in the container to {origin['resolved']})"
    if origin.get("symlink_to"):
        text += f"\n  (a symbolic link to {origin['symlink_to']})"
    return text + "\n"

"""The node's own address, which host-network pods report as their IP."""

from __future__ import annotations

import socket

from pyroute2 import IPRoute


def _global_addrs(ipr: IPRoute, family: int, index: int | None = None) -> list[str]:
    kwargs = {"index": index} if index is not None else {}
    out = []
    for a in ipr.get_addr(family=family, **kwargs):
        if a["scope"] != 0:  # only universe scope: not link-local, not loopback
            continue
        out.append(a.get_attr("IFA_ADDRESS"))
    return [x for x in out if x]


def host_primary_ip() -> str:
    """IPv4 of the interface holding the default route, else IPv6 likewise,
    else any global address, else "". Blocking (netlink): call it through
    asyncio.to_thread from the daemon."""
    with IPRoute() as ipr:
        for family, dst in ((socket.AF_INET, "0.0.0.0/0"), (socket.AF_INET6, "::/0")):
            for route in ipr.get_default_routes(family=family):
                oif = route.get_attr("RTA_OIF")
                if oif is None:
                    continue
                addrs = _global_addrs(ipr, family, oif)
                if addrs:
                    return addrs[0]
        for family in (socket.AF_INET, socket.AF_INET6):
            addrs = _global_addrs(ipr, family)
            if addrs:
                return addrs[0]
    return ""

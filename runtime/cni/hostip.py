"""The node's own address, which host-network pods report as their IP.

Two rtnetlink dumps (routes, addresses) over a plain netlink socket: the
parsing below is sans-IO (bytes in, records out) and the socket shell is a
few lines. pyroute2's IPRoute did the same in ~6 ms per call (it starts
threads and an event loop of its own), paid by every host-network pod.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass

NLMSG_ERROR = 2
NLMSG_DONE = 3
RTM_NEWADDR, RTM_GETADDR = 20, 22
RTM_NEWROUTE, RTM_GETROUTE = 24, 26
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
RT_TABLE_MAIN = 254
RTN_UNICAST = 1
RTA_OIF, RTA_TABLE = 4, 15
IFA_ADDRESS, IFA_LOCAL = 1, 2
RT_SCOPE_UNIVERSE = 0

_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, protocol, scope, type, flags
_IFADDRMSG = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
_RTATTR = struct.Struct("=HH")


@dataclass
class Route:
    family: int
    dst_len: int
    table: int
    type: int
    oif: int | None


@dataclass
class Address:
    family: int
    scope: int
    index: int
    address: str


def _align(n: int) -> int:
    return (n + 3) & ~3


def dump_request(msg_type: int, family: int, seq: int) -> bytes:
    """An rtnetlink dump request for every route/address of `family`."""
    body = (_RTMSG.pack(family, 0, 0, 0, 0, 0, 0, 0, 0) if msg_type == RTM_GETROUTE
            else _IFADDRMSG.pack(family, 0, 0, 0, 0))
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), msg_type, NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body


def attributes(data: bytes, offset: int) -> dict[int, bytes]:
    attrs: dict[int, bytes] = {}
    while offset + _RTATTR.size <= len(data):
        length, kind = _RTATTR.unpack_from(data, offset)
        if length < _RTATTR.size:
            break
        attrs.setdefault(kind & 0x3FFF, data[offset + _RTATTR.size:offset + length])
        offset += _align(length)
    return attrs


def parse(data: bytes, seq: int) -> tuple[list[Route | Address], bool]:
    """The records in one datagram of a dump answer, and whether the dump
    is complete. Raises OSError for a netlink error answer."""
    out: list[Route | Address] = []
    offset = 0
    while offset + _NLMSGHDR.size <= len(data):
        length, kind, _, msg_seq, _ = _NLMSGHDR.unpack_from(data, offset)
        if length < _NLMSGHDR.size:
            break
        msg = data[offset:offset + length]
        offset += _align(length)
        if msg_seq != seq:
            continue
        if kind == NLMSG_DONE:
            return out, True
        if kind == NLMSG_ERROR:
            errno = -struct.unpack_from("=i", msg, _NLMSGHDR.size)[0]
            if errno:
                raise OSError(errno, f"rtnetlink dump failed: {errno}")
            continue
        if kind == RTM_NEWROUTE:
            family, dst_len, _, _, table, _, _, rtype, _ = _RTMSG.unpack_from(msg, _NLMSGHDR.size)
            attrs = attributes(msg, _NLMSGHDR.size + _RTMSG.size)
            if RTA_TABLE in attrs:
                table = struct.unpack("=I", attrs[RTA_TABLE][:4])[0]
            oif = struct.unpack("=I", attrs[RTA_OIF][:4])[0] if RTA_OIF in attrs else None
            out.append(Route(family, dst_len, table, rtype, oif))
        elif kind == RTM_NEWADDR:
            family, _, _, scope, index = _IFADDRMSG.unpack_from(msg, _NLMSGHDR.size)
            attrs = attributes(msg, _NLMSGHDR.size + _IFADDRMSG.size)
            raw = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS)
            if raw and len(raw) in (4, 16):
                out.append(Address(family, scope, index, str(ipaddress.ip_address(raw))))
    return out, False


def primary_ip(routes: list[Route], addrs: list[Address]) -> str:
    """IPv4 of the interface holding a default route of the main table, else
    IPv6 likewise, else any global address, else ""."""
    glob = [a for a in addrs if a.scope == RT_SCOPE_UNIVERSE]
    for family in (socket.AF_INET, socket.AF_INET6):
        for r in routes:
            if (r.family == family and r.dst_len == 0 and r.table == RT_TABLE_MAIN and r.type == RTN_UNICAST
                    and r.oif is not None):
                found = [a.address for a in glob if a.family == family and a.index == r.oif]
                if found:
                    return found[0]
    for family in (socket.AF_INET, socket.AF_INET6):
        found = [a.address for a in glob if a.family == family]
        if found:
            return found[0]
    return ""


def _dump(sock: socket.socket, msg_type: int, family: int, seq: int) -> list:
    sock.send(dump_request(msg_type, family, seq))
    out: list = []
    while True:
        records, done = parse(sock.recv(65536), seq)
        out += records
        if done:
            return out


def host_primary_ip() -> str:
    """Blocking (netlink, well under a millisecond): call it through
    asyncio.to_thread from the daemon."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE) as sock:
        sock.settimeout(5)
        sock.bind((0, 0))
        routes = _dump(sock, RTM_GETROUTE, socket.AF_UNSPEC, 1)
        addrs = _dump(sock, RTM_GETADDR, socket.AF_UNSPEC, 2)
    return primary_ip(routes, addrs)

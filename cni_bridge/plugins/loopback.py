"""The loopback plugin: `lo` up in the container's network namespace, as the reference does it.

CNI_IFNAME is ignored: the interface is always `lo`. ADD reports lo with the first IPv4 and
the first IPv6 address the kernel gives it (127.0.0.1/8, and ::1/128 when the namespace has
IPv6), or passes a prevResult through unchanged. DEL sets lo down and succeeds when the
namespace is already gone. CHECK fails when lo is down. GC and STATUS have nothing to do.

This module imports the protocol layer, its config schema and the kernel layer's netns and
netlink only: no nftables, no bridge, no IPAM (tests/unit/test_import_boundaries.py).
"""

import os

from cni_bridge import _schemas
from cni_bridge.cni import version
from cni_bridge.cni.addr import parse_ip
from cni_bridge.cni.errors import CNIError, INTERNAL
from cni_bridge.cni.schema import validate_conf
from cni_bridge.cni.skel import CmdArgs, Plugin, log
from cni_bridge.kernel.netlink import NetlinkError
from cni_bridge.kernel.rtnl import RouteSocket
from cni_bridge.kernel.netns import open_netns

LOOPBACK = "lo"
# The reference reports this MAC whatever the kernel says; lo has no hardware address.
LOOPBACK_MAC = "00:00:00:00:00:00"
AF_INET, AF_INET6 = 2, 10


# ---- pure parts --------------------------------------------------------------------------


def is_loopback_address(cidr: str) -> bool:
    """127.0.0.0/8 or ::1; also 127.0.0.0/8 mapped into IPv6, which the reference counts too."""
    family, value = parse_ip(cidr.partition("/")[0])
    if family == 6 and value >> 32 == 0xFFFF:  # ::ffff:a.b.c.d
        family, value = 4, value & 0xFFFFFFFF
    if family == 4:
        return value >> 24 == 127
    return value == 1


def refuse_non_loopback(cidrs: list[str]) -> None:
    """An address from outside the loopback ranges on lo is a misconfigured namespace."""
    foreign = [cidr for cidr in cidrs if not is_loopback_address(cidr)]
    if foreign:
        raise CNIError(INTERNAL, "loopback interface found with non-loopback address", ", ".join(foreign))


def loopback_result(netns_path: str, addresses: list[tuple[int, str]]) -> dict:
    """The result for lo: its first address of each family, from (AF_*, "ip/prefix") pairs."""
    first: dict[int, str] = {}
    for family, cidr in addresses:
        first.setdefault(family, cidr)
    result = {
        "cniVersion": version.CURRENT_VERSION,
        "interfaces": [{"name": LOOPBACK, "mac": LOOPBACK_MAC, "sandbox": netns_path}],
    }
    ips = [{"interface": 0, "address": first[family]} for family in (AF_INET, AF_INET6) if family in first]
    if ips:
        result["ips"] = ips
    return result


# ---- the kernel --------------------------------------------------------------------------


def _socket_in(netns_path: str) -> RouteSocket:
    """A netlink socket in the namespace at netns_path (it stays there once the fd is closed)."""
    netns_fd = open_netns(netns_path)
    try:
        return RouteSocket.in_netns(netns_fd)
    finally:
        os.close(netns_fd)


def _netlink(what: str, function, *args, **kwargs):
    try:
        return function(*args, **kwargs)
    except NetlinkError as err:
        raise CNIError(INTERNAL, f"failed to {what}", str(err)) from None


def _loopback_link(sock: RouteSocket, netns_path: str):
    link = _netlink("look up lo", sock.get_link, name=LOOPBACK)
    if link is None:
        raise CNIError(INTERNAL, "loopback interface is missing", f"no lo in {netns_path}")
    return link


def _addresses(sock: RouteSocket, index: int) -> list[tuple[int, str]]:
    return [(a.family, a.cidr) for a in _netlink("list the addresses of lo", sock.addresses, index=index)]


# ---- commands ----------------------------------------------------------------------------


def cmd_add(cmd_args: CmdArgs) -> dict:
    validate_conf(_schemas.LOOPBACK_CONF, cmd_args.conf)
    prev = cmd_args.prev_result()
    with _socket_in(cmd_args.netns) as sock:
        lo = _loopback_link(sock, cmd_args.netns)
        addresses = _addresses(sock, lo.index)
        refuse_non_loopback([cidr for _, cidr in addresses])
        if not lo.up:
            _netlink("set lo up", sock.set_link, lo.index, up=True)
            # The kernel gives lo 127.0.0.1/8 and ::1/128 as it comes up.
            addresses = _addresses(sock, lo.index)
    if prev is not None:
        return prev
    return loopback_result(cmd_args.netns, addresses)


def cmd_del(cmd_args: CmdArgs) -> None:
    validate_conf(_schemas.LOOPBACK_CONF, cmd_args.conf)
    if not cmd_args.netns:
        return
    try:
        sock = _socket_in(cmd_args.netns)
    except CNIError as err:
        # Gone, or a file that is no longer a namespace (docker unmounts it and leaves the
        # file): lo went with it.
        log(f"DEL: {err}; treating the namespace as gone")
        return
    with sock:
        lo = _netlink("look up lo", sock.get_link, name=LOOPBACK)
        if lo is not None and lo.up:
            _netlink("set lo down", sock.set_link, lo.index, up=False)


def cmd_check(cmd_args: CmdArgs) -> None:
    validate_conf(_schemas.LOOPBACK_CONF, cmd_args.conf)
    with _socket_in(cmd_args.netns) as sock:
        lo = _loopback_link(sock, cmd_args.netns)
    if not lo.up:
        raise CNIError(INTERNAL, "loopback interface is down", f"lo in {cmd_args.netns}")


PLUGIN = Plugin(about="loopback from cni-bridge (Python)", add=cmd_add, delete=cmd_del, check=cmd_check)

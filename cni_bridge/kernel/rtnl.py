"""rtnetlink: links, bridge ports and VLANs, addresses and routes, in the netns of a socket.

The message tables below say which attributes we send and read, and how each is written;
kernel/netlink.py turns them into bytes. Every request the plugins make is built by a
`*_request` function (pure: tests/unit/kernel compares their bytes with pyroute2's), and
`RouteSocket` sends them: one socket per network namespace, several requests per datagram
where the plugin has them ready at once.

Imports: struct, _socket, kernel/netlink and kernel/netns; every bridge exec loads this.
"""

import struct
from _socket import AF_INET, AF_INET6, inet_ntop, inet_pton

from cni_bridge.kernel import netns
from cni_bridge.kernel.netlink import (
    NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, Attrs, MessageType, NetlinkError, NetlinkSocket,
    Struct,
)

NETLINK_ROUTE = 0
AF_UNSPEC, AF_BRIDGE = 0, 7
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK, RTM_SETLINK = 16, 17, 18, 19
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26

IFF_UP = 0x1
IFF_PROMISC = 0x100
RTEXT_FILTER_BRVLAN = 1 << 1
RTEXT_FILTER_SKIP_STATS = 1 << 3
BRIDGE_FLAGS_SELF = 2
BRIDGE_VLAN_INFO_PVID = 0x2
BRIDGE_VLAN_INFO_UNTAGGED = 0x4
BRIDGE_VLAN_INFO_RANGE_BEGIN = 0x8
BRIDGE_VLAN_INFO_RANGE_END = 0x10
IFA_F_NODAD = 0x02
IFA_F_DADFAILED = 0x08
IFA_F_TENTATIVE = 0x40
RT_TABLE_COMPAT = 252
RT_TABLE_MAIN = 254
RT_SCOPE_UNIVERSE = 0
RT_SCOPE_NOWHERE = 255
RTPROT_BOOT = 3
RTN_UNICAST = 1
IF_OPER_UP = 6
ENODEV = 19

# ---- message tables -----------------------------------------------------------------------

BRPORT = Attrs({  # IFLA_BRPORT_*: a bridge port's options (IFLA_PROTINFO, IFLA_INFO_SLAVE_DATA)
    "IFLA_BRPORT_MODE": (4, "u8"),  # hairpin
    "IFLA_BRPORT_LEARNING": (8, "u8"),
    "IFLA_BRPORT_ISOLATED": (33, "u8"),
})
BRIDGE_DATA = Attrs({  # IFLA_INFO_DATA of a bridge
    "IFLA_BR_VLAN_FILTERING": (7, "u8"),
    "IFLA_BR_VLAN_DEFAULT_PVID": (39, "u16"),
})
LINKINFO = Attrs({
    "IFLA_INFO_KIND": (1, "str"),
    "IFLA_INFO_DATA": (2, "bytes"),  # its table depends on the kind: encoded by the caller
    "IFLA_INFO_SLAVE_KIND": (4, "str"),
    "IFLA_INFO_SLAVE_DATA": (5, BRPORT),
})
BRIDGE_AF_SPEC = Attrs({  # IFLA_AF_SPEC of an AF_BRIDGE message
    "IFLA_BRIDGE_FLAGS": (0, "u16"),
    "IFLA_BRIDGE_VLAN_INFO": (2, Struct("=HH", ("flags", "vid")), "list"),
})
IFLA = Attrs({
    "IFLA_ADDRESS": (1, "mac"),
    "IFLA_IFNAME": (3, "str"),
    "IFLA_MTU": (4, "u32"),
    "IFLA_LINK": (5, "u32"),
    "IFLA_MASTER": (10, "u32"),
    # Without NLA_F_NESTED the kernel reads IFLA_PROTINFO as a bare STP port state
    # (compatibility with old RSTP daemons) and ignores the attributes.
    "IFLA_PROTINFO": (12, BRPORT, "nested"),
    "IFLA_OPERSTATE": (16, "u8"),
    "IFLA_LINKINFO": (18, LINKINFO),
    "IFLA_AF_SPEC": (26, BRIDGE_AF_SPEC),
    "IFLA_NET_NS_FD": (28, "u32"),
    "IFLA_EXT_MASK": (29, "u32"),
    "IFLA_LINK_NETNSID": (37, "s32"),
})
IFINFO = MessageType("=BxHiII", ("family", "ifi_type", "index", "flags", "change"), IFLA)
VETH_DATA = Attrs({"VETH_INFO_PEER": (1, IFINFO)})  # the peer: its own ifinfomsg + attributes

IFA = Attrs({
    "IFA_ADDRESS": (1, "ip"),
    "IFA_LOCAL": (2, "ip"),
    "IFA_BROADCAST": (4, "ip"),
    "IFA_FLAGS": (8, "u32"),
})
IFADDR = MessageType("=BBBBI", ("family", "prefixlen", "flags", "scope", "index"), IFA)

RTAX = Attrs({"RTAX_MTU": (2, "u32"), "RTAX_ADVMSS": (8, "u32")})
RTA = Attrs({
    "RTA_DST": (1, "ip"),
    "RTA_OIF": (4, "u32"),
    "RTA_GATEWAY": (5, "ip"),
    "RTA_PRIORITY": (6, "u32"),
    "RTA_PREFSRC": (7, "ip"),
    "RTA_METRICS": (8, RTAX),
    "RTA_TABLE": (15, "u32"),
})
RT = MessageType("=BBBBBBBBI", ("family", "dst_len", "src_len", "tos", "table", "proto", "scope", "type", "flags"),
                 RTA)

# ---- records ------------------------------------------------------------------------------


class Link:
    """One network interface as RTM_NEWLINK reports it.

    up: administratively up (IFF_UP); oper_up: IFLA_OPERSTATE is UP (carrier too).
    promisc: promiscuity the user asked for, not the one a bridge port gets implicitly.
    vlan_filtering/default_pvid: bridges only. slave_kind "bridge" marks a bridge port,
    with hairpin/isolated/learning from its IFLA_INFO_SLAVE_DATA. peer_index: IFLA_LINK,
    for a veth the peer's ifindex in the peer's netns, which link_netnsid names.
    Fields the kernel did not report are None.
    """

    __slots__ = (
        "index", "name", "kind", "mac", "mtu", "master", "up", "oper_up", "promisc",
        "vlan_filtering", "default_pvid", "slave_kind", "hairpin", "isolated", "learning",
        "peer_index", "link_netnsid",
    )  # fmt: skip

    def __init__(self, **fields):
        for name in self.__slots__:
            setattr(self, name, fields.get(name))

    def __repr__(self) -> str:
        inner = ", ".join(f"{n}={getattr(self, n)!r}" for n in self.__slots__)
        return f"Link({inner})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Link) and all(getattr(self, n) == getattr(other, n) for n in self.__slots__)


class Address:
    """One interface address as RTM_NEWADDR reports it."""

    __slots__ = ("index", "family", "cidr", "flags", "scope")

    def __init__(self, index: int, family: int, cidr: str, flags: int, scope: int):
        self.index, self.family, self.cidr, self.flags, self.scope = index, family, cidr, flags, scope

    @property
    def tentative(self) -> bool:
        """IPv6 DAD has not finished (or has failed): the address is not usable yet."""
        return bool(self.flags & IFA_F_TENTATIVE)

    @property
    def dad_failed(self) -> bool:
        """IPv6 DAD found a duplicate; the address stays tentative for good."""
        return bool(self.flags & IFA_F_DADFAILED)

    def __repr__(self) -> str:
        return f"Address({self.index}, {self.cidr!r}, flags={self.flags:#x}, scope={self.scope})"


def parse_link(message: bytes) -> Link:
    """Link from an RTM_NEWLINK message."""
    header, attrs = IFINFO.decode(message)
    info = attrs.get("IFLA_LINKINFO") or {}
    kind = info.get("IFLA_INFO_KIND")
    data = BRIDGE_DATA.decode(info["IFLA_INFO_DATA"]) if kind == "bridge" and "IFLA_INFO_DATA" in info else {}
    slave_kind = info.get("IFLA_INFO_SLAVE_KIND")
    port = info.get("IFLA_INFO_SLAVE_DATA") if slave_kind == "bridge" else None
    port = port or {}
    flags = header["flags"]
    return Link(
        index=header["index"],
        name=attrs.get("IFLA_IFNAME"),
        kind=kind,
        mac=attrs.get("IFLA_ADDRESS"),
        mtu=attrs.get("IFLA_MTU"),
        master=attrs.get("IFLA_MASTER") or None,
        up=bool(flags & IFF_UP),
        oper_up=attrs.get("IFLA_OPERSTATE") == IF_OPER_UP,
        promisc=bool(flags & IFF_PROMISC),
        vlan_filtering=bool(data.get("IFLA_BR_VLAN_FILTERING")) if kind == "bridge" else None,
        default_pvid=data.get("IFLA_BR_VLAN_DEFAULT_PVID"),
        slave_kind=slave_kind,
        hairpin=_flag(port.get("IFLA_BRPORT_MODE")),
        isolated=_flag(port.get("IFLA_BRPORT_ISOLATED")),
        learning=_flag(port.get("IFLA_BRPORT_LEARNING")),
        peer_index=attrs.get("IFLA_LINK"),
        link_netnsid=attrs.get("IFLA_LINK_NETNSID"),
    )


def parse_address(message: bytes) -> Address:
    header, attrs = IFADDR.decode(message)
    # For IPv4, IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer on
    # point-to-point links. IPv6 sends only IFA_ADDRESS.
    ip = attrs.get("IFA_LOCAL") or attrs.get("IFA_ADDRESS")
    flags = attrs.get("IFA_FLAGS", header["flags"])  # 32-bit flags; ifa_flags holds the low 8
    return Address(header["index"], header["family"], f"{ip}/{header['prefixlen']}", flags, header["scope"])


def parse_route(message: bytes) -> dict:
    """{"dst", "gw", "oif", "table", "priority", "scope", "proto", "type", "mtu", "advmss"}."""
    header, attrs = RT.decode(message)
    metrics = attrs.get("RTA_METRICS") or {}
    dst = attrs.get("RTA_DST")
    default = "::/0" if header["family"] == AF_INET6 else "0.0.0.0/0"
    return {
        "dst": f"{dst}/{header['dst_len']}" if dst else default,
        "gw": attrs.get("RTA_GATEWAY"),
        "oif": attrs.get("RTA_OIF"),
        "table": attrs.get("RTA_TABLE") or header["table"],
        "priority": attrs.get("RTA_PRIORITY"),
        "scope": header["scope"],
        "proto": header["proto"],
        "type": header["type"],
        "mtu": metrics.get("RTAX_MTU"),
        "advmss": metrics.get("RTAX_ADVMSS"),
    }


def _flag(value) -> bool | None:
    return None if value is None else bool(value)


def parse_cidr(cidr: str) -> tuple[int, bytes, int]:
    """ "10.1.0.5/24" -> (AF_INET, packed ip, 24). ValueError if malformed."""
    ip, sep, plen = cidr.partition("/")
    family = AF_INET6 if ":" in ip else AF_INET
    bits = 128 if family == AF_INET6 else 32
    try:
        packed = inet_pton(family, ip)
        prefixlen = int(plen) if sep else bits
    except (OSError, ValueError):
        raise ValueError(f"invalid address {cidr!r}") from None
    if not 0 <= prefixlen <= bits:
        raise ValueError(f"invalid prefix length in {cidr!r}")
    return family, packed, prefixlen


# ---- requests (pure) ------------------------------------------------------------------------


def get_link_request(name: str | None = None, index: int | None = None) -> bytes:
    attrs = [("IFLA_EXT_MASK", RTEXT_FILTER_SKIP_STATS)]
    if name is not None:
        attrs.append(("IFLA_IFNAME", name))
    return IFINFO.message(RTM_GETLINK, 0, {"index": index or 0}, attrs)


def list_links_request() -> bytes:
    return IFINFO.message(RTM_GETLINK, NLM_F_DUMP, {}, [("IFLA_EXT_MASK", RTEXT_FILTER_SKIP_STATS)])


def create_bridge_request(name: str, mtu: int | None = None, mac: str | None = None,
                          vlan_filtering: bool = False, default_pvid: int | None = None) -> bytes:
    """Kernels built without CONFIG_BRIDGE_VLAN_FILTERING refuse IFLA_BR_VLAN_FILTERING with
    EOPNOTSUPP even when it is 0, so it is only sent to turn filtering on."""
    data = []
    if vlan_filtering:
        data.append(("IFLA_BR_VLAN_FILTERING", 1))
    if default_pvid is not None:
        data.append(("IFLA_BR_VLAN_DEFAULT_PVID", default_pvid))
    info = [("IFLA_INFO_KIND", "bridge")]
    if data:
        info.append(("IFLA_INFO_DATA", BRIDGE_DATA.encode(data)))
    attrs = [("IFLA_IFNAME", name)]
    if mtu is not None:
        attrs.append(("IFLA_MTU", mtu))
    if mac is not None:
        attrs.append(("IFLA_ADDRESS", mac))
    attrs.append(("IFLA_LINKINFO", info))
    return IFINFO.message(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, {}, attrs)


def create_veth_request(name: str, peer_name: str, peer_netns_fd: int, mtu: int | None = None,
                        peer_mac: str | None = None, master: int | None = None, up: bool = False) -> bytes:
    """A veth pair: `name` in the socket's netns, `peer_name` created directly inside
    peer_netns_fd, so no link ever appears under the peer's name in ours. master and up
    apply to `name` at creation."""
    peer = [("IFLA_IFNAME", peer_name), ("IFLA_NET_NS_FD", peer_netns_fd)]
    if mtu is not None:
        peer.append(("IFLA_MTU", mtu))
    if peer_mac is not None:
        peer.append(("IFLA_ADDRESS", peer_mac))
    attrs = [("IFLA_IFNAME", name)]
    if mtu is not None:
        attrs.append(("IFLA_MTU", mtu))
    if master is not None:
        attrs.append(("IFLA_MASTER", master))
    peer_data = VETH_DATA.encode([("VETH_INFO_PEER", ({}, peer))])
    attrs.append(("IFLA_LINKINFO", [("IFLA_INFO_KIND", "veth"), ("IFLA_INFO_DATA", peer_data)]))
    flags = IFF_UP if up else 0
    return IFINFO.message(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, {"flags": flags, "change": flags}, attrs)


def set_link_request(index: int, *, up: bool | None = None, master: int | None = None, mtu: int | None = None,
                     promisc: bool | None = None, mac: str | None = None, name: str | None = None) -> bytes:
    """None leaves a setting alone; master=0 releases a bridge port."""
    flags = change = 0
    # ifi_change selects which ifi_flags bits the kernel applies.
    if up is not None:
        change |= IFF_UP
        flags |= IFF_UP if up else 0
    if promisc is not None:
        change |= IFF_PROMISC
        flags |= IFF_PROMISC if promisc else 0
    attrs = []
    if name is not None:
        attrs.append(("IFLA_IFNAME", name))
    if mac is not None:
        attrs.append(("IFLA_ADDRESS", mac))
    if mtu is not None:
        attrs.append(("IFLA_MTU", mtu))
    if master is not None:
        attrs.append(("IFLA_MASTER", master))
    return IFINFO.message(RTM_SETLINK, 0, {"index": index, "flags": flags, "change": change}, attrs)


def set_bridge_port_request(index: int, *, hairpin: bool | None = None, isolated: bool | None = None,
                            learning: bool | None = None) -> bytes | None:
    """What `bridge link set` sends; None when there is nothing to set."""
    options = []
    if hairpin is not None:
        options.append(("IFLA_BRPORT_MODE", int(hairpin)))
    if isolated is not None:
        options.append(("IFLA_BRPORT_ISOLATED", int(isolated)))
    if learning is not None:
        options.append(("IFLA_BRPORT_LEARNING", int(learning)))
    if not options:
        return None
    return IFINFO.message(RTM_SETLINK, 0, {"family": AF_BRIDGE, "index": index}, [("IFLA_PROTINFO", options)])


def bridge_vlan_request(add: bool, index: int, vid: int, vid_end: int | None = None, pvid: bool = False,
                        untagged: bool = False, on_bridge_self: bool = False) -> bytes:
    """What `bridge vlan add/del` sends: VLAN vid (..vid_end) on port `index`, or on the
    bridge device itself with on_bridge_self."""
    flags = (BRIDGE_VLAN_INFO_PVID if pvid else 0) | (BRIDGE_VLAN_INFO_UNTAGGED if untagged else 0)
    spec = []
    if on_bridge_self:
        # The bridge device's own VLAN membership: its "self" port, not a master port.
        spec.append(("IFLA_BRIDGE_FLAGS", BRIDGE_FLAGS_SELF))
    if vid_end is None or vid_end == vid:
        spec.append(("IFLA_BRIDGE_VLAN_INFO", {"flags": flags, "vid": vid}))
    else:
        # A range is two entries, begin and end, carrying the same flags.
        spec.append(("IFLA_BRIDGE_VLAN_INFO", {"flags": flags | BRIDGE_VLAN_INFO_RANGE_BEGIN, "vid": vid}))
        spec.append(("IFLA_BRIDGE_VLAN_INFO", {"flags": flags | BRIDGE_VLAN_INFO_RANGE_END, "vid": vid_end}))
    msg_type = RTM_SETLINK if add else RTM_DELLINK
    return IFINFO.message(msg_type, 0, {"family": AF_BRIDGE, "index": index}, [("IFLA_AF_SPEC", spec)])


def bridge_vlans_request() -> bytes:
    # The AF_BRIDGE dump cannot be filtered by index (strict checking rejects it).
    return IFINFO.message(RTM_GETLINK, NLM_F_DUMP, {"family": AF_BRIDGE}, [("IFLA_EXT_MASK", RTEXT_FILTER_BRVLAN)])


def delete_link_request(index: int) -> bytes:
    return IFINFO.message(RTM_DELLINK, 0, {"index": index})


def address_request(add: bool, index: int, cidr: str, nodad: bool = False, broadcast: bool = True) -> bytes:
    """Add or delete "ip/prefix" on link `index`. broadcast: give an IPv4 address its
    subnet's broadcast address, as `ip addr add ... brd +` does. nodad: skip IPv6 duplicate
    address detection, so the address is usable at once."""
    family, packed, prefixlen = parse_cidr(cidr)
    ip = inet_ntop(family, packed)
    attrs = [("IFA_LOCAL", ip), ("IFA_ADDRESS", ip)]
    if not add:
        return IFADDR.message(RTM_DELADDR, 0, {"family": family, "prefixlen": prefixlen, "index": index}, attrs)
    if family == AF_INET and broadcast and prefixlen < 31:
        host_bits = (1 << (32 - prefixlen)) - 1
        brd = struct.unpack("!I", packed)[0] | host_bits
        attrs.append(("IFA_BROADCAST", inet_ntop(AF_INET, struct.pack("!I", brd))))
    header = {"family": family, "prefixlen": prefixlen, "flags": IFA_F_NODAD if nodad else 0,
              "scope": RT_SCOPE_UNIVERSE, "index": index}
    return IFADDR.message(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, header, attrs)


def list_addresses_request(index: int | None = None, family: int | None = None) -> bytes:
    # Strict checking lets the kernel filter by index.
    return IFADDR.message(RTM_GETADDR, NLM_F_DUMP, {"family": family or 0, "index": index or 0})


def route_request(add: bool, dst: str, *, gateway: str | None = None, index: int | None = None,
                  mtu: int | None = None, advmss: int | None = None, priority: int | None = None,
                  table: int | None = None, scope: int | None = None) -> bytes:
    """Add a unicast route to dst ("0.0.0.0/0", "::/0", a cidr), or delete the first route
    matching the given keys. An added route's scope is universe even without a gateway,
    as the Go plugins' routes are."""
    family, packed, prefixlen = parse_cidr(dst)
    table = RT_TABLE_MAIN if table is None else table
    # rtm_table is one byte; larger ids travel in RTA_TABLE only.
    header = {"family": family, "dst_len": prefixlen, "table": table if table < 256 else RT_TABLE_COMPAT}
    attrs = [("RTA_TABLE", table)]
    if prefixlen:
        attrs.append(("RTA_DST", inet_ntop(family, packed)))
    if gateway is not None:
        attrs.append(("RTA_GATEWAY", gateway))
    if index is not None:
        attrs.append(("RTA_OIF", index))
    if priority is not None:
        attrs.append(("RTA_PRIORITY", priority))
    if not add:
        header["scope"] = RT_SCOPE_NOWHERE  # match any scope
        return RT.message(RTM_DELROUTE, 0, header, attrs)
    header.update(proto=RTPROT_BOOT, scope=RT_SCOPE_UNIVERSE if scope is None else scope, type=RTN_UNICAST)
    metrics = []
    if mtu is not None:
        metrics.append(("RTAX_MTU", mtu))
    if advmss is not None:
        metrics.append(("RTAX_ADVMSS", advmss))
    if metrics:
        attrs.append(("RTA_METRICS", metrics))
    return RT.message(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, header, attrs)


def list_routes_request(family: int, index: int | None = None, table: int | None = None) -> bytes:
    attrs = []
    if index:
        attrs.append(("RTA_OIF", index))
    if table is not None:
        attrs.append(("RTA_TABLE", table))
    return RT.message(RTM_GETROUTE, NLM_F_DUMP, {"family": family}, attrs)


def get_route_request(dst: str) -> bytes:
    """The route the kernel would use to reach one address (`ip route get`)."""
    family, packed, prefixlen = parse_cidr(dst)
    return RT.message(RTM_GETROUTE, 0, {"family": family, "dst_len": prefixlen},
                      [("RTA_DST", inet_ntop(family, packed))])


# ---- the socket ---------------------------------------------------------------------------


class RouteSocket:
    """A NETLINK_ROUTE socket bound to one network namespace."""

    def __init__(self, sock):
        self.sock = sock

    @classmethod
    def host(cls) -> "RouteSocket":
        """A socket in the calling thread's current netns."""
        return cls(NetlinkSocket.open(NETLINK_ROUTE, strict=True))

    @classmethod
    def in_netns(cls, netns_fd: int) -> "RouteSocket":
        """A socket in netns `netns_fd`; it stays there after the thread switches back."""
        with netns.entered(netns_fd):
            return cls(NetlinkSocket.open(NETLINK_ROUTE, strict=True))

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "RouteSocket":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def exchange(self, requests: list[tuple[bytes, str]]) -> list:
        """Several requests in one datagram: for each, its replies or its NetlinkError."""
        return self.sock.exchange(requests)

    def _do(self, message: bytes, op: str) -> list[bytes]:
        return self.sock.request(message, op)

    # ---- links ----

    def get_link(self, name: str | None = None, index: int | None = None) -> Link | None:
        """The link with that name or index, or None if there is none."""
        if name is None and index is None:
            raise ValueError("get_link needs a name or an index")
        return link_or_none(self.exchange([(get_link_request(name, index), f"get link {name or index}")])[0])

    def list_links(self) -> list[Link]:
        return [parse_link(m) for m in self._do(list_links_request(), "list links")]

    def create_bridge(self, name: str, mtu: int | None = None, vlan_filtering: bool = False,
                      default_pvid: int | None = None, mac: str | None = None) -> Link:
        """Create bridge `name` (down); NetlinkError(EEXIST) if any link has that name."""
        created, fetched = self.exchange([
            (create_bridge_request(name, mtu, mac, vlan_filtering, default_pvid), f"create bridge {name}"),
            (get_link_request(name), f"get link {name}"),
        ])
        if isinstance(created, NetlinkError):
            raise created
        link = link_or_none(fetched)
        if link is None:  # removed by someone else in between
            raise NetlinkError(ENODEV, f"create bridge {name}")
        return link

    def create_veth(self, name: str, peer_name: str, peer_netns_fd: int, mtu: int | None = None,
                    peer_mac: str | None = None, master: int | None = None, up: bool = False) -> Link:
        """Create a veth pair (see create_veth_request); return the end in this netns.
        NetlinkError(EEXIST) if either name is taken."""
        created, fetched = self.exchange([
            (create_veth_request(name, peer_name, peer_netns_fd, mtu, peer_mac, master, up),
             f"create veth {name}/{peer_name}"),
            (get_link_request(name), f"get link {name}"),
        ])
        if isinstance(created, NetlinkError):
            raise created
        link = link_or_none(fetched)
        if link is None:
            raise NetlinkError(ENODEV, f"create veth {name}/{peer_name}")
        return link

    def set_link(self, index: int, **changes) -> None:
        """Change link `index` (see set_link_request)."""
        self._do(set_link_request(index, **changes), f"set link {index}")

    def set_bridge_port(self, index: int, **options) -> None:
        """Set bridge-port options of enslaved link `index` (hairpin, isolated, learning)."""
        message = set_bridge_port_request(index, **options)
        if message is not None:
            self._do(message, f"set bridge port {index}")

    def bridge_vlan_add(self, index: int, vid: int, *, pvid: bool = False, untagged: bool = False,
                        vid_end: int | None = None, on_bridge_self: bool = False) -> None:
        what = f"{vid}-{vid_end}" if vid_end not in (None, vid) else str(vid)
        self._do(bridge_vlan_request(True, index, vid, vid_end, pvid, untagged, on_bridge_self),
                 f"add vlan {what} on link {index}")

    def bridge_vlan_del(self, index: int, vid: int, *, vid_end: int | None = None,
                        on_bridge_self: bool = False) -> None:
        what = f"{vid}-{vid_end}" if vid_end not in (None, vid) else str(vid)
        self._do(bridge_vlan_request(False, index, vid, vid_end, on_bridge_self=on_bridge_self),
                 f"delete vlan {what} on link {index}")

    def bridge_vlans(self, index: int) -> list[dict]:
        """VLANs of bridge port (or bridge) `index`: [{"vid", "pvid", "untagged"}], by vid."""
        result = []
        for message in self._do(bridge_vlans_request(), "list bridge vlans"):
            header, attrs = IFINFO.decode(message)
            if header["index"] != index:
                continue
            for info in (attrs.get("IFLA_AF_SPEC") or {}).get("IFLA_BRIDGE_VLAN_INFO", ()):
                result.append({"vid": info["vid"], "pvid": bool(info["flags"] & BRIDGE_VLAN_INFO_PVID),
                               "untagged": bool(info["flags"] & BRIDGE_VLAN_INFO_UNTAGGED)})
        return sorted(result, key=lambda v: v["vid"])

    def delete_link(self, index: int) -> None:
        """Delete link `index` (a veth takes its peer with it); NetlinkError(ENODEV) if gone."""
        self._do(delete_link_request(index), f"delete link {index}")

    # ---- addresses ----

    def add_address(self, index: int, cidr: str, *, nodad: bool = False, broadcast: bool = True) -> None:
        """Add "ip/prefix" to link `index`; NetlinkError(EEXIST) if it is already there."""
        self._do(address_request(True, index, cidr, nodad, broadcast), f"add address {cidr} on link {index}")

    def delete_address(self, index: int, cidr: str) -> None:
        self._do(address_request(False, index, cidr), f"delete address {cidr} on link {index}")

    def addresses(self, index: int | None = None, family: int | None = None) -> list[Address]:
        """Addresses, optionally of one link and/or one family, with flags and scope."""
        found = [parse_address(m) for m in self._do(list_addresses_request(index, family), "list addresses")]
        return [a for a in found if (not index or a.index == index) and (not family or a.family == family)]

    def list_addresses(self, index: int | None = None, family: int | None = None) -> list[tuple[int, str]]:
        """[(ifindex, "ip/prefix")], optionally of one link and/or one family."""
        return [(a.index, a.cidr) for a in self.addresses(index, family)]

    # ---- routes ----

    def add_route(self, dst: str, **keys) -> None:
        """Add a route (see route_request); NetlinkError(EEXIST) if it is there already."""
        self._do(route_request(True, dst, **keys), f"add route {dst}")

    def delete_route(self, dst: str, **keys) -> None:
        """Delete the first route matching the keys; NetlinkError(ESRCH) if there is none."""
        self._do(route_request(False, dst, **keys), f"delete route {dst}")

    def list_routes(self, family: int, index: int | None = None, table: int | None = None) -> list[dict]:
        """Routes of one family (all tables unless `table`), optionally via link `index`."""
        routes = [parse_route(m) for m in self._do(list_routes_request(family, index, table), "list routes")]
        return [r for r in routes if (not index or r["oif"] == index) and (table is None or r["table"] == table)]

    def route_to(self, address: str) -> dict:
        """The route the kernel picks for `address` (its "oif" is the way out)."""
        (reply,) = self._do(get_route_request(address), f"get route to {address}")
        return parse_route(reply)


def link_or_none(outcome) -> Link | None:
    """The Link of a get-link outcome; None if the kernel has no such link (ENODEV)."""
    if isinstance(outcome, NetlinkError):
        if outcome.errno == ENODEV:
            return None
        raise outcome
    return parse_link(outcome[0]) if outcome else None


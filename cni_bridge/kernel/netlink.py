"""rtnetlink for the bridge plugin: links, bridge ports and VLANs, addresses, routes.

One NETLINK_ROUTE socket per network namespace (`RouteSocket.host()` / `.in_netns(fd)`),
one request at a time, each acknowledged before the call returns. Messages are built and
parsed with pyroute2's message classes only (ifinfmsg, ifaddrmsg, rtmsg), loaded through
lazyimport so that pyroute2/__init__.py and IPRoute (~100 ms per exec) never load.
Imports allowed here: socket, struct, os, cni_bridge.cni.lazyimport, cni_bridge.kernel.netns; no
ipaddress/json/asyncio/subprocess. Failures raise NetlinkError (an OSError with errno and
the operation); the plugin turns them into CNIError.
"""

import os
import socket
import struct

from cni_bridge.kernel import netns
from cni_bridge.cni.lazyimport import import_submodule

_nl = import_submodule("pyroute2", "netlink")
_rtnl = import_submodule("pyroute2", "netlink.rtnl")
_ifinf = import_submodule("pyroute2", "netlink.rtnl.ifinfmsg")
_ifaddr = import_submodule("pyroute2", "netlink.rtnl.ifaddrmsg")
_rt = import_submodule("pyroute2", "netlink.rtnl.rtmsg")

ifinfmsg = _ifinf.ifinfmsg
ifaddrmsg = _ifaddr.ifaddrmsg
rtmsg = _rt.rtmsg

AF_BRIDGE = 7
NLM_F_REQUEST = _nl.NLM_F_REQUEST
NLM_F_ACK = _nl.NLM_F_ACK
NLM_F_DUMP = _nl.NLM_F_DUMP
NLM_F_CREATE = _nl.NLM_F_CREATE
NLM_F_EXCL = _nl.NLM_F_EXCL
NLM_F_REPLACE = _nl.NLM_F_REPLACE
NLM_F_DUMP_INTR = 0x10
NLM_F_CAPPED = 0x100
NLM_F_ACK_TLVS = 0x200
NLMSG_ERROR = _nl.NLMSG_ERROR
NLMSG_DONE = _nl.NLMSG_DONE
NLA_F_NESTED = _nl.NLA_F_NESTED
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10
NETLINK_EXT_ACK = 11
NETLINK_GET_STRICT_CHK = 12
NLMSGERR_ATTR_MSG = 1

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
RT_TABLE_MAIN = 254
RT_SCOPE_UNIVERSE = 0
RT_SCOPE_LINK = 253
RT_SCOPE_HOST = 254
RTPROT_BOOT = 3
RTN_UNICAST = 1

_HDR = struct.Struct("=IHHII")  # struct nlmsghdr


class NetlinkError(OSError):
    """A request the kernel refused: .errno, .strerror, .op (what we asked), .extack."""

    def __init__(self, errno: int, op: str, extack: str = ""):
        super().__init__(errno, os.strerror(errno))
        self.op = op
        self.extack = extack

    def __str__(self) -> str:
        text = f"{self.op}: {self.strerror}"
        return f"{text} ({self.extack})" if self.extack else text


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
        return isinstance(other, Link) and all(
            getattr(self, n) == getattr(other, n) for n in self.__slots__
        )


class Address:
    """One interface address as RTM_NEWADDR reports it."""

    __slots__ = ("index", "family", "cidr", "flags", "scope")

    def __init__(self, index: int, family: int, cidr: str, flags: int, scope: int):
        self.index, self.family, self.cidr, self.flags, self.scope = (
            index, family, cidr, flags, scope,
        )  # fmt: skip

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


class RouteSocket:
    """A NETLINK_ROUTE socket bound to one network namespace."""

    def __init__(self, sock: socket.socket):
        self._sock = sock
        self._seq = 0

    @classmethod
    def host(cls) -> "RouteSocket":
        """A socket in the calling thread's current netns."""
        return cls(_open_socket())

    @classmethod
    def in_netns(cls, netns_fd: int) -> "RouteSocket":
        """A socket in netns `netns_fd`; it stays there after the thread switches back."""
        with netns.entered(netns_fd):
            return cls(_open_socket())

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> "RouteSocket":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- links ----

    def get_link(self, name: str | None = None, index: int | None = None) -> Link | None:
        """The link with that name or index, or None if there is none."""
        if name is None and index is None:
            raise ValueError("get_link needs a name or an index")
        msg = ifinfmsg()
        msg["index"] = index or 0
        attrs = [("IFLA_EXT_MASK", RTEXT_FILTER_SKIP_STATS)]
        if name is not None:
            attrs.append(("IFLA_IFNAME", name))
        msg["attrs"] = attrs
        try:
            replies = self._request(msg, _rtnl.RTM_GETLINK, 0, f"get link {name or index}")
        except NetlinkError as e:
            if e.errno == 19:  # ENODEV: no link with that name or index
                return None
            raise
        return _link(replies[0]) if replies else None

    def list_links(self) -> list[Link]:
        msg = ifinfmsg()
        msg["attrs"] = [("IFLA_EXT_MASK", RTEXT_FILTER_SKIP_STATS)]
        return [_link(m) for m in self._request(msg, _rtnl.RTM_GETLINK, NLM_F_DUMP, "list links")]

    def create_bridge(
        self,
        name: str,
        mtu: int | None = None,
        vlan_filtering: bool = False,
        default_pvid: int | None = None,
    ) -> Link:
        """Create bridge `name` (down); NetlinkError(EEXIST) if any link has that name.

        Kernels built without CONFIG_BRIDGE_VLAN_FILTERING refuse IFLA_BR_VLAN_FILTERING
        with EOPNOTSUPP even when it is 0, so it is only sent to turn filtering on.
        """
        data = []
        if vlan_filtering:
            data.append(("IFLA_BR_VLAN_FILTERING", 1))
        if default_pvid is not None:
            data.append(("IFLA_BR_VLAN_DEFAULT_PVID", default_pvid))
        info = [("IFLA_INFO_KIND", "bridge")]
        if data:
            info.append(("IFLA_INFO_DATA", {"attrs": data}))
        msg = ifinfmsg()
        msg["attrs"] = [("IFLA_IFNAME", name)]
        if mtu is not None:
            msg["attrs"].append(("IFLA_MTU", mtu))
        msg["attrs"].append(("IFLA_LINKINFO", {"attrs": info}))
        self._request(msg, _rtnl.RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, f"create bridge {name}")
        link = self.get_link(name=name)
        if link is None:  # removed by someone else in between
            raise NetlinkError(19, f"create bridge {name}")
        return link

    def create_veth(
        self,
        name: str,
        peer_name: str,
        peer_netns_fd: int,
        mtu: int | None = None,
        peer_mac: str | None = None,
    ) -> None:
        """Create veth pair: `name` in this socket's netns, `peer_name` inside peer_netns_fd.

        One RTM_NEWLINK: the kernel creates the peer directly in its netns, so no link
        ever appears under the peer's name in ours. EEXIST if either name is taken.
        """
        peer = [("IFLA_IFNAME", peer_name), ("IFLA_NET_NS_FD", peer_netns_fd)]
        if mtu is not None:
            peer.append(("IFLA_MTU", mtu))
        if peer_mac is not None:
            peer.append(("IFLA_ADDRESS", peer_mac))
        msg = ifinfmsg()
        msg["attrs"] = [("IFLA_IFNAME", name)]
        if mtu is not None:
            msg["attrs"].append(("IFLA_MTU", mtu))
        msg["attrs"].append(
            (
                "IFLA_LINKINFO",
                {
                    "attrs": [
                        ("IFLA_INFO_KIND", "veth"),
                        ("IFLA_INFO_DATA", {"attrs": [("VETH_INFO_PEER", {"attrs": peer})]}),
                    ]
                },
            )
        )
        self._request(
            msg, _rtnl.RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, f"create veth {name}/{peer_name}"
        )

    def set_link(
        self,
        index: int,
        *,
        up: bool | None = None,
        master: int | None = None,
        mtu: int | None = None,
        promisc: bool | None = None,
        mac: str | None = None,
        name: str | None = None,
    ) -> None:
        """Change link `index`; None leaves a setting alone, master=0 releases the port."""
        msg = ifinfmsg()
        msg["index"] = index
        flags = change = 0
        # ifi_change selects which ifi_flags bits the kernel applies.
        if up is not None:
            change |= IFF_UP
            flags |= IFF_UP if up else 0
        if promisc is not None:
            change |= IFF_PROMISC
            flags |= IFF_PROMISC if promisc else 0
        msg["flags"], msg["change"] = flags, change
        attrs = []
        if name is not None:
            attrs.append(("IFLA_IFNAME", name))
        if mac is not None:
            attrs.append(("IFLA_ADDRESS", mac))
        if mtu is not None:
            attrs.append(("IFLA_MTU", mtu))
        if master is not None:
            attrs.append(("IFLA_MASTER", master))
        msg["attrs"] = attrs
        self._request(msg, _rtnl.RTM_SETLINK, 0, f"set link {index}")

    def set_bridge_port(
        self,
        index: int,
        *,
        hairpin: bool | None = None,
        isolated: bool | None = None,
        learning: bool | None = None,
    ) -> None:
        """Set bridge-port options of enslaved link `index` (what `bridge link set` does)."""
        attrs = []
        if hairpin is not None:
            attrs.append(("IFLA_BRPORT_MODE", 1 if hairpin else 0))
        if isolated is not None:
            attrs.append(("IFLA_BRPORT_ISOLATED", 1 if isolated else 0))
        if learning is not None:
            attrs.append(("IFLA_BRPORT_LEARNING", 1 if learning else 0))
        if not attrs:
            return
        msg = ifinfmsg()
        msg["family"] = AF_BRIDGE
        msg["index"] = index
        # Without NLA_F_NESTED the kernel reads IFLA_PROTINFO as a bare STP port state
        # (compatibility with old RSTP daemons) and ignores the attributes.
        msg["attrs"] = [("IFLA_PROTINFO", {"attrs": attrs}, NLA_F_NESTED)]
        self._request(msg, _rtnl.RTM_SETLINK, 0, f"set bridge port {index}")

    def bridge_vlan_add(
        self,
        index: int,
        vid: int,
        *,
        pvid: bool = False,
        untagged: bool = False,
        vid_end: int | None = None,
        on_bridge_self: bool = False,
    ) -> None:
        """Add VLAN vid (..vid_end) to port `index`, or to the bridge itself with on_bridge_self."""
        flags = (BRIDGE_VLAN_INFO_PVID if pvid else 0) | (
            BRIDGE_VLAN_INFO_UNTAGGED if untagged else 0
        )
        self._bridge_vlan(_rtnl.RTM_SETLINK, index, vid, vid_end, flags, on_bridge_self, "add")

    def bridge_vlan_del(
        self,
        index: int,
        vid: int,
        *,
        vid_end: int | None = None,
        on_bridge_self: bool = False,
    ) -> None:
        self._bridge_vlan(_rtnl.RTM_DELLINK, index, vid, vid_end, 0, on_bridge_self, "delete")

    def _bridge_vlan(self, mtype, index, vid, vid_end, flags, on_self, verb) -> None:
        spec = []
        if on_self:
            # The bridge device's own VLAN membership: its "self" port, not a master port.
            spec.append(("IFLA_BRIDGE_FLAGS", BRIDGE_FLAGS_SELF))
        if vid_end is None or vid_end == vid:
            spec.append(("IFLA_BRIDGE_VLAN_INFO", {"flags": flags, "vid": vid}))
            what = str(vid)
        else:
            # A range is two entries, begin and end, carrying the same flags.
            begin = {"flags": flags | BRIDGE_VLAN_INFO_RANGE_BEGIN, "vid": vid}
            end = {"flags": flags | BRIDGE_VLAN_INFO_RANGE_END, "vid": vid_end}
            spec += [("IFLA_BRIDGE_VLAN_INFO", begin), ("IFLA_BRIDGE_VLAN_INFO", end)]
            what = f"{vid}-{vid_end}"
        msg = ifinfmsg()
        msg["family"] = AF_BRIDGE
        msg["index"] = index
        msg["attrs"] = [("IFLA_AF_SPEC", {"attrs": spec})]
        self._request(msg, mtype, 0, f"{verb} vlan {what} on link {index}")

    def bridge_vlans(self, index: int) -> list[dict]:
        """VLANs of bridge port (or bridge) `index`: [{"vid", "pvid", "untagged"}], by vid."""
        msg = ifinfmsg()
        msg["family"] = AF_BRIDGE
        msg["attrs"] = [("IFLA_EXT_MASK", RTEXT_FILTER_BRVLAN)]
        # The AF_BRIDGE dump can't be filtered by index (strict checking rejects it).
        result = []
        for m in self._request(msg, _rtnl.RTM_GETLINK, NLM_F_DUMP, "list bridge vlans"):
            if m["index"] != index:
                continue
            spec = m.get_attr("IFLA_AF_SPEC")
            for info in spec.get_attrs("IFLA_BRIDGE_VLAN_INFO") if spec is not None else ():
                result.append(
                    {
                        "vid": info["vid"],
                        "pvid": bool(info["flags"] & BRIDGE_VLAN_INFO_PVID),
                        "untagged": bool(info["flags"] & BRIDGE_VLAN_INFO_UNTAGGED),
                    }
                )
        return sorted(result, key=lambda v: v["vid"])

    def delete_link(self, index: int) -> None:
        """Delete link `index` (a veth takes its peer with it); NetlinkError(ENODEV) if gone."""
        msg = ifinfmsg()
        msg["index"] = index
        self._request(msg, _rtnl.RTM_DELLINK, 0, f"delete link {index}")

    # ---- addresses ----

    def add_address(
        self, index: int, cidr: str, *, nodad: bool = False, broadcast: bool = True
    ) -> None:
        """Add "ip/prefix" to link `index`; NetlinkError(EEXIST) if it is already there.

        broadcast: give IPv4 addresses the subnet's broadcast address, as `ip addr add
        ... brd +` and the Go netlink library do. nodad: skip IPv6 duplicate address
        detection, so the address is usable at once.
        """
        family, packed, prefixlen = _parse_cidr(cidr)
        addr = socket.inet_ntop(family, packed)
        msg = ifaddrmsg()
        msg["family"], msg["prefixlen"], msg["index"] = family, prefixlen, index
        msg["flags"] = IFA_F_NODAD if nodad else 0
        msg["scope"] = RT_SCOPE_UNIVERSE
        msg["attrs"] = [("IFA_LOCAL", addr), ("IFA_ADDRESS", addr)]
        if family == socket.AF_INET and broadcast and prefixlen < 31:
            host_bits = (1 << (32 - prefixlen)) - 1
            brd = struct.unpack("!I", packed)[0] | host_bits
            msg["attrs"].append(("IFA_BROADCAST", socket.inet_ntoa(struct.pack("!I", brd))))
        self._request(
            msg, _rtnl.RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, f"add address {cidr} on link {index}"
        )

    def delete_address(self, index: int, cidr: str) -> None:
        family, packed, prefixlen = _parse_cidr(cidr)
        addr = socket.inet_ntop(family, packed)
        msg = ifaddrmsg()
        msg["family"], msg["prefixlen"], msg["index"] = family, prefixlen, index
        msg["attrs"] = [("IFA_LOCAL", addr), ("IFA_ADDRESS", addr)]
        self._request(msg, _rtnl.RTM_DELADDR, 0, f"delete address {cidr} on link {index}")

    def addresses(self, index: int | None = None, family: int | None = None) -> list[Address]:
        """Addresses, optionally of one link and/or one family, with flags and scope."""
        msg = ifaddrmsg()
        msg["family"] = family or 0
        msg["index"] = index or 0  # strict checking lets the kernel filter by index
        result = []
        for m in self._request(msg, _rtnl.RTM_GETADDR, NLM_F_DUMP, "list addresses"):
            if (index and m["index"] != index) or (family and m["family"] != family):
                continue
            # For IPv4, IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer
            # on point-to-point links. IPv6 only sends IFA_ADDRESS.
            ip = m.get_attr("IFA_LOCAL") or m.get_attr("IFA_ADDRESS")
            flags = m.get_attr("IFA_FLAGS")  # 32-bit flags; ifa_flags holds the low 8
            result.append(
                Address(
                    m["index"], m["family"], f"{ip}/{m['prefixlen']}",
                    m["flags"] if flags is None else flags, m["scope"],
                )  # fmt: skip
            )
        return result

    def list_addresses(
        self, index: int | None = None, family: int | None = None
    ) -> list[tuple[int, str]]:
        """[(ifindex, "ip/prefix")], optionally of one link and/or one family."""
        return [(a.index, a.cidr) for a in self.addresses(index, family)]

    # ---- routes ----

    def add_route(
        self,
        dst: str,
        *,
        gateway: str | None = None,
        index: int | None = None,
        mtu: int | None = None,
        advmss: int | None = None,
        priority: int | None = None,
        table: int | None = None,
        scope: int | None = None,
    ) -> None:
        """Add a unicast route to dst ("0.0.0.0/0", "::/0", a cidr); EEXIST if present.

        scope defaults to universe even without a gateway, as the Go plugins' routes do.
        """
        msg = self._route_msg(dst, gateway, index, priority, table)
        msg["proto"] = RTPROT_BOOT
        msg["scope"] = RT_SCOPE_UNIVERSE if scope is None else scope
        msg["type"] = RTN_UNICAST
        metrics = []
        if mtu is not None:
            metrics.append(("RTAX_MTU", mtu))
        if advmss is not None:
            metrics.append(("RTAX_ADVMSS", advmss))
        if metrics:
            msg["attrs"].append(("RTA_METRICS", {"attrs": metrics}))
        self._request(msg, _rtnl.RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, f"add route {dst}")

    def delete_route(
        self,
        dst: str,
        *,
        gateway: str | None = None,
        index: int | None = None,
        priority: int | None = None,
        table: int | None = None,
    ) -> None:
        """Delete the first route matching the given keys; ESRCH if there is none."""
        msg = self._route_msg(dst, gateway, index, priority, table)
        msg["scope"] = 255  # RT_SCOPE_NOWHERE: match any scope
        self._request(msg, _rtnl.RTM_DELROUTE, 0, f"delete route {dst}")

    def _route_msg(self, dst, gateway, index, priority, table):
        family, packed, prefixlen = _parse_cidr(dst)
        msg = rtmsg()
        msg["family"], msg["dst_len"] = family, prefixlen
        table = RT_TABLE_MAIN if table is None else table
        # rtm_table is one byte; larger ids travel in RTA_TABLE (252 = RT_TABLE_COMPAT).
        msg["table"] = table if table < 256 else 252
        attrs = [("RTA_TABLE", table)]
        if prefixlen:
            attrs.append(("RTA_DST", socket.inet_ntop(family, packed)))
        if gateway is not None:
            attrs.append(("RTA_GATEWAY", gateway))
        if index is not None:
            attrs.append(("RTA_OIF", index))
        if priority is not None:
            attrs.append(("RTA_PRIORITY", priority))
        msg["attrs"] = attrs
        return msg

    def list_routes(
        self, family: int, index: int | None = None, table: int | None = None
    ) -> list[dict]:
        """Routes of one family (all tables unless `table`), optionally via link `index`.

        Each: {"dst": "ip/prefix", "gw": str|None, "oif": int|None, "table": int,
        "priority": int|None, "scope": int, "proto": int, "type": int, "mtu", "advmss"}.
        """
        msg = rtmsg()
        msg["family"] = family
        msg["table"] = 0
        msg["scope"] = 0
        msg["type"] = 0
        msg["proto"] = 0
        attrs = []
        if index:
            attrs.append(("RTA_OIF", index))
        if table is not None:
            attrs.append(("RTA_TABLE", table))
        msg["attrs"] = attrs
        default = "0.0.0.0/0" if family == socket.AF_INET else "::/0"
        routes = []
        for m in self._request(msg, _rtnl.RTM_GETROUTE, NLM_F_DUMP, "list routes"):
            rt_table = m.get_attr("RTA_TABLE") or m["table"]
            oif = m.get_attr("RTA_OIF")
            if (index and oif != index) or (table is not None and rt_table != table):
                continue
            dst = m.get_attr("RTA_DST")
            metrics = m.get_attr("RTA_METRICS")
            routes.append(
                {
                    "dst": f"{dst}/{m['dst_len']}" if dst else default,
                    "gw": m.get_attr("RTA_GATEWAY"),
                    "oif": oif,
                    "table": rt_table,
                    "priority": m.get_attr("RTA_PRIORITY"),
                    "scope": m["scope"],
                    "proto": m["proto"],
                    "type": m["type"],
                    "mtu": metrics.get_attr("RTAX_MTU") if metrics is not None else None,
                    "advmss": metrics.get_attr("RTAX_ADVMSS") if metrics is not None else None,
                }
            )
        return routes

    # ---- transport ----

    def _request(self, msg, mtype: int, flags: int, op: str) -> list:
        """Send `msg`; return the decoded replies. Raises NetlinkError on a kernel error.

        Every non-dump request carries NLM_F_ACK, so its answer ends with an NLMSG_ERROR
        (0 = success); a dump ends with NLMSG_DONE. Replies are decoded with msg's class.
        """
        dump = flags & NLM_F_DUMP == NLM_F_DUMP
        msg["header"] = {
            "type": mtype,
            "flags": NLM_F_REQUEST | flags | (0 if dump else NLM_F_ACK),
            "sequence_number": 0,
            "pid": 0,
        }
        msg.encode()
        for _ in range(4):
            replies, interrupted = self._exchange(msg.data, type(msg), op)
            # NLM_F_DUMP_INTR: the table changed while the kernel was dumping it, so the
            # answer may miss or repeat entries; ask again.
            if not interrupted:
                return replies
        raise NetlinkError(4, op, "dump kept being interrupted")  # EINTR

    def _exchange(self, data: bytearray, cls, op: str) -> tuple[list, bool]:
        self._seq += 1
        seq = self._seq
        struct.pack_into("=I", data, 8, seq)  # nlmsg_seq
        self._sock.send(data)
        replies = []
        interrupted = False
        while True:
            # Dump batches are at most 32 KiB; a bigger single reply would be cut short.
            buf, _, msg_flags, _ = self._sock.recvmsg(65536)
            if msg_flags & socket.MSG_TRUNC:
                raise NetlinkError(90, op, "reply larger than 64 KiB")  # EMSGSIZE
            offset = 0
            while offset + 16 <= len(buf):
                length, rtype, rflags, rseq, _ = _HDR.unpack_from(buf, offset)
                if length < 16:
                    raise NetlinkError(71, op, "malformed netlink reply")  # EPROTO
                if rseq != seq:  # a late answer to an earlier, abandoned request
                    offset += (length + 3) & ~3
                    continue
                if rtype == NLMSG_ERROR:
                    err = -struct.unpack_from("=i", buf, offset + 16)[0]
                    if err:
                        raise NetlinkError(err, op, _extack(buf, offset, length, rflags))
                    return replies, interrupted
                if rtype == NLMSG_DONE:
                    # A dump that failed midway reports the error in NLMSG_DONE's payload.
                    if length >= 20:
                        err = -struct.unpack_from("=i", buf, offset + 16)[0]
                        if err:
                            raise NetlinkError(err, op, _extack(buf, offset, length, rflags))
                    return replies, interrupted
                interrupted |= bool(rflags & NLM_F_DUMP_INTR)
                reply = cls(buf[offset : offset + length])
                reply.decode()
                replies.append(reply)
                offset += (length + 3) & ~3


def _open_socket() -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 0)
    try:
        # Errors come back with only the failing request's header (CAP_ACK) plus the
        # kernel's explanation (EXT_ACK); strict checking makes the kernel honour
        # dump filters (ifindex for addresses, oif/table for routes).
        for opt in (NETLINK_CAP_ACK, NETLINK_EXT_ACK, NETLINK_GET_STRICT_CHK):
            try:
                sock.setsockopt(SOL_NETLINK, opt, 1)
            except OSError:  # older kernel: fine, we filter in userspace anyway
                pass
        sock.bind((0, 0))
    except BaseException:
        sock.close()
        raise
    return sock


def _extack(buf: bytes, offset: int, length: int, flags: int) -> str:
    """The kernel's NLMSGERR_ATTR_MSG text from an error message, or ""."""
    if not flags & NLM_F_ACK_TLVS:
        return ""
    # Payload: int error, then the request's header (and its body unless CAPPED).
    pos = offset + 20
    pos += 16 if flags & NLM_F_CAPPED else _HDR.unpack_from(buf, pos)[0]
    end = offset + length
    while pos + 4 <= end:
        alen, atype = struct.unpack_from("=HH", buf, pos)
        if alen < 4:
            break
        if atype == NLMSGERR_ATTR_MSG:
            return bytes(buf[pos + 4 : pos + alen]).rstrip(b"\0").decode(errors="replace")
        pos += (alen + 3) & ~3
    return ""


def _parse_cidr(cidr: str) -> tuple[int, bytes, int]:
    """ "10.1.0.5/24" -> (AF_INET, packed ip, 24). ValueError if malformed."""
    ip, sep, plen = cidr.partition("/")
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    bits = 128 if family == socket.AF_INET6 else 32
    try:
        packed = socket.inet_pton(family, ip)
        prefixlen = int(plen) if sep else bits
    except (OSError, ValueError):
        raise ValueError(f"invalid address {cidr!r}") from None
    if not 0 <= prefixlen <= bits:
        raise ValueError(f"invalid prefix length in {cidr!r}")
    return family, packed, prefixlen


def _link(m) -> Link:
    """Link from a decoded RTM_NEWLINK message."""
    flags = m["flags"]
    info = m.get_attr("IFLA_LINKINFO")
    kind = slave_kind = vlan_filtering = default_pvid = None
    hairpin = isolated = learning = None
    if info is not None:
        kind = info.get_attr("IFLA_INFO_KIND")
        data = info.get_attr("IFLA_INFO_DATA")
        if kind == "bridge" and data is not None:
            vlan_filtering = bool(data.get_attr("IFLA_BR_VLAN_FILTERING"))
            default_pvid = data.get_attr("IFLA_BR_VLAN_DEFAULT_PVID")
        slave_kind = info.get_attr("IFLA_INFO_SLAVE_KIND")
        sdata = info.get_attr("IFLA_INFO_SLAVE_DATA")
        if slave_kind == "bridge" and sdata is not None:
            hairpin = _flag(sdata.get_attr("IFLA_BRPORT_MODE"))
            isolated = _flag(sdata.get_attr("IFLA_BRPORT_ISOLATED"))
            learning = _flag(sdata.get_attr("IFLA_BRPORT_LEARNING"))
    return Link(
        index=m["index"],
        name=m.get_attr("IFLA_IFNAME"),
        kind=kind,
        mac=(m.get_attr("IFLA_ADDRESS") or "").lower() or None,
        mtu=m.get_attr("IFLA_MTU"),
        master=m.get_attr("IFLA_MASTER") or None,
        up=bool(flags & IFF_UP),
        oper_up=m.get_attr("IFLA_OPERSTATE") == "UP",
        promisc=bool(flags & IFF_PROMISC),
        vlan_filtering=vlan_filtering,
        default_pvid=default_pvid,
        slave_kind=slave_kind,
        hairpin=hairpin,
        isolated=isolated,
        learning=learning,
        peer_index=m.get_attr("IFLA_LINK"),
        link_netnsid=m.get_attr("IFLA_LINK_NETNSID"),
    )


def _flag(value) -> bool | None:
    return None if value is None else bool(value)

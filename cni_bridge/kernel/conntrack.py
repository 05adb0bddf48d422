"""Connection tracking: forget the entries that would carry old traffic past a new rule.

A UDP "connection" lives in conntrack for as long as its client keeps sending. When a
host port is mapped to a new container (or unmapped), a client that keeps its source port
would stay on the entry made for the old mapping and never reach the new one. So portmap
deletes the entries whose original destination is the host port on one of the node's own
addresses, after its rules are in place: the next packet makes a fresh entry that the
rules see. Connections the node only forwards (a container's own DNS queries to a server
elsewhere, say) keep theirs.

The kernel filters the dump (kernel/nfnl.conntrack_dump_request) and every entry is
deleted by its own tuple and id, one request each, never by a bare delete (that would
flush the whole table). Imports: kernel/netlink and kernel/nfnl only.
"""

from _socket import AF_INET, AF_INET6, inet_pton

from cni_bridge.kernel import nfnl
from cni_bridge.kernel.netlink import NetlinkError, NetlinkSocket

ENOENT = 2
_DELETES_PER_DATAGRAM = 256
_socket = None


def _conntrack_socket() -> NetlinkSocket:
    global _socket
    if _socket is None:
        _socket = NetlinkSocket.open(nfnl.NETLINK_NETFILTER)
    return _socket


def delete_entries_to_port(family: int, protocol: int, port: int, destinations: set[str] | None = None) -> int:
    """Delete the entries of `family` (4 or 6) whose original direction is `protocol` to
    destination port `port`, and to one of `destinations` (addresses; None: any); return
    how many went. Raises NetlinkError or OSError."""
    nfproto = nfnl.NFPROTO_IPV4 if family == 4 else nfnl.NFPROTO_IPV6
    address_family = AF_INET if family == 4 else AF_INET6
    wanted = None if destinations is None else {inet_pton(address_family, d) for d in destinations}
    dst_name = "CTA_IP_V4_DST" if family == 4 else "CTA_IP_V6_DST"
    sock = _conntrack_socket()
    replies = sock.request(nfnl.conntrack_dump_request(nfproto, protocol, port),
                           f"conntrack: list IPv{family} entries to port {port}")
    requests = []
    for reply in replies:
        attrs = nfnl.CT_MSG.decode(reply)[1]
        orig = attrs.get("CTA_TUPLE_ORIG") or {}
        proto = orig.get("CTA_TUPLE_PROTO") or {}
        # The kernel filtered already, unless it is too old to know the filter.
        if proto.get("CTA_PROTO_NUM") != protocol or proto.get("CTA_PROTO_DST_PORT") != port:
            continue
        destination = (orig.get("CTA_TUPLE_IP") or {}).get(dst_name)
        if wanted is not None and (destination is None or inet_pton(address_family, destination) not in wanted):
            continue
        requests.append((nfnl.conntrack_delete_request(nfproto, orig, attrs.get("CTA_ID"), attrs.get("CTA_ZONE")),
                         f"conntrack: delete an IPv{family} entry to port {port}"))
    deleted = 0
    for start in range(0, len(requests), _DELETES_PER_DATAGRAM):
        for outcome in sock.exchange(requests[start:start + _DELETES_PER_DATAGRAM]):
            if isinstance(outcome, NetlinkError):
                if outcome.errno != ENOENT:  # gone meanwhile (timed out, or deleted by another)
                    raise outcome
            else:
                deleted += 1
    return deleted

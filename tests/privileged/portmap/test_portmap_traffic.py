"""Who reaches a published port, by real traffic: the reference's five integration cases on
our nftables rules, then the neighbours, the node's localhost, hostIP, IPv6, protocols,
forwarded traffic. Each server answers with its own name and the address it saw."""

import pytest

from portmap_rig import NODE4, NODE6, OUTSIDE4, OUTSIDE6, REMOTE4, REMOTE6, address_of, gateway_of, sh, tcp, udp

pytestmark = pytest.mark.privileged


@pytest.fixture
def web(rig):
    """A container `web` publishing tcp 18300 -> 8080 on network 1, serving on 8080."""
    net = rig.network()
    ns = rig.container("web")
    result = rig.attach(net, ns, [tcp(18300, 8080)])
    rig.serve(ns, "web", 8080)
    return net, ns, result


# ---- the reference's integration cases ---------------------------------------------------


def test_container_address_directly(rig, web):
    _, _, result = web
    assert rig.ask(rig.outside, address_of(result, 4), 8080) == f"web {OUTSIDE4}"


def test_node_address_from_another_namespace(rig, web):
    # The client's own address arrives: DNAT only, no masquerade for outside traffic.
    assert rig.ask(rig.outside, NODE4, 18300) == f"web {OUTSIDE4}"


def test_localhost_from_the_node(rig, web):
    _, _, result = web
    # 127.0.0.1 is masqueraded to the bridge's address, the way back to the node.
    assert rig.ask(None, "127.0.0.1", 18300) == f"web {gateway_of(result, 4)}"
    assert rig.ask(None, NODE4, 18300).startswith("web ")
    bridge = rig.network().plugins[0]["bridge"]
    assert rig.read_sysctl(f"net/ipv4/conf/{bridge}/route_localnet") == "1"
    assert rig.read_sysctl("net/ipv4/conf/pmup0/route_localnet") == "0"  # on the way to the container only


def test_hairpin_from_the_target_container(rig, web):
    _, ns, result = web
    # Masqueraded, so that the reply comes back through the node's NAT (hairpinMode on).
    assert rig.ask(ns, NODE4, 18300) == f"web {gateway_of(result, 4)}"


def test_udp_follows_a_new_container_on_the_same_host_port(rig):
    net = rig.network()
    first, second = rig.container("u1"), rig.container("u2")
    rig.attach(net, first, [udp(18301, 5353)])
    rig.serve(first, "first", 5353, "udp")
    # The client keeps its source port, so it stays on one conntrack entry until that goes.
    assert rig.ask(rig.outside, NODE4, 18301, "udp", sport=18399) == f"first {OUTSIDE4}"
    rig.detach(net, first, [udp(18301, 5353)])
    rig.attach(net, second, [udp(18301, 5353)])
    rig.serve(second, "second", 5353, "udp")
    assert rig.ask(rig.outside, NODE4, 18301, "udp", sport=18399) == f"second {OUTSIDE4}"


# ---- neighbours, localhost, hostIP, IPv6 ---------------------------------------------------


@pytest.mark.parametrize("bridge_nf", ["0", "1"])
def test_a_neighbour_reaches_the_mapping_through_node_and_gateway(rig, web, bridge_nf):
    """With or without bridged frames passing the IP hooks: the neighbour's connection is
    masqueraded, so the reply cannot go back over the bridge untranslated."""
    rig.write_sysctl("net/bridge/bridge-nf-call-iptables", bridge_nf)
    rig.write_sysctl("net/bridge/bridge-nf-call-ip6tables", bridge_nf)
    net, _, result = web
    neighbour = rig.container("nb")
    own = address_of(rig.attach(net, neighbour), 4)
    gateway = gateway_of(result, 4)
    assert rig.ask(neighbour, NODE4, 18300) == f"web {gateway}"
    assert rig.ask(neighbour, gateway, 18300) == f"web {gateway}"
    assert rig.ask(neighbour, gateway_of(result, 6), 18300) == f"web {gateway_of(result, 6)}"
    # Directly, the neighbour is seen as itself: not DNATed, so not masqueraded.
    assert rig.ask(neighbour, address_of(result, 4), 8080) == f"web {own}"


def test_a_container_cannot_reach_a_localhost_service_of_the_node(rig, web):
    """route_localnet lets 127.0.0.0/8 in on the bridge; the guard drops what was not DNATed."""
    net, _, result = web
    rig.serve(None, "node-private", 18310, bind="127.0.0.1")
    attacker = rig.container("atk")
    rig.attach(net, attacker)
    route_localhost_via_gateway(attacker, gateway_of(result, 4))
    assert rig.ask(attacker, "127.0.0.1", 18310) == ""
    assert rig.ask(None, "127.0.0.1", 18310) == "node-private 127.0.0.1"  # the node itself still reaches it
    assert rig.ask(None, "127.0.0.1", 18300).startswith("web ")


def route_localhost_via_gateway(ns, gateway: str) -> None:
    """What a hostile container can do in its own namespace: send 127.0.0.1 to the node."""
    # Without 127.0.0.1 of its own (its local routes go with it), replies from 127.0.0.1
    # are not refused as coming from a local address.
    ns.ip("addr", "del", "127.0.0.1/8", "dev", "lo")
    ns.ip("route", "add", "127.0.0.1/32", "via", gateway, "dev", "eth0")
    sh("nsenter", f"--net={ns.path}", "sysctl", "-q", "-w", "net.ipv4.conf.eth0.route_localnet=1")


def test_host_ip_binds_one_of_two_node_addresses(rig):
    second = rig.second_address()
    net = rig.network()
    ns = rig.container("web")
    rig.attach(net, ns, [tcp(18302, 8080, host_ip=second)])
    rig.serve(ns, "web", 8080)
    rig.serve(None, "node", 18302)  # the node's own service on that port, every address
    assert rig.ask(rig.outside, second, 18302) == f"web {OUTSIDE4}"
    assert rig.ask(rig.outside, NODE4, 18302) == f"node {OUTSIDE4}"  # the other address is not mapped
    assert rig.ask(rig.outside, NODE6, 18302) == f"node {OUTSIDE6}"  # nor is IPv6


def test_ipv6(rig):
    net = rig.network()
    ns = rig.container("web")
    result = rig.attach(net, ns, [tcp(18303, 8080)])
    rig.serve(ns, "web", 8080)
    assert rig.ask(rig.outside, NODE6, 18303) == f"web {OUTSIDE6}"
    assert rig.ask(rig.outside, NODE4, 18303) == f"web {OUTSIDE4}"
    assert rig.ask(ns, NODE6, 18303) == f"web {gateway_of(result, 6)}"  # hairpin, masqueraded
    assert rig.ask(None, NODE6, 18303).startswith("web ")
    # A wildcard of one family maps that family only.
    other = rig.container("v4only")
    rig.attach(net, other, [tcp(18304, 8080, host_ip="0.0.0.0")])
    rig.serve(other, "v4only", 8080)
    assert rig.ask(rig.outside, NODE4, 18304) == f"v4only {OUTSIDE4}"
    assert rig.ask(rig.outside, NODE6, 18304) == ""


def test_tcp_and_udp_on_the_same_port(rig):
    net = rig.network()
    tcp_ns, udp_ns = rig.container("t"), rig.container("u")
    rig.attach(net, tcp_ns, [tcp(18305, 7000)])
    rig.attach(net, udp_ns, [udp(18305, 7000)])
    rig.serve(tcp_ns, "tcp-one", 7000)
    rig.serve(udp_ns, "udp-one", 7000, "udp")
    assert rig.ask(rig.outside, NODE4, 18305) == f"tcp-one {OUTSIDE4}"
    assert rig.ask(rig.outside, NODE4, 18305, "udp") == f"udp-one {OUTSIDE4}"
    rig.detach(net, tcp_ns, [tcp(18305, 7000)])
    assert rig.ask(rig.outside, NODE4, 18305) == ""
    assert rig.ask(rig.outside, NODE4, 18305, "udp") == f"udp-one {OUTSIDE4}"


def test_forwarded_traffic_to_another_address_is_never_captured(rig):
    """The same port on a machine behind the node: forwarded, not DNATed to the container,
    even with a hostIP that is that machine's address."""
    remote = rig.remote()
    net = rig.network()
    ns = rig.container("web")
    rig.attach(net, ns, [tcp(18306, 8080), tcp(18307, 8080, host_ip=REMOTE4), tcp(18307, 8080, host_ip=REMOTE6)])
    rig.serve(ns, "web", 8080)
    rig.serve(remote, "remote", 18306)
    rig.serve(remote, "remote", 18307)
    for address in (REMOTE4, REMOTE6):
        client = OUTSIDE4 if ":" not in address else OUTSIDE6
        assert rig.ask(rig.outside, address, 18306) == f"remote {client}"
        assert rig.ask(rig.outside, address, 18307) == f"remote {client}"
    assert rig.ask(rig.outside, NODE4, 18306) == f"web {OUTSIDE4}"

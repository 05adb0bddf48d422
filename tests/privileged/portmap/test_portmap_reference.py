"""The same network through our portmap and through the reference portmap (Debian's
containernetworking-plugins, its default iptables backend), each on a node of its own,
behind our bridge: who reaches a published port, and as whom, is the same. The one
difference is on purpose: a container that sends 127.0.0.1 to its gateway reaches the
node's localhost services through the reference's route_localnet, and not through ours."""

import pytest

from portmap_rig import NODE4, NODE6, REMOTE4, REMOTE6, address_of, gateway_of, tcp, udp
from test_portmap_traffic import route_localhost_via_gateway

pytestmark = pytest.mark.privileged

PORT, UDP_PORT = 18350, 18351


def reachability(rig, runtime) -> dict[str, str]:
    """Every path to a published TCP and UDP port, and the answers (server name, the client
    address it saw; "" when nothing answered)."""
    remote = rig.remote()
    net = rig.network()
    web, neighbour = rig.container("web"), rig.container("nb")
    result = rig.attach(net, web, [tcp(PORT, 8080), udp(UDP_PORT, 5353)], runtime=runtime)
    rig.attach(net, neighbour, runtime=runtime)
    rig.serve(web, "web", 8080)
    rig.serve(web, "web", 5353, "udp")
    rig.serve(remote, "remote", PORT)
    gateway4, gateway6 = gateway_of(result, 4), gateway_of(result, 6)
    return {
        "container address": rig.ask(rig.outside, address_of(result, 4), 8080),
        "node address from outside": rig.ask(rig.outside, NODE4, PORT),
        "node IPv6 address from outside": rig.ask(rig.outside, NODE6, PORT),
        "udp from outside": rig.ask(rig.outside, NODE4, UDP_PORT, "udp"),
        "127.0.0.1 from the node": rig.ask(None, "127.0.0.1", PORT),
        "node address from the node": rig.ask(None, NODE4, PORT),
        "hairpin": rig.ask(web, NODE4, PORT),
        "hairpin IPv6": rig.ask(web, NODE6, PORT),
        "neighbour to the node address": rig.ask(neighbour, NODE4, PORT),
        "neighbour to the gateway": rig.ask(neighbour, gateway4, PORT),
        "neighbour to the IPv6 gateway": rig.ask(neighbour, gateway6, PORT),
        "forwarded to another machine": rig.ask(rig.outside, REMOTE4, PORT),
        "forwarded to another machine, IPv6": rig.ask(rig.outside, REMOTE6, PORT),
    }


def localhost_attack(rig, runtime) -> str:
    """What a container that routes 127.0.0.1 to its gateway gets from a node service bound
    to 127.0.0.1 (with a published port on the network, so route_localnet is on)."""
    net = rig.network()
    web, attacker = rig.container("web"), rig.container("atk")
    result = rig.attach(net, web, [tcp(PORT, 8080)], runtime=runtime)
    rig.attach(net, attacker, runtime=runtime)
    rig.serve(None, "node-private", 18352, bind="127.0.0.1")
    route_localhost_via_gateway(attacker, gateway_of(result, 4))
    return rig.ask(attacker, "127.0.0.1", 18352)


def test_the_same_reachability_as_the_reference(make_rig, bin_dir, reference_dir):
    ours_rig, theirs_rig = make_rig(), make_rig()
    ours = reachability(ours_rig, ours_rig.runtime)
    theirs = reachability(theirs_rig, theirs_rig.runtime_for([reference_dir, bin_dir], "cache-reference"))
    assert ours == theirs
    # Not a comparison of two failures: every path works, and forwarded traffic is left alone.
    assert all(answer.startswith("web ") for path, answer in ours.items() if not path.startswith("forwarded")), ours
    assert all(answer.startswith("remote ") for path, answer in ours.items() if path.startswith("forwarded")), ours


def test_only_the_reference_opens_the_nodes_localhost(make_rig, bin_dir, reference_dir):
    ours_rig, theirs_rig = make_rig(), make_rig()
    assert localhost_attack(ours_rig, ours_rig.runtime) == ""
    reference = theirs_rig.runtime_for([reference_dir, bin_dir], "cache-reference")
    assert localhost_attack(theirs_rig, reference).startswith("node-private ")

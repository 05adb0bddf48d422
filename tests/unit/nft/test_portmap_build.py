"""The portmap feature's pure builders (cni_bridge.nft.portmap): no root, no kernel. The keys
are checked byte for byte against what the kernel stores (a concatenation pads each field
to 4 bytes; ports and addresses in network order), as a dump of the real maps shows."""

import pytest

from cni_bridge.nft import portmap
from cni_bridge.nft.portmap import Mapping
from cni_bridge.nft.table import Element

KEY = "net/c1/eth0"
WILD4 = Mapping(4, None, "tcp", 8080, "10.88.0.5", 80)
HOST4 = Mapping(4, "192.168.1.2", "udp", 53, "10.88.0.5", 5353)
WILD6 = Mapping(6, None, "sctp", 9000, "fd00::5", 9)
HOST6 = Mapping(6, "2001:db8::1", "tcp", 443, "fd00::5", 8443)


def test_dnat_elements_as_the_kernel_stores_them():
    assert portmap.dnat_element(KEY, WILD4) == Element(
        "portmap-any4", bytes.fromhex("06000000" "1f900000"), bytes.fromhex("0a580005" "00500000"), KEY)
    assert portmap.dnat_element(KEY, HOST4) == Element(
        "portmap-hostip4", bytes.fromhex("c0a80102" "11000000" "00350000"), bytes.fromhex("0a580005" "14e90000"), KEY)
    assert portmap.dnat_element(KEY, WILD6) == Element(
        "portmap-any6", bytes.fromhex("84000000" "23280000"),
        bytes.fromhex("fd000000000000000000000000000005" "00090000"), KEY)
    assert portmap.dnat_element(KEY, HOST6).key == bytes.fromhex("20010db8000000000000000000000001" "06000000" "01bb0000")


def test_condition_elements_share_the_dnat_keys():
    for mapping in (WILD4, HOST4, WILD6, HOST6):
        jump = portmap.condition_element(KEY, mapping, "portmap-cond-x")
        assert jump.key == mapping.dnat_key() and jump.data == ("jump", "portmap-cond-x") and jump.comment == KEY
    assert portmap.condition_element(KEY, WILD4, "c").set == "portmap-jump-any4"
    assert portmap.condition_element(KEY, HOST6, "c").set == "portmap-jump-hostip6"


def test_masquerade_elements_are_intervals_of_their_source_prefix():
    subnet, localhost = portmap.masquerade_elements(KEY, WILD4, [("10.88.0.5", 16), ("127.0.0.0", 8)])
    tail = "0a580005" "06000000" "00500000"  # container address . tcp . container port
    assert subnet == Element("portmap-masq4", bytes.fromhex("0a580000" + tail), None, KEY,
                             key_end=bytes.fromhex("0a58ffff" + tail))
    assert (localhost.key, localhost.key_end) == (bytes.fromhex("7f000000" + tail), bytes.fromhex("7fffffff" + tail))
    [everyone] = portmap.masquerade_elements(KEY, WILD6, [("::", 0)])
    assert everyone.set == "portmap-masq6"
    assert everyone.key[:16] == bytes(16) and everyone.key_end[:16] == b"\xff" * 16
    assert portmap.masquerade_elements(KEY, WILD4, []) == []


@pytest.mark.parametrize("mapping", [WILD4, HOST4, WILD6, HOST6])
def test_host_port_of_reads_back_family_protocol_and_port(mapping):
    expected = (mapping.family, mapping.protocol, mapping.host_port)
    assert portmap.host_port_of(portmap.dnat_element(KEY, mapping)) == expected
    assert portmap.host_port_of(portmap.condition_element(KEY, mapping, "c")) == expected
    assert portmap.host_port_of(portmap.masquerade_elements(KEY, mapping, [("10.0.0.0", 8)])[0]) is None


def test_mappings_describe_themselves():
    assert str(WILD4) == "tcp 8080 on every IPv4 address -> 10.88.0.5:80"
    assert str(HOST6) == "tcp 443 on 2001:db8::1 -> [fd00::5]:8443"


# ---- conditions ----------------------------------------------------------------------------


def _match(op, left, right):
    return {"match": {"op": op, "left": left, "right": right}}


SADDR4 = {"payload": {"protocol": "ip", "field": "saddr"}}
IIFNAME = {"meta": {"key": "iifname"}}


@pytest.mark.parametrize("tokens, family, expected", [
    (["ip", "saddr", "10.0.0.1"], 4, [_match("==", SADDR4, "10.0.0.1")]),
    (["ip saddr != 10.1.2.3/8"], 4, [_match("!=", SADDR4, {"prefix": {"addr": "10.0.0.0", "len": 8}})]),
    (["ip", "saddr", "{10.0.0.1,", "192.168.0.0/16}"], 4,
     [_match("==", SADDR4, {"set": ["10.0.0.1", {"prefix": {"addr": "192.168.0.0", "len": 16}}]})]),
    (["iifname", '"eth0"', "ip", "daddr", "!=", "10.0.0.9"], 4,
     [_match("==", IIFNAME, "eth0"), _match("!=", {"payload": {"protocol": "ip", "field": "daddr"}}, "10.0.0.9")]),
    (["meta iifname != { eth0, eth1 }"], 6, [_match("!=", IIFNAME, {"set": ["eth0", "eth1"]})]),
    (["ip6", "daddr", "fd00::/8"], 6,
     [_match("==", {"payload": {"protocol": "ip6", "field": "daddr"}}, {"prefix": {"addr": "fd00::", "len": 8}})]),
    ([], 4, []),
])
def test_conditions_become_match_expressions(tokens, family, expected):
    assert portmap.parse_conditions(tokens, family) == expected


@pytest.mark.parametrize("tokens, family, message", [
    (["-s", "10.0.0.1"], 4, "iptables syntax"),
    (["!", "-d", "10.0.0.1"], 4, "iptables syntax"),
    (["ip", "saddr", "10.0.0.1", "accept"], 4, "'accept' is not understood"),
    (["counter"], 4, "'counter' is not understood"),
    (["ip saddr 10.0.0.1; flush ruleset"], 4, "'10.0.0.1;' is not an IPv4 address"),
    (["ip", "saddr"], 4, "lacks its value"),
    (["ip", "saddr", "fd00::1"], 4, "is not an IPv4 address"),
    (["ip", "saddr", "10.0.0.0/33"], 4, "is not an IPv4 address"),
    (["ip", "saddr", "10.0.0.0/x"], 4, "is not an IPv4 address"),
    (["ip6", "saddr", "fd00::1"], 4, "does not match IPv4 packets"),
    (["ip", "saddr", "{", "10.0.0.1"], 4, "not closed"),
    (["ip", "saddr", "{", "}"], 4, "empty"),
    (["iifname", "eth*"], 4, "wildcards are not supported"),
    (["iifname", "a" * 16], 4, "not an interface name"),
    (["iifname", 'eth"0'], 4, "is not an interface name"),
])
def test_conditions_that_could_do_more_than_match_are_refused(tokens, family, message):
    with pytest.raises(ValueError, match=message.replace("*", r"\*").replace("(", r"\(")):
        portmap.parse_conditions(tokens, family)


def test_condition_chains_are_named_after_their_conditions():
    one = portmap.condition_chain(4, portmap.parse_conditions(["ip saddr 10.0.0.1"], 4))
    assert one == portmap.condition_chain(4, portmap.parse_conditions(["ip", "saddr", "10.0.0.1"], 4))
    assert one != portmap.condition_chain(4, portmap.parse_conditions(["ip saddr 10.0.0.2"], 4))
    assert one.startswith("portmap-cond-") and portmap.is_condition_chain(one)
    assert all(c.isalnum() or c in "-_." for c in one)
    assert not portmap.is_condition_chain("portmap-prerouting")


# ---- the layout ----------------------------------------------------------------------------


def test_layout_base_chains_and_their_tags():
    layout = portmap.layout()
    assert layout.family == "inet"
    assert {name: (c.get("type"), c.get("hook"), c.get("prio")) for name, c in layout.chains.items()} == {
        "portmap-prerouting": ("nat", "prerouting", -100), "portmap-output": ("nat", "output", -100),
        "portmap-postrouting": ("nat", "postrouting", 100), "portmap-input": ("filter", "input", 0),
    }
    tags = layout.tags("portmap-prerouting")
    assert tags == layout.tags("portmap-output") and len(tags) == len(set(tags)) == 8
    assert all(tag.startswith(portmap.TAG) for chain in layout.chains for tag in layout.tags(chain))
    # The DNAT maps are written in nft syntax (their data is a concatenation); the rest is JSON.
    assert [line.split()[4] for line in layout.syntax_objects] == [
        "portmap-hostip4", "portmap-any4", "portmap-hostip6", "portmap-any6"]
    assert "type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service" in layout.syntax_objects[0]
    named = {body["name"] for item in layout.objects for kind, body in item.items() if kind in ("set", "map")}
    assert named == set(portmap.SETS) - set(portmap.DNAT_MAPS)


def test_every_translation_is_for_local_destinations_and_one_family():
    for chain in ("portmap-prerouting", "portmap-output"):
        for _, rule in portmap.layout().rules[chain]:
            exprs = rule["expr"]
            nfproto, fib = exprs[0]["match"], exprs[1]["match"]
            assert nfproto["left"] == {"meta": {"key": "nfproto"}} and nfproto["right"] in ("ipv4", "ipv6")
            assert fib == {"op": "==", "left": {"fib": {"result": "type", "flags": ["daddr"]}}, "right": "local"}
            if nfproto["right"] == "ipv6":  # ::1 cannot be translated: no route_localnet for IPv6
                assert exprs[2]["match"] == {"op": "!=", "left": {"payload": {"protocol": "ip6", "field": "daddr"}},
                                             "right": "::1"}


def test_the_localhost_guard():
    [(_, rule)] = portmap.layout().rules["portmap-input"]
    assert rule["expr"] == [
        {"match": {"op": "!=", "left": {"meta": {"key": "iifname"}}, "right": "lo"}},
        {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}},
                   "right": {"prefix": {"addr": "127.0.0.0", "len": 8}}}},
        {"match": {"op": "!", "left": {"ct": {"key": "status"}}, "right": "dnat"}},
        {"drop": None},
    ]


def test_masquerade_only_what_was_dnated():
    for family, (_, rule) in zip((4, 6), portmap.layout().rules["portmap-postrouting"]):
        assert rule["expr"][0] == {"match": {"op": "in", "left": {"ct": {"key": "status"}}, "right": "dnat"}}
        assert rule["expr"][1]["match"]["right"] == f"@portmap-masq{family}"
        assert rule["expr"][2] == {"masquerade": None}


def test_a_condition_chain_ends_without_translation():
    expressions = portmap.parse_conditions(["iifname eth0"], 4)
    chain = portmap.condition_chain(4, expressions)
    layout = portmap.layout({chain: (4, expressions)})
    rules = [rule for _, rule in layout.rules[chain]]
    assert len(rules) == portmap.COND_CHAIN_RULES
    assert [r["expr"][0] for r in rules[:2]] == expressions * 2
    assert [r["expr"][-1]["dnat"]["addr"]["map"]["data"] for r in rules[:2]] == ["@portmap-hostip4", "@portmap-any4"]
    assert rules[2]["expr"] == [{"accept": None}]
    assert layout.chains[chain] == {"family": "inet", "table": "cni_bridge", "name": chain}

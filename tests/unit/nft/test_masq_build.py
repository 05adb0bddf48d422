"""The masquerade feature's pure builders (cni_bridge.nft.masq): no root, no kernel."""

import pytest

from cni_bridge.nft import masq
from cni_bridge.nft.table import Element

T = {"family": "inet", "table": "cni_bridge"}


@pytest.mark.parametrize("address, expected", [
    ("10.88.0.5/16", (4, "10.88.0.0", 16)),
    ("10.88.0.5/32", (4, "10.88.0.5", 32)),
    ("192.168.1.130/25", (4, "192.168.1.128", 25)),
    ("10.1.2.3/0", (4, "0.0.0.0", 0)),
    ("fd00::5/64", (6, "fd00::", 64)),
    ("2001:db8:1:2:3:4:5:6/48", (6, "2001:db8:1::", 48)),
    ("fd00::5/128", (6, "fd00::5", 128)),
])
def test_subnet_of(address, expected):
    assert masq.subnet_of(address) == expected


@pytest.mark.parametrize("address", ["10.88.0.5", "10.88.0.5/33", "nonsense/16", "fd00::5/129", "10.0.0.1/x"])
def test_subnet_of_rejects(address):
    with pytest.raises(ValueError):
        masq.subnet_of(address)


@pytest.mark.parametrize("network, prefix, name", [
    ("10.88.0.0", 16, "masq-10.88.0.0_16"),
    ("fd00::", 64, "masq-fd00___64"),
    ("2001:db8:1::", 48, "masq-2001_db8_1___48"),
    ("0.0.0.0", 0, "masq-0.0.0.0_0"),
])
def test_subnet_chain_names_and_back(network, prefix, name):
    assert masq.subnet_chain(network, prefix) == name
    assert masq.chain_subnet(name) == (6 if ":" in network else 4, network, prefix)
    # Only characters of an nft identifier, so `nft list ruleset` output loads with `nft -f`.
    assert all(c.isalnum() or c in "-_." for c in name)


def test_elements():
    assert masq.elements("n/c/eth0", ["10.88.0.5/16", "fd00::5/64"]) == [
        Element("masq4", bytes([10, 88, 0, 5]), ("jump", "masq-10.88.0.0_16"), "n/c/eth0"),
        Element("masq6", bytes.fromhex("fd000000000000000000000000000005"), ("jump", "masq-fd00___64"), "n/c/eth0"),
    ]
    with pytest.raises(ValueError):
        masq.elements("k", ["10.88.0.5"])


CHAIN_RULE_V4 = [
    {"match": {"op": "!=", "left": {"payload": {"protocol": "ip", "field": "daddr"}},
               "right": {"prefix": {"addr": "10.88.0.0", "len": 16}}}},
    {"match": {"op": "!=", "left": {"payload": {"protocol": "ip", "field": "daddr"}},
               "right": {"prefix": {"addr": "224.0.0.0", "len": 4}}}},
    {"masquerade": None},
]
CHAIN_RULE_V6 = [
    {"match": {"op": "!=", "left": {"payload": {"protocol": "ip6", "field": "daddr"}},
               "right": {"prefix": {"addr": "fd00::", "len": 64}}}},
    {"match": {"op": "!=", "left": {"payload": {"protocol": "ip6", "field": "daddr"}},
               "right": {"prefix": {"addr": "ff00::", "len": 8}}}},
    {"masquerade": None},
]


def test_layout_on_an_empty_table():
    layout = masq.layout_of(masq.elements("k", ["10.88.0.5/16", "fd00::5/64", "10.88.0.6/16"]))
    assert layout.family == "inet"
    assert layout.commands(existing_chains=set()) == [
        {"add": {"table": {"family": "inet", "name": "cni_bridge"}}},
        {"add": {"map": {**T, "name": "masq4", "type": "ipv4_addr", "map": "verdict"}}},
        {"add": {"map": {**T, "name": "masq6", "type": "ipv6_addr", "map": "verdict"}}},
        {"create": {"chain": {**T, "name": "postrouting", "type": "nat", "hook": "postrouting", "prio": 100,
                              "policy": "accept"}}},
        {"create": {"chain": {**T, "name": "masq-10.88.0.0_16"}}},
        {"create": {"chain": {**T, "name": "masq-fd00___64"}}},
        {"add": {"rule": {**T, "chain": "postrouting", "comment": "cni_bridge masq v1 ipv4", "expr": [
            {"vmap": {"key": {"payload": {"protocol": "ip", "field": "saddr"}}, "data": "@masq4"}}]}}},
        {"add": {"rule": {**T, "chain": "postrouting", "comment": "cni_bridge masq v1 ipv6", "expr": [
            {"vmap": {"key": {"payload": {"protocol": "ip6", "field": "saddr"}}, "data": "@masq6"}}]}}},
        {"add": {"rule": {**T, "chain": "masq-10.88.0.0_16", "expr": CHAIN_RULE_V4,
                          "comment": "cni_bridge masq v1 10.88.0.0/16"}}},
        {"add": {"rule": {**T, "chain": "masq-fd00___64", "expr": CHAIN_RULE_V6,
                          "comment": "cni_bridge masq v1 fd00::/64"}}},
    ]
    assert {chain: layout.tags(chain) for chain in layout.chains} == {
        "postrouting": ["cni_bridge masq v1 ipv4", "cni_bridge masq v1 ipv6"],
        "masq-10.88.0.0_16": ["cni_bridge masq v1 10.88.0.0/16"],
        "masq-fd00___64": ["cni_bridge masq v1 fd00::/64"],
    }


def test_layout_over_existing_chains_flushes_instead_of_adding_them():
    layout = masq.layout_of(masq.elements("k", ["10.88.0.5/16"]))
    commands = layout.commands(existing_chains={"postrouting", "masq-10.88.0.0_16", "someone-elses"})
    assert commands[3:5] == [{"flush": {"chain": {**T, "name": "postrouting"}}},
                             {"flush": {"chain": {**T, "name": "masq-10.88.0.0_16"}}}]
    assert [c for c in commands if "create" in c] == []
    assert len([c for c in commands if "rule" in c.get("add", {})]) == 3


def test_subnet_chains_are_recognised():
    assert masq.is_subnet_chain("masq-10.88.0.0_16") and not masq.is_subnet_chain("postrouting")

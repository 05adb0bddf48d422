"""The masquerade feature's pure builders (cni_bridge.nft.masq): no root, no kernel."""

import pytest

from cni_bridge.nft import masq
from cni_bridge.nft.table import Element

T = {"family": "inet", "table": "cni_bridge"}


@pytest.mark.parametrize("address, expected", [
    ("10.88.0.5/16", (4, 0x0A580005, 0x0A580000, 0x0A58FFFF)),
    ("10.88.0.5/32", (4, 0x0A580005, 0x0A580005, 0x0A580005)),
    ("192.168.1.130/25", (4, 0xC0A80182, 0xC0A80180, 0xC0A801FF)),
    ("10.1.2.3/0", (4, 0x0A010203, 0, 0xFFFFFFFF)),
    ("fd00::5/64", (6, 0xFD000000000000000000000000000005, 0xFD00 << 112, (0xFD00 << 112) | (2**64 - 1))),
])
def test_subnet_of(address, expected):
    assert masq.subnet_of(address) == expected


@pytest.mark.parametrize("address", ["10.88.0.5", "10.88.0.5/33", "nonsense/16", "fd00::5/129", "10.0.0.1/x"])
def test_subnet_of_rejects(address):
    with pytest.raises(ValueError):
        masq.subnet_of(address)


def test_two_elements_per_address():
    ip4, net4, brd4 = bytes([10, 88, 0, 5]), bytes([10, 88, 0, 0]), bytes([10, 88, 255, 255])
    ip6 = bytes.fromhex("fd000000000000000000000000000005")
    assert masq.elements("n/c/eth0", ["10.88.0.5/16", "fd00::5/64"]) == [
        Element("pods4", ip4, None, "n/c/eth0"),
        Element("pods4_local", ip4 + net4, None, "n/c/eth0", key_end=ip4 + brd4),
        Element("pods6", ip6, None, "n/c/eth0"),
        Element("pods6_local", ip6 + bytes.fromhex("fd00" + "00" * 14), None, "n/c/eth0",
                key_end=ip6 + bytes.fromhex("fd00" + "00" * 6 + "ff" * 8)),
    ]
    with pytest.raises(ValueError):
        masq.elements("k", ["10.88.0.5"])


def test_legacy_element_keys():
    assert masq.legacy_elements("k", ["10.88.0.5/16", "fd00::5/64"]) == [
        Element("masq4", bytes([10, 88, 0, 5]), None, "k"),
        Element("masq6", bytes.fromhex("fd000000000000000000000000000005"), None, "k"),
    ]


def _match(op, left, right):
    return {"match": {"op": op, "left": left, "right": right}}


def test_layout_is_static():
    layout = masq.layout()
    assert masq.layout(masq.elements("k", ["10.88.0.5/16"])).commands(set(), {}) == layout.commands(set(), {})
    saddr4, daddr4 = ({"payload": {"protocol": "ip", "field": f}} for f in ("saddr", "daddr"))
    assert layout.commands(existing_chains=set(), rules={})[:6] == [
        {"add": {"table": {"family": "inet", "name": "cni_bridge"}}},
        {"add": {"set": {**T, "name": "pods4", "type": "ipv4_addr"}}},
        {"add": {"set": {**T, "name": "pods4_local", "type": ["ipv4_addr", "ipv4_addr"], "flags": ["interval"]}}},
        {"add": {"set": {**T, "name": "pods6", "type": "ipv6_addr"}}},
        {"add": {"set": {**T, "name": "pods6_local", "type": ["ipv6_addr", "ipv6_addr"], "flags": ["interval"]}}},
        {"create": {"chain": {**T, "name": "pod-masq", "type": "nat", "hook": "postrouting", "prio": 100,
                              "policy": "accept"}}},
    ]
    rules = [c["add"]["rule"] for c in layout.commands(set(), {}) if "rule" in c.get("add", {})]
    assert [r["expr"] for r in rules[:3]] == [
        [_match("==", daddr4, {"prefix": {"addr": "224.0.0.0", "len": 4}}), {"return": None}],
        [_match("==", {"concat": [saddr4, daddr4]}, "@pods4_local"), {"return": None}],
        [_match("==", saddr4, "@pods4"), {"masquerade": None}],
    ]
    assert rules[3]["expr"][0]["match"]["right"] == {"prefix": {"addr": "ff00::", "len": 8}}
    assert [r["comment"] for r in rules] == layout.tags("pod-masq") == [
        "cni_bridge masq v2 ipv4 multicast", "cni_bridge masq v2 ipv4 own subnet", "cni_bridge masq v2 ipv4 pods",
        "cni_bridge masq v2 ipv6 multicast", "cni_bridge masq v2 ipv6 own subnet", "cni_bridge masq v2 ipv6 pods"]
    assert all(r["chain"] == "pod-masq" for r in rules)


def test_repair_touches_only_what_is_damaged():
    layout = masq.layout()
    intact = {"pod-masq": layout.tags("pod-masq")}
    # Intact: only the sets are added (which changes nothing when they exist).
    assert [c for c in layout.commands({"pod-masq"}, intact) if "add" not in c or "rule" in c["add"]] == []
    # Flushed: flushed again (free for an empty chain, and safe against a concurrent repair) and refilled.
    flushed = layout.commands({"pod-masq"}, {})
    assert {"flush": {"chain": {**T, "name": "pod-masq"}}} in flushed
    assert len([c for c in flushed if "rule" in c.get("add", {})]) == 6
    assert not [c for c in flushed if "create" in c]


def test_legacy_leftovers():
    assert masq.is_legacy_subnet_chain("masq-10.88.0.0_16") and not masq.is_legacy_subnet_chain("pod-masq")
    assert masq.legacy_layout_objects(["masq4", "masq6"], True) == [
        {"chain": {**T, "name": "postrouting"}}, {"map": {**T, "name": "masq4"}}, {"map": {**T, "name": "masq6"}}]

"""The nftables builders of cni_bridge.nft.table: pure functions, no root, no kernel."""

import subprocess
import sys

import pytest

from cni_bridge.nft import table as nft

T = {"family": "inet", "table": "cni_bridge"}
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


def element(name, ip, comment, chain):
    return {"element": {**T, "name": name,
                        "elem": [[{"elem": {"val": ip, "comment": comment}}, {"jump": {"target": chain}}]]}}


def element_key(name, ip):
    return {"element": {**T, "name": name, "elem": [ip]}}


# --- subnets and chain names --------------------------------------------------------------


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
    assert nft.subnet_of(address) == expected


@pytest.mark.parametrize("address", ["10.88.0.5", "10.88.0.5/33", "fd00::5/129", "10.88.0/16",
                                     "fd00::5/x", "", "10.88.0.5/-1", "fd00:::5/64"])
def test_subnet_of_rejects(address):
    with pytest.raises(ValueError):
        nft.subnet_of(address)


def test_subnet_chain_names():
    assert nft.subnet_chain("10.88.0.0", 16) == "masq-10.88.0.0_16"
    assert nft.subnet_chain("fd00::", 64) == "masq-fd00___64"
    assert nft.subnet_chain("2001:db8:1::", 48) == "masq-2001_db8_1___48"
    # Only characters of an nft identifier, so `nft list ruleset` output loads with `nft -f`.
    for name in ("masq-10.88.0.0_16", "masq-2001_db8_1___48"):
        assert all(c.isalnum() or c in "-_." for c in name)


# --- attachment keys ---------------------------------------------------------------------


def test_key_plain_round_trip():
    key = nft.attachment_key("mynet", "abc123", "eth0")
    assert key == "mynet/abc123/eth0"
    assert nft.split_key("mynet", key) == ("abc123", "eth0")
    assert nft.split_key("othernet", key) is None


def test_key_of_a_prefix_network_is_not_ours():
    # "net" must not claim the elements of "net2" or "ne".
    assert nft.split_key("net", nft.attachment_key("net2", "c", "eth0")) is None
    assert nft.split_key("ne", nft.attachment_key("net", "c", "eth0")) is None


def test_key_at_the_limit_stays_plain():
    cid = "c" * (nft.COMMENT_MAX - len("net/") - len("/eth0"))
    key = nft.attachment_key("net", cid, "eth0")
    assert len(key) == nft.COMMENT_MAX
    assert nft.split_key("net", key) == (cid, "eth0")


def test_long_key_is_hashed_stably():
    cid = "c" * 200
    key = nft.attachment_key("net", cid, "eth0")
    assert key == nft.attachment_key("net", cid, "eth0")
    assert key.startswith("net/#") and len(key) == len("net/#") + 32
    assert len(key.encode()) <= nft.COMMENT_MAX
    assert nft.split_key("net", key) == ("", "")
    assert key != nft.attachment_key("net", cid, "eth1")
    assert key != nft.attachment_key("net2", cid, "eth0")
    # Pinned: GC of an upgraded plugin must recompute the keys an older one wrote.
    assert key == "net/#" + __import__("hashlib").sha256(f"net\0{cid}\0eth0".encode()).hexdigest()[:32]


def test_very_long_network_is_hashed_too():
    network = "n" * 120
    key = nft.attachment_key(network, "abc", "eth0")
    assert key.startswith("#") and len(key.encode()) <= nft.COMMENT_MAX
    assert nft.split_key(network, key) == ("", "")
    assert nft.split_key("n" * 119, key) is None


def test_multibyte_names_are_measured_in_bytes():
    key = nft.attachment_key("ñ" * 60, "abc", "eth0")  # 120 bytes + 9 > 128
    assert len(key.encode()) <= nft.COMMENT_MAX


# --- builders ------------------------------------------------------------------------------


def test_build_element_create():
    assert nft.build_element_create("n/c/eth0", ["10.88.0.5/16", "fd00::5/64"]) == [
        {"create": element("masq4", "10.88.0.5", "n/c/eth0", "masq-10.88.0.0_16")},
        {"create": element("masq6", "fd00::5", "n/c/eth0", "masq-fd00___64")},
    ]


def test_build_full_v4():
    assert nft.build_full("n/c/eth0", ["10.88.0.5/16"]) == [
        {"add": {"table": {"family": "inet", "name": "cni_bridge"}}},
        {"add": {"map": {**T, "name": "masq4", "type": "ipv4_addr", "map": "verdict"}}},
        {"add": {"map": {**T, "name": "masq6", "type": "ipv6_addr", "map": "verdict"}}},
        {"add": {"chain": {**T, "name": "postrouting", "type": "nat", "hook": "postrouting",
                           "prio": 100, "policy": "accept"}}},
        {"flush": {"chain": {**T, "name": "postrouting"}}},
        {"add": {"rule": {**T, "chain": "postrouting", "expr": [
            {"vmap": {"key": {"payload": {"protocol": "ip", "field": "saddr"}}, "data": "@masq4"}}]}}},
        {"add": {"rule": {**T, "chain": "postrouting", "expr": [
            {"vmap": {"key": {"payload": {"protocol": "ip6", "field": "saddr"}}, "data": "@masq6"}}]}}},
        {"add": {"chain": {**T, "name": "masq-10.88.0.0_16"}}},
        {"flush": {"chain": {**T, "name": "masq-10.88.0.0_16"}}},
        {"add": {"rule": {**T, "chain": "masq-10.88.0.0_16", "expr": CHAIN_RULE_V4}}},
        {"add": element("masq4", "10.88.0.5", "n/c/eth0", "masq-10.88.0.0_16")},
        {"delete": element_key("masq4", "10.88.0.5")},
        {"add": element("masq4", "10.88.0.5", "n/c/eth0", "masq-10.88.0.0_16")},
    ]


def test_build_full_dual_stack_and_shared_subnet():
    cmds = nft.build_full("k", ["10.88.0.5/16", "fd00::5/64", "10.88.0.6/16"])
    chains = [c["add"]["chain"]["name"] for c in cmds if "add" in c and "chain" in c["add"]]
    assert chains == ["postrouting", "masq-10.88.0.0_16", "masq-fd00___64"]  # one per subnet
    rules = [c["add"]["rule"] for c in cmds if "add" in c and "rule" in c["add"]]
    assert rules[3] == {**T, "chain": "masq-fd00___64", "expr": CHAIN_RULE_V6}
    assert len(rules) == 4
    assert cmds[-6:] == [
        {"add": element("masq6", "fd00::5", "k", "masq-fd00___64")},
        {"delete": element_key("masq6", "fd00::5")},
        {"add": element("masq6", "fd00::5", "k", "masq-fd00___64")},
        {"add": element("masq4", "10.88.0.6", "k", "masq-10.88.0.0_16")},
        {"delete": element_key("masq4", "10.88.0.6")},
        {"add": element("masq4", "10.88.0.6", "k", "masq-10.88.0.0_16")},
    ]


def test_build_delete():
    assert nft.build_delete([("masq4", "10.88.0.5"), ("masq6", "fd00::5")]) == [
        {"delete": element_key("masq4", "10.88.0.5")},
        {"delete": element_key("masq6", "fd00::5")},
    ]


def test_builders_reject_bad_addresses():
    with pytest.raises(ValueError):
        nft.build_element_create("k", ["10.88.0.5"])
    with pytest.raises(ValueError):
        nft.build_full("k", ["nonsense/16"])


# --- parsing `list` output ----------------------------------------------------------------

# Trimmed from `nft -j list table inet cni_bridge` (nftables 1.0.6).
LISTING = {"nftables": [
    {"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}},
    {"table": {"family": "inet", "name": "cni_bridge", "handle": 1}},
    {"map": {"family": "inet", "name": "masq4", "table": "cni_bridge", "type": "ipv4_addr", "handle": 4,
             "map": "verdict", "elem": [
                 [{"elem": {"val": "10.88.0.5", "comment": "net/abc/eth0"}},
                  {"jump": {"target": "masq-10.88.0.0_16"}}],
                 ["10.88.0.9", {"jump": {"target": "masq-10.88.0.0_16"}}],  # no comment: someone else's
             ]}},
    {"map": {"family": "inet", "name": "masq6", "table": "cni_bridge", "type": "ipv6_addr", "handle": 5,
             "map": "verdict", "elem": [
                 [{"elem": {"val": "fd00::5", "comment": "net/abc/eth0"}},
                  {"jump": {"target": "masq-fd00___64"}}]]}},
    {"map": {"family": "inet", "name": "empty", "table": "cni_bridge", "type": "ipv4_addr",
             "handle": 6, "map": "verdict"}},
    {"chain": {"family": "inet", "table": "cni_bridge", "name": "postrouting", "handle": 3,
               "type": "nat", "hook": "postrouting", "prio": 100, "policy": "accept"}},
]}


def test_parse_elements():
    assert nft.parse_elements(LISTING) == [
        ("masq4", "10.88.0.5", "net/abc/eth0"),
        ("masq4", "10.88.0.9", ""),
        ("masq6", "fd00::5", "net/abc/eth0"),
    ]


def test_parse_elements_of_an_empty_table():
    assert nft.parse_elements({"nftables": [{"metainfo": {}}, {"table": {"name": "cni_bridge"}}]}) == []
    assert nft.parse_elements({}) == []


# --- import cost ----------------------------------------------------------------------------


def test_import_is_cheap():
    """The bridge imports nft on every exec: no json, ipaddress, socket, hashlib or nftables."""
    code = (
        "import sys; before = set(sys.modules); import cni_bridge.nft.table; "
        "print(' '.join(sorted(set(sys.modules) - before)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = set(out.split())
    assert loaded <= {"cni_bridge", "cni_bridge.nft", "cni_bridge.nft.table", "cni_bridge.cni", "cni_bridge.cni.errors"}, loaded

"""The MAC spoof check's pure builders (cni_bridge.nft.spoof): no root, no kernel."""

from cni_bridge.nft import spoof, table
from cni_bridge.nft.table import Element

S = {"family": "bridge", "table": "cni_bridge"}


def test_elements():
    port = b"veth0a1b2c3d" + bytes(4)
    assert spoof.elements("n/c/eth0", "veth0a1b2c3d", "0a:58:0a:00:00:05") == [
        Element("spoof_ports", port, None, "n/c/eth0"),
        Element("spoof_allowed", bytes.fromhex("0a580a000005") + bytes(2) + port, None, "n/c/eth0"),
    ]


def test_layout():
    layout = spoof.layout()
    assert layout.family == "bridge" and layout.tags("prerouting") == ["cni_bridge spoof v1"]
    commands = layout.commands(existing_chains=set(), rules={})
    assert commands[:4] == [
        {"add": {"table": {"family": "bridge", "name": table.TABLE}}},
        {"add": {"set": {**S, "name": "spoof_ports", "type": "ifname"}}},
        {"add": {"set": {**S, "name": "spoof_allowed", "type": ["ether_addr", "ifname"]}}},
        {"create": {"chain": {**S, "name": "prerouting", "type": "filter", "hook": "prerouting", "prio": -300,
                              "policy": "accept"}}},
    ]
    rule = commands[4]["add"]["rule"]
    assert rule["comment"] == "cni_bridge spoof v1" and rule["expr"][-1] == {"drop": None}
    assert len(commands) == 5

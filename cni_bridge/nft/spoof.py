"""macspoofchk for the bridge plugin: drop frames whose source MAC is not the container's.

    table bridge cni_bridge {
        set spoof_ports   { type ifname; }                 # host veths under the check
        set spoof_allowed { type ether_addr . ifname; }    # container MAC . its host veth
        chain prerouting  { type filter hook prerouting priority -300; policy accept;
                            iifname @spoof_ports ether saddr . iifname != @spoof_allowed drop }
    }

The bridge family sees every frame a port receives before it is forwarded. An attachment
owns its two elements through their comment; the rule is static. Pure; nft/table.py
applies it.
"""

from cni_bridge.nft import table
from cni_bridge.nft.table import Element, Layout

CHAIN = "prerouting"
PORTS = "spoof_ports"
ALLOWED = "spoof_allowed"
TAG = "cni_bridge spoof v1"
_S = {"family": "bridge", "table": table.TABLE}


def elements(key: str, host_ifname: str, mac: str) -> list[Element]:
    port = table.ifname_key(host_ifname)
    mac_bytes = bytes(int(part, 16) for part in mac.split(":"))
    return [Element(PORTS, port, None, key), Element(ALLOWED, table.concat(mac_bytes, port), None, key)]


def layout(_elements=()) -> Layout:
    """The two sets and the chain with its one static rule."""
    source_and_port = {"concat": [{"payload": {"protocol": "ether", "field": "saddr"}}, {"meta": {"key": "iifname"}}]}
    rule = [
        {"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": f"@{PORTS}"}},
        {"match": {"op": "!=", "left": source_and_port, "right": f"@{ALLOWED}"}},
        {"drop": None},
    ]
    objects = [
        {"table": {"family": "bridge", "name": table.TABLE}},
        {"set": {**_S, "name": PORTS, "type": "ifname"}},
        {"set": {**_S, "name": ALLOWED, "type": ["ether_addr", "ifname"]}},
    ]
    chains = {CHAIN: {**_S, "name": CHAIN, "type": "filter", "hook": "prerouting", "prio": -300, "policy": "accept"}}
    return Layout("bridge", objects, chains, {CHAIN: [(TAG, {**_S, "chain": CHAIN, "expr": rule})]})

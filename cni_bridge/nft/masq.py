"""ipMasq for the bridge plugin: source NAT for pod traffic leaving its subnet.

What the reference bridge's ipMasq does per container address ("traffic from this address
to anywhere but its own subnet and multicast is masqueraded"), as a part of our table:

    table inet cni_bridge {
        set pods4       { type ipv4_addr; }                               # pod address
        set pods4_local { type ipv4_addr . ipv4_addr; flags interval; }  # pod address . its subnet
        set pods6 ... set pods6_local ...
        chain pod-masq { type nat hook postrouting priority srcnat; policy accept;
            ip daddr 224.0.0.0/4 return
            ip saddr . ip daddr @pods4_local return
            ip saddr @pods4 masquerade
            ip6 daddr ff00::/8 return
            ip6 saddr . ip6 daddr @pods6_local return
            ip6 saddr @pods6 masquerade }
    }

The rules are static: an attachment owns two elements per address, and nothing in the
table names a subnet, so there is nothing per network to create or to clean up.

Versions before this layout kept a verdict map per family (masq4, masq6, jumping to a chain
per subnet, masq-<subnet>) under a base chain `postrouting`; attachments made then keep
working through it, and DEL and GC remove what they own there and the subnet chains left
unused (LEGACY_*).

Everything here is pure; nft/table.py applies it.
"""

from cni_bridge.cni.addr import format_ip, parse_cidr
from cni_bridge.nft import table
from cni_bridge.nft.table import Element, Layout

CHAIN = "pod-masq"  # not "masquerade": a keyword, and listings must load again with nft -f
SETS = {4: "pods4", 6: "pods6"}
LOCAL_SETS = {4: "pods4_local", 6: "pods6_local"}
MULTICAST = {4: ("224.0.0.0", 4), 6: ("ff00::", 8)}
TAG = "cni_bridge masq v2"  # rule comments: a rule whose tag differs is rewritten
LEGACY_MAPS = {4: "masq4", 6: "masq6"}
LEGACY_BASE_CHAIN = "postrouting"
LEGACY_CHAIN_PREFIX = "masq-"
_T = {"family": "inet", "table": table.TABLE}


def subnet_of(address: str) -> tuple[int, int, int, int]:
    """(4 or 6, address, first and last address of its subnet) of "10.88.0.5/16", as ints;
    ValueError if malformed."""
    (family, value), prefix = parse_cidr(address)
    host_bits = (32 if family == 4 else 128) - prefix
    first = value & ~((1 << host_bits) - 1)
    return family, value, first, first | ((1 << host_bits) - 1)


def elements(key: str, addresses: list[str]) -> list[Element]:
    """Two elements per container address ("10.88.0.5/16"); ValueError if malformed."""
    found = []
    for address in addresses:
        family, value, first, last = subnet_of(address)
        ip = table.ip_key(format_ip(family, value))
        found.append(Element(SETS[family], ip, None, key))
        found.append(Element(LOCAL_SETS[family], table.concat(ip, table.ip_key(format_ip(family, first))), None, key,
                             key_end=table.concat(ip, table.ip_key(format_ip(family, last)))))
    return found


def legacy_elements(key: str, addresses: list[str]) -> list[Element]:
    """The keys an attachment's addresses had in the legacy maps (for lookups only)."""
    return [Element(LEGACY_MAPS[subnet_of(address)[0]], table.ip_key(address.partition("/")[0]), None, key)
            for address in addresses]


def layout(_elements=()) -> Layout:
    """The four sets and the chain with its six static rules."""
    objects = [{"table": {"family": "inet", "name": table.TABLE}}]
    rules = []
    for family in (4, 6):
        ip_type = "ipv4_addr" if family == 4 else "ipv6_addr"
        objects.append({"set": {**_T, "name": SETS[family], "type": ip_type}})
        objects.append({"set": {**_T, "name": LOCAL_SETS[family], "type": [ip_type, ip_type], "flags": ["interval"]}})
        saddr, daddr = _payload(family, "saddr"), _payload(family, "daddr")
        network, prefix = MULTICAST[family]
        multicast = {"match": {"op": "==", "left": daddr, "right": {"prefix": {"addr": network, "len": prefix}}}}
        local = {"match": {"op": "==", "left": {"concat": [saddr, daddr]}, "right": f"@{LOCAL_SETS[family]}"}}
        pod = {"match": {"op": "==", "left": saddr, "right": f"@{SETS[family]}"}}
        rules += [
            (f"{TAG} ipv{family} multicast", {**_T, "chain": CHAIN, "expr": [multicast, {"return": None}]}),
            (f"{TAG} ipv{family} own subnet", {**_T, "chain": CHAIN, "expr": [local, {"return": None}]}),
            (f"{TAG} ipv{family} pods", {**_T, "chain": CHAIN, "expr": [pod, {"masquerade": None}]}),
        ]
    chains = {CHAIN: {**_T, "name": CHAIN, "type": "nat", "hook": "postrouting", "prio": 100, "policy": "accept"}}
    return Layout("inet", objects, chains, {CHAIN: rules})


def _payload(family: int, field: str) -> dict:
    return {"payload": {"protocol": "ip" if family == 4 else "ip6", "field": field}}


def is_legacy_subnet_chain(chain: str) -> bool:
    return chain.startswith(LEGACY_CHAIN_PREFIX)


def legacy_layout_objects(maps: list[str], base_chain: bool) -> list[dict]:
    """What is left of the legacy layout once its maps are empty: the base chain (its rules
    go with it) and the maps, in the order they can be deleted."""
    objects = [{"chain": {**_T, "name": LEGACY_BASE_CHAIN}}] if base_chain else []
    return objects + [{"map": {**_T, "name": name}} for name in maps]

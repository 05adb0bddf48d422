"""ipMasq for the bridge plugin: source NAT for pod traffic leaving its subnet.

What the reference bridge's ipMasq does per container address ("traffic from this address
to anywhere but its own subnet and multicast is masqueraded"), as a part of our table:

    table inet cni_bridge {
        chain postrouting { type nat hook postrouting priority srcnat; policy accept;
                            ip saddr vmap @masq4; ip6 saddr vmap @masq6 }
        map masq4 { type ipv4_addr : verdict }      # pod address : jump masq-<subnet>
        map masq6 { type ipv6_addr : verdict }
        chain masq-10.88.0.0_16 { ip daddr != 10.88.0.0/16 ip daddr != 224.0.0.0/4 masquerade }
        chain masq-fd00___64    { ip6 daddr != fd00::/64 ip6 daddr != ff00::/8 masquerade }
    }

An attachment owns one map element per address; a subnet chain lives while an element
jumps to it. Everything here is pure; nft/table.py applies it.
"""

from cni_bridge.cni.addr import parse_cidr, format_ip
from cni_bridge.nft import table
from cni_bridge.nft.table import Element, Layout

BASE_CHAIN = "postrouting"
MAPS = {4: "masq4", 6: "masq6"}
TAG = "cni_bridge masq v1"  # rule comments: a rule whose tag differs is rewritten
_T = {"family": "inet", "table": table.TABLE}


def subnet_of(address: str) -> tuple[int, str, int]:
    """(4 or 6, network address, prefix length) of "10.88.0.5/16"; ValueError if malformed."""
    (family, value), prefix = parse_cidr(address)
    bits = 32 if family == 4 else 128
    network = value & ~((1 << (bits - prefix)) - 1)
    return family, format_ip(family, network), prefix


def subnet_chain(network: str, prefix: int) -> str:
    """Chain name for a subnet: masq-10.88.0.0_16, masq-fd00___64 (':' is not allowed in an
    nft identifier, so a listing stays loadable with `nft -f`)."""
    return f"masq-{network.replace(':', '_')}_{prefix}"


def chain_subnet(chain: str) -> tuple[int, str, int]:
    """The subnet a chain name stands for (the inverse of subnet_chain)."""
    network, _, prefix = chain[len("masq-"):].rpartition("_")
    network = network.replace("_", ":")
    return (6 if ":" in network else 4), network, int(prefix)


def elements(key: str, addresses: list[str]) -> list[Element]:
    """One map element per container address ("10.88.0.5/16"); ValueError if malformed."""
    found = []
    for address in addresses:
        family, network, prefix = subnet_of(address)
        ip = address.partition("/")[0]
        found.append(Element(MAPS[family], table.ip_key(ip), ("jump", subnet_chain(network, prefix)), key))
    return found


def layout(subnet_chains) -> Layout:
    """The base chain, both maps and the given subnet chains."""
    objects = [
        {"table": {"family": "inet", "name": table.TABLE}},
        {"map": {**_T, "name": MAPS[4], "type": "ipv4_addr", "map": "verdict"}},
        {"map": {**_T, "name": MAPS[6], "type": "ipv6_addr", "map": "verdict"}},
    ]
    chains = {BASE_CHAIN: {**_T, "name": BASE_CHAIN, "type": "nat", "hook": "postrouting", "prio": 100,
                           "policy": "accept"}}
    rules = {BASE_CHAIN: []}
    for family, name in MAPS.items():
        vmap = {"vmap": {"key": _payload(family, "saddr"), "data": f"@{name}"}}
        rules[BASE_CHAIN].append((f"{TAG} ipv{family}", {**_T, "chain": BASE_CHAIN, "expr": [vmap]}))
    for chain in sorted(set(subnet_chains)):
        family, network, prefix = chain_subnet(chain)
        multicast = ("224.0.0.0", 4) if family == 4 else ("ff00::", 8)
        expr = [_not_in(family, network, prefix), _not_in(family, *multicast), {"masquerade": None}]
        chains[chain] = {**_T, "name": chain}
        rules[chain] = [(f"{TAG} {network}/{prefix}", {**_T, "chain": chain, "expr": expr})]
    return Layout("inet", objects, chains, rules)


def layout_of(found: list[Element]) -> Layout:
    """The layout these elements jump into."""
    return layout(e.data[1] for e in found)


def _payload(family: int, field: str) -> dict:
    return {"payload": {"protocol": "ip" if family == 4 else "ip6", "field": field}}


def _not_in(family: int, network: str, prefix: int) -> dict:
    return {"match": {"op": "!=", "left": _payload(family, "daddr"),
                      "right": {"prefix": {"addr": network, "len": prefix}}}}


def is_subnet_chain(chain: str) -> bool:
    return chain.startswith("masq-")

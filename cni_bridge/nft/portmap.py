"""portmap: container ports published on the node, as a part of our table.

    table inet cni_bridge {
        # DNAT: host address . protocol . host port (or protocol . host port, the wildcard)
        #       -> container address . container port
        map portmap-hostip4 { type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service }
        map portmap-any4    { type inet_proto . inet_service : ipv4_addr . inet_service }
        map portmap-hostip6, portmap-any6                          (the same for IPv6)
        # mappings of a config with conditionsV4/V6: the same keys : jump portmap-cond-<hash>
        map portmap-jump-hostip4, portmap-jump-any4, portmap-jump-hostip6, portmap-jump-any6
        # masquerade: source prefix . container address . protocol . container port
        set portmap-masq4 { type ipv4_addr . ipv4_addr . inet_proto . inet_service; flags interval }
        set portmap-masq6

        chain portmap-prerouting { type nat hook prerouting priority dstnat
            meta nfproto ipv4 fib daddr type local ip daddr . meta l4proto . th dport vmap @portmap-jump-hostip4
            meta nfproto ipv4 fib daddr type local meta l4proto . th dport vmap @portmap-jump-any4
            meta nfproto ipv4 fib daddr type local dnat ip to ip daddr . meta l4proto . th dport map @portmap-hostip4
            meta nfproto ipv4 fib daddr type local dnat ip to meta l4proto . th dport map @portmap-any4
            ... the same for IPv6, where ::1 is never a destination (no route_localnet for IPv6)
        }
        chain portmap-output { type nat hook output priority dstnat; the same rules }
        chain portmap-postrouting { type nat hook postrouting priority srcnat
            ct status dnat ip saddr . ip daddr . meta l4proto . th dport @portmap-masq4 masquerade
            ct status dnat ip6 saddr . ip6 daddr . meta l4proto . th dport @portmap-masq6 masquerade
        }
        chain portmap-input { type filter hook input priority filter
            iifname != "lo" ip daddr 127.0.0.0/8 ct status ! dnat drop
        }
        chain portmap-cond-<hash> { <conditions> dnat ip to ... map @portmap-hostip4
                                    <conditions> dnat ip to ... map @portmap-any4
                                    accept }
    }

Only traffic addressed to this node (`fib daddr type local`) is translated, so a forwarded
packet to another address on the same port is never captured. A lookup that misses ends
the rule, so every packet pays a few map lookups, whatever the number of mappings.

Masquerade makes the replies come back through the node: for hairpin traffic (from the
container's subnet, so from the container itself and its neighbours on the bridge,
whether or not bridged frames pass the IP hooks) and for the node's own 127.0.0.1, whose
packets the bridge's route_localnet lets out. The input guard keeps route_localnet from
opening the node's localhost to the containers: a packet for 127.0.0.0/8 that came in
from outside `lo` is dropped unless it belongs to a connection we DNATed (CVE-2020-8558).

An attachment owns its elements through their comment. The chains are static but for one
per distinct set of conditions, which lives while an element jumps to it. Everything here
is pure; nft/table.py applies it.
"""

from cni_bridge.cni.addr import BITS, format_ip, parse_ip
from cni_bridge.nft import table
from cni_bridge.nft.table import Element, Layout

PREROUTING, OUTPUT, POSTROUTING, INPUT = "portmap-prerouting", "portmap-output", "portmap-postrouting", "portmap-input"
COND_PREFIX = "portmap-cond-"
HOSTIP = {4: "portmap-hostip4", 6: "portmap-hostip6"}
ANY = {4: "portmap-any4", 6: "portmap-any6"}
JUMP_HOSTIP = {4: "portmap-jump-hostip4", 6: "portmap-jump-hostip6"}
JUMP_ANY = {4: "portmap-jump-any4", 6: "portmap-jump-any6"}
MASQ = {4: "portmap-masq4", 6: "portmap-masq6"}
DNAT_MAPS = [*HOSTIP.values(), *ANY.values()]
SETS = [*DNAT_MAPS, *JUMP_HOSTIP.values(), *JUMP_ANY.values(), *MASQ.values()]
PROTOCOLS = {"tcp": 6, "udp": 17, "sctp": 132}
PROTOCOL_NAMES = {number: name for name, number in PROTOCOLS.items()}
COND_CHAIN_RULES = 3  # the rules of a condition chain: what it holds when nothing jumps to it
TAG = "cni_bridge portmap v1"
_T = {"family": "inet", "table": table.TABLE}
_ADDR = {4: "ipv4_addr", 6: "ipv6_addr"}
_IP = {4: "ip", 6: "ip6"}


class Mapping:
    """One published port in one family: host address (None for every local address),
    protocol, host port, container address, container port."""

    __slots__ = ("family", "host_ip", "protocol", "host_port", "container_ip", "container_port")

    def __init__(self, family: int, host_ip: str | None, protocol: str, host_port: int, container_ip: str,
                 container_port: int):
        self.family = family
        self.host_ip = host_ip
        self.protocol = protocol
        self.host_port = host_port
        self.container_ip = container_ip
        self.container_port = container_port

    def __eq__(self, other) -> bool:
        return isinstance(other, Mapping) and all(getattr(self, n) == getattr(other, n) for n in self.__slots__)

    def __repr__(self) -> str:
        return f"Mapping({self})"

    def __str__(self) -> str:
        host = self.host_ip or f"every IPv{self.family} address"
        container = self.container_ip if self.family == 4 else f"[{self.container_ip}]"
        return f"{self.protocol} {self.host_port} on {host} -> {container}:{self.container_port}"

    def dnat_key(self) -> bytes:
        fields = [bytes([PROTOCOLS[self.protocol]]), self.host_port.to_bytes(2, "big")]
        return table.concat(*([table.ip_key(self.host_ip)] if self.host_ip else []), *fields)

    def dnat_map(self) -> str:
        return (HOSTIP if self.host_ip else ANY)[self.family]


def _port_key(port: int) -> bytes:
    return port.to_bytes(2, "big")


def dnat_element(key: str, mapping: Mapping) -> Element:
    data = table.concat(table.ip_key(mapping.container_ip), _port_key(mapping.container_port))
    return Element(mapping.dnat_map(), mapping.dnat_key(), data, key)


def condition_element(key: str, mapping: Mapping, chain: str) -> Element:
    """The jump that puts a mapping under its config's conditions."""
    name = (JUMP_HOSTIP if mapping.host_ip else JUMP_ANY)[mapping.family]
    return Element(name, mapping.dnat_key(), ("jump", chain), key)


def masquerade_elements(key: str, mapping: Mapping, sources: list[tuple[str, int]]) -> list[Element]:
    """One interval element per source prefix (address, length) whose connections to the
    mapping's container port are masqueraded."""
    found = []
    tail = [table.ip_key(mapping.container_ip), bytes([PROTOCOLS[mapping.protocol]]),
            _port_key(mapping.container_port)]
    for address, prefix in sources:
        family, value = parse_ip(address)
        host_bits = (1 << (BITS[family] - prefix)) - 1
        first, last = format_ip(family, value & ~host_bits), format_ip(family, value | host_bits)
        found.append(Element(MASQ[family], table.concat(table.ip_key(first), *tail), None, key,
                             key_end=table.concat(table.ip_key(last), *tail)))
    return found


def host_ip_of(element: Element) -> str | None:
    """The host address a DNAT or condition element is bound to; None for a wildcard's."""
    for family in (4, 6):
        if element.set in (HOSTIP[family], JUMP_HOSTIP[family]):
            return format_ip(family, int.from_bytes(element.key[:4 if family == 4 else 16], "big"))
    return None


def host_port_of(element: Element) -> tuple[int, str, int] | None:
    """(family, protocol, host port) of a DNAT or condition element; None for others."""
    for family in (4, 6):
        if element.set in (HOSTIP[family], JUMP_HOSTIP[family]):
            offset = 16 if family == 6 else 4
        elif element.set in (ANY[family], JUMP_ANY[family]):
            offset = 0
        else:
            continue
        protocol = PROTOCOL_NAMES.get(element.key[offset])
        return (family, protocol, int.from_bytes(element.key[offset + 4:offset + 6], "big")) if protocol else None
    return None


# ---- conditions ----------------------------------------------------------------------------

_SELECTORS = {("ip", "saddr"): 4, ("ip", "daddr"): 4, ("ip6", "saddr"): 6, ("ip6", "daddr"): 6}
CONDITIONS_HELP = ("conditions are matches on ip saddr/daddr (conditionsV4), ip6 saddr/daddr (conditionsV6) or "
                   "iifname, each with an optional == or !=, and a value: an address, a prefix, a name, or a { set }")


def parse_conditions(tokens: list[str], family: int) -> list[dict]:
    """conditionsV4/V6 (nft syntax, as tokens the reference joins with spaces) as libnftables
    match expressions. Only the matches CONDITIONS_HELP lists are understood; anything else
    (a statement, a verdict, iptables syntax) is a ValueError, so that a condition can
    only ever narrow which packets are translated."""
    words = " ".join(tokens).replace("{", " { ").replace("}", " } ").replace(",", " , ").split()
    if words and words[0].startswith(("-", "!")):
        raise ValueError("conditions in iptables syntax need the iptables backend; our rules are nftables")
    expressions = []
    while words:
        if words[0] == "meta" and words[1:2] == ["iifname"]:
            words.pop(0)
        if words[0] == "iifname":
            words.pop(0)
            left, value_family = {"meta": {"key": "iifname"}}, None
        elif tuple(words[:2]) in _SELECTORS:
            protocol, field = words.pop(0), words.pop(0)
            value_family = _SELECTORS[(protocol, field)]
            if value_family != family:
                raise ValueError(f"{protocol} {field} does not match IPv{family} packets")
            left = {"payload": {"protocol": protocol, "field": field}}
        else:
            raise ValueError(f"{' '.join(words[:3])!r} is not understood: {CONDITIONS_HELP}")
        op = words.pop(0) if words and words[0] in ("==", "!=") else "=="
        expressions.append({"match": {"op": op, "left": left, "right": _condition_value(words, value_family)}})
    return expressions


def _condition_value(words: list[str], family: int | None):
    """The value at the head of words (consumed): one item, or a { set } of them."""
    if not words:
        raise ValueError(f"a condition lacks its value: {CONDITIONS_HELP}")
    if words[0] != "{":
        return _condition_item(words.pop(0), family)
    words.pop(0)
    items = []
    while words and words[0] != "}":
        items.append(_condition_item(words.pop(0), family))
        if words and words[0] == ",":
            words.pop(0)
    if not words or not items:
        raise ValueError("a { set } in the conditions is empty or not closed")
    words.pop(0)
    return {"set": items}


def _condition_item(word: str, family: int | None):
    if family is None:  # an interface name, quoted or not
        name = word[1:-1] if len(word) > 1 and word[0] == word[-1] == '"' else word
        if not 0 < len(name) <= 15 or not all(c.isascii() and (c.isalnum() or c in "._-@") for c in name):
            raise ValueError(f"{word!r} is not an interface name (wildcards are not supported)")
        return name
    address, slash, prefix_text = word.partition("/")
    try:
        value_family, value = parse_ip(address)
    except ValueError:
        raise ValueError(f"{word!r} is not an IPv{family} address or prefix") from None
    prefix = int(prefix_text) if prefix_text.isascii() and prefix_text.isdigit() else -1
    if value_family != family or (slash and not 0 <= prefix <= BITS[family]):
        raise ValueError(f"{word!r} is not an IPv{family} address or prefix")
    if not slash:
        return address
    network = value & ~((1 << (BITS[family] - prefix)) - 1)
    return {"prefix": {"addr": format_ip(family, network), "len": prefix}}


def condition_chain(family: int, expressions: list[dict]) -> str:
    """The chain of one set of conditions: portmap-cond-<hash of family and expressions>."""
    import hashlib  # only for configs with conditions

    from cni_bridge.cni import wire

    digest = hashlib.sha256(wire.dumps([family, expressions])).hexdigest()[:16]
    return f"{COND_PREFIX}{digest}"


def is_condition_chain(chain: str) -> bool:
    return chain.startswith(COND_PREFIX)


# ---- the layout ----------------------------------------------------------------------------


def _fib_local() -> dict:
    return {"match": {"op": "==", "left": {"fib": {"result": "type", "flags": ["daddr"]}}, "right": "local"}}


def _dnat_key(family: int, with_host: bool) -> dict:
    fields = [{"meta": {"key": "l4proto"}}, {"payload": {"protocol": "th", "field": "dport"}}]
    if with_host:
        fields.insert(0, {"payload": {"protocol": _IP[family], "field": "daddr"}})
    return {"concat": fields}


def _dnat(family: int, with_host: bool) -> dict:
    name = (HOSTIP if with_host else ANY)[family]
    return {"dnat": {"family": _IP[family], "addr": {"map": {"key": _dnat_key(family, with_host), "data": f"@{name}"}}}}


def _not_loopback6() -> list[dict]:
    return [{"match": {"op": "!=", "left": {"payload": {"protocol": "ip6", "field": "daddr"}}, "right": "::1"}}]


def _nfproto(family: int) -> dict:
    """The family a rule is for: its keys without an address (protocol . port) would
    otherwise match the other family's packets too."""
    return {"match": {"op": "==", "left": {"meta": {"key": "nfproto"}}, "right": "ipv4" if family == 4 else "ipv6"}}


def _translation_rules(chain: str) -> list[tuple[str, dict]]:
    rules = []
    for family in (4, 6):
        guard = [_nfproto(family), _fib_local(), *(_not_loopback6() if family == 6 else [])]
        for with_host, conds in ((True, JUMP_HOSTIP), (False, JUMP_ANY)):
            vmap = {"vmap": {"key": _dnat_key(family, with_host), "data": f"@{conds[family]}"}}
            rules.append((f"{TAG} conditions {conds[family]}", {**_T, "chain": chain, "expr": [*guard, vmap]}))
        for with_host, maps in ((True, HOSTIP), (False, ANY)):
            rules.append((f"{TAG} dnat {maps[family]}", {**_T, "chain": chain,
                                                         "expr": [*guard, _dnat(family, with_host)]}))
    return rules


def _masquerade_rule(family: int) -> dict:
    ip = _IP[family]
    key = {"concat": [{"payload": {"protocol": ip, "field": "saddr"}}, {"payload": {"protocol": ip, "field": "daddr"}},
                      {"meta": {"key": "l4proto"}}, {"payload": {"protocol": "th", "field": "dport"}}]}
    expr = [{"match": {"op": "in", "left": {"ct": {"key": "status"}}, "right": "dnat"}},
            {"match": {"op": "==", "left": key, "right": f"@{MASQ[family]}"}}, {"masquerade": None}]
    return {**_T, "chain": POSTROUTING, "expr": expr}


def _localhost_guard() -> dict:
    expr = [
        {"match": {"op": "!=", "left": {"meta": {"key": "iifname"}}, "right": "lo"}},
        {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}},
                   "right": {"prefix": {"addr": "127.0.0.0", "len": 8}}}},
        {"match": {"op": "!", "left": {"ct": {"key": "status"}}, "right": "dnat"}},
        {"drop": None},
    ]
    return {**_T, "chain": INPUT, "expr": expr}


def _condition_rules(chain: str, family: int, expressions: list[dict]) -> list[tuple[str, dict]]:
    rules = [(f"{TAG} {chain} {HOSTIP[family]}", {**_T, "chain": chain, "expr": [*expressions, _dnat(family, True)]}),
             (f"{TAG} {chain} {ANY[family]}", {**_T, "chain": chain, "expr": [*expressions, _dnat(family, False)]}),
             # Unmet conditions: no translation at all, not the unconditional maps.
             (f"{TAG} {chain} end", {**_T, "chain": chain, "expr": [{"accept": None}]})]
    return rules


def layout(condition_chains: dict[str, tuple[int, list[dict]]] | None = None) -> Layout:
    """The maps, sets and base chains, and the given condition chains (name -> (family,
    expressions))."""
    objects = [{"table": {"family": "inet", "name": table.TABLE}}]
    dnat_maps = []  # nft syntax: their data is a concatenation (see table.Layout)
    for family in (4, 6):
        data = f"{_ADDR[family]} . inet_service"
        keys = {HOSTIP[family]: f"{_ADDR[family]} . inet_proto . inet_service", ANY[family]: "inet_proto . inet_service"}
        dnat_maps += [f"add map inet {table.TABLE} {name} {{ type {key} : {data} ; }}" for name, key in keys.items()]
        objects += [
            {"map": {**_T, "name": JUMP_HOSTIP[family], "type": [_ADDR[family], "inet_proto", "inet_service"],
                     "map": "verdict"}},
            {"map": {**_T, "name": JUMP_ANY[family], "type": ["inet_proto", "inet_service"], "map": "verdict"}},
            {"set": {**_T, "name": MASQ[family], "type": [_ADDR[family], _ADDR[family], "inet_proto", "inet_service"],
                     "flags": ["interval"]}},
        ]
    chains = {
        PREROUTING: {**_T, "name": PREROUTING, "type": "nat", "hook": "prerouting", "prio": -100, "policy": "accept"},
        OUTPUT: {**_T, "name": OUTPUT, "type": "nat", "hook": "output", "prio": -100, "policy": "accept"},
        POSTROUTING: {**_T, "name": POSTROUTING, "type": "nat", "hook": "postrouting", "prio": 100, "policy": "accept"},
        INPUT: {**_T, "name": INPUT, "type": "filter", "hook": "input", "prio": 0, "policy": "accept"},
    }
    rules = {
        PREROUTING: _translation_rules(PREROUTING),
        OUTPUT: _translation_rules(OUTPUT),
        POSTROUTING: [(f"{TAG} {MASQ[f]}", _masquerade_rule(f)) for f in (4, 6)],
        INPUT: [(f"{TAG} localhost guard", _localhost_guard())],
    }
    for name, (family, expressions) in sorted((condition_chains or {}).items()):
        chains[name] = {**_T, "name": name}
        rules[name] = _condition_rules(name, family, expressions)
    return Layout("inet", objects, chains, rules, dnat_maps)

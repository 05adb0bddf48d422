"""ipMasq for the bridge plugin: source NAT, in nftables, for pod traffic leaving its subnet.

What the reference bridge's ipMasq does per container address ("traffic from this address
to anywhere but its own subnet and multicast is masqueraded"), kept in a table of our own,
talked to through libnftables' JSON API (pip `nftables` over the system libnftables1).

Layout (all in `table inet cni_bridge`):

    chain postrouting  { type nat hook postrouting priority srcnat;
                         ip saddr vmap @masq4; ip6 saddr vmap @masq6 }
    map masq4          { type ipv4_addr : verdict }     # pod address : jump masq-<subnet>
    map masq6          { type ipv6_addr : verdict }
    chain masq-10.88.0.0_16 { ip daddr != 10.88.0.0/16 ip daddr != 224.0.0.0/4 masquerade }
    chain masq-fd00___64    { ip6 daddr != fd00::/64 ip6 daddr != ff00::/8 masquerade }

One attachment (network, container id, ifname) owns one map element per address; the
element's comment is the attachment key, so DEL, CHECK and GC find elements without knowing
the addresses. Per pod the kernel work is one element: no rule handles to track, and the
cost does not grow with the host's ruleset.

Rules that keep it cheap (see research/python-cost.md, section 6):
- We never set the echo flag and never list the ruleset, only our own table.
- One libnftables context lives for the whole process. Closing it after a transaction that
  freed something waits for an RCU grace period; at process exit that wait has overlapped
  the netlink work.
- ADD sends the element alone first and falls back to the full, idempotent batch.

Import rules: the bridge imports this module on every exec, so the top level imports only
cni_bridge.errors. `nftables` (it loads json and ctypes, ~6 ms) is imported on the first
kernel call, i.e. only when ipMasq is on; socket and hashlib are imported where needed.
JSON goes through the stdlib json that `nftables` has loaded anyway, not cni_bridge.cni.wire:
pydantic_core's first to_json imports decimal, uuid and platform (~4.5 ms), which DEL,
which prints nothing, would otherwise pay only for us.
Builders (`build_*`, `parse_*`, `attachment_key`, `subnet_chain`) are pure and run without
root; the public functions below them do the I/O.
"""

from cni_bridge.cni import errors

FAMILY = "inet"
TABLE = "cni_bridge"
BASE_CHAIN = "postrouting"
MAP4 = "masq4"
MAP6 = "masq6"
# The nft parser rejects longer comments ("128 characters maximum allowed"), so a listing
# with one could not be restored with `nft -f`. libnftables' JSON input does not check, and
# past ~250 bytes it aborts the whole process ("Memory allocation failure").
COMMENT_MAX = 128
_HASH_LEN = 32  # hex digits of sha256: 128 bits
_MISSING = "No such file or directory"  # libnftables' text for ENOENT: table, map or chain

_T = {"family": FAMILY, "table": TABLE}


# --- attachment keys (the element comments) ---------------------------------------------


def attachment_key(network: str, container_id: str, ifname: str) -> str:
    """The comment that marks an attachment's elements: `network/containerid/ifname`.

    When that is longer than COMMENT_MAX, the id and ifname are replaced by a hash
    (`network/#<hash>`), and the network too if it is very long (`#<hash>/#<hash>`); GC
    recomputes the same forms from (network, id, ifname).
    """
    plain = f"{network}/{container_id}/{ifname}"
    if len(plain.encode()) <= COMMENT_MAX:
        return plain
    digest = _sha(f"{network}\0{container_id}\0{ifname}")
    return f"{_network_prefix(network)}#{digest}"


def _network_prefix(network: str) -> str:
    """What every key of `network` starts with, hashed or not."""
    if len(network.encode()) + 2 + _HASH_LEN <= COMMENT_MAX:
        return f"{network}/"
    return f"#{_sha(network)}/"


def _sha(text: str) -> str:
    import hashlib  # only for names too long for a plain key

    return hashlib.sha256(text.encode()).hexdigest()[:_HASH_LEN]


def split_key(network: str, comment: str) -> tuple[str, str] | None:
    """(container_id, ifname) of a key of `network`; ("", "") if hashed; None if not ours."""
    prefix = _network_prefix(network)
    if not comment.startswith(prefix):
        return None
    rest = comment[len(prefix):]
    if rest.startswith("#"):
        return ("", "")
    container_id, sep, ifname = rest.rpartition("/")
    return (container_id, ifname) if sep else None


# --- subnets ----------------------------------------------------------------------------


def subnet_of(address: str) -> tuple[int, str, int]:
    """(4 or 6, network address, prefix length) of "10.88.0.5/16"; ValueError if malformed."""
    import socket  # the bridge has it loaded already (netlink); ipaddress would cost ~1.5 ms

    ip, sep, length = address.partition("/")
    family, bits = (socket.AF_INET6, 128) if ":" in ip else (socket.AF_INET, 32)
    try:
        packed = socket.inet_pton(family, ip)
        plen = int(length)
    except (OSError, ValueError):
        raise ValueError(f"not an address with prefix: {address!r}") from None
    if not sep or not 0 <= plen <= bits:
        raise ValueError(f"not an address with prefix: {address!r}")
    value = int.from_bytes(packed, "big") & ~((1 << (bits - plen)) - 1)
    network = socket.inet_ntop(family, value.to_bytes(bits // 8, "big"))
    return (4 if bits == 32 else 6, network, plen)


def subnet_chain(network_addr: str, plen: int) -> str:
    """Chain name for a subnet: masq-10.88.0.0_16, masq-fd00___64 (':' is not allowed in
    an nft identifier, so a listing stays loadable with `nft -f`)."""
    return f"masq-{network_addr.replace(':', '_')}_{plen}"


def _split(address: str) -> tuple[int, str, str, int]:
    """(4 or 6, plain ip, network address, prefix length)."""
    version, network_addr, plen = subnet_of(address)
    return version, address.partition("/")[0], network_addr, plen


# --- builders: lists of nft JSON commands ----------------------------------------------


def _payload(version: int, field: str) -> dict:
    return {"payload": {"protocol": "ip" if version == 4 else "ip6", "field": field}}


def _not_in(version: int, addr: str, plen: int) -> dict:
    return {"match": {"op": "!=", "left": _payload(version, "daddr"),
                      "right": {"prefix": {"addr": addr, "len": plen}}}}


def build_element_create(key: str, addresses: list[str]) -> list[dict]:
    """The fast ADD: `create` the elements, which fails if the table, a map or the subnet
    chain is missing (ENOENT) or the address is already in a map (EEXIST); either way the
    caller falls back to build_full."""
    return [{"create": _element(key, address)} for address in addresses]


def build_full(key: str, addresses: list[str]) -> list[dict]:
    """The whole structure plus the elements, idempotent, as one atomic batch.

    `add chain` on an existing base chain is a no-op, so the base chain is flushed and its
    two rules re-added: they can never be duplicated, also under concurrent ADDs (the kernel
    serialises transactions). Each element is added, deleted and added again: a plain `add`
    of an address already in the map keeps the old element and its old comment (a stale
    owner), which would make a later DEL or GC act on the wrong attachment.
    """
    cmds = [
        {"add": {"table": {"family": FAMILY, "name": TABLE}}},
        {"add": {"map": {**_T, "name": MAP4, "type": "ipv4_addr", "map": "verdict"}}},
        {"add": {"map": {**_T, "name": MAP6, "type": "ipv6_addr", "map": "verdict"}}},
        {"add": {"chain": {**_T, "name": BASE_CHAIN, "type": "nat", "hook": "postrouting",
                           "prio": 100, "policy": "accept"}}},
        {"flush": {"chain": {**_T, "name": BASE_CHAIN}}},
    ]
    for version, name in ((4, MAP4), (6, MAP6)):
        vmap = {"vmap": {"key": _payload(version, "saddr"), "data": f"@{name}"}}
        cmds.append({"add": {"rule": {**_T, "chain": BASE_CHAIN, "expr": [vmap]}}})
    done = set()
    for address in addresses:
        version, _, network_addr, plen = _split(address)
        chain = subnet_chain(network_addr, plen)
        if chain in done:
            continue
        done.add(chain)
        multicast = ("224.0.0.0", 4) if version == 4 else ("ff00::", 8)
        expr = [_not_in(version, network_addr, plen), _not_in(version, *multicast),
                {"masquerade": None}]
        cmds += [
            {"add": {"chain": {**_T, "name": chain}}},
            {"flush": {"chain": {**_T, "name": chain}}},
            {"add": {"rule": {**_T, "chain": chain, "expr": expr}}},
        ]
    for address in addresses:
        version, ip, _, _ = _split(address)
        cmds += [
            {"add": _element(key, address)},
            {"delete": _element_key(version, ip)},
            {"add": _element(key, address)},
        ]
    return cmds


def build_delete(elements: list[tuple[str, str]]) -> list[dict]:
    """Delete elements given as (map name, ip)."""
    return [{"delete": {"element": {**_T, "name": name, "elem": [ip]}}} for name, ip in elements]


def _element(key: str, address: str) -> dict:
    version, ip, network_addr, plen = _split(address)
    verdict = {"jump": {"target": subnet_chain(network_addr, plen)}}
    name = MAP4 if version == 4 else MAP6
    key_expr = {"elem": {"val": ip, "comment": key}}
    return {"element": {**_T, "name": name, "elem": [[key_expr, verdict]]}}


def _element_key(version: int, ip: str) -> dict:
    return {"element": {**_T, "name": MAP4 if version == 4 else MAP6, "elem": [ip]}}


def parse_elements(listing: dict) -> list[tuple[str, str, str]]:
    """(map name, ip, comment) of every element of our maps in a `list` output."""
    found = []
    for item in listing.get("nftables", ()):
        m = item.get("map")
        if not m or m.get("table") != TABLE or m.get("name") not in (MAP4, MAP6):
            continue
        for elem in m.get("elem", ()):
            # [key, verdict]; the key is {"elem": {"val": ip, "comment": c}} when it has a
            # comment and a bare ip string when not (not ours, but listed for completeness).
            key = elem[0] if isinstance(elem, list) else elem
            if isinstance(key, str):
                found.append((m["name"], key, ""))
            elif isinstance(key, dict) and isinstance(key.get("elem", {}).get("val"), str):
                found.append((m["name"], key["elem"]["val"], key["elem"].get("comment", "")))
    return found


# --- executor ----------------------------------------------------------------------------

_ctx = None  # the process's one libnftables context; see the module docstring
_json = None  # the json module, once `nftables` has imported it


def _nft():
    global _ctx, _json
    if _ctx is None:
        try:
            import json

            import nftables

            ctx = nftables.Nftables()
        except (ImportError, OSError) as e:
            raise errors.CNIError(errors.INTERNAL, "nftables: cannot load libnftables", str(e))
        # libnftables 1.0.x reads JSON input only while JSON output is on; set it once
        # instead of toggling it per call as json_cmd does.
        ctx.set_json_output(True)
        _ctx, _json = ctx, json
    return _ctx


def _send(commands: list[dict]) -> tuple[int, bytes, str]:
    """Send one atomic batch; return (rc, output, error text)."""
    ctx = _nft()
    batch = {"nftables": [{"metainfo": {"json_schema_version": 1}}, *commands]}
    rc, out, err = ctx.cmd(_json.dumps(batch).encode())  # bytes in, bytes out
    return rc, out or b"", (err or b"").decode(errors="replace").strip()


def _execute(commands: list[dict], what: str) -> None:
    rc, _, err = _send(commands)
    if rc != 0:
        raise errors.CNIError(errors.INTERNAL, f"nftables: {what}", err)


def _list_table(family: str) -> dict:
    """The `list table <family> cni_bridge` output; an empty listing if there is no table."""
    # One `list table` (our table only): two `list map` commands in one batch fail in
    # libnftables 1.0.6 (the cache is filtered for the first one only).
    rc, out, err = _send([{"list": {"table": {"family": family, "name": TABLE}}}])
    if rc != 0:
        if _MISSING in err:
            return {}
        raise errors.CNIError(errors.INTERNAL, f"nftables: cannot list table {family} {TABLE}", err)
    return _json.loads(out)


def _list_elements() -> list[tuple[str, str, str]]:
    """Our maps' elements: (map name, ip, comment)."""
    return parse_elements(_list_table(FAMILY))


def _delete_matching(list_elements, delete_commands, match) -> list:
    """Delete the elements (as `list_elements` returns them) that satisfy `match`; return them.

    A concurrent DEL or GC may delete one of them between our list and our batch, which
    aborts the batch with ENOENT; listing again resolves it.
    """
    err = ""
    for _ in range(3):
        doomed = [e for e in list_elements() if match(e)]
        if not doomed:
            return []
        rc, _, err = _send(delete_commands(doomed))
        if rc == 0:
            return doomed
        if _MISSING not in err:
            break
    raise errors.CNIError(errors.INTERNAL, "nftables: cannot delete elements", err)


def _masq_delete_commands(doomed: list[tuple[str, str, str]]) -> list[dict]:
    return build_delete([(name, ip) for name, ip, _ in doomed])


# --- public API ----------------------------------------------------------------------------


def add_masquerade(network: str, container_id: str, ifname: str, addresses: list[str]) -> None:
    """Masquerade traffic from `addresses` ("10.88.0.5/16", "fd00::5/64") leaving their subnet."""
    if not addresses:
        return
    key = attachment_key(network, container_id, ifname)
    try:
        fast = build_element_create(key, addresses)
    except ValueError as e:
        raise errors.CNIError(errors.INVALID_CONFIG, "nftables: bad container address", str(e))
    rc, _, _ = _send(fast)
    if rc != 0:
        # Missing table/map/chain (first pod in this subnet) or a stale element for the
        # address: the full batch repairs both; its error is the one worth reporting.
        # A missing table or map fails in libnftables; a missing chain or an existing
        # element fails in the kernel, whose abort waits for an RCU grace period (8-18 ms),
        # once per subnet. Guarding with a `list chain` in the same batch would avoid that
        # but makes libnftables load the whole ruleset (45 ms with 5,000 foreign rules).
        _execute(build_full(key, addresses), "cannot set up masquerade")


def remove_masquerade(network: str, container_id: str, ifname: str) -> None:
    """Remove the attachment's elements; no table or no element is success."""
    key = attachment_key(network, container_id, ifname)
    _delete_matching(_list_elements, _masq_delete_commands, lambda e: e[2] == key)


def masquerade_addresses(network: str, container_id: str, ifname: str) -> list[str]:
    """Plain IPs in our maps for this attachment (for CHECK)."""
    key = attachment_key(network, container_id, ifname)
    return [ip for _, ip, comment in _list_elements() if comment == key]


def gc_masquerade(network: str, valid: set[tuple[str, str]]) -> list[tuple[str, str, str]]:
    """Remove `network`'s elements whose (container_id, ifname) is not in `valid`.

    Returns (ip, container_id, ifname) of what was removed; container_id and ifname are ""
    for elements whose key was hashed (names too long for a plain key).
    """
    keep = {attachment_key(network, cid, ifname) for cid, ifname in valid}

    def stale(e):
        return split_key(network, e[2]) is not None and e[2] not in keep

    removed = _delete_matching(_list_elements, _masq_delete_commands, stale)
    return [(ip, *split_key(network, comment)) for _, ip, comment in removed]


def check_usable() -> None:
    """Raise CNIError unless libnftables loads and the kernel answers (for STATUS).

    Lists only our base chain; "no such table" means usable (nothing set up yet).
    """
    rc, _, err = _send([{"list": {"chain": {**_T, "name": BASE_CHAIN}}}])
    if rc != 0 and _MISSING not in err:
        raise errors.CNIError(errors.INTERNAL, "nftables: kernel not usable", err)


# --- macspoofchk: drop frames whose source MAC is not the container's ----------------------
#
#     table bridge cni_bridge {
#         set spoof_ports   { type ifname; }                 # host veths under the check
#         set spoof_allowed { type ether_addr . ifname; }    # container MAC . its host veth
#         chain prerouting  { type filter hook prerouting priority -300;
#                             iifname @spoof_ports ether saddr . iifname != @spoof_allowed drop }
#     }
#
# The bridge family sees every frame a port receives before it is forwarded. As with
# masquerade, an attachment owns its elements through their comment, and the rule is static.

SPOOF_FAMILY = "bridge"
SPOOF_CHAIN = "prerouting"
SPOOF_PORTS = "spoof_ports"
SPOOF_ALLOWED = "spoof_allowed"
_S = {"family": SPOOF_FAMILY, "table": TABLE}


def build_spoof_elements(key: str, host_ifname: str, mac: str) -> list[dict]:
    return [
        {"add": {"element": {**_S, "name": SPOOF_PORTS, "elem": [{"elem": {"val": host_ifname, "comment": key}}]}}},
        {"add": {"element": {**_S, "name": SPOOF_ALLOWED, "elem": [
            {"elem": {"val": {"concat": [mac, host_ifname]}, "comment": key}}]}}},
    ]


def build_spoof_full(key: str, host_ifname: str, mac: str) -> list[dict]:
    """Everything the check needs; safe to send again (the chain is flushed and refilled)."""
    source_and_port = {"concat": [{"payload": {"protocol": "ether", "field": "saddr"}}, {"meta": {"key": "iifname"}}]}
    rule = [
        {"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": f"@{SPOOF_PORTS}"}},
        {"match": {"op": "!=", "left": source_and_port, "right": f"@{SPOOF_ALLOWED}"}},
        {"drop": None},
    ]
    return [
        {"add": {"table": {"family": SPOOF_FAMILY, "name": TABLE}}},
        {"add": {"set": {**_S, "name": SPOOF_PORTS, "type": "ifname"}}},
        {"add": {"set": {**_S, "name": SPOOF_ALLOWED, "type": ["ether_addr", "ifname"]}}},
        {"add": {"chain": {**_S, "name": SPOOF_CHAIN, "type": "filter", "hook": "prerouting",
                           "prio": -300, "policy": "accept"}}},
        {"flush": {"chain": {**_S, "name": SPOOF_CHAIN}}},
        {"add": {"rule": {**_S, "chain": SPOOF_CHAIN, "expr": rule}}},
        *build_spoof_elements(key, host_ifname, mac),
    ]


def parse_spoof_elements(listing: dict) -> list[tuple[str, object, str]]:
    """(set name, value, comment) of every element of our two spoof-check sets."""
    found = []
    for item in listing.get("nftables", ()):
        s = item.get("set")
        if not s or s.get("table") != TABLE or s.get("name") not in (SPOOF_PORTS, SPOOF_ALLOWED):
            continue
        for elem in s.get("elem", ()):
            if isinstance(elem, dict) and "elem" in elem:
                found.append((s["name"], elem["elem"]["val"], elem["elem"].get("comment", "")))
            else:
                found.append((s["name"], elem, ""))
    return found


def _list_spoof_elements() -> list[tuple[str, object, str]]:
    return parse_spoof_elements(_list_table(SPOOF_FAMILY))


def _spoof_delete_commands(doomed: list[tuple[str, object, str]]) -> list[dict]:
    return [{"delete": {"element": {**_S, "name": name, "elem": [value]}}} for name, value, _ in doomed]


def add_mac_spoof_check(network: str, container_id: str, ifname: str, host_ifname: str, mac: str) -> None:
    """Let frames into the bridge from `host_ifname` only with source MAC `mac`."""
    key = attachment_key(network, container_id, ifname)
    rc, _, _ = _send(build_spoof_elements(key, host_ifname, mac))
    if rc != 0:  # the table is not there yet
        _execute(build_spoof_full(key, host_ifname, mac), "cannot set up the MAC spoof check")


def remove_mac_spoof_check(network: str, container_id: str, ifname: str) -> None:
    key = attachment_key(network, container_id, ifname)
    _delete_matching(_list_spoof_elements, _spoof_delete_commands, lambda e: e[2] == key)


def mac_spoof_check_present(network: str, container_id: str, ifname: str) -> bool:
    key = attachment_key(network, container_id, ifname)
    return any(comment == key for _, _, comment in _list_spoof_elements())


def gc_mac_spoof_check(network: str, valid: set[tuple[str, str]]) -> int:
    """Remove `network`'s spoof-check elements of attachments not in `valid`; return how many."""
    keep = {attachment_key(network, cid, ifname) for cid, ifname in valid}

    def stale(e):
        return split_key(network, e[2]) is not None and e[2] not in keep

    return len(_delete_matching(_list_spoof_elements, _spoof_delete_commands, stale))


def attachment_keys_present() -> set[str]:
    """Every attachment key that owns something in our tables (masquerade, MAC spoof check):
    what `cni-bridge ls` compares with attachment_key(network, container id, ifname)."""
    keys = {comment for _, _, comment in _list_elements()}
    keys |= {comment for _, _, comment in _list_spoof_elements()}
    keys.discard("")
    return keys

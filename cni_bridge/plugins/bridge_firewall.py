"""The bridge plugin's nftables side: ipMasq (nft/masq.py) and macspoofchk (nft/spoof.py)
for one attachment, applied through nft/table.py.

plugins/bridge.py imports this only when a config turns one of them on, so a bridge
without them never loads the nftables layer. An attachment's key is
table.attachment_key(network, container id, ifname).
"""

from cni_bridge.cni.errors import CNIError, INVALID_CONFIG
from cni_bridge.nft import masq, spoof, table

attachment_key = table.attachment_key
usable = table.usable

MASQ_SETS = [*masq.SETS.values(), *masq.LOCAL_SETS.values(), *masq.LEGACY_MAPS.values()]
SPOOF_SETS = [spoof.PORTS, spoof.ALLOWED]


def add_masquerade(key: str, addresses: list[str], restore=None) -> None:
    """Masquerade traffic from `addresses` ("10.88.0.5/16") leaving their subnet.
    restore() -> [(key, address)] of the attachments that still exist, for a lost table."""
    try:
        elements = masq.elements(key, addresses)
    except ValueError as err:
        raise CNIError(INVALID_CONFIG, "nftables: bad container address", str(err)) from None
    restored = None
    if restore is not None:
        def restored():
            return [e for other, address in restore() for e in masq.elements(other, [address])]
    table.add(masq.layout, elements, restored)


def remove_masquerade(key: str, addresses: list[str] | None) -> None:
    """Remove the attachment's masquerade, found by address, or by listing our sets when the
    addresses are unknown; in the legacy maps too, with the subnet chains nothing jumps to
    any more."""
    if addresses is None:
        removed = table.remove_owned("inet", MASQ_SETS, key)
    else:
        candidates = masq.elements(key, addresses) + masq.legacy_elements(key, addresses)
        removed = table.remove("inet", key, candidates)
    legacy_chains = {e.data[1]: 1 for e in removed if e.set in masq.LEGACY_MAPS.values()}
    table.prune_chains("inet", legacy_chains)


def masquerade_problem(key: str, addresses: list[str]) -> str | None:
    """Why the attachment's traffic would not be masqueraded, or None."""
    try:
        wanted = masq.elements(key, addresses)
    except ValueError as err:
        return f"prevResult holds a bad address: {err}"
    return _problem("masquerade", key, wanted, masq.layout)


def add_spoof_check(key: str, host_ifname: str, mac: str) -> None:
    table.add(spoof.layout, spoof.elements(key, host_ifname, mac))


def remove_spoof_check(key: str, host_ifname: str | None, mac: str | None) -> None:
    """By key when the host veth and MAC are known, else by listing the two sets."""
    if host_ifname and mac:
        table.remove("bridge", key, spoof.elements(key, host_ifname, mac))
    else:
        table.remove_owned("bridge", SPOOF_SETS, key)


def spoof_check_problem(key: str, host_ifname: str, mac: str) -> str | None:
    return _problem("the MAC spoof check", key, spoof.elements(key, host_ifname, mac), spoof.layout)


def _problem(feature: str, key: str, wanted: list, layout_of) -> str | None:
    """The attachment's traffic is handled only if its elements are there, with their data,
    and the rules they depend on are intact."""
    if not wanted:
        return None
    layout = layout_of(wanted)
    for element, stored in zip(wanted, table.lookup(layout.family, wanted)):
        if stored is None or stored.comment != key or stored.data != element.data:
            return f"{feature} of {key}: an element of {element.set} is missing or not ours"
    problems = table.layout_problems(layout)
    return f"{feature} of {key} would not apply: {'; '.join(problems)}" if problems else None


def gc(network: str, valid: set[tuple[str, str]]) -> list:
    """Remove `network`'s masquerade and MAC spoof check elements of attachments not in
    `valid`; return them. The legacy layout goes as it empties: its subnet chains nothing
    jumps to, then its maps and base chain."""
    removed = []
    for family, sets in (("inet", MASQ_SETS), ("bridge", SPOOF_SETS)):
        removed += table.remove_stale(family, sets, network, valid)
    chains = table.chain_uses("inet")
    table.prune_chains("inet", {chain: 1 for chain in chains if masq.is_legacy_subnet_chain(chain)})
    legacy = [name for name in masq.LEGACY_MAPS.values() if name in table.set_names("inet")]
    if legacy and not any(table.elements("inet", name) for name in legacy):
        table.remove_objects("inet", masq.legacy_layout_objects(legacy, masq.LEGACY_BASE_CHAIN in chains))
    return removed

"""The portmap plugin: publish container ports on the node, chained after a plugin that
gave the container its addresses.

runtimeConfig.portMappings (the `portMappings` capability) lists what to publish; each
mapping goes to the first IPv4 and the first IPv6 address of prevResult on CNI_IFNAME.
The rules are nftables, in our table (cni_bridge/nft/portmap.py says what they are), owned
per attachment (network, container id, ifname). ADD refuses a host port that another
attachment holds. DEL removes the attachment's mappings by key, or, when the runtime left
portMappings or prevResult out, by their owner. UDP conntrack entries to a mapped host
port are forgotten after ADD and DEL, so a client that keeps its source port follows the
mapping. CHECK names what is missing, GC removes what no valid attachment owns.

Every command reads top to bottom: validate the whole config, then act. This module
imports the protocol layer, its config schema, kernel/rtnl, kernel/sysctl,
kernel/conntrack and our nftables layer (tests/unit/test_import_boundaries.py).
"""

from cni_bridge import _schemas
from cni_bridge.cni.addr import format_ip, parse_cidr, parse_ip
from cni_bridge.cni.errors import CNIError, INTERNAL, INVALID_CONFIG
from cni_bridge.cni.schema import validate_conf
from cni_bridge.cni.skel import CmdArgs, Plugin, log, valid_attachments
from cni_bridge.kernel import conntrack, sysctl
from cni_bridge.kernel.netlink import NetlinkError
from cni_bridge.kernel.rtnl import RouteSocket
from cni_bridge.nft import portmap, table
from cni_bridge.nft.portmap import Mapping
from cni_bridge.nft.table import Element

FAMILIES = (4, 6)
# Go's JSON decoder matches keys whatever their case, and containerd (go-cni) sends its port
# mappings with Go's field names (HostPort, ContainerPort, Protocol, HostIP).
_MAPPING_KEYS = {key.lower(): key for key in ("hostPort", "containerPort", "protocol", "hostIP")}


class PortmapConf:
    """The validated config: the attachment's key, the options, the port mappings (not yet
    tied to container addresses) and the conditions of each family."""

    def __init__(self, cmd_args: CmdArgs):
        conf = validate_conf(_schemas.PORTMAP_CONF, with_mapping_keys_as_go_reads_them(cmd_args.conf))
        self.network = cmd_args.network_name
        self.key = table.attachment_key(self.network, cmd_args.container_id, cmd_args.ifname)
        self.snat: bool = conf.get("snat", True)
        self.masq_all: bool = conf.get("masqAll", False)
        self.entries = port_entries((conf.get("runtimeConfig") or {}).get("portMappings") or [])
        # family -> (its condition chain, the conditions as match expressions)
        self.conditions: dict[int, tuple[str, list[dict]]] = {}
        for family in FAMILIES:
            tokens = conf.get(f"conditionsV{family}") or []
            if not tokens:
                continue
            try:
                expressions = portmap.parse_conditions(tokens, family)
            except ValueError as err:
                raise _bad(f"conditionsV{family}: {err}") from None
            self.conditions[family] = (portmap.condition_chain(family, expressions), expressions)

    def mappings(self, addresses: dict[int, str]) -> list[Mapping]:
        """Each entry in each family it covers that the container has an address of."""
        found = []
        for family, host_ip, protocol, host_port, container_port in self.entries:
            for each in FAMILIES:
                if family in (None, each) and each in addresses:
                    found.append(Mapping(each, host_ip, protocol, host_port, addresses[each].partition("/")[0],
                                         container_port))
        return found

    def elements(self, mapping: Mapping, address: str) -> list[Element]:
        """The elements that publish one mapping: its DNAT, the jump to its conditions, and
        the masquerade of the sources that need it (address: the container's "ip/prefix")."""
        found = [portmap.dnat_element(self.key, mapping)]
        if mapping.family in self.conditions:
            found.append(portmap.condition_element(self.key, mapping, self.conditions[mapping.family][0]))
        if not self.snat:
            sources = []
        elif self.masq_all:
            sources = [("0.0.0.0" if mapping.family == 4 else "::", 0)]
        else:
            ip, _, prefix = address.partition("/")
            # hairpin from the container's whole subnet; the node's own 127.0.0.1 (IPv4)
            sources = [(ip, int(prefix))] + ([("127.0.0.0", 8)] if mapping.family == 4 else [])
        return found + portmap.masquerade_elements(self.key, mapping, sources)

    def every_element(self, mapping: Mapping, address: str) -> list[Element]:
        """The elements any portmap config could have made for the mapping (DEL's candidates:
        the config may have changed since ADD); only their keys matter."""
        ip, _, prefix = address.partition("/")
        sources = [(ip, int(prefix)), ("0.0.0.0" if mapping.family == 4 else "::", 0)]
        if mapping.family == 4:
            sources.append(("127.0.0.0", 8))
        return [portmap.dnat_element(self.key, mapping), portmap.condition_element(self.key, mapping, ""),
                *portmap.masquerade_elements(self.key, mapping, sources)]

    def attachment_elements(self, mappings: list[Mapping], addresses: dict[int, str]) -> list[Element]:
        """Every element of the attachment, each once; two mappings that want different
        things under one key are invalid config."""
        found: dict[tuple[str, bytes], tuple[Mapping, Element]] = {}
        for mapping in mappings:
            for element in self.elements(mapping, addresses[mapping.family]):
                first, prior = found.setdefault((element.set, element.key), (mapping, element))
                if prior.data != element.data:
                    raise _bad(f"portMappings publish the same port twice: {first} and {mapping}")
        return [element for _, element in found.values()]

    def layout_of(self, elements: list[Element]):
        """The layout these elements need: the base chains, and the condition chain of this
        config's conditions if an element jumps to it."""
        targets = {e.data[1] for e in elements if isinstance(e.data, tuple)}
        return portmap.layout({chain: (family, expressions) for family, (chain, expressions) in self.conditions.items()
                               if chain in targets})


def with_mapping_keys_as_go_reads_them(conf: dict) -> dict:
    """The config with each port mapping's keys spelled as our schema has them when they
    match without regard to case (a later key wins, as in Go)."""
    runtime_config = conf.get("runtimeConfig")
    mappings = runtime_config.get("portMappings") if type(runtime_config) is dict else None
    if type(mappings) is not list:
        return conf
    entries = [{_MAPPING_KEYS.get(key.lower(), key): value for key, value in entry.items()}
               if type(entry) is dict else entry for entry in mappings]
    return {**conf, "runtimeConfig": {**runtime_config, "portMappings": entries}}


def _bad(details: str) -> CNIError:
    return CNIError(INVALID_CONFIG, "invalid portmap config", details)


def port_entries(entries: list[dict]) -> list[tuple[int | None, str | None, str, int, int]]:
    """runtimeConfig.portMappings as (family or None for both, host address or None for
    every local address of that family, protocol, host port, container port).

    As in the reference, an empty hostIP means every local address of both families,
    0.0.0.0 and :: every address of their own family, and any other address only itself."""
    found = []
    for index, entry in enumerate(entries):
        protocol = (entry.get("protocol") or "tcp").lower()
        if protocol not in portmap.PROTOCOLS:
            raise _bad(f"portMappings.{index}.protocol: {entry['protocol']!r} is not tcp, udp or sctp")
        family, host_ip = None, None
        if entry.get("hostIP"):
            try:
                family, value = parse_ip(entry["hostIP"])
            except ValueError:
                raise _bad(f"portMappings.{index}.hostIP: {entry['hostIP']!r} is not an IP address") from None
            if family == 6 and value >> 32 == 0xFFFF:  # ::ffff:a.b.c.d is an IPv4 address
                family, value = 4, value & 0xFFFFFFFF
            host_ip = format_ip(family, value) if value else None
        found.append((family, host_ip, protocol, entry["hostPort"], entry["containerPort"]))
    return found


def container_addresses(prev: dict, ifname: str) -> dict[int, str]:
    """The first IPv4 and first IPv6 "ip/prefix" of prevResult on the container's interface
    `ifname` (an address that names no interface counts too, as in the reference)."""
    interfaces = prev.get("interfaces") or []
    found: dict[int, str] = {}
    for ip in prev.get("ips") or []:
        index = ip.get("interface")
        if index is not None:
            if not isinstance(index, int) or not 0 <= index < len(interfaces):
                continue
            iface = interfaces[index]
            if iface.get("name") != ifname or not iface.get("sandbox"):
                continue
        try:
            (family, _), _ = parse_cidr(ip.get("address") or "")
        except ValueError:
            raise CNIError(INVALID_CONFIG, "invalid prevResult", f"address {ip.get('address')!r}") from None
        found.setdefault(family, ip["address"])
    return found


# ---- the kernel ------------------------------------------------------------------------


def _conflict_check(key: str, mappings: list[Mapping]):
    """check() for table.add: refuse a host port another attachment holds, exactly or
    through an overlap of a wildcard and an address of the same family."""

    def check() -> None:
        probes: list[tuple[Mapping, Element]] = []
        for mapping in mappings:
            probes.append((mapping, Element(mapping.dnat_map(), mapping.dnat_key())))
            if mapping.host_ip:
                wildcard = Mapping(mapping.family, None, mapping.protocol, mapping.host_port, "", 0)
                probes.append((wildcard, Element(wildcard.dnat_map(), wildcard.dnat_key())))
        for (holder_mapping, _), stored in zip(probes, table.lookup("inet", [probe for _, probe in probes])):
            if stored is not None and stored.comment != key:
                raise _taken(holder_mapping, stored.comment)
        for family in FAMILIES:
            wildcards = [m for m in mappings if m.family == family and not m.host_ip]
            if not wildcards:
                continue
            # A wildcard also overlaps every address-bound mapping of its port: the map of
            # those is listed (it holds only the mappings with a hostIP).
            for stored in table.elements("inet", portmap.HOSTIP[family]):
                _, protocol, port = portmap.host_port_of(stored) or (None, None, None)
                if stored.comment != key and any((m.protocol, m.host_port) == (protocol, port) for m in wildcards):
                    host_ip = format_ip(family, int.from_bytes(stored.key[:4 if family == 4 else 16], "big"))
                    raise _taken(Mapping(family, host_ip, protocol, port, "", 0), stored.comment)

    return check


def _taken(mapping: Mapping, holder: str) -> CNIError:
    published = f"{mapping.protocol} {mapping.host_port} on {mapping.host_ip or f'every IPv{mapping.family} address'}"
    return CNIError(INTERNAL, "host port is already published", f"{published} belongs to {holder or 'no attachment'}")


def _interface_toward(container_ip: str) -> str:
    """The name of the interface the node's route to the container leaves by."""
    try:
        with RouteSocket.host() as host:
            link = host.get_link(index=host.route_to(container_ip)["oif"])
    except NetlinkError as err:
        raise CNIError(INTERNAL, f"failed to find the interface toward {container_ip}", str(err)) from None
    if link is None:
        raise CNIError(INTERNAL, f"failed to find the interface toward {container_ip}")
    return link.name


def enable_route_localnet(container_ip: str) -> None:
    """route_localnet=1 on the interface toward the container, so that 127.0.0.1 sources
    (DNATed from the node itself, then masqueraded) may leave through it."""
    key = f"net/ipv4/conf/{_interface_toward(container_ip)}/route_localnet"
    try:
        if sysctl.read(key) != "1":
            sysctl.write(key, "1")
    except OSError as err:
        raise CNIError(INTERNAL, f"failed to set {key.replace('/', '.')}", str(err)) from None


def route_localnet_problem(container_ip: str) -> str | None:
    try:
        name = _interface_toward(container_ip)
        if sysctl.read(f"net/ipv4/conf/{name}/route_localnet") != "1":
            return f"route_localnet is off on {name}, so 127.0.0.1 cannot reach {container_ip}"
    except CNIError as err:
        return str(err)
    except OSError as err:
        return f"route_localnet toward {container_ip}: {err}"
    return None


def forget_udp_connections(elements: list[Element], when: str) -> None:
    """Delete the conntrack entries to the UDP host ports of these DNAT elements, on the
    host address of each (every local address of its family for a wildcard). A failure is
    logged: the mappings work, only a client that keeps its source port may lag."""
    destinations: dict[tuple[int, int], set[str | None]] = {}
    for element in elements:
        host_port = portmap.host_port_of(element) if element.set in portmap.DNAT_MAPS else None
        if host_port and host_port[1] == "udp":
            destinations.setdefault((host_port[0], host_port[2]), set()).add(portmap.host_ip_of(element))
    local: dict[int, set[str]] | None = None
    for (family, port), host_ips in sorted(destinations.items(), key=lambda item: item[0]):
        try:
            if None in host_ips:
                local = local if local is not None else _local_addresses()
                host_ips = (host_ips - {None}) | local[family]
            conntrack.delete_entries_to_port(family, portmap.PROTOCOLS["udp"], port, host_ips)
        except OSError as err:
            log(f"{when}: cannot delete the UDP conntrack entries to port {port} (IPv{family}): {err}")


def _local_addresses() -> dict[int, set[str]]:
    """The node's own addresses by family: where a wildcard mapping's traffic is sent."""
    found: dict[int, set[str]] = {4: set(), 6: set()}
    with RouteSocket.host() as host:
        for _, cidr in host.list_addresses():
            address = cidr.partition("/")[0]
            found[6 if ":" in address else 4].add(address)
    return found


def prune_condition_chains(removed: list[Element]) -> None:
    chains = {e.data[1] for e in removed if isinstance(e.data, tuple)}
    table.prune_chains("inet", {chain: portmap.COND_CHAIN_RULES for chain in chains})


# ---- commands --------------------------------------------------------------------------


def _chained(cmd_args: CmdArgs) -> tuple[PortmapConf, dict, dict[int, str], list[Mapping]]:
    """ADD's and CHECK's config, prevResult (which they need), container addresses and mappings."""
    conf = PortmapConf(cmd_args)
    prev = cmd_args.prev_result()
    if prev is None:
        raise CNIError(INVALID_CONFIG, "portmap must be called as a chained plugin",
                       f"{cmd_args.command} without prevResult")
    addresses = container_addresses(prev, cmd_args.ifname)
    return conf, prev, addresses, conf.mappings(addresses)


def cmd_add(cmd_args: CmdArgs) -> dict:
    conf, prev, addresses, mappings = _chained(cmd_args)
    wanted = conf.attachment_elements(mappings, addresses)
    if not wanted:
        return prev

    try:
        table.add(conf.layout_of, wanted, check=_conflict_check(conf.key, mappings))
        if conf.snat and any(m.family == 4 for m in mappings):
            enable_route_localnet(addresses[4].partition("/")[0])
    except BaseException:
        # Also after a failed add: a batch the kernel applied may still be answered with an
        # error (or interrupted). The removal touches only this attachment's elements.
        try:
            table.remove("inet", conf.key, wanted)
            # the condition chain, also when only the layout went in
            table.prune_chains("inet", {chain: portmap.COND_CHAIN_RULES for chain, _ in conf.conditions.values()})
        except Exception as undo_err:  # report the original failure, not the cleanup's
            log(f"cleanup after failed ADD: {undo_err}")
        raise
    # After the rules: the next packet of a forgotten connection meets them.
    forget_udp_connections(wanted, "ADD")
    return prev


def cmd_del(cmd_args: CmdArgs) -> None:
    """Remove the attachment's elements: by key when portMappings and prevResult say what
    they are, else every element it owns. Nothing there is success, and so is a config ADD
    would refuse: it still names the attachment."""
    key = table.attachment_key(cmd_args.network_name, cmd_args.container_id, cmd_args.ifname)
    candidates = _del_candidates(cmd_args)
    if candidates is not None:
        removed = table.remove("inet", key, candidates)
    else:
        removed = table.remove_owned("inet", portmap.SETS, key)
    prune_condition_chains(removed)
    forget_udp_connections(removed, "DEL")


def _del_candidates(cmd_args: CmdArgs) -> list[Element] | None:
    """Every element the attachment's ADD could have made, found by key (whatever snat,
    masqAll or the conditions said then); None when the config or prevResult cannot say."""
    try:
        conf = PortmapConf(cmd_args)
        prev = cmd_args.prev_result_if_usable()
        addresses = container_addresses(prev, cmd_args.ifname) if prev else {}
    except CNIError as err:
        log(f"DEL: {err}; removing every element the attachment owns")
        return None
    mappings = conf.mappings(addresses)
    if not mappings:
        return None
    candidates: dict[tuple[str, bytes], Element] = {}
    for mapping in mappings:
        for element in conf.every_element(mapping, addresses[mapping.family]):
            candidates.setdefault((element.set, element.key), element)
    return list(candidates.values())


def cmd_check(cmd_args: CmdArgs) -> None:
    """Each mapping's elements are there, ours, with their data; the rules they depend on
    are intact; 127.0.0.1 can reach the container. The first problem is named."""
    conf, _, addresses, mappings = _chained(cmd_args)
    wanted = [(mapping, element) for mapping in mappings
              for element in conf.elements(mapping, addresses[mapping.family])]
    if not wanted:
        return
    for (mapping, element), stored in zip(wanted, table.lookup("inet", [e for _, e in wanted])):
        if stored is None or stored.comment != conf.key or stored.data != element.data:
            raise _check_failed(f"{mapping} of {conf.key}: its element of {element.set} is missing or not ours")
    problems = table.layout_problems(conf.layout_of([e for _, e in wanted]))
    if problems:
        raise _check_failed(f"the mappings of {conf.key} would not apply: {'; '.join(problems)}")
    if conf.snat and any(m.family == 4 for m in mappings):
        problem = route_localnet_problem(addresses[4].partition("/")[0])
        if problem:
            raise _check_failed(problem)


def _check_failed(what: str) -> CNIError:
    return CNIError(INTERNAL, f"CHECK failed: {what}")


def cmd_gc(cmd_args: CmdArgs) -> None:
    """Remove the network's mappings of attachments the runtime no longer lists, and the
    condition chains nothing jumps to any more."""
    conf = PortmapConf(cmd_args)
    valid = valid_attachments(cmd_args.conf)
    if valid is None:
        raise CNIError(INVALID_CONFIG, "GC needs cni.dev/valid-attachments in the config")
    removed = table.remove_stale("inet", portmap.SETS, conf.network, valid)
    if removed:
        log(f"GC removed {len(removed)} portmap elements of {sorted({e.comment for e in removed})}")
    table.prune_chains("inet", {chain: portmap.COND_CHAIN_RULES for chain in table.chain_uses("inet")
                                if portmap.is_condition_chain(chain)})
    forget_udp_connections(removed, "GC")


def cmd_status(cmd_args: CmdArgs) -> None:
    PortmapConf(cmd_args)
    table.usable()


PLUGIN = Plugin(
    about="portmap from cni-bridge (Python)",
    add=cmd_add, delete=cmd_del, check=cmd_check, gc=cmd_gc, status=cmd_status,
)

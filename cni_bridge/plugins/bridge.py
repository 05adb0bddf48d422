"""The bridge plugin: a veth from the container to a Linux bridge, addresses from IPAM,
masquerade and the MAC spoof check in nftables (plugins/bridge_firewall.py, loaded only
when the config asks for them).

Every command reads top to bottom: validate the whole config, then act. ADD undoes what it
did when a later step fails; DEL carries on past whatever is already gone.
"""

import os
import sys

from cni_bridge import _schemas
from cni_bridge.cni import invoke, names, version
from cni_bridge.cni.addr import parse_cidr, parse_ip
from cni_bridge.cni.errors import CNIError, INTERNAL, INVALID_CONFIG
from cni_bridge.cni.schema import validate_conf
from cni_bridge.cni.skel import CmdArgs, Plugin, log, valid_attachments
from cni_bridge.kernel import sysctl
from cni_bridge.kernel.netlink import NetlinkError
from cni_bridge.kernel.netns import open_netns
from cni_bridge.kernel.rtnl import AF_INET, AF_INET6, RouteSocket, address_request, get_link_request, link_or_none
from cni_bridge.kernel.rtnl import list_addresses_request, parse_address, route_request, set_link_request

DEFAULT_BRIDGE = "cni0"
DEFAULT_ROUTE = {4: "0.0.0.0/0", 6: "::/0"}
EEXIST, ENODEV, EOPNOTSUPP, EADDRNOTAVAIL = 17, 19, 95, 99


class BridgeConf:
    """The validated config with defaults applied and every option checked."""

    def __init__(self, cmd_args: CmdArgs):
        conf = validate_conf(_schemas.BRIDGE_CONF, cmd_args.conf)
        self.network = cmd_args.network_name
        self.bridge: str = conf.get("bridge") or DEFAULT_BRIDGE
        self.is_default_gateway: bool = conf.get("isDefaultGateway", False)
        # A default gateway must own the gateway address, as in the reference.
        self.is_gateway: bool = conf.get("isGateway", False) or self.is_default_gateway
        self.force_address: bool = conf.get("forceAddress", False)
        self.ip_masq: bool = conf.get("ipMasq", False)
        self.mtu: int | None = conf.get("mtu")
        self.hairpin: bool = conf.get("hairpinMode", False)
        self.promisc: bool = conf.get("promiscMode", False)
        self.vlan: int = conf.get("vlan", 0)
        self.preserve_default_vlan: bool = conf.get("preserveDefaultVlan", True)
        self.enable_dad: bool = conf.get("enabledad", False)
        self.mac_spoof_check: bool = conf.get("macspoofchk", False)
        self.disable_container_interface: bool = conf.get("disableContainerInterface", False)
        self.port_isolation: bool = conf.get("portIsolation", False)
        self.dns: dict = conf.get("dns") or {}
        self.ipam_type: str = (conf.get("ipam") or {}).get("type", "")
        self.vlan_trunk = _vlan_trunk(conf.get("vlanTrunk") or [])
        # Only ADD sets a MAC: DEL and CHECK must work for a container whatever CNI_ARGS now says.
        self.mac = _container_mac(conf, cmd_args.args) if cmd_args.command == "ADD" else None
        self.container_id, self.ifname = cmd_args.container_id, cmd_args.ifname

        if self.hairpin and self.promisc:
            raise _bad("cannot set hairpinMode and promiscMode at the same time")
        if self.disable_container_interface and self.ipam_type:
            raise _bad("cannot use IPAM when disableContainerInterface is set")
        problem = names.interface_name_problem(self.bridge)
        if problem:
            raise _bad(f"bridge name {names.shown(self.bridge)} {problem}")
        if self.vlan and any(low <= self.vlan <= high for low, high in self.vlan_trunk):
            raise _bad(f"vlan {self.vlan} is also in vlanTrunk")
        if self.ipam_type:
            invoke.check_ipam_type(self.ipam_type)

    @property
    def vlan_filtering(self) -> bool:
        return bool(self.vlan or self.vlan_trunk)

    @property
    def key(self) -> str:
        """The attachment's key: what owns its nftables elements."""
        return firewall().attachment_key(self.network, self.container_id, self.ifname)


def firewall():
    """plugins/bridge_firewall, imported on first need."""
    from cni_bridge.plugins import bridge_firewall

    return bridge_firewall


def _bad(details: str) -> CNIError:
    return CNIError(INVALID_CONFIG, "invalid bridge config", details)


def _vlan_trunk(entries: list[dict]) -> list[tuple[int, int]]:
    trunk = []
    for entry in entries:
        if "id" in entry:
            if "minID" in entry or "maxID" in entry:
                raise _bad("a vlanTrunk entry has either id or minID/maxID")
            trunk.append((entry["id"], entry["id"]))
        elif "minID" in entry and "maxID" in entry:
            if not 0 < entry["minID"] <= entry["maxID"]:
                raise _bad(f"vlanTrunk range {entry['minID']}-{entry['maxID']} is empty or starts at 0")
            trunk.append((entry["minID"], entry["maxID"]))
        else:
            raise _bad("a vlanTrunk entry needs id, or minID and maxID together")
        if trunk[-1][0] == 0:
            raise _bad("vlanTrunk id 0 is not a VLAN")
    return trunk


def _container_mac(conf: dict, cni_args: dict) -> str | None:
    """runtimeConfig.mac over args.cni.mac over CNI_ARGS MAC=, as in the reference."""
    mac = (conf.get("runtimeConfig") or {}).get("mac") or ((conf.get("args") or {}).get("cni") or {}).get("mac")
    mac = mac or cni_args.get("MAC")
    if not mac:
        return None
    parts = mac.replace("-", ":").lower().split(":")
    if len(parts) != 6 or not all(len(p) == 2 and all(c in "0123456789abcdef" for c in p) for p in parts):
        raise _bad(f"invalid MAC address {mac!r}")
    if int(parts[0], 16) & 1:
        raise _bad(f"MAC address {mac} is a multicast address")
    return ":".join(parts)


def _family(address: str) -> int:
    return 6 if ":" in address else 4


def _random_mac() -> str:
    """A locally administered unicast MAC, as the kernel picks one for a new bridge."""
    raw = bytearray(os.urandom(6))
    raw[0] = (raw[0] & 0xFE) | 0x02
    return ":".join(f"{b:02x}" for b in raw)


# ---- IPAM: our host-local in process, anything else executed from CNI_PATH -------------


def run_ipam(command: str, cmd_args: CmdArgs, conf: BridgeConf) -> dict | None:
    executable = invoke.find_plugin(conf.ipam_type, cmd_args.path)
    if conf.ipam_type == "host-local" and (executable is None or _is_this_program(executable)):
        # Our own host-local: a function call instead of a second process start.
        from ipam import host_local

        return host_local.PLUGIN.functions[command](cmd_args)
    if executable is None:
        raise CNIError(INVALID_CONFIG, f"failed to find IPAM plugin {conf.ipam_type!r}", f"CNI_PATH={cmd_args.path}")
    return invoke.exec_plugin(executable, command, cmd_args)


def _is_this_program(executable: str) -> bool:
    return getattr(sys, "frozen", False) and os.path.realpath(executable) == os.path.realpath(sys.executable)


def leased_addresses(cmd_args: CmdArgs, conf: BridgeConf) -> list[tuple[str, str]]:
    """(attachment key, "ip/prefix") of every host-local lease of this network: whose
    masquerade goes back when our table was lost, and where DEL finds its own addresses.
    Other IPAM types keep no record we can read."""
    if conf.ipam_type != "host-local":
        return []
    from ipam.config import load_ipam_config
    from ipam.store import Store

    ipam = load_ipam_config(cmd_args)
    found = []
    with Store(ipam.data_dir, conf.network, create=False) as store:
        for ip, container_id, ifname in store.leases():
            if ifname is None:
                continue  # an id-only lease from an old host-local: its attachment is unknown
            try:
                address = parse_ip(ip)
            except ValueError:
                continue
            subnets = [r.subnet for range_set in ipam.range_sets for r in range_set if address in r.subnet]
            if subnets:
                found.append((firewall().attachment_key(conf.network, container_id, ifname),
                              f"{ip}/{subnets[0].prefix}"))
    return found


# ---- ADD -----------------------------------------------------------------------------


def cmd_add(cmd_args: CmdArgs) -> dict:
    conf = BridgeConf(cmd_args)
    netns_fd = open_netns(cmd_args.netns)
    host = RouteSocket.host()
    container = RouteSocket.in_netns(netns_fd)
    bridge, created = ensure_bridge(host, conf)
    # The container end's MAC is ours to pick, as the kernel would (random, locally
    # administered), so that nothing has to read it back.
    container_mac = conf.mac or _random_mac()
    host_veth = create_veth(host, container, cmd_args, conf, bridge, netns_fd, container_mac)
    undo = [lambda: _delete_if_present(host, host_veth.name)]  # newest last, taken back if a later step fails
    try:
        setup_host_veth(host, host_veth, conf)
        ipam_result = run_ipam("ADD", cmd_args, conf) if conf.ipam_type else {}
        if conf.ipam_type:
            undo.append(lambda: run_ipam("DEL", cmd_args, conf))
        ips = ipam_result.get("ips") or []
        routes = calc_routes(ipam_result, conf)
        if conf.ip_masq and ips:
            addresses = [ip["address"] for ip in ips]
            # registered first: a batch the kernel applied may still be answered with an error
            # (or interrupted), and the removal touches only elements this attachment owns
            undo.append(lambda: firewall().remove_masquerade(conf.key, addresses))
            firewall().add_masquerade(conf.key, addresses, lambda: leased_addresses(cmd_args, conf))
        setup_container_interface(container, host_veth.peer_index, cmd_args.ifname, ips, routes, conf)
        if conf.mac_spoof_check:
            undo.append(lambda: firewall().remove_spoof_check(conf.key, host_veth.name, container_mac))
            firewall().add_spoof_check(conf.key, host_veth.name, container_mac)
        # The gateway goes on the bridge last; the bridge is read again with it when we did
        # not create it, since the MAC of a bridge nobody pinned follows its ports.
        bridge = setup_gateway(host, bridge, ips, conf, refetch=not created)
    except BaseException as err:
        for step in reversed(undo):
            try:
                step()
            except Exception as undo_err:  # report the original failure, not the cleanup's
                log(f"cleanup after failed ADD: {undo_err}")
        if isinstance(err, NetlinkError):
            raise CNIError(INTERNAL, str(err)) from None
        raise

    result = {
        "cniVersion": version.CURRENT_VERSION,
        "interfaces": [
            {"name": bridge.name, "mac": bridge.mac},
            {"name": host_veth.name, "mac": host_veth.mac},
            {"name": cmd_args.ifname, "mac": container_mac, "sandbox": cmd_args.netns},
        ],
    }
    if ips:
        result["ips"] = [{**ip, "interface": 2} for ip in ips]
    if routes:
        result["routes"] = routes
    dns = conf.dns if any(conf.dns.values()) else ipam_result.get("dns")
    if dns:
        result["dns"] = dns
    return result


def _netlink(what: str, function, *args, **kwargs):
    try:
        return function(*args, **kwargs)
    except NetlinkError as err:
        raise CNIError(INTERNAL, f"failed to {what}", str(err)) from None


def _delete_if_present(sock: RouteSocket, name: str) -> None:
    link = sock.get_link(name=name)
    if link is not None:
        sock.delete_link(link.index)


def ensure_bridge(host: RouteSocket, conf: BridgeConf):
    """The bridge, created if missing, and whether we created it; an existing link of that
    name must be a bridge."""
    bridge = host.get_link(name=conf.bridge)
    created = False
    if bridge is None:
        try:
            # Our own MAC for it: left alone, a bridge's MAC follows its lowest port's and
            # changes as containers come and go, which breaks the neighbours' ARP caches.
            bridge = host.create_bridge(conf.bridge, mtu=conf.mtu, vlan_filtering=conf.vlan_filtering,
                                        mac=_random_mac())
            created = True
        except NetlinkError as err:
            if err.errno == EOPNOTSUPP and conf.vlan_filtering:  # for IFLA_BR_VLAN_FILTERING
                raise CNIError(INTERNAL, f"failed to create bridge {conf.bridge} with VLAN filtering",
                               f"vlan or vlanTrunk needs a kernel with CONFIG_BRIDGE_VLAN_FILTERING: {err}") from None
            if err.errno != EEXIST:  # EEXIST: another ADD created it a moment ago
                raise CNIError(INTERNAL, f"failed to create bridge {conf.bridge}", str(err)) from None
            bridge = host.get_link(name=conf.bridge)
    if bridge is None or bridge.kind != "bridge":
        raise CNIError(INTERNAL, f"{conf.bridge} already exists but is not a bridge", f"kind {getattr(bridge, 'kind', None)}")
    if conf.vlan_filtering and not bridge.vlan_filtering:
        raise CNIError(INTERNAL, f"bridge {conf.bridge} exists without VLAN filtering", "vlan or vlanTrunk needs it")
    changes = {}
    if not bridge.up:
        changes["up"] = True
    if conf.promisc and not bridge.promisc:
        changes["promisc"] = True
    if changes:
        _netlink(f"set up bridge {conf.bridge}", host.set_link, bridge.index, **changes)
    return bridge, created


def create_veth(host: RouteSocket, container: RouteSocket, cmd_args: CmdArgs, conf: BridgeConf, bridge, netns_fd: int,
                container_mac: str):
    """The veth pair, its container end made in the container's netns with its name and MAC,
    its host end up on the bridge; the host end's Link (peer_index: the container end's
    ifindex)."""
    host_name = "veth" + os.urandom(4).hex()
    try:
        return host.create_veth(host_name, cmd_args.ifname, netns_fd, mtu=conf.mtu, peer_mac=container_mac,
                                master=bridge.index, up=True)
    except NetlinkError as err:
        if err.errno == EEXIST and container.get_link(name=cmd_args.ifname) is not None:
            raise CNIError(INTERNAL, f"container interface {cmd_args.ifname} already exists",
                           f"in {cmd_args.netns}") from None
        raise CNIError(INTERNAL, f"failed to create veth {host_name}", str(err)) from None


def setup_host_veth(host: RouteSocket, veth, conf: BridgeConf) -> None:
    """Bridge port options and VLANs of the host end (created up, on the bridge)."""
    port = {}
    if conf.hairpin:
        port["hairpin"] = True
    if conf.port_isolation:
        port["isolated"] = True
    if port:
        _netlink(f"set port options on {veth.name}", host.set_bridge_port, veth.index, **port)
    if conf.vlan_filtering:
        if conf.vlan:
            _netlink(f"set vlan {conf.vlan} on {veth.name}", host.bridge_vlan_add,
                     veth.index, conf.vlan, pvid=True, untagged=True)
        for low, high in conf.vlan_trunk:
            _netlink(f"set vlan trunk {low}-{high} on {veth.name}", host.bridge_vlan_add,
                     veth.index, low, vid_end=high if high != low else None)
        if not conf.preserve_default_vlan and conf.vlan != 1:
            # The kernel gives every new port the bridge's default VLAN (1); drop it so the
            # port carries only what the config asks for.
            _netlink(f"remove default vlan from {veth.name}", host.bridge_vlan_del, veth.index, 1)


def calc_routes(ipam_result: dict, conf: BridgeConf) -> list[dict]:
    """IPAM's routes, plus a default route per family through the gateway when asked."""
    routes = list(ipam_result.get("routes") or [])
    if conf.is_default_gateway:
        for ip in ipam_result.get("ips") or []:
            family = _family(ip["address"])
            gateway = ip.get("gateway")
            existing = [r for r in routes if r["dst"] == DEFAULT_ROUTE[family]]
            if any(r.get("gw") not in (None, gateway) for r in existing):
                raise _bad(f"isDefaultGateway conflicts with the IPAM default route {existing}")
            if gateway and not existing:
                routes.append({"dst": DEFAULT_ROUTE[family], "gw": gateway})
    return routes


def setup_container_interface(container: RouteSocket, index: int, name: str, ips, routes, conf: BridgeConf) -> None:
    """Addresses, up, routes of the container end (ifindex `index`): one datagram, applied
    by the kernel in order."""
    requests = []
    for ip in ips:
        # DAD makes a fresh IPv6 address unusable for a second or more; on a bridge we
        # own, duplicates come only from IPAM mistakes, so skip it unless asked.
        requests.append((address_request(True, index, ip["address"], nodad=not conf.enable_dad),
                         f"add address {ip['address']} to {name} in the container"))
    if not conf.disable_container_interface:
        requests.append((set_link_request(index, up=True), f"set {name} up in the container"))
        gateways = {_family(ip["address"]): ip.get("gateway") for ip in reversed(ips)}
        for route in routes:
            gateway = route.get("gw") or gateways.get(_family(route["dst"]))
            message = route_request(True, route["dst"], gateway=gateway, index=index, mtu=route.get("mtu"),
                                    advmss=route.get("advmss"), priority=route.get("priority"),
                                    table=route.get("table"), scope=route.get("scope"))
            requests.append((message, f"add route {route['dst']} in the container"))
    for outcome in container.exchange(requests):
        if isinstance(outcome, NetlinkError):
            raise CNIError(INTERNAL, f"failed to {outcome.op}", str(outcome))


def setup_gateway(host: RouteSocket, bridge, ips, conf: BridgeConf, refetch: bool):
    """Put each gateway address on the bridge and let the host forward for the containers;
    return the bridge (read again when `refetch`)."""
    wanted = []
    if conf.is_gateway:
        for ip in ips:
            if ip.get("gateway"):
                wanted.append(f"{ip['gateway']}/{ip['address'].split('/')[1]}")
    if not wanted and not refetch:
        return bridge
    existing = []
    if wanted:
        listing = host.exchange([(list_addresses_request(bridge.index), f"list addresses of {bridge.name}")])[0]
        if isinstance(listing, NetlinkError):
            raise CNIError(INTERNAL, f"failed to list addresses of {bridge.name}", str(listing))
        existing = [a for a in map(parse_address, listing) if a.index == bridge.index]
    requests = []
    tolerated = []  # errno each request may meet when a concurrent ADD got there first
    for cidr in wanted:
        family = AF_INET6 if _family(cidr) == 6 else AF_INET
        same_family = [a.cidr for a in existing if a.family == family and not a.cidr.startswith("fe80:")]
        if cidr in same_family:
            continue
        clashing = [other for other in same_family if _same_subnet(other, cidr)]
        if clashing and not conf.force_address:
            raise CNIError(INTERNAL, f"bridge {bridge.name} already has an address in the subnet of {cidr}",
                           f"addresses {same_family}; set forceAddress to replace it")
        for other in clashing:
            requests.append((address_request(False, bridge.index, other), f"remove {other} from {bridge.name}"))
            tolerated.append(EADDRNOTAVAIL)
        requests.append((address_request(True, bridge.index, cidr, nodad=not conf.enable_dad),
                         f"add {cidr} to {bridge.name}"))
        tolerated.append(EEXIST)
    if refetch:
        requests.append((get_link_request(index=bridge.index), f"get link {bridge.name}"))
    outcomes = host.exchange(requests)
    for outcome, errno in zip(outcomes, tolerated):
        if isinstance(outcome, NetlinkError) and outcome.errno != errno:
            raise CNIError(INTERNAL, f"failed to {outcome.op}", str(outcome))
    for family in {_family(cidr) for cidr in wanted}:
        key = "net/ipv4/ip_forward" if family == 4 else "net/ipv6/conf/all/forwarding"
        if sysctl.read(key) != "1":
            sysctl.write(key, "1")
    if refetch:
        return link_or_none(outcomes[-1]) or bridge
    return bridge


def _same_subnet(a: str, b: str) -> bool:
    (fa, va), pa = parse_cidr(a)
    (fb, vb), pb = parse_cidr(b)
    bits = 32 if fa == 4 else 128
    prefix = min(pa, pb)
    return fa == fb and va >> (bits - prefix) == vb >> (bits - prefix)


# ---- DEL -----------------------------------------------------------------------------


def cmd_del(cmd_args: CmdArgs) -> None:
    """Undo ADD. Whatever is already gone (netns, interface, lease, rule) is skipped, and a
    step that fails does not stop the others (SPEC.md: DEL is best effort)."""
    conf = BridgeConf(cmd_args)
    prev = cmd_args.prev_result_if_usable() or {}
    netns_fd = _open_netns_if_there(cmd_args)
    steps = []
    # nftables first: the kernel frees what we delete after an RCU grace period, which then
    # overlaps the interface's deletion. It also has to go before the lease: an address must
    # not be leased again while an element still names us as its owner.
    if conf.ip_masq:
        steps.append(("masquerade", lambda: firewall().remove_masquerade(
            conf.key, _attachment_addresses(cmd_args, conf, prev, netns_fd))))
    if conf.mac_spoof_check:
        steps.append(("MAC spoof check", lambda: firewall().remove_spoof_check(conf.key, *_spoof_identity(cmd_args, prev))))
    if conf.ipam_type:
        steps.append(("IPAM", lambda: run_ipam("DEL", cmd_args, conf)))
    steps.append(("container interface", lambda: remove_container_interface(cmd_args, prev, netns_fd)))

    failures = []
    for what, step in steps:
        try:
            step()
        except Exception as err:
            failures.append((what, err))
    if len(failures) == 1 and isinstance(failures[0][1], CNIError):
        raise failures[0][1]
    if failures:
        raise CNIError(INTERNAL, "DEL could not remove everything", "; ".join(f"{w}: {e}" for w, e in failures))


def _open_netns_if_there(cmd_args: CmdArgs) -> int | None:
    if not cmd_args.netns:
        return None
    try:
        return open_netns(cmd_args.netns)
    except CNIError as err:
        # Gone (NetnsNotFound), or a file that is no longer a netns: docker unmounts the
        # namespace on `rm -f` but leaves the file. Either way its veth end went with it.
        log(f"DEL: {err}; treating the namespace as gone")
        return None


def _attachment_addresses(cmd_args: CmdArgs, conf: BridgeConf, prev: dict, netns_fd) -> list[str] | None:
    """The attachment's addresses ("ip/prefix"): those of the runtime's prevResult and of
    our host-local's leases together (a prevResult can be stale, or the previous plugin's),
    else the container's interface's. None if none has any (then the elements are found by
    listing). Only elements the attachment owns are removed, so a wrong address costs a
    lookup, never another attachment's masquerade."""
    addresses = [ip["address"] for ip in prev.get("ips") or []]
    known = {address.partition("/")[0] for address in addresses}
    try:
        leased = leased_addresses(cmd_args, conf)
    except CNIError as err:  # the IPAM step reports it; the masquerade can go all the same
        log(f"DEL: cannot read the leases ({err}); finding the masquerade without them")
        leased = []
    addresses += [address for key, address in leased if key == conf.key and address.partition("/")[0] not in known]
    if addresses:
        return addresses
    if netns_fd is not None:
        with RouteSocket.in_netns(netns_fd) as container:
            link = container.get_link(name=cmd_args.ifname)
            if link is not None:
                found = [a.cidr for a in container.addresses(index=link.index) if a.scope == 0]
                if found:
                    return found
    return None


def _spoof_identity(cmd_args: CmdArgs, prev: dict) -> tuple[str | None, str | None]:
    """(host veth, container MAC) from prevResult, or (None, None)."""
    interfaces = prev.get("interfaces") or []
    host = next((i.get("name") for i in interfaces if not i.get("sandbox") and i.get("name", "").startswith("veth")),
                None)
    mac = next((i.get("mac") for i in interfaces if i.get("sandbox") and i.get("name") == cmd_args.ifname), None)
    return host, mac


def remove_container_interface(cmd_args: CmdArgs, prev: dict, netns_fd: int | None) -> None:
    """Delete the container's end of the veth; the kernel removes the host end with it."""
    if netns_fd is not None:
        with RouteSocket.in_netns(netns_fd) as container:
            link = container.get_link(name=cmd_args.ifname)
            if link is not None:
                try:
                    container.delete_link(link.index)
                except NetlinkError as err:
                    if err.errno != ENODEV:  # deleted under us, fine
                        raise
        return
    # No netns to look in: remove the host end the runtime's prevResult names, if it is
    # still here (a netns kept alive by another process keeps the pair too).
    with RouteSocket.host() as host:
        for iface in prev.get("interfaces") or []:
            name = iface.get("name", "")
            if iface.get("sandbox") or not name.startswith("veth"):
                continue
            link = host.get_link(name=name)
            if link is not None and link.kind == "veth" and link.mac == iface.get("mac"):
                try:
                    host.delete_link(link.index)
                except NetlinkError as err:
                    # The kernel's teardown of the container's netns took it meanwhile.
                    if err.errno != ENODEV:
                        raise


# ---- CHECK ---------------------------------------------------------------------------


def cmd_check(cmd_args: CmdArgs) -> None:
    """Compare the kernel with prevResult; name the first thing that differs."""
    conf = BridgeConf(cmd_args)
    prev = cmd_args.prev_result()
    if not prev:
        raise CNIError(INVALID_CONFIG, "CHECK needs prevResult", "the runtime sent none")
    if conf.ipam_type:
        run_ipam("CHECK", cmd_args, conf)

    interfaces = prev.get("interfaces") or []
    wanted = next((i for i, iface in enumerate(interfaces) if iface.get("name") == cmd_args.ifname
                   and iface.get("sandbox")), None)
    if wanted is None:
        raise _check_failed(f"prevResult lists no interface {cmd_args.ifname} in a sandbox")
    netns_fd = open_netns(cmd_args.netns)
    with RouteSocket.in_netns(netns_fd) as container, RouteSocket.host() as host:
        link = container.get_link(name=cmd_args.ifname)
        if link is None:
            raise _check_failed(f"interface {cmd_args.ifname} is missing from {cmd_args.netns}")
        expected_mac = interfaces[wanted].get("mac")
        if expected_mac and link.mac != expected_mac.lower():
            raise _check_failed(f"{cmd_args.ifname} has MAC {link.mac}, prevResult says {expected_mac}")

        present = {a.cidr for a in container.addresses(index=link.index)}
        for ip in prev.get("ips") or []:
            if ip.get("interface", wanted) == wanted and ip["address"] not in present:
                raise _check_failed(f"{cmd_args.ifname} lacks address {ip['address']}")

        for route in prev.get("routes") or []:
            family = AF_INET6 if _family(route["dst"]) == 6 else AF_INET
            routes = container.list_routes(family)
            if not any(r["dst"] == route["dst"] and (not route.get("gw") or r.get("gw") == route["gw"])
                       for r in routes):
                raise _check_failed(f"route {route} is missing in the container")

        bridge = host.get_link(name=conf.bridge)
        if bridge is None or bridge.kind != "bridge":
            raise _check_failed(f"bridge {conf.bridge} is missing")
        host_ends = [i for i in interfaces if not i.get("sandbox") and i.get("name") != conf.bridge]
        for iface in host_ends:
            veth = host.get_link(name=iface["name"])
            if veth is None:
                raise _check_failed(f"host interface {iface['name']} is missing")
            if veth.master != bridge.index:
                raise _check_failed(f"host interface {iface['name']} is not a port of {conf.bridge}")

    problem = None
    if conf.ip_masq:
        problem = firewall().masquerade_problem(conf.key, [ip["address"] for ip in prev.get("ips") or []])
    host_ifname, mac = _spoof_identity(cmd_args, prev)
    if conf.mac_spoof_check and host_ifname and mac and problem is None:
        problem = firewall().spoof_check_problem(conf.key, host_ifname, mac)
    if problem:
        raise _check_failed(problem)


def _check_failed(what: str) -> CNIError:
    return CNIError(INTERNAL, f"CHECK failed: {what}")


# ---- GC and STATUS -------------------------------------------------------------------


def cmd_gc(cmd_args: CmdArgs) -> None:
    """Release leases, masquerade and MAC spoof check elements of attachments the runtime
    no longer lists (and what is left of the legacy masquerade layout once it is empty)."""
    conf = BridgeConf(cmd_args)
    valid = valid_attachments(cmd_args.conf)
    if valid is None:
        raise CNIError(INVALID_CONFIG, "GC needs cni.dev/valid-attachments in the config")
    failures = []
    # The elements go before the leases, as in DEL: an address released first could be
    # leased to a new container whose element this GC would then take for stale.
    try:
        removed = firewall().gc(conf.network, valid)
        if removed:
            log(f"GC removed {len(removed)} elements of {sorted({e.comment for e in removed})}")
    except CNIError as err:
        if conf.ip_masq or conf.mac_spoof_check:
            failures.append(err)
    if conf.ipam_type:
        try:
            run_ipam("GC", cmd_args, conf)
        except CNIError as err:
            failures.append(err)
    if failures:
        raise failures[0]


def cmd_status(cmd_args: CmdArgs) -> None:
    conf = BridgeConf(cmd_args)
    if conf.ipam_type:
        run_ipam("STATUS", cmd_args, conf)
    if conf.ip_masq or conf.mac_spoof_check:
        firewall().usable()


PLUGIN = Plugin(
    about="bridge from cni-bridge (Python)",
    add=cmd_add, delete=cmd_del, check=cmd_check, gc=cmd_gc, status=cmd_status,
)

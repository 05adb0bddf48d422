"""The bridge plugin: a veth from the container to a Linux bridge, addresses from IPAM,
masquerade in nftables.

Every command reads top to bottom: validate the whole config, then act. ADD undoes what it
did when a later step fails; DEL carries on past whatever is already gone.
"""

import os
import sys

from cni_bridge import _schemas
from cni_bridge.nft import table as nft
from cni_bridge.cni import version
from cni_bridge.cni.schema import validate_conf
from cni_bridge.cni.errors import CNIError, INTERNAL, INVALID_CONFIG, NOT_AVAILABLE
from cni_bridge.kernel.netlink import NetlinkError, RouteSocket
from cni_bridge.kernel.netns import open_netns, read_sysctl, write_sysctl
from cni_bridge.cni.skel import CmdArgs, Plugin, log, valid_attachments

DEFAULT_BRIDGE = "cni0"
AF_INET, AF_INET6 = 2, 10
DEFAULT_ROUTE = {4: "0.0.0.0/0", 6: "::/0"}


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
        self.mac = _container_mac(conf, cmd_args.args)
        self.prev_result = conf.get("prevResult")

        if self.hairpin and self.promisc:
            raise _bad("cannot set hairpinMode and promiscMode at the same time")
        if self.disable_container_interface and self.ipam_type:
            raise _bad("cannot use IPAM when disableContainerInterface is set")
        if self.vlan and any(low <= self.vlan <= high for low, high in self.vlan_trunk):
            raise _bad(f"vlan {self.vlan} is also in vlanTrunk")

    @property
    def vlan_filtering(self) -> bool:
        return bool(self.vlan or self.vlan_trunk)


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


# ---- IPAM: our host-local in process, anything else executed from CNI_PATH -------------


def run_ipam(command: str, cmd_args: CmdArgs, conf: BridgeConf) -> dict | None:
    from cni_bridge.cni import invoke

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


# ---- ADD -----------------------------------------------------------------------------


def cmd_add(cmd_args: CmdArgs) -> dict:
    conf = BridgeConf(cmd_args)
    netns_fd = open_netns(cmd_args.netns)
    host = RouteSocket.host()
    container = RouteSocket.in_netns(netns_fd)
    if container.get_link(name=cmd_args.ifname) is not None:
        raise CNIError(INTERNAL, f"container interface {cmd_args.ifname} already exists", f"in {cmd_args.netns}")
    bridge = ensure_bridge(host, conf)

    ipam_result = run_ipam("ADD", cmd_args, conf) if conf.ipam_type else {}
    ips = ipam_result.get("ips") or []
    undo = []  # what to take back, newest first, if a later step fails
    if conf.ipam_type:
        undo.append(lambda: run_ipam("DEL", cmd_args, conf))
    try:
        if conf.ip_masq and ips:
            # Early, so that the kernel's RCU wait when our nftables socket closes overlaps
            # the netlink work below instead of following it.
            nft.add_masquerade(conf.network, cmd_args.container_id, cmd_args.ifname, [ip["address"] for ip in ips])
            undo.append(lambda: nft.remove_masquerade(conf.network, cmd_args.container_id, cmd_args.ifname))

        host_name = "veth" + os.urandom(4).hex()
        _netlink(f"create veth {host_name}", host.create_veth,
                 host_name, cmd_args.ifname, netns_fd, mtu=conf.mtu, peer_mac=conf.mac)
        host_veth = host.get_link(name=host_name)
        undo.append(lambda: _delete_if_present(host, host_name))
        setup_host_veth(host, host_veth, bridge, conf)

        container_link = container.get_link(name=cmd_args.ifname)
        routes = calc_routes(ipam_result, conf)
        setup_container_interface(container, container_link, ips, routes, conf, netns_fd)
        if conf.is_gateway and ips:
            setup_gateway(host, bridge, ips, conf)
        if conf.mac_spoof_check:
            nft.add_mac_spoof_check(conf.network, cmd_args.container_id, cmd_args.ifname, host_name,
                                    container_link.mac)
            undo.append(lambda: nft.remove_mac_spoof_check(conf.network, cmd_args.container_id, cmd_args.ifname))

        bridge = host.get_link(index=bridge.index)  # its MAC may follow its ports
        host_veth = host.get_link(index=host_veth.index)
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
            {"name": cmd_args.ifname, "mac": container_link.mac, "sandbox": cmd_args.netns},
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
    """The bridge, created if missing; an existing link of that name must be a bridge."""
    bridge = host.get_link(name=conf.bridge)
    if bridge is None:
        try:
            bridge = host.create_bridge(conf.bridge, mtu=conf.mtu, vlan_filtering=conf.vlan_filtering)
            # Pin the bridge's MAC: left alone, it follows the lowest port MAC and changes
            # as containers come and go, which breaks the neighbours' ARP caches.
            host.set_link(bridge.index, mac=bridge.mac)
        except NetlinkError as err:
            if err.errno == 95 and conf.vlan_filtering:  # EOPNOTSUPP for IFLA_BR_VLAN_FILTERING
                raise CNIError(INTERNAL, f"failed to create bridge {conf.bridge} with VLAN filtering",
                               f"vlan or vlanTrunk needs a kernel with CONFIG_BRIDGE_VLAN_FILTERING: {err}") from None
            if err.errno != 17:  # EEXIST: another ADD created it a moment ago
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
    return bridge


def setup_host_veth(host: RouteSocket, veth, bridge, conf: BridgeConf) -> None:
    _netlink(f"attach {veth.name} to {bridge.name}", host.set_link, veth.index, master=bridge.index)
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
    _netlink(f"set {veth.name} up", host.set_link, veth.index, up=True)


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


def setup_container_interface(container: RouteSocket, link, ips, routes, conf: BridgeConf, netns_fd: int) -> None:
    what = f"configure {link.name} in the container"
    for ip in ips:
        # DAD makes a fresh IPv6 address unusable for a second or more; on a bridge we
        # own, duplicates come only from IPAM mistakes, so skip it unless asked.
        _netlink(what, container.add_address, link.index, ip["address"], nodad=not conf.enable_dad)
    if conf.disable_container_interface:
        return
    _netlink(what, container.set_link, link.index, up=True)
    gateways = {_family(ip["address"]): ip.get("gateway") for ip in reversed(ips)}
    for route in routes:
        gateway = route.get("gw") or gateways.get(_family(route["dst"]))
        _netlink(f"add route {route['dst']} in the container", container.add_route, route["dst"],
                 gateway=gateway, index=link.index, mtu=route.get("mtu"), advmss=route.get("advmss"),
                 priority=route.get("priority"), table=route.get("table"), scope=route.get("scope"))


def setup_gateway(host: RouteSocket, bridge, ips, conf: BridgeConf) -> None:
    """Put each gateway address on the bridge and let the host forward for the containers."""
    existing = host.addresses(index=bridge.index)
    for ip in ips:
        gateway = ip.get("gateway")
        if not gateway:
            continue
        prefix = ip["address"].split("/")[1]
        wanted = f"{gateway}/{prefix}"
        family = _family(gateway)
        same_family = [a.cidr for a in existing if a.family == (AF_INET6 if family == 6 else AF_INET)
                       and not a.cidr.startswith("fe80:")]
        if wanted in same_family:
            pass
        elif any(_same_subnet(cidr, wanted) for cidr in same_family):
            if not conf.force_address:
                raise CNIError(INTERNAL, f"bridge {bridge.name} already has an address in the subnet of {wanted}",
                               f"addresses {same_family}; set forceAddress to replace it")
            for cidr in same_family:
                if _same_subnet(cidr, wanted):
                    _tolerate(99, f"remove {cidr} from {bridge.name}", host.delete_address, bridge.index, cidr)
            _tolerate(17, f"add {wanted} to {bridge.name}", host.add_address, bridge.index, wanted,
                      nodad=not conf.enable_dad)
        else:
            _tolerate(17, f"add {wanted} to {bridge.name}", host.add_address, bridge.index, wanted,
                      nodad=not conf.enable_dad)
        key = "net/ipv4/ip_forward" if family == 4 else "net/ipv6/conf/all/forwarding"
        if read_sysctl(key) != "1":
            write_sysctl(key, "1")


def _tolerate(errno: int, what: str, function, *args, **kwargs) -> None:
    """A netlink change that a concurrent ADD on the same bridge may have made already:
    EEXIST (17) for an address it added, EADDRNOTAVAIL (99) for one it removed."""
    try:
        function(*args, **kwargs)
    except NetlinkError as err:
        if err.errno != errno:
            raise CNIError(INTERNAL, f"failed to {what}", str(err)) from None


def _same_subnet(a: str, b: str) -> bool:
    from cni_bridge.cni.addr import parse_cidr

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
    key = (conf.network, cmd_args.container_id, cmd_args.ifname)
    steps = []
    # nftables first: closing its socket may wait for an RCU grace period, which then
    # overlaps the rest of the work.
    if conf.ip_masq:
        steps.append(("masquerade", lambda: nft.remove_masquerade(*key)))
    if conf.mac_spoof_check:
        steps.append(("MAC spoof check", lambda: nft.remove_mac_spoof_check(*key)))
    if conf.ipam_type:
        steps.append(("IPAM", lambda: run_ipam("DEL", cmd_args, conf)))
    steps.append(("container interface", lambda: remove_container_interface(cmd_args, conf)))

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


def remove_container_interface(cmd_args: CmdArgs, conf: BridgeConf) -> None:
    """Delete the container's end of the veth; the kernel removes the host end with it."""
    if cmd_args.netns:
        try:
            netns_fd = open_netns(cmd_args.netns)
        except CNIError as err:
            # Gone (NetnsNotFound), or a file that is no longer a netns: docker unmounts
            # the namespace on `rm -f` but leaves the file. Either way its veth end went
            # with it.
            log(f"DEL: {err}; treating the namespace as gone")
            netns_fd = None
        if netns_fd is not None:
            with RouteSocket.in_netns(netns_fd) as container:
                link = container.get_link(name=cmd_args.ifname)
                if link is not None:
                    try:
                        container.delete_link(link.index)
                    except NetlinkError as err:
                        if err.errno != 19:  # ENODEV: deleted under us, fine
                            raise
            return
    # No netns to look in: remove the host end the runtime's prevResult names, if it is
    # still here (a netns kept alive by another process keeps the pair too).
    prev = conf.prev_result
    if not prev:
        return
    prev = version.upgrade_result(prev, cmd_args.cni_version)
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
                    # ENODEV: the kernel's teardown of the container's netns took it meanwhile.
                    if err.errno != 19:
                        raise


# ---- CHECK ---------------------------------------------------------------------------


def cmd_check(cmd_args: CmdArgs) -> None:
    """Compare the kernel with prevResult; name the first thing that differs."""
    conf = BridgeConf(cmd_args)
    if not conf.prev_result:
        raise CNIError(INVALID_CONFIG, "CHECK needs prevResult", "the runtime sent none")
    prev = version.upgrade_result(conf.prev_result, cmd_args.cni_version)
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
            table = container.list_routes(family)
            if not any(r["dst"] == route["dst"] and (not route.get("gw") or r.get("gw") == route["gw"])
                       for r in table):
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

    if conf.ip_masq:
        masqueraded = set(nft.masquerade_addresses(conf.network, cmd_args.container_id, cmd_args.ifname))
        for ip in prev.get("ips") or []:
            if ip["address"].split("/")[0] not in masqueraded:
                raise _check_failed(f"no masquerade rule for {ip['address']}")
    if conf.mac_spoof_check and not nft.mac_spoof_check_present(conf.network, cmd_args.container_id, cmd_args.ifname):
        raise _check_failed("the MAC spoof check rules are missing")


def _check_failed(what: str) -> CNIError:
    return CNIError(INTERNAL, f"CHECK failed: {what}")


# ---- GC and STATUS -------------------------------------------------------------------


def cmd_gc(cmd_args: CmdArgs) -> None:
    """Release leases and masquerade rules of attachments the runtime no longer lists."""
    conf = BridgeConf(cmd_args)
    valid = valid_attachments(cmd_args.conf)
    if valid is None:
        raise CNIError(INVALID_CONFIG, "GC needs cni.dev/valid-attachments in the config")
    failures = []
    if conf.ipam_type:
        try:
            run_ipam("GC", cmd_args, conf)
        except CNIError as err:
            failures.append(err)
    try:
        removed = nft.gc_masquerade(conf.network, valid)
        if removed:
            log(f"GC removed masquerade for {removed}")
        nft.gc_mac_spoof_check(conf.network, valid)
    except CNIError as err:
        if conf.ip_masq or conf.mac_spoof_check:
            failures.append(err)
    if failures:
        raise failures[0]


def cmd_status(cmd_args: CmdArgs) -> None:
    conf = BridgeConf(cmd_args)
    if conf.ipam_type:
        run_ipam("STATUS", cmd_args, conf)
    if conf.ip_masq or conf.mac_spoof_check:
        try:
            nft.check_usable()
        except CNIError as err:
            raise CNIError(NOT_AVAILABLE, "nftables is not usable", str(err)) from None


PLUGIN = Plugin(
    about="bridge from cni-bridge (Python)",
    add=cmd_add, delete=cmd_del, check=cmd_check, gc=cmd_gc, status=cmd_status,
)

"""host-local: IPAM from range sets, with leases in files under dataDir.

The command functions take the protocol layer's CmdArgs and return the IPAM result, so
the same code serves the `host-local` executable and our bridge, which calls it in
process instead of paying for a second process start. This module must not import
pyroute2, nftables or the bridge: host-local starts on every pod.
"""

from cni_bridge.cni.errors import CNIError, INTERNAL, INVALID_CONFIG, NOT_AVAILABLE
from cni_bridge.cni.skel import CmdArgs, Plugin, valid_attachments
from cni_bridge.cni.addr import format_ip
from ipam.allocator import allocate, free_address_exists
from ipam.config import load_ipam_config, range_set_str
from ipam.store import Store


def cmd_add(cmd_args: CmdArgs) -> dict:
    conf = load_ipam_config(cmd_args)
    ips = []
    with Store(conf.data_dir, cmd_args.network_name, create=True) as store:
        reserved: list[str] = []
        try:
            for index, range_set in enumerate(conf.range_sets):
                r, address = allocate(
                    store, range_set, index, cmd_args.container_id, cmd_args.ifname, conf.requested.get(index)
                )
                reserved.append(format_ip(r.family, address))
                ip = {"address": f"{format_ip(r.family, address)}/{r.subnet.prefix}"}
                if r.gateway is not None:
                    ip["gateway"] = format_ip(r.family, r.gateway)
                ips.append(ip)
        except BaseException:
            # One lease per range set or none at all.
            for address in reserved:
                store.release(address)
            raise
    result: dict = {"cniVersion": cmd_args.cni_version, "ips": ips}
    if conf.routes:
        result["routes"] = conf.routes
    if conf.dns:
        result["dns"] = conf.dns
    return result


def cmd_del(cmd_args: CmdArgs) -> None:
    """Release the leases of (container id, ifname); none at all is success (DEL is idempotent)."""
    conf = load_ipam_config(cmd_args)
    with Store(conf.data_dir, cmd_args.network_name, create=False) as store:
        for address in store.leases_of(cmd_args.container_id, cmd_args.ifname):
            store.release(address)


def cmd_check(cmd_args: CmdArgs) -> None:
    conf = load_ipam_config(cmd_args)
    with Store(conf.data_dir, cmd_args.network_name, create=False) as store:
        if not store.leases_of(cmd_args.container_id, cmd_args.ifname):
            raise CNIError(
                INTERNAL,
                f"host-local: no address leased to container {cmd_args.container_id} interface {cmd_args.ifname}",
                f"no lease in {store.dir}",
            )


def cmd_gc(cmd_args: CmdArgs) -> None:
    """Release every lease whose attachment the runtime no longer lists as valid."""
    conf = load_ipam_config(cmd_args)
    valid = valid_attachments(cmd_args.conf)
    if valid is None:
        raise CNIError(INVALID_CONFIG, "GC needs cni.dev/valid-attachments in the config")
    valid_ids = {container_id for container_id, _ in valid}
    with Store(conf.data_dir, cmd_args.network_name, create=False) as store:
        for address, container_id, ifname in store.leases():
            # A lease from an old host-local names only the container: keep it while any
            # attachment of that container is valid.
            keep = container_id in valid_ids if ifname is None else (container_id, ifname) in valid
            if not keep:
                store.release(address)


def cmd_status(cmd_args: CmdArgs) -> None:
    """Ready when every range set has an address left, since ADD takes one from each."""
    conf = load_ipam_config(cmd_args)
    with Store(conf.data_dir, cmd_args.network_name, create=False) as store:
        for index, range_set in enumerate(conf.range_sets):
            if not free_address_exists(store, range_set):
                raise CNIError(
                    NOT_AVAILABLE,
                    f"no IP addresses available in range set {index}: {range_set_str(range_set)}",
                )


PLUGIN = Plugin(
    about="host-local IPAM from cni-bridge (Python)",
    add=cmd_add, delete=cmd_del, check=cmd_check, gc=cmd_gc, status=cmd_status,
)

"""host-local's configuration: range sets, routes, DNS and requested addresses, parsed and
checked in full before anything touches the disk."""

import os
import stat

from cni_bridge import _schemas
from cni_bridge.cni import version
from cni_bridge.cni.schema import validate_conf
from cni_bridge.cni.errors import CNIError, INVALID_CONFIG, IO_FAILURE
from cni_bridge.cni.addr import BITS, Network, format_ip, parse_cidr, parse_ip, parse_network

DEFAULT_DATA_DIR = "/var/lib/cni/networks"


class Range:
    """One range of a range set: addresses start..end (inclusive) of `subnet`."""

    __slots__ = ("subnet", "start", "end", "gateway")

    def __init__(self, subnet: Network, start: int, end: int, gateway: int | None):
        self.subnet = subnet
        self.start = start
        self.end = end
        self.gateway = gateway

    @property
    def family(self) -> int:
        return self.subnet.family

    def __contains__(self, ip: tuple[int, int]) -> bool:
        return ip[0] == self.family and self.start <= ip[1] <= self.end

    def __str__(self) -> str:
        return f"{format_ip(self.family, self.start)}-{format_ip(self.family, self.end)}"


def range_set_str(range_set: list[Range]) -> str:
    return ",".join(str(r) for r in range_set)


class IPAMConfig:
    __slots__ = ("range_sets", "routes", "data_dir", "dns", "requested")

    def __init__(self, range_sets, routes, data_dir, dns, requested):
        self.range_sets: list[list[Range]] = range_sets
        self.routes: list[dict] = routes
        self.data_dir: str = data_dir
        self.dns: dict | None = dns
        # One requested address (family, int) per range set index, from args/runtimeConfig/CNI_ARGS.
        self.requested: dict[int, tuple[int, int]] = requested


def load_ipam_config(cmd_args) -> IPAMConfig:
    """Parse and check host-local's part of the config; raise CNIError(7) on bad input."""
    conf = validate_conf(_schemas.HOST_LOCAL_CONF, cmd_args.conf)
    ipam = conf["ipam"]
    runtime = conf.get("runtimeConfig") or {}

    # Where the range sets come from, in the reference's order (the order names the
    # last_reserved_ip.<N> files, so it must match): the ipRanges capability, then the
    # legacy single-range form, then `ranges`.
    raw_sets = list(ipam.get("ranges") or [])
    if ipam.get("subnet"):
        legacy = {k: ipam[k] for k in ("subnet", "rangeStart", "rangeEnd", "gateway") if k in ipam}
        raw_sets = [[legacy]] + raw_sets
    raw_sets = list(runtime.get("ipRanges") or []) + raw_sets
    if not raw_sets:
        raise CNIError(INVALID_CONFIG, "invalid host-local config", "no IP ranges specified")

    range_sets = [_parse_range_set(index, raw) for index, raw in enumerate(raw_sets)]
    _check_overlaps(range_sets)
    if not version.at_least(cmd_args.cni_version, "0.3.0"):
        families = [rs[0].family for rs in range_sets]
        if families.count(4) > 1 or families.count(6) > 1:
            raise CNIError(
                INVALID_CONFIG,
                "invalid host-local config",
                f"CNI version {cmd_args.cni_version} does not support more than 1 address per family",
            )

    routes = [_check_route(route) for route in ipam.get("routes") or []]
    # Only ADD reports DNS and allocates. The runtime repeats ADD's config and CNI_ARGS on
    # DEL: a resolvConf gone since, or a request that no longer fits the ranges (or never
    # did), must not keep DEL from releasing the lease. The reference reads both in ADD only.
    adding = cmd_args.command == "ADD"
    dns = parse_resolv_conf(ipam["resolvConf"]) if adding and ipam.get("resolvConf") else None
    requested = _requested_addresses(conf, runtime, cmd_args.args, range_sets) if adding else {}
    return IPAMConfig(range_sets, routes, ipam.get("dataDir") or DEFAULT_DATA_DIR, dns, requested)


def _bad(what: str) -> CNIError:
    return CNIError(INVALID_CONFIG, "invalid host-local config", what)


def _parse_range_set(index: int, raw: list[dict]) -> list[Range]:
    ranges = []
    for raw_range in raw:
        try:
            ranges.append(_parse_range(raw_range))
        except ValueError as err:
            raise _bad(f"range set {index}: {err}") from None
    if len({r.family for r in ranges}) > 1:
        raise _bad(f"range set {index}: mixes IPv4 and IPv6 ranges")
    for i, first in enumerate(ranges):
        for second in ranges[i + 1:]:
            if first.start <= second.end and second.start <= first.end:
                raise _bad(f"range set {index}: ranges {first} and {second} overlap")
    return ranges


def _parse_range(raw: dict) -> Range:
    subnet = parse_network(raw["subnet"])
    family = subnet.family
    # A subnet needs room for at least one address besides the network (and, for IPv4,
    # the broadcast) address: /31 and /32 (IPv6: /127, /128) are too small to allocate from.
    if subnet.prefix > BITS[family] - 2:
        raise ValueError(f"network {subnet} is too small to allocate from")
    first_usable = subnet.address + 1
    last_usable = subnet.last - 1 if family == 4 else subnet.last

    def address_in_subnet(key: str) -> int | None:
        if key not in raw:
            return None
        ip = parse_ip(raw[key])
        if ip not in subnet or not first_usable <= ip[1] <= last_usable:
            raise ValueError(f"{key} {raw[key]} is not a usable address of network {subnet}")
        return ip[1]

    gateway = address_in_subnet("gateway")
    start = address_in_subnet("rangeStart")
    end = address_in_subnet("rangeEnd")
    if gateway is None:
        gateway = first_usable  # the reference claims .1 for the gateway by default
    start = first_usable if start is None else start
    end = last_usable if end is None else end
    if start > end:
        raise ValueError(f"rangeStart {format_ip(family, start)} is after rangeEnd {format_ip(family, end)}")
    return Range(subnet, start, end, gateway)


def _check_overlaps(range_sets: list[list[Range]]) -> None:
    for i, first in enumerate(range_sets):
        for j in range(i + 1, len(range_sets)):
            for a in first:
                for b in range_sets[j]:
                    if a.family == b.family and a.start <= b.end and b.start <= a.end:
                        raise _bad(f"range set {i} overlaps with range set {j} ({a} and {b})")


def _check_route(route: dict) -> dict:
    try:
        (family, _), _ = parse_cidr(route["dst"])
        if "gw" in route and parse_ip(route["gw"])[0] != family:
            raise ValueError(f"gw {route['gw']} is not an IPv{family} address like dst")
    except ValueError as err:
        raise _bad(f"route {route}: {err}") from None
    return route


def _requested_addresses(conf, runtime, cni_args, range_sets) -> dict[int, tuple[int, int]]:
    """Map each specifically requested address to the range set that holds it."""
    texts = list(((conf.get("args") or {}).get("cni") or {}).get("ips") or [])
    texts += runtime.get("ips") or []
    if cni_args.get("IP"):
        texts += [part.strip() for part in cni_args["IP"].split(",") if part.strip()]
    requested: dict[int, tuple[int, int]] = {}
    for text in texts:
        try:
            # "ip" or "ip/prefix", as the reference reads them; the prefix is not used.
            ip = parse_cidr(text)[0] if "/" in text else parse_ip(text)
        except ValueError as err:
            raise _bad(f"requested address: {err}") from None
        holders = [i for i, range_set in enumerate(range_sets) if any(ip in r for r in range_set)]
        if not holders:
            raise _bad(f"requested address {text} is in no configured range")
        if any(ip == (r.family, r.gateway) for r in range_sets[holders[0]]):
            raise _bad(f"requested address {text} is the subnet's gateway")
        if holders[0] in requested and requested[holders[0]] != ip:
            raise _bad(f"more than one address requested from range set {holders[0]}")
        requested[holders[0]] = ip
    return requested


def parse_resolv_conf(path: str) -> dict:
    """DNS settings from a resolv.conf-style file, as the result's `dns` object."""
    try:
        # O_NONBLOCK: a FIFO in its place must not hang the ADD; it is refused below.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with open(fd, encoding="utf-8", errors="replace") as f:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise OSError(0, "not a regular file")
            lines = f.read().splitlines()
    except OSError as err:
        raise CNIError(IO_FAILURE, f"cannot read resolvConf {path}", err.strerror or str(err)) from None
    dns: dict = {}
    for line in lines:
        fields = line.split()
        if len(fields) < 2 or fields[0].startswith(("#", ";")):
            continue
        key, values = fields[0], fields[1:]
        if key == "nameserver":
            dns.setdefault("nameservers", []).append(values[0])
        elif key == "domain":
            dns["domain"] = values[0]
        elif key == "search":
            dns["search"] = values
        elif key == "options":
            dns.setdefault("options", []).extend(values)
    return dns

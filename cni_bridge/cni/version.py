"""Spec versions and result conversion.

Results are built in the 1.1 shape (1.0 and 1.1 share it) and converted only on output,
to the version the config asked for. A prevResult of any version is upgraded to the 1.1
shape on input. Dicts throughout: these are the JSON objects the spec defines.
"""

from cni_bridge import _schemas
from cni_bridge.cni import schema
from cni_bridge.cni.addr import parse_cidr, parse_ip
from cni_bridge.cni.errors import CNIError, DECODE_FAILURE, INCOMPATIBLE_VERSION, INTERNAL

SUPPORTED_VERSIONS = ("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
CURRENT_VERSION = "1.1.0"
DEFAULT_VERSION = "0.1.0"  # a config without cniVersion predates the field


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def at_least(version: str, minimum: str) -> bool:
    return version_tuple(version) >= version_tuple(minimum)


def check_version(version) -> str:
    """Return the config's version if we support it; raise the spec's error 1 otherwise."""
    if version not in SUPPORTED_VERSIONS:
        raise CNIError(
            INCOMPATIBLE_VERSION,
            "incompatible CNI versions",
            f"config is {version!r}, plugin supports {list(SUPPORTED_VERSIONS)}",
        )
    return version


def _family(address: str) -> str:
    return "6" if ":" in address else "4"


# ---- output: 1.1 shape -> any version -------------------------------------------------


def convert_result(result: dict, to_version: str) -> dict:
    """Return `result` (1.1 shape) as the spec of `to_version` writes it."""
    if at_least(to_version, "1.0.0"):
        converted = {"cniVersion": to_version}
        converted.update((k, v) for k, v in result.items() if k != "cniVersion")
    elif at_least(to_version, "0.3.0"):
        converted = _to_040(result, to_version)
    else:
        converted = _to_020(result, to_version)
    if not _dns_is_set(converted.get("dns")):
        converted.pop("dns", None)
    return converted


def _to_040(result: dict, to_version: str) -> dict:
    converted: dict = {"cniVersion": to_version}
    if result.get("interfaces"):
        # 0.x interfaces know only name, mac and sandbox (1.1 added mtu, socketPath, pciID).
        converted["interfaces"] = [
            {k: v for k, v in iface.items() if k in ("name", "mac", "sandbox")} for iface in result["interfaces"]
        ]
    if result.get("ips"):
        converted["ips"] = [{"version": _family(ip["address"]), **ip} for ip in result["ips"]]
    if result.get("routes"):
        converted["routes"] = result["routes"]
    if "dns" in result:
        converted["dns"] = result["dns"]
    return converted


def _to_020(result: dict, to_version: str) -> dict:
    """0.1.0/0.2.0 hold one address per family: the first IPv4 and the first IPv6 survive."""
    converted: dict = {"cniVersion": to_version}
    routes = result.get("routes") or []
    for ip in result.get("ips") or []:
        key = "ip" + _family(ip["address"])
        if key in converted:
            continue
        entry = {"ip": ip["address"]}
        if ip.get("gateway"):
            entry["gateway"] = ip["gateway"]
        family_routes = [
            {k: v for k, v in route.items() if k in ("dst", "gw")} for route in routes if _family(route["dst"]) == key[2]
        ]
        if family_routes:
            entry["routes"] = family_routes
        converted[key] = entry
    if "ip4" not in converted and "ip6" not in converted:
        raise CNIError(INTERNAL, f"cannot convert result to version {to_version}", "no valid IP addresses")
    if "dns" in result:
        converted["dns"] = result["dns"]
    return converted


def _dns_is_set(dns) -> bool:
    return isinstance(dns, dict) and any(dns.get(k) for k in ("nameservers", "domain", "search", "options"))


# ---- input: prevResult of any version -> 1.1 shape ------------------------------------


def upgrade_result(prev: dict, config_version: str) -> dict:
    """Return a prevResult in the 1.1 shape.

    A prevResult without cniVersion is read as the config's version, as libcni does.
    """
    if not isinstance(prev, dict):
        raise CNIError(DECODE_FAILURE, "failed to decode prevResult", "prevResult is not a JSON object")
    version = prev.get("cniVersion") or config_version
    if version not in SUPPORTED_VERSIONS:
        raise CNIError(INCOMPATIBLE_VERSION, "unsupported prevResult version", f"prevResult is {version!r}")
    try:
        if at_least(version, "1.0.0"):
            upgraded = {k: v for k, v in prev.items() if k != "cniVersion"}
        elif at_least(version, "0.3.0"):
            upgraded = _from_040(prev)
        else:
            upgraded = _from_020(prev)
    except (KeyError, TypeError, AttributeError) as err:
        raise CNIError(DECODE_FAILURE, "failed to decode prevResult", f"malformed {version} result: {err!r}") from None
    # The plugins index into it: every field they read must have the type the spec gives it.
    problems: list = []
    schema.validate(_schemas.RESULT, upgraded, ("prevResult",), problems)
    if not problems:
        problems = _address_problems(upgraded)
    if problems:
        raise CNIError(DECODE_FAILURE, "failed to decode prevResult", schema.describe(problems))
    return {"cniVersion": CURRENT_VERSION, **upgraded}


def _address_problems(result: dict) -> list[tuple[tuple, str]]:
    """The result's addresses that are not what the spec says (a CIDR, an IP address); an
    empty gateway counts as none, an empty address or destination is wrong."""
    ips, routes = result.get("ips") or [], result.get("routes") or []
    fields = [(("ips", i, "address"), ip["address"], parse_cidr) for i, ip in enumerate(ips)]
    fields += [(("ips", i, "gateway"), ip.get("gateway") or None, parse_ip) for i, ip in enumerate(ips)]
    fields += [(("routes", i, "dst"), r["dst"], parse_cidr) for i, r in enumerate(routes)]
    fields += [(("routes", i, "gw"), r.get("gw") or None, parse_ip) for i, r in enumerate(routes)]
    problems = []
    for location, text, parse in fields:
        if text is not None:
            try:
                parse(text)
            except ValueError as err:
                problems.append((("prevResult", *location), str(err)))
    return problems


def _from_040(prev: dict) -> dict:
    upgraded = {k: v for k, v in prev.items() if k not in ("cniVersion", "ips")}
    if prev.get("ips"):
        upgraded["ips"] = [{k: v for k, v in ip.items() if k != "version"} for ip in prev["ips"]]
    return upgraded


def _from_020(prev: dict) -> dict:
    ips, routes = [], []
    for key in ("ip4", "ip6"):
        entry = prev.get(key)
        if not entry:
            continue
        ip = {"address": entry["ip"]}
        if entry.get("gateway"):
            ip["gateway"] = entry["gateway"]
        ips.append(ip)
        routes.extend(entry.get("routes") or [])
    upgraded: dict = {}
    if ips:
        upgraded["ips"] = ips
    if routes:
        upgraded["routes"] = routes
    if prev.get("dns"):
        upgraded["dns"] = prev["dns"]
    return upgraded

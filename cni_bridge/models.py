"""The network config, as pydantic models. Used at build time only.

Importing pydantic and building models costs over 100 ms, more than a whole plugin exec
should. So the models live here, and `python -m cni_bridge.schemagen` translates them into
the plain tables of cni_bridge/_schemas.py, which cni_bridge.cni.schema interprets at run
time. tests/unit checks that the committed tables match these models and that validating
with them agrees with pydantic on a large corpus of configs.

The models are TypedDicts, so validation returns plain dicts keyed by the wire names.
Unknown keys are dropped: runtimes add keys of their own and the spec says to keep going.
Defaults are applied in code (TypedDict schemas do not fill them in).
Only structure, types and ranges are checked here; what needs arithmetic (subnets, ranges
of addresses) is checked by the code that parses it.

Every int field has the range of the kernel field it ends up in (schemagen refuses an int
without both bounds), so that an out-of-range value is invalid config (error 7, naming the
field) rather than a failure in netlink. Where the kernel clamps a value instead of storing
it, the range stops where the clamping starts, so that what the config says is what the
kernel keeps.
"""

from typing import Annotated, Literal

from pydantic import ConfigDict, Field, with_config
from typing_extensions import NotRequired, TypedDict

LOOSE = ConfigDict(extra="ignore", strict=True)

U32 = Annotated[int, Field(ge=0, le=2**32 - 1)]
# A link's MTU: ETH_MIN_MTU..ETH_MAX_MTU, the limits of the bridge and of veth devices.
Mtu = Annotated[int, Field(ge=68, le=65535)]
# The access VLAN; 0 means untagged (as in the reference).
VlanId = Annotated[int, Field(ge=0, le=4094)]
# A VLAN the bridge port carries: the kernel's valid ids, 1..4094.
TrunkVlanId = Annotated[int, Field(ge=1, le=4094)]
# RTAX_MTU and RTAX_ADVMSS are u32, but the kernel caps them at 65535 - 15 and 65535 - 40.
RouteMtu = Annotated[int, Field(ge=0, le=65520)]
RouteAdvmss = Annotated[int, Field(ge=0, le=65495)]
# rtm_scope is a u8; IPv4 refuses 255 (RT_SCOPE_NOWHERE).
RouteScope = Annotated[int, Field(ge=0, le=254)]
# A TCP, UDP or SCTP port in an nftables inet_service; 0 is no port.
Port = Annotated[int, Field(ge=1, le=65535)]
# A bit of the 32-bit packet mark (the reference's iptables backend; accepted, unused).
MarkBit = Annotated[int, Field(ge=0, le=31)]


@with_config(LOOSE)
class Route(TypedDict):
    dst: str
    gw: NotRequired[str]
    mtu: NotRequired[RouteMtu]
    advmss: NotRequired[RouteAdvmss]
    priority: NotRequired[U32]  # RTA_PRIORITY
    table: NotRequired[U32]  # RTA_TABLE
    scope: NotRequired[RouteScope]


@with_config(LOOSE)
class DNS(TypedDict):
    nameservers: NotRequired[list[str]]
    domain: NotRequired[str]
    search: NotRequired[list[str]]
    options: NotRequired[list[str]]


@with_config(LOOSE)
class Range(TypedDict):
    subnet: str
    rangeStart: NotRequired[str]
    rangeEnd: NotRequired[str]
    gateway: NotRequired[str]


@with_config(LOOSE)
class HostLocalIPAM(TypedDict):
    type: str
    ranges: NotRequired[list[Annotated[list[Range], Field(min_length=1)]]]
    # The legacy single-range form, still in many configs.
    subnet: NotRequired[str]
    rangeStart: NotRequired[str]
    rangeEnd: NotRequired[str]
    gateway: NotRequired[str]
    routes: NotRequired[list[Route]]
    dataDir: NotRequired[str]
    resolvConf: NotRequired[str]


@with_config(LOOSE)
class Attachment(TypedDict):
    containerID: str
    ifname: str


@with_config(LOOSE)
class CNIArgs(TypedDict):
    ips: NotRequired[list[str]]
    mac: NotRequired[str]


@with_config(LOOSE)
class Args(TypedDict):
    cni: NotRequired[CNIArgs]


@with_config(LOOSE)
class RuntimeConfig(TypedDict):
    ips: NotRequired[list[str]]
    ipRanges: NotRequired[list[Annotated[list[Range], Field(min_length=1)]]]
    mac: NotRequired[str]


# Keys every plugin config may carry (SPEC.md section 1 and 3).
@with_config(LOOSE)
class _Common(TypedDict):
    cniVersion: NotRequired[str]
    name: str
    type: str
    args: NotRequired[Args]
    runtimeConfig: NotRequired[RuntimeConfig]
    prevResult: NotRequired[dict]


# TypedDict keys cannot be written as attributes when they contain '/' and '.', so the GC
# keys are added through the functional form.
_GC = TypedDict(
    "_GC",
    {"cni.dev/valid-attachments": NotRequired[list[Attachment]], "cni.dev/attachments": NotRequired[list[Attachment]]},
)


@with_config(LOOSE)
class HostLocalConf(_Common, _GC):
    """What host-local reads: the whole config of the calling plugin, with its `ipam`."""

    ipam: HostLocalIPAM


@with_config(LOOSE)
class DelegateIPAM(TypedDict):
    type: str


@with_config(LOOSE)
class VlanTrunk(TypedDict):
    id: NotRequired[TrunkVlanId]
    minID: NotRequired[TrunkVlanId]
    maxID: NotRequired[TrunkVlanId]


@with_config(LOOSE)
class BridgeConf(_Common, _GC):
    bridge: NotRequired[Annotated[str, Field(min_length=1, max_length=15)]]
    isGateway: NotRequired[bool]
    isDefaultGateway: NotRequired[bool]
    forceAddress: NotRequired[bool]
    ipMasq: NotRequired[bool]
    ipMasqBackend: NotRequired[Literal["iptables", "nftables"]]
    mtu: NotRequired[Mtu]
    hairpinMode: NotRequired[bool]
    promiscMode: NotRequired[bool]
    vlan: NotRequired[VlanId]
    vlanTrunk: NotRequired[list[VlanTrunk]]
    preserveDefaultVlan: NotRequired[bool]
    enabledad: NotRequired[bool]
    macspoofchk: NotRequired[bool]
    disableContainerInterface: NotRequired[bool]
    portIsolation: NotRequired[bool]
    dns: NotRequired[DNS]
    ipam: NotRequired[DelegateIPAM]


@with_config(LOOSE)
class LoopbackConf(_Common):
    """loopback has no options of its own: the common keys, and a prevResult it passes on."""


@with_config(LOOSE)
class PortMapping(TypedDict):
    hostPort: Port
    containerPort: Port
    protocol: NotRequired[str]
    hostIP: NotRequired[str]


@with_config(LOOSE)
class PortmapRuntimeConfig(TypedDict):
    portMappings: NotRequired[list[PortMapping]]


@with_config(LOOSE)
class PortmapConf(_Common, _GC):
    """portmap's options; its runtimeConfig carries the capability portMappings."""

    runtimeConfig: NotRequired[PortmapRuntimeConfig]
    snat: NotRequired[bool]
    masqAll: NotRequired[bool]
    # Accepted for compatibility with the reference; our rules are nftables whatever they say.
    backend: NotRequired[Literal["iptables", "nftables"]]
    markMasqBit: NotRequired[MarkBit]
    externalSetMarkChain: NotRequired[str]
    # nft syntax, as tokens (cni_bridge/nft/portmap.py parses them)
    conditionsV4: NotRequired[list[str]]
    conditionsV6: NotRequired[list[str]]


# A result in the 1.1 shape (SPEC.md section 5), as a prevResult is read once upgraded: the
# plugins index into it, so its shape is checked like a config's.
@with_config(LOOSE)
class ResultInterface(TypedDict):
    name: str
    mac: NotRequired[str]
    mtu: NotRequired[U32]
    sandbox: NotRequired[str]
    socketPath: NotRequired[str]
    pciID: NotRequired[str]


@with_config(LOOSE)
class ResultIP(TypedDict):
    address: str
    gateway: NotRequired[str]
    interface: NotRequired[Annotated[int, Field(ge=0, le=2**31 - 1)]]  # an index into interfaces


@with_config(LOOSE)
class Result(TypedDict):
    cniVersion: NotRequired[str]
    interfaces: NotRequired[list[ResultInterface]]
    ips: NotRequired[list[ResultIP]]
    routes: NotRequired[list[Route]]
    dns: NotRequired[DNS]


# What the plugins validate with: each entry becomes the constant of that name in
# cni_bridge/_schemas.py (`python -m cni_bridge.schemagen` after any change here).
MODELS = {"HOST_LOCAL_CONF": HostLocalConf, "BRIDGE_CONF": BridgeConf, "LOOPBACK_CONF": LoopbackConf,
          "PORTMAP_CONF": PortmapConf, "RESULT": Result}


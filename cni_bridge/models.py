"""The network config, as pydantic models. Used at build time only.

Importing pydantic and building models costs over 100 ms, more than a whole plugin exec
should. So the models live here, and `python -m cni_bridge.models` writes their
pydantic-core schemas to cni_bridge/_schemas.py, which the plugins load into
pydantic_core's SchemaValidator at run time (about 3 ms). tests/unit checks that the
committed schemas match these models.

The models are TypedDicts, so validation returns plain dicts keyed by the wire names.
Unknown keys are dropped: runtimes add keys of their own and the spec says to keep going.
Defaults are applied in code (TypedDict schemas do not fill them in).
Only structure and types are checked here; what needs arithmetic (subnets, ranges) is
checked by the code that parses it.
"""

from typing import Annotated, Literal

from pydantic import ConfigDict, Field, TypeAdapter, with_config
from typing_extensions import NotRequired, TypedDict

LOOSE = ConfigDict(extra="ignore", strict=True)

Mtu = Annotated[int, Field(ge=68, le=65535)]
VlanId = Annotated[int, Field(ge=0, le=4094)]


@with_config(LOOSE)
class Route(TypedDict):
    dst: str
    gw: NotRequired[str]
    mtu: NotRequired[Annotated[int, Field(ge=0)]]
    advmss: NotRequired[Annotated[int, Field(ge=0)]]
    priority: NotRequired[Annotated[int, Field(ge=0)]]
    table: NotRequired[Annotated[int, Field(ge=0)]]
    scope: NotRequired[Annotated[int, Field(ge=0, le=255)]]


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
    id: NotRequired[VlanId]
    minID: NotRequired[VlanId]
    maxID: NotRequired[VlanId]


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


MODELS = {"HOST_LOCAL_CONF": HostLocalConf, "BRIDGE_CONF": BridgeConf, "LOOPBACK_CONF": LoopbackConf}


def _plain(value):
    """The core schema as a literal: no classes or metadata, and references named by the
    model alone (pydantic appends the class's id(), which changes from run to run)."""
    if isinstance(value, dict):
        return {
            k: (_stable_ref(v) if k in ("ref", "schema_ref") else _plain(v))
            for k, v in value.items()
            if k not in ("cls", "metadata")
        }
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _stable_ref(ref: str) -> str:
    return ref.rsplit(":", 1)[0].rsplit(".", 1)[-1]


def render_schemas() -> str:
    lines = [
        '"""Generated by `python -m cni_bridge.models` from cni_bridge/models.py. Do not edit."""',
        "",
        "# fmt: off",
    ]
    for constant, model in MODELS.items():
        lines.append(f"{constant} = {_plain(TypeAdapter(model).core_schema)!r}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    import pathlib

    target = pathlib.Path(__file__).with_name("_schemas.py")
    target.write_text(render_schemas())
    print(f"wrote {target}")

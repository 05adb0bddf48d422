"""The config models: the committed schemas match them, validation says what is wrong, and
every int field has the range of its kernel field."""

import copy
from pathlib import Path

import pytest

from cni_bridge import _schemas
from cni_bridge.cni import errors
from cni_bridge.cni.schema import validate_conf
from cni_bridge.cni.errors import CNIError


def test_committed_schemas_match_the_models():
    from cni_bridge.models import MODELS
    from cni_bridge.schemagen import render

    committed = Path(_schemas.__file__).read_text()
    assert render(MODELS) == committed, "run `python -m cni_bridge.schemagen` and commit cni_bridge/_schemas.py"


HOST_LOCAL = {
    "cniVersion": "1.1.0", "name": "net1", "type": "bridge",
    "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.0.0.0/24"}]]},
}
BRIDGE = {"cniVersion": "1.1.0", "name": "net1", "type": "bridge", "bridge": "cni0", "ipam": {"type": "host-local"}}
PORTMAP = {"cniVersion": "1.1.0", "name": "net1", "type": "portmap",
           "runtimeConfig": {"portMappings": [{"hostPort": 8080, "containerPort": 80}]}}
RESULT = {"interfaces": [{"name": "eth0"}], "ips": [{"address": "10.0.0.2/24"}], "routes": [{"dst": "0.0.0.0/0"}]}


def with_changes(base: dict, path, value) -> dict:
    """A deep copy of base with path (dotted, or a tuple of keys) set to value."""
    conf = copy.deepcopy(base)
    parts = path if isinstance(path, tuple) else path.split(".")
    *parents, last = [int(p) if p.isdigit() else p for p in parts]
    node = conf
    for part in parents:
        node = node[part]
    node[last] = value
    return conf


def test_unknown_keys_are_dropped_at_every_level():
    conf = with_changes(HOST_LOCAL, "ipam.ranges.0.0.vendorKey", 1)
    conf["runtimeConfig"] = {"portMappings": [], "ips": ["10.0.0.5"]}
    conf["ipam"]["someFutureKey"] = {"x": 1}
    conf["k8s.example/annotation"] = "v"
    valid = validate_conf(_schemas.HOST_LOCAL_CONF, conf)
    assert valid["ipam"]["ranges"] == [[{"subnet": "10.0.0.0/24"}]]
    assert valid["runtimeConfig"] == {"ips": ["10.0.0.5"]}
    assert "someFutureKey" not in valid["ipam"] and "k8s.example/annotation" not in valid


def test_validation_returns_plain_data_with_wire_names():
    conf = {**HOST_LOCAL, "cni.dev/valid-attachments": [{"containerID": "c1", "ifname": "eth0", "x": 1}]}
    valid = validate_conf(_schemas.HOST_LOCAL_CONF, conf)
    assert valid["cni.dev/valid-attachments"] == [{"containerID": "c1", "ifname": "eth0"}]
    assert type(valid) is dict


@pytest.mark.parametrize(
    "schema, base, path, value, location, message",
    [
        # strict: no coercion between JSON types
        ("HOST_LOCAL_CONF", HOST_LOCAL, "ipam.ranges.0.0.subnet", 10, "ipam.ranges.0.0.subnet", "valid string"),
        ("HOST_LOCAL_CONF", HOST_LOCAL, "ipam.dataDir", ["/tmp"], "ipam.dataDir", "valid string"),
        ("HOST_LOCAL_CONF", HOST_LOCAL, "ipam.routes", [{"dst": "0.0.0.0/0", "mtu": "1400"}], "ipam.routes.0.mtu", "valid integer"),
        ("HOST_LOCAL_CONF", HOST_LOCAL, "ipam.routes", [{"gw": "10.0.0.1"}], "ipam.routes.0.dst", "Field required"),
        ("HOST_LOCAL_CONF", HOST_LOCAL, "ipam.ranges", [[]], "ipam.ranges.0", "at least 1 item"),
        ("HOST_LOCAL_CONF", HOST_LOCAL, "ipam.ranges", [{"subnet": "10.0.0.0/24"}], "ipam.ranges.0", "valid list"),
        ("HOST_LOCAL_CONF", HOST_LOCAL, "ipam", None, "ipam", "valid dictionary"),
        ("HOST_LOCAL_CONF", HOST_LOCAL, "args", {"cni": {"ips": "10.0.0.5"}}, "args.cni.ips", "valid list"),
        ("HOST_LOCAL_CONF", HOST_LOCAL, "runtimeConfig", {"ipRanges": [[{"rangeStart": "10.0.0.5"}]]},
         "runtimeConfig.ipRanges.0.0.subnet", "Field required"),
        ("HOST_LOCAL_CONF", HOST_LOCAL, ("cni.dev/valid-attachments",), [{"containerID": "c1"}],
         "cni.dev/valid-attachments.0.ifname", "Field required"),
        ("BRIDGE_CONF", BRIDGE, "mtu", "1500", "mtu", "valid integer"),
        ("BRIDGE_CONF", BRIDGE, "mtu", 1500.0, "mtu", "valid integer"),
        ("BRIDGE_CONF", BRIDGE, "mtu", 67, "mtu", "greater than or equal to 68"),
        ("BRIDGE_CONF", BRIDGE, "isGateway", "true", "isGateway", "valid boolean"),
        ("BRIDGE_CONF", BRIDGE, "isGateway", 1, "isGateway", "valid boolean"),
        ("BRIDGE_CONF", BRIDGE, "vlan", 4095, "vlan", "less than or equal to 4094"),
        ("BRIDGE_CONF", BRIDGE, "bridge", "a" * 16, "bridge", "at most 15 characters"),
        ("BRIDGE_CONF", BRIDGE, "bridge", "", "bridge", "at least 1 character"),
        ("BRIDGE_CONF", BRIDGE, "ipMasqBackend", "ebtables", "ipMasqBackend", "'iptables' or 'nftables'"),
        ("BRIDGE_CONF", BRIDGE, "dns", {"nameservers": "10.0.0.53"}, "dns.nameservers", "valid list"),
    ],
)
def test_invalid_config_is_named_by_location(schema, base, path, value, location, message):
    with pytest.raises(CNIError) as caught:
        validate_conf(getattr(_schemas, schema), with_changes(base, path, value))
    assert caught.value.code == errors.INVALID_CONFIG
    assert caught.value.msg == "invalid network config"
    assert f"{location}: " in caught.value.details and message in caught.value.details, caught.value.details


def test_every_problem_is_reported():
    conf = with_changes(BRIDGE, "mtu", "9000")
    conf["hairpinMode"] = "yes"
    del conf["type"]
    with pytest.raises(CNIError) as caught:
        validate_conf(_schemas.BRIDGE_CONF, conf)
    details = caught.value.details
    assert all(f"{key}: " in details for key in ("mtu", "hairpinMode", "type")), details


def test_a_non_object_config_is_reported_at_the_top():
    with pytest.raises(CNIError) as caught:
        validate_conf(_schemas.BRIDGE_CONF, ["not", "a", "config"])
    assert caught.value.details.startswith("<config>: ")


# Every int field of every model, with the range of the kernel field it ends up in.
U32_MAX = 2**32 - 1
KERNEL_RANGES = [
    ("HOST_LOCAL_CONF", HOST_LOCAL, "ipam.routes.0.mtu", 0, 65520),  # RTAX_MTU, capped by the kernel
    ("HOST_LOCAL_CONF", HOST_LOCAL, "ipam.routes.0.advmss", 0, 65495),  # RTAX_ADVMSS, capped by the kernel
    ("HOST_LOCAL_CONF", HOST_LOCAL, "ipam.routes.0.priority", 0, U32_MAX),  # RTA_PRIORITY
    ("HOST_LOCAL_CONF", HOST_LOCAL, "ipam.routes.0.table", 0, U32_MAX),  # RTA_TABLE
    ("HOST_LOCAL_CONF", HOST_LOCAL, "ipam.routes.0.scope", 0, 254),  # rtm_scope; IPv4 refuses 255
    ("BRIDGE_CONF", BRIDGE, "mtu", 68, 65535),  # IFLA_MTU: the bridge's and veth's min_mtu, max_mtu
    ("BRIDGE_CONF", BRIDGE, "vlan", 0, 4094),  # 0 is untagged
    ("BRIDGE_CONF", BRIDGE, "vlanTrunk.0.id", 1, 4094),  # bridge VLAN ids
    ("BRIDGE_CONF", BRIDGE, "vlanTrunk.0.minID", 1, 4094),
    ("BRIDGE_CONF", BRIDGE, "vlanTrunk.0.maxID", 1, 4094),
    ("PORTMAP_CONF", PORTMAP, "runtimeConfig.portMappings.0.hostPort", 1, 65535),  # an inet_service; 0 is no port
    ("PORTMAP_CONF", PORTMAP, "runtimeConfig.portMappings.0.containerPort", 1, 65535),
    ("PORTMAP_CONF", PORTMAP, "markMasqBit", 0, 31),  # a bit of the 32-bit mark (the reference's; unused)
    # A prevResult's: what the plugin that made it could have set, the same kernel fields.
    ("RESULT", RESULT, "interfaces.0.mtu", 0, U32_MAX),  # 1.1's interface mtu; a plugin may report any
    ("RESULT", RESULT, "ips.0.interface", 0, 2**31 - 1),  # an index into interfaces, not a kernel field
    ("RESULT", RESULT, "routes.0.mtu", 0, 65520),
    ("RESULT", RESULT, "routes.0.advmss", 0, 65495),
    ("RESULT", RESULT, "routes.0.priority", 0, U32_MAX),
    ("RESULT", RESULT, "routes.0.table", 0, U32_MAX),
    ("RESULT", RESULT, "routes.0.scope", 0, 254),
]


def _with_route_or_trunk(base: dict, path: str, value) -> dict:
    """base with path set, creating the one route or trunk entry the path goes through."""
    conf = copy.deepcopy(base)
    if path.startswith("ipam.routes.0."):
        conf["ipam"]["routes"] = [{"dst": "10.1.0.0/16"}]
    if path.startswith("vlanTrunk.0."):
        conf["vlanTrunk"] = [{}]
    return with_changes(conf, path, value)


@pytest.mark.parametrize("schema, base, path, lowest, highest", KERNEL_RANGES)
def test_int_fields_have_their_kernel_range(schema, base, path, lowest, highest):
    for value in (lowest, highest):
        valid = validate_conf(getattr(_schemas, schema), _with_route_or_trunk(base, path, value))
        node = valid
        for part in path.split("."):
            node = node[int(part) if part.isdigit() else part]
        assert node == value
    for value, message in ((lowest - 1, f"greater than or equal to {lowest}"), (highest + 1, f"less than or equal to {highest}")):
        with pytest.raises(CNIError) as caught:
            validate_conf(getattr(_schemas, schema), _with_route_or_trunk(base, path, value))
        assert caught.value.code == errors.INVALID_CONFIG
        assert caught.value.details == f"{path}: Input should be {message}"


def _int_fields(node, path=()):
    """The dotted paths of the int fields under a schema node (list items as index 0)."""
    kind = node[0]
    if kind == "int":
        yield ".".join(path), node[1], node[2]
    elif kind == "typed-dict":
        for key, (_, field) in node[1].items():
            yield from _int_fields(field, path + (key,))
    elif kind == "list":
        yield from _int_fields(node[1], path + ("0",))


def test_every_int_field_has_a_kernel_range_listed_here():
    """A new int field needs its kernel range, in the model and in KERNEL_RANGES above."""
    from cni_bridge.models import MODELS

    listed = {(schema, path, lowest, highest) for schema, _, path, lowest, highest in KERNEL_RANGES}
    fields = {(schema, *field) for schema in MODELS for field in _int_fields(getattr(_schemas, schema))}
    assert fields == listed
    assert all(0 <= lowest <= highest <= U32_MAX for _, _, lowest, highest in fields)

"""The config models: the committed schemas match them, and validation says what is wrong."""

import copy
from pathlib import Path

import pytest

from cni_bridge import _schemas
from cni_bridge.cni import errors
from cni_bridge.cni.schema import validate_conf
from cni_bridge.cni.errors import CNIError


def test_committed_schemas_match_the_models():
    from cni_bridge.models import render_schemas

    committed = Path(_schemas.__file__).read_text()
    assert render_schemas() == committed, "run `python -m cni_bridge.models` and commit cni_bridge/_schemas.py"


HOST_LOCAL = {
    "cniVersion": "1.1.0", "name": "net1", "type": "bridge",
    "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.0.0.0/24"}]]},
}
BRIDGE = {"cniVersion": "1.1.0", "name": "net1", "type": "bridge", "bridge": "cni0", "ipam": {"type": "host-local"}}


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

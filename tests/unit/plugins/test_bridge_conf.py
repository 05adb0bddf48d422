"""The bridge's config handling and pure computations (no kernel)."""

import json

import pytest

from cni_bridge.cni import errors
from cni_bridge.plugins.bridge import BridgeConf, calc_routes
from cni_bridge.cni.errors import CNIError
from cni_bridge.cni.skel import load_cmd_args

ENV = {"CNI_CONTAINERID": "c1", "CNI_NETNS": "/run/netns/x", "CNI_IFNAME": "eth0"}


def bridge_conf(cni_args: str = "", **fields) -> BridgeConf:
    conf = {"cniVersion": "1.1.0", "name": "net1", "type": "bridge", **fields}
    cmd_args = load_cmd_args("ADD", {**ENV, "CNI_ARGS": cni_args}, json.dumps(conf).encode())
    return BridgeConf(cmd_args)


def config_error(**fields) -> CNIError:
    with pytest.raises(CNIError) as raised:
        bridge_conf(**fields)
    assert raised.value.code == errors.INVALID_CONFIG
    return raised.value


def test_defaults_match_the_reference():
    conf = bridge_conf()
    assert conf.bridge == "cni0"
    assert (conf.is_gateway, conf.ip_masq, conf.hairpin, conf.promisc) == (False, False, False, False)
    assert conf.mtu is None and conf.vlan == 0 and not conf.vlan_filtering
    assert conf.preserve_default_vlan is True
    assert conf.ipam_type == "" and conf.mac is None


def test_default_gateway_implies_gateway():
    assert bridge_conf(isDefaultGateway=True).is_gateway is True


@pytest.mark.parametrize("fields, fragment", [
    ({"hairpinMode": True, "promiscMode": True}, "hairpinMode and promiscMode"),
    ({"disableContainerInterface": True, "ipam": {"type": "host-local"}}, "disableContainerInterface"),
    ({"mtu": 10}, "greater than or equal to 68"),
    ({"vlan": 5000}, "less than or equal to 4094"),
    ({"isGateway": "yes"}, "valid boolean"),
    ({"ipMasqBackend": "pf"}, "ipMasqBackend"),
    ({"bridge": "a-name-longer-than-15"}, "bridge"),
    ({"vlan": 10, "vlanTrunk": [{"minID": 5, "maxID": 20}]}, "also in vlanTrunk"),
    ({"vlanTrunk": [{"minID": 5}]}, "minID and maxID together"),
    ({"vlanTrunk": [{"minID": 9, "maxID": 3}]}, "is empty"),
    ({"vlanTrunk": [{"id": 3, "minID": 1, "maxID": 4}]}, "either id or minID/maxID"),
])
def test_bad_options_are_config_errors(fields, fragment):
    error = config_error(**fields)
    assert fragment in error.details


def test_unknown_keys_are_ignored():
    assert bridge_conf(someRuntimeKey={"x": 1}, bridge="br7").bridge == "br7"


def test_vlan_trunk_ranges():
    conf = bridge_conf(vlanTrunk=[{"id": 7}, {"minID": 100, "maxID": 110}])
    assert conf.vlan_trunk == [(7, 7), (100, 110)]
    assert conf.vlan_filtering


def test_mac_precedence_runtime_config_then_args_then_cni_args():
    cni_args = "MAC=02:00:00:00:00:03"
    assert bridge_conf(cni_args).mac == "02:00:00:00:00:03"
    assert bridge_conf(cni_args, args={"cni": {"mac": "02:00:00:00:00:02"}}).mac == "02:00:00:00:00:02"
    assert bridge_conf(
        cni_args, args={"cni": {"mac": "02:00:00:00:00:02"}}, runtimeConfig={"mac": "02:00:00:00:00:01"}
    ).mac == "02:00:00:00:00:01"


@pytest.mark.parametrize("mac", ["02:00:00:00:00", "zz:00:00:00:00:01", "01:00:5e:00:00:01"])
def test_bad_macs_are_rejected(mac):
    assert "MAC" in config_error(runtimeConfig={"mac": mac}).details


def test_mac_is_normalised():
    assert bridge_conf(runtimeConfig={"mac": "02-AB-00-00-00-01"}).mac == "02:ab:00:00:00:01"


IPAM_RESULT = {
    "ips": [{"address": "10.1.0.5/24", "gateway": "10.1.0.1"}, {"address": "fd00::5/64", "gateway": "fd00::1"}],
    "routes": [{"dst": "192.168.0.0/16"}],
}


def test_routes_are_ipams_without_default_gateway():
    assert calc_routes(IPAM_RESULT, bridge_conf()) == [{"dst": "192.168.0.0/16"}]


def test_default_gateway_adds_a_default_route_per_family():
    routes = calc_routes(IPAM_RESULT, bridge_conf(isDefaultGateway=True))
    assert {"dst": "0.0.0.0/0", "gw": "10.1.0.1"} in routes
    assert {"dst": "::/0", "gw": "fd00::1"} in routes


def test_default_gateway_keeps_an_equal_ipam_default_route():
    result = {**IPAM_RESULT, "routes": [{"dst": "0.0.0.0/0"}]}
    routes = calc_routes(result, bridge_conf(isDefaultGateway=True))
    assert [r for r in routes if r["dst"] == "0.0.0.0/0"] == [{"dst": "0.0.0.0/0"}]


def test_default_gateway_conflicting_with_ipam_route_is_an_error():
    result = {**IPAM_RESULT, "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.0.254"}]}
    with pytest.raises(CNIError) as raised:
        calc_routes(result, bridge_conf(isDefaultGateway=True))
    assert "conflicts" in raised.value.details


@pytest.mark.parametrize("name, problem", [
    ("br\x00", "control character"), ("a/b", "'/'"), ("br 0", "white space"), ("..", "'.' or '..'"),
    ("é" * 8, "longer than 15 bytes"),  # 8 characters pass the schema; the kernel counts 16 bytes
])
def test_a_bridge_name_the_kernel_would_refuse_is_invalid_config(name, problem):
    """It once reached the kernel and came back as error 999."""
    error = config_error(bridge=name)
    assert error.msg == "invalid bridge config" and problem in error.details and "bridge name" in error.details

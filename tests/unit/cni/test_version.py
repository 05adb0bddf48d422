"""Result conversion (1.1 shape -> every version) and prevResult upgrade (every version -> 1.1)."""

import copy

import pytest

from cni_bridge.cni import errors, version
from cni_bridge.cni.errors import CNIError

DNS = {"nameservers": ["10.0.0.53"], "search": ["example.com"]}

# A 1.1 result with what each older version loses: a second IPv4 address, 1.1-only
# interface and route keys, routes of both families.
RESULT = {
    "cniVersion": "1.1.0",
    "interfaces": [
        {"name": "eth0", "mac": "0a:58:0a:00:00:02", "mtu": 1400, "sandbox": "/var/run/netns/c1",
         "socketPath": "/run/vhost.sock", "pciID": "0000:00:1f.0"},
    ],
    "ips": [
        {"address": "10.0.0.2/24", "gateway": "10.0.0.1", "interface": 0},
        {"address": "10.0.1.2/24", "interface": 0},
        {"address": "fd00::2/64", "gateway": "fd00::1", "interface": 0},
        {"address": "fd01::2/64", "interface": 0},
    ],
    "routes": [{"dst": "0.0.0.0/0", "gw": "10.0.0.1", "mtu": 1300}, {"dst": "::/0", "gw": "fd00::1"}],
    "dns": DNS,
}

OLD_IFACES = [{"name": "eth0", "mac": "0a:58:0a:00:00:02", "sandbox": "/var/run/netns/c1"}]
VERSIONED_IPS = [
    {"version": "4", "address": "10.0.0.2/24", "gateway": "10.0.0.1", "interface": 0},
    {"version": "4", "address": "10.0.1.2/24", "interface": 0},
    {"version": "6", "address": "fd00::2/64", "gateway": "fd00::1", "interface": 0},
    {"version": "6", "address": "fd01::2/64", "interface": 0},
]
IP4_IP6 = {
    "ip4": {"ip": "10.0.0.2/24", "gateway": "10.0.0.1", "routes": [{"dst": "0.0.0.0/0", "gw": "10.0.0.1"}]},
    "ip6": {"ip": "fd00::2/64", "gateway": "fd00::1", "routes": [{"dst": "::/0", "gw": "fd00::1"}]},
    "dns": DNS,
}


def expected(to_version: str) -> dict:
    if version.at_least(to_version, "1.0.0"):
        return {**RESULT, "cniVersion": to_version}
    if version.at_least(to_version, "0.3.0"):
        return {"cniVersion": to_version, "interfaces": OLD_IFACES, "ips": VERSIONED_IPS,
                "routes": RESULT["routes"], "dns": DNS}
    return {"cniVersion": to_version, **IP4_IP6}


@pytest.mark.parametrize("to_version", version.SUPPORTED_VERSIONS)
def test_convert_result_to_every_version(to_version):
    original = copy.deepcopy(RESULT)
    assert version.convert_result(RESULT, to_version) == expected(to_version)
    assert RESULT == original, "conversion must not change its input"


@pytest.mark.parametrize("to_version", version.SUPPORTED_VERSIONS)
@pytest.mark.parametrize("dns", [{}, {"nameservers": [], "search": []}, None])
def test_empty_dns_is_omitted(to_version, dns):
    result = {"cniVersion": "1.1.0", "ips": [{"address": "10.0.0.2/24"}], "dns": dns}
    assert "dns" not in version.convert_result(result, to_version)


@pytest.mark.parametrize("to_version", ["0.1.0", "0.2.0"])
def test_ipv6_only_result_keeps_ip6_alone(to_version):
    result = {"ips": [{"address": "fd00::2/64"}], "routes": [{"dst": "10.0.0.0/8"}, {"dst": "fd00::/8"}]}
    assert version.convert_result(result, to_version) == {
        "cniVersion": to_version, "ip6": {"ip": "fd00::2/64", "routes": [{"dst": "fd00::/8"}]},
    }


@pytest.mark.parametrize("to_version", ["0.1.0", "0.2.0"])
@pytest.mark.parametrize("ips", [None, []])
def test_result_without_address_cannot_be_written_for_020(to_version, ips):
    with pytest.raises(CNIError) as caught:
        version.convert_result({"cniVersion": "1.1.0", "ips": ips}, to_version)
    assert caught.value.code == errors.INTERNAL
    assert to_version in caught.value.msg and "no valid IP addresses" in caught.value.details


@pytest.mark.parametrize("to_version", ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
def test_result_without_address_is_fine_from_030(to_version):
    assert version.convert_result({"cniVersion": "1.1.0"}, to_version) == {"cniVersion": to_version}


# ---- prevResult upgrade ---------------------------------------------------------------

# What survives the round trip 1.1 -> version -> 1.1.
UPGRADED = {
    "1.1.0": RESULT,
    "1.0.0": RESULT,
    "0.4.0": {**RESULT, "interfaces": OLD_IFACES},
    "0.2.0": {
        "cniVersion": "1.1.0",
        "ips": [{"address": "10.0.0.2/24", "gateway": "10.0.0.1"}, {"address": "fd00::2/64", "gateway": "fd00::1"}],
        "routes": [{"dst": "0.0.0.0/0", "gw": "10.0.0.1"}, {"dst": "::/0", "gw": "fd00::1"}],
        "dns": DNS,
    },
}
UPGRADED["0.3.0"] = UPGRADED["0.3.1"] = UPGRADED["0.4.0"]
UPGRADED["0.1.0"] = UPGRADED["0.2.0"]


@pytest.mark.parametrize("from_version", version.SUPPORTED_VERSIONS)
def test_upgrade_prev_result_of_every_version(from_version):
    prev = expected(from_version)
    original = copy.deepcopy(prev)
    assert version.upgrade_result(prev, "1.1.0") == UPGRADED[from_version]
    assert prev == original


@pytest.mark.parametrize("config_version", ["0.2.0", "0.4.0"])
def test_prev_result_without_version_is_read_as_the_configs(config_version):
    prev = {k: v for k, v in expected(config_version).items() if k != "cniVersion"}
    assert version.upgrade_result(prev, config_version) == UPGRADED[config_version]


@pytest.mark.parametrize(
    "prev, code",
    [
        ([], errors.DECODE_FAILURE),
        ("10.0.0.2/24", errors.DECODE_FAILURE),
        ({"cniVersion": "0.5.0"}, errors.INCOMPATIBLE_VERSION),
        ({"cniVersion": "0.2.0", "ip4": {"gateway": "10.0.0.1"}}, errors.DECODE_FAILURE),
        ({"cniVersion": "0.4.0", "ips": [["10.0.0.2/24"]]}, errors.DECODE_FAILURE),
    ],
)
def test_bad_prev_result(prev, code):
    with pytest.raises(CNIError) as caught:
        version.upgrade_result(prev, "1.1.0")
    assert caught.value.code == code


@pytest.mark.parametrize("value", ["0.5.0", "1.1", "", None, 1, "v1.0.0"])
def test_check_version_refuses_unsupported(value):
    with pytest.raises(CNIError) as caught:
        version.check_version(value)
    assert caught.value.code == errors.INCOMPATIBLE_VERSION
    assert repr(value) in caught.value.details


@pytest.mark.parametrize(
    "left, right, result",
    [("0.4.0", "0.4.0", True), ("1.0.0", "0.4.0", True), ("0.3.1", "0.4.0", False), ("0.10.0", "0.4.0", True)],
)
def test_at_least_compares_numerically(left, right, result):
    assert version.at_least(left, right) is result


@pytest.mark.parametrize("prev, where", [
    # The plugins index into a prevResult: a field of the wrong type once reached them as it was.
    ({"cniVersion": "1.1.0", "interfaces": [None]}, "prevResult.interfaces.0: Input should be a valid dictionary"),
    ({"cniVersion": "1.0.0", "interfaces": [{"mac": "0a:58:00:00:00:01"}]}, "prevResult.interfaces.0.name: Field required"),
    ({"cniVersion": "1.1.0", "ips": [{"address": 10}]}, "prevResult.ips.0.address: Input should be a valid string"),
    ({"cniVersion": "1.1.0", "ips": [{"address": "10.0.0.2/24", "interface": -1}]}, "prevResult.ips.0.interface"),
    ({"cniVersion": "0.4.0", "routes": [{"gw": "10.0.0.1"}]}, "prevResult.routes.0.dst: Field required"),
    ({"cniVersion": "0.2.0", "ip4": {"ip": ["10.0.0.2/24"]}}, "prevResult.ips.0.address: Input should be a valid string"),
    ({"cniVersion": "1.1.0", "dns": "10.0.0.1"}, "prevResult.dns: Input should be a valid dictionary"),
    ({"cniVersion": "1.1.0", "ips": [{"address": "10.0.0.2"}]}, "prevResult.ips.0.address: invalid CIDR '10.0.0.2'"),
    ({"cniVersion": "1.1.0", "ips": [{"address": ""}]}, "prevResult.ips.0.address: invalid CIDR ''"),
    ({"cniVersion": "1.0.0", "routes": [{"dst": ""}]}, "prevResult.routes.0.dst: invalid CIDR ''"),
    ({"cniVersion": "1.1.0", "ips": [{"address": "10.0.0.2/24", "gateway": "x"}]},
     "prevResult.ips.0.gateway: invalid IP address 'x'"),
    ({"cniVersion": "0.4.0", "routes": [{"dst": "0.0.0.0/33"}]}, "prevResult.routes.0.dst: invalid CIDR"),
    ({"cniVersion": "1.0.0", "routes": [{"dst": "0.0.0.0/0", "gw": "10.0.0.1/24"}]}, "prevResult.routes.0.gw: invalid IP"),
])
def test_a_prev_result_of_the_wrong_shape_is_refused(prev, where):
    with pytest.raises(CNIError) as caught:
        version.upgrade_result(prev, "1.1.0")
    assert (caught.value.code, caught.value.msg) == (errors.DECODE_FAILURE, "failed to decode prevResult")
    assert where in caught.value.details, caught.value.details


def test_an_empty_gateway_counts_as_none():
    prev = {"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.2/24", "gateway": ""}], "routes": [{"dst": "0.0.0.0/0", "gw": ""}]}
    assert version.upgrade_result(prev, "1.1.0")["ips"] == prev["ips"]

"""The loopback plugin without a kernel: its config, the result it builds in every version,
the address check, and the failures that come before it touches a namespace."""

import json

import pytest

from cni_bridge.cni import errors, skel, version
from cni_bridge.cni.errors import CNIError
from cni_bridge.plugins import loopback

# A path that does not exist: a command that got as far as opening it would fail with 4.
ENV = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/nonexistent/lbk-netns", "CNI_IFNAME": "eth0"}
CONF = {"cniVersion": "1.1.0", "name": "lo-net", "type": "loopback"}
KERNEL_ADDRESSES = [(2, "127.0.0.1/8"), (10, "::1/128")]


def dispatch(conf, **env):
    stdin = conf if isinstance(conf, bytes) else json.dumps(conf).encode()
    code, out = skel.dispatch(loopback.PLUGIN, {**ENV, **env}, stdin)
    return code, (json.loads(out) if out else None)


def as_version(result: dict, cni_version: str) -> dict:
    return json.loads(json.dumps(version.convert_result(result, cni_version)))


# ---- the result ------------------------------------------------------------------------


def test_result_is_lo_with_its_first_address_of_each_family():
    addresses = [(2, "127.0.0.1/8"), (2, "127.0.0.2/8"), (10, "::1/128")]
    assert loopback.loopback_result("/run/netns/p1", addresses) == {
        "cniVersion": "1.1.0",
        "interfaces": [{"name": "lo", "mac": "00:00:00:00:00:00", "sandbox": "/run/netns/p1"}],
        "ips": [{"interface": 0, "address": "127.0.0.1/8"}, {"interface": 0, "address": "::1/128"}],
    }


def test_ipv4_comes_first_whatever_order_the_kernel_lists():
    result = loopback.loopback_result("/p", [(10, "::1/128"), (2, "127.0.0.1/8")])
    assert [ip["address"] for ip in result["ips"]] == ["127.0.0.1/8", "::1/128"]


def test_a_namespace_without_ipv6_gives_only_127_0_0_1():
    result = loopback.loopback_result("/p", [(2, "127.0.0.1/8")])
    assert result["ips"] == [{"interface": 0, "address": "127.0.0.1/8"}]


def test_lo_without_addresses_gives_the_interface_alone():
    assert "ips" not in loopback.loopback_result("/p", [])


@pytest.mark.parametrize("cni_version", ["1.1.0", "1.0.0"])
def test_result_shape_1x(cni_version):
    out = as_version(loopback.loopback_result("/p", KERNEL_ADDRESSES), cni_version)
    assert out == {
        "cniVersion": cni_version,
        "interfaces": [{"name": "lo", "mac": "00:00:00:00:00:00", "sandbox": "/p"}],
        "ips": [{"interface": 0, "address": "127.0.0.1/8"}, {"interface": 0, "address": "::1/128"}],
    }


@pytest.mark.parametrize("cni_version", ["0.4.0", "0.3.1", "0.3.0"])
def test_result_shape_03_04_names_the_ip_versions(cni_version):
    out = as_version(loopback.loopback_result("/p", KERNEL_ADDRESSES), cni_version)
    assert out == {
        "cniVersion": cni_version,
        "interfaces": [{"name": "lo", "mac": "00:00:00:00:00:00", "sandbox": "/p"}],
        "ips": [{"version": "4", "interface": 0, "address": "127.0.0.1/8"},
                {"version": "6", "interface": 0, "address": "::1/128"}],
    }


@pytest.mark.parametrize("cni_version", ["0.2.0", "0.1.0"])
def test_result_shape_01_02_has_ip4_and_ip6(cni_version):
    out = as_version(loopback.loopback_result("/p", KERNEL_ADDRESSES), cni_version)
    assert out == {"cniVersion": cni_version, "ip4": {"ip": "127.0.0.1/8"}, "ip6": {"ip": "::1/128"}}


# ---- the address check -----------------------------------------------------------------


@pytest.mark.parametrize("cidr", ["127.0.0.1/8", "127.255.255.254/32", "::1/128", "::ffff:127.0.0.1/128"])
def test_loopback_addresses(cidr):
    assert loopback.is_loopback_address(cidr)


@pytest.mark.parametrize("cidr", ["10.181.0.5/32", "128.0.0.1/8", "126.255.255.255/8", "::2/128", "fd19::1/128",
                                  "::ffff:10.0.0.1/128", "::127.0.0.1/128", "fe80::1/64"])
def test_other_addresses(cidr):
    assert not loopback.is_loopback_address(cidr)


def test_a_foreign_address_is_named_in_the_error():
    with pytest.raises(CNIError) as raised:
        loopback.refuse_non_loopback(["127.0.0.1/8", "10.181.0.5/32", "::1/128", "fd19::5/128"])
    assert raised.value.code == errors.INTERNAL
    assert raised.value.msg == "loopback interface found with non-loopback address"
    assert raised.value.details == "10.181.0.5/32, fd19::5/128"


def test_loopback_addresses_pass():
    loopback.refuse_non_loopback(["127.0.0.1/8", "::1/128"])


# ---- what fails before any namespace is opened -------------------------------------------


@pytest.mark.parametrize("command", ["ADD", "DEL", "CHECK"])
@pytest.mark.parametrize("conf, code, fragment", [
    ({**CONF, "prevResult": "not an object"}, errors.INVALID_CONFIG, "prevResult"),
    ({**CONF, "name": 7}, errors.INVALID_CONFIG, "name"),
    ({k: v for k, v in CONF.items() if k != "type"}, errors.INVALID_CONFIG, "type"),
    ({**CONF, "cniVersion": "9.9.9"}, errors.INCOMPATIBLE_VERSION, "9.9.9"),
    (b"{not json", errors.DECODE_FAILURE, "decode"),
])
def test_bad_config_is_refused_before_the_netns_is_touched(command, conf, code, fragment):
    result, out = dispatch(conf, CNI_COMMAND=command)
    assert result == 1 and out["code"] == code, out
    assert fragment in f"{out['msg']} {out['details']}", out


def test_a_prev_result_of_an_unknown_version_is_refused_before_the_netns_is_touched():
    code, out = dispatch({**CONF, "prevResult": {"cniVersion": "7.0.0", "ips": []}})
    assert code == 1 and out["code"] == errors.INCOMPATIBLE_VERSION, out


def test_add_without_a_netns_is_an_environment_error():
    code, out = dispatch(CONF, CNI_NETNS="")
    assert code == 1 and out["code"] == errors.INVALID_ENVIRONMENT and "CNI_NETNS" in out["msg"], out


@pytest.mark.parametrize("command", ["ADD", "CHECK"])
def test_a_missing_netns_is_an_environment_error(command):
    code, out = dispatch(CONF, CNI_COMMAND=command)
    assert code == 1 and out["code"] == errors.INVALID_ENVIRONMENT and "/nonexistent/lbk-netns" in out["msg"], out


def test_del_without_a_netns_succeeds():
    assert dispatch(CONF, CNI_COMMAND="DEL", CNI_NETNS="") == (0, None)


def test_del_with_the_netns_gone_succeeds():
    assert dispatch(CONF, CNI_COMMAND="DEL") == (0, None)


@pytest.mark.parametrize("command", ["GC", "STATUS"])
def test_gc_and_status_have_nothing_to_do(command):
    assert dispatch(CONF, CNI_COMMAND=command) == (0, None)

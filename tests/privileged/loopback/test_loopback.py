"""Our loopback plugin against the kernel: ADD, CHECK, DEL in throwaway namespaces, checked
with `ip -j`."""

import os
import subprocess

import pytest

from cni_bridge.cni import errors
from loopback_rig import CONF, exec_in_node, lo, lo_addresses, lo_is_up, without_ipv6

pytestmark = pytest.mark.privileged


@pytest.fixture
def loopback(plugin_dir, node):
    """loopback(command, netns path, conf=CONF, ifname="eth0") -> PluginRun, ours, run in the node."""

    def run(command, netns, conf=None, ifname="eth0"):
        return exec_in_node(plugin_dir / "loopback", node, command, netns, conf, ifname)

    return run


def ok(res):
    assert res.code == 0, res
    return res.out


def failed(res, code: int) -> dict:
    assert res.code == 1 and res.out["code"] == code and res.out["msg"], res
    return res.out


def test_add_sets_lo_up_and_reports_it(loopback, container_netns):
    assert not lo_is_up(container_netns)
    out = ok(loopback("ADD", container_netns.path))
    assert lo_is_up(container_netns)
    addresses = lo_addresses(container_netns)
    assert addresses == ["127.0.0.1/8", "::1/128"]
    assert out == {
        "cniVersion": "1.1.0",
        "interfaces": [{"name": "lo", "mac": "00:00:00:00:00:00", "sandbox": container_netns.path}],
        "ips": [{"interface": 0, "address": address} for address in addresses],
    }
    # CNI_IFNAME is not ours to create: lo is the only link
    assert [link["ifname"] for link in container_netns.ip_json("link", "show")] == ["lo"]


def test_add_when_lo_is_already_up(loopback, container_netns):
    container_netns.ip("link", "set", "lo", "up")
    first = ok(loopback("ADD", container_netns.path))
    assert ok(loopback("ADD", container_netns.path)) == first
    assert lo_is_up(container_netns) and [ip["address"] for ip in first["ips"]] == lo_addresses(container_netns)


def test_the_node_is_left_alone(loopback, node, container_netns):
    ok(loopback("ADD", container_netns.path))
    assert not lo_is_up(node)


def test_a_namespace_without_ipv6(loopback, container_netns):
    without_ipv6(container_netns)
    out = ok(loopback("ADD", container_netns.path))
    assert lo_addresses(container_netns) == ["127.0.0.1/8"]
    assert out["ips"] == [{"interface": 0, "address": "127.0.0.1/8"}]


def test_first_address_of_each_family(loopback, container_netns):
    container_netns.ip("link", "set", "lo", "up")
    container_netns.ip("addr", "add", "127.0.0.53/8", "dev", "lo")
    out = ok(loopback("ADD", container_netns.path))
    addresses = lo_addresses(container_netns)
    assert "127.0.0.53/8" in addresses
    assert [ip["address"] for ip in out["ips"]] == [addresses[0], "::1/128"]


@pytest.mark.parametrize("address", ["10.181.0.5/32", "fd19::5/128"])
def test_a_non_loopback_address_is_refused_and_nothing_changes(loopback, container_netns, address):
    container_netns.ip("addr", "add", address, "dev", "lo")
    before = lo(container_netns)
    out = failed(loopback("ADD", container_netns.path), errors.INTERNAL)
    assert out["msg"] == "loopback interface found with non-loopback address" and address in out["details"]
    assert lo(container_netns) == before and not lo_is_up(container_netns)


def test_check_passes_while_lo_is_up_and_fails_once_it_is_down(loopback, container_netns):
    result = ok(loopback("ADD", container_netns.path))
    assert ok(loopback("CHECK", container_netns.path, {**CONF, "prevResult": result})) is None
    assert ok(loopback("CHECK", container_netns.path)) is None  # prevResult is not needed
    container_netns.ip("link", "set", "lo", "down")
    out = failed(loopback("CHECK", container_netns.path, {**CONF, "prevResult": result}), errors.INTERNAL)
    assert out["msg"] == "loopback interface is down"


def test_check_of_a_missing_netns_fails(loopback):
    failed(loopback("CHECK", "/run/netns/lbk-never-made"), errors.INVALID_ENVIRONMENT)


def test_del_sets_lo_down_and_a_second_del_succeeds(loopback, container_netns):
    ok(loopback("ADD", container_netns.path))
    assert ok(loopback("DEL", container_netns.path)) is None
    assert not lo_is_up(container_netns)
    assert ok(loopback("DEL", container_netns.path)) is None
    assert not lo_is_up(container_netns)
    # and a pod restart: ADD again brings it back
    ok(loopback("ADD", container_netns.path))
    assert lo_is_up(container_netns) and lo_addresses(container_netns) == ["127.0.0.1/8", "::1/128"]


def test_del_with_the_netns_gone(loopback, make_netns):
    ns = make_netns("gone")
    ok(loopback("ADD", ns.path))
    path = ns.path
    subprocess.run(["ip", "netns", "del", ns.name], check=True)
    assert not os.path.exists(path)
    assert ok(loopback("DEL", path)) is None
    assert ok(loopback("DEL", path)) is None


def test_del_with_cni_netns_empty(loopback):
    assert ok(loopback("DEL", "")) is None


def test_del_with_a_file_that_is_no_netns(loopback, tmp_path):
    """What a runtime's late DEL sees after docker unmounted the namespace and left the file."""
    plain = tmp_path / "netns"
    plain.write_bytes(b"")
    assert ok(loopback("DEL", str(plain))) is None


@pytest.mark.parametrize("what", ["missing", "plain file", "another namespace type"])
def test_add_with_a_bad_netns_fails_and_changes_nothing(loopback, node, tmp_path, what):
    path = {
        "missing": "/run/netns/lbk-never-made",
        "plain file": str(tmp_path / "plain"),
        "another namespace type": "/proc/self/ns/mnt",
    }[what]
    if what == "plain file":
        (tmp_path / "plain").write_bytes(b"")
    out = failed(loopback("ADD", path), errors.INVALID_ENVIRONMENT)
    assert path in out["msg"]
    assert not lo_is_up(node)


def test_add_without_cni_netns(loopback):
    out = failed(loopback("ADD", None), errors.INVALID_ENVIRONMENT)
    assert "CNI_NETNS" in out["msg"]


@pytest.mark.parametrize("cni_version", ["1.0.0", "0.4.0"])
def test_a_prev_result_is_passed_through(loopback, container_netns, cni_version):
    prev = {
        "cniVersion": cni_version,
        "interfaces": [{"name": "eth0", "mac": "02:42:0a:b5:00:05", "sandbox": container_netns.path}],
        "ips": [{"interface": 0, "address": "10.181.0.5/24", "gateway": "10.181.0.1"}],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dns": {"nameservers": ["10.181.0.53"]},
    }
    if cni_version == "0.4.0":
        prev["ips"][0]["version"] = "4"
    out = ok(loopback("ADD", container_netns.path, {**CONF, "cniVersion": cni_version, "prevResult": prev}))
    assert out == prev
    assert lo_is_up(container_netns)


def test_a_prev_result_is_converted_to_the_requested_version(loopback, container_netns):
    prev = {"cniVersion": "0.2.0", "ip4": {"ip": "10.181.0.5/24", "gateway": "10.181.0.1"}}
    out = ok(loopback("ADD", container_netns.path, {**CONF, "cniVersion": "1.0.0", "prevResult": prev}))
    assert out == {"cniVersion": "1.0.0", "ips": [{"address": "10.181.0.5/24", "gateway": "10.181.0.1"}]}

"""Failed ADDs of the bridge plugin: each returns the spec's error JSON and leaves no veth,
no lease, no masquerade element, and no container interface behind.
"""

import json

import pytest

from bridge_rig import NETWORK, run

pytestmark = pytest.mark.privileged


def test_ipam_exhausted(rig):
    # A /30 holds one usable address once the gateway has the first.
    conf = rig.conf(ranges=[["10.99.0.0/30"]], isGateway=True, ipMasq=True)
    a, b = rig.container("a"), rig.container("b")
    rig.add(conf, a, container_id="ctr-a")
    error = rig.fails("ADD", conf, b, container_id="ctr-b")
    assert error["msg"] == "no IP addresses available in range set: 10.99.0.1-10.99.0.2", error

    rig.assert_no_attachment(b, container_id="ctr-b", others=1)
    assert rig.leases() == {"10.99.0.2": "ctr-a\r\neth0"}
    assert rig.nft_elements() == {("pods4", "10.99.0.2", f"{NETWORK}/ctr-a/eth0")}
    # The runtime's DEL after the failed ADD is harmless.
    rig.ok("DEL", conf, b, container_id="ctr-b")
    assert rig.leases() == {"10.99.0.2": "ctr-a\r\neth0"}


def test_missing_netns(rig):
    conf = rig.conf(isGateway=True, ipMasq=True)
    path = f"/var/run/netns/{rig.host.name}-missing"
    error = rig.fails("ADD", conf, netns_path=path)
    assert path in error["msg"] + error.get("details", "")
    assert rig.host_veths() == [] and rig.leases() == {} and rig.nft_elements() == set()
    # DEL for it succeeds (the netns is "already gone").
    rig.ok("DEL", conf, netns_path=path)


def test_netns_path_that_is_not_a_netns(rig, tmp_path):
    conf = rig.conf(ipMasq=True)
    not_netns = tmp_path / "plain-file"
    not_netns.write_text("")
    error = rig.fails("ADD", conf, netns_path=str(not_netns))
    assert str(not_netns) in error["msg"] + error.get("details", "")
    assert rig.host_veths() == [] and rig.leases() == {}


def test_existing_interface_in_the_container(rig):
    conf = rig.conf(isGateway=True, ipMasq=True)
    c = rig.container()
    run("ip", "-n", c.name, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p")
    before = c.link("eth0")
    error = rig.fails("ADD", conf, c)
    assert "eth0" in error["msg"]
    # The container's own eth0 is untouched, and nothing of ours is left.
    after = c.link("eth0")
    assert after is not None and after["ifindex"] == before["ifindex"] and after["address"] == before["address"]
    assert c.link("eth0p") is not None
    assert rig.host_veths() == [] and rig.leases() == {} and rig.nft_elements() == set()


def _fake_ipam(directory, name: str, stdout: str, code: int = 1):
    directory.mkdir(exist_ok=True)
    script = directory / name
    log = directory / f"{name}.log"
    script.write_text(f"#!/bin/sh\necho \"$CNI_COMMAND\" >> '{log}'\ncat > /dev/null\ncat <<'EOF'\n{stdout}\nEOF\nexit {code}\n")
    script.chmod(0o755)
    return log


def test_ipam_executable_fails(rig, tmp_path):
    cni_dir = tmp_path / "cni"
    error_json = {"cniVersion": "1.1.0", "code": 11, "msg": "pool busy", "details": "try again"}
    log = _fake_ipam(cni_dir, "failipam", json.dumps(error_json))
    conf = rig.conf(ranges=None, ipMasq=True, isGateway=True)
    conf["ipam"] = {"type": "failipam"}
    c = rig.container()
    error = rig.fails("ADD", conf, c, path=[cni_dir, rig.bin_dir])
    assert (error["code"], error["msg"], error["details"]) == (11, "pool busy", "try again")
    assert log.read_text().split() == ["ADD"]
    assert rig.host_veths() == [] and c.link("eth0") is None and rig.nft_elements() == set()


def test_ipam_executable_prints_garbage(rig, tmp_path):
    cni_dir = tmp_path / "cni"
    _fake_ipam(cni_dir, "badipam", "segfault or so")
    conf = rig.conf(ranges=None)
    conf["ipam"] = {"type": "badipam"}
    c = rig.container()
    error = rig.fails("ADD", conf, c, path=[cni_dir])
    assert "segfault or so" in error.get("details", "")
    assert rig.host_veths() == [] and c.link("eth0") is None


def test_ipam_executable_missing(rig, tmp_path):
    conf = rig.conf(ranges=None)
    conf["ipam"] = {"type": "noipam"}
    c = rig.container()
    error = rig.fails("ADD", conf, c, path=[tmp_path])
    assert "noipam" in error["msg"]
    assert rig.host_veths() == [] and c.link("eth0") is None


def test_foreign_ipam_is_released_when_a_later_step_fails(rig, tmp_path):
    """IPAM succeeded (a foreign executable), the route step fails: IPAM gets its DEL."""
    cni_dir = tmp_path / "cni"
    result = {"cniVersion": "1.1.0", "ips": [{"address": "10.99.0.7/24", "gateway": "10.99.0.1"}],
              "routes": [{"dst": "192.168.77.0/24", "gw": "10.55.0.1"}]}
    log = _fake_ipam(cni_dir, "okipam", json.dumps(result), code=0)
    conf = rig.conf(ranges=None, ipMasq=True)
    conf["ipam"] = {"type": "okipam"}
    c = rig.container()
    rig.fails("ADD", conf, c, path=[cni_dir])
    assert log.read_text().split() == ["ADD", "DEL"]
    assert rig.host_veths() == [] and c.link("eth0") is None and rig.nft_elements() == set()


def test_failure_after_ipam_releases_everything(rig):
    """A route whose gateway is not on any link: the kernel refuses it after IPAM, the
    masquerade element and the veth exist; ADD undoes them all."""
    conf = rig.conf(isGateway=True, ipMasq=True,
                    ipam={"routes": [{"dst": "192.168.77.0/24", "gw": "10.55.0.1"}]})
    c = rig.container()
    error = rig.fails("ADD", conf, c)
    assert "192.168.77.0/24" in error["msg"] + error.get("details", "")
    rig.assert_no_attachment(c)
    assert rig.host_veths() == [] and rig.leases() == {} and rig.nft_elements() == set()
    # The next ADD works (host-local moves on round robin, so to the next address).
    conf["ipam"].pop("routes")
    assert rig.add(conf, c)["ips"][0]["address"] == "10.99.0.3/24"
    assert rig.leases() == {"10.99.0.3": "ctr1\r\neth0"}


def test_bridge_name_taken_by_another_kind_of_link(rig):
    run("ip", "-n", rig.host.name, "link", "add", rig.bridge, "type", "ifb")  # this kernel has no dummy
    conf = rig.conf(isGateway=True, ipMasq=True)
    c = rig.container()
    error = rig.fails("ADD", conf, c)
    assert rig.bridge in error["msg"]
    assert rig.host_veths() == [] and rig.leases() == {} and c.link("eth0") is None
    assert rig.bridge_link()["linkinfo"]["info_kind"] == "ifb"


def test_invalid_config_is_error_7_and_touches_nothing(rig):
    conf = rig.conf(mtu=10)
    c = rig.container()
    error = rig.fails("ADD", conf, c)
    assert error["code"] == 7 and "mtu" in error["details"]
    assert rig.bridge_link() is None and rig.host_veths() == [] and not rig.data_dir.exists()

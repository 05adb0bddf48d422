"""CHECK and GC of the bridge plugin against the real kernel: CHECK passes on what ADD made
and names what a tampering broke; GC keeps the listed attachments and releases the rest.
"""

import json

import pytest

from bridge_rig import NETWORK, SUBNET4, SUBNET6, delete_netns, run, wait_until

pytestmark = pytest.mark.privileged


@pytest.fixture
def added(rig):
    """One container attached with masquerade; (conf with the ADD result as prevResult, container, result)."""
    conf = rig.conf(ranges=[[SUBNET4], [SUBNET6]], isDefaultGateway=True, ipMasq=True)
    c = rig.container()
    result = rig.add(conf, c)
    return {**conf, "prevResult": result}, c, result


def test_check_passes_right_after_add(rig, added):
    conf, c, _ = added
    rig.ok("CHECK", conf, c)


def _remove_container_address(rig, c, result):
    run("ip", "-n", c.name, "addr", "del", "10.99.0.2/24", "dev", "eth0")
    return "10.99.0.2/24"


def _unplug_host_veth(rig, c, result):
    veth = result["interfaces"][1]["name"]
    run("ip", "-n", rig.host.name, "link", "set", veth, "nomaster")
    return veth


def _delete_masquerade_element(rig, c, result):
    run("ip", "netns", "exec", rig.host.name, "nft", "delete", "element", "inet", "cni_bridge", "pods4", "{ 10.99.0.2 }")
    return "masquerade"


def _delete_lease_files(rig, c, result):
    # Both: host-local's CHECK, like the reference's, wants one lease of the attachment.
    for address in ("10.99.0.2", "fd99::2"):
        (rig.data_dir / NETWORK / address).unlink()
    return "ctr1"


def _remove_default_route(rig, c, result):
    run("ip", "-n", c.name, "route", "del", "default")
    return "0.0.0.0/0"


def _delete_container_interface(rig, c, result):
    run("ip", "-n", c.name, "link", "del", "eth0")
    return "eth0"


@pytest.mark.parametrize("tamper", [
    _remove_container_address, _unplug_host_veth, _delete_masquerade_element, _delete_lease_files,
    _remove_default_route, _delete_container_interface,
], ids=lambda f: f.__name__.lstrip("_"))
def test_check_names_what_is_wrong(rig, added, tamper):
    conf, c, result = added
    named = tamper(rig, c, result)
    error = rig.fails("CHECK", conf, c)
    assert named in f"{error['msg']} {error.get('details', '')}", error


def test_check_without_prev_result_fails(rig, added):
    conf, c, _ = added
    conf = {k: v for k, v in conf.items() if k != "prevResult"}
    error = rig.fails("CHECK", conf, c)
    assert "prevResult" in error["msg"]


# ---- GC ---------------------------------------------------------------------------------


def _spoof_comments(rig) -> set[str]:
    """Comments of the elements in the MAC spoof check's sets (table bridge cni_bridge)."""
    res = run("ip", "netns", "exec", rig.host.name, "nft", "-j", "list", "table", "bridge", "cni_bridge", check=False)
    if res.returncode != 0:
        return set()
    comments = set()
    for item in json.loads(res.stdout)["nftables"]:
        for elem in (item.get("set") or {}).get("elem", []):
            if isinstance(elem, dict) and "elem" in elem:
                comments.add(elem["elem"].get("comment", ""))
    return comments


@pytest.mark.parametrize("key", ["cni.dev/valid-attachments", "cni.dev/attachments"])
def test_gc_keeps_the_valid_attachment_and_releases_the_others(rig, key):
    conf = rig.conf(ranges=[[SUBNET4], [SUBNET6]], isGateway=True, ipMasq=True, macspoofchk=True)
    containers = {cid: rig.container(cid) for cid in ("keep", "gone1", "gone2")}
    results = {cid: rig.add(conf, ns, container_id=cid) for cid, ns in containers.items()}
    assert len(rig.leases()) == 6 and len(rig.nft_elements()) == 6
    assert _spoof_comments(rig) == {f"{NETWORK}/{cid}/eth0" for cid in containers}

    # The runtime deletes the dead containers' namespaces (their veths go with them),
    # then collects what no DEL cleaned up.
    for cid in ("gone1", "gone2"):
        delete_netns(containers[cid])
    rig.ok("GC", {**conf, key: [{"containerID": "keep", "ifname": "eth0"}]})

    keep_ips = {ip["address"].split("/")[0] for ip in results["keep"]["ips"]}
    assert set(rig.leases()) == keep_ips
    assert set(rig.leases().values()) == {"keep\r\neth0"}
    assert {e[1] for e in rig.nft_elements()} == keep_ips
    assert {e[2] for e in rig.nft_elements()} == {f"{NETWORK}/keep/eth0"}
    spoof = _spoof_comments(rig)
    assert spoof == {f"{NETWORK}/keep/eth0"}, spoof
    keep_veth = results["keep"]["interfaces"][1]["name"]
    wait_until(lambda: [v["ifname"] for v in rig.host_veths()] == [keep_veth], "the dead containers' veths to go")
    # The kept container still works.
    assert rig.ping(containers["keep"], "10.99.0.1")
    rig.ok("CHECK", {**conf, "prevResult": results["keep"]}, containers["keep"], container_id="keep")


def test_gc_with_nothing_valid_and_nothing_added(rig):
    conf = rig.conf(ipMasq=True, isGateway=True)
    rig.ok("GC", {**conf, "cni.dev/valid-attachments": []})
    assert rig.nft_elements() == set()


def test_gc_leaves_other_networks_alone(rig):
    """Two networks share the host's table and the data dir: GC of one keeps the other's."""
    conf_a = rig.conf(ipMasq=True)
    conf_b = rig.conf(ranges=[["10.98.0.0/24"]], name="brtother", bridge=rig.bridge + "b", ipMasq=True)
    a, b = rig.container("a"), rig.container("b")
    rig.add(conf_a, a, container_id="ctr-a")
    rig.add(conf_b, b, container_id="ctr-b")
    rig.ok("GC", {**conf_a, "cni.dev/valid-attachments": []})
    assert rig.leases() == {}
    assert rig.leases("brtother") == {"10.98.0.2": "ctr-b\r\neth0"}
    assert rig.nft_elements() == {("pods4", "10.98.0.2", "brtother/ctr-b/eth0")}


# ---- STATUS -----------------------------------------------------------------------------


def test_status_reports_an_exhausted_range_as_not_available(rig):
    conf = rig.conf(ranges=[["10.99.0.0/30"]], ipMasq=True)
    rig.ok("STATUS", conf)
    rig.add(conf, rig.container())
    error = rig.fails("STATUS", conf)
    assert error["code"] == 50, error

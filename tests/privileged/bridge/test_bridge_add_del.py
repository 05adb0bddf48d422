"""The bridge plugin end to end: ADD and DEL as a runtime runs them, traffic between the
containers and the host, masquerade elements, dual stack, the result per spec version,
and the DEL variants a runtime produces (netns gone, twice, no netns, no prevResult).

See bridge_rig.py for how the plugin is run and observed.
"""

import pytest

from bridge_rig import NETWORK, SUBNET4, SUBNET6, delete_netns, wait_until

pytestmark = pytest.mark.privileged


def _ip(result: dict, family: int = 4) -> str:
    """The result's address of one family, without the prefix."""
    return next(ip["address"].split("/")[0] for ip in result["ips"] if (":" in ip["address"]) == (family == 6))


def test_two_containers_talk_to_each_other_and_the_host_and_are_masqueraded(rig):
    conf = rig.conf(isGateway=True, ipMasq=True)
    a, b = rig.container("a"), rig.container("b")
    res_a = rig.add(conf, a, container_id="ctr-a")
    res_b = rig.add(conf, b, container_id="ctr-b")
    ip_a, ip_b = _ip(res_a), _ip(res_b)

    # Kernel state: addresses in the containers, both veths ports of the bridge, gateway on it.
    assert rig.cidrs(a, "eth0") == {f"{ip_a}/24"}
    assert rig.cidrs(b, "eth0") == {f"{ip_b}/24"}
    assert {p["ifname"] for p in rig.ports()} == {res_a["interfaces"][1]["name"], res_b["interfaces"][1]["name"]}
    assert rig.cidrs(rig.host, rig.bridge) == {"10.99.0.1/24"}

    # Traffic: container to container, container to host and back, ICMP and TCP.
    assert rig.ping(a, ip_b) and rig.ping(b, ip_a)
    assert rig.ping(a, "10.99.0.1") and rig.ping(rig.host, ip_b)
    assert rig.tcp(a, b, ip_b) == f"echo:hello from:{ip_a}"
    assert rig.tcp(b, rig.host, "10.99.0.1") == f"echo:hello from:{ip_b}"
    assert rig.tcp(rig.host, a, ip_a, bind="0.0.0.0") == "echo:hello from:10.99.0.1"

    # Masquerade: the pod's address in our sets, commented with its attachment, and the
    # static rules that masquerade what leaves its subnet.
    assert rig.nft_elements() == {("pods4", ip_a, f"{NETWORK}/ctr-a/eth0"), ("pods4", ip_b, f"{NETWORK}/ctr-b/eth0")}
    rules = [item["rule"] for item in rig.nft_table() if "rule" in item]
    assert [r["chain"] for r in rules] == ["pod-masq"] * 6 and any("masquerade" in e for e in rules[2]["expr"])
    assert rig.leases() == {ip_a: "ctr-a\r\neth0", ip_b: "ctr-b\r\neth0"}

    rig.ok("DEL", conf, a, container_id="ctr-a")
    assert rig.nft_elements() == {("pods4", ip_b, f"{NETWORK}/ctr-b/eth0")}
    assert rig.leases() == {ip_b: "ctr-b\r\neth0"}
    assert a.link("eth0") is None
    assert {p["ifname"] for p in rig.ports()} == {res_b["interfaces"][1]["name"]}
    assert rig.ping(b, "10.99.0.1")

    rig.ok("DEL", conf, b, container_id="ctr-b")
    assert rig.nft_elements() == set()
    assert rig.leases() == {}
    assert rig.host_veths() == []
    assert b.link("eth0") is None
    # The bridge stays, as in the reference (other containers may join it later).
    assert rig.bridge_link() is not None


def test_dual_stack(rig):
    conf = rig.conf(ranges=[[SUBNET4], [SUBNET6]], isGateway=True, ipMasq=True)
    a, b = rig.container("a"), rig.container("b")
    res_a = rig.add(conf, a, container_id="ctr-a")
    res_b = rig.add(conf, b, container_id="ctr-b")
    a4, a6, b4, b6 = _ip(res_a, 4), _ip(res_a, 6), _ip(res_b, 4), _ip(res_b, 6)
    assert [ip["address"] for ip in res_a["ips"]] == [f"{a4}/24", f"{a6}/64"]
    assert [ip["gateway"] for ip in res_a["ips"]] == ["10.99.0.1", "fd99::1"]

    assert rig.cidrs(a, "eth0") == {f"{a4}/24", f"{a6}/64"}
    assert rig.cidrs(b, "eth0") == {f"{b4}/24", f"{b6}/64"}
    assert rig.cidrs(rig.host, rig.bridge) == {"10.99.0.1/24", "fd99::1/64"}
    assert rig.host.sysctl("net.ipv6.conf.all.forwarding") == "1"

    assert rig.ping(a, b6) and rig.ping(b, a6) and rig.ping(a, "fd99::1")
    assert rig.ping(a, b4)
    assert rig.tcp(a, b, b6) == f"echo:hello from:{a6}"

    key_a, key_b = f"{NETWORK}/ctr-a/eth0", f"{NETWORK}/ctr-b/eth0"
    assert rig.nft_elements() == {("pods4", a4, key_a), ("pods6", a6, key_a),
                                  ("pods4", b4, key_b), ("pods6", b6, key_b)}
    assert rig.leases() == {a4: "ctr-a\r\neth0", a6: "ctr-a\r\neth0", b4: "ctr-b\r\neth0", b6: "ctr-b\r\neth0"}

    rig.ok("DEL", conf, a, container_id="ctr-a")
    rig.ok("DEL", conf, b, container_id="ctr-b")
    assert rig.nft_elements() == set() and rig.leases() == {} and rig.host_veths() == []


# ---- result shape per spec version ------------------------------------------------------


@pytest.mark.parametrize("cni_version", ["0.3.1", "0.4.0", "1.0.0", "1.1.0"])
def test_result_shape_per_version(rig, cni_version):
    conf = rig.conf(ranges=[[SUBNET4], [SUBNET6]], cni_version=cni_version, isDefaultGateway=True)
    c = rig.container()
    result = rig.add(conf, c)

    assert result["cniVersion"] == cni_version
    assert set(result) == {"cniVersion", "interfaces", "ips", "routes"}
    bridge, veth, eth0 = result["interfaces"]
    # Each interface entry matches the kernel.
    assert bridge == {"name": rig.bridge, "mac": rig.bridge_link()["address"]}
    host_veth = rig.host.link(veth["name"])
    assert veth["name"].startswith("veth") and host_veth["linkinfo"]["info_kind"] == "veth"
    assert veth == {"name": veth["name"], "mac": host_veth["address"]}
    assert host_veth["master"] == rig.bridge
    assert eth0 == {"name": "eth0", "mac": c.link("eth0")["address"], "sandbox": c.path}

    legacy = cni_version in ("0.3.1", "0.4.0")
    expected_ips = [
        {"address": "10.99.0.2/24", "gateway": "10.99.0.1", "interface": 2},
        {"address": "fd99::2/64", "gateway": "fd99::1", "interface": 2},
    ]
    if legacy:
        expected_ips = [{"version": "4", **expected_ips[0]}, {"version": "6", **expected_ips[1]}]
    assert result["ips"] == expected_ips
    assert result["routes"] == [{"dst": "0.0.0.0/0", "gw": "10.99.0.1"}, {"dst": "::/0", "gw": "fd99::1"}]

    # The same version's prevResult is what DEL and CHECK get back.
    if cni_version != "0.3.1":  # CHECK exists from 0.4.0 on
        rig.ok("CHECK", {**conf, "prevResult": result}, c)
    rig.ok("DEL", {**conf, "prevResult": result}, c)
    rig.assert_no_attachment(c)


# ---- DEL variants ---------------------------------------------------------------------


@pytest.mark.parametrize("with_prev_result", [True, False], ids=["prevResult", "no-prevResult"])
def test_del_after_the_netns_was_deleted(rig, with_prev_result):
    conf = rig.conf(isGateway=True, ipMasq=True)
    c = rig.container()
    result = rig.add(conf, c)
    veth = result["interfaces"][1]["name"]
    delete_netns(c)

    del_conf = {**conf, "prevResult": result} if with_prev_result else conf
    rig.ok("DEL", del_conf, c)
    assert rig.leases() == {} and rig.nft_elements() == set()
    if with_prev_result:
        # Gone now: the kernel's netns teardown took it, or the plugin did by prevResult.
        assert rig.host.link(veth) is None
    else:
        # Nothing names it: the kernel removes it with the namespace, asynchronously.
        wait_until(lambda: rig.host.link(veth) is None, f"{veth} to go with its netns")


def test_del_twice(rig):
    conf = rig.conf(isGateway=True, ipMasq=True)
    c = rig.container()
    result = rig.add(conf, c)
    conf = {**conf, "prevResult": result}
    rig.ok("DEL", conf, c)
    rig.ok("DEL", conf, c)
    rig.assert_no_attachment(c)
    assert rig.nft_elements() == set() and rig.host_veths() == []


def test_del_before_any_add(rig):
    """A runtime retries DEL for an ADD that never happened: success, nothing to do."""
    rig.ok("DEL", rig.conf(isGateway=True, ipMasq=True), rig.container())
    assert not rig.data_dir.exists() or rig.leases() == {}


@pytest.mark.parametrize("with_prev_result", [True, False], ids=["prevResult", "no-prevResult"])
def test_del_with_empty_netns(rig, with_prev_result):
    conf = rig.conf(isGateway=True, ipMasq=True)
    c = rig.container()
    result = rig.add(conf, c)
    veth = result["interfaces"][1]["name"]

    rig.ok("DEL", {**conf, "prevResult": result} if with_prev_result else conf, c, netns_path="")
    assert rig.leases() == {} and rig.nft_elements() == set()
    if with_prev_result:
        # prevResult names the host veth; deleting it takes the container end too.
        assert rig.host.link(veth) is None
        assert c.link("eth0") is None
    # Without prevResult and netns nothing names the veth; it stays until the netns goes.


def test_del_without_prev_result(rig):
    conf = rig.conf(ranges=[[SUBNET4], [SUBNET6]], isGateway=True, ipMasq=True)
    c = rig.container()
    rig.add(conf, c)
    assert "prevResult" not in conf
    rig.ok("DEL", conf, c)
    rig.assert_no_attachment(c)
    assert rig.host_veths() == [] and rig.nft_elements() == set()


@pytest.mark.parametrize("prev", [{"cniVersion": "1.1.0", "ips": 18446744073709551616}, {"interfaces": [None]},
                                  {"cniVersion": "0.2.0", "ip4": {"ip": 7}},
                                  {"cniVersion": "1.1.0", "ips": [{"address": ""}]}])
def test_del_with_a_malformed_prev_result_still_removes_everything(rig, prev):
    """ADD never reads prevResult, so one it took must not keep DEL from cleaning up."""
    conf = rig.conf(ranges=[[SUBNET4], [SUBNET6]], isGateway=True, ipMasq=True, prevResult=prev)
    c = rig.container()
    rig.add(conf, c)
    res = rig.exec("DEL", conf, c)
    assert (res.code, res.out) == (0, None), res
    assert "going without prevResult" in res.err
    rig.assert_no_attachment(c)
    assert rig.host_veths() == [] and rig.nft_elements() == set()


def test_del_with_a_prev_result_that_is_not_this_attachments_still_removes_its_masquerade(rig):
    """A prevResult in the config that ADD ignored (the previous plugin's, say) names other
    addresses: DEL once removed the elements at those, and left the attachment's own."""
    conf = rig.conf(ranges=[[SUBNET4], [SUBNET6]], isGateway=True, ipMasq=True,
                    prevResult={"cniVersion": "1.1.0", "ips": [{"address": "10.99.0.200/24"}]})
    c = rig.container()
    added = rig.add(conf, c)
    assert {ip["address"] for ip in added["ips"]} == {"10.99.0.2/24", "fd99::2/64"}
    rig.ok("DEL", conf, c)
    rig.assert_no_attachment(c)
    assert rig.nft_elements() == set()


def test_del_with_a_broken_ipam_section_still_removes_the_masquerade(rig):
    """The IPAM step fails on it (error 7; the masquerade step once failed on it too, and
    the two made a 999); the masquerade and the interface go all the same, and a DEL with
    the config mended releases the lease."""
    conf = rig.conf(ranges=[[SUBNET4]], isGateway=True, ipMasq=True)
    c = rig.container()
    rig.add(conf, c)
    broken = {**conf, "ipam": {**conf["ipam"], "ranges": "10.99.0.0/24"}}
    error = rig.fails("DEL", broken, c)
    assert (error["code"], error["details"]) == (7, "ipam.ranges: Input should be a valid list"), error
    assert rig.nft_elements() == set() and rig.host_veths() == [] and c.link("eth0") is None
    assert list(rig.leases()) == ["10.99.0.2"]
    rig.ok("DEL", conf, c)
    rig.assert_no_attachment(c)


def test_del_keeps_other_interfaces_of_the_same_container(rig):
    conf = rig.conf(ipMasq=True)
    c = rig.container()
    rig.add(conf, c, ifname="eth0")
    res1 = rig.add(conf, c, ifname="net1")
    rig.ok("DEL", conf, c, ifname="eth0")
    assert c.link("eth0") is None and c.link("net1") is not None
    ip1 = _ip(res1)
    assert rig.leases() == {ip1: "ctr1\r\nnet1"}
    assert rig.nft_elements() == {("pods4", ip1, f"{NETWORK}/ctr1/net1")}


def test_concurrent_adds_on_a_new_bridge(rig):
    """Runtimes start pods in parallel: the first ADDs race to create the bridge and the
    nftables table; every one must succeed with its own address and element."""
    from concurrent.futures import ThreadPoolExecutor

    conf = rig.conf(ranges=[[SUBNET4], [SUBNET6]], isGateway=True, ipMasq=True)
    containers = [rig.container(f"p{i}") for i in range(6)]
    with ThreadPoolExecutor(len(containers)) as pool:
        runs = list(pool.map(lambda i: rig.exec("ADD", conf, containers[i], container_id=f"ctr-{i}"),
                             range(len(containers))))
    assert all(r.code == 0 for r in runs), runs
    v4 = {_ip(r.out, 4) for r in runs}
    assert len(v4) == len(containers) and len({_ip(r.out, 6) for r in runs}) == len(containers)
    assert len(rig.nft_elements()) == 2 * len(containers)
    assert len(rig.leases()) == 2 * len(containers)
    assert len(rig.ports()) == len(containers)
    assert rig.cidrs(rig.host, rig.bridge) == {"10.99.0.1/24", "fd99::1/64"}
    # One set of rules however many ADDs raced to create them.
    rules = [item["rule"] for item in rig.nft_table() if "rule" in item]
    assert [r["chain"] for r in rules] == ["pod-masq"] * 6
    assert rig.ping(containers[0], _ip(runs[-1].out, 6))

    with ThreadPoolExecutor(len(containers)) as pool:
        runs = list(pool.map(lambda i: rig.exec("DEL", conf, containers[i], container_id=f"ctr-{i}"),
                             range(len(containers))))
    assert all(r.code == 0 for r in runs), runs
    assert rig.nft_elements() == set() and rig.leases() == {} and rig.host_veths() == []


def test_repeated_add_of_the_same_attachment_fails_and_keeps_the_first(rig):
    conf = rig.conf(isGateway=True, ipMasq=True)
    c = rig.container()
    first = rig.add(conf, c)
    error = rig.fails("ADD", conf, c)
    assert "eth0" in error["msg"]
    assert rig.leases() == {"10.99.0.2": "ctr1\r\neth0"}
    assert rig.nft_elements() == {("pods4", "10.99.0.2", f"{NETWORK}/ctr1/eth0")}
    assert [v["ifname"] for v in rig.host_veths()] == [first["interfaces"][1]["name"]]
    rig.ok("CHECK", {**conf, "prevResult": first}, c)


def test_bridge_mac_stays_put_as_ports_come_and_go(rig):
    """The bridge's MAC is pinned when it is created; left alone, the kernel would make it
    follow the lowest port MAC, and the neighbours' caches would go stale."""
    conf = rig.conf(isGateway=True)
    containers = [rig.container(f"m{i}") for i in range(4)]
    results = [rig.add(conf, c, container_id=f"ctr-{i}") for i, c in enumerate(containers)]
    mac = results[0]["interfaces"][0]["mac"]
    assert {r["interfaces"][0]["mac"] for r in results} == {mac}
    assert rig.bridge_link()["address"] == mac
    for i, c in enumerate(containers[:3]):
        rig.ok("DEL", conf, c, container_id=f"ctr-{i}")
        assert rig.bridge_link()["address"] == mac


def test_del_with_a_netns_path_that_is_no_longer_a_netns(rig, tmp_path):
    """docker unmounts a container's netns on `rm -f` and leaves the file: DEL treats the
    namespace as gone and still releases the lease and the masquerade element."""
    conf = rig.conf(isGateway=True, ipMasq=True)
    c = rig.container()
    result = rig.add(conf, c)
    stale = tmp_path / "stale-netns"
    stale.write_text("")
    rig.ok("DEL", {**conf, "prevResult": result}, netns_path=str(stale))
    assert rig.leases() == {} and rig.nft_elements() == set()
    # prevResult names the host veth: deleting it took the container end too.
    assert rig.host_veths() == [] and c.link("eth0") is None

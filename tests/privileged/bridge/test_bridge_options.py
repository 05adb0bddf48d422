"""One test (or a parametrized few) per bridge config option, each checking the kernel
state the option produces with iproute2, nft, iptables-save and traffic.
"""

import pytest

from bridge_rig import NETWORK, outside_namespace, SUBNET4, SUBNET6, run

pytestmark = pytest.mark.privileged


def _flags(link: dict) -> list[str]:
    return link["flags"]


def _port(rig, result: dict) -> dict:
    veth = result["interfaces"][1]["name"]
    (port,) = rig.host.bridge_json("-d", "link", "show", "dev", veth)
    return port


# ---- bridge -----------------------------------------------------------------------------


def test_bridge_name(rig):
    c = rig.container()
    result = rig.add(rig.conf(), c)
    link = rig.bridge_link()
    assert link["linkinfo"]["info_kind"] == "bridge" and "UP" in _flags(link)
    assert result["interfaces"][0]["name"] == rig.bridge
    assert rig.host.link(result["interfaces"][1]["name"])["master"] == rig.bridge


def test_bridge_defaults_to_cni0(rig):
    """In the rig's own host namespace, the default name cannot collide with anything."""
    conf = rig.conf()
    del conf["bridge"]
    c = rig.container()
    result = rig.add(conf, c)
    assert result["interfaces"][0]["name"] == "cni0"
    assert rig.host.link("cni0")["linkinfo"]["info_kind"] == "bridge"
    assert rig.host.link(result["interfaces"][1]["name"])["master"] == "cni0"


def test_existing_bridge_is_reused(rig):
    run("ip", "-n", rig.host.name, "link", "add", rig.bridge, "type", "bridge")
    index = rig.bridge_link()["ifindex"]
    rig.add(rig.conf(), rig.container())
    link = rig.bridge_link()
    assert link["ifindex"] == index and "UP" in _flags(link)


# ---- isGateway, isDefaultGateway, forceAddress -------------------------------------------


@pytest.mark.parametrize("is_gateway", [True, False])
def test_is_gateway(rig, is_gateway):
    rig.host.ip("link", "set", "lo", "up")
    run("ip", "netns", "exec", rig.host.name, "sysctl", "-qw", "net.ipv4.ip_forward=0")
    c = rig.container()
    result = rig.add(rig.conf(isGateway=is_gateway), c)
    if is_gateway:
        assert rig.cidrs(rig.host, rig.bridge) == {"10.99.0.1/24"}
        assert rig.host.sysctl("net.ipv4.ip_forward") == "1"
        assert rig.ping(c, "10.99.0.1")
    else:
        assert rig.cidrs(rig.host, rig.bridge) == set()
        assert rig.host.sysctl("net.ipv4.ip_forward") == "0"
    # Only isDefaultGateway routes the container's default through the bridge.
    assert "routes" not in result
    assert not [r for r in rig.routes(c) if r["dst"] == "default"]


def test_is_default_gateway(rig):
    conf = rig.conf(ranges=[[SUBNET4], [SUBNET6]], isDefaultGateway=True)
    c = rig.container()
    result = rig.add(conf, c)
    assert result["routes"] == [{"dst": "0.0.0.0/0", "gw": "10.99.0.1"}, {"dst": "::/0", "gw": "fd99::1"}]
    (v4,) = [r for r in rig.routes(c, "-4") if r["dst"] == "default"]
    assert (v4["gateway"], v4["dev"]) == ("10.99.0.1", "eth0")
    (v6,) = [r for r in rig.routes(c, "-6") if r["dst"] == "default"]
    assert (v6["gateway"], v6["dev"]) == ("fd99::1", "eth0")
    # isDefaultGateway implies isGateway: the gateway addresses are on the bridge.
    assert rig.cidrs(rig.host, rig.bridge) == {"10.99.0.1/24", "fd99::1/64"}
    assert rig.host.sysctl("net.ipv4.ip_forward") == "1"
    assert rig.host.sysctl("net.ipv6.conf.all.forwarding") == "1"


def test_ipam_routes_are_installed(rig):
    conf = rig.conf(ipam={"routes": [{"dst": "192.168.60.0/24"}, {"dst": "192.168.61.0/24", "gw": "10.99.0.9"}]})
    c = rig.container()
    result = rig.add(conf, c)
    assert result["routes"] == [{"dst": "192.168.60.0/24"}, {"dst": "192.168.61.0/24", "gw": "10.99.0.9"}]
    routes = {r["dst"]: r.get("gateway") for r in rig.routes(c)}
    # A route without gw goes through the range's gateway, as in the reference.
    assert routes["192.168.60.0/24"] == "10.99.0.1"
    assert routes["192.168.61.0/24"] == "10.99.0.9"


@pytest.mark.parametrize("force", [False, True])
def test_force_address(rig, force):
    host = rig.host
    host.ip("link", "add", rig.bridge, "type", "bridge")
    host.ip("addr", "add", "10.99.0.254/24", "dev", rig.bridge)
    host.ip("addr", "add", "192.168.5.1/24", "dev", rig.bridge)  # another subnet: always kept
    conf = rig.conf(isGateway=True, forceAddress=force, ipMasq=True)
    c = rig.container()
    if force:
        rig.add(conf, c)
        assert rig.cidrs(host, rig.bridge) == {"10.99.0.1/24", "192.168.5.1/24"}
        assert rig.ping(c, "10.99.0.1")
    else:
        error = rig.fails("ADD", conf, c)
        assert rig.bridge in error["msg"]
        assert rig.cidrs(host, rig.bridge) == {"10.99.0.254/24", "192.168.5.1/24"}
        rig.assert_no_attachment(c)


# ---- ipMasq -------------------------------------------------------------------------------



@pytest.mark.parametrize("masq", ["nftables", "iptables", None], ids=["ipMasq", "ipMasqBackend-iptables", "no-ipMasq"])
def test_ip_masq(rig, masq):
    options = {"ipMasq": True} if masq else {}
    if masq == "iptables":
        options["ipMasqBackend"] = "iptables"  # accepted; we masquerade in nftables anyway
    conf = rig.conf(isDefaultGateway=True, **options)
    c = rig.container()
    result = rig.add(conf, c)
    o = outside_namespace(rig)
    if masq:
        assert rig.nft_elements() == {("pods4", "10.99.0.2", f"{NETWORK}/ctr1/eth0")}
        # Traffic leaving the subnet arrives from the host's address...
        assert rig.tcp(c, o, "192.168.250.2") == "echo:hello from:192.168.250.1"
        # ...traffic inside it keeps the container's.
        assert rig.tcp(c, rig.host, "10.99.0.1") == "echo:hello from:10.99.0.2"
    else:
        assert rig.nft_table() == []
        o.ip("route", "add", "10.99.0.0/24", "via", "192.168.250.1")
        assert rig.tcp(c, o, "192.168.250.2") == "echo:hello from:10.99.0.2"
    # Never iptables: no rules there whatever the backend asked for.
    assert "CNI" not in rig.iptables_save() and "MASQUERADE" not in rig.iptables_save()

    rig.ok("DEL", {**conf, "prevResult": result}, c)
    assert rig.nft_elements() == set()


# ---- mtu, hairpinMode, promiscMode -------------------------------------------------------------


def test_mtu(rig):
    c = rig.container()
    result = rig.add(rig.conf(mtu=1400), c)
    assert rig.bridge_link()["mtu"] == 1400
    assert rig.host.link(result["interfaces"][1]["name"])["mtu"] == 1400
    assert c.link("eth0")["mtu"] == 1400


@pytest.mark.parametrize("hairpin", [True, False])
def test_hairpin_mode(rig, hairpin):
    result = rig.add(rig.conf(hairpinMode=hairpin), rig.container())
    assert _port(rig, result)["hairpin"] is hairpin


@pytest.mark.parametrize("promisc", [True, False])
def test_promisc_mode(rig, promisc):
    rig.add(rig.conf(promiscMode=promisc), rig.container())
    link = rig.bridge_link()
    assert ("PROMISC" in _flags(link)) is promisc
    assert (link["promiscuity"] > 0) is promisc


def test_hairpin_and_promisc_together_is_error_7(rig):
    c = rig.container()
    error = rig.fails("ADD", rig.conf(hairpinMode=True, promiscMode=True, ipMasq=True), c)
    assert error["code"] == 7
    assert rig.bridge_link() is None
    rig.assert_no_attachment(c)
    assert not rig.data_dir.exists()


# ---- VLANs: this suite's kernel has no bridge VLAN filtering ------------------------------


@pytest.fixture
def no_vlan_filtering(make_netns):
    probe = make_netns("probe")
    res = run("ip", "-n", probe.name, "link", "add", "brtvlan", "type", "bridge", "vlan_filtering", "1", check=False)
    if res.returncode == 0:
        pytest.skip("the kernel has bridge VLAN filtering; this test covers kernels without it")


VLAN_CONFIGS = {
    "vlan": {"vlan": 100},
    "vlanTrunk-id": {"vlanTrunk": [{"id": 101}]},
    "vlanTrunk-range": {"vlanTrunk": [{"minID": 200, "maxID": 210}]},
    "vlan-preserveDefaultVlan-false": {"vlan": 100, "preserveDefaultVlan": False},
}


@pytest.mark.parametrize("bridge_exists", [False, True], ids=["new-bridge", "existing-bridge"])
@pytest.mark.parametrize("options", VLAN_CONFIGS.values(), ids=VLAN_CONFIGS.keys())
def test_vlan_options_fail_cleanly_without_kernel_support(rig, no_vlan_filtering, options, bridge_exists):
    if bridge_exists:
        rig.host.ip("link", "add", rig.bridge, "type", "bridge")
    c = rig.container()
    error = rig.fails("ADD", rig.conf(ipMasq=True, isGateway=True, **options), c)
    assert error["cniVersion"] == "1.1.0"
    assert rig.bridge in error["msg"] and "VLAN filtering" in error["msg"] + error["details"], error
    rig.assert_no_attachment(c)
    assert rig.leases() == {} and rig.nft_elements() == set()
    assert (rig.bridge_link() is not None) is bridge_exists


def test_preserve_default_vlan_alone_needs_no_vlan_filtering(rig):
    """Without vlan or vlanTrunk there is nothing to filter: the option is moot, as in the reference."""
    c = rig.container()
    rig.add(rig.conf(preserveDefaultVlan=False), c)
    assert rig.bridge_link()["linkinfo"]["info_data"]["vlan_filtering"] == 0


# ---- enabledad ----------------------------------------------------------------------------


@pytest.mark.parametrize("enable_dad", [False, True])
def test_enabledad(rig, enable_dad):
    conf = rig.conf(ranges=[[SUBNET6]], enabledad=enable_dad)
    c = rig.container()
    rig.add(conf, c)
    (addr,) = [a for a in rig.addrs(c, "eth0") if a["local"] == "fd99::2"]
    if enable_dad:
        # The kernel runs DAD: no nodad flag (tentative until DAD is done, which the
        # test does not wait for, so either state is fine).
        assert "nodad" not in addr
    else:
        assert addr.get("nodad") is True and "tentative" not in addr


# ---- macspoofchk --------------------------------------------------------------------------


def _spoof_table(rig) -> str:
    res = run("ip", "netns", "exec", rig.host.name, "nft", "-j", "list", "table", "bridge", "cni_bridge", check=False)
    return res.stdout if res.returncode == 0 else ""


def test_macspoofchk(rig):
    from cni_bridge.nft import table as nft

    if not hasattr(nft, "add_mac_spoof_check"):
        pytest.skip("macspoofchk not implemented")
    conf = rig.conf(macspoofchk=True)
    a, b = rig.container("a"), rig.container("b")
    res_a = rig.add(conf, a, container_id="ctr-a")
    rig.add(conf, b, container_id="ctr-b")
    assert f"{NETWORK}/ctr-a/eth0" in _spoof_table(rig)
    assert rig.ping(a, "10.99.0.3")

    real_mac = res_a["interfaces"][2]["mac"]
    a.ip("link", "set", "eth0", "address", "02:00:00:00:be:ef")
    assert not rig.ping(a, "10.99.0.3", tries=2)
    a.ip("link", "set", "eth0", "address", real_mac)
    assert rig.ping(a, "10.99.0.3")

    rig.ok("CHECK", {**conf, "prevResult": res_a}, a, container_id="ctr-a")
    rig.ok("DEL", conf, a, container_id="ctr-a")
    table = _spoof_table(rig)
    assert f"{NETWORK}/ctr-a/eth0" not in table and res_a["interfaces"][1]["name"] not in table
    assert f"{NETWORK}/ctr-b/eth0" in table


# ---- disableContainerInterface, portIsolation --------------------------------------------


def test_disable_container_interface(rig):
    conf = rig.conf(ranges=None, disableContainerInterface=True)
    c = rig.container()
    result = rig.add(conf, c)
    eth0 = c.link("eth0")
    assert eth0 is not None and "UP" not in _flags(eth0)
    assert "ips" not in result
    # The host end is a working port all the same.
    assert rig.host.link(result["interfaces"][1]["name"])["master"] == rig.bridge


def test_disable_container_interface_with_ipam_is_error_7(rig):
    c = rig.container()
    error = rig.fails("ADD", rig.conf(disableContainerInterface=True), c)
    assert error["code"] == 7
    rig.assert_no_attachment(c)
    assert not rig.data_dir.exists()


def test_port_isolation(rig):
    conf = rig.conf(isGateway=True, portIsolation=True)
    a, b = rig.container("a"), rig.container("b")
    res_a = rig.add(conf, a, container_id="ctr-a")
    res_b = rig.add(conf, b, container_id="ctr-b")
    assert _port(rig, res_a)["isolated"] is True and _port(rig, res_b)["isolated"] is True
    assert not rig.ping(a, "10.99.0.3", tries=1)
    # The host (the bridge itself) still reaches both.
    assert rig.ping(a, "10.99.0.1") and rig.ping(b, "10.99.0.1")


# ---- dns ----------------------------------------------------------------------------------------


def test_dns_is_in_the_result(rig):
    dns = {"nameservers": ["10.99.0.53"], "domain": "example.test", "search": ["example.test"], "options": ["ndots:2"]}
    result = rig.add(rig.conf(dns=dns), rig.container())
    assert result["dns"] == dns


# ---- container MAC -------------------------------------------------------------------------------

RT, ARGS, ENV = "02:00:00:aa:00:01", "02:00:00:aa:00:02", "02:00:00:aa:00:03"


@pytest.mark.parametrize("sources, expected", [
    (("runtimeConfig",), RT),
    (("args",), ARGS),
    (("CNI_ARGS",), ENV),
    (("runtimeConfig", "args", "CNI_ARGS"), RT),
    (("args", "CNI_ARGS"), ARGS),
    (("runtimeConfig", "CNI_ARGS"), RT),
], ids=lambda v: "+".join(v) if isinstance(v, tuple) else v)
def test_container_mac(rig, sources, expected):
    conf = rig.conf()
    if "runtimeConfig" in sources:
        conf["capabilities"] = {"mac": True}
        conf["runtimeConfig"] = {"mac": RT}
    if "args" in sources:
        conf["args"] = {"cni": {"mac": ARGS}}
    c = rig.container()
    result = rig.add(conf, c, args=f"MAC={ENV}" if "CNI_ARGS" in sources else None)
    assert c.link("eth0")["address"] == expected
    assert result["interfaces"][2]["mac"] == expected


def test_multicast_mac_is_error_7(rig):
    c = rig.container()
    conf = rig.conf(runtimeConfig={"mac": "01:00:5e:00:00:01"})
    error = rig.fails("ADD", conf, c)
    assert error["code"] == 7
    rig.assert_no_attachment(c)


def test_del_and_check_ignore_a_mac_only_add_reads(rig):
    """CNI_ARGS that ADD would refuse (a bad MAC) keep neither CHECK nor DEL from the
    attachment ADD made."""
    c = rig.container()
    conf = rig.conf(ipMasq=True)
    result = rig.add(conf, c, args=f"MAC={ENV}")
    rig.ok("CHECK", {**conf, "prevResult": result}, c, args="MAC=not-a-mac")
    rig.ok("DEL", conf, c, args="MAC=01:00:5e:00:00:01")
    rig.assert_no_attachment(c)

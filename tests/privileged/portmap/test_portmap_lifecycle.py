"""portmap's commands against the kernel: what ADD installs and refuses, DEL (by key, by
owner, twice), CHECK, GC, STATUS, conditions, conntrack, concurrency. Read back with
`nft -j`, `conntrack`, sysctl files, and traffic where it matters."""

import json
import subprocess

import pytest

from cni_bridge.cli.runtime import PluginError
from cni_bridge.cni import errors
from portmap_rig import NODE4, NODE6, OUTSIDE4, SECOND4, address_of, gateway_of, sh, tcp, udp

pytestmark = pytest.mark.privileged

NETWORK = "pmnet1"


def direct_conf(mappings=None, prev=None, cni_version="1.0.0", **options) -> dict:
    """portmap's config as a runtime sends it, for execs without the bridge before it."""
    conf = {"cniVersion": cni_version, "name": NETWORK, "type": "portmap", "capabilities": {"portMappings": True},
            **options}
    if mappings is not None:
        conf["runtimeConfig"] = {"portMappings": mappings}
    if prev is not None:
        conf["prevResult"] = prev
    return conf


def prev_result(ip4="10.182.1.50/24", ip6=None, ifname="eth0") -> dict:
    ips = [{"address": a, "interface": 1} for a in (ip4, ip6) if a]
    return {"cniVersion": "1.0.0", "interfaces": [{"name": "pmbr1x"}, {"name": ifname, "sandbox": "/run/netns/x"}],
            "ips": ips}


def failed(res, code: int) -> dict:
    assert res.code == 1 and res.out["code"] == code and res.out["msg"], res
    return res.out


# ---- ADD: what goes in, what is refused ----------------------------------------------------


def test_add_installs_one_element_per_map_and_masquerade_per_source(rig):
    net = rig.network()
    ns = rig.container("web")
    result = rig.attach(net, ns, [tcp(18320, 80), udp(18321, 53, host_ip=NODE4), tcp(18322, 80, host_ip="::")])
    c4, c6, key = address_of(result, 4), address_of(result, 6), f"{NETWORK}/{ns.name}/eth0"
    assert rig.portmap_elements() == {
        "portmap-any4": [(["tcp", 18320], [c4, 80], key)],
        "portmap-hostip4": [([NODE4, "udp", 18321], [c4, 53], key)],
        "portmap-any6": sorted([(["tcp", 18320], [c6, 80], key), (["tcp", 18322], [c6, 80], key)], key=repr),
        "portmap-masq4": sorted([(["10.182.1.0/24", c4, "tcp", 80], None, key), (["127.0.0.0/8", c4, "tcp", 80], None, key),
                                 (["10.182.1.0/24", c4, "udp", 53], None, key), (["127.0.0.0/8", c4, "udp", 53], None, key)],
                                key=repr),
        "portmap-masq6": [(["fd1a:1::/64", c6, "tcp", 80], None, key)],
    }
    chains = rig.chains()
    assert set(chains) >= {"portmap-prerouting", "portmap-output", "portmap-postrouting", "portmap-input"}
    assert chains["portmap-input"] == ["cni_bridge portmap v1 localhost guard"]
    assert len(chains["portmap-prerouting"]) == 8 and chains["portmap-output"] == chains["portmap-prerouting"]


@pytest.mark.parametrize("options, sources4, sources6", [
    ({"snat": False}, [], []),
    ({"masqAll": True}, ["0.0.0.0/0"], ["::/0"]),
])
def test_snat_and_masq_all_choose_the_masqueraded_sources(rig, options, sources4, sources6):
    net = rig.network(portmap=options)
    ns = rig.container("web")
    result = rig.attach(net, ns, [tcp(18323, 80)])
    c4, c6 = address_of(result, 4), address_of(result, 6)
    assert [e[0][0] for e in rig.elements("portmap-masq4")] == sources4
    assert [e[0][0] for e in rig.elements("portmap-masq6")] == sources6
    bridge = net.plugins[0]["bridge"]
    assert rig.read_sysctl(f"net/ipv4/conf/{bridge}/route_localnet") == ("0" if options.get("snat") is False else "1")
    rig.serve(ns, "web", 80)
    assert rig.ask(rig.outside, NODE4, 18323) == (f"web {OUTSIDE4}" if not sources4 else f"web {gateway_of(result, 4)}")
    assert c4 and c6


def test_add_without_prev_result_is_refused(rig):
    out = failed(rig.portmap("ADD", direct_conf([tcp(18324, 80)])), errors.INVALID_CONFIG)
    assert "chained" in out["msg"]
    assert rig.nft_table() is None


@pytest.mark.parametrize("mappings, options, expected", [
    ([tcp(0, 80)], {}, "hostPort: Input should be greater than or equal to 1"),
    ([tcp(65536, 80)], {}, "hostPort: Input should be less than or equal to 65535"),
    ([tcp(18325, 0)], {}, "containerPort: Input should be greater than or equal to 1"),
    ([{"hostPort": 18325, "containerPort": 80, "protocol": "icmp"}], {}, "'icmp' is not tcp, udp or sctp"),
    ([tcp(18325, 80, host_ip="10.182.1.300")], {}, "'10.182.1.300' is not an IP address"),
    ([tcp(18325, 80, host_ip="node")], {}, "'node' is not an IP address"),
    ([tcp(18325, 80), tcp(18325, 81)], {}, "publish the same port twice"),
    ([tcp(18325, 80)], {"conditionsV4": ["-s", "10.0.0.0/8"]}, "iptables syntax"),
    ([tcp(18325, 80)], {"conditionsV4": ["ip", "saddr", "10.0.0.1", "accept"]}, "'accept' is not understood"),
    ([tcp(18325, 80)], {"conditionsV4": ["ip saddr 10.0.0.1; flush ruleset"]}, "is not an IPv4 address"),
    ([tcp(18325, 80)], {"conditionsV6": ["ip", "saddr", "10.0.0.1"]}, "does not match IPv6 packets"),
    ([tcp(18325, 80)], {"backend": "ebtables"}, "backend: Input should be 'iptables' or 'nftables'"),
])
def test_invalid_config_is_error_7_and_installs_nothing(rig, mappings, options, expected):
    res = rig.portmap("ADD", direct_conf(mappings, prev_result(), **options))
    out = failed(res, errors.INVALID_CONFIG)
    assert expected in out["details"], out
    assert rig.nft_table() is None


def test_add_passes_prev_result_through_in_the_requested_version(rig):
    rig.stand_in_bridge()
    prev = {"cniVersion": "0.3.1", "interfaces": [{"name": "eth0", "sandbox": "/run/netns/x"}],
            "ips": [{"version": "4", "address": "10.182.1.51/24", "interface": 0, "gateway": "10.182.1.1"}],
            "dns": {}}
    res = rig.portmap("ADD", direct_conf([tcp(18326, 80)], prev, cni_version="0.3.1"))
    assert res.code == 0, res
    assert res.out == {"cniVersion": "0.3.1", "interfaces": prev["interfaces"], "ips": prev["ips"]}
    assert [e[1] for e in rig.elements("portmap-any4")] == [["10.182.1.51", 80]]
    # Without mappings: passed through.
    res = rig.portmap("ADD", direct_conf([], prev, cni_version="1.0.0"), container_id="pm-other")
    assert res.code == 0 and res.out["cniVersion"] == "1.0.0", res
    assert res.out["ips"] == [{k: v for k, v in prev["ips"][0].items() if k != "version"}]


def test_no_port_mappings_leaves_the_kernel_alone(rig):
    res = rig.portmap("ADD", direct_conf(None, prev_result()))
    assert res.code == 0 and res.out["ips"] == prev_result()["ips"], res
    assert rig.portmap("DEL", direct_conf(None)).code == 0
    assert rig.portmap("CHECK", direct_conf(None, prev_result())).code == 0
    assert rig.nft_table() is None


# ---- conflicts -----------------------------------------------------------------------------


def test_a_port_another_attachment_holds_is_refused(rig):
    second = rig.second_address()
    net = rig.network()
    first = rig.container("first")
    rig.attach(net, first, [tcp(18327, 80), tcp(18328, 80, host_ip=NODE4)])
    rig.serve(first, "first", 80)
    holder = f"{NETWORK}/{first.name}/eth0"
    for mapping in (tcp(18327, 81),  # the same wildcard
                    tcp(18327, 80, host_ip=SECOND4),  # an address the wildcard covers
                    tcp(18328, 80),  # a wildcard over the address the first holds
                    tcp(18328, 80, host_ip=NODE4)):  # the same address
        ns = rig.container("late")
        with pytest.raises(PluginError) as refused:
            rig.attach(net, ns, [mapping])
        assert refused.value.plugin == "portmap" and "already published" in refused.value.msg
        assert holder in refused.value.details
        assert rig.owners() == {holder}  # nothing of the refused one went in
        assert ns.link("eth0") is None  # and the runtime undid the bridge
    assert rig.ask(rig.outside, NODE4, 18327) == f"first {OUTSIDE4}"
    # Other protocols, another address, and the other family are free; so is the holder's own.
    ns = rig.container("ok")
    rig.attach(net, ns, [udp(18327, 80), tcp(18328, 80, host_ip=SECOND4)])
    other = rig.container("v6")
    with pytest.raises(PluginError):  # the first's wildcard covers both families
        rig.attach(net, other, [tcp(18327, 80, host_ip="::")])
    res = rig.portmap("ADD", direct_conf([tcp(18327, 80), tcp(18328, 80, host_ip=NODE4)],
                                         rig.runtime.cached_result(net, rig.rt(first))), ns=first)
    assert res.code == 0, res


def test_a_wildcard_of_one_family_leaves_the_other_free(rig):
    net = rig.network()
    a, b = rig.container("a"), rig.container("b")
    rig.attach(net, a, [tcp(18329, 80, host_ip="0.0.0.0")])
    rig.attach(net, b, [tcp(18329, 80, host_ip="::")])
    rig.serve(a, "a", 80)
    rig.serve(b, "b", 80)
    assert rig.ask(rig.outside, NODE4, 18329).startswith("a ")
    assert rig.ask(rig.outside, NODE6, 18329).startswith("b ")


def test_concurrent_adds_of_one_port_let_one_win(rig):
    rig.stand_in_bridge()
    procs = []
    for index in range(8):
        conf = direct_conf([tcp(18330, 80)], prev_result(ip4=f"10.182.1.{60 + index}/24"))
        env_cmd = ["nsenter", f"--net={rig.node.path}", str(rig.bin_dir / "portmap")]
        env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": f"race{index}", "CNI_IFNAME": "eth0", "CNI_NETNS": "/x",
               "CNI_PATH": str(rig.bin_dir), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
        procs.append(subprocess.Popen(env_cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      env=env))
        procs[-1].stdin.write(json.dumps(conf).encode())
        procs[-1].stdin.close()
    codes = [p.wait(timeout=120) for p in procs]
    for p in procs:
        p.stdout.close()
        p.stderr.close()
    assert sorted(codes) == [0] + [1] * 7, codes
    winner = f"{NETWORK}/race{codes.index(0)}/eth0"
    assert [e[2] for e in rig.elements("portmap-any4")] == [winner]
    assert rig.owners() == {winner}


# ---- DEL ---------------------------------------------------------------------------------


def test_del_without_port_mappings_removes_by_owner(rig):
    net = rig.network()
    keep, gone = rig.container("keep"), rig.container("gone")
    rig.attach(net, keep, [tcp(18331, 80)])
    rig.attach(net, gone, [tcp(18332, 80), udp(18333, 53, host_ip=NODE4)])
    rig.detach(net, gone, mappings=())  # the runtime forgot the capability on DEL
    assert rig.owners() == {f"{NETWORK}/{keep.name}/eth0"}
    # Neither portMappings nor prevResult: still by owner.
    res = rig.portmap("DEL", direct_conf(), ns=keep)
    assert res.code == 0, res
    assert rig.owners() == set()
    # DEL again, and DEL with no table at all, succeed.
    assert rig.portmap("DEL", direct_conf(), ns=keep).code == 0
    sh("nsenter", f"--net={rig.node.path}", "nft", "delete", "table", "inet", "cni_bridge")
    assert rig.portmap("DEL", direct_conf([tcp(18331, 80)], prev_result()), ns=keep).code == 0


def test_del_with_a_malformed_prev_result_removes_by_owner(rig):
    """A prevResult of the wrong shape (refused since prevResults are checked) is set aside
    by DEL, which then finds the attachment's elements by their owner."""
    net = rig.network()
    gone = rig.container("gone")
    rig.attach(net, gone, [tcp(18335, 80)])
    res = rig.portmap("DEL", direct_conf([tcp(18335, 80)], {"cniVersion": "1.0.0", "ips": [{"address": 7}]}), ns=gone)
    assert res.code == 0 and "going without prevResult" in res.err, res
    assert rig.owners() == set()


@pytest.mark.parametrize("add_options, del_options", [
    ({}, {"masqAll": True}),
    ({"masqAll": True}, {}),
    ({}, {"snat": False}),
    ({"conditionsV4": ["ip", "saddr", "10.0.0.0/8"]}, {}),
])
def test_del_under_a_changed_config_still_removes_everything(rig, add_options, del_options):
    """The config a runtime sends on DEL may differ from ADD's (an edited conflist): DEL
    still finds every element ADD made, and the condition chain goes with its jump."""
    rig.stand_in_bridge()
    mappings = [tcp(18338, 80), udp(18339, 53, host_ip=NODE4)]
    assert rig.portmap("ADD", direct_conf(mappings, prev_result(), **add_options)).code == 0
    assert rig.elements("portmap-masq4") or add_options.get("snat") is False
    res = rig.portmap("DEL", direct_conf(mappings, prev_result(), **del_options))
    assert res.code == 0, res
    assert "removing every element" not in res.err  # by key, not by listing
    assert rig.owners() == set()
    assert not [chain for chain in rig.chains() if chain.startswith("portmap-cond-")]


@pytest.mark.parametrize("bad_mappings, options", [
    ([{"hostPort": 18340, "containerPort": 80, "protocol": "icmp"}], {}),
    ([tcp(18340, 80, host_ip="node")], {}),
    ([tcp(18340, 80)], {"conditionsV4": ["-s", "10.0.0.0/8"]}),
])
def test_del_with_a_config_add_would_refuse_removes_by_owner(rig, bad_mappings, options):
    rig.stand_in_bridge()
    assert rig.portmap("ADD", direct_conf([tcp(18340, 80)], prev_result())).code == 0
    res = rig.portmap("DEL", direct_conf(bad_mappings, prev_result(), **options))
    assert res.code == 0 and "removing every element the attachment owns" in res.err, res
    assert rig.owners() == set()


def test_a_stale_range_that_holds_new_ones_is_replaced(rig):
    """An attachment whose DEL never ran left 0.0.0.0/0 (masqAll) for the container address
    a new attachment now has: its range holds both of the new one's ranges, and ADD
    replaces it."""
    rig.stand_in_bridge()
    assert rig.portmap("ADD", direct_conf([tcp(18352, 80)], prev_result(), masqAll=True), container_id="old").code == 0
    res = rig.portmap("ADD", direct_conf([tcp(18353, 80)], prev_result()), container_id="new")
    assert res.code == 0, res
    new = f"{NETWORK}/new/eth0"
    assert sorted((e[0][0], e[2]) for e in rig.elements("portmap-masq4")) == [("10.182.1.0/24", new), ("127.0.0.0/8", new)]


def test_del_by_key_leaves_a_new_owner_alone(rig):
    rig.stand_in_bridge()
    conf = direct_conf([tcp(18334, 80)], prev_result())
    assert rig.portmap("ADD", conf, container_id="old").code == 0
    assert rig.portmap("DEL", direct_conf(), container_id="old").code == 0
    assert rig.portmap("ADD", conf, container_id="new").code == 0
    assert rig.portmap("DEL", conf, container_id="old").code == 0  # a late DEL of the old one
    assert rig.owners() == {f"{NETWORK}/new/eth0"}


def test_one_container_on_two_networks_del_of_one(rig):
    one, two = rig.network(1), rig.network(2)
    ns = rig.container("multi")
    rig.attach(one, ns, [tcp(18335, 80)], container_id="multi", ifname="eth0")
    rig.attach(two, ns, [tcp(18336, 80)], container_id="multi", ifname="eth1")
    rig.serve(ns, "multi", 80)
    rig.detach(one, ns, [tcp(18335, 80)], container_id="multi", ifname="eth0")
    assert rig.owners() == {"pmnet2/multi/eth1"}
    assert rig.ask(rig.outside, NODE4, 18336) == f"multi {OUTSIDE4}"
    assert rig.ask(rig.outside, NODE4, 18335) == ""


def test_del_forgets_the_udp_conntrack_entries_of_its_host_port(rig):
    net = rig.network()
    ns, other = rig.container("dns"), rig.container("other")
    rig.attach(net, ns, [udp(18337, 53)])
    rig.attach(net, other, [udp(18346, 53)])
    rig.serve(ns, "dns", 53, "udp")
    rig.serve(other, "other", 53, "udp")
    assert rig.ask(rig.outside, NODE4, 18337, "udp", sport=18398) == f"dns {OUTSIDE4}"
    assert rig.ask(rig.outside, NODE4, 18346, "udp", sport=18398) == f"other {OUTSIDE4}"
    assert len(rig.conntrack("-p", "udp", "--orig-port-dst", "18337")) == 1
    # A connection the node only forwards, to the same port elsewhere, is none of portmap's.
    rig.in_node("conntrack", "-I", "-p", "udp", "-s", "10.182.1.77", "-d", "192.0.2.9", "--sport", "4000",
                "--dport", "18337", "--timeout", "120")
    rig.detach(net, ns, [udp(18337, 53)])
    assert [line.split("dst=")[1].split()[0] for line in rig.conntrack("-p", "udp", "--orig-port-dst", "18337")] \
        == ["192.0.2.9"]
    assert len(rig.conntrack("-p", "udp", "--orig-port-dst", "18346")) == 1  # another port's entry stays


# ---- CHECK, GC, STATUS ---------------------------------------------------------------------


def test_check_names_what_is_missing(rig):
    net = rig.network()
    ns = rig.container("web")
    result = rig.attach(net, ns, [tcp(18338, 80)])
    rt = rig.rt(ns, [tcp(18338, 80)])
    rig.runtime.check(net, rt)
    nft = ["nsenter", f"--net={rig.node.path}", "nft"]
    sh(*nft, "delete", "element", "inet", "cni_bridge", "portmap-any6", "{ tcp . 18338 }")
    with pytest.raises(PluginError) as failure:
        rig.runtime.check(net, rt)
    assert failure.value.plugin == "portmap"
    assert f"tcp 18338 on every IPv6 address -> [{address_of(result, 6)}]:80" in failure.value.msg
    assert f"{NETWORK}/{ns.name}/eth0" in failure.value.msg
    # ADD again puts it back (the same attachment may re-add its own).
    rig.portmap("ADD", rig.runtime.plugin_conf(net, net.plugins[1], result, rt), ns=ns)
    rig.runtime.check(net, rt)
    sh(*nft, "flush", "chain", "inet", "cni_bridge", "portmap-postrouting")
    with pytest.raises(PluginError, match="chain portmap-postrouting is empty"):
        rig.runtime.check(net, rt)
    rig.attach(net, rig.container("heal"), [tcp(18339, 80)])  # the next ADD heals the layout
    rig.runtime.check(net, rt)
    rig.write_sysctl(f"net/ipv4/conf/{net.plugins[0]['bridge']}/route_localnet", "0")
    with pytest.raises(PluginError, match="route_localnet is off"):
        rig.runtime.check(net, rt)


def test_gc_removes_the_mappings_of_attachments_no_longer_valid(rig):
    rig.stand_in_bridge()
    for cid, network in (("a", NETWORK), ("b", NETWORK), ("c", "pmnet2")):
        conf = {**direct_conf([tcp(18340 + ord(cid) - ord("a"), 80)], prev_result()), "name": network}
        assert rig.portmap("ADD", conf, container_id=cid).code == 0
    gc = {**direct_conf(cni_version="1.1.0"), "cni.dev/valid-attachments": [{"containerID": "a", "ifname": "eth0"}]}
    res = rig.portmap("GC", gc)
    assert res.code == 0, res
    assert rig.owners() == {f"{NETWORK}/a/eth0", "pmnet2/c/eth0"}
    assert [e[0] for e in rig.elements("portmap-any4")] == [["tcp", 18340], ["tcp", 18342]]
    failed(rig.portmap("GC", direct_conf(cni_version="1.1.0")), errors.INVALID_CONFIG)  # no valid list


def test_hundreds_of_mappings_go_in_and_out_in_bounded_messages(rig):
    """Large attachments: ADDs of 100 mappings each (100 DNAT and 200 masquerade elements,
    150 conflict probes), a DEL of one by key (500 lookups) and a GC of 900 elements: more
    requests than one datagram carries, more changes than one delete batch holds."""
    rig.stand_in_bridge()
    mappings = {cid: [tcp(20000 + 100 * index + n, 80 + n, host_ip=NODE4 if n % 2 else None) for n in range(100)]
                for index, cid in enumerate(("big0", "big1", "big2", "big3"))}
    prevs = {cid: prev_result(ip4=f"10.182.1.{60 + index}/24") for index, cid in enumerate(mappings)}
    for cid, ports in mappings.items():
        res = rig.portmap("ADD", direct_conf(ports, prevs[cid]), container_id=cid)
        assert res.code == 0, res
    counts = {name: len(found) for name, found in rig.portmap_elements().items() if found}
    assert counts == {"portmap-any4": 200, "portmap-hostip4": 200, "portmap-masq4": 800}
    assert rig.portmap("DEL", direct_conf(mappings["big0"], prevs["big0"]), container_id="big0").code == 0
    assert rig.owners() == {f"{NETWORK}/big{n}/eth0" for n in (1, 2, 3)}
    res = rig.portmap("GC", {**direct_conf(cni_version="1.1.0"), "cni.dev/valid-attachments": []})
    assert res.code == 0, res
    assert rig.owners() == set()


def test_status(rig):
    assert rig.portmap("STATUS", direct_conf(cni_version="1.1.0")).code == 0
    # Without CAP_NET_ADMIN nftables answers nothing: not available (50).
    res = rig.portmap("STATUS", direct_conf(cni_version="1.1.0"),
                      prefix=["setpriv", "--bounding-set=-net_admin", "--inh-caps=-net_admin"])
    assert failed(res, errors.NOT_AVAILABLE)["msg"] == "nftables is not usable"


# ---- conditions and the table as a whole ----------------------------------------------------


def test_conditions_narrow_what_is_translated(rig):
    net = rig.network(portmap={"conditionsV4": ["ip", "saddr", "!=", f"{{ {OUTSIDE4}, 10.182.99.0/24 }}"]})
    ns = rig.container("web")
    result = rig.attach(net, ns, [tcp(18343, 80)])
    rig.serve(ns, "web", 80)
    rig.serve(None, "node", 18343)
    assert rig.ask(rig.outside, NODE4, 18343) == f"node {OUTSIDE4}"  # the condition excludes the outside
    assert rig.ask(rig.outside, NODE6, 18343).startswith("web ")  # IPv6 has no conditions
    assert rig.ask(None, "127.0.0.1", 18343) == f"web {gateway_of(result, 4)}"
    [chain] = [name for name in rig.chains() if name.startswith("portmap-cond-")]
    assert rig.elements("portmap-jump-any4")[0][1] == f"jump {chain}"
    rig.detach(net, ns, [tcp(18343, 80)])
    assert not [name for name in rig.chains() if name.startswith("portmap-cond-")]  # it went with its last user


def test_listing_reloads_with_nft_f(rig):
    net = rig.network(portmap={"conditionsV6": ["iifname", "pmup0"]})
    rig.attach(net, rig.container("web"), [tcp(18344, 80), udp(18345, 53, host_ip=NODE6)])
    saved = rig.in_node("nft", "list", "ruleset")
    before = rig.nft_table()
    rig.in_node("nft", "flush", "ruleset")
    subprocess.run(["nsenter", f"--net={rig.node.path}", "nft", "-f", "-"], input=saved, text=True, check=True)
    after = rig.nft_table()
    strip = lambda items: [{k: {f: v for f, v in body.items() if f != "handle"} for k, body in item.items()}
                           for item in items if "metainfo" not in item]
    assert strip(after) == strip(before)

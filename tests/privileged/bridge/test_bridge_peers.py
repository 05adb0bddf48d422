"""The bridge plugin next to the reference plugins (Debian containernetworking-plugins
1.1.1 in /usr/lib/cni, which speak CNI up to 1.0.0):

- the same config through our bridge and the reference bridge gives results of the same
  shape and the same kernel state;
- our bridge with the reference host-local as its IPAM (found first in CNI_PATH);
- a conflist run as libcni runs it, by the runtime module of the cni-bridge command: our
  bridge and portmap, then the reference firewall and tuning, each with the previous result
  as prevResult; DEL in reverse with the cached result.
"""

import copy
import json

import pytest

from bridge_rig import NETWORK, outside_namespace, REFERENCE_DIR, SUBNET4, SUBNET6, run
from cni_bridge.cli.runtime import NetworkList, Runtime, RuntimeConf

pytestmark = pytest.mark.privileged


@pytest.fixture(autouse=True)
def _reference_plugins():
    missing = [p for p in ("bridge", "host-local", "portmap", "firewall", "tuning") if not (REFERENCE_DIR / p).exists()]
    if missing:
        pytest.skip(f"reference plugins {missing} absent from {REFERENCE_DIR} (Debian containernetworking-plugins)")


def run_reference(rig, plugin: str, command: str, conf: dict, ns, **kw):
    return rig.exec(command, conf, ns, executable=REFERENCE_DIR / plugin, path=[REFERENCE_DIR], **kw)


# ---- same config, our bridge and the reference bridge ------------------------------------------

PEER_CONFIGS = {
    "gateway-masq-dualstack": dict(ranges=[[SUBNET4], [SUBNET6]], isGateway=True, ipMasq=True),
    "default-gateway-routes-dns": dict(
        isDefaultGateway=True, ipam={"routes": [{"dst": "192.168.60.0/24"}]},
        dns={"nameservers": ["10.99.0.53"], "search": ["example.test"]}),
    "no-gateway-mtu-hairpin": dict(mtu=1400, hairpinMode=True),
}


def _normalize(result: dict, rig, container) -> dict:
    """The result with what legitimately differs between two runs replaced by placeholders."""
    result = copy.deepcopy(result)
    if result.get("dns") == {}:
        # Go's types100.Result always writes "dns": {} (a struct under omitempty); the spec
        # makes dns optional, and we leave an empty one out.
        del result["dns"]
    names = {rig.bridge: "<bridge>", container.path: "<sandbox>"}
    for iface in result.get("interfaces", []):
        iface["mac"] = "<mac>"
        iface["name"] = names.get(iface["name"], "<veth>" if iface["name"].startswith("veth") else iface["name"])
        if "sandbox" in iface:
            iface["sandbox"] = names.get(iface["sandbox"], iface["sandbox"])
    return result


def _kernel_state(rig, container, result) -> dict:
    """What a container and the host look like, in terms comparable across two rigs."""
    veth = result["interfaces"][1]["name"]
    routes = []
    for family in ("-4", "-6"):
        for r in rig.routes(container, family):
            if r["dst"].startswith(("fe80:", "ff00:")):
                continue
            routes.append((r["dst"], r.get("gateway"), r["dev"], r.get("protocol"), r.get("scope")))
    port = rig.host.link(veth)
    bridge = rig.bridge_link()
    return {
        "container addresses": rig.cidrs(container, "eth0"),
        "container routes": sorted(routes, key=str),
        "container eth0 up": "UP" in container.link("eth0")["flags"],
        "container mtu": container.link("eth0")["mtu"],
        "port master is the bridge": port["master"] == rig.bridge,
        "port up": "UP" in port["flags"],
        "port mtu": port["mtu"],
        "port hairpin": rig.host.bridge_json("-d", "link", "show", "dev", veth)[0]["hairpin"],
        "bridge addresses": rig.cidrs(rig.host, rig.bridge),
        "bridge up": "UP" in bridge["flags"],
        "ip_forward": rig.host.sysctl("net.ipv4.ip_forward"),
        "ipv6 forwarding": rig.host.sysctl("net.ipv6.conf.all.forwarding"),
    }


@pytest.mark.parametrize("cni_version", ["0.4.0", "1.0.0"])
@pytest.mark.parametrize("options", PEER_CONFIGS.values(), ids=PEER_CONFIGS.keys())
def test_same_result_and_kernel_state_as_the_reference_bridge(make_rig, options, cni_version):
    ours, ref = make_rig(), make_rig()
    for r in (ours, ref):  # the same starting point (a new netns may inherit the host's)
        run("ip", "netns", "exec", r.host.name, "sysctl", "-qw", "net.ipv4.ip_forward=0")
    c_ours, c_ref = ours.container("ours"), ref.container("ref")

    our_result = ours.add(ours.conf(cni_version=cni_version, **options), c_ours)
    ref_conf = ref.conf(cni_version=cni_version, **options)
    res = run_reference(ref, "bridge", "ADD", ref_conf, c_ref)
    assert res.code == 0, res
    ref_result = res.out

    ours_normalized, ref_normalized = _normalize(our_result, ours, c_ours), _normalize(ref_result, ref, c_ref)
    assert list(ours_normalized) == list(ref_normalized)  # the same keys, in the same order
    assert ours_normalized == ref_normalized
    assert _kernel_state(ours, c_ours, our_result) == _kernel_state(ref, c_ref, ref_result)

    # Each DEL cleans up its own: no veth, no lease; the reference's iptables rules go too.
    ours.ok("DEL", {**ours.conf(cni_version=cni_version, **options), "prevResult": our_result}, c_ours)
    res = run_reference(ref, "bridge", "DEL", {**ref_conf, "prevResult": ref_result}, c_ref)
    assert res.code == 0, res
    for r in (ours, ref):
        assert r.host_veths() == [] and r.leases() == {}
    assert ours.nft_elements() == set()
    assert "10.99.0.2" not in ref.iptables_save()


# ---- our bridge, the reference host-local ------------------------------------------------------


def _logging_host_local(directory):
    """A host-local that records its commands and execs the reference one."""
    directory.mkdir()
    log = directory / "calls"
    script = directory / "host-local"
    script.write_text(f"#!/bin/sh\necho \"$CNI_COMMAND\" >> '{log}'\nexec {REFERENCE_DIR}/host-local \"$@\"\n")
    script.chmod(0o755)
    return log


@pytest.mark.parametrize("first_in_path", ["reference", "logging-wrapper"])
def test_our_bridge_execs_the_reference_host_local(rig, tmp_path, first_in_path):
    if first_in_path == "reference":
        path, log = [REFERENCE_DIR, rig.bin_dir], None
    else:
        log = _logging_host_local(tmp_path / "wrap")
        path = [tmp_path / "wrap", REFERENCE_DIR, rig.bin_dir]
    conf = rig.conf(ranges=[[SUBNET4], [SUBNET6]], cni_version="1.0.0", isGateway=True, ipMasq=True)
    c = rig.container()
    result = rig.add(conf, c, path=path)
    assert [ip["address"] for ip in result["ips"]] == ["10.99.0.2/24", "fd99::2/64"]
    assert rig.leases() == {"10.99.0.2": "ctr1\r\neth0", "fd99::2": "ctr1\r\neth0"}
    assert rig.cidrs(c, "eth0") == {"10.99.0.2/24", "fd99::2/64"}
    conf = {**conf, "prevResult": result}
    rig.ok("CHECK", conf, c, path=path)
    rig.ok("DEL", conf, c, path=path)
    assert rig.leases() == {}
    rig.assert_no_attachment(c)
    if log is not None:
        assert log.read_text().split() == ["ADD", "CHECK", "DEL"]


def test_reference_host_local_refusing_our_version_fails_cleanly(rig):
    """The reference host-local 1.1.1 knows no CNI 1.1.0: its error comes back as is."""
    conf = rig.conf(cni_version="1.1.0", ipMasq=True)
    c = rig.container()
    error = rig.fails("ADD", conf, c, path=[REFERENCE_DIR, rig.bin_dir])
    assert error["code"] == 1 and "incompatible CNI versions" in error["msg"]
    rig.assert_no_attachment(c)
    assert rig.nft_elements() == set()


# ---- a chain: our bridge and portmap, reference firewall and tuning ------------------------------


def test_chain_bridge_portmap_firewall_tuning(rig, tmp_path):
    """The list run by the runtime module (cni_bridge/cli/runtime.py, the suite's one libcni
    implementation) in the rig's host namespace: ours first in CNI_PATH (bridge, portmap),
    then the reference (firewall, tuning)."""
    cni_version = "1.0.0"  # the reference 1.1.1 plugins' newest (firewall: 0.4.0 and 1.0.0)
    conf = rig.conf(ranges=[[SUBNET4], [SUBNET6]], isDefaultGateway=True, ipMasq=True)
    bridge = {k: v for k, v in conf.items() if k not in ("cniVersion", "name")}
    net = NetworkList.from_dict({"cniVersion": cni_version, "name": NETWORK, "plugins": [
        bridge,
        {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True},
        {"type": "firewall", "backend": "iptables"},
        {"type": "tuning", "sysctl": {"net.ipv4.conf.eth0.arp_notify": "1"}},
    ]})
    runtime = Runtime([rig.bin_dir, REFERENCE_DIR], tmp_path / "cache", exec_prefix=["ip", "netns", "exec", rig.host.name])
    c = rig.container()
    o = outside_namespace(rig)
    attachment = RuntimeConf("ctr1", c.path, "eth0", capability_args={
        "portMappings": [{"hostPort": 18080, "containerPort": 8080, "protocol": "tcp"}]})

    result = runtime.add(net, attachment)
    assert result["cniVersion"] == cni_version
    # Each plugin passed the bridge's interfaces and addresses on.
    assert [i["name"] for i in result["interfaces"]][::2] == [rig.bridge, "eth0"]
    assert result["ips"][0]["address"] == "10.99.0.2/24"
    assert c.sysctl("net.ipv4.conf.eth0.arp_notify") == "1"

    runtime.check(net, attachment)

    # The published port reaches the container from outside the host, and from the host.
    assert rig.tcp(o, c, "192.168.250.1", port=18080, bind="0.0.0.0", server_port=8080) == \
        "echo:hello from:192.168.250.2"
    assert rig.tcp(rig.host, c, "192.168.250.1", port=18080, bind="0.0.0.0", server_port=8080).startswith("echo:hello")
    assert "10.99.0.2" in rig.iptables_save()  # the firewall's
    assert "18080" in json.dumps(rig.nft_table())  # portmap's

    runtime.delete(net, attachment)  # in reverse, with the cached result
    rig.assert_no_attachment(c, others=1)  # the outside link is a veth too
    assert rig.nft_elements() == set() and rig.leases() == {}
    rules = rig.iptables_save()
    assert "10.99.0.2" not in rules and "18080" not in rules, rules
    assert "10.99.0.2" not in json.dumps(rig.nft_table()) and "18080" not in json.dumps(rig.nft_table())
    assert runtime.cached_attachments() == []

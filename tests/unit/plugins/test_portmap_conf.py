"""portmap's config handling and pure computations (no kernel): which mappings, in which
family, to which container address, and the elements that publish them."""

import json

import pytest

from cni_bridge.cni import errors, skel
from cni_bridge.cni.errors import CNIError
from cni_bridge.cni.skel import load_cmd_args
from cni_bridge.nft.portmap import Mapping
from cni_bridge.plugins import portmap as plugin
from cni_bridge.plugins.portmap import PortmapConf, container_addresses, port_entries

ENV = {"CNI_CONTAINERID": "c1", "CNI_NETNS": "/run/netns/x", "CNI_IFNAME": "eth0"}
PREV = {"cniVersion": "1.0.0",
        "interfaces": [{"name": "cni0"}, {"name": "veth1"}, {"name": "eth0", "sandbox": "/run/netns/x"}],
        "ips": [{"address": "10.88.0.5/16", "interface": 2}, {"address": "fd00::5/64", "interface": 2}]}
ADDRESSES = {4: "10.88.0.5/16", 6: "fd00::5/64"}


def portmap_conf(mappings=(), **fields) -> PortmapConf:
    conf = {"cniVersion": "1.0.0", "name": "net1", "type": "portmap",
            "runtimeConfig": {"portMappings": list(mappings)}, **fields}
    return PortmapConf(load_cmd_args("ADD", ENV, json.dumps(conf).encode()))


def config_error(mappings=(), **fields) -> CNIError:
    with pytest.raises(CNIError) as raised:
        portmap_conf(mappings, **fields)
    assert raised.value.code == errors.INVALID_CONFIG
    return raised.value


def test_defaults_match_the_reference():
    conf = portmap_conf()
    assert (conf.snat, conf.masq_all, conf.entries, conf.conditions) == (True, False, [], {})
    assert conf.key == "net1/c1/eth0"


def test_options_of_the_reference_are_accepted_and_change_nothing():
    conf = portmap_conf(backend="iptables", markMasqBit=13, externalSetMarkChain="KUBE-MARK-MASQ")
    assert (conf.snat, conf.masq_all, conf.conditions) == (True, False, {})
    assert "markMasqBit: Input should be less than or equal to 31" in config_error(markMasqBit=32).details


@pytest.mark.parametrize("entry, expected", [
    ({"hostPort": 8080, "containerPort": 80}, (None, None, "tcp", 8080, 80)),
    ({"hostPort": 8080, "containerPort": 80, "protocol": "UDP", "hostIP": ""}, (None, None, "udp", 8080, 80)),
    ({"hostPort": 1, "containerPort": 65535, "protocol": "sctp"}, (None, None, "sctp", 1, 65535)),
    ({"hostPort": 8080, "containerPort": 80, "hostIP": "0.0.0.0"}, (4, None, "tcp", 8080, 80)),
    ({"hostPort": 8080, "containerPort": 80, "hostIP": "::"}, (6, None, "tcp", 8080, 80)),
    ({"hostPort": 8080, "containerPort": 80, "hostIP": "192.168.1.2"}, (4, "192.168.1.2", "tcp", 8080, 80)),
    ({"hostPort": 8080, "containerPort": 80, "hostIP": "2001:DB8:0::1"}, (6, "2001:db8::1", "tcp", 8080, 80)),
    ({"hostPort": 8080, "containerPort": 80, "hostIP": "::ffff:192.168.1.2"}, (4, "192.168.1.2", "tcp", 8080, 80)),
])
def test_port_entries(entry, expected):
    assert port_entries([entry]) == [expected]


def test_mapping_keys_match_whatever_their_case_as_in_go():
    """containerd sends Go's field names: HostPort, ContainerPort, Protocol, HostIP."""
    conf = portmap_conf([{"HostPort": 8080, "ContainerPort": 80, "Protocol": "udp", "HostIP": "192.168.1.2"},
                         {"hostport": 1, "hostPort": 2, "CONTAINERPORT": 3}])
    assert conf.entries == [(4, "192.168.1.2", "udp", 8080, 80), (None, None, "tcp", 2, 3)]


@pytest.mark.parametrize("mapping, details", [
    ({"hostPort": 0, "containerPort": 80}, "runtimeConfig.portMappings.0.hostPort: Input should be greater than"),
    ({"hostPort": 65536, "containerPort": 80}, "runtimeConfig.portMappings.0.hostPort: Input should be less than"),
    ({"hostPort": 80}, "runtimeConfig.portMappings.0.containerPort: Field required"),
    ({"hostPort": "80", "containerPort": 80}, "runtimeConfig.portMappings.0.hostPort: Input should be a valid integer"),
    ({"hostPort": 80, "containerPort": 80, "protocol": "icmp"}, "portMappings.0.protocol: 'icmp' is not tcp"),
    ({"hostPort": 80, "containerPort": 80, "hostIP": "1.2.3"}, "portMappings.0.hostIP: '1.2.3' is not an IP address"),
])
def test_bad_mappings_are_invalid_config(mapping, details):
    assert details in config_error([mapping]).details


def test_bad_conditions_are_invalid_config():
    assert config_error(conditionsV4=["drop"]).details.startswith("conditionsV4: 'drop' is not understood")
    assert "iptables syntax" in config_error(conditionsV6=["-s", "fd00::1"]).details
    conf = portmap_conf(conditionsV4=["ip saddr 10.0.0.0/8"])
    chain, expressions = conf.conditions[4]
    assert chain.startswith("portmap-cond-") and len(expressions) == 1 and 6 not in conf.conditions


def test_container_addresses_are_the_first_of_each_family_on_the_interface():
    prev = {"interfaces": [{"name": "cni0"}, {"name": "eth1", "sandbox": "/x"}, {"name": "eth0", "sandbox": "/x"},
                           {"name": "eth0"}],
            "ips": [{"address": "10.1.0.5/24", "interface": 1}, {"address": "10.88.0.7/16", "interface": 3},
                    {"address": "10.88.0.5/16", "interface": 2}, {"address": "10.88.0.6/16", "interface": 2},
                    {"address": "fd00::5/64"}, {"address": "10.88.0.9/16", "interface": 9}]}
    assert container_addresses(prev, "eth0") == {4: "10.88.0.5/16", 6: "fd00::5/64"}
    assert container_addresses(prev, "eth1") == {4: "10.1.0.5/24", 6: "fd00::5/64"}
    assert container_addresses({}, "eth0") == {}
    with pytest.raises(CNIError):
        container_addresses({"ips": [{"address": "10.88.0.5"}]}, "eth0")


def test_mappings_per_family_the_container_has():
    conf = portmap_conf([{"hostPort": 8080, "containerPort": 80}, {"hostPort": 53, "containerPort": 53,
                                                                    "protocol": "udp", "hostIP": "192.168.1.2"},
                         {"hostPort": 443, "containerPort": 8443, "hostIP": "::"}])
    assert conf.mappings(ADDRESSES) == [
        Mapping(4, None, "tcp", 8080, "10.88.0.5", 80), Mapping(6, None, "tcp", 8080, "fd00::5", 80),
        Mapping(4, "192.168.1.2", "udp", 53, "10.88.0.5", 53), Mapping(6, None, "tcp", 443, "fd00::5", 8443),
    ]
    assert conf.mappings({4: "10.88.0.5/16"}) == [Mapping(4, None, "tcp", 8080, "10.88.0.5", 80),
                                                  Mapping(4, "192.168.1.2", "udp", 53, "10.88.0.5", 53)]
    assert conf.mappings({}) == []


@pytest.mark.parametrize("fields, sources4, sources6", [
    ({}, [("0a580000", "0a58ffff"), ("7f000000", "7fffffff")], [("fd00" + "00" * 14, "fd00" + "00" * 6 + "ff" * 8)]),
    ({"snat": False}, [], []),
    ({"masqAll": True}, [("00000000", "ffffffff")], [("00" * 16, "ff" * 16)]),
    ({"masqAll": True, "snat": False}, [], []),
])
def test_masquerade_sources_follow_snat_and_masq_all(fields, sources4, sources6):
    conf = portmap_conf([{"hostPort": 8080, "containerPort": 80}], **fields)
    elements = conf.attachment_elements(conf.mappings(ADDRESSES), ADDRESSES)
    for family, sources in ((4, sources4), (6, sources6)):
        width = 8 if family == 4 else 32
        found = [(e.key.hex()[:width], e.key_end.hex()[:width]) for e in elements if e.set == f"portmap-masq{family}"]
        assert found == sources
    assert {e.set for e in elements} >= {"portmap-any4", "portmap-any6"}
    assert all(e.comment == "net1/c1/eth0" for e in elements)


def test_conditions_add_a_jump_per_mapping_of_their_family():
    conf = portmap_conf([{"hostPort": 8080, "containerPort": 80}], conditionsV6=["iifname eth0"])
    elements = conf.attachment_elements(conf.mappings(ADDRESSES), ADDRESSES)
    [jump] = [e for e in elements if e.set.startswith("portmap-jump-")]
    assert jump.set == "portmap-jump-any6" and jump.data == ("jump", conf.conditions[6][0])
    assert list(conf.layout_of(elements).chains)[-1] == conf.conditions[6][0]
    assert conf.conditions[6][0] not in portmap_conf().layout_of(elements).chains


def test_one_port_published_twice():
    same = [{"hostPort": 8080, "containerPort": 80}, {"hostPort": 8080, "containerPort": 80, "hostIP": "0.0.0.0"},
            {"hostPort": 8081, "containerPort": 80}]  # the same element twice, and a shared masquerade
    conf = portmap_conf(same)
    elements = conf.attachment_elements(conf.mappings(ADDRESSES), ADDRESSES)
    assert len({(e.set, e.key) for e in elements}) == len(elements)
    assert [e.set for e in elements].count("portmap-any4") == 2
    different = portmap_conf([{"hostPort": 8080, "containerPort": 80}, {"hostPort": 8080, "containerPort": 81}])
    with pytest.raises(CNIError, match="invalid portmap config") as raised:
        different.attachment_elements(different.mappings(ADDRESSES), ADDRESSES)
    assert "tcp 8080 on every IPv4 address -> 10.88.0.5:80 and tcp 8080 on every IPv4 address -> 10.88.0.5:81" in (
        raised.value.details)


# ---- commands that answer before the kernel -------------------------------------------------


def dispatch(command: str, **fields):
    conf = {"cniVersion": "1.0.0", "name": "net1", "type": "portmap", **fields}
    code, out = skel.dispatch(plugin.PLUGIN, {**ENV, "CNI_COMMAND": command}, json.dumps(conf).encode())
    return code, json.loads(out) if out else None


def test_add_without_prev_result_is_refused():
    code, out = dispatch("ADD", runtimeConfig={"portMappings": [{"hostPort": 8080, "containerPort": 80}]})
    assert code == 1 and out["code"] == errors.INVALID_CONFIG and "chained plugin" in out["msg"]


def test_add_without_mappings_passes_prev_result_on_in_the_requested_version():
    code, out = dispatch("ADD", prevResult=PREV)
    assert code == 0 and out == PREV
    code, out = dispatch("ADD", prevResult={**PREV, "cniVersion": "0.4.0"}, cniVersion="0.4.0")
    assert code == 0 and out["cniVersion"] == "0.4.0"
    assert out["ips"] == [{"version": "4", **PREV["ips"][0]}, {"version": "6", **PREV["ips"][1]}]


def test_check_without_prev_result_is_refused():
    code, out = dispatch("CHECK")
    assert code == 1 and out["code"] == errors.INVALID_CONFIG


def test_gc_without_valid_attachments_is_refused():
    code, out = dispatch("GC", cniVersion="1.1.0")
    assert code == 1 and out["code"] == errors.INVALID_CONFIG and "valid-attachments" in out["msg"]

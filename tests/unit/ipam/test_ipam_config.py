"""host-local's config: range sets, requested addresses, routes, DNS; bad input refused
before anything is written."""

import json
import os

import pytest

from cni_bridge.cni import errors, skel
from cni_bridge.cni.addr import parse_ip
from ipam.config import DEFAULT_DATA_DIR, load_ipam_config


def load(conf, cni_args=None, command="ADD"):
    env = {"CNI_COMMAND": command, "CNI_CONTAINERID": "c1", "CNI_NETNS": "/x", "CNI_IFNAME": "eth0"}
    if cni_args:
        env["CNI_ARGS"] = cni_args
    return load_ipam_config(skel.load_cmd_args(command, env, json.dumps(conf).encode()))


def ip(text):
    return parse_ip(text)[1]


def spans(conf):
    """Each range set as [(start, end, gateway)] texts."""
    from cni_bridge.cni.addr import format_ip

    return [[(format_ip(r.family, r.start), format_ip(r.family, r.end), format_ip(r.family, r.gateway)) for r in rs]
            for rs in conf.range_sets]


@pytest.mark.parametrize(
    "ranges, expected",
    [
        ([["10.0.0.0/24"]], [[("10.0.0.1", "10.0.0.254", "10.0.0.1")]]),
        ([["10.0.0.0/30"]], [[("10.0.0.1", "10.0.0.2", "10.0.0.1")]]),
        ([["fd00::/64"]], [[("fd00::1", "fd00::ffff:ffff:ffff:ffff", "fd00::1")]]),
        ([["fd00::/126"]], [[("fd00::1", "fd00::3", "fd00::1")]]),
        (
            [[{"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.100", "rangeEnd": "10.0.0.200", "gateway": "10.0.0.254"}]],
            [[("10.0.0.100", "10.0.0.200", "10.0.0.254")]],
        ),
        (
            [["10.0.0.0/24", "10.0.1.0/24"], ["fd00::/120"]],
            [[("10.0.0.1", "10.0.0.254", "10.0.0.1"), ("10.0.1.1", "10.0.1.254", "10.0.1.1")],
             [("fd00::1", "fd00::ff", "fd00::1")]],
        ),
    ],
)
def test_range_defaults(make_conf, ranges, expected):
    assert spans(load(make_conf(ranges))) == expected


def test_legacy_subnet_form_comes_first(make_conf):
    conf = make_conf([["10.1.0.0/24"]], ipam={"subnet": "10.2.0.0/24", "rangeStart": "10.2.0.10", "gateway": "10.2.0.254"})
    assert spans(load(conf)) == [[("10.2.0.10", "10.2.0.254", "10.2.0.254")], [("10.1.0.1", "10.1.0.254", "10.1.0.1")]]
    assert spans(load(make_conf(None, ipam={"subnet": "10.2.0.0/24"}))) == [[("10.2.0.1", "10.2.0.254", "10.2.0.1")]]


def test_ip_ranges_capability_comes_before_configured_ranges(make_conf):
    # As in the reference: ipRanges, then the legacy single range, then `ranges`.
    conf = make_conf([["10.1.0.0/24"]], ipam={"subnet": "10.2.0.0/24"},
                     runtimeConfig={"ipRanges": [[{"subnet": "10.9.0.0/24"}], [{"subnet": "fd09::/64"}]]})
    assert [[r[0] for r in rs] for rs in spans(load(conf))] == [["10.9.0.1"], ["fd09::1"], ["10.2.0.1"], ["10.1.0.1"]]


def test_data_dir_and_routes(make_conf):
    routes = [{"dst": "0.0.0.0/0"}, {"dst": "192.168.0.0/16", "gw": "10.0.0.254"}, {"dst": "::/0", "gw": "fd00::1"}]
    conf = load(make_conf(ipam={"routes": routes}))
    assert conf.routes == routes and conf.data_dir.endswith("data") and conf.dns is None
    no_dir = make_conf()
    del no_dir["ipam"]["dataDir"]
    assert load(no_dir).data_dir == DEFAULT_DATA_DIR == "/var/lib/cni/networks"


def test_resolv_conf(make_conf, tmp_path):
    resolv = tmp_path / "resolv.conf"
    resolv.write_text(
        "# comment\nnameserver 10.0.0.53\nnameserver fd00::53\ndomain example.com\n"
        "search a.example b.example\noptions ndots:2 timeout:1\n; other comment\nnameserver\n"
    )
    assert load(make_conf(ipam={"resolvConf": str(resolv)})).dns == {
        "nameservers": ["10.0.0.53", "fd00::53"], "domain": "example.com",
        "search": ["a.example", "b.example"], "options": ["ndots:2", "timeout:1"],
    }


# ---- requested addresses --------------------------------------------------------------

DUAL = [["10.0.0.0/24"], ["fd00::/64"]]


@pytest.mark.parametrize(
    "top, cni_args, requested",
    [
        ({"args": {"cni": {"ips": ["10.0.0.5"]}}}, None, {0: "10.0.0.5"}),
        ({"args": {"cni": {"ips": ["10.0.0.5/24", "fd00::5/64"]}}}, None, {0: "10.0.0.5", 1: "fd00::5"}),
        ({"runtimeConfig": {"ips": ["fd00::7/64"]}}, None, {1: "fd00::7"}),
        ({}, "IP=10.0.0.9", {0: "10.0.0.9"}),
        ({}, "IgnoreUnknown=1;K8S_POD_NAME=x;IP=10.0.0.9, fd00::9", {0: "10.0.0.9", 1: "fd00::9"}),
        ({"args": {"cni": {"ips": ["10.0.0.5"]}}, "runtimeConfig": {"ips": ["10.0.0.5/24"]}}, "IP=10.0.0.5", {0: "10.0.0.5"}),
        ({}, None, {}),
    ],
)
def test_requested_addresses(make_conf, top, cni_args, requested):
    conf = load(make_conf(DUAL, **top), cni_args)
    assert conf.requested == {index: parse_ip(text) for index, text in requested.items()}


@pytest.mark.parametrize("command", ["DEL", "CHECK", "STATUS"])
def test_only_add_reads_requested_addresses(make_conf, command):
    """DEL gets ADD's arguments again; a request outside today's ranges must not stop it."""
    conf = make_conf(cni_version="1.1.0", args={"cni": {"ips": ["10.9.0.5"]}})
    assert load(conf, "IP=10.0.0.1", command).requested == {}


# ---- refused configs: error 7 naming the problem, and nothing on disk -----------------

R = {"subnet": "10.0.0.0/24"}
BAD = [
    # (ranges, ipam extras, top-level extras, CNI_ARGS, fragment of the error)
    ([["10.0.0.0/33"]], {}, {}, None, "invalid CIDR '10.0.0.0/33'"),
    ([["10.0.0/24"]], {}, {}, None, "10.0.0/24"),
    ([["banana"]], {}, {}, None, "banana"),
    ([["10.0.0.0"]], {}, {}, None, "invalid CIDR '10.0.0.0'"),
    ([["10.0.0.0/-1"]], {}, {}, None, "invalid CIDR"),
    ([["10.0.0.0/\u0662\u0664"]], {}, {}, None, "invalid CIDR"),  # Arabic-Indic "24"
    ([["10.0.0.0/\u00b2"]], {}, {}, None, "invalid CIDR"),
    ([["10.0.0.0/ 24"]], {}, {}, None, "invalid CIDR"),
    ([["10.0.0.1/24"]], {}, {}, None, "host bits set; for a /24 the network address is 10.0.0.0"),
    ([["fd00::1/64"]], {}, {}, None, "the network address is fd00::"),
    ([["10.0.0.0/31"]], {}, {}, None, "10.0.0.0/31 is too small"),
    ([["10.0.0.1/32"]], {}, {}, None, "10.0.0.1/32 is too small"),
    ([["fd00::/127"]], {}, {}, None, "fd00::/127 is too small"),
    ([["fd00::1/128"]], {}, {}, None, "fd00::1/128 is too small"),
    ([["10.0.0.0/24"], ["10.0.0.128/25"]], {}, {}, None, "range set 0 overlaps with range set 1"),
    ([["fd00::/64"], ["10.1.0.0/16"], ["fd00::/48"]], {}, {}, None, "range set 0 overlaps with range set 2"),
    ([[{**R, "rangeEnd": "10.0.0.20"}, {**R, "rangeStart": "10.0.0.20"}]], {}, {}, None,
     "ranges 10.0.0.1-10.0.0.20 and 10.0.0.20-10.0.0.254 overlap"),
    ([["10.0.0.0/16", "10.0.5.0/24"]], {}, {}, None, "overlap"),
    ([[{**R, "rangeStart": "10.0.1.5"}]], {}, {}, None, "rangeStart 10.0.1.5 is not a usable address of network 10.0.0.0/24"),
    ([[{**R, "rangeEnd": "10.0.0.255"}]], {}, {}, None, "rangeEnd 10.0.0.255 is not a usable address"),
    ([[{**R, "rangeStart": "10.0.0.0"}]], {}, {}, None, "rangeStart 10.0.0.0 is not a usable address"),
    ([[{**R, "gateway": "10.0.1.1"}]], {}, {}, None, "gateway 10.0.1.1 is not a usable address"),
    ([[{**R, "gateway": "fd00::1"}]], {}, {}, None, "gateway fd00::1 is not a usable address"),
    ([[{**R, "rangeStart": "10.0.0.x"}]], {}, {}, None, "invalid IP address '10.0.0.x'"),
    ([[{**R, "rangeStart": "10.0.0.50", "rangeEnd": "10.0.0.40"}]], {}, {}, None,
     "rangeStart 10.0.0.50 is after rangeEnd 10.0.0.40"),
    ([["10.0.0.0/24", "fd00::/64"]], {}, {}, None, "range set 0: mixes IPv4 and IPv6"),
    (None, {}, {}, None, "no IP ranges specified"),
    ([], {}, {}, None, "no IP ranges specified"),
    ([["10.0.0.0/24"]], {"routes": [{"dst": "10.1.0.0"}]}, {}, None, "route"),
    ([["10.0.0.0/24"]], {"routes": [{"dst": "0.0.0.0/0", "gw": "nowhere"}]}, {}, None, "'nowhere'"),
    ([["10.0.0.0/24"]], {"routes": [{"dst": "0.0.0.0/0", "gw": "fd00::1"}]}, {}, None, "gw fd00::1 is not an IPv4 address"),
    ([["fd00::/64"]], {"routes": [{"dst": "::/0", "gw": "10.0.0.1"}]}, {}, None, "gw 10.0.0.1 is not an IPv6 address"),
    ([["10.0.0.0/24"]], {}, {"args": {"cni": {"ips": ["10.1.0.5"]}}}, None, "requested address 10.1.0.5 is in no configured range"),
    ([["10.0.0.0/24"]], {}, {"runtimeConfig": {"ips": ["10.0.0.1/24"]}}, None, "10.0.0.1/24 is the subnet's gateway"),
    ([["10.0.0.0/24"]], {}, {}, "IP=10.0.0.5,10.0.0.6", "more than one address requested from range set 0"),
    ([["10.0.0.0/24"]], {}, {}, "IP=10.0.0.256", "requested address: invalid IP address '10.0.0.256'"),
    ([[{**R, "rangeStart": "10.0.0.100"}]], {}, {}, "IP=10.0.0.50", "10.0.0.50 is in no configured range"),
    # What follows the slash must be a prefix length (it once was ignored).
    ([["10.0.0.0/24"]], {}, {}, "IP=10.0.0.7/../../x", "invalid CIDR '10.0.0.7/../../x'"),
    ([["10.0.0.0/24"]], {}, {"runtimeConfig": {"ips": ["10.0.0.7/33"]}}, None, "invalid CIDR '10.0.0.7/33'"),
    ([["10.0.0.0/24"]], {}, {"args": {"cni": {"ips": ["10.0.0.7/"]}}}, None, "invalid CIDR '10.0.0.7/'"),
]


@pytest.mark.parametrize("ranges, ipam, top, cni_args, fragment", BAD)
def test_bad_config_is_refused_and_writes_nothing(host_local_in_process, make_conf, data_dir, ranges, ipam, top, cni_args, fragment):
    result = host_local_in_process("ADD", make_conf(ranges, ipam=ipam, **top), args=cni_args)
    assert result.code == 1
    assert result.out["code"] == errors.INVALID_CONFIG, result.out
    assert fragment in result.out["details"], result.out
    assert not data_dir.exists()


@pytest.mark.parametrize("env", [
    {"ifname": "eth\udcff"}, {"container_id": "c\udcc3\udca9"}, {"args": "IP=10.0.0.5\udcff"},
    {"netns": "/run/netns/\x07"}, {"CNI_PATH": "/opt/cni/bin:\udcff"},
])
def test_bad_environment_is_refused_and_writes_nothing(host_local_in_process, make_conf, data_dir, env):
    """A byte that is not UTF-8 reached the lease file once (and DEL could not remove it)."""
    result = host_local_in_process("ADD", make_conf(), **env)
    assert result.code == 1 and result.out["code"] == errors.INVALID_ENVIRONMENT, result.out
    assert not data_dir.exists()


@pytest.mark.parametrize("cni_version", ["0.1.0", "0.2.0"])
def test_old_versions_take_one_range_set_per_family(host_local_in_process, make_conf, data_dir, cni_version):
    result = host_local_in_process("ADD", make_conf([["10.0.0.0/24"], ["10.1.0.0/24"]], cni_version=cni_version))
    assert result.code == 1 and result.out["code"] == errors.INVALID_CONFIG
    assert f"CNI version {cni_version} does not support more than 1 address per family" in result.out["details"]
    assert not data_dir.exists()
    dual = host_local_in_process("ADD", make_conf([["10.0.0.0/24"], ["fd00::/64"]], cni_version=cni_version))
    assert dual.code == 0
    assert dual.out == {"cniVersion": cni_version, "ip4": {"ip": "10.0.0.2/24", "gateway": "10.0.0.1"},
                        "ip6": {"ip": "fd00::2/64", "gateway": "fd00::1"}}


def test_missing_resolv_conf_fails_add_only(host_local_in_process, make_conf, data_dir, tmp_path, leases):
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 10.0.0.53\n")
    conf = make_conf(ipam={"resolvConf": str(resolv)})
    assert host_local_in_process("ADD", conf).code == 0
    resolv.unlink()
    result = host_local_in_process("ADD", conf, container_id="c2")
    assert result.code == 1 and result.out["code"] == errors.IO_FAILURE
    assert str(resolv) in result.out["msg"] and list(leases(data_dir / "testnet")) == ["10.0.0.2"]
    for command in ("CHECK", "STATUS", "DEL"):
        assert host_local_in_process(command, conf).code == 0, command
    assert leases(data_dir / "testnet") == {}


@pytest.mark.parametrize("kind", ["fifo", "device", "directory"])
def test_a_resolv_conf_that_is_no_file_fails_without_hanging(host_local_in_process, make_conf, data_dir, tmp_path, kind):
    """A FIFO once blocked the ADD in open() for as long as nobody wrote to it."""
    path = {"fifo": tmp_path / "resolv.fifo", "device": "/dev/null", "directory": tmp_path}[kind]
    if kind == "fifo":
        os.mkfifo(path)
    result = host_local_in_process("ADD", make_conf(ipam={"resolvConf": str(path)}))
    assert result.code == 1 and result.out["code"] == errors.IO_FAILURE, result.out
    assert result.out["msg"] == f"cannot read resolvConf {path}" and result.out["details"], result.out
    assert not data_dir.exists()


def test_schema_errors_write_nothing(host_local_in_process, make_conf, data_dir):
    result = host_local_in_process("ADD", make_conf([[{"subnet": 24}]]))
    assert result.code == 1 and result.out["code"] == errors.INVALID_CONFIG
    assert "ipam.ranges.0.0.subnet" in result.out["details"] and not data_dir.exists()

"""The host-local executable as a runtime runs it: environment and stdin in, exit code and
JSON out, leases in a temporary dataDir."""


import pytest

from cni_bridge.cni import version
from plugin_runner import finish_plugin, host_local_conf, start_plugin

pytestmark = pytest.mark.e2e


@pytest.fixture
def hl(run_plugin):
    def run(command, conf=b"", **env):
        return run_plugin("host-local", command, conf, **env)

    return run


@pytest.fixture
def net_dir(data_dir):
    return data_dir / "testnet"


def assert_error(result, code, *fragments):
    assert result.code == 1, result
    assert result.out["code"] == code, result
    text = f"{result.out['msg']} {result.out.get('details', '')}"
    assert all(fragment in text for fragment in fragments), (fragments, result.out)


def addresses(result) -> list[str]:
    assert result.code == 0, result
    return [ip["address"] for ip in result.out["ips"]]


def tree(path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


# ---- the protocol ---------------------------------------------------------------------


def test_no_command_prints_about_on_stderr(hl):
    result = hl(None)
    assert (result.code, result.raw) == (0, b"")
    assert "host-local" in result.err and "1.1.0" in result.err


def test_version(hl):
    result = hl("VERSION")
    assert result.code == 0
    assert result.out == {"cniVersion": "1.1.0", "supportedVersions": list(version.SUPPORTED_VERSIONS)}


@pytest.mark.parametrize(
    "stdin, env, code, fragment",
    [
        (b"{not json", {}, 6, "failed to decode network config"),
        (b'{"cniVersion": "9.9.9", "name": "n", "type": "t"}', {}, 1, "incompatible CNI versions"),
        (b'{"cniVersion": "1.0.0", "name": "n", "type": "t"}', {"netns": None}, 4, "CNI_NETNS"),
        (b'{"cniVersion": "1.0.0", "name": "n", "type": "t"}', {"args": "FOO=1"}, 4, "CNI_ARGS"),
        (b'{"cniVersion": "1.0.0", "name": "n", "type": "t"}', {}, 7, "ipam: Field required"),
    ],
)
def test_protocol_errors(hl, stdin, env, code, fragment):
    result = hl("ADD", stdin, **env)
    assert_error(result, code, fragment)
    assert result.raw.lstrip().startswith(b"{") and b"Traceback" not in result.raw


# ---- allocation -----------------------------------------------------------------------


def test_allocate_and_release(hl, make_conf, net_dir, leases):
    conf = make_conf()
    assert addresses(hl("ADD", conf, container_id="c1")) == ["10.0.0.2/24"]
    assert addresses(hl("ADD", conf, container_id="c2")) == ["10.0.0.3/24"]
    assert leases(net_dir) == {"10.0.0.2": "c1\r\neth0", "10.0.0.3": "c2\r\neth0"}
    assert hl("CHECK", conf, container_id="c1").code == 0
    assert hl("DEL", conf, container_id="c1").code == 0
    assert leases(net_dir) == {"10.0.0.3": "c2\r\neth0"}
    assert addresses(hl("ADD", conf, container_id="c3")) == ["10.0.0.4/24"], "round robin, not the freed .2"


def test_add_twice_is_refused(hl, make_conf, net_dir, leases):
    conf = make_conf()
    hl("ADD", conf, container_id="c1")
    assert_error(hl("ADD", conf, container_id="c1"), 999, "duplicate allocation is not allowed")
    assert addresses(hl("ADD", conf, container_id="c1", ifname="eth1")) == ["10.0.0.3/24"]
    assert sorted(leases(net_dir)) == ["10.0.0.2", "10.0.0.3"]


def test_exhaustion(hl, make_conf, net_dir, leases):
    conf = make_conf([[{"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.10", "rangeEnd": "10.0.0.11"}]])
    assert addresses(hl("ADD", conf, container_id="c1")) == ["10.0.0.10/24"]
    assert addresses(hl("ADD", conf, container_id="c2")) == ["10.0.0.11/24"]
    result = hl("ADD", conf, container_id="c3")
    assert_error(result, 999, "no IP addresses available", "10.0.0.10-10.0.0.11")
    assert result.out["cniVersion"] == "1.1.0"
    assert sorted(leases(net_dir)) == ["10.0.0.10", "10.0.0.11"]


def test_dual_stack(hl, make_conf, net_dir, leases):
    conf = make_conf([["10.0.0.0/24"], ["fd00:1::/64"]])
    assert addresses(hl("ADD", conf)) == ["10.0.0.2/24", "fd00:1::2/64"]
    assert sorted(leases(net_dir)) == ["10.0.0.2", "fd00:1::2"]
    assert hl("DEL", conf).code == 0
    assert leases(net_dir) == {}


@pytest.mark.parametrize(
    "top, cni_args, expected",
    [
        ({}, "IP=10.0.0.50", ["10.0.0.50/24", "fd00:1::2/64"]),
        ({}, "IgnoreUnknown=1;K8S_POD_NAME=web;IP=10.0.0.50,fd00:1::50", ["10.0.0.50/24", "fd00:1::50/64"]),
        ({"args": {"cni": {"ips": ["fd00:1::77/64"]}}}, None, ["10.0.0.2/24", "fd00:1::77/64"]),
        ({"runtimeConfig": {"ips": ["10.0.0.99/24", "fd00:1::99/64"]}}, None, ["10.0.0.99/24", "fd00:1::99/64"]),
    ],
)
def test_specific_addresses(hl, make_conf, top, cni_args, expected):
    conf = make_conf([["10.0.0.0/24"], ["fd00:1::/64"]], **top)
    assert addresses(hl("ADD", conf, args=cni_args)) == expected
    assert_error(hl("ADD", conf, args=cni_args, container_id="c2"), 999, "is not available")


def test_requested_address_taken_leaves_no_partial_lease(hl, make_conf, net_dir, leases):
    conf = make_conf([["10.0.0.0/24"], ["fd00:1::/64"]])
    hl("ADD", conf, container_id="c1", args="IP=fd00:1::5")
    assert_error(hl("ADD", conf, container_id="c2", args="IP=fd00:1::5"), 999, "fd00:1::5")
    assert sorted(leases(net_dir)) == ["10.0.0.2", "fd00:1::5"]


@pytest.mark.parametrize("to_version", version.SUPPORTED_VERSIONS)
def test_result_in_every_version(hl, make_conf, tmp_path, to_version):
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 10.0.0.53\nsearch example.com\n")
    ipam = {"routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0", "gw": "fd00:1::1"}], "resolvConf": str(resolv)}
    conf = make_conf([["10.0.0.0/24"], ["fd00:1::/64"]], cni_version=to_version, ipam=ipam)
    result = hl("ADD", conf)
    assert result.code == 0, result
    dns = {"nameservers": ["10.0.0.53"], "search": ["example.com"]}
    if version.at_least(to_version, "1.0.0"):
        expected = {"ips": [{"address": "10.0.0.2/24", "gateway": "10.0.0.1"},
                            {"address": "fd00:1::2/64", "gateway": "fd00:1::1"}],
                    "routes": ipam["routes"], "dns": dns}
    elif version.at_least(to_version, "0.3.0"):
        expected = {"ips": [{"version": "4", "address": "10.0.0.2/24", "gateway": "10.0.0.1"},
                            {"version": "6", "address": "fd00:1::2/64", "gateway": "fd00:1::1"}],
                    "routes": ipam["routes"], "dns": dns}
    else:
        expected = {"ip4": {"ip": "10.0.0.2/24", "gateway": "10.0.0.1", "routes": [{"dst": "0.0.0.0/0"}]},
                    "ip6": {"ip": "fd00:1::2/64", "gateway": "fd00:1::1", "routes": [{"dst": "::/0", "gw": "fd00:1::1"}]},
                    "dns": dns}
    assert result.out == {"cniVersion": to_version, **expected}


# ---- DEL, CHECK, GC, STATUS -----------------------------------------------------------


def test_del_is_idempotent(hl, make_conf, data_dir, net_dir, leases):
    conf = make_conf()
    assert hl("DEL", conf).code == 0, "DEL before anything was ever leased"
    assert not data_dir.exists()
    hl("ADD", conf, container_id="c1")
    hl("ADD", conf, container_id="c2")
    for _ in range(2):
        result = hl("DEL", conf, container_id="c1")
        assert (result.code, result.raw) == (0, b"")
    assert hl("DEL", conf, container_id="c3").code == 0, "DEL of a container with no lease"
    assert hl("DEL", conf, container_id="c2", ifname="eth1").code == 0
    assert leases(net_dir) == {"10.0.0.3": "c2\r\neth0"}, "another interface's DEL leaves the lease"


def test_del_releases_an_old_id_only_lease(hl, make_conf, net_dir, leases):
    net_dir.mkdir(parents=True)
    (net_dir / "10.0.0.7").write_text("c1")
    assert hl("DEL", make_conf(), container_id="c1").code == 0
    assert leases(net_dir) == {}


def test_check_needs_a_lease(hl, make_conf):
    conf = make_conf(cni_version="1.0.0")
    assert_error(hl("CHECK", conf, container_id="c1"), 999, "c1")
    hl("ADD", conf, container_id="c1")
    assert hl("CHECK", conf, container_id="c1").code == 0
    assert_error(hl("CHECK", conf, container_id="c1", ifname="eth1"), 999, "eth1")
    hl("DEL", conf, container_id="c1")
    assert_error(hl("CHECK", conf, container_id="c1"), 999, "c1")


@pytest.mark.parametrize("key", ["cni.dev/valid-attachments", "cni.dev/attachments"])
def test_gc_releases_exactly_the_invalid(hl, make_conf, net_dir, leases, key):
    conf = make_conf([["10.0.0.0/24"], ["fd00:1::/64"]])
    for container, ifname in [("c1", "eth0"), ("c1", "eth1"), ("c2", "eth0"), ("c3", "eth0")]:
        assert hl("ADD", conf, container_id=container, ifname=ifname).code == 0
    (net_dir / "10.0.0.100").write_text("c2")  # an old id-only lease of a valid container
    (net_dir / "10.0.0.101").write_text("c4")  # ... and of a gone one
    before = leases(net_dir)
    valid = [{"containerID": "c1", "ifname": "eth1"}, {"containerID": "c2", "ifname": "eth0"}]
    result = hl("GC", {**conf, key: valid}, container_id=None, ifname=None, netns=None)
    assert (result.code, result.raw) == (0, b""), result
    kept = {ip: owner for ip, owner in before.items() if owner in ("c1\r\neth1", "c2\r\neth0", "c2")}
    assert leases(net_dir) == kept
    assert sorted(kept) == ["10.0.0.100", "10.0.0.3", "10.0.0.4", "fd00:1::3", "fd00:1::4"]


def test_gc_with_no_valid_attachment_releases_all(hl, make_conf, net_dir, leases):
    conf = make_conf()
    hl("ADD", conf, container_id="c1")
    assert hl("GC", {**conf, "cni.dev/valid-attachments": []}).code == 0
    assert leases(net_dir) == {}


def test_gc_needs_the_attachment_list(hl, make_conf, net_dir, leases):
    conf = make_conf()
    hl("ADD", conf, container_id="c1")
    assert_error(hl("GC", conf), 7, "cni.dev/valid-attachments")
    assert list(leases(net_dir)) == ["10.0.0.2"]


def test_status(hl, make_conf):
    conf = make_conf([[{"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.1", "rangeEnd": "10.0.0.3"}], ["fd00:1::/64"]])
    assert hl("STATUS", conf).code == 0, "nothing leased yet"
    hl("ADD", conf, container_id="c1")
    assert hl("STATUS", conf).code == 0
    hl("ADD", conf, container_id="c2")
    assert_error(hl("STATUS", conf), 50, "range set 0", "10.0.0.1-10.0.0.3")
    hl("DEL", conf, container_id="c1")
    result = hl("STATUS", conf)
    assert (result.code, result.raw) == (0, b"")


# ---- names and paths ------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, container_id, code",
    [("..", "c1", 7), ("../escaped", "c1", 7), ("a/b", "c1", 7), ("/", "c1", 7), (".", "c1", 7),
     ("testnet", "..", 4), ("testnet", "../../escaped", 4), ("testnet", "/etc", 4), ("testnet", "a/b", 4)],
)
def test_names_that_would_escape_the_data_dir(hl, make_conf, tmp_path, name, container_id, code):
    before = tree(tmp_path)
    for command in ("ADD", "DEL", "CHECK"):
        assert_error(hl(command, make_conf(name=name), container_id=container_id), code)
    assert tree(tmp_path) == before


def test_unwritable_data_dir(hl, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    conf = host_local_conf(blocker / "data", [["10.0.0.0/24"]])
    assert_error(hl("ADD", conf), 5, str(blocker / "data" / "testnet"), "Not a directory")
    assert hl("DEL", conf).code == 0
    assert hl("STATUS", conf).code == 0
    assert tree(tmp_path) == ["file"] and blocker.read_text() == ""


# ---- many at once ---------------------------------------------------------------------


def test_concurrent_adds_get_distinct_addresses(plugin_dir, make_conf, net_dir, leases):
    conf = make_conf([[{"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.10", "rangeEnd": "10.0.0.34"}]])  # 25 addresses
    containers = [f"c{i:02d}" for i in range(40)]
    procs = [start_plugin(plugin_dir / "host-local", "ADD", conf, container_id=c) for c in containers]
    results = dict(zip(containers, (finish_plugin(p) for p in procs)))

    won = {c: r.out["ips"][0]["address"] for c, r in results.items() if r.code == 0}
    lost = {c: r for c, r in results.items() if r.code != 0}
    assert len(won) == 25 and len(set(won.values())) == 25
    assert {a.split("/")[0] for a in won.values()} == {f"10.0.0.{i}" for i in range(10, 35)}
    for result in lost.values():
        assert_error(result, 999, "no IP addresses available in range set: 10.0.0.10-10.0.0.34")
    assert leases(net_dir) == {ip.split("/")[0]: f"{c}\r\neth0" for c, ip in won.items()}

    procs = [start_plugin(plugin_dir / "host-local", "DEL", conf, container_id=c) for c in containers]
    assert [finish_plugin(p).code for p in procs] == [0] * 40
    assert leases(net_dir) == {}


@pytest.mark.parametrize("command", ["DEL", "CHECK", "STATUS"])
def test_a_request_only_add_can_use_does_not_block_other_commands(hl, make_conf, net_dir, leases, command):
    """The runtime repeats ADD's arguments on DEL; the ranges may have changed since."""
    hl("ADD", make_conf(), args="IP=10.0.0.50")
    moved = make_conf([["10.1.0.0/24"]])
    assert_error(hl("ADD", moved, container_id="c2", args="IP=10.0.0.50"), 7, "10.0.0.50 is in no configured range")
    result = hl(command, moved, args="IP=10.0.0.50", **({"container_id": None} if command == "STATUS" else {}))
    assert (result.code, result.raw) == (0, b""), result
    assert leases(net_dir) == ({} if command == "DEL" else {"10.0.0.50": "ctr1\r\neth0"})

"""Our loopback next to the reference one (Debian containernetworking-plugins 1.1.1, CNI up to
1.0.0): the same input gives the same result and the same kernel state, each plugin in a
container namespace of its own, both run from the same node namespace."""

import json
import subprocess

import pytest

from cni_bridge.cni import version
from loopback_rig import CONF, exec_in_node, lo, lo_is_up, without_ipv6

pytestmark = pytest.mark.privileged


@pytest.fixture
def pair(plugin_dir, reference_loopback, node, make_netns):
    """Two runs side by side: pair.run(command, conf) execs ours against pair.ours and the
    reference against pair.theirs (or both against the path `netns`), and returns both PluginRuns."""

    class Pair:
        ours, theirs = make_netns("ours"), make_netns("ref")

        def run(self, command, conf=None, netns=None):
            ours, theirs = (self.ours.path, self.theirs.path) if netns is None else (netns, netns)
            return (exec_in_node(plugin_dir / "loopback", node, command, ours, conf),
                    exec_in_node(reference_loopback, node, command, theirs, conf))

        def namespaces(self):
            return self.ours, self.theirs

    return Pair()


def reference_versions() -> list[str]:
    proc = subprocess.run(["/usr/lib/cni/loopback"], env={"CNI_COMMAND": "VERSION"}, input=b"{}", capture_output=True)
    supported = json.loads(proc.stdout)["supportedVersions"] if proc.returncode == 0 else []
    return [v for v in version.SUPPORTED_VERSIONS if v in supported]


def normalized(result: dict, netns_path: str) -> dict:
    """A result with its own sandbox path as a placeholder, and without the empty dns that Go's
    result type always writes (the spec makes dns optional; we leave an empty one out)."""
    result = json.loads(json.dumps(result).replace(json.dumps(netns_path), '"<sandbox>"'))
    if result.get("dns") == {}:
        del result["dns"]
    return result


def addresses(result: dict) -> list[str]:
    """The addresses of a result in any version's shape."""
    return [ip["address"] for ip in result.get("ips", [])] + [result[key]["ip"] for key in ("ip4", "ip6") if key in result]


def kernel_state(ns) -> dict:
    link = lo(ns)
    return {
        "flags": sorted(link["flags"]), "operstate": link["operstate"],
        "addresses": sorted((a["family"], a["local"], a["prefixlen"], a.get("scope")) for a in link["addr_info"]),
    }


@pytest.mark.parametrize("cni_version", [v for v in reference_versions() if version.at_least(v, "1.0.0")])
def test_same_result(pair, cni_version):
    ours, theirs = pair.run("ADD", {**CONF, "cniVersion": cni_version})
    assert ours.code == 0 and theirs.code == 0, (ours, theirs)
    assert normalized(ours.out, pair.ours.path) == normalized(theirs.out, pair.theirs.path)


@pytest.mark.parametrize("cni_version", [v for v in reference_versions() if not version.at_least(v, "1.0.0")])
def test_same_addresses_in_older_versions(pair, cni_version):
    """Below 1.0.0 the reference 1.1.1 writes its 1.0 result under the old version number (its
    result carries the config's version, so the converter sees nothing to convert); ours is in
    that version's shape (tests/unit/plugins/test_loopback.py). The addresses agree."""
    ours, theirs = pair.run("ADD", {**CONF, "cniVersion": cni_version})
    assert ours.code == 0 and theirs.code == 0, (ours, theirs)
    assert ours.out["cniVersion"] == theirs.out["cniVersion"] == cni_version
    assert addresses(ours.out) == addresses(theirs.out) == ["127.0.0.1/8", "::1/128"]


def test_same_kernel_state_after_add_and_del(pair):
    for command in ("ADD", "DEL", "DEL", "ADD"):
        ours, theirs = pair.run(command, {**CONF, "cniVersion": "1.0.0"})
        assert ours.code == 0 and theirs.code == 0, (command, ours, theirs)
        assert kernel_state(pair.ours) == kernel_state(pair.theirs), command
    assert lo_is_up(pair.ours)


def test_same_result_without_ipv6(pair):
    for ns in pair.namespaces():
        without_ipv6(ns)
    ours, theirs = pair.run("ADD", {**CONF, "cniVersion": "1.0.0"})
    assert normalized(ours.out, pair.ours.path) == normalized(theirs.out, pair.theirs.path)
    assert addresses(ours.out) == ["127.0.0.1/8"]


def test_same_prev_result_pass_through(pair):
    prev = {
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "eth0", "mac": "02:42:0a:b5:00:05", "sandbox": "/run/netns/lbk-pod"}],
        "ips": [{"interface": 0, "address": "10.181.0.5/24", "gateway": "10.181.0.1"}],
        "routes": [{"dst": "0.0.0.0/0", "gw": "10.181.0.1"}],
        "dns": {"nameservers": ["10.181.0.53"]},
    }
    ours, theirs = pair.run("ADD", {**CONF, "cniVersion": "1.0.0", "prevResult": prev})
    assert ours.code == 0 and theirs.code == 0, (ours, theirs)
    assert ours.out == theirs.out == prev
    assert lo_is_up(pair.ours) and lo_is_up(pair.theirs)


def test_same_check_outcome(pair):
    conf = {**CONF, "cniVersion": "1.0.0"}
    pair.run("ADD", conf)
    ours, theirs = pair.run("CHECK", conf)
    assert ours.code == theirs.code == 0, (ours, theirs)
    for ns in pair.namespaces():
        ns.ip("link", "set", "lo", "down")
    ours, theirs = pair.run("CHECK", conf)
    assert ours.code == theirs.code == 1, (ours, theirs)
    assert ours.out["code"] == theirs.out["code"] and ours.out["msg"] == theirs.out["msg"] == "loopback interface is down"


def test_same_refusal_of_a_non_loopback_address(pair):
    """Both refuse; the reference has set lo up by then and leaves it up, ours leaves it as it was."""
    for ns in pair.namespaces():
        ns.ip("addr", "add", "10.181.0.5/32", "dev", "lo")
    ours, theirs = pair.run("ADD", {**CONF, "cniVersion": "1.0.0"})
    assert ours.code == theirs.code == 1, (ours, theirs)
    assert ours.out["code"] == theirs.out["code"]
    assert theirs.out["msg"].startswith(ours.out["msg"]) and "10.181.0.5" in ours.out["details"]
    assert lo_is_up(pair.theirs) and not lo_is_up(pair.ours)


@pytest.mark.parametrize("netns", ["", "/run/netns/lbk-never-made"])
def test_same_del_of_a_netns_that_is_not_there(pair, netns):
    ours, theirs = pair.run("DEL", {**CONF, "cniVersion": "1.0.0"}, netns=netns)
    assert ours.code == theirs.code == 0, (ours, theirs)

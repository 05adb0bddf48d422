"""Every subcommand of `cni-bridge` against throwaway namespaces.

The command runs inside a node namespace (`ip netns exec cli-node-<random> cni-bridge ...`),
as a runtime on that node would; containers are namespaces made with `ip netns add`. Config
dir, cache dir and dataDir are the test's own. Every name starts with `cli`; subnets are in
10.180.0.0/16. What is left behind is read with independent tools: `ip -j`, `nft -j`, the
lease files, the cache dir.
"""

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from plugin_runner import lease_files, plugin_bin_dir

pytestmark = pytest.mark.privileged

REFERENCE = Path("/usr/lib/cni")


def sh(*cmd, check=True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, check=check, timeout=120, **kw)


@pytest.fixture
def netns_prefix() -> str:
    return "cli"


@pytest.fixture(scope="session")
def bin_dir(tmp_path_factory) -> Path:
    return plugin_bin_dir(tmp_path_factory.mktemp("cli-plugins"))


class Node:
    """A node namespace with its own config dir, cache dir and dataDir, and the command."""

    def __init__(self, make_netns, tmp: Path, bin_dir: Path):
        self.make_netns = make_netns
        self.ns = make_netns("node")
        self.tag = secrets.token_hex(3)
        self.bridge = f"clibr{self.tag}"
        self.network = f"clinet{self.tag}"
        self.conf_dir, self.cache_dir, self.data_dir = tmp / "net.d", tmp / "cache", tmp / "leases"
        self.conf_dir.mkdir()
        self.plugin_dir = tmp / "plugins"  # ours, plus what a test adds
        self.plugin_dir.mkdir()
        for entry in bin_dir.iterdir():
            (self.plugin_dir / entry.name).symlink_to(entry.resolve() if entry.name != ".cni-bridge" else entry)
        self.command = bin_dir / "cni-bridge"

    def write_conflist(self, *extra_plugins, cni_version="1.1.0", subnet="10.180.1.0/24", **bridge) -> dict:
        doc = {"cniVersion": cni_version, "name": self.network, "plugins": [
            {"type": "bridge", "bridge": self.bridge, "isGateway": True, "ipMasq": True, **bridge,
             "ipam": {"type": "host-local", "dataDir": str(self.data_dir), "ranges": [[{"subnet": subnet}]],
                      "routes": [{"dst": "0.0.0.0/0"}]}},
            *extra_plugins,
        ]}
        (self.conf_dir / f"10-{self.network}.conflist").write_text(json.dumps(doc, indent=2))
        return doc

    def run(self, *args) -> subprocess.CompletedProcess:
        """cni-bridge ARGS inside the node, with this node's dirs (given after the subcommand)."""
        dirs = ["--conf-dir", self.conf_dir, "--cache-dir", self.cache_dir, "--plugin-dir", self.plugin_dir]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CNI_", "NETCONFPATH"))}
        return sh("ip", "netns", "exec", self.ns.name, self.command, *args, *dirs, check=False, env=env)

    def ok(self, *args) -> str:
        res = self.run(*args)
        assert res.returncode == 0, (args, res.stdout, res.stderr)
        return res.stdout

    def ls(self) -> dict[str, dict]:
        return {row["containerId"]: row for row in json.loads(self.ok("ls", "--json"))}

    # -- what the kernel and the files say

    def veths(self) -> list[str]:
        return [link["ifname"] for link in self.ns.ip_json("link", "show", "type", "veth")]

    def leases(self) -> dict[str, str]:
        return lease_files(self.data_dir / self.network)

    def masq_comments(self) -> list[str]:
        res = sh("ip", "netns", "exec", self.ns.name, "nft", "-j", "list", "table", "inet", "cni_bridge", check=False)
        if res.returncode != 0:
            return []
        out = []
        for item in json.loads(res.stdout)["nftables"]:
            for elem in item.get("map", {}).get("elem", []):
                key = elem[0]
                out.append(key["elem"].get("comment", "") if isinstance(key, dict) else "")
        return out

    def cached(self) -> list[str]:
        results = self.cache_dir / "results"
        return sorted(os.listdir(results)) if results.is_dir() else []

    def assert_nothing_of(self, container_id: str) -> None:
        assert not [ip for ip, owner in self.leases().items() if owner.split()[0] == container_id], self.leases()
        assert f"{self.network}/{container_id}/eth0" not in self.masq_comments()
        assert not [c for c in self.cached() if c.startswith(f"{self.network}-{container_id}-")]


@pytest.fixture
def node(make_netns, tmp_path, bin_dir) -> Node:
    return Node(make_netns, tmp_path, bin_dir)


def test_add_check_status_ls_del(node, make_netns):
    node.write_conflist()
    c = make_netns("c")
    out = node.ok("add", node.network, c.name)
    result = json.loads(out)
    assert result["cniVersion"] == "1.1.0" and result["ips"][0]["address"] == "10.180.1.2/24"
    addrs = c.ip_json("-4", "addr", "show", "dev", "eth0")[0]["addr_info"]
    assert [(a["local"], a["prefixlen"]) for a in addrs] == [("10.180.1.2", 24)]
    assert len(node.veths()) == 1
    assert node.leases() == {"10.180.1.2": f"{c.name}\r\neth0"}  # the container id is the netns name
    assert node.cached() == [f"{node.network}-{c.name}-eth0"]

    assert node.ok("check", node.network, c.name) == f"{node.network} {c.name} eth0: ok\n"
    assert node.ok("status", node.network) == f"{node.network}: ready\n"
    row = node.ls()[c.name]
    assert row == {**row, "network": node.network, "ifname": "eth0", "netns": f"/run/netns/{c.name}", "addresses": ["10.180.1.2/24"],
                   "ports": [], "netnsPresent": True, "lease": True, "rules": True, "stale": False}
    table = node.ok("ls").splitlines()
    assert table[1].split() == [node.network, c.name[:12], "eth0", f"/run/netns/{c.name}", "10.180.1.2/24", "-", "ok"]

    node.ok("del", node.network, c.name)
    assert node.veths() == [] and c.link("eth0") is None
    node.assert_nothing_of(c.name)
    assert node.ls() == {}
    node.ok("del", node.network, c.name)  # again, as runtimes retry: still a success


def test_ls_shows_what_is_missing_and_gc_removes_stale_attachments(node, make_netns):
    node.write_conflist()
    live, doomed = make_netns("live"), make_netns("doomed")
    node.ok("add", node.network, live.name)
    node.ok("add", node.network, doomed.name)
    doomed.close()
    sh("ip", "netns", "del", doomed.name)

    rows = node.ls()
    assert rows[doomed.name]["stale"] is True and rows[doomed.name]["netnsPresent"] is False
    assert rows[live.name]["stale"] is False
    assert sorted(line.split()[-1] for line in node.ok("ls").splitlines()[1:]) == ["ok", "stale"]

    # our rules of the live one removed by hand: ls says so
    sh("ip", "netns", "exec", node.ns.name, "nft", "delete", "element", "inet", "cni_bridge", "pods4", "{ 10.180.1.2 }")
    assert node.ls()[live.name]["rules"] is False
    assert "missing rules" in node.ok("ls")

    out = node.ok("gc", node.network)
    assert f"removed stale {node.network} {doomed.name} eth0" in out
    node.assert_nothing_of(doomed.name)
    assert list(node.ls()) == [live.name]
    assert node.leases() == {"10.180.1.2": f"{live.name}\r\neth0"}
    assert len(node.veths()) == 1  # the live one's veth stays
    node.ok("del", node.network, live.name)
    assert node.veths() == [] and node.leases() == {}


def test_del_without_a_cache_entry_and_the_netns_gone(node, make_netns):
    """libcni: DEL still runs (without prevResult) when nothing was cached."""
    node.write_conflist()
    c = make_netns("c")
    node.ok("add", node.network, c.name)
    for entry in (node.cache_dir / "results").iterdir():
        entry.unlink()
    c.close()
    sh("ip", "netns", "del", c.name)
    node.ok("del", node.network, c.name)
    node.assert_nothing_of(c.name)
    assert node.veths() == []


def test_failed_add_is_undone(node, make_netns, tmp_path):
    failer = node.plugin_dir / "clifail"
    failer.write_text(f"#!{sys.executable}\n"
                      "import json, os, sys\n"
                      "cmd = os.environ['CNI_COMMAND']\n"
                      "if cmd == 'VERSION':\n"
                      "    print(json.dumps({'cniVersion': '1.1.0', 'supportedVersions': ['1.0.0', '1.1.0']}))\n"
                      "elif cmd == 'ADD':\n"
                      "    print(json.dumps({'cniVersion': '1.1.0', 'code': 7, 'msg': 'clifail refuses', 'details': 'by design'}))\n"
                      "    sys.exit(1)\n")
    failer.chmod(0o755)
    node.write_conflist({"type": "clifail"})
    c = make_netns("c")
    res = node.run("add", node.network, c.name)
    assert res.returncode == 1 and res.stdout == ""
    assert "plugin clifail failed (ADD): code 7: clifail refuses: by design" in res.stderr
    assert "undone with DEL, in reverse: clifail, bridge" in res.stderr
    assert node.veths() == [] and c.link("eth0") is None
    node.assert_nothing_of(c.name)


def test_a_plugin_that_does_not_speak_the_version_is_refused(node, make_netns):
    if not (REFERENCE / "portmap").exists():
        pytest.skip("reference portmap absent (containernetworking-plugins)")
    (node.plugin_dir / "portmap").unlink()  # ours speaks 1.1.0: the reference in its place
    (node.plugin_dir / "portmap").symlink_to(REFERENCE / "portmap")
    node.write_conflist({"type": "portmap", "capabilities": {"portMappings": True}}, cni_version="1.1.0")
    c = make_netns("c")
    res = node.run("add", node.network, c.name, "-p", "18100:80")
    assert res.returncode == 3, res
    assert "plugin portmap" in res.stderr and "'1.1.0'" in res.stderr and "1.0.0" in res.stderr
    assert node.veths() == [] and node.leases() == {} and node.cached() == []


def test_pid_target_and_explicit_id_and_ifname(node, make_netns):
    node.write_conflist(subnet="10.180.2.0/24")
    c = make_netns("c")
    sleeper = subprocess.Popen(["ip", "netns", "exec", c.name, "sleep", "60"])
    try:
        for _ in range(100):  # until the child has entered the netns
            if os.stat(f"/proc/{sleeper.pid}/ns/net").st_ino == c.inode:
                break
            subprocess.run(["sleep", "0.05"])
        result = json.loads(node.ok("add", node.network, f"pid:{sleeper.pid}"))
        assert result["interfaces"][2]["sandbox"] == f"/proc/{sleeper.pid}/ns/net"
        assert node.leases() == {"10.180.2.2": f"pid-{sleeper.pid}\r\neth0"}
        c2 = make_netns("c2")
        node.ok("add", node.network, c2.path, "--id", "cli-second", "--ifname", "net1")
        assert c2.link("net1") is not None and c2.link("eth0") is None
        assert set(node.ls()) == {f"pid-{sleeper.pid}", "cli-second"}
        node.ok("del", node.network, c2.name)  # the cache names the id and the ifname
        assert c2.link("net1") is None and c.link("eth0") is not None
        node.ok("del", node.network, f"pid:{sleeper.pid}")
        assert node.veths() == [] and node.leases() == {} and node.cached() == []
    finally:
        sleeper.kill()
        sleeper.wait()

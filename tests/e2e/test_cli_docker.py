"""The seeds' recipe in one command: a `docker run --network none` busybox container is
attached with `cni-bridge add mynet docker:NAME -p HOST:CONTAINER`, its published port is
reached from another namespace, and `cni-bridge del` leaves nothing behind.

The dockerd is the test's own (runtime_support.Dockerd). The command runs our bridge and
our portmap inside a node namespace (`ip netns exec cli-node-*`), so the bridge, the
veths, the masquerade and port mapping rules live there and never in the real host; an
"outside" namespace on a veth to the node stands for another machine. Config dir, cache
dir and dataDir are private.
"""

import json
import os
import secrets
import shutil
import subprocess
from pathlib import Path

import pytest

import runtime_support as rs
from runtime_support import dockerd, host_netfilter_restored  # noqa: F401  (fixtures)

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
HOST_PORT = 18180
SUBNET = "10.180.10.0/24"
NODE_ADDR, OUTSIDE_ADDR = "10.180.200.1", "10.180.200.2"
GET = rs.GET_WITH_RETRIES


def sh(*cmd, check=True, **kw) -> subprocess.CompletedProcess:
    res = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=120, **kw)
    if check:
        assert res.returncode == 0, (cmd, res.stdout, res.stderr)
    return res


class Site:
    """The node and outside namespaces, the command's dirs, and `mynet`."""

    def __init__(self, base: Path, bin_dir: Path, dockerd):
        tag = secrets.token_hex(3)
        self.node, self.outside = f"cli-node-{tag}", f"cli-out-{tag}"
        self.conf_dir, self.cache_dir, self.data_dir = base / "net.d", base / "cache", base / "leases"
        self.conf_dir.mkdir()
        self.plugins = base / "bin"
        shutil.copytree(bin_dir, self.plugins, symlinks=True)
        self.conflist = {
            "cniVersion": "1.1.0",
            "name": "mynet",
            "plugins": [
                {"type": "bridge", "bridge": "cli-br0", "isGateway": True, "ipMasq": True,
                 "ipam": {"type": "host-local", "dataDir": str(self.data_dir), "ranges": [[{"subnet": SUBNET}]],
                          "routes": [{"dst": "0.0.0.0/0"}]}},
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        }
        (self.conf_dir / "10-mynet.conflist").write_text(json.dumps(self.conflist, indent=2))
        # docker:NAME is resolved with the Debian docker client, talking to our dockerd
        self.env = {k: v for k, v in dockerd.env.items() if not k.startswith(("CNI_", "NETCONFPATH"))}
        self.env.update(DOCKER_HOST=f"unix://{dockerd.sock}", PATH=f"/usr/bin:{self.env.get('PATH', '/bin')}")

    def up(self) -> None:
        sh("ip", "netns", "add", self.node)
        sh("ip", "netns", "add", self.outside)
        sh("ip", "-n", self.node, "link", "set", "lo", "up")
        sh("ip", "-n", self.node, "link", "add", "cli-up0", "type", "veth", "peer", "name", "eth0", "netns", self.outside)
        sh("ip", "-n", self.node, "addr", "add", f"{NODE_ADDR}/24", "dev", "cli-up0")
        sh("ip", "-n", self.node, "link", "set", "cli-up0", "up")
        sh("ip", "-n", self.outside, "addr", "add", f"{OUTSIDE_ADDR}/24", "dev", "eth0")
        sh("ip", "-n", self.outside, "link", "set", "eth0", "up")

    def down(self) -> None:
        for ns in (self.outside, self.node):
            sh("ip", "netns", "del", ns, check=False)

    def cni_bridge(self, *args, check=True) -> subprocess.CompletedProcess:
        dirs = ["--conf-dir", self.conf_dir, "--cache-dir", self.cache_dir]
        return sh("ip", "netns", "exec", self.node, self.plugins / "cni-bridge", *dirs, *args, check=check, env=self.env)

    def in_node(self, *cmd) -> str:
        return sh("ip", "netns", "exec", self.node, *cmd).stdout


@pytest.fixture(scope="module")
def site(dockerd, tmp_path_factory):
    src = Path(os.environ.get("CNI_BRIDGE_BIN") or ROOT / "build" / "bin")
    if not (src / "cni-bridge").exists():
        pytest.skip(f"{src}/cni-bridge is missing: run scripts/build first")
    if not (src / "portmap").exists():
        pytest.skip(f"{src}/portmap is missing: run scripts/build first")
    s = Site(tmp_path_factory.mktemp("cli-docker"), src, dockerd)
    try:
        s.up()
        yield s
    finally:
        s.down()  # the bridge, veths, nftables and iptables state of the node go with it


def test_seed_recipe_add_publish_del(dockerd, site):
    name = f"web{secrets.token_hex(3)}"
    cid = dockerd("run", "-d", "--network", "none", "--name", name, rs.DOCKER_IMAGE,
                  "httpd", "-f", "-p", "80", "-h", "/www")
    netns = dockerd("inspect", "-f", "{{.NetworkSettings.SandboxKey}}", cid)
    try:
        res = site.cni_bridge("add", "mynet", f"docker:{name}", "-p", f"{HOST_PORT}:80")
        result = json.loads(res.stdout)
        ip = result["ips"][0]["address"].split("/")[0]
        assert result["ips"][0]["address"] == "10.180.10.2/24"
        # docker sees the address inside the container
        assert ip in dockerd("exec", name, "ip", "-4", "addr", "show", "eth0")
        # the attachment is the docker container's, at its SandboxKey, in libcni's cache
        cached = json.loads((site.cache_dir / "results" / f"mynet-{cid}-eth0").read_text())
        assert cached["containerId"] == cid and cached["netns"] == netns
        assert cached["capabilityArgs"] == {"portMappings": [{"hostPort": HOST_PORT, "containerPort": 80, "protocol": "tcp"}]}

        # the published port, from another namespace, through the node's address
        got = sh("ip", "netns", "exec", site.outside, "python3", "-c", GET, f"http://{NODE_ADDR}:{HOST_PORT}/")
        assert got.stdout == rs.INDEX
        # and the container straight from the node, and through the node's 127.0.0.1
        assert sh("ip", "netns", "exec", site.node, "python3", "-c", GET, f"http://{ip}:80/").stdout == rs.INDEX
        got = sh("ip", "netns", "exec", site.node, "python3", "-c", GET, f"http://127.0.0.1:{HOST_PORT}/")
        assert got.stdout == rs.INDEX

        [row] = json.loads(site.cni_bridge("ls", "--json").stdout)
        assert row == {**row, "network": "mynet", "containerId": cid, "netns": netns, "addresses": [f"{ip}/24"],
                       "ports": [f"{HOST_PORT}:80/tcp"], "netnsPresent": True, "lease": True, "rules": True,
                       "stale": False}
        site.cni_bridge("check", "mynet", f"docker:{name}")
        assert f"{HOST_PORT}" in site.in_node("nft", "list", "map", "inet", "cni_bridge", "portmap-any4")

        site.cni_bridge("del", "mynet", f"docker:{name}")
        # nothing left: no interface in the container, no veth on the node, no lease, no rule
        assert len(dockerd("exec", name, "ip", "-o", "link").splitlines()) == 1  # lo alone
        veths = [link["ifname"] for link in json.loads(site.in_node("ip", "-j", "link", "show", "type", "veth"))]
        assert veths == ["cli-up0"]  # the link to the outside namespace alone
        assert [p.name for p in (site.data_dir / "mynet").iterdir()
                if p.name != "lock" and not p.name.startswith("last_reserved_ip")] == []
        table = site.in_node("nft", "list", "table", "inet", "cni_bridge")
        assert ip not in table and str(HOST_PORT) not in table
        assert list((site.cache_dir / "results").iterdir()) == []
        assert json.loads(site.cni_bridge("ls", "--json").stdout) == []
        got = sh("ip", "netns", "exec", site.outside, "python3", "-c", GET,
                 f"http://{NODE_ADDR}:{HOST_PORT}/", "1", check=False)
        assert got.returncode != 0
    finally:
        site.cni_bridge("del", "mynet", f"docker:{name}", check=False)
        dockerd("rm", "--force", name, check=False)


def test_del_after_docker_removed_the_container(dockerd, site):
    """`docker rm -f` first, as after a crash: the attachment is stale, gc removes it."""
    name = f"gone{secrets.token_hex(3)}"
    cid = dockerd("run", "-d", "--network", "none", "--name", name, rs.DOCKER_IMAGE, "sleep", "600")
    try:
        site.cni_bridge("add", "mynet", f"docker:{name}")
    finally:
        dockerd("rm", "--force", name, check=False)
    [row] = json.loads(site.cni_bridge("ls", "--json").stdout)
    assert row["containerId"] == cid and row["stale"] is True
    assert "stale" in site.cni_bridge("ls").stdout
    out = site.cni_bridge("gc", "mynet").stdout
    assert f"removed stale mynet {cid} eth0" in out
    assert json.loads(site.cni_bridge("ls", "--json").stdout) == []
    assert [p.name for p in (site.data_dir / "mynet").iterdir()
            if p.name != "lock" and not p.name.startswith("last_reserved_ip")] == []

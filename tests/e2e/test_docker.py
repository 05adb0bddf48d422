"""Docker containers networked by OUR bridge plugin, the way README shows: a private dockerd
(Debian's docker.io) runs two `--network none` containers, and build/bin/bridge is run with
CNI_COMMAND=ADD into each container's netns (docker's SandboxKey), then DEL.

The dockerd is the test's own (its data root, exec root, socket, pid file and config in a
temp dir; no docker0, no iptables, no ip_forward changes), started and stopped here; the
Debian client /usr/bin/docker is called by full path (a newer client in /usr/local/bin
shadows it). The plugins run inside a throwaway "node" namespace, as a runtime in it would
run them: the bridge, the routes and our nftables table live there and go with it, and the
host's own are never touched. The containers' namespaces are docker's.
"""

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from ipaddress import ip_address, ip_interface
from pathlib import Path

import pytest

import runtime_support as rs
from runtime_support import dockerd  # noqa: F401  (fixture: a private dockerd)
from runtime_support import masq_elements, sh

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
IMAGE = rs.DOCKER_IMAGE
PORT = 8080


SUBNET = ip_interface("10.185.7.0/24").network
HTTP_GET = "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode(), end='')"


class Network:
    """Our bridge plugin as a runtime in the node namespace runs it."""

    def __init__(self, base: Path, plugins: Path, tag: str, node: str):
        self.plugins, self.subnet, self.node = plugins, SUBNET, node
        self.in_node = ["nsenter", f"--net=/run/netns/{node}"]
        self.name, self.bridge = f"cnibdk{tag}", f"cnibd{tag}"
        self.gateway = str(self.subnet.network_address + 1)
        self.data_dir = base / "leases"
        self.conf = {
            "cniVersion": "1.1.0", "name": self.name, "type": "bridge", "bridge": self.bridge,
            "isGateway": True, "ipMasq": True,
            "ipam": {"type": "host-local", "dataDir": str(self.data_dir),
                     "ranges": [[{"subnet": str(self.subnet)}]], "routes": [{"dst": "0.0.0.0/0"}]},
        }

    def exec(self, command: str, container_id: str, netns: str, prev: dict | None = None):
        env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
        env.update(CNI_COMMAND=command, CNI_CONTAINERID=container_id, CNI_NETNS=netns,
                   CNI_IFNAME="eth0", CNI_PATH=str(self.plugins))
        conf = dict(self.conf, prevResult=prev) if prev else self.conf
        return subprocess.run([*self.in_node, str(self.plugins / "bridge")], env=env, input=json.dumps(conf).encode(),
                              capture_output=True, timeout=60)

    def sh(self, *cmd):
        """A command on the node."""
        return sh(*self.in_node, *cmd)

    def ports(self) -> list:
        return json.loads(self.sh("ip", "-j", "link", "show", "master", self.bridge).stdout or "[]")

    def masquerade(self) -> list[tuple[str, str]]:
        return [e for e in masq_elements(self.in_node) if e[1].startswith(f"{self.name}/")]

    def run(self, command: str, container_id: str, netns: str, prev: dict | None = None):
        proc = self.exec(command, container_id, netns, prev)
        assert proc.returncode == 0, f"{command} {container_id}: {proc.stdout.decode()} {proc.stderr.decode()}"
        return json.loads(proc.stdout) if proc.stdout.strip() else None

    def leases(self) -> dict[str, bytes]:
        d = self.data_dir / self.name
        if not d.is_dir():
            return {}
        return {p.name: p.read_bytes() for p in d.iterdir() if p.name != "lock" and not p.name.startswith("last_reserved_ip")}


@pytest.fixture(scope="module")
def net(dockerd, tmp_path_factory):
    src = Path(os.environ.get("CNI_BRIDGE_BIN") or ROOT / "build" / "bin")
    if not (src / "bridge").exists():
        pytest.skip(f"{src}/bridge is missing: run scripts/build first")
    base = tmp_path_factory.mktemp("dockernet")
    plugins = base / "bin"
    shutil.copytree(src, plugins, symlinks=True)
    tag = secrets.token_hex(3)
    node = f"cnibdk-node-{tag}"
    subprocess.run(["ip", "netns", "add", node], check=True)
    try:
        subprocess.run(["ip", "-n", node, "link", "set", "lo", "up"], check=True)
        network = Network(base, plugins, tag, node)
        network.attached = {}  # role -> (container id, netns path)
        yield network
        for cid, netns in network.attached.values():  # DEL whatever a failed test left
            try:
                network.run("DEL", cid, netns)
            except AssertionError:
                pass
    finally:
        subprocess.run(["ip", "netns", "del", node], check=False)  # the bridge and our table go with it


@pytest.fixture(scope="module")
def containers(dockerd, net):
    """`web` (busybox httpd) and `client`, started with --network none, then ADDed to our bridge."""
    out = {}
    for role, cmd in (("web", ["httpd", "-f", "-p", str(PORT), "-h", "/www"]), ("client", ["sleep", "600"])):
        name = f"{role}{net.name[-6:]}"
        cid = dockerd("run", "-d", "--network", "none", "--name", name, IMAGE, *cmd)
        netns = dockerd("inspect", "-f", "{{.NetworkSettings.SandboxKey}}", cid)
        assert netns and os.path.exists(netns), netns
        net.attached[role] = (cid, netns)
        result = net.run("ADD", cid, netns)
        out[role] = {"name": name, "id": cid, "netns": netns, "result": result,
                     "ip": str(ip_interface(result["ips"][0]["address"]).ip)}
    return out


def is_mounted(path: str) -> bool:
    return any(line.split()[1] == path for line in Path("/proc/mounts").read_text().splitlines())


def in_netns(netns: str, *cmd) -> str:
    res = sh("nsenter", f"--net={netns}", *cmd)
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_add_wired_the_containers(dockerd, net, containers):
    for role, c in containers.items():
        result = c["result"]
        assert result["cniVersion"] == "1.1.0"
        assert ip_address(c["ip"]) in net.subnet and result["ips"][0]["gateway"] == net.gateway
        # what the container's netns really holds (seen with ip, not through the plugin)
        links = json.loads(in_netns(c["netns"], "ip", "-j", "-4", "addr", "show", "dev", "eth0"))
        assert [f"{a['local']}/{a['prefixlen']}" for a in links[0]["addr_info"]] == [f"{c['ip']}/24"]
        routes = json.loads(in_netns(c["netns"], "ip", "-j", "-4", "route", "show", "default"))
        assert [r["gateway"] for r in routes] == [net.gateway]
        # and docker sees the same address from inside the container
        assert c["ip"] in dockerd("exec", c["name"], "ip", "-4", "addr", "show", "eth0")
    assert net.leases() == {c["ip"]: f"{c['id']}\r\neth0".encode() for c in containers.values()}
    assert dict(net.masquerade()) == {c["ip"]: f"{net.name}/{c['id']}/eth0" for c in containers.values()}


def test_check_passes(net, containers):
    for c in containers.values():
        net.run("CHECK", c["id"], c["netns"], prev=c["result"])


def test_traffic_host_and_containers(dockerd, net, containers):
    web, client = containers["web"], containers["client"]
    for c in containers.values():  # node -> containers
        assert net.sh("ping", "-c", "1", "-W", "2", c["ip"]).returncode == 0, c["ip"]
    assert net.sh(sys.executable, "-c", HTTP_GET, f"http://{web['ip']}:{PORT}/").stdout == rs.INDEX
    # container -> container and container -> host (the gateway on our bridge)
    dockerd("exec", client["name"], "ping", "-c", "1", "-W", "2", web["ip"])
    dockerd("exec", web["name"], "ping", "-c", "1", "-W", "2", client["ip"])
    dockerd("exec", client["name"], "ping", "-c", "1", "-W", "2", net.gateway)
    # busybox wget -T segfaults (1.35): bound it with timeout instead
    body = dockerd("exec", client["name"], "timeout", "10", "wget", "-q", "-O", "-", f"http://{web['ip']}:{PORT}/")
    assert body == rs.INDEX.strip()


def test_del_leaves_nothing(dockerd, net, containers):
    for role, c in containers.items():
        net.run("DEL", c["id"], c["netns"])
        del net.attached[role]
        assert [link["ifname"] for link in json.loads(in_netns(c["netns"], "ip", "-j", "link", "show"))] == ["lo"]
        net.run("DEL", c["id"], c["netns"])  # again, as runtimes retry: still success
    assert net.ports() == []
    assert net.leases() == {}
    assert net.masquerade() == []
    # the containers run on, unplugged
    assert "eth0" not in dockerd("exec", containers["client"]["name"], "ip", "link")
    assert net.sh("ping", "-c", "1", "-W", "1", containers["web"]["ip"]).returncode != 0
    for c in containers.values():
        dockerd("rm", "--force", c["name"])


def test_del_after_the_container_is_gone(dockerd, net):
    """The runtime's usual order on a crash or `docker rm -f`: the netns is gone by DEL time.
    DEL must still succeed and release what the attachment held (lease, masquerade element)."""
    name = f"gone{net.name[-6:]}"
    cid = dockerd("run", "-d", "--network", "none", "--name", name, IMAGE, "sleep", "600")
    netns = dockerd("inspect", "-f", "{{.NetworkSettings.SandboxKey}}", cid)
    net.attached["gone"] = (cid, netns)
    result = net.run("ADD", cid, netns)
    ip = str(ip_interface(result["ips"][0]["address"]).ip)
    assert net.leases() == {ip: f"{cid}\r\neth0".encode()}
    dockerd("rm", "--force", name)
    # dockerd unmounts the netns but leaves the (now empty, plain) file behind for a while:
    # CNI_NETNS names a path that exists and is no netns, as a runtime's late DEL sees it.
    for _ in range(100):
        if not is_mounted(netns):
            break
        time.sleep(0.1)
    assert not is_mounted(netns), "dockerd kept the netns of a removed container"
    proc = net.exec("DEL", cid, netns)
    del net.attached["gone"]
    # SPEC: DEL succeeds when what it would remove is already gone. (The reference bridge
    # fails here with 999 "unknown FS magic" and keeps the lease.)
    assert proc.returncode == 0, proc.stdout
    assert net.leases() == {}
    assert net.masquerade() == []
    assert net.ports() == []
    net.run("DEL", cid, "")  # no netns at all (spec: DEL may be called with CNI_NETNS empty)

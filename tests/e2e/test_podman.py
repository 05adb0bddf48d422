"""podman 4 with its CNI backend runs OUR bridge, host-local and portmap (firewall and
tuning chained after them are the reference ones, as in podman's own default conflist).

The plugin dir is made by scripts/install (drop-in, from a private copy of build/bin).
Everything podman keeps is private to the test: CONTAINERS_CONF, --root/--runroot (vfs),
tmp_dir, the network config dir holding one conflist, the leases' dataDir. The image is a
busybox rootfs made here and `podman import`ed (no registry).

podman runs inside a node namespace (`nsenter --net=/run/netns/pm-node-*`), so the bridge,
the veths, the masquerade and port mappings live there and go with it; an "outside"
namespace on a veth to the node stands for another machine. Teardown removes the
containers, podman's storage and its libcni result cache files, even after a failure.
"""

import json
import os
import secrets
import shutil
import sys
from ipaddress import ip_address, ip_network
from pathlib import Path

import pytest

import runtime_support as rs
from cni_bridge.nft import portmap
from runtime_support import sh

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
IMAGE = rs.PODMAN_IMAGE
CONTAINER_PORT = 8080
HOST_PORT = 18360
SUBNET = ip_network("10.182.210.0/24")
NODE_ADDR, OUTSIDE_ADDR = "10.182.211.1", "10.182.211.2"
LIBCNI_CACHE = Path("/var/lib/cni/results")
CONTAINERS_CACHE = Path("/var/lib/containers")  # podman import writes a blob cache here
MASQ_SETS = ("pods4", "pods6")  # the bridge's masquerade: one element per pod address


class Node:
    """The namespace podman and the plugins run in, and an outside machine on a veth to it."""

    def __init__(self, tag: str):
        self.name, self.outside = f"pm-node-{tag}", f"pm-out-{tag}"
        self.path = f"/run/netns/{self.name}"

    def up(self) -> None:
        for ns in (self.name, self.outside):
            assert sh("ip", "netns", "add", ns).returncode == 0
        for command in (["-n", self.name, "link", "set", "lo", "up"],
                        ["-n", self.name, "link", "add", "pmup0", "type", "veth", "peer", "name", "eth0", "netns",
                         self.outside],
                        ["-n", self.name, "addr", "add", f"{NODE_ADDR}/24", "dev", "pmup0"],
                        ["-n", self.name, "link", "set", "pmup0", "up"],
                        ["-n", self.outside, "addr", "add", f"{OUTSIDE_ADDR}/24", "dev", "eth0"],
                        ["-n", self.outside, "link", "set", "eth0", "up"]):
            res = sh("ip", *command)
            assert res.returncode == 0, res.stderr

    def down(self) -> None:
        for ns in (self.outside, self.name):
            sh("ip", "netns", "del", ns)

    def run(self, *cmd) -> str:
        res = sh("nsenter", f"--net={self.path}", *cmd)
        assert res.returncode == 0, (cmd, res.stderr)
        return res.stdout

    def get(self, url: str, outside: bool = False) -> str:
        """GET from the node (or from the outside machine); "" when it failed."""
        where = f"/run/netns/{self.outside}" if outside else self.path
        res = sh("nsenter", f"--net={where}", sys.executable, "-c", rs.GET_WITH_RETRIES, url)
        return res.stdout if res.returncode == 0 else ""

    def table(self) -> list[dict]:
        res = sh("nsenter", f"--net={self.path}", "nft", "-j", "list", "table", "inet", "cni_bridge")
        return json.loads(res.stdout)["nftables"] if res.returncode == 0 else []

    def elements(self, *names: str) -> list[tuple]:
        """(key, comment) of the elements of these sets and maps of our table."""
        found = []
        for item in self.table():
            body = item.get("map") or item.get("set")
            if not body or body["name"] not in names:
                continue
            for elem in body.get("elem", []):
                key = elem[0] if isinstance(elem, list) else elem
                if isinstance(key, dict) and "elem" in key:  # one with a comment
                    found.append((json.dumps(key["elem"]["val"]), key["elem"].get("comment", "")))
                else:
                    found.append((json.dumps(key), ""))
        return found


@pytest.fixture(scope="module")
def node():
    node = Node(secrets.token_hex(3))
    try:
        node.up()
        yield node
    finally:
        node.down()  # its bridge, veths, nftables and iptables state go with it


@pytest.fixture(scope="module")
def pm(tmp_path_factory, node):
    rs.require_podman()
    src = Path(os.environ.get("CNI_BRIDGE_BIN") or ROOT / "build" / "bin")
    if not (src / "bridge").exists() or not (src / "portmap").exists():
        pytest.skip(f"{src} lacks bridge or portmap: run scripts/build first")
    base = tmp_path_factory.mktemp("podman")
    # the plugin dir podman uses is made by scripts/install (drop-in) from a private copy
    build = base / "build"
    shutil.copytree(src, build, symlinks=True)
    plugins = base / "opt-cni-bin"
    res = sh(ROOT / "scripts" / "install", plugins, "--bin-dir", "", env={**os.environ, "CNI_BRIDGE_BIN": str(build)},
             timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    had_containers_cache = CONTAINERS_CACHE.exists()
    new_libcni_dirs = [d for d in rs.LIBCNI_DIRS if not d.exists()]  # deepest first
    podman = rs.Podman(base, plugins, secrets.token_hex(3), SUBNET, network_prefix="pmpod", bridge_prefix="pmpb",
                       exec_prefix=["nsenter", f"--net={node.path}"])
    try:
        rs.build_tarball(base / "rootfs.tar")
        res = sh(*podman.exec_prefix, "podman", "--root", podman.root, "--runroot", podman.runroot,
                 "--storage-driver", "vfs", "info", env=podman.env)
        if res.returncode != 0:
            pytest.skip(f"podman cannot run here: {res.stderr.strip()[-300:]}")
        podman("import", base / "rootfs.tar", IMAGE)
        yield podman
    finally:
        _teardown(podman, had_containers_cache, new_libcni_dirs)


def _teardown(podman: rs.Podman, had_containers_cache: bool, new_libcni_dirs: list[Path]) -> None:
    podman("rm", "--all", "--force", "--time", "0", check=False, timeout=180)
    # podman's own netns files of our containers, if a removal failed half way
    for path in podman.sandboxes.values():
        if path and os.path.exists(path):
            sh("umount", path)
            with_suppressed(os.unlink, path)
    for cached in LIBCNI_CACHE.glob(f"{podman.network}-*"):
        cached.unlink()
    for directory in new_libcni_dirs:  # podman's libcni made them; only if it left them empty
        with_suppressed(os.rmdir, directory)
    # storage: unmount whatever podman left mounted under our dirs, then remove them
    rs.unmount_under(podman.base)
    for d in (podman.root, podman.runroot):
        shutil.rmtree(d, ignore_errors=True)
    if not had_containers_cache:
        shutil.rmtree(CONTAINERS_CACHE, ignore_errors=True)


def with_suppressed(fn, *args):
    try:
        fn(*args)
    except OSError:
        pass


@pytest.fixture(scope="module")
def running(pm):
    """Two containers on our network: `web` (busybox httpd, port published) and `client`."""
    pm("run", "-d", "--name", f"web{pm.tag}", "--network", pm.network, "-p", f"{HOST_PORT}:{CONTAINER_PORT}",
       IMAGE, "httpd", "-f", "-p", str(CONTAINER_PORT), "-h", "/www")
    pm("run", "-d", "--name", f"client{pm.tag}", "--network", pm.network, IMAGE, "sleep", "600")
    names = {"web": f"web{pm.tag}", "client": f"client{pm.tag}"}
    for role, name in names.items():
        pm.sandboxes[role] = pm("inspect", "-f", "{{.NetworkSettings.SandboxKey}}", name)
    ips = {role: pm.ip_of(name) for role, name in names.items()}
    ids = {role: pm("inspect", "-f", "{{.Id}}", name) for role, name in names.items()}
    return {"names": names, "ips": ips, "ids": ids}


def test_containers_are_on_our_bridge(pm, node, running):
    ips = running["ips"]
    for role, ip in ips.items():
        assert ip and ip_address(ip) in pm.subnet, (role, ip)
    assert ips["web"] != ips["client"]
    # addresses came from our host-local: leases in the conflist's dataDir, reference format
    leases = {p.name: p.read_bytes() for p in (pm.data_dir / pm.network).iterdir()
              if p.name != "lock" and not p.name.startswith("last_reserved_ip")}
    assert leases == {ips[r]: f"{running['ids'][r]}\r\neth0".encode() for r in ips}
    # two host veths on our bridge, the gateway address on it, a masquerade element each
    ports = json.loads(node.run("ip", "-j", "-d", "link", "show", "master", pm.bridge))
    assert sorted(p["linkinfo"]["info_kind"] for p in ports) == ["veth", "veth"]
    assert all(p["linkinfo"]["info_slave_data"]["hairpin"] for p in ports)
    addr = json.loads(node.run("ip", "-j", "-4", "addr", "show", "dev", pm.bridge))[0]["addr_info"]
    assert [(a["local"], a["prefixlen"]) for a in addr] == [(pm.gateway, 24)]
    ours = {json.loads(key): comment for key, comment in node.elements(*MASQ_SETS)}
    assert ours == {ips[r]: f"{pm.network}/{running['ids'][r]}/eth0" for r in ips}


def test_containers_reach_each_other_and_the_node(pm, running):
    client, web_ip = running["names"]["client"], running["ips"]["web"]
    pm("exec", client, "ping", "-c", "1", "-W", "2", web_ip)
    pm("exec", client, "ping", "-c", "1", "-W", "2", pm.gateway)  # the node's side of the bridge
    # busybox wget -T segfaults (1.35): bound it with timeout instead
    body = pm("exec", client, "timeout", "10", "wget", "-q", "-O", "-", f"http://{web_ip}:{CONTAINER_PORT}/")
    assert body == rs.INDEX.strip()
    web = running["names"]["web"]
    pm("exec", web, "ping", "-c", "1", "-W", "2", running["ips"]["client"])


def test_node_reaches_the_containers(pm, node, running):
    for ip in running["ips"].values():
        node.run("ping", "-c", "1", "-W", "2", ip)
    assert node.get(f"http://{running['ips']['web']}:{CONTAINER_PORT}/") == rs.INDEX


def test_published_port_through_our_portmap(pm, node, running):
    """-p HOST:8080, chained after our bridge's result: from another machine, from the node
    (its address and 127.0.0.1), from the other container (through the node's address)."""
    mapped = [(json.loads(key), comment) for key, comment in node.elements("portmap-any4")]
    assert mapped == [({"concat": ["tcp", HOST_PORT]}, f"{pm.network}/{running['ids']['web']}/eth0")]
    assert node.get(f"http://{NODE_ADDR}:{HOST_PORT}/", outside=True) == rs.INDEX
    assert node.get(f"http://127.0.0.1:{HOST_PORT}/") == rs.INDEX
    assert node.get(f"http://{NODE_ADDR}:{HOST_PORT}/") == rs.INDEX
    client = running["names"]["client"]
    body = pm("exec", client, "timeout", "10", "wget", "-q", "-O", "-", f"http://{NODE_ADDR}:{HOST_PORT}/")
    assert body == rs.INDEX.strip()


def test_restart_reattaches(pm, node, running):
    """`podman restart`: DEL then ADD for the same container id; one lease, one element."""
    client = running["names"]["client"]
    pm("restart", "--time", "0", client)
    ip = pm.ip_of(client)
    running["ips"]["client"] = ip
    leases = {p.name: p.read_bytes() for p in (pm.data_dir / pm.network).iterdir()
              if p.name != "lock" and not p.name.startswith("last_reserved_ip")}
    assert sorted(leases) == sorted(running["ips"].values())
    assert leases[ip] == f"{running['ids']['client']}\r\neth0".encode()
    assert sorted(json.loads(key) for key, _ in node.elements(*MASQ_SETS)) == sorted(running["ips"].values())
    pm("exec", client, "ping", "-c", "1", "-W", "2", running["ips"]["web"])
    ports = json.loads(node.run("ip", "-j", "link", "show", "master", pm.bridge))
    assert len(ports) == 2


def test_removal_leaves_nothing(pm, node, running):
    pm("rm", "--force", "--time", "0", *running["names"].values(), timeout=180)
    assert pm("ps", "-a", "-q") == ""
    # no veth on our bridge, no lease, no masquerade or port mapping element, no netns
    assert json.loads(node.run("ip", "-j", "link", "show", "master", pm.bridge) or "[]") == []
    leases = [p.name for p in (pm.data_dir / pm.network).iterdir()
              if p.name != "lock" and not p.name.startswith("last_reserved_ip")]
    assert leases == []
    assert node.elements(*MASQ_SETS) == [] and node.elements(*portmap.SETS) == []
    saved = node.run("iptables-save")  # the reference firewall's rules
    for ip in running["ips"].values():
        assert f"{ip}/32" not in saved and f"{ip}:" not in saved, ip
    assert node.get(f"http://{NODE_ADDR}:{HOST_PORT}/", outside=True) == ""
    for path in pm.sandboxes.values():
        assert not os.path.exists(path), path
    assert not list(LIBCNI_CACHE.glob(f"{pm.network}-*"))

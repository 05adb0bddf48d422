"""Every example config in conf/ works: ADD as a runtime runs it, traffic, CHECK, DEL, nothing left.

For each file in conf/ (a single config or a conflist), the plugins are run the way libcni
runs a list, by the runtime module of the cni-bridge command (cni_bridge/cli/runtime.py):
in order for ADD, each getting the list's name and cniVersion and the previous plugin's
result as prevResult; in reverse order for DEL (and in order for CHECK, from 0.4.0 on)
with the cached final result as prevResult. `bridge`, `host-local`, `loopback` and
`portmap` are ours (a private copy of build/bin, first in CNI_PATH); `firewall` and
`tuning` come from the reference plugins in /usr/lib/cni. Capabilities get runtimeConfig
as libcni would inject it (a port mapping for `portMappings`), and a published port is
reached through the host's 127.0.0.1 and the gateway address.

Everything happens in a throwaway "host" netns (`ip netns exec`) with a throwaway
container netns, both named e2ec-*; bridge names, subnets and dataDir are rewritten to
test values. The real host's netns, nftables and /var/lib/cni are not touched.
"""

import ipaddress
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import runtime_support as rs

from cni_bridge.cli.runtime import NetworkList, Runtime, RuntimeConf, RuntimeFailure
from plugin_runner import lease_files

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = ROOT / "conf"
REFERENCE = Path("/usr/lib/cni")
CONFS = sorted(p for p in CONF_DIR.iterdir() if p.suffix in (".conf", ".conflist", ".json"))
HOST_PORT = 18080
CONTAINER_PORT = 8080


def sh(*cmd, check=True, timeout=60) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, check=check, timeout=timeout)


@pytest.fixture(scope="module", autouse=True)
def _root():
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")
    if not (REFERENCE / "loopback").exists():
        pytest.skip("reference plugins absent (Debian package containernetworking-plugins)")


@pytest.fixture(scope="module")
def our_bin(tmp_path_factory) -> Path:
    src = Path(os.environ.get("CNI_BRIDGE_BIN") or ROOT / "build" / "bin")
    if not (src / "bridge").exists():
        pytest.skip(f"{src}/bridge is missing: run scripts/build first")
    copy = tmp_path_factory.mktemp("bin") / "bin"
    shutil.copytree(src, copy, symlinks=True)
    return copy


@pytest.fixture
def netns_pair():
    tag = secrets.token_hex(3)
    host, ctr = f"e2ec-h-{tag}", f"e2ec-c-{tag}"
    made = []
    try:
        for name in (host, ctr):
            sh("ip", "netns", "add", name)
            made.append(name)
        sh("ip", "-n", host, "link", "set", "lo", "up")
        yield host, ctr, tag
    finally:
        for name in reversed(made):
            sh("ip", "netns", "del", name, check=False)


def test_every_conf_file_is_covered():
    names = {p.name for p in CONFS}
    assert {"10-bridge-kubelet.conflist", "87-podman-cni.conflist", "two-namespaces.conf",
            "flannel-delegate.conf"} <= names
    assert names == {p.name for p in CONF_DIR.iterdir() if p.is_file()}, "a file in conf/ is not exercised"


# ---- the network, as the runtime module runs it ------------------------------------------


def load_list(path: Path) -> tuple[str, str, list[dict]]:
    """(name, cniVersion, plugin configs) of a config or conflist file."""
    doc = json.loads(path.read_text())
    if "plugins" in doc:
        return doc["name"], doc.get("cniVersion", "0.1.0"), [dict(p) for p in doc["plugins"]]
    return doc["name"], doc.get("cniVersion", "0.1.0"), [{k: v for k, v in doc.items() if k not in ("name", "cniVersion")}]


def rewrite(plugins: list[dict], tag: str, index: int, data_dir: Path) -> list[dict]:
    """Test values for what could collide: bridge name, subnets (10.213.2xx.0/24), dataDir."""
    out = []
    for plugin in plugins:
        plugin = json.loads(json.dumps(plugin))
        if plugin["type"] == "bridge":
            plugin["bridge"] = f"e2ec{tag}"
            ipam = plugin.get("ipam", {})
            if ipam.get("type") == "host-local":
                ipam["dataDir"] = str(data_dir)
                ranges = ipam.get("ranges") or [[ipam]]
                for n, rng in enumerate(r for rs in ranges for r in rs):
                    old = ipaddress.ip_network(rng["subnet"], strict=False)
                    new = ipaddress.ip_network(f"10.213.{200 + 10 * index + n}.0/{max(old.prefixlen, 24)}")
                    rng["subnet"] = str(new)
                    for key in ("gateway", "rangeStart", "rangeEnd"):
                        if key in rng:
                            offset = int(ipaddress.ip_address(rng[key])) - int(old.network_address)
                            rng[key] = str(new.network_address + offset)
        out.append(plugin)
    return out


def make_chain(name, version, plugins, host_ns, ctr_ns, container_id, cni_path, cache_dir):
    """The list and the attachment, run by the runtime module of the cni-bridge command (the
    suite's one libcni implementation) inside the host netns."""
    net = NetworkList.from_dict({"cniVersion": version, "name": name, "plugins": plugins})
    runtime = Runtime(cni_path, cache_dir, exec_prefix=["ip", "netns", "exec", host_ns])
    attachment = RuntimeConf(container_id, f"/var/run/netns/{ctr_ns}", "eth0", capability_args={
        "portMappings": [{"hostPort": HOST_PORT, "containerPort": CONTAINER_PORT, "protocol": "tcp"}]})
    return net, runtime, attachment


def _ver(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in v.split("."))


# ---- observations (ip, nft, iptables: independent of the code under test) ------------------


def links(ns: str) -> list[dict]:
    return json.loads(sh("ip", "-n", ns, "-j", "-d", "link", "show").stdout)


def ipv4_of(ns: str, ifname: str) -> list[str]:
    info = json.loads(sh("ip", "-n", ns, "-j", "-4", "addr", "show", "dev", ifname).stdout)
    return [f"{a['local']}/{a['prefixlen']}" for i in info for a in i.get("addr_info", [])]


def elements(ns: str, prefix: str) -> list:
    """The elements of our table's sets and maps whose names start with `prefix`."""
    res = sh("ip", "netns", "exec", ns, "nft", "-j", "list", "table", "inet", "cni_bridge", check=False)
    if res.returncode != 0:
        return []
    return [e for item in json.loads(res.stdout)["nftables"] for body in [item.get("map") or item.get("set")]
            if body and body["name"].startswith(prefix) for e in body.get("elem", [])]


# A server in the container: a number of connections, each answered with "published".
_SERVE_ONCE = r"""
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.listen(4)
s.settimeout(30)
print("ready", flush=True)
for _ in range(int(sys.argv[2])):
    c, _ = s.accept()
    c.sendall(b"published")
    c.close()
"""
_ASK = r"""
import socket, sys
with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5) as s:
    print(s.recv(100).decode(), end="")
"""


def reach_published_port(host_ns: str, ctr_ns: str, addresses: list[str]) -> list[str]:
    """Connect from the host to each of `addresses` at HOST_PORT; what came back each time."""
    server = subprocess.Popen(["ip", "netns", "exec", ctr_ns, sys.executable, "-c", _SERVE_ONCE,
                               str(CONTAINER_PORT), str(len(addresses))], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline().strip() == "ready"
        return [sh("ip", "netns", "exec", host_ns, sys.executable, "-c", _ASK, address, HOST_PORT,
                   check=False).stdout for address in addresses]
    finally:
        server.kill()
        server.wait()
        server.stdout.close()


def iptables_save(ns: str) -> str:
    if not shutil.which("iptables-save"):
        return ""
    return sh("ip", "netns", "exec", ns, "iptables-save", check=False).stdout


def ping(ns: str, address: str, tries: int = 10) -> None:
    """Bounded retries: a new bridge port may take a moment to forward."""
    for _ in range(tries):
        if sh("ip", "netns", "exec", ns, "ping", "-c", "1", "-W", "1", address, check=False).returncode == 0:
            return
        time.sleep(0.2)
    raise AssertionError(f"{ns} cannot ping {address}")


# ---- the test ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", CONFS, ids=[p.name for p in CONFS])
def test_conf_example(path, netns_pair, our_bin, tmp_path):
    host_ns, ctr_ns, tag = netns_pair
    name, version, plugins = load_list(path)
    data_dir = tmp_path / "leases"
    plugins = rewrite(plugins, tag, CONFS.index(path), data_dir)
    bridge_conf = next(p for p in plugins if p["type"] == "bridge")
    types = [p["type"] for p in plugins]
    net, runtime, attachment = make_chain(name, version, plugins, host_ns, ctr_ns, f"e2ec-{tag}",
                                          [our_bin, REFERENCE], tmp_path / "cache")

    result = runtime.add(net, attachment)
    deleted = False
    try:
        # the result: one interface in the container, one address from the rewritten subnet
        subnet = ipaddress.ip_network(bridge_conf["ipam"]["ranges"][0][0]["subnet"])
        addrs = ipv4_of(ctr_ns, "eth0")
        assert len(addrs) == 1, addrs
        address = ipaddress.ip_interface(addrs[0])
        assert address.ip in subnet and address.network == subnet
        assert [ip["address"] for ip in result["ips"]] == [addrs[0]]
        gateway = result["ips"][0].get("gateway") or str(subnet.network_address + 1)
        assert ipv4_of(host_ns, bridge_conf["bridge"]) == [f"{gateway}/{subnet.prefixlen}"]

        # the config's options took effect
        eth0 = next(link for link in links(ctr_ns) if link["ifname"] == "eth0")
        if "mtu" in bridge_conf:
            assert eth0["mtu"] == bridge_conf["mtu"]
        ports = [link for link in links(host_ns) if link.get("master") == bridge_conf["bridge"]]
        assert len(ports) == 1 and ports[0]["linkinfo"]["info_kind"] == "veth"
        if bridge_conf.get("hairpinMode"):
            assert ports[0]["linkinfo"]["info_slave_data"]["hairpin"] is True
        routes = json.loads(sh("ip", "-n", ctr_ns, "-j", "-4", "route", "show").stdout)
        for route in bridge_conf["ipam"].get("routes", []):
            dst = "default" if route["dst"] == "0.0.0.0/0" else route["dst"]
            assert any(r["dst"] == dst and r.get("gateway") == gateway for r in routes), (route, routes)
        assert bool(rs.masq_elements(['ip', 'netns', 'exec', host_ns])) == bool(bridge_conf.get("ipMasq")), rs.masq_elements(['ip', 'netns', 'exec', host_ns])
        if "loopback" in types:
            lo = next(link for link in links(ctr_ns) if link["ifname"] == "lo")
            assert "UP" in lo["flags"]
        if "portmap" in types:
            assert [e[0]["elem"]["val"]["concat"] for e in elements(host_ns, "portmap-any4")] == [["tcp", HOST_PORT]]
            assert reach_published_port(host_ns, ctr_ns, ["127.0.0.1", gateway]) == ["published"] * 2

        # traffic: container -> gateway (the host side), host -> container
        ping(ctr_ns, gateway)
        ping(host_ns, str(address.ip))

        if _ver(version) >= (0, 4, 0):
            runtime.check(net, attachment)

        runtime.delete(net, attachment)  # in reverse; from 0.4.0 on with the cached result
        deleted = True
        # nothing left: no interface, lease, masquerade element or port mapping
        assert [link["ifname"] for link in links(ctr_ns)] == ["lo"]
        assert not [link for link in links(host_ns) if link.get("linkinfo", {}).get("info_kind") == "veth"]
        assert lease_files(data_dir / name) == {}
        assert rs.masq_elements(['ip', 'netns', 'exec', host_ns]) == [] and elements(host_ns, "portmap") == []
        saved = iptables_save(host_ns)
        assert str(address.ip) not in saved and f"--dport {HOST_PORT}" not in saved
        # DEL again (runtimes retry) is still a success
        runtime.delete(net, attachment)
        assert runtime.cached_attachments() == []
    finally:
        if not deleted:
            try:
                runtime.delete(net, attachment)
            except RuntimeFailure:
                pass

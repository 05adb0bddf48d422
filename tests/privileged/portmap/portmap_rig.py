"""The test rig for portmap's privileged tier (tests/privileged/portmap/test_*.py).

A node is a throwaway namespace of its own: the plugins are exec'd inside it (`nsenter
--net=`), by the runtime module of the cni-bridge command (cni_bridge/cli/runtime.py, the
suite's libcni) or one by one. Containers are namespaces on the node's bridge; "outside"
is another machine on a veth to the node, "remote" a machine behind the node (routed
through it). Every name starts with `pm`; addresses are in 10.182.0.0/16 and fd1a::/48,
host ports in 18300-18399.

What the plugins did is read with independent tools only: `nft -j`, `conntrack`, `ip -j`,
sysctl files read inside the node, and real traffic: servers in the namespaces answer
every TCP connection and UDP datagram with their own name and the address they saw the
client come from.
"""

import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest
from plugin_runner import PluginRun, cni_env, plugin_bin_dir

from cni_bridge.cli.runtime import NetworkList, Runtime, RuntimeConf

REFERENCE_DIR = Path("/usr/lib/cni")
NODE4, OUTSIDE4 = "10.182.250.1", "10.182.250.2"
NODE6, OUTSIDE6 = "fd1a:250::1", "fd1a:250::2"
REMOTE4, REMOTE6 = "10.182.252.2", "fd1a:252::2"  # behind the node: forwarded, never local
SECOND4 = "10.182.251.1"  # a second address of the node
TIMEOUT = 3  # seconds a client waits for an answer

# A server that answers every TCP connection or UDP datagram with "<name> <peer address>",
# until it is killed. It prints "ready" once it listens.
_SERVER = r"""
import socket, sys
name, proto, bind, port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
family = socket.AF_INET6 if ":" in bind else socket.AF_INET
s = socket.socket(family, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
if family == socket.AF_INET6:
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.bind((bind, port))
if proto == "tcp":
    s.listen(16)
print("ready", flush=True)
while True:
    if proto == "tcp":
        c, peer = s.accept()
        c.settimeout(5)
        try:
            c.recv(100)
            c.sendall(f"{name} {peer[0].removeprefix('::ffff:')}".encode())
        except OSError:
            pass
        c.close()
    else:
        data, peer = s.recvfrom(100)
        s.sendto(f"{name} {peer[0].removeprefix('::ffff:')}".encode(), peer)
"""
# A client: one TCP exchange or one UDP datagram and its answer; prints the answer, exits 1
# when there is none within the timeout. An optional source port (UDP: kept between calls).
_CLIENT = r"""
import socket, sys
proto, addr, port, sport, timeout = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
family = socket.AF_INET6 if ":" in addr else socket.AF_INET
s = socket.socket(family, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.settimeout(timeout)
if sport:
    s.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", sport))
try:
    if proto == "tcp":
        s.connect((addr, port))
        s.sendall(b"hello")
        s.shutdown(socket.SHUT_WR)
        print(s.recv(200).decode(), end="")
    else:
        s.sendto(b"hello", (addr, port))
        print(s.recvfrom(200)[0].decode(), end="")
except OSError as err:
    sys.exit(str(err))
"""


def sh(*cmd, check=True, **kw) -> subprocess.CompletedProcess:
    res = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=120, **kw)
    if check:
        assert res.returncode == 0, (cmd, res.stdout, res.stderr)
    return res


@pytest.fixture
def netns_prefix() -> str:
    return "pm"


@pytest.fixture(scope="session")
def bin_dir(tmp_path_factory) -> Path:
    """Our plugins (plugin_runner decides: a fresh build/bin, or source-tree wrappers)."""
    return plugin_bin_dir(tmp_path_factory.mktemp("pm-plugins"))


@pytest.fixture(scope="session")
def reference_dir(tmp_path_factory) -> Path:
    """A plugin dir with the reference portmap alone (our bridge comes after it in CNI_PATH)."""
    if not (REFERENCE_DIR / "portmap").exists():
        pytest.skip("reference portmap absent (Debian package containernetworking-plugins)")
    directory = tmp_path_factory.mktemp("pm-reference")
    (directory / "portmap").symlink_to(REFERENCE_DIR / "portmap")
    return directory


class Rig:
    """A node with an outside machine, the node's bridge networks, and their containers."""

    def __init__(self, make_netns, tmp: Path, bin_dir: Path):
        self.make_netns = make_netns
        self.tmp = tmp
        tmp.mkdir(parents=True)
        self.bin_dir = bin_dir
        self.node = make_netns("node")
        self.tag = secrets.token_hex(3)
        self.data_dir = tmp / "leases"
        self._procs: list[subprocess.Popen] = []
        self.runtime = self.runtime_for([bin_dir], "cache")
        self.in_node("ip", "link", "set", "lo", "up")
        self.outside = make_netns("out")
        self._wire(self.outside, "pmup0", NODE4, OUTSIDE4, NODE6, OUTSIDE6, 24)
        self.outside.ip("route", "add", "default", "via", NODE4)
        self.outside.ip("-6", "route", "add", "default", "via", NODE6)
        for key in ("net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding"):
            self.write_sysctl(key, "1")

    def runtime_for(self, path: list[Path], cache: str) -> Runtime:
        """A runtime that runs the plugins found in `path` in the node, caching in tmp/cache."""
        return Runtime(path, self.tmp / cache, exec_prefix=["nsenter", f"--net={self.node.path}"])

    def _wire(self, ns, node_end: str, node4: str, peer4: str, node6: str, peer6: str, prefix4: int) -> None:
        """A veth from the node (node_end) to ns (eth0), with an address pair per family."""
        self.node.ip("link", "add", node_end, "type", "veth", "peer", "name", "eth0", "netns", ns.name)
        self.node.ip("addr", "add", f"{node4}/{prefix4}", "dev", node_end)
        self.node.ip("addr", "add", f"{node6}/64", "dev", node_end, "nodad")
        self.node.ip("link", "set", node_end, "up")
        ns.ip("addr", "add", f"{peer4}/{prefix4}", "dev", "eth0")
        ns.ip("addr", "add", f"{peer6}/64", "dev", "eth0", "nodad")
        ns.ip("link", "set", "eth0", "up")
        ns.ip("link", "set", "lo", "up")

    def remote(self):
        """A machine behind the node: the outside reaches it through the node (forwarding)."""
        remote = self.make_netns("rem")
        self._wire(remote, "pmrem0", "10.182.252.1", REMOTE4, "fd1a:252::1", REMOTE6, 24)
        remote.ip("route", "add", "default", "via", "10.182.252.1")
        remote.ip("-6", "route", "add", "default", "via", "fd1a:252::1")
        return remote

    def stand_in_bridge(self) -> None:
        """For execs of portmap alone (a made-up prevResult): a link that holds the route
        to 10.182.1.0/24 and fd1a:1::/64, where route_localnet goes."""
        self.node.ip("link", "add", "pmfake0", "type", "bridge")  # this kernel has no dummy links
        self.node.ip("addr", "add", "10.182.1.1/24", "dev", "pmfake0")
        self.node.ip("addr", "add", "fd1a:1::1/64", "dev", "pmfake0", "nodad")
        self.node.ip("link", "set", "pmfake0", "up")

    def second_address(self) -> str:
        """A second address of the node, on the link to the outside (which routes to it)."""
        self.node.ip("addr", "add", f"{SECOND4}/32", "dev", "pmup0")
        return SECOND4

    # -- networks and attachments

    def network(self, index: int = 1, cni_version: str = "1.0.0", portmap: dict | None = None, name=None,
                **bridge) -> NetworkList:
        """A list: our bridge (gateway, masquerade, hairpin) on 10.182.<index>.0/24 and
        fd1a:<index>::/64, then portmap with the portMappings capability. Only network 1
        routes the container's default traffic; the others the way to the outside."""
        bridge_conf = {
            "type": "bridge", "bridge": f"pmbr{index}{self.tag}", "isGateway": True, "ipMasq": True,
            "hairpinMode": True,
            "ipam": {"type": "host-local", "dataDir": str(self.data_dir),
                     "ranges": [[{"subnet": f"10.182.{index}.0/24"}], [{"subnet": f"fd1a:{index}::/64"}]],
                     "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}] if index == 1 else
                     [{"dst": "10.182.250.0/24"}, {"dst": "fd1a:250::/64"}]},
            **bridge,
        }
        plugins = [bridge_conf, {"type": "portmap", "capabilities": {"portMappings": True}, **(portmap or {})}]
        return NetworkList.from_dict({"cniVersion": cni_version, "name": name or f"pmnet{index}", "plugins": plugins})

    def container(self, role: str = "c"):
        ns = self.make_netns(role)
        ns.ip("link", "set", "lo", "up")
        return ns

    def attach(self, net: NetworkList, ns, mappings=(), container_id=None, ifname="eth0", runtime=None) -> dict:
        """ADD the list for a container; returns the result. The container id is the
        namespace's name unless given."""
        rt = RuntimeConf(container_id or ns.name, ns.path, ifname, capability_args={"portMappings": list(mappings)})
        result = (runtime or self.runtime).add(net, rt)
        self._wait_for_addresses(ns, ifname)
        return result

    def detach(self, net: NetworkList, ns, mappings=(), container_id=None, ifname="eth0", runtime=None) -> None:
        rt = RuntimeConf(container_id or ns.name, ns.path, ifname, capability_args={"portMappings": list(mappings)})
        (runtime or self.runtime).delete(net, rt)

    def rt(self, ns, mappings=(), container_id=None, ifname="eth0") -> RuntimeConf:
        return RuntimeConf(container_id or ns.name, ns.path, ifname, capability_args={"portMappings": list(mappings)})

    @staticmethod
    def _wait_for_addresses(ns, ifname: str) -> None:
        """IPv6 addresses are usable once not tentative (the bridge turns DAD off; bounded)."""
        for _ in range(100):
            info = ns.ip_json("-6", "addr", "show", "dev", ifname)
            if info and not any(a.get("tentative") for a in info[0].get("addr_info", [])):
                return
            time.sleep(0.05)

    def portmap(self, command: str, conf: dict, ns=None, container_id=None, ifname="eth0",
                executable=None, prefix=()) -> PluginRun:
        """One exec of portmap (ours unless `executable`) in the node, as a runtime would,
        under a command `prefix` if given."""
        # portmap never opens the container's namespace: a path that names none will do.
        env = cni_env(command, container_id=container_id or (ns.name if ns else "pm-none"), ifname=ifname,
                      netns=ns.path if ns else "/var/run/netns/pm-none", CNI_PATH=str(self.bin_dir))
        executable = str(executable or self.bin_dir / "portmap")
        proc = subprocess.run(["nsenter", f"--net={self.node.path}", *prefix, executable],
                              input=json.dumps(conf).encode(), env=env, capture_output=True, timeout=120)
        out = proc.stdout.decode()
        return PluginRun(proc.returncode, json.loads(out) if out.strip() else None,
                         proc.stderr.decode(errors="replace"), proc.stdout)

    # -- the node, through independent tools

    def in_node(self, *cmd, check=True) -> str:
        return sh("nsenter", f"--net={self.node.path}", *cmd, check=check).stdout

    def write_sysctl(self, key: str, value: str) -> None:
        self.in_node("sh", "-c", f"echo {value} > /proc/sys/{key}")

    def read_sysctl(self, key: str) -> str:
        return self.in_node("cat", f"/proc/sys/{key}").strip()

    def nft_table(self) -> list[dict] | None:
        """`nft -j list table inet cni_bridge` in the node; None without the table."""
        res = sh("nsenter", f"--net={self.node.path}", "nft", "-j", "list", "table", "inet", "cni_bridge", check=False)
        if res.returncode != 0:
            assert "No such file or directory" in res.stderr, res.stderr
            return None
        return json.loads(res.stdout)["nftables"]

    def elements(self, name: str) -> list[tuple]:
        """The elements of one of our sets or maps as nft prints them: (key, data, comment);
        key and data are nft's JSON values (concatenations as lists)."""
        found = []
        for item in self.nft_table() or []:
            body = item.get("map") or item.get("set")
            if not body or body["name"] != name:
                continue
            for elem in body.get("elem", []):
                key, data = (elem[0], elem[1]) if isinstance(elem, list) else (elem, None)
                comment = None
                if isinstance(key, dict) and "elem" in key:
                    key, comment = key["elem"]["val"], key["elem"].get("comment")
                found.append((_plain(key), _plain(data), comment))
        return sorted(found, key=repr)

    def portmap_elements(self) -> dict[str, list[tuple]]:
        """Every non-empty portmap set: name -> elements."""
        names = [body["name"] for item in self.nft_table() or [] for body in [item.get("map") or item.get("set")]
                 if body and body["name"].startswith("portmap-")]
        return {name: self.elements(name) for name in names if self.elements(name)}

    def owners(self) -> set[str]:
        """The comments of every portmap element."""
        return {comment for elements in self.portmap_elements().values() for _, _, comment in elements}

    def chains(self) -> dict[str, list[str]]:
        """Chain name -> the comments of its rules."""
        chains: dict[str, list[str]] = {}
        for item in self.nft_table() or []:
            if "chain" in item:
                chains.setdefault(item["chain"]["name"], [])
            elif "rule" in item:
                chains.setdefault(item["rule"]["chain"], []).append(item["rule"].get("comment"))
        return chains

    def conntrack(self, *args) -> list[str]:
        """`conntrack -L ARGS` in the node: one line per entry."""
        res = sh("nsenter", f"--net={self.node.path}", "conntrack", "-L", *args, check=False)
        return [line for line in res.stdout.splitlines() if line.strip()]

    # -- traffic

    def serve(self, ns, name: str, port: int, proto: str = "tcp", bind: str = "::") -> None:
        """A server in ns (the node when ns is None) answering with `name`."""
        path = ns.path if ns is not None else self.node.path
        proc = subprocess.Popen(["nsenter", f"--net={path}", sys.executable, "-c", _SERVER, name, proto, bind, str(port)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self._procs.append(proc)
        line = proc.stdout.readline()
        assert line.strip() == "ready", (line, proc.stderr.read() if proc.poll() is not None else "")

    def ask(self, ns, addr: str, port: int, proto: str = "tcp", sport: int = 0, timeout: float = TIMEOUT) -> str:
        """One exchange from ns (the node when ns is None); the answer, "" when none came."""
        path = ns.path if ns is not None else self.node.path
        res = sh("nsenter", f"--net={path}", sys.executable, "-c", _CLIENT, proto, addr, str(port), str(sport),
                 str(timeout), check=False)
        return res.stdout if res.returncode == 0 else ""

    def close(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            for stream in (proc.stdout, proc.stderr):
                stream.close()


def _plain(value):
    """nft's JSON for a key or data: concatenations as lists, prefixes as "a/n"."""
    if isinstance(value, dict):
        if "concat" in value:
            return [_plain(v) for v in value["concat"]]
        if "prefix" in value:
            return f"{value['prefix']['addr']}/{value['prefix']['len']}"
        if "jump" in value:
            return f"jump {value['jump']['target']}"
    return value


def address_of(result: dict, family: int) -> str:
    """The container's first address of a family in a result, without its prefix."""
    return next(ip["address"].split("/")[0] for ip in result["ips"] if (":" in ip["address"]) == (family == 6))


def gateway_of(result: dict, family: int) -> str:
    return next(ip["gateway"] for ip in result["ips"] if (":" in ip["address"]) == (family == 6))


def tcp(host_port: int, container_port: int, host_ip: str | None = None, proto: str = "tcp") -> dict:
    mapping = {"hostPort": host_port, "containerPort": container_port, "protocol": proto}
    if host_ip is not None:
        mapping["hostIP"] = host_ip
    return mapping


def udp(host_port: int, container_port: int, host_ip: str | None = None) -> dict:
    return tcp(host_port, container_port, host_ip, "udp")


@pytest.fixture
def make_rig(make_netns, tmp_path, bin_dir):
    rigs: list[Rig] = []

    def make() -> Rig:
        rig = Rig(make_netns, tmp_path / f"rig{len(rigs)}", bin_dir)
        rigs.append(rig)
        return rig

    yield make
    for rig in rigs:
        rig.close()
    # The plugins ran in the node namespaces only: nothing of theirs in the real host.
    root = json.loads(sh("ip", "-j", "link", "show").stdout)
    assert not [link["ifname"] for link in root if link["ifname"].startswith("pmbr")]


@pytest.fixture
def rig(make_rig) -> Rig:
    return make_rig()

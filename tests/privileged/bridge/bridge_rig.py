"""The test rig for the bridge plugin's privileged tier (tests/privileged/test_bridge_*.py).

The plugin runs as a runtime runs it: its executable is exec'd with the CNI environment
and the config on stdin, inside a throwaway "host" namespace (`ip netns exec <host> ...`),
and the containers are namespaces made by `ip netns add`. Every name starts with `brt`.
Kernel state is read with independent tools only: `ip -j`, `bridge -j`, `nft -j`,
`iptables-save`, ping and TCP exchanges between the namespaces, the lease files.

Which executable: tests/plugin_runner.py decides, for every tier (a fresh build/bin, or
wrappers around the source tree).

The fixtures reach the test files through this folder's conftest.py; helpers and constants are
imported from here by name.
"""

import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest
from plugin_runner import plugin_bin_dir


ROOT = Path(__file__).resolve().parents[3]
REFERENCE_DIR = Path("/usr/lib/cni")
NETWORK = "brtnet"
SUBNET4 = "10.99.0.0/24"
SUBNET6 = "fd99::/64"

# An echo server and a client, run inside namespaces with the test's interpreter.
# The server prints "ready" once listening, answers one connection with "echo:<data>"
# and the peer's address, then exits; every wait is bounded by a socket timeout.
_SERVER = r"""
import socket, sys
addr, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((addr, port))
s.listen(4)
s.settimeout(20)
print("ready", flush=True)
c, peer = s.accept()
c.settimeout(5)
data = c.recv(100)
c.sendall(b"echo:" + data + b" from:" + peer[0].encode())
c.close()
"""
_CLIENT = r"""
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
s.sendall(b"hello")
s.shutdown(socket.SHUT_WR)
print(s.recv(200).decode(), end="")
"""


def run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, check=check)


# ---- which executable ----------------------------------------------------------------


@pytest.fixture(scope="session")
def bin_dir(tmp_path_factory) -> Path:
    """A directory with our plugin executables (plugin_runner decides which)."""
    return plugin_bin_dir(tmp_path_factory.mktemp("plugins"))


@pytest.fixture
def netns_prefix() -> str:
    return "brt"


# ---- the rig -------------------------------------------------------------------------


class Result:
    """One plugin exec: exit code, stdout parsed as JSON (None when empty), stderr."""

    def __init__(self, code: int, out, err: str):
        self.code, self.out, self.err = code, out, err

    def __repr__(self) -> str:
        return f"Result(code={self.code}, out={self.out!r}, err={self.err!r})"


class Rig:
    """One throwaway host namespace with a uniquely named bridge, and its containers."""

    def __init__(self, make_netns, tmp_path: Path, bin_dir: Path):
        self._make_netns = make_netns
        self.tmp = tmp_path
        self.bin_dir = bin_dir
        self.host = make_netns("h")
        self.bridge = "brt" + secrets.token_hex(4)
        self.data_dir = tmp_path / f"data-{self.host.name}"
        self._procs: list[subprocess.Popen] = []

    # -- namespaces and configs

    def container(self, role: str = "c"):
        return self._make_netns(role)

    def conf(self, ranges=((SUBNET4,),), cni_version="1.1.0", name=NETWORK, ipam=None, **top) -> dict:
        """A bridge config on this rig's bridge with host-local leases under data_dir;
        ranges=None drops the ipam section."""
        conf = {"cniVersion": cni_version, "name": name, "type": "bridge", "bridge": self.bridge}
        if ranges is not None:
            section = {"type": "host-local", "dataDir": str(self.data_dir),
                       "ranges": [[{"subnet": r} if isinstance(r, str) else r for r in rs] for rs in ranges]}
            section.update(ipam or {})
            conf["ipam"] = section
        conf.update(top)
        return conf

    # -- running plugins

    def exec(self, command: str, conf, ns=None, container_id="ctr1", ifname="eth0", args=None,
             path=None, executable=None, netns_path=None, **extra) -> Result:
        """Exec a plugin (ours by default) in the host namespace.

        ns: the container Netns (CNI_NETNS is its path) unless netns_path overrides it;
        path: CNI_PATH entries (default: our bin dir); extra: more CNI_* variables.
        """
        executable = str(executable or self.bin_dir / "bridge")
        env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
        if netns_path is None:
            netns_path = ns.path if ns is not None else ""
        values = {"CNI_COMMAND": command, "CNI_CONTAINERID": container_id, "CNI_IFNAME": ifname,
                  "CNI_NETNS": netns_path, "CNI_PATH": ":".join(str(p) for p in (path or [self.bin_dir])),
                  "CNI_ARGS": args, **extra}
        env.update({k: v for k, v in values.items() if v is not None})
        stdin = conf if isinstance(conf, bytes) else json.dumps(conf).encode()
        proc = subprocess.run(["ip", "netns", "exec", self.host.name, executable], input=stdin, env=env,
                              capture_output=True, timeout=120)
        out = proc.stdout.decode()
        return Result(proc.returncode, json.loads(out) if out.strip() else None, proc.stderr.decode(errors="replace"))

    def add(self, conf, ns, **kw) -> dict:
        res = self.exec("ADD", conf, ns, **kw)
        assert res.code == 0, res
        return res.out

    def ok(self, command: str, conf, ns=None, **kw) -> None:
        res = self.exec(command, conf, ns, **kw)
        assert res.code == 0 and res.out is None, res

    def fails(self, command: str, conf, ns=None, **kw) -> dict:
        """Run a command that must fail; return its error JSON (checked for the spec's shape)."""
        res = self.exec(command, conf, ns, **kw)
        assert res.code != 0, res
        assert isinstance(res.out, dict) and isinstance(res.out.get("code"), int) and res.out.get("msg"), res
        return res.out

    # -- observing the kernel (independent tools only)

    def host_veths(self) -> list[dict]:
        return self.host.ip_json("-d", "link", "show", "type", "veth")

    def ports(self) -> list[dict]:
        """`bridge -j -d link` entries of this rig's bridge's ports."""
        return [p for p in self.host.bridge_json("-d", "link", "show") if p.get("master") == self.bridge]

    def bridge_link(self) -> dict | None:
        return self.host.link(self.bridge)

    def addrs(self, ns, dev: str) -> list[dict]:
        out = ns.ip_json("addr", "show", "dev", dev)
        return out[0]["addr_info"] if out else []

    def cidrs(self, ns, dev: str) -> set[str]:
        """Global-scope addresses of dev as "a.b.c.d/len"."""
        return {f"{a['local']}/{a['prefixlen']}" for a in self.addrs(ns, dev) if a.get("scope") == "global"}

    def routes(self, ns, family: str = "-4") -> list[dict]:
        return ns.ip_json(family, "route", "show")

    def nft_elements(self) -> set[tuple[str, str, str]]:
        """(set, ip, comment) of every pod address in our masquerade sets (pods4, pods6), each
        checked to have its twin in pods4_local / pods6_local; empty without the table."""
        found, local = set(), set()
        for item in self.nft_table():
            s = item.get("set")
            if not s or s.get("name") not in ("pods4", "pods6", "pods4_local", "pods6_local"):
                continue
            for elem in s.get("elem", []):
                val, comment = (elem["elem"]["val"], elem["elem"].get("comment", "")) if "elem" in elem else (elem, "")
                if s["name"].endswith("_local"):
                    local.add((s["name"][:5], val["concat"][0], comment))
                else:
                    found.add((s["name"], val, comment))
        assert found == local, (found, local)
        return found

    def nft_table(self) -> list[dict]:
        """`nft -j list table inet cni_bridge` in the host ns; [] when the table is absent."""
        res = run("ip", "netns", "exec", self.host.name, "nft", "-j", "list", "table", "inet", "cni_bridge",
                  check=False)  # fmt: skip
        if res.returncode != 0:
            assert "No such file or directory" in res.stderr, res.stderr
            return []
        return json.loads(res.stdout)["nftables"]

    def iptables_save(self) -> str:
        out = run("ip", "netns", "exec", self.host.name, "iptables-save").stdout
        out6 = run("ip", "netns", "exec", self.host.name, "ip6tables-save").stdout
        return out + out6

    def leases(self, network: str = NETWORK) -> dict[str, str]:
        """{address: "containerid\\r\\nifname"} of the network's lease files."""
        directory = self.data_dir / network
        if not directory.is_dir():
            return {}
        return {p.name: p.read_bytes().decode() for p in directory.iterdir()
                if p.name != "lock" and not p.name.startswith("last_reserved_ip.")}

    def assert_no_attachment(self, ns=None, ifname: str = "eth0", container_id: str = "ctr1", others: int = 0) -> None:
        """Nothing of (container_id, ifname) is left: no veth but the `others` attachments',
        no container interface, no lease, no masquerade element."""
        assert len(self.host_veths()) == others, self.host_veths()
        if ns is not None:
            assert ns.link(ifname) is None, ns.link(ifname)
        owners = [v for v in self.leases().values() if v.split()[:1] == [container_id]]
        assert not owners, self.leases()
        assert not [e for e in self.nft_elements() if e[2] == f"{NETWORK}/{container_id}/{ifname}"]

    # -- traffic

    def ping(self, src, dst: str, tries: int = 3) -> bool:
        """One ping, retried a few times (the first can be lost to neighbour resolution)."""
        family = "-6" if ":" in dst else "-4"
        for _ in range(tries):
            if run("ip", "netns", "exec", src.name, "ping", family, "-c1", "-W1", dst, check=False).returncode == 0:
                return True
        return False

    def serve(self, ns, addr: str, port: int) -> subprocess.Popen:
        """Start the one-shot echo server in ns; return once it listens."""
        proc = subprocess.Popen(["ip", "netns", "exec", ns.name, sys.executable, "-c", _SERVER, addr, str(port)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self._procs.append(proc)
        line = proc.stdout.readline()
        assert line.strip() == "ready", (line, proc.stderr.read() if proc.poll() is not None else "")
        return proc

    def connect(self, ns, addr: str, port: int) -> str:
        """Connect from ns, send "hello"; return the answer ("" on failure)."""
        res = run("ip", "netns", "exec", ns.name, sys.executable, "-c", _CLIENT, addr, str(port), check=False)
        return res.stdout if res.returncode == 0 else ""

    def tcp(self, client, server, addr: str, port: int = 7777, bind: str | None = None,
            server_port: int | None = None) -> str:
        """A TCP exchange from client to addr:port, served in `server` on bind:server_port
        (default: the same address and port)."""
        proc = self.serve(server, bind or addr, server_port or port)
        answer = self.connect(client, addr, port)
        proc.wait(timeout=30)
        return answer

    def close(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            for stream in (proc.stdout, proc.stderr):
                if stream:
                    stream.close()


def outside_namespace(rig: "Rig"):
    """A namespace "outside" the host: 192.168.250.2, reached through the host's 192.168.250.1."""
    o = rig.container("o")
    rig.host.ip("link", "add", "up0", "type", "veth", "peer", "name", "eth0", "netns", o.name)
    rig.host.ip("addr", "add", "192.168.250.1/24", "dev", "up0")
    rig.host.ip("link", "set", "up0", "up")
    o.ip("addr", "add", "192.168.250.2/24", "dev", "eth0")
    o.ip("link", "set", "eth0", "up")
    return o


def wait_until(predicate, what: str, limit: float = 10.0) -> None:
    """Poll for kernel work that completes asynchronously (netns teardown); the limit is
    a safety net, not an assertion about speed."""
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def delete_netns(ns) -> None:
    """Delete a container namespace as a runtime does when the container is gone; with our
    fd closed, nothing keeps it (and its veth end) alive."""
    ns.close()
    run("ip", "netns", "del", ns.name)


@pytest.fixture
def make_rig(make_netns, tmp_path, bin_dir):
    rigs: list[Rig] = []

    def make() -> Rig:
        rig = Rig(make_netns, tmp_path, bin_dir)
        rigs.append(rig)
        return rig

    yield make
    for rig in rigs:
        rig.close()
    # The plugin ran in the throwaway namespaces only: nothing of it in the real host.
    root_links = {link["ifname"] for link in json.loads(run("ip", "-j", "link", "show").stdout)}
    for rig in rigs:
        assert rig.bridge not in root_links, f"bridge {rig.bridge} leaked into the real host namespace"
    assert not Path("/var/lib/cni/networks", NETWORK).exists(), "a lease was written outside dataDir"


@pytest.fixture
def rig(make_rig) -> Rig:
    return make_rig()

"""The stress tier's rig: a throwaway node namespace per test, our plugins exec'd inside it
as a runtime execs them, many at once, and the node read back with independent tools.

Each plugin runs as `ip netns exec <node> <executable>` in a session of its own, so that a
SIGKILL reaches the whole of it (the executable and anything it started). Containers are
namespaces made with `ip -batch`. What is left behind is read with `ip -j`, `nft -j`,
the lease files and ping; nothing here calls the code under test.

Names start with `hx` (hx-node-<random>, hx-<role>-<random>, bridge hx<random>); subnets
are in 10.183.0.0/16 and fd1b::/48. Which executables: tests/plugin_runner.py decides.
"""

import json
import os
import random
import secrets
import signal
import subprocess
import time
from pathlib import Path

from plugin_runner import cni_env

PREFIX = "hx"
LEASE_EXTRAS = ("lock",)  # files of a network directory that are not leases
POD_SETS = ("pods4", "pods6")  # what our masquerade rules match a pod's source address in
NOTHING = {"leases": {}, "veths": [], "elements": [], "subnet chains": []}  # Node.leftovers of a clean node
NOTHING_OWNED = {"leases": {}, "elements": []}  # Node.owned_by of an attachment that is gone
UPLINK = "hxup"  # the node's veth to the outside
OUTSIDE4, OUTSIDE6 = "10.183.250.2", "fd1b:0:fa::2"  # "the outside": no route back to any container
_ENV_PREFIX = "CNI_BRIDGE_STRESS_"


def size(name: str, default: int) -> int:
    """A size of the tier from CNI_BRIDGE_STRESS_<name> (small defaults keep CI fast)."""
    return int(os.environ.get(_ENV_PREFIX + name, default))


def seed() -> int:
    """The tier's seed: CNI_BRIDGE_STRESS_SEED, else a fresh one (the report header prints it)."""
    chosen = os.environ.get(_ENV_PREFIX + "SEED")
    return int(chosen) if chosen else secrets.randbelow(2**32)


def sh(*cmd, check: bool = True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, check=check, timeout=300, **kw)


class Namespaces:
    """Named network namespaces made in batches; every one is deleted by delete_all()."""

    def __init__(self):
        self.names: list[str] = []

    def add(self, role: str, count: int = 1) -> list[str]:
        made = [f"{PREFIX}-{role}-{secrets.token_hex(4)}" for _ in range(count)]
        self.names += made
        sh("ip", "-batch", "-", input="".join(f"netns add {name}\n" for name in made))
        for name in made:
            sh("ip", "-n", name, "link", "set", "lo", "up")
        return made

    def delete_all(self) -> None:
        if self.names:
            sh("ip", "-force", "-batch", "-", input="".join(f"netns del {name}\n" for name in self.names),
               check=False)
        self.names = []


class Outcome:
    """One plugin exec: exit code (negative: killed by that signal), stdout parsed as JSON
    (None when empty), stderr, stdout as bytes, and how long it ran."""

    def __init__(self, code: int, raw: bytes, err: str, seconds: float):
        self.code, self.raw, self.err, self.seconds = code, raw, err, seconds
        self.out = json.loads(raw) if code >= 0 and raw.strip() else None

    def __repr__(self) -> str:
        return f"Outcome(code={self.code}, out={self.out!r}, err={self.err!r})"


def assert_error_json(outcome: Outcome) -> dict:
    """A failure must be the spec's error JSON, with nothing but one-line logs on stderr."""
    assert outcome.code == 1, outcome
    error = outcome.out
    assert isinstance(error, dict) and set(error) <= {"cniVersion", "code", "msg", "details"}, outcome
    assert isinstance(error.get("cniVersion"), str) and isinstance(error.get("code"), int), outcome
    assert isinstance(error.get("msg"), str) and error["msg"], outcome
    assert error["code"] in SPEC_CODES or error["code"] >= 100, outcome
    assert_plain_stderr(outcome.err)
    return error


SPEC_CODES = {1, 2, 3, 4, 5, 6, 7, 11, 50, 51}


def assert_plain_stderr(err: str) -> None:
    assert "Traceback" not in err and not any(line.startswith("  File ") for line in err.splitlines()), err
    assert "internal error" not in err, err  # the protocol layer's catch-all: an exception we did not expect


class Node:
    """A throwaway node namespace with its own bridge, dataDir and nftables."""

    def __init__(self, namespaces: Namespaces, tmp: Path, bin_dir: Path):
        self.namespaces = namespaces
        self.name = namespaces.add("node")[0]
        self.bin_dir = bin_dir
        self.bridge = PREFIX + secrets.token_hex(4)
        self.data_dir = tmp / "data"
        self._running: list[subprocess.Popen] = []

    # -- configs and containers

    def conf(self, network: str, ranges, ipam=None, **top) -> dict:
        """A bridge config (default gateway, masquerade) with host-local leases under data_dir."""
        section = {"type": "host-local", "dataDir": str(self.data_dir),
                   "ranges": [[{"subnet": r} if isinstance(r, str) else r for r in rs] for rs in ranges]}
        section.update(ipam or {})
        conf = {"cniVersion": "1.1.0", "name": network, "type": "bridge", "bridge": self.bridge,
                "isGateway": True, "isDefaultGateway": True, "ipMasq": True, "ipam": section}
        conf.update(top)
        return conf

    def containers(self, count: int, role: str = "c") -> list[str]:
        return self.namespaces.add(role, count)

    # -- running plugins

    def start(self, command: str, conf, netns: str | None, container_id: str, ifname: str = "eth0",
              plugin: str = "bridge", **env) -> subprocess.Popen:
        """Start one exec in the node; netns is a container namespace's name (or None)."""
        path = f"/var/run/netns/{netns}" if netns else ""
        environ = cni_env(command, container_id=container_id, ifname=ifname, netns=path,
                          CNI_PATH=str(self.bin_dir), **env)
        stdin = conf if isinstance(conf, bytes) else json.dumps(conf).encode()
        proc = subprocess.Popen(["ip", "netns", "exec", self.name, str(self.bin_dir / plugin)], env=environ,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True)
        proc.started = time.monotonic()
        self._running.append(proc)
        proc.stdin.write(stdin)  # configs here are small: the pipe takes them whole
        proc.stdin.close()
        proc.stdin = None
        return proc

    def finish(self, proc: subprocess.Popen) -> Outcome:
        # The timeout only keeps a hung plugin from hanging the tier; nothing asserts speed.
        out, err = proc.communicate(timeout=300)
        self._running.remove(proc)
        return Outcome(proc.returncode, out, err.decode(errors="replace"), time.monotonic() - proc.started)

    def run(self, command: str, conf, netns: str | None, container_id: str, **kw) -> Outcome:
        return self.finish(self.start(command, conf, netns, container_id, **kw))

    def run_all(self, calls: list[tuple]) -> list[Outcome]:
        """Start every (command, conf, netns, container_id) at once; wait for them all."""
        procs = [self.start(*call) for call in calls]
        return [self.finish(proc) for proc in procs]

    def kill(self, proc: subprocess.Popen) -> Outcome:
        """SIGKILL the exec whole (its session), then reap it."""
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # it had finished
        return self.finish(proc)

    def close(self) -> None:
        for proc in list(self._running):
            self.kill(proc)

    # -- what the node holds (independent tools only)

    def veths(self) -> list[str]:
        """The node's veths, but for the rig's own uplink to the outside."""
        links = json.loads(sh("ip", "-n", self.name, "-j", "link", "show", "type", "veth").stdout or "[]")
        return sorted(link["ifname"] for link in links if link["ifname"] != UPLINK)

    def namespace_links(self, netns: str) -> list[str]:
        return sorted(link["ifname"] for link in json.loads(sh("ip", "-n", netns, "-j", "link", "show").stdout))

    def nft(self, *args) -> list[dict]:
        """`nft -j list ...` in the node; [] when the object does not exist."""
        res = sh("ip", "netns", "exec", self.name, "nft", "-j", "list", *args, check=False)
        if res.returncode != 0:
            assert "No such file or directory" in res.stderr, res.stderr
            return []
        return json.loads(res.stdout)["nftables"]

    def nft_elements(self) -> set[tuple[str, str, str]]:
        """(set, member as JSON text, comment) of every element of every set and map of our
        table inet cni_bridge, whatever its layout."""
        found = set()
        for item in self.nft("table", "inet", "cni_bridge"):
            body = item.get("set") or item.get("map") or {}
            found |= {(body["name"], *_element(e)) for e in body.get("elem", [])}
        return found

    def masqueraded(self) -> dict[str, str]:
        """{pod address: owner} of the sets the masquerade rules match pod addresses with."""
        return {json.loads(member): comment for name, member, comment in self.nft_elements()
                if name in POD_SETS}

    def chains(self) -> dict[str, list[str]]:
        """Chain name -> the comments of its rules, in order, in table inet cni_bridge."""
        listing = self.nft("table", "inet", "cni_bridge")
        chains = {item["chain"]["name"]: [] for item in listing if "chain" in item}
        for item in listing:
            if "rule" in item:
                chains[item["rule"]["chain"]].append(item["rule"].get("comment", ""))
        return chains

    def leases(self, network: str) -> dict[str, str]:
        """{address: content} of a network's lease files."""
        directory = self.data_dir / network
        if not directory.is_dir():
            return {}
        return {p.name: p.read_bytes().decode(errors="replace") for p in directory.iterdir()
                if p.name not in LEASE_EXTRAS and not p.name.startswith("last_reserved_ip.")}

    def leftovers(self, network: str) -> dict:
        """What attachments of `network` left in the node: all empty when nothing is left."""
        return {
            "leases": self.leases(network),
            "veths": self.veths(),
            "elements": sorted(e for e in self.nft_elements() if e[2].startswith(f"{network}/")),
            "subnet chains": sorted(c for c in self.chains() if c.startswith("masq-")),  # the old layout's
        }

    def owned_by(self, network: str, container_id: str, ifname: str = "eth0") -> dict:
        """What one attachment holds: its leases, its masquerade elements."""
        key = f"{network}/{container_id}/{ifname}"
        return {
            "leases": {ip: c for ip, c in self.leases(network).items() if c.split("\r\n")[0] == container_id},
            "elements": sorted(e for e in self.nft_elements() if e[2] == key),
        }

    # -- traffic

    def ping(self, netns: str, address: str, tries: int = 3) -> bool:
        family = "-6" if ":" in address else "-4"
        for _ in range(tries):
            if sh("ip", "netns", "exec", netns, "ping", family, "-c1", "-W1", address, check=False).returncode == 0:
                return True
        return False

    def outside(self) -> str:
        """A namespace beyond the node's uplink, with no route back to the containers: they
        reach it only when masqueraded."""
        (outside,) = self.namespaces.add("out")
        sh("ip", "-n", self.name, "link", "add", UPLINK, "type", "veth", "peer", "name", "eth0", "netns", outside)
        for ns, ifname, last in ((self.name, UPLINK, "1"), (outside, "eth0", "2")):
            sh("ip", "-n", ns, "addr", "add", f"10.183.250.{last}/24", "dev", ifname)
            sh("ip", "-n", ns, "addr", "add", f"fd1b:0:fa::{last}/64", "dev", ifname, "nodad")
            sh("ip", "-n", ns, "link", "set", ifname, "up")
        sh("ip", "netns", "exec", self.name, "sysctl", "-q", "-w", "net.ipv6.conf.all.forwarding=1")
        return outside


def _element(elem) -> tuple[str, str]:
    """(member as JSON text, comment) of one set or map element as `nft -j` lists it."""
    key = elem[0] if isinstance(elem, list) else elem
    if isinstance(key, dict) and "elem" in key:
        return json.dumps(key["elem"]["val"]), key["elem"].get("comment", "")
    return json.dumps(key), ""


def random_source(seed_value: int, name: str) -> random.Random:
    """A generator of its own per test, from the tier's seed and the test's name."""
    return random.Random(f"{seed_value}:{name}")

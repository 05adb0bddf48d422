"""Running a loopback plugin the way a runtime does, for tests/privileged/loopback/.

The plugin's executable (ours: plugin_runner decides which; or the reference one) is exec'd
inside a throwaway "node" namespace (`nsenter --net=...`), with CNI_NETNS naming a
throwaway "container" namespace. Every namespace is called lbk-<role>-<random> and goes
at teardown (tests/privileged/conftest.py). The kernel is read with `ip -j` only.
"""

import json
import subprocess
from pathlib import Path

import pytest
from plugin_runner import PluginRun, cni_env

REFERENCE_LOOPBACK = Path("/usr/lib/cni/loopback")
CONF = {"cniVersion": "1.1.0", "name": "lbk-lo", "type": "loopback"}


@pytest.fixture
def netns_prefix() -> str:
    return "lbk"


@pytest.fixture
def node(make_netns):
    """The namespace the plugin runs in, standing in for the node's."""
    return make_netns("node")


@pytest.fixture
def reference_loopback() -> Path:
    if not REFERENCE_LOOPBACK.exists():
        pytest.skip(f"reference plugin {REFERENCE_LOOPBACK} absent (Debian package containernetworking-plugins)")
    return REFERENCE_LOOPBACK


def exec_in_node(executable: Path, node, command: str, netns: str, conf=None, ifname: str = "eth0") -> PluginRun:
    """One exec of a loopback plugin in `node` against the namespace at path `netns`."""
    stdin = conf if isinstance(conf, bytes) else json.dumps(conf or CONF).encode()
    env = cni_env(command, container_id="lbk-ctr", ifname=ifname, netns=netns, CNI_PATH=str(executable.parent))
    proc = subprocess.run(["nsenter", f"--net={node.path}", str(executable)], input=stdin, env=env,
                          capture_output=True, timeout=60)
    return PluginRun(proc.returncode, json.loads(proc.stdout) if proc.stdout.strip() else None,
                     proc.stderr.decode(errors="replace"), proc.stdout)


def lo(ns) -> dict:
    """`ip -j addr show dev lo` of a namespace."""
    return ns.ip_json("addr", "show", "dev", "lo")[0]


def lo_is_up(ns) -> bool:
    return "UP" in lo(ns)["flags"]


def lo_addresses(ns) -> list[str]:
    """lo's addresses as "ip/prefix", in the kernel's order, IPv4 first."""
    info = lo(ns)["addr_info"]
    return [f"{a['local']}/{a['prefixlen']}" for family in ("inet", "inet6") for a in info if a["family"] == family]


def without_ipv6(ns) -> None:
    """Turn IPv6 off in `ns` before lo comes up, as a node without IPv6 would have it."""
    for scope in ("all", "default", "lo"):
        subprocess.run(["nsenter", f"--net={ns.path}", "sysctl", "-q", "-w", f"net.ipv6.conf.{scope}.disable_ipv6=1"],
                       check=True, capture_output=True)
